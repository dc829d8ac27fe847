//! Streamed JSON arrays (`[{...},\n{...}]`, Gemini `streamGenerateContent` without `alt=sse`):
//! yields each top-level element as soon as its closing brace arrives.

/// Splits a JSON array stream into its elements' bytes, with a bounded element buffer.
#[derive(Debug)]
pub struct JsonArraySplitter {
    depth: u32,
    in_string: bool,
    escaped: bool,
    element: Vec<u8>,
    cap: usize,
    overlong: bool,
    /// Bytes were lost: skip to the next element at depth 1.
    lost: bool,
}

impl JsonArraySplitter {
    pub fn new(cap: usize) -> Self {
        JsonArraySplitter {
            depth: 0,
            in_string: false,
            escaped: false,
            element: Vec::new(),
            cap,
            overlong: false,
            lost: false,
        }
    }

    /// Bytes were lost: the element in progress is dropped (framing depth is unknown, so
    /// nothing more is parsed from this body).
    pub fn lost_bytes(&mut self) {
        self.element.clear();
        self.lost = true;
    }

    /// Calls `on_element(bytes, overlong)` for each complete top-level element.
    pub fn feed(&mut self, data: &[u8], on_element: &mut dyn FnMut(&[u8], bool)) {
        if self.lost {
            return;
        }
        for &b in data {
            let in_element = self.depth >= 2 || (self.depth == 1 && !is_separator(b));
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'[' | b'{' => self.depth = self.depth.saturating_add(1),
                    b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                    _ => {}
                }
            }
            if in_element && self.depth >= 1 {
                self.push(b);
            }
            if self.depth == 1
                && !self.in_string
                && (b == b'}' || b == b']')
                && !self.element.is_empty()
            {
                on_element(&self.element, self.overlong);
                self.element.clear();
                self.overlong = false;
            }
        }
    }

    fn push(&mut self, b: u8) {
        if self.element.len() < self.cap {
            self.element.push(b);
        } else {
            self.overlong = true;
        }
    }
}

fn is_separator(b: u8) -> bool {
    matches!(b, b',' | b' ' | b'\n' | b'\r' | b'\t' | b'[')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_any_split() {
        let data = b"[{\"a\": \"}]\\\"{\"},\r\n{\"b\": [1, {\"c\": 2}]}\n]";
        for split in 1..data.len() {
            let mut s = JsonArraySplitter::new(1024);
            let mut out = Vec::new();
            for piece in data.chunks(split) {
                s.feed(piece, &mut |e, _| {
                    out.push(String::from_utf8(e.to_vec()).unwrap())
                });
            }
            assert_eq!(
                out,
                vec!["{\"a\": \"}]\\\"{\"}", "{\"b\": [1, {\"c\": 2}]}"],
                "split {split}"
            );
        }
    }
}
