//! Line splitting shared by SSE and NDJSON: LF, CRLF and lone CR terminators, including a CR
//! at the end of one chunk followed by LF at the start of the next.

/// Splits a byte stream into lines; a line longer than the cap is cut and flagged.
#[derive(Debug)]
pub struct LineSplitter {
    line: Vec<u8>,
    cap: usize,
    /// The previous chunk ended with CR: a leading LF in the next chunk belongs to it.
    pending_cr: bool,
    overlong: bool,
    /// Bytes were lost: drop everything up to the next terminator.
    discarding: bool,
}

/// One complete line (without terminator).
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub bytes: &'a [u8],
    /// The line exceeded the cap and was cut.
    pub overlong: bool,
}

impl LineSplitter {
    pub fn new(cap: usize) -> Self {
        LineSplitter {
            line: Vec::new(),
            cap,
            pending_cr: false,
            overlong: false,
            discarding: false,
        }
    }

    /// Bytes were lost before the next data: the current line is unusable.
    pub fn lost_bytes(&mut self) {
        self.line.clear();
        self.overlong = false;
        self.pending_cr = false;
        self.discarding = true;
    }

    /// Feeds bytes; calls `on_line` for each complete line.
    pub fn feed(&mut self, mut data: &[u8], on_line: &mut dyn FnMut(Line<'_>)) {
        if self.pending_cr {
            self.pending_cr = false;
            if let Some(rest) = data.strip_prefix(b"\n") {
                data = rest;
            }
        }
        while !data.is_empty() {
            match memchr::memchr2(b'\n', b'\r', data) {
                Some(i) => {
                    let (part, rest) = data.split_at(i);
                    // A line that lies whole in this chunk is handed over in place; only a
                    // line split across chunks is gathered in the buffer.
                    let direct = self.line.is_empty() && !self.discarding && part.len() <= self.cap;
                    if !direct {
                        self.append(part);
                    }
                    let term = rest.first().copied().unwrap_or(b'\n');
                    let mut after = rest.get(1..).unwrap_or_default();
                    if term == b'\r' {
                        if after.is_empty() {
                            self.pending_cr = true;
                        } else if let Some(r) = after.strip_prefix(b"\n") {
                            after = r;
                        }
                    }
                    if self.discarding {
                        self.discarding = false;
                    } else if direct {
                        on_line(Line {
                            bytes: part,
                            overlong: false,
                        });
                    } else {
                        on_line(Line {
                            bytes: &self.line,
                            overlong: self.overlong,
                        });
                    }
                    self.line.clear();
                    self.overlong = false;
                    data = after;
                }
                None => {
                    self.append(data);
                    data = &[];
                }
            }
        }
    }

    /// The unterminated last line at the end of the stream, if any.
    pub fn finish(&mut self, on_line: &mut dyn FnMut(Line<'_>)) {
        if !self.line.is_empty() && !self.discarding {
            on_line(Line {
                bytes: &self.line,
                overlong: self.overlong,
            });
        }
        self.line.clear();
    }

    fn append(&mut self, part: &[u8]) {
        if self.discarding {
            return;
        }
        let room = self.cap.saturating_sub(self.line.len());
        if part.len() > room {
            self.overlong = true;
        }
        self.line
            .extend_from_slice(part.get(..room.min(part.len())).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(data: &[u8], split: usize) -> Vec<Vec<u8>> {
        let mut s = LineSplitter::new(1024);
        let mut out = Vec::new();
        for piece in data.chunks(split) {
            s.feed(piece, &mut |l| out.push(l.bytes.to_vec()));
        }
        s.finish(&mut |l| out.push(l.bytes.to_vec()));
        out
    }

    #[test]
    fn all_terminators_any_split() {
        let data = b"a\r\nb\nc\rd\r\n\r\ne";
        let want: Vec<Vec<u8>> = vec![
            b"a".to_vec(),
            b"b".to_vec(),
            b"c".to_vec(),
            b"d".to_vec(),
            vec![],
            b"e".to_vec(),
        ];
        for split in 1..data.len() {
            assert_eq!(split_all(data, split), want, "split {split}");
        }
    }

    #[test]
    fn overlong_lines_are_cut() {
        let mut s = LineSplitter::new(4);
        let mut got = Vec::new();
        s.feed(b"abcdefgh\nxy\n", &mut |l| {
            got.push((l.bytes.to_vec(), l.overlong))
        });
        assert_eq!(got, vec![(b"abcd".to_vec(), true), (b"xy".to_vec(), false)]);
    }
}
