//! A chunk that repeats the one before but for its text.
//!
//! An upstream streaming an answer sends chunk after chunk that differ only
//! in the content string: the same `id`, `created`, `model` and choice, byte
//! for byte. [`RepeatedShape`] keeps the last parsed chunk's text around its
//! content when that chunk held one choice's content and nothing else to
//! fold; a next chunk that is those same bytes around another plain string
//! parses to the same chunk with that string as its content, so its content
//! is taken without parsing it again. Everything else the chunk says (its
//! metadata, role, finish reason, usage) the one before said already, and
//! folding it in again changes nothing.

use std::borrow::Cow;

use super::{Chunk, index_or};

/// The text around the content of the last chunk parsed, when it can be
/// repeated (see the module's doc).
#[derive(Debug, Default)]
pub struct RepeatedShape {
    /// The chunk's text up to and with the content's opening quote, and from
    /// its closing quote on; `None` when the last chunk cannot be repeated.
    around: Option<(String, String)>,
    /// The index of the chunk's one choice.
    index: u64,
}

impl RepeatedShape {
    /// The choice index and content of `data` when it repeats the last chunk
    /// learnt but for a content string without escapes.
    pub fn content<'d>(&self, data: &'d str) -> Option<(u64, &'d str)> {
        let (before, after) = self.around.as_ref()?;
        let text = data
            .strip_prefix(before.as_str())?
            .strip_suffix(after.as_str())?;
        // Within quotes, a string with no quote, backslash or control byte is
        // a plain JSON string, read as it is; any other text is parsed.
        let plain = !text.is_empty() && !text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
        plain.then_some((self.index, text))
    }

    /// Learns the shape of `chunk`, parsed from `data`; called for every
    /// chunk parsed, so a repeat is always of the chunk folded last.
    pub fn learn(&mut self, data: &str, chunk: &Chunk<'_>) {
        let mut around = self.around.take().unwrap_or_default();
        let found = repeatable(data, chunk)
            .and_then(|(index, start, end)| Some((index, data.get(..start)?, data.get(end..)?)));
        match found {
            Some((index, before, after)) => {
                around.0.clear();
                around.0.push_str(before);
                around.1.clear();
                around.1.push_str(after);
                self.around = Some(around);
                self.index = index;
            }
            None => self.around = None,
        }
    }
}

/// The choice index and the content's place in `data` (the string between
/// its quotes) of a chunk that holds one choice's content and nothing else
/// that folds in differently when said twice: no error, no legacy text, no
/// refusal, reasoning or tool calls. `None` for any other chunk, and for a
/// content that is not `data`'s own text (it had escapes).
fn repeatable(data: &str, chunk: &Chunk<'_>) -> Option<(u64, usize, usize)> {
    if chunk.error.is_some() {
        return None;
    }
    let [choice] = chunk.choices() else {
        return None;
    };
    let delta = choice.delta.as_ref()?;
    if choice.text.is_some()
        || delta.refusal.is_some()
        || delta.reasoning_content.is_some()
        || delta.reasoning.is_some()
        || delta.tool_calls.is_some()
    {
        return None;
    }
    let Some(Cow::Borrowed(content)) = &delta.content else {
        return None;
    };
    let start = (content.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
    let end = start.checked_add(content.len())?;
    // The content must be the string between two quotes of `data` itself.
    let quoted = data.as_bytes().get(start.checked_sub(1)?) == Some(&b'"')
        && data.as_bytes().get(end) == Some(&b'"')
        && data.get(start..end) == Some(*content);
    quoted.then_some((index_or(choice.index, 0), start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deltas::DeltaExtractor;
    use crate::events::LoopEvent;
    use crate::reassemble::Reassembler;

    /// Folds `chunks` as the stream path does, with repeats taken from
    /// `shape` when `repeats` is on; the completion, the deltas' texts and
    /// how many chunks were repeats.
    fn fold(chunks: &[String], repeats: bool) -> (serde_json::Value, Vec<String>, usize) {
        let mut shape = RepeatedShape::default();
        let mut reassembler = Reassembler::default();
        let mut extractor = DeltaExtractor::default();
        let mut taken = 0;
        for data in chunks {
            if repeats && let Some((index, text)) = shape.content(data) {
                reassembler.push_content(index, text);
                extractor.content(text, 1);
                taken += 1;
                continue;
            }
            let Some(chunk) = Chunk::parse(data) else {
                continue;
            };
            reassembler.push(&chunk);
            extractor.extract(&chunk, 1);
            shape.learn(data, &chunk);
        }
        let mut events: Vec<LoopEvent> = Vec::new();
        extractor.flush(&mut events);
        let texts = events.iter().map(|e| format!("{:?}", e.data)).collect();
        (reassembler.finish(), texts, taken)
    }

    fn content(id: &str, index: u64, text: &str, finish: &str) -> String {
        format!(
            "{{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\
             \"choices\":[{{\"index\":{index},\"delta\":{{\"content\":\"{text}\"}},\
             \"logprobs\":null,\"finish_reason\":{finish}}}]}}"
        )
    }

    #[test]
    fn repeats_fold_as_the_chunks_parsed_would() {
        let mut chunks = vec![
            "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}".to_owned(),
        ];
        for n in 0..20 {
            chunks.push(content("c", 0, &format!("tok{n} "), "null"));
        }
        chunks.extend([
            content("c", 0, "an \\\"escaped\\\" one\\n", "null"),
            content("c", 0, "after the escape", "null"),
            content("c", 0, "", "null"),
            "not json".to_owned(),
            content("c", 0, "after a malformed chunk", "null"),
            content("other", 0, "another id", "null"),
            content("other", 0, "é and ✓ and 𝄞", "null"),
            content("other", 1, "a second choice", "null"),
            content("other", 1, "again", "null"),
            "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}".to_owned(),
            "{\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hm\",\"content\":\"x\"}}]}".to_owned(),
            "{\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hm\",\"content\":\"y\"}}]}".to_owned(),
            content("other", 0, "near the end", "null"),
            content("other", 0, "the last", "\"stop\""),
            content("other", 0, "after the finish", "\"stop\""),
            "{\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}".to_owned(),
        ]);
        let parsed = fold(&chunks, false);
        let repeated = fold(&chunks, true);
        assert_eq!(repeated.0, parsed.0);
        assert_eq!(repeated.1, parsed.1);
        // The plain repeats were taken as repeats: 19 of the first run, then
        // one after the malformed chunk, one after the other id, one of the
        // second choice and one after the finish reason.
        assert_eq!(repeated.2, 19 + 4);
    }

    #[test]
    fn a_chunk_that_differs_outside_its_content_is_not_a_repeat() {
        let first = content("c", 0, "a", "null");
        let chunk = Chunk::parse(&first).unwrap();
        let mut shape = RepeatedShape::default();
        shape.learn(&first, &chunk);
        assert_eq!(
            shape.content(&content("c", 0, "bb", "null")),
            Some((0, "bb"))
        );
        for other in [
            content("d", 0, "bb", "null"),
            content("c", 0, "b\\\"", "null"),
            content("c", 0, "b\", \"x\":\"y", "null"),
            content("c", 0, "", "null"),
            content("c", 0, "b", "\"stop\""),
        ] {
            assert_eq!(shape.content(&other), None, "{other}");
        }
    }
}
