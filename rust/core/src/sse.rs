//! An incremental server-sent-events parser (WHATWG event-stream rules).
//!
//! Bytes arrive in arbitrary chunks. The parser keeps only the unfinished line
//! and resumes its scan where the previous chunk ended, so its work is linear in
//! the input however the stream is cut. It accepts `\n`, `\r\n` and `\r` line
//! ends (a `\r` at a chunk's end is resolved by the next chunk), multi-line
//! `data`, comments, `event`, `id` and `retry` fields and a leading BOM, and
//! dispatches a last event that lacks its closing blank line at [`SseParser::finish`].
//! One event larger than the cap fails instead of growing memory.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event` field; empty means the default type, `message`.
    pub event: String,
    /// The `data` lines joined by `\n`.
    pub data: String,
    /// The last `id` field seen, if any.
    pub id: Option<String>,
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

/// The parser's state between chunks.
#[derive(Debug)]
pub struct SseParser {
    /// Bytes of the unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a leading `\n` in the next one belongs to it.
    skip_lf: bool,
    /// Whether the stream's first bytes were checked for a BOM.
    started: bool,
    data: String,
    has_data: bool,
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

impl SseParser {
    /// A parser that fails any event larger than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            skip_lf: false,
            started: false,
            data: String::new(),
            has_data: false,
            event: String::new(),
            id: None,
            max_event_bytes,
        }
    }

    /// Parses one chunk, appending every event it completes to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if !self.started {
            // The BOM may itself be split across chunks: wait for three bytes.
            let mut probe = std::mem::take(&mut self.line);
            probe.extend_from_slice(chunk);
            if probe.len() < BOM.len() && BOM.starts_with(&probe) {
                self.line = probe;
                return Ok(());
            }
            self.started = true;
            let body = probe.strip_prefix(BOM).unwrap_or(&probe);
            return self.feed_lines(body, out);
        }
        if self.skip_lf && !chunk.is_empty() {
            self.skip_lf = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        self.feed_lines(chunk, out)
    }

    fn feed_lines(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, tail) = chunk.split_at(end);
            let is_cr = tail.first() == Some(&b'\r');
            let mut rest = tail.get(1..).unwrap_or_default();
            if is_cr {
                match rest.first() {
                    Some(b'\n') => rest = rest.get(1..).unwrap_or_default(),
                    None => self.skip_lf = true,
                    Some(_) => {}
                }
            }
            if self.line.is_empty() {
                self.process_line(head, out)?;
            } else {
                self.line.extend_from_slice(head);
                let line = std::mem::take(&mut self.line);
                self.process_line(&line, out)?;
            }
            chunk = rest;
        }
        self.line.extend_from_slice(chunk);
        self.check_size(self.line.len())?;
        Ok(())
    }

    /// Ends the stream: a final line without its terminator is processed and an
    /// event without its closing blank line is dispatched.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if !self.started {
            self.started = true;
            // Fewer than three bytes, all a BOM prefix: nothing to parse.
            self.line.clear();
        }
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out)?;
        }
        self.dispatch(out);
        Ok(())
    }

    fn check_size(&self, pending: usize) -> Result<(), SseError> {
        if self.data.len() + pending > self.max_event_bytes {
            return Err(SseError::EventTooLarge(self.max_event_bytes));
        }
        Ok(())
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line.first() == Some(&b':') {
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::InvalidUtf8)?;
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                self.check_size(value.len() + 1)?;
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => value.clone_into(&mut self.event),
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            // `retry` only matters to a reconnecting client; unknown fields are ignored.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if !self.has_data {
            self.event.clear();
            return;
        }
        self.has_data = false;
        out.push(SseEvent {
            event: std::mem::take(&mut self.event),
            data: std::mem::take(&mut self.data),
            id: self.id.clone(),
        });
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
