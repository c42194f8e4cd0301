//! A finished response's event log, stored compactly and rendered again byte
//! for byte.
//!
//! A stream is mostly delta frames that differ from the one before only in
//! their `sequence_number` and their `delta` text. A sealed log keeps each
//! such frame's shape (its *template*) once and then only its delta text, so a
//! delta costs its text plus two bytes. Every other frame is kept verbatim,
//! but for the texts it repeats: an item's `.done` frames, and the response
//! at the end, carry again the text its deltas streamed, and each such
//! repeat is kept as a reference to that template's deltas.
//!
//! A sealed log is text, one record per line, after the [`SEALED`] marker:
//! - `=` a new template, which becomes the current one;
//! - `@` the number of an earlier template, which becomes the current one;
//! - `:` the delta text of a frame rendered with the current template;
//! - `!` a frame kept as it was, but for its repeats.
//!
//! A frame's own newlines are written as U+001F, a template's holes as
//! U+001C (the delta) and U+001D (the sequence number), and a repeat of the
//! deltas of template `k` as `k` between two U+001A. A frame is
//! `event: <type>\ndata: <JSON>\n\n`, and JSON writes every control
//! character escaped, so none of those characters occurs in a frame; a log in
//! which one does is not sealed at all. Rendering puts back exactly what was
//! taken out, so a replay is the stream as it was sent, whatever the frames
//! hold.

use std::collections::HashMap;

/// The first character of a sealed log; a frame never starts with it.
pub const SEALED: char = '\u{1e}';
const NEWLINE: char = '\u{1f}';
const DELTA_HOLE: char = '\u{1c}';
const SEQUENCE_HOLE: char = '\u{1d}';
const REPEAT: char = '\u{1a}';
/// Shorter texts are not worth a reference.
const SHORTEST_REPEAT: usize = 24;
const FRAME_END: &str = "\n\n";

/// Why a sealed log could not be read.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a sealed event log is malformed: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

/// `frames` (consecutive frames numbered from `first_sequence`) as a sealed
/// log, or `None` when they hold a character the format reserves.
pub fn seal(frames: &str, first_sequence: u64) -> Option<String> {
    let mut sealer = Sealer::new(first_sequence);
    sealer.push(frames);
    sealer.finish()
}

/// Seals a log given a batch at a time, so a long one is never held whole:
/// only its sealed form grows.
#[derive(Debug)]
pub struct Sealer {
    out: String,
    templates: HashMap<String, usize>,
    texts: Vec<String>,
    current: Option<usize>,
    sequence: u64,
    reserved: bool,
}

impl Sealer {
    /// A sealer for a log whose first frame is numbered `first_sequence`.
    pub fn new(first_sequence: u64) -> Self {
        let mut out = String::new();
        out.push(SEALED);
        out.push('\n');
        Sealer {
            out,
            templates: HashMap::new(),
            texts: Vec::new(),
            current: None,
            sequence: first_sequence,
            reserved: false,
        }
    }

    /// Adds the next batch: whole frames, numbered on from the last.
    pub fn push(&mut self, frames: &str) {
        self.reserved |= frames
            .chars()
            .any(|c| matches!(c, SEALED | NEWLINE | DELTA_HOLE | SEQUENCE_HOLE | REPEAT));
        if self.reserved {
            return;
        }
        for frame in frames.split_inclusive(FRAME_END) {
            self.frame(frame);
            self.sequence += 1;
        }
    }

    /// The sealed log, or `None` when a batch held a reserved character.
    pub fn finish(self) -> Option<String> {
        (!self.reserved).then_some(self.out)
    }

    fn frame(&mut self, frame: &str) {
        let out = &mut self.out;
        match delta_shape(frame, self.sequence) {
            Some((template, delta)) => {
                let known = self.templates.len();
                let index = *self.templates.entry(template.clone()).or_insert(known);
                if self.current != Some(index) {
                    if index == known {
                        out.push('=');
                        push_escaped(out, &template);
                        self.texts.push(String::new());
                    } else {
                        out.push('@');
                        out.push_str(&index.to_string());
                    }
                    out.push('\n');
                    self.current = Some(index);
                }
                out.push(':');
                out.push_str(delta);
                if let Some(text) = self.texts.get_mut(index) {
                    text.push_str(delta);
                }
            }
            None => {
                out.push('!');
                push_escaped(out, &with_references(frame, &self.texts));
            }
        }
        out.push('\n');
    }
}

/// The frames of a sealed log numbered above `after`, at most `limit` of them,
/// the log's first frame being numbered `first_sequence`.
pub fn unseal(
    sealed: &str,
    first_sequence: u64,
    after: i64,
    limit: usize,
) -> Result<Vec<String>, Malformed> {
    let body = sealed
        .strip_prefix(SEALED)
        .and_then(|rest| rest.strip_prefix('\n'))
        .ok_or_else(|| Malformed("it does not start with its marker".into()))?;
    let mut templates: Vec<String> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    let mut current: Option<usize> = None;
    let mut sequence = first_sequence as i64;
    let mut frames = Vec::new();
    for line in body.split_terminator('\n') {
        if frames.len() >= limit {
            break;
        }
        let (tag, rest) = line.split_at(line.chars().next().map_or(0, char::len_utf8));
        match tag {
            "=" => {
                templates.push(rest.replace(NEWLINE, "\n"));
                texts.push(String::new());
                current = Some(templates.len() - 1);
            }
            "@" => {
                let index: usize = rest
                    .parse()
                    .map_err(|_| Malformed(format!("bad template number {rest:?}")))?;
                if index >= templates.len() {
                    return Err(Malformed(format!("no template {index}")));
                }
                current = Some(index);
            }
            ":" => {
                let (template, text) = current
                    .and_then(|index| Some((templates.get(index)?, texts.get_mut(index)?)))
                    .ok_or_else(|| Malformed("a delta before any template".into()))?;
                text.push_str(rest);
                if sequence > after {
                    frames.push(render(template, sequence, rest));
                }
                sequence += 1;
            }
            "!" => {
                if sequence > after {
                    frames.push(without_references(&rest.replace(NEWLINE, "\n"), &texts)?);
                }
                sequence += 1;
            }
            _ => return Err(Malformed(format!("unknown record {tag:?}"))),
        }
    }
    Ok(frames)
}

/// How many frames a sealed log holds.
pub fn sealed_count(sealed: &str) -> usize {
    sealed
        .split_terminator('\n')
        .filter(|line| line.starts_with(':') || line.starts_with('!'))
        .count()
}

/// A delta frame as `(template, delta text)`: the frame with its delta's
/// text and its sequence number (which must be `sequence`) taken out.
fn delta_shape(frame: &str, sequence: u64) -> Option<(String, &str)> {
    const DELTA_KEY: &str = "\"delta\":\"";
    const SEQUENCE_KEY: &str = "\"sequence_number\":";
    let head_end = frame.find('\n')?;
    if !frame[..head_end].ends_with(".delta") {
        return None;
    }
    let delta_start = frame.find(DELTA_KEY)? + DELTA_KEY.len();
    let delta_end = delta_start + string_end(&frame[delta_start..])?;
    let number_start = frame.find(SEQUENCE_KEY)? + SEQUENCE_KEY.len();
    let digits = frame[number_start..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    let number_end = number_start + digits;
    if frame[number_start..number_end] != sequence.to_string() {
        return None;
    }
    let mut template = String::with_capacity(frame.len() - (delta_end - delta_start));
    if number_end <= delta_start {
        template.push_str(&frame[..number_start]);
        template.push(SEQUENCE_HOLE);
        template.push_str(&frame[number_end..delta_start]);
        template.push(DELTA_HOLE);
        template.push_str(&frame[delta_end..]);
    } else {
        template.push_str(&frame[..delta_start]);
        template.push(DELTA_HOLE);
        template.push_str(&frame[delta_end..number_start]);
        template.push(SEQUENCE_HOLE);
        template.push_str(&frame[number_end..]);
    }
    Some((template, &frame[delta_start..delta_end]))
}

/// The length of a JSON string's escaped text up to its closing quote.
fn string_end(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, byte) in text.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return Some(i),
            _ => {}
        }
    }
    None
}

fn render(template: &str, sequence: i64, delta: &str) -> String {
    let mut frame = String::with_capacity(template.len() + delta.len() + 8);
    for c in template.chars() {
        match c {
            DELTA_HOLE => frame.push_str(delta),
            SEQUENCE_HOLE => frame.push_str(&sequence.to_string()),
            c => frame.push(c),
        }
    }
    frame
}

/// `frame` with each repeat of a template's deltas (the longest first) written
/// as a reference to them.
fn with_references(frame: &str, texts: &[String]) -> String {
    let mut order: Vec<usize> = (0..texts.len())
        .filter(|&k| texts.get(k).is_some_and(|t| t.len() >= SHORTEST_REPEAT))
        .collect();
    order.sort_by_key(|&k| std::cmp::Reverse(texts.get(k).map_or(0, String::len)));
    let mut frame = frame.to_owned();
    for k in order {
        if let Some(text) = texts.get(k) {
            if frame.contains(text.as_str()) {
                frame = frame.replace(text.as_str(), &format!("{REPEAT}{k}{REPEAT}"));
            }
        }
    }
    frame
}

/// A frame's references put back as the texts they stand for.
fn without_references(frame: &str, texts: &[String]) -> Result<String, Malformed> {
    let mut pieces = frame.split(REPEAT);
    let mut out = String::from(pieces.next().unwrap_or_default());
    while let Some(reference) = pieces.next() {
        let text = reference
            .parse::<usize>()
            .ok()
            .and_then(|k| texts.get(k))
            .ok_or_else(|| Malformed(format!("bad reference {reference:?}")))?;
        out.push_str(text);
        out.push_str(pieces.next().unwrap_or_default());
    }
    Ok(out)
}

fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        out.push(if c == '\n' { NEWLINE } else { c });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(kind: &str, sequence: u64, item: &str, text: &str) -> String {
        format!(
            "event: {kind}\ndata: {{\"type\":\"{kind}\",\"sequence_number\":{sequence},\
             \"item_id\":\"{item}\",\"output_index\":0,\"content_index\":0,\
             \"delta\":\"{text}\",\"logprobs\":[]}}\n\n"
        )
    }

    fn stream() -> String {
        let mut frames = String::from(
            "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":3}\n\n",
        );
        frames += &delta("response.reasoning_text.delta", 4, "rs_1", "think");
        frames += &delta("response.output_text.delta", 5, "msg_1", "Hel");
        frames += &delta("response.output_text.delta", 6, "msg_1", "lo \\\"q\\\" \\n");
        frames += &delta("response.reasoning_text.delta", 7, "rs_1", "more");
        frames += &delta(
            "response.output_text.delta",
            8,
            "msg_1",
            "é, and a long tail of text",
        );
        frames += "event: response.output_text.done\ndata: {\"text\":\"Hello \\\"q\\\" \\né, and a long tail of text\"}\n\n";
        frames += "event: response.completed\ndata: {\"type\":\"response.completed\",\"delta\":\"x\"}\n\n";
        frames
    }

    #[test]
    fn a_sealed_log_renders_the_frames_byte_for_byte() {
        let frames = stream();
        let sealed = seal(&frames, 3).unwrap();
        assert_eq!(sealed_count(&sealed), 8);
        // The done frame refers to the deltas it repeats.
        assert!(
            sealed.contains("{\"text\":\"\u{1a}1\u{1a}\"}"),
            "{sealed:?}"
        );
        assert_eq!(unseal(&sealed, 3, -1, usize::MAX).unwrap().concat(), frames);
    }

    #[test]
    fn a_log_sealed_a_batch_at_a_time_is_the_same_as_sealed_whole() {
        let frames = stream();
        let mut sealer = Sealer::new(3);
        for frame in frames.split_inclusive(FRAME_END) {
            sealer.push(frame);
        }
        assert_eq!(sealer.finish(), seal(&frames, 3));
        let mut reserved = Sealer::new(0);
        reserved.push(&frames);
        reserved.push("event: x\ndata: \u{1d}\n\n");
        assert_eq!(reserved.finish(), None);
    }

    #[test]
    fn a_delta_costs_its_text_and_two_bytes() {
        let mut frames = String::new();
        for sequence in 0..100 {
            frames += &delta("response.output_text.delta", sequence, "msg_1", "abcd");
        }
        let sealed = seal(&frames, 0).unwrap();
        let template = sealed.split('\n').nth(1).unwrap().len() + 1;
        assert_eq!(sealed.len(), 2 + template + 100 * (4 + 2));
    }

    #[test]
    fn a_replay_starts_after_its_cursor_and_stops_at_its_limit() {
        let frames = stream();
        let sealed = seal(&frames, 3).unwrap();
        let all: Vec<&str> = frames.split_inclusive(FRAME_END).collect();
        assert_eq!(unseal(&sealed, 3, 5, usize::MAX).unwrap(), all[3..]);
        assert_eq!(unseal(&sealed, 3, 4, 2).unwrap(), all[2..4]);
        assert!(unseal(&sealed, 3, 10, 10).unwrap().is_empty());
    }

    #[test]
    fn a_frame_numbered_otherwise_or_holding_a_reserved_character_is_kept_as_it_was() {
        let odd = delta("response.output_text.delta", 41, "msg_1", "x");
        let sealed = seal(&odd, 0).unwrap();
        assert!(sealed.contains('!'));
        assert_eq!(unseal(&sealed, 0, -1, 10).unwrap().concat(), odd);
        assert_eq!(seal("event: x\ndata: \u{1c}\n\n", 0), None);
    }

    #[test]
    fn a_malformed_log_is_an_error_not_a_panic() {
        for bad in [
            "",
            "x",
            "\u{1e}\n:a",
            "\u{1e}\n@7",
            "\u{1e}\n?",
            "\u{1e}\n@x",
        ] {
            assert!(unseal(bad, 0, -1, 10).is_err(), "{bad:?}");
        }
    }
}
