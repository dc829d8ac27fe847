//! Content attributes (`gen_ai.input.messages` & co.) fitted to `--max-content-bytes`.
//!
//! The attributes are JSON documents; cutting their text at a byte count leaves invalid JSON
//! that no backend can show. Instead whole messages and parts are kept while they fit, the
//! first one that does not fit keeps its outline (role, type, short fields) with its long text
//! cut, and the rest is left out. The caller marks the attribute as cut.

use serde_json::{Map, Value};

use super::redact;

/// Strings up to this many bytes belong to an object's outline (role, type, id, name...);
/// longer ones are content, cut when the budget runs out.
const OUTLINE_STRING_MAX: usize = 64;

/// Fields of the semconv message parts that hold content whatever their length.
const CONTENT_KEYS: &[&str] = &["content", "arguments", "response", "result"];

/// `value` with every string scrubbed of credentials (keys are schema names, kept).
pub fn scrubbed(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(redact::scrub_text(s)),
        Value::Array(items) => Value::Array(items.iter().map(scrubbed).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), scrubbed(v))).collect())
        }
        other => other.clone(),
    }
}

/// Free text (a tool's arguments or result) cut to at most `max_bytes` on a UTF-8 character
/// boundary; `true` when something was cut.
pub fn fit_text(text: &str, max_bytes: usize) -> (&str, bool) {
    if text.len() <= max_bytes {
        return (text, false);
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// A content document serialized within a byte budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FittedJson {
    pub json: String,
    /// Parts of the document were cut or left out.
    pub cut: bool,
}

/// `value` serialized in at most `max_bytes`, cut at message and part boundaries; `None` when
/// not even the outline of its first element fits.
pub fn fit_json(value: &Value, max_bytes: usize) -> Option<FittedJson> {
    if json_len(value) <= max_bytes {
        return Some(FittedJson {
            json: value.to_string(),
            cut: false,
        });
    }
    let fitted = shrink(value, max_bytes)?;
    let empty = match (&fitted, value) {
        (Value::Array(a), Value::Array(b)) => a.is_empty() && !b.is_empty(),
        (Value::Object(a), Value::Object(b)) => a.is_empty() && !b.is_empty(),
        _ => false,
    };
    (!empty).then(|| FittedJson {
        json: fitted.to_string(),
        cut: true,
    })
}

/// Counts serialized bytes without keeping them.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn json_len(value: &Value) -> usize {
    let mut counter = ByteCounter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        // Serializing a `Value` cannot fail; count it as too large to fit if it ever does.
        Err(_) => usize::MAX,
    }
}

/// A value whose serialization fits `budget` bytes, or `None`.
fn shrink(value: &Value, budget: usize) -> Option<Value> {
    if json_len(value) <= budget {
        return Some(value.clone());
    }
    match value {
        Value::String(s) => cut_string(s, budget).map(Value::String),
        Value::Array(items) => {
            if budget < 2 {
                return None;
            }
            let mut kept = Vec::new();
            let mut used = 2;
            for item in items {
                let comma = usize::from(!kept.is_empty());
                let room = budget.saturating_sub(used + comma);
                let len = json_len(item);
                if len <= room {
                    used += comma + len;
                    kept.push(item.clone());
                    continue;
                }
                if let Some(cut) = shrink(item, room) {
                    kept.push(cut);
                }
                break;
            }
            Some(Value::Array(kept))
        }
        Value::Object(map) => {
            let mut outline = Map::new();
            let mut long_keys = Vec::new();
            for (key, v) in map {
                let is_outline = match v {
                    Value::Array(_) | Value::Object(_) => false,
                    Value::String(s) => {
                        s.len() <= OUTLINE_STRING_MAX && !CONTENT_KEYS.contains(&key.as_str())
                    }
                    _ => true,
                };
                if is_outline {
                    outline.insert(key.clone(), v.clone());
                } else {
                    outline.insert(key.clone(), empty_like(v));
                    long_keys.push(key);
                }
            }
            let mut used = json_len(&Value::Object(outline.clone()));
            if used > budget {
                return None;
            }
            for key in long_keys {
                let (Some(full), Some(slot)) = (map.get(key), outline.get_mut(key)) else {
                    continue;
                };
                let empty_len = json_len(slot);
                let room = budget - used + empty_len;
                if let Some(cut) = shrink(full, room) {
                    used = used - empty_len + json_len(&cut);
                    *slot = cut;
                }
            }
            Some(Value::Object(outline))
        }
        // Numbers, booleans and null are whole or absent.
        _ => None,
    }
}

fn empty_like(value: &Value) -> Value {
    match value {
        Value::Array(_) => Value::Array(Vec::new()),
        Value::Object(_) => Value::Object(Map::new()),
        _ => Value::String(String::new()),
    }
}

/// The longest prefix of `s` (on a character boundary) whose JSON string fits `budget`.
fn cut_string(s: &str, budget: usize) -> Option<String> {
    let room = budget.checked_sub(2)?;
    let mut used = 0usize;
    let mut end = 0usize;
    for (i, c) in s.char_indices() {
        let escaped = match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if used + escaped > room {
            break;
        }
        used += escaped;
        end = i + c.len_utf8();
    }
    s.get(..end).map(str::to_string)
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_text_is_cut_on_a_character_boundary() {
        assert_eq!(super::fit_text("héllo", 10), ("héllo", false));
        // "é" is two bytes: a cut inside it moves back to the character's start.
        assert_eq!(super::fit_text("héllo", 2), ("h", true));
        assert_eq!(super::fit_text("héllo", 3), ("hé", true));
        assert_eq!(super::fit_text("", 0), ("", false));
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn strings_are_cut_by_their_escaped_length() {
        for budget in 0..40 {
            let s = "a\"é\n\u{1}ü tail";
            if let Some(cut) = cut_string(s, budget) {
                let json = Value::String(cut.clone()).to_string();
                assert!(json.len() <= budget, "{budget}: {json}");
                assert!(s.starts_with(&cut));
            } else {
                assert!(budget < 2);
            }
        }
    }

    #[test]
    fn every_budget_gives_valid_json_within_it() {
        let doc = json!([
            {"role": "user", "parts": [
                {"type": "text", "content": "x".repeat(300)},
                {"type": "tool_call", "id": "c1", "name": "f", "arguments": {"q": "y".repeat(200)}}
            ]},
            {"role": "assistant", "parts": [{"type": "text", "content": "done"}]}
        ]);
        let full = json_len(&doc);
        for budget in 0..full + 2 {
            match fit_json(&doc, budget) {
                Some(f) => {
                    assert!(f.json.len() <= budget, "{budget}");
                    let back: Value = serde_json::from_str(&f.json).unwrap_or(Value::Null);
                    assert!(back.is_array(), "{budget}: {}", f.json);
                    assert_eq!(f.cut, budget < full);
                    assert_eq!(back[0]["role"], "user", "{budget}: {}", f.json);
                }
                None => assert!(budget < 30, "{budget}"),
            }
        }
    }

    #[test]
    fn scrubbing_reaches_nested_strings() {
        let doc = json!([{"parts": [{"content": "my key is sk-live-1234567890"}]}]);
        assert_eq!(
            scrubbed(&doc),
            json!([{"parts": [{"content": "my key is [REDACTED]"}]}])
        );
    }
}
