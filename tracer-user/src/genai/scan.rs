//! Top-level scalar fields of a JSON object, scanned incrementally without keeping the body.
//!
//! A request body larger than the cap is not parsed, but its top-level `model`, `stream`,
//! `temperature`... are still real bytes of the wire: this scanner keeps just those (strings
//! up to a small length), wherever they sit in the body, in bounded memory.

use serde_json::{Map, Value};

const MAX_FIELDS: usize = 64;
const MAX_SCALAR: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Key,
    Colon,
    Value,
    Comma,
}

/// Incremental scanner of `{"key": scalar, ...}` at depth 1.
#[derive(Debug)]
pub struct TopLevelScanner {
    depth: u32,
    in_string: bool,
    escaped: bool,
    expect: Expect,
    /// Bytes of the string or bare scalar being read at depth 1 (with its quotes).
    token: Vec<u8>,
    token_overlong: bool,
    in_bare: bool,
    key: Option<String>,
    fields: Map<String, Value>,
    broken: bool,
    /// Bytes were lost: later bytes are not scanned (their place in the JSON is unknown).
    stopped: bool,
}

impl Default for TopLevelScanner {
    fn default() -> Self {
        TopLevelScanner {
            depth: 0,
            in_string: false,
            escaped: false,
            expect: Expect::Key,
            token: Vec::new(),
            token_overlong: false,
            in_bare: false,
            key: None,
            fields: Map::new(),
            broken: false,
            stopped: false,
        }
    }
}

impl TopLevelScanner {
    pub fn feed(&mut self, data: &[u8]) {
        for &b in data {
            if self.broken || self.stopped {
                return;
            }
            self.step(b);
        }
    }

    /// Bytes of the body were lost: keep the fields seen so far, scan nothing more (a value
    /// cut by the loss is dropped with its unfinished token).
    pub fn stop(&mut self) {
        self.stopped = true;
        self.token.clear();
        self.key = None;
    }

    /// A scalar field seen so far.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    /// The scalar fields seen so far, as a JSON object.
    pub fn fields(&self) -> Value {
        Value::Object(self.fields.clone())
    }

    fn push_token(&mut self, b: u8) {
        if self.token.len() < MAX_SCALAR {
            self.token.push(b);
        } else {
            self.token_overlong = true;
        }
    }

    fn finish_token(&mut self) {
        let token = std::mem::take(&mut self.token);
        let overlong = std::mem::replace(&mut self.token_overlong, false);
        match self.expect {
            Expect::Key => {
                self.key = serde_json::from_slice::<String>(&token)
                    .ok()
                    .filter(|_| !overlong);
                self.expect = Expect::Colon;
            }
            Expect::Value => {
                if let (Some(key), false) = (self.key.take(), overlong)
                    && let Ok(v) = serde_json::from_slice::<Value>(&token)
                    && self.fields.len() < MAX_FIELDS
                {
                    self.fields.insert(key, v);
                }
                self.expect = Expect::Comma;
            }
            _ => {}
        }
    }

    fn step(&mut self, b: u8) {
        if self.in_string {
            if self.depth == 1 {
                self.push_token(b);
            }
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if self.depth == 1 {
                    self.finish_token();
                }
            }
            return;
        }
        if self.in_bare {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+') {
                self.push_token(b);
                return;
            }
            self.in_bare = false;
            self.finish_token();
        }
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {}
            b'"' => {
                self.in_string = true;
                if self.depth == 1 {
                    self.token.clear();
                    self.push_token(b);
                }
            }
            b'{' | b'[' => {
                if self.depth == 1 {
                    // A nested value: skipped, not kept.
                    self.key = None;
                    self.expect = Expect::Comma;
                }
                if self.depth == 0 && b == b'[' {
                    self.broken = true;
                }
                self.depth = self.depth.saturating_add(1);
            }
            b'}' | b']' => self.depth = self.depth.saturating_sub(1),
            b':' if self.depth == 1 => self.expect = Expect::Value,
            b',' if self.depth == 1 => self.expect = Expect::Key,
            _ if self.depth == 1 && self.expect == Expect::Value => {
                self.in_bare = true;
                self.token.clear();
                self.push_token(b);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_top_level_scalars_anywhere_in_any_split() {
        let body = br#"{"messages": [{"role": "user", "content": "a \"model\": \"fake\" {x}"}], "model": "gpt-4o", "stream": true, "temperature": 0.5, "tools": {"model": "nested"}, "n": 2, "stop": null}"#;
        for split in [1, 3, 17, body.len()] {
            let mut s = TopLevelScanner::default();
            for piece in body.chunks(split) {
                s.feed(piece);
            }
            assert_eq!(
                s.fields(),
                json!({"model": "gpt-4o", "stream": true, "temperature": 0.5, "n": 2, "stop": null}),
                "split {split}"
            );
        }
    }

    #[test]
    fn stops_at_a_loss_keeping_the_prefix() {
        let mut s = TopLevelScanner::default();
        s.feed(br#"{"model": "gpt-4o", "stream": true, "messages": [{"content": "ab"#);
        s.stop();
        s.feed(br#"c"}], "model": "decoy", "temperature": 2}"#);
        assert_eq!(s.fields(), json!({"model": "gpt-4o", "stream": true}));
        // A value cut by the loss is not kept half-read.
        let mut s = TopLevelScanner::default();
        s.feed(br#"{"model": "gpt-4o-mi"#);
        s.stop();
        assert_eq!(s.fields(), json!({}));
    }

    #[test]
    fn garbage_does_not_panic_and_keeps_little() {
        let mut s = TopLevelScanner::default();
        s.feed(b"{\"a\": tru\"e\", :: , \"b\": \xff\xfe, \"c\": 1");
        s.feed(&[b'"'; 5000]);
        assert!(
            s.fields()
                .as_object()
                .is_some_and(|o| o.len() <= MAX_FIELDS)
        );
    }
}
