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

use std::borrow::Cow;
use std::collections::HashMap;

use memchr::memmem;

/// The first character of a sealed log; a frame never starts with it.
pub const SEALED: char = '\u{1e}';
const NEWLINE: char = '\u{1f}';
const DELTA_HOLE: char = '\u{1c}';
const SEQUENCE_HOLE: char = '\u{1d}';
const REPEAT: char = '\u{1a}';
/// Shorter texts are not worth a reference.
const SHORTEST_REPEAT: usize = 24;
const FRAME_END: &str = "\n\n";
const DELTA_KEY: &str = "\"delta\":\"";
const SEQUENCE_KEY: &str = "\"sequence_number\":";

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
    /// The template of the frame being sealed, built here rather than in a
    /// new string per frame: most frames have the current template's shape.
    shape: String,
    /// The current template's text.
    current_shape: String,
    repeats: Repeats,
}

/// A searcher for each template's delta text, by template, built for the
/// text's length at the time: an item's several `.done` frames, and the
/// response at the end, all repeat the same text, one needle searched for
/// again and again. Only for texts up to [`LONGEST_KEPT_SEARCHER`]: a kept
/// searcher owns a copy of its needle. Boxed: a searcher is over-aligned (see
/// [`Needles`]).
type Repeats = HashMap<usize, (usize, Box<memmem::Finder<'static>>)>;

/// What the sealer looks for in every frame, each searcher built once per
/// process. Kept in a static rather than in the sealer: the searchers are
/// over-aligned (SIMD registers), and a sealer may live where that alignment
/// is not honoured (inside a Python object, whose allocator aligns to 16).
#[derive(Debug)]
struct Needles {
    frame_end: memmem::Finder<'static>,
    delta: memmem::Finder<'static>,
    sequence: memmem::Finder<'static>,
}

impl Needles {
    fn get() -> &'static Needles {
        static NEEDLES: std::sync::OnceLock<Needles> = std::sync::OnceLock::new();
        NEEDLES.get_or_init(Needles::new)
    }

    fn new() -> Self {
        Needles {
            frame_end: memmem::Finder::new(FRAME_END.as_bytes()),
            delta: memmem::Finder::new(DELTA_KEY.as_bytes()),
            sequence: memmem::Finder::new(SEQUENCE_KEY.as_bytes()),
        }
    }
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
            shape: String::new(),
            current_shape: String::new(),
            repeats: HashMap::new(),
        }
    }

    /// Adds the next batch: whole frames, numbered on from the last. Returns
    /// how many frames it held; 0 once a batch held a reserved character
    /// (the log is then not sealed, and not counted).
    pub fn push(&mut self, frames: &str) -> usize {
        // The reserved characters are ASCII, and no byte of another UTF-8
        // character is: a scan of the bytes finds them.
        self.reserved |= holds_reserved(frames);
        if self.reserved {
            return 0;
        }
        let first = self.sequence;
        let mut rest = frames;
        while !rest.is_empty() {
            let end = Needles::get()
                .frame_end
                .find(rest.as_bytes())
                .map_or(rest.len(), |at| at + FRAME_END.len());
            // A frame ends in ASCII: the cut is at a character boundary.
            let (frame, after) = rest.split_at(end);
            self.frame(frame);
            self.sequence += 1;
            rest = after;
        }
        usize::try_from(self.sequence - first).unwrap_or(usize::MAX)
    }

    /// The sealed log, or `None` when a batch held a reserved character.
    pub fn finish(self) -> Option<String> {
        (!self.reserved).then_some(self.out)
    }

    /// Adds a log sealed on its own whose first frame is numbered
    /// `first_sequence` (the next one here, else it is rendered and pushed
    /// as frames): its deltas are taken as they are kept, each with its
    /// template and text, not rendered and parsed again. Returns how many
    /// frames it held, as `push` does.
    pub fn push_sealed(&mut self, sealed: &str, first_sequence: u64) -> Result<usize, Malformed> {
        if first_sequence != self.sequence {
            let frames = unseal(sealed, first_sequence, -1, usize::MAX)?;
            return Ok(self.push(&frames.concat()));
        }
        if self.reserved {
            return Ok(0);
        }
        let first = self.sequence;
        let mut records = Records::new(sealed)?;
        // This sealer's number for each of the log's templates met so far: a
        // delta of the current one is kept without a copy of its template.
        let mut ours: Vec<Option<usize>> = Vec::new();
        while let Some(record) = records.next_frame()? {
            match record {
                Record::Delta { template, text } => {
                    let known = ours.get(template).copied().flatten();
                    if known.is_some() && known == self.current {
                        self.current_delta(text);
                    } else {
                        self.shape.clear();
                        self.shape.push_str(records.template(template));
                        self.delta(text);
                        if ours.len() <= template {
                            ours.resize(template + 1, None);
                        }
                        if let Some(slot) = ours.get_mut(template) {
                            *slot = self.current;
                        }
                    }
                }
                Record::Kept(kept) => {
                    let frame = records.as_it_was(kept)?;
                    self.frame(&frame);
                }
            }
            self.sequence += 1;
        }
        Ok(usize::try_from(self.sequence - first).unwrap_or(usize::MAX))
    }

    fn frame(&mut self, frame: &str) {
        match DeltaFrame::read(frame, self.sequence, Needles::get()) {
            // The common case, a frame shaped as the one before, is told by
            // comparing its pieces with that template, not by a copy of it.
            Some(found) if self.current.is_some() && found.has_shape(&self.current_shape) => {
                self.current_delta(found.delta);
            }
            Some(found) => {
                found.write_shape(&mut self.shape);
                self.delta(found.delta);
            }
            None => {
                self.out.push('!');
                push_escaped(
                    &mut self.out,
                    &with_references(frame, &self.texts, &mut self.repeats),
                );
                self.out.push('\n');
            }
        }
    }

    /// A delta frame whose template is in `shape`, kept as its text.
    fn delta(&mut self, delta: &str) {
        let template = &self.shape;
        let known = self.templates.len();
        let index = match self.current {
            // The common case, a frame shaped as the one before, is
            // told by one comparison rather than a hash of the frame.
            Some(current) if *template == self.current_shape => current,
            _ => match self.templates.get(template.as_str()) {
                Some(&index) => index,
                None => {
                    self.templates.insert(template.clone(), known);
                    known
                }
            },
        };
        if self.current != Some(index) {
            let out = &mut self.out;
            self.current_shape.clone_from(template);
            if index == known {
                out.push('=');
                push_escaped(out, template);
                self.texts.push(String::new());
            } else {
                out.push('@');
                out.push_str(&index.to_string());
            }
            out.push('\n');
            self.current = Some(index);
        }
        self.current_delta(delta);
    }

    /// A delta frame of the current template, kept as its text.
    fn current_delta(&mut self, delta: &str) {
        self.out.push(':');
        self.out.push_str(delta);
        if let Some(text) = self.current.and_then(|index| self.texts.get_mut(index)) {
            text.push_str(delta);
        }
        self.out.push('\n');
    }
}

/// A frame of a sealed log, as `Records` reads it.
enum Record<'s> {
    /// A delta frame: the number of its template, and its delta text.
    Delta { template: usize, text: &'s str },
    /// A frame kept as it was but for its repeats (`Records::as_it_was`).
    Kept(&'s str),
}

/// A sealed log read a frame at a time: the templates met so far, and the
/// deltas of each (what a kept frame's references stand for).
struct Records<'s> {
    lines: std::str::SplitTerminator<'s, char>,
    templates: Vec<String>,
    texts: Vec<String>,
    current: Option<usize>,
}

impl<'s> Records<'s> {
    fn new(sealed: &'s str) -> Result<Self, Malformed> {
        let body = sealed
            .strip_prefix(SEALED)
            .and_then(|rest| rest.strip_prefix('\n'))
            .ok_or_else(|| Malformed("it does not start with its marker".into()))?;
        Ok(Records {
            lines: body.split_terminator('\n'),
            templates: Vec::new(),
            texts: Vec::new(),
            current: None,
        })
    }

    /// The next frame; `None` at the end of the log.
    fn next_frame(&mut self) -> Result<Option<Record<'s>>, Malformed> {
        for line in self.lines.by_ref() {
            let (tag, rest) = line.split_at(line.chars().next().map_or(0, char::len_utf8));
            match tag {
                "=" => {
                    self.templates.push(rest.replace(NEWLINE, "\n"));
                    self.texts.push(String::new());
                    self.current = Some(self.templates.len() - 1);
                }
                "@" => {
                    let index: usize = rest
                        .parse()
                        .map_err(|_| Malformed(format!("bad template number {rest:?}")))?;
                    if index >= self.templates.len() {
                        return Err(Malformed(format!("no template {index}")));
                    }
                    self.current = Some(index);
                }
                ":" => {
                    let (template, text) = self
                        .current
                        .and_then(|index| Some((index, self.texts.get_mut(index)?)))
                        .ok_or_else(|| Malformed("a delta before any template".into()))?;
                    text.push_str(rest);
                    return Ok(Some(Record::Delta {
                        template,
                        text: rest,
                    }));
                }
                "!" => return Ok(Some(Record::Kept(rest))),
                _ => return Err(Malformed(format!("unknown record {tag:?}"))),
            }
        }
        Ok(None)
    }

    /// Template `index` (one `next_frame` returned).
    fn template(&self, index: usize) -> &str {
        self.templates.get(index).map_or("", String::as_str)
    }

    /// A kept frame as it was: its newlines and the texts its references
    /// stand for put back.
    fn as_it_was(&self, kept: &str) -> Result<String, Malformed> {
        without_references(&kept.replace(NEWLINE, "\n"), &self.texts)
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
    let mut records = Records::new(sealed)?;
    let mut sequence = first_sequence as i64;
    let mut frames = Vec::new();
    while frames.len() < limit {
        let Some(record) = records.next_frame()? else {
            break;
        };
        if sequence > after {
            frames.push(match record {
                Record::Delta { template, text } => {
                    render(records.template(template), sequence, text)
                }
                Record::Kept(kept) => records.as_it_was(kept)?,
            });
        }
        sequence += 1;
    }
    Ok(frames)
}

/// How many frames a batch of frames holds: its blank lines.
pub fn count_frames(frames: &str) -> usize {
    Needles::get()
        .frame_end
        .find_iter(frames.as_bytes())
        .count()
}

/// How many frames a sealed log holds.
pub fn sealed_count(sealed: &str) -> usize {
    sealed
        .split_terminator('\n')
        .filter(|line| line.starts_with(':') || line.starts_with('!'))
        .count()
}

/// A delta frame read: its delta text, and its template (the frame with that
/// text and its sequence number taken out, each replaced by its hole).
struct DeltaFrame<'f> {
    delta: &'f str,
    /// The frame's text around its two holes, in order.
    pieces: [&'f str; 3],
    /// The holes between them, in order.
    holes: [char; 2],
}

impl<'f> DeltaFrame<'f> {
    /// `frame` read as a delta frame whose sequence number is `sequence`;
    /// `None` for any other frame.
    fn read(frame: &'f str, sequence: u64, needles: &Needles) -> Option<Self> {
        let head_end = memchr::memchr(b'\n', frame.as_bytes())?;
        if !frame[..head_end].ends_with(".delta") {
            return None;
        }
        let delta_start = needles.delta.find(frame.as_bytes())? + DELTA_KEY.len();
        let delta_end = delta_start + string_end(&frame[delta_start..])?;
        let number_start = needles.sequence.find(frame.as_bytes())? + SEQUENCE_KEY.len();
        let digits = frame[number_start..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let number_end = number_start + digits;
        let number = &frame[number_start..number_end];
        // Written as the stream writes it: no leading zero.
        if number.parse::<u64>() != Ok(sequence) || (digits > 1 && number.starts_with('0')) {
            return None;
        }
        let delta = &frame[delta_start..delta_end];
        Some(if number_end <= delta_start {
            DeltaFrame {
                delta,
                pieces: [
                    &frame[..number_start],
                    &frame[number_end..delta_start],
                    &frame[delta_end..],
                ],
                holes: [SEQUENCE_HOLE, DELTA_HOLE],
            }
        } else {
            DeltaFrame {
                delta,
                pieces: [
                    &frame[..delta_start],
                    &frame[delta_end..number_start],
                    &frame[number_end..],
                ],
                holes: [DELTA_HOLE, SEQUENCE_HOLE],
            }
        })
    }

    /// Whether `shape` is this frame's template.
    fn has_shape(&self, shape: &str) -> bool {
        let [first, second, third] = self.pieces;
        let mut rest = shape;
        for (piece, hole) in [(first, Some(self.holes[0])), (second, Some(self.holes[1]))]
            .into_iter()
            .chain([(third, None)])
        {
            let Some(after) = rest.strip_prefix(piece) else {
                return false;
            };
            rest = match hole {
                Some(hole) => match after.strip_prefix(hole) {
                    Some(after) => after,
                    None => return false,
                },
                None => after,
            };
        }
        rest.is_empty()
    }

    /// Writes this frame's template into `shape`.
    fn write_shape(&self, shape: &mut String) {
        shape.clear();
        shape.push_str(self.pieces[0]);
        shape.push(self.holes[0]);
        shape.push_str(self.pieces[1]);
        shape.push(self.holes[1]);
        shape.push_str(self.pieces[2]);
    }
}

/// Whether `text` holds a character the format reserves. They are all ASCII,
/// and no byte of another UTF-8 character is one, so the bytes are scanned:
/// in blocks without an early exit, which the compiler turns into vector
/// instructions (a byte-at-a-time search was most of a delta frame's sealing).
fn holds_reserved(text: &str) -> bool {
    const _: () = assert!(
        REPEAT as u32 == 0x1a
            && DELTA_HOLE as u32 == 0x1c
            && SEQUENCE_HOLE as u32 == 0x1d
            && SEALED as u32 == 0x1e
            && NEWLINE as u32 == 0x1f
    );
    let reserved = |b: u8| matches!(b, 0x1a | 0x1c..=0x1f);
    text.as_bytes()
        .chunks(64)
        .any(|block| block.iter().fold(false, |found, &b| found | reserved(b)))
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
/// as a reference to them; `frame` itself when it repeats none (a long
/// response's last frames are megabytes, and most frames repeat nothing).
fn with_references<'f>(frame: &'f str, texts: &[String], repeats: &mut Repeats) -> Cow<'f, str> {
    let mut order: Vec<usize> = (0..texts.len())
        .filter(|&k| texts.get(k).is_some_and(|t| t.len() >= SHORTEST_REPEAT))
        .collect();
    order.sort_by_key(|&k| std::cmp::Reverse(texts.get(k).map_or(0, String::len)));
    let mut frame = Cow::Borrowed(frame);
    for k in order {
        if let Some(text) = texts.get(k) {
            if frame.len() < text.len() {
                continue;
            }
            let replaced = if text.len() > LONGEST_KEPT_SEARCHER {
                // Built for this frame alone: a kept searcher holds a copy
                // of its needle.
                replace_repeats(&frame, text, &memmem::Finder::new(text.as_bytes()), k)
            } else {
                let (built_for, finder) = repeats.entry(k).or_insert_with(|| (0, searcher("")));
                if *built_for != text.len() {
                    (*built_for, *finder) = (text.len(), searcher(text));
                }
                replace_repeats(&frame, text, finder, k)
            };
            if let Some(replaced) = replaced {
                frame = Cow::Owned(replaced);
            }
        }
    }
    frame
}

/// The longest text whose searcher a sealer keeps for the next frame.
const LONGEST_KEPT_SEARCHER: usize = 64 << 10;

/// `frame` with every occurrence of `text` (which `finder` finds) written as
/// a reference to the deltas of template `k`; `None` when it holds none.
fn replace_repeats(
    frame: &str,
    text: &str,
    finder: &memmem::Finder<'_>,
    k: usize,
) -> Option<String> {
    let mut found = finder.find_iter(frame.as_bytes()).peekable();
    found.peek()?;
    let mut out = String::with_capacity(frame.len());
    let mut last = 0;
    for at in found {
        // A match of UTF-8 text starts and ends on character boundaries.
        out.push_str(frame.get(last..at)?);
        out.push(REPEAT);
        out.push_str(&k.to_string());
        out.push(REPEAT);
        last = at + text.len();
    }
    out.push_str(frame.get(last..)?);
    Some(out)
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

fn searcher(text: &str) -> Box<memmem::Finder<'static>> {
    Box::new(memmem::Finder::new(text.as_bytes()).into_owned())
}

/// `text` with its newlines written as `NEWLINE`: copied a line at a time,
/// not a character at a time (a kept frame can be a whole response).
fn push_escaped(out: &mut String, text: &str) {
    let mut lines = text.split('\n');
    out.push_str(lines.next().unwrap_or_default());
    for line in lines {
        out.push(NEWLINE);
        out.push_str(line);
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
    fn frames_are_counted_by_their_blank_lines() {
        assert_eq!(count_frames(""), 0);
        assert_eq!(count_frames(&stream()), 8);
        assert_eq!(count_frames("a\n\n\n\nb\n\n"), 3);
    }

    #[test]
    fn every_repeat_in_a_frame_is_a_reference() {
        let mut frames = stream();
        let text = "Hello \\\"q\\\" \\né, and a long tail of text";
        frames += &format!(
            "event: response.output_item.done\ndata: {{\"a\":\"{text}\",\"b\":\"{text}\"}}\n\n"
        );
        let sealed = seal(&frames, 3).unwrap();
        assert!(
            sealed.contains("{\"a\":\"\u{1a}1\u{1a}\",\"b\":\"\u{1a}1\u{1a}\"}"),
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
    fn logs_sealed_a_batch_at_a_time_join_as_the_log_sealed_whole() {
        let frames = stream();
        let all: Vec<&str> = frames.split_inclusive(FRAME_END).collect();
        for cut in 0..=all.len() {
            let (one, two) = (all[..cut].concat(), all[cut..].concat());
            let mut sealer = Sealer::new(3);
            for (first, batch) in [(3, &one), (3 + cut as u64, &two)] {
                let count = match seal(batch, first) {
                    Some(part) if !batch.is_empty() => sealer.push_sealed(&part, first).unwrap(),
                    _ => sealer.push(batch),
                };
                assert_eq!(count, count_frames(batch));
            }
            assert_eq!(sealer.finish(), seal(&frames, 3), "cut at {cut}");
        }
        // One numbered otherwise than the log goes on is rendered and pushed.
        let mut sealer = Sealer::new(3);
        let part = seal(&frames, 4).unwrap();
        assert_eq!(sealer.push_sealed(&part, 4).unwrap(), 8);
        let rendered = unseal(&part, 4, -1, usize::MAX).unwrap().concat();
        assert_eq!(sealer.finish(), seal(&rendered, 3));
        assert!(Sealer::new(0).push_sealed("\u{1e}\n@3", 0).is_err());
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
        // Its number written another way (a leading zero) renders back as it was.
        let padded = odd.replace(":41,", ":07,");
        let sealed = seal(&padded, 7).unwrap();
        assert!(sealed.contains('!'));
        assert_eq!(unseal(&sealed, 7, -1, 10).unwrap().concat(), padded);
        assert_eq!(seal("event: x\ndata: \u{1c}\n\n", 0), None);
    }

    #[test]
    fn a_log_holding_any_reserved_character_anywhere_is_not_sealed() {
        let frames = stream();
        for reserved in [SEALED, NEWLINE, DELTA_HOLE, SEQUENCE_HOLE, REPEAT] {
            // At the start, in the middle and at the end of a scanned block.
            for at in [0, 63, 64, 130, frames.len() - 2] {
                let mut held = frames.clone();
                held.insert(at, reserved);
                assert_eq!(seal(&held, 3), None, "{reserved:?} at {at}");
            }
        }
        // The characters around them are not reserved.
        let escape = frames.replace("Hel", "H\u{1b}\u{19}\u{7f}l");
        let sealed = seal(&escape, 3).unwrap();
        assert_eq!(unseal(&sealed, 3, -1, 100).unwrap().concat(), escape);
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
