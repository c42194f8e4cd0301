//! The fast path of [`Chunk::parse`](super::Chunk::parse): one pass over the
//! bytes, reading exactly the fields of [`Chunk`] and validating what it skips.
//!
//! Every function answers `None` for "not sure": anything outside plain JSON of
//! the expected shape (a duplicate field, a non-object chunk, nesting past
//! [`MAX_DEPTH`], a malformed value) sends the data to serde, whose answer is
//! the reference. So the scanner may be conservative, but never different:
//! whenever it answers, serde would answer the same.

use std::borrow::Cow;

use super::{Choice, Chunk, Delta, FunctionDelta, Raw, ToolCallDelta};

/// Deeper nesting is left to serde (whose own limit is 128).
const MAX_DEPTH: usize = 64;

/// `None` means: let serde decide.
type Scan<T> = Option<T>;

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

/// Parses `text` as a chunk, or answers `None` to defer to serde.
pub fn chunk(text: &str) -> Scan<Chunk<'_>> {
    let mut reader = Reader {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    let mut chunk = Chunk::default();
    reader.chunk(&mut chunk)?;
    reader.ws();
    (reader.pos == reader.bytes.len()).then_some(chunk)
}

/// Where the run of plain string bytes starting at `from` ends: the first
/// quote, backslash or control character, or the end of the input. Reads eight
/// bytes at a time while it can (chunk strings are short, so this beats both a
/// byte loop and a vectorised search), then byte by byte.
fn plain_run(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Sets the high bit of some byte exactly when a byte of `word` is below
    // `n` (n <= 0x80): the classic has-less-than test.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    let mut at = from;
    while let Some(eight) = bytes.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(eight);
        let word = u64::from_ne_bytes(word);
        let special = below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1)
            | below(word, 0x20);
        if special != 0 {
            break;
        }
        at += 8;
    }
    while let Some(&byte) = bytes.get(at) {
        if byte == b'"' || byte == b'\\' || byte < 0x20 {
            break;
        }
        at += 1;
    }
    at
}

/// Decodes the body of a string whose escapes [`Reader::escape`] checked.
/// Tool-call arguments are JSON inside a string, so nearly every one of their
/// pieces has escapes. A `\\u` escape that is half of a surrogate pair
/// without its other half defers to serde (which rejects it).
fn unescape(body: &str) -> Scan<String> {
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.find('\\') {
        out.push_str(rest.get(..at)?);
        let letter = *rest.as_bytes().get(at + 1)?;
        rest = rest.get(at + 2..)?;
        let decoded = match letter {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let high = hex4(rest)?;
                rest = rest.get(4..)?;
                match high {
                    0xD800..=0xDBFF => {
                        let low = rest.strip_prefix("\\u").and_then(hex4)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        rest = rest.get(6..)?;
                        char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))?
                    }
                    _ => char::from_u32(high)?,
                }
            }
            _ => return None,
        };
        out.push(decoded);
    }
    out.push_str(rest);
    Some(out)
}

/// Four hex digits at the start of `text`.
fn hex4(text: &str) -> Scan<u32> {
    let digits = text.get(..4)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// Marks a known field as seen; a second sighting defers to serde, which
/// rejects duplicate fields.
fn first(seen: &mut u16, bit: u16) -> Scan<()> {
    if *seen & bit != 0 {
        return None;
    }
    *seen |= bit;
    Some(())
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Scan<()> {
        self.ws();
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    fn try_eat(&mut self, byte: u8) -> bool {
        self.ws();
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn literal(&mut self, word: &[u8]) -> Scan<()> {
        let end = self.pos + word.len();
        (self.bytes.get(self.pos..end)? == word).then(|| self.pos = end)
    }

    fn null(&mut self) -> bool {
        self.ws();
        self.literal(b"null").is_some()
    }

    /// A string at the cursor: borrowed when it has no escapes, decoded by
    /// serde_json when it has (rare in chunks).
    fn string(&mut self) -> Scan<Cow<'a, str>> {
        self.ws();
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.pos + 1;
        let mut end = plain_run(self.bytes, start);
        let mut escaped = false;
        // The run stopped at a quote, a backslash or a control character (not
        // allowed raw in JSON); after an escape, go on byte by byte.
        loop {
            match *self.bytes.get(end)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    end = self.escape(end + 1)?;
                }
                byte if byte < 0x20 => return None,
                _ => end += 1,
            }
        }
        self.pos = end + 1;
        let body = self.text.get(start..end)?;
        if escaped {
            return unescape(body).map(Cow::Owned);
        }
        Some(Cow::Borrowed(body))
    }

    /// An object key. Keys of chunks never have escapes: read them borrowed, and
    /// take the general path only when one does.
    fn key(&mut self) -> Scan<Cow<'a, str>> {
        self.ws();
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.pos + 1;
        let end = plain_run(self.bytes, start);
        if *self.bytes.get(end)? != b'"' {
            return self.string();
        }
        self.pos = end + 1;
        self.text.get(start..end).map(Cow::Borrowed)
    }

    /// Checks the escape whose letter is at `at`; returns where the string goes on.
    fn escape(&self, at: usize) -> Scan<usize> {
        match self.bytes.get(at)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(at + 1),
            b'u' => {
                let hex = self.bytes.get(at + 1..at + 5)?;
                hex.iter().all(u8::is_ascii_hexdigit).then_some(at + 5)
            }
            _ => None,
        }
    }

    fn opt_string(&mut self) -> Scan<Option<Cow<'a, str>>> {
        if self.null() {
            return Some(None);
        }
        self.string().map(Some)
    }

    /// A non-negative integer that fits `u64`; anything else defers to serde.
    fn opt_u64(&mut self) -> Scan<Option<u64>> {
        if self.null() {
            return Some(None);
        }
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = self.text.get(start..self.pos)?;
        let leading_zero = digits.len() > 1 && digits.starts_with('0');
        let fraction = matches!(self.peek(), Some(b'.' | b'e' | b'E'));
        if digits.is_empty() || leading_zero || fraction {
            return None;
        }
        digits.parse().ok().map(Some)
    }

    /// Any value, validated and kept as its text; `null` is `None`.
    fn raw(&mut self, depth: usize) -> Scan<Option<Raw<'a>>> {
        if self.null() {
            return Some(None);
        }
        self.ws();
        let start = self.pos;
        self.skip(depth)?;
        self.text.get(start..self.pos).map(|text| Some(Raw(text)))
    }

    /// Steps over one value, checking that it is valid JSON.
    fn skip(&mut self, depth: usize) -> Scan<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(depth, |reader, _, depth| reader.skip(depth)),
            b'[' => self.array(depth, |reader, depth| reader.skip(depth)),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Scan<()> {
        let digits = |reader: &mut Self| {
            let start = reader.pos;
            while reader.peek().is_some_and(|b| b.is_ascii_digit()) {
                reader.pos += 1;
            }
            (reader.pos > start).then_some(reader.pos - start)
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        if self.peek()? == b'0' {
            self.pos += 1;
        } else {
            digits(self)?;
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            digits(self)?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            digits(self)?;
        }
        Some(())
    }

    /// An object, handing each key and the reader (at the value) to `field`.
    fn object(
        &mut self,
        depth: usize,
        mut field: impl FnMut(&mut Self, &str, usize) -> Scan<()>,
    ) -> Scan<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'{')?;
        if self.try_eat(b'}') {
            return Some(());
        }
        loop {
            let key = self.key()?;
            self.eat(b':')?;
            field(self, &key, depth + 1)?;
            if !self.try_eat(b',') {
                return self.eat(b'}');
            }
        }
    }

    /// An array, handing the reader to `item` at each element.
    fn array(
        &mut self,
        depth: usize,
        mut item: impl FnMut(&mut Self, usize) -> Scan<()>,
    ) -> Scan<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'[')?;
        if self.try_eat(b']') {
            return Some(());
        }
        loop {
            item(self, depth + 1)?;
            if !self.try_eat(b',') {
                return self.eat(b']');
            }
        }
    }

    /// `null` (answering `false`) or an array, handing the reader to `item` at
    /// each element (answering `true`).
    fn opt_array(
        &mut self,
        depth: usize,
        item: impl FnMut(&mut Self, usize) -> Scan<()>,
    ) -> Scan<bool> {
        if self.null() {
            return Some(false);
        }
        self.array(depth, item)?;
        Some(true)
    }

    // Each level fills a slot its parent already holds: the view's structs are
    // large (a choice is about 200 bytes), and returning them by value through
    // every level cost more in copies than the parsing itself.

    fn chunk(&mut self, chunk: &mut Chunk<'a>) -> Scan<()> {
        let mut seen = 0u16;
        // serde reads a struct from an array too; that oddity is left to it.
        self.ws();
        if self.peek()? != b'{' {
            return None;
        }
        self.object(0, |reader, key, depth| {
            match key {
                "id" => {
                    first(&mut seen, 1)?;
                    chunk.id = reader.raw(depth)?;
                }
                "object" => {
                    first(&mut seen, 2)?;
                    chunk.object = reader.opt_string()?;
                }
                "created" => {
                    first(&mut seen, 4)?;
                    chunk.created = reader.raw(depth)?;
                }
                "model" => {
                    first(&mut seen, 8)?;
                    chunk.model = reader.raw(depth)?;
                }
                "system_fingerprint" => {
                    first(&mut seen, 16)?;
                    chunk.system_fingerprint = reader.raw(depth)?;
                }
                "usage" => {
                    first(&mut seen, 32)?;
                    chunk.usage = reader.raw(depth)?;
                }
                "error" => {
                    first(&mut seen, 64)?;
                    chunk.error = reader.raw(depth)?;
                }
                "choices" => {
                    first(&mut seen, 128)?;
                    let choices = chunk.choices.insert(Vec::new());
                    let present = reader.opt_array(depth, |reader, depth| {
                        choices.push(Choice::default());
                        reader.choice(depth, choices.last_mut()?)
                    })?;
                    if !present {
                        chunk.choices = None;
                    }
                }
                _ => reader.skip(depth)?,
            }
            Some(())
        })
    }

    fn choice(&mut self, depth: usize, choice: &mut Choice<'a>) -> Scan<()> {
        let mut seen = 0u16;
        self.object(depth, |reader, key, depth| {
            match key {
                "index" => {
                    first(&mut seen, 1)?;
                    choice.index = reader.opt_u64()?;
                }
                "delta" => {
                    first(&mut seen, 2)?;
                    choice.delta = None;
                    if !reader.null() {
                        reader.delta(depth, choice.delta.insert(Delta::default()))?;
                    }
                }
                "text" => {
                    first(&mut seen, 4)?;
                    choice.text = reader.opt_string()?;
                }
                "finish_reason" => {
                    first(&mut seen, 8)?;
                    choice.finish_reason = reader.opt_string()?;
                }
                _ => reader.skip(depth)?,
            }
            Some(())
        })
    }

    fn delta(&mut self, depth: usize, delta: &mut Delta<'a>) -> Scan<()> {
        let mut seen = 0u16;
        self.object(depth, |reader, key, depth| {
            match key {
                "role" => {
                    first(&mut seen, 1)?;
                    delta.role = reader.opt_string()?;
                }
                "content" => {
                    first(&mut seen, 2)?;
                    delta.content = reader.opt_string()?;
                }
                "refusal" => {
                    first(&mut seen, 4)?;
                    delta.refusal = reader.opt_string()?;
                }
                "reasoning_content" => {
                    first(&mut seen, 8)?;
                    delta.reasoning_content = reader.opt_string()?;
                }
                "reasoning" => {
                    first(&mut seen, 16)?;
                    delta.reasoning = reader.opt_string()?;
                }
                "tool_calls" => {
                    first(&mut seen, 32)?;
                    let calls = delta.tool_calls.insert(Vec::new());
                    let present = reader.opt_array(depth, |reader, depth| {
                        calls.push(ToolCallDelta::default());
                        reader.tool_call(depth, calls.last_mut()?)
                    })?;
                    if !present {
                        delta.tool_calls = None;
                    }
                }
                _ => reader.skip(depth)?,
            }
            Some(())
        })
    }

    fn tool_call(&mut self, depth: usize, call: &mut ToolCallDelta<'a>) -> Scan<()> {
        let mut seen = 0u16;
        self.object(depth, |reader, key, depth| {
            match key {
                "index" => {
                    first(&mut seen, 1)?;
                    call.index = reader.opt_u64()?;
                }
                "id" => {
                    first(&mut seen, 2)?;
                    call.id = reader.opt_string()?;
                }
                "type" => {
                    first(&mut seen, 4)?;
                    call.kind = reader.opt_string()?;
                }
                "function" => {
                    first(&mut seen, 8)?;
                    call.function = None;
                    if !reader.null() {
                        reader.function(depth, call.function.insert(FunctionDelta::default()))?;
                    }
                }
                _ => reader.skip(depth)?,
            }
            Some(())
        })
    }

    fn function(&mut self, depth: usize, function: &mut FunctionDelta<'a>) -> Scan<()> {
        let mut seen = 0u16;
        self.object(depth, |reader, key, depth| {
            match key {
                "name" => {
                    first(&mut seen, 1)?;
                    function.name = reader.opt_string()?;
                }
                "arguments" => {
                    first(&mut seen, 2)?;
                    function.arguments = reader.opt_string()?;
                }
                _ => reader.skip(depth)?,
            }
            Some(())
        })
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn both(text: &str) -> (Option<Chunk<'_>>, Option<Chunk<'_>>) {
        (chunk(text), Chunk::parse_with_serde(text))
    }

    #[test]
    fn agrees_with_serde_on_typical_and_odd_chunks() {
        let cases = [
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":null}]}"#,
            r#" { "choices" : [ { "delta" : { "content" : "a\"b\u00e9\n" } , "finish_reason" : "stop" } ] , "usage" : { "total_tokens" : 3 } } "#,
            r#"{"choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"id":"x","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}}]}"#,
            r#"{"choices":null,"error":{"code":429,"message":"slow down","nested":[1,-2.5e3,true,false,null,{"k":[]}]}}"#,
            r#"{"object":"text_completion","choices":[{"text":"abc","index":0}]}"#,
            r#"{"choices":[{"delta":null,"text":null}],"nvext":{"timing":{"x":1.5}}}"#,
            r#"{"choices":[{"delta":{"reasoning":"r","reasoning_content":null}}]}"#,
            r#"{"con\u0074ent":1,"choices":[]}"#,
        ];
        for case in cases {
            let (fast, serde) = both(case);
            assert!(fast.is_some(), "scanner deferred on {case}");
            assert_eq!(fast, serde, "{case}");
        }
    }

    #[test]
    fn defers_where_serde_must_decide() {
        let cases = [
            r#"{"id":"a","id":"b"}"#,                   // duplicate field
            r#"[null,"chat.completion.chunk"]"#,        // struct as array
            r#"{"choices":[{"index":-1}]}"#,            // not a u64
            r#"{"choices":[{"index":1.0}]}"#,           // not an integer
            r#"{"choices":[{"index":01}]}"#,            // leading zero
            r#"{"choices":[{"delta":{"content":5}}]}"#, // wrong type
            r#"{"x":[1,2,]}"#,                          // trailing comma
            r#"{"x":01}"#,                              // bad number
            r#"{"x":"\q"}"#,                            // bad escape
            "{\"x\":\"a\u{1}b\"}",                      // raw control character
            r#"{"choices":[]} x"#,                      // trailing garbage
            r#"{"choices":[]"#,                         // truncated
        ];
        for case in cases {
            assert!(chunk(case).is_none(), "scanner answered {case}");
        }
    }

    #[test]
    fn deep_nesting_defers() {
        let deep = format!("{{\"x\":{}1{}}}", "[".repeat(100), "]".repeat(100));
        assert!(chunk(&deep).is_none());
        assert!(Chunk::parse_with_serde(&deep).is_some());
    }
}
