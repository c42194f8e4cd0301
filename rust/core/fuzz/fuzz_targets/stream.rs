//! Fuzzes the whole read path of a streamed answer: arbitrary bytes, cut at
//! arbitrary points, through the SSE parser, the chunk view, delta extraction and
//! reassembly. Nothing may panic, the cut must not change the events, and the
//! fast chunk scanner must agree with serde wherever it answers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stepwell_core::chunk::Chunk;
use stepwell_core::deltas::DeltaExtractor;
use stepwell_core::reassemble::Reassembler;
use stepwell_core::sse::{SseEvent, SseParser};

fn parse(pieces: &[&[u8]]) -> Result<Vec<SseEvent>, stepwell_core::sse::SseError> {
    let mut parser = SseParser::new(4096);
    let mut events = Vec::new();
    for piece in pieces {
        parser.feed(piece, &mut events)?;
    }
    parser.finish(&mut events)?;
    Ok(events)
}

fuzz_target!(|input: &[u8]| {
    let Some((&cut, stream)) = input.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(stream.len());
    let (head, tail) = stream.split_at(cut);
    let whole = parse(&[stream]);
    // Splitting may only change the outcome when the whole stream failed.
    if let Ok(events) = &whole {
        assert_eq!(parse(&[head, tail]).as_ref().ok(), Some(events));
    }
    let mut reassembler = Reassembler::default();
    let mut extractor = DeltaExtractor::default();
    let mut deltas = Vec::new();
    for event in whole.unwrap_or_default() {
        if let Some(fast) = Chunk::parse_fast(&event.data) {
            assert_eq!(Some(fast), Chunk::parse_with_serde(&event.data));
        }
        if let Some(chunk) = Chunk::parse(&event.data) {
            reassembler.push(&chunk);
            extractor.extract(&chunk, 1);
        }
    }
    extractor.flush(&mut deltas);
    let _ = reassembler.finish();
});
