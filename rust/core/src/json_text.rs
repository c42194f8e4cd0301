//! JSON text written straight into a string, byte for byte as `serde_json`
//! writes it, for the frames written once per delta: building a
//! `serde_json::Value` for each (a map, its keys, a string per field) and
//! printing it cost more than everything else a delta does on its way out.

/// Appends `text` as a JSON string literal, escaped as `serde_json` escapes
/// it: `"` and `\`, the control characters (`\b \t \n \f \r` short, the
/// others as `\u00XX`), and nothing else.
pub fn push_string(out: &mut String, text: &str) {
    out.push('"');
    let mut start = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Every byte escaped is ASCII: the cuts are at character boundaries.
        out.push_str(text.get(start..at).unwrap_or_default());
        if escape.is_empty() {
            push_unicode_escape(out, byte);
        } else {
            out.push_str(escape);
        }
        start = at + 1;
    }
    out.push_str(text.get(start..).unwrap_or_default());
    out.push('"');
}

fn push_unicode_escape(out: &mut String, byte: u8) {
    out.push_str("\\u00");
    for digit in [byte >> 4, byte & 0xf] {
        out.push(char::from_digit(u32::from(digit), 16).unwrap_or('0'));
    }
}

/// Appends `"key":` (a key with no character to escape).
pub fn push_key(out: &mut String, key: &str) {
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
}

/// Appends an unsigned integer.
pub fn push_number(out: &mut String, number: u64) {
    use std::fmt::Write;
    // Writing into a `String` cannot fail.
    let _ = write!(out, "{number}");
}

/// Appends `value` as `serde_json` prints it, printed straight into `out`
/// rather than into a string of its own first: a long response's last frames
/// each hold its whole text, and a copy more of it, at once, is megabytes.
pub fn push_value(out: &mut String, value: &serde_json::Value) {
    let start = out.len();
    if serde_json::to_writer(Appender(out), value).is_err() {
        // Not reached (serde_json writes whole characters at a time): the
        // value is printed the other way rather than cut short.
        out.truncate(start);
        out.push_str(&value.to_string());
    }
}

/// `serde_json`'s writer over a `String`: each piece it writes is text.
struct Appender<'a>(&'a mut String);

impl std::io::Write for Appender<'_> {
    fn write(&mut self, piece: &[u8]) -> std::io::Result<usize> {
        let text = std::str::from_utf8(piece).map_err(std::io::Error::other)?;
        self.0.push_str(text);
        Ok(piece.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(text: &str) -> String {
        let mut out = String::new();
        push_string(&mut out, text);
        out
    }

    #[test]
    fn every_ascii_character_is_escaped_as_serde_json_escapes_it() {
        for byte in 0u8..=0x7f {
            let text = format!("a{}b", char::from(byte));
            assert_eq!(
                written(&text),
                serde_json::to_string(&text).unwrap(),
                "{byte:#x}"
            );
        }
    }

    #[test]
    fn other_characters_are_kept_as_they_are() {
        for text in [
            "",
            "é, ü",
            "日本語 \"quoted\"\n",
            "emoji 🦊\\",
            "\u{2028}\u{7f}",
        ] {
            assert_eq!(written(text), serde_json::to_string(text).unwrap());
        }
    }

    #[test]
    fn a_value_is_appended_as_serde_json_prints_it() {
        let value = serde_json::json!({"b": [1, 2.5, null, true], "a": "é\n🦊\"\u{1}", "c": {}});
        let mut out = String::from("x");
        push_value(&mut out, &value);
        assert_eq!(out, format!("x{value}"));
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        let mut out = String::new();
        push_key(&mut out, "n");
        push_number(&mut out, 18_446_744_073_709_551_615);
        assert_eq!(out, "\"n\":18446744073709551615");
    }
}
