//! An incremental server-sent-events parser (WHATWG event-stream rules).
//!
//! Bytes arrive in arbitrary chunks. The parser keeps only the unfinished line
//! and resumes its scan where the previous chunk ended, so its work is linear in
//! the input however the stream is cut. It accepts `\n`, `\r\n` and `\r` line
//! ends (a `\r` at a chunk's end is resolved by the next chunk), multi-line
//! `data`, comments, `event`, `id` and `retry` fields and a leading BOM, and
//! dispatches a last event that lacks its closing blank line at [`SseParser::finish`].
//! One event larger than the cap fails instead of growing memory.

/// One dispatched event, owned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event` field; empty means the default type, `message`.
    pub event: String,
    /// The `data` lines joined by `\n`.
    pub data: String,
    /// The last `id` field seen, if any.
    pub id: Option<String>,
}

/// One dispatched event, borrowed from the parser or the chunk being fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEventRef<'a> {
    /// The `event` field; empty means the default type, `message`.
    pub event: &'a str,
    /// The `data` lines joined by `\n`.
    pub data: &'a str,
    /// The last `id` field seen, if any.
    pub id: Option<&'a str>,
}

impl SseEventRef<'_> {
    /// An owned copy.
    pub fn to_owned(&self) -> SseEvent {
        SseEvent {
            event: self.event.to_owned(),
            data: self.data.to_owned(),
            id: self.id.map(str::to_owned),
        }
    }
}

/// Why a stream could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// A line was not valid UTF-8.
    #[error("SSE stream is not valid UTF-8")]
    InvalidUtf8,
    /// One event grew past the cap.
    #[error("SSE event larger than {0} bytes")]
    EventTooLarge(usize),
}

/// Default cap on one event's size: 16 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// The event's data so far. The common event, one `data` line inside one
/// chunk, is handed out without being copied: its data stays a range of that
/// chunk until the blank line that ends it.
#[derive(Debug)]
enum Data {
    None,
    /// `start..end` of the chunk being fed.
    InChunk(usize, usize),
    Owned(String),
}

/// The parser's state between chunks.
#[derive(Debug)]
pub struct SseParser {
    /// Bytes of the unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a leading `\n` in the next one belongs to it.
    skip_lf: bool,
    /// Whether the stream's first bytes were checked for a BOM.
    started: bool,
    data: Data,
    event: String,
    id: Option<String>,
    max_event_bytes: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A range of `chunk` that was cut from a line already checked to be UTF-8 (so
/// the check here cannot fail; it only spares an `unsafe`).
fn chunk_str(chunk: &[u8], from: usize, to: usize) -> &str {
    std::str::from_utf8(chunk.get(from..to).unwrap_or_default()).unwrap_or_default()
}

/// Where a line's bytes are: in the chunk being fed (with its offset), or in
/// the parser's buffer of an unfinished line.
enum LineAt<'c> {
    Chunk(&'c [u8], usize),
    Buffer(Vec<u8>),
}

impl SseParser {
    /// A parser that fails any event larger than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            skip_lf: false,
            started: false,
            data: Data::None,
            event: String::new(),
            id: None,
            max_event_bytes,
        }
    }

    /// Parses one chunk, appending every event it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        self.feed_with(chunk, |event| out.push(event.to_owned()))
    }

    /// Ends the stream, appending what it completes to `out`.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        self.finish_with(|event| out.push(event.to_owned()))
    }

    /// Parses one chunk, handing every event it completes to `on_event`. Events
    /// borrow from `chunk` where they can.
    pub fn feed_with(
        &mut self,
        chunk: &[u8],
        mut on_event: impl FnMut(SseEventRef<'_>),
    ) -> Result<(), SseError> {
        let mut start = 0;
        if !self.started {
            // The BOM may itself be split across chunks: wait for three bytes.
            let mut probe = std::mem::take(&mut self.line);
            probe.extend_from_slice(chunk.get(..BOM.len().min(chunk.len())).unwrap_or_default());
            if probe.len() < BOM.len() && BOM.starts_with(&probe) {
                self.line = probe;
                return Ok(());
            }
            self.started = true;
            // Bytes held back waiting for the BOM check are a line's start.
            let held = probe.len() - BOM.len().min(chunk.len());
            self.line = probe.get(..held).map(<[u8]>::to_vec).unwrap_or_default();
            if probe.starts_with(BOM) {
                start = BOM.len() - held;
                self.line.clear();
            }
        } else if self.skip_lf && !chunk.is_empty() {
            self.skip_lf = false;
            if chunk.first() == Some(&b'\n') {
                start = 1;
            }
        }
        let result = self.feed_lines(chunk, start, &mut on_event);
        // Data still pointing into this chunk must outlive it.
        if let Data::InChunk(from, to) = self.data {
            self.data = Data::Owned(chunk_str(chunk, from, to).to_owned());
        }
        result
    }

    fn feed_lines(
        &mut self,
        chunk: &[u8],
        mut pos: usize,
        on_event: &mut impl FnMut(SseEventRef<'_>),
    ) -> Result<(), SseError> {
        while let Some(offset) = memchr::memchr2(b'\n', b'\r', chunk.get(pos..).unwrap_or_default())
        {
            let end = pos + offset;
            let mut next = end + 1;
            if chunk.get(end) == Some(&b'\r') {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    None => self.skip_lf = true,
                    Some(_) => {}
                }
            }
            let line = if self.line.is_empty() {
                LineAt::Chunk(chunk, pos)
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(chunk.get(pos..end).unwrap_or_default());
                LineAt::Buffer(line)
            };
            self.process_line(line, end, chunk, on_event)?;
            pos = next;
        }
        let rest = chunk.get(pos..).unwrap_or_default();
        self.line.extend_from_slice(rest);
        self.check_size(self.line.len())?;
        Ok(())
    }

    /// Ends the stream: a final line without its terminator is processed and an
    /// event without its closing blank line is dispatched.
    pub fn finish_with(
        &mut self,
        mut on_event: impl FnMut(SseEventRef<'_>),
    ) -> Result<(), SseError> {
        if !self.started {
            self.started = true;
            // Fewer than three bytes, all a BOM prefix: nothing to parse.
            self.line.clear();
        }
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            let end = line.len();
            self.process_line(LineAt::Buffer(line), end, &[], &mut on_event)?;
        }
        self.dispatch(&[], &mut on_event);
        Ok(())
    }

    fn data_len(&self) -> usize {
        match &self.data {
            Data::None => 0,
            Data::InChunk(from, to) => to - from,
            Data::Owned(data) => data.len(),
        }
    }

    fn check_size(&self, pending: usize) -> Result<(), SseError> {
        if self.data_len() + pending > self.max_event_bytes {
            return Err(SseError::EventTooLarge(self.max_event_bytes));
        }
        Ok(())
    }

    /// Handles one line; `end` is where it ends in `chunk` (for a line in the chunk).
    fn process_line(
        &mut self,
        line: LineAt<'_>,
        end: usize,
        chunk: &[u8],
        on_event: &mut impl FnMut(SseEventRef<'_>),
    ) -> Result<(), SseError> {
        let (bytes, offset) = match &line {
            LineAt::Chunk(chunk, start) => {
                (chunk.get(*start..end).unwrap_or_default(), Some(*start))
            }
            LineAt::Buffer(buffer) => (buffer.as_slice(), None),
        };
        if bytes.is_empty() {
            self.dispatch(chunk, on_event);
            return Ok(());
        }
        if bytes.first() == Some(&b':') {
            return Ok(());
        }
        let text = std::str::from_utf8(bytes).map_err(|_| SseError::InvalidUtf8)?;
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text, ""),
        };
        match field {
            "data" => {
                self.check_size(value.len() + 1)?;
                let value_start = offset.map(|o| o + (text.len() - value.len()));
                self.data = match (std::mem::replace(&mut self.data, Data::None), value_start) {
                    // The event's only line so far, in this chunk: keep a range.
                    (Data::None, Some(from)) => Data::InChunk(from, from + value.len()),
                    (Data::None, None) => Data::Owned(value.to_owned()),
                    (Data::InChunk(from, to), _) => {
                        let mut data = chunk_str(chunk, from, to).to_owned();
                        data.push('\n');
                        data.push_str(value);
                        Data::Owned(data)
                    }
                    (Data::Owned(mut data), _) => {
                        data.push('\n');
                        data.push_str(value);
                        Data::Owned(data)
                    }
                };
            }
            "event" => value.clone_into(&mut self.event),
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            // `retry` only matters to a reconnecting client; unknown fields are ignored.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, chunk: &[u8], on_event: &mut impl FnMut(SseEventRef<'_>)) {
        let data = std::mem::replace(&mut self.data, Data::None);
        let data: &str = match &data {
            Data::None => {
                self.event.clear();
                return;
            }
            Data::InChunk(from, to) => chunk_str(chunk, *from, *to),
            Data::Owned(data) => data,
        };
        on_event(SseEventRef {
            event: &self.event,
            data,
            id: self.id.as_deref(),
        });
        self.event.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Result<Vec<SseEvent>, SseError> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut out)?;
        }
        parser.finish(&mut out)?;
        Ok(out)
    }

    fn datas(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn all_line_endings_and_multiline_data() -> Result<(), SseError> {
        let events =
            parse_chunks(&[b"data: a\r\ndata: b\r\rdata:c\n\n: comment\nevent: x\ndata: d\n\n"])?;
        assert_eq!(datas(&events), vec!["a\nb", "c", "d"]);
        assert_eq!(events.get(2).map(|e| e.event.as_str()), Some("x"));
        Ok(())
    }

    #[test]
    fn every_split_gives_the_same_events() -> Result<(), SseError> {
        let stream: &[u8] =
            b"\xEF\xBB\xBFid: 7\r\ndata: {\"x\":1}\r\n\r\nevent: e\rdata: two\r\rdata: last";
        let whole = parse_chunks(&[stream])?;
        assert_eq!(datas(&whole), vec!["{\"x\":1}", "two", "last"]);
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(parse_chunks(&[a, b])?, whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse_chunks(&bytes)?, whole);
        Ok(())
    }

    #[test]
    fn oversized_event_fails() {
        let mut parser = SseParser::new(8);
        let mut out = Vec::new();
        assert_eq!(
            parser.feed(b"data: 0123456789", &mut out),
            Err(SseError::EventTooLarge(8))
        );
    }

    #[test]
    fn invalid_utf8_fails() {
        assert_eq!(
            parse_chunks(&[b"data: \xff\n\n"]),
            Err(SseError::InvalidUtf8)
        );
    }

    #[test]
    fn event_without_data_is_not_dispatched() -> Result<(), SseError> {
        assert!(parse_chunks(&[b"event: ping\n\nretry: 5\n\n"])?.is_empty());
        Ok(())
    }
}
