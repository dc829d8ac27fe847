//! Body framing: Content-Length, chunked (with extensions and trailers), close-delimited.

use super::HttpError;

const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
    /// Ends when the connection closes (responses only).
    UntilClose,
}

#[derive(Debug)]
enum ChunkState {
    SizeLine { line: Vec<u8> },
    Data { remaining: u64 },
    DataEnd { seen_cr: bool },
    Trailers { line_len: usize, total: usize },
}

#[derive(Debug)]
enum State {
    Length { remaining: u64 },
    Chunked(ChunkState),
    UntilClose,
    Done,
}

/// Incremental body de-framer: feeds body bytes to a sink and says when the body ended.
#[derive(Debug)]
pub struct BodyReader {
    state: State,
}

impl BodyReader {
    pub fn new(framing: BodyFraming) -> Self {
        let state = match framing {
            BodyFraming::None | BodyFraming::Length(0) => State::Done,
            BodyFraming::Length(n) => State::Length { remaining: n },
            BodyFraming::Chunked => State::Chunked(ChunkState::SizeLine { line: Vec::new() }),
            BodyFraming::UntilClose => State::UntilClose,
        };
        BodyReader { state }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    pub fn is_until_close(&self) -> bool {
        matches!(self.state, State::UntilClose)
    }

    /// Consumes framing and body bytes from `data`, passing body bytes to `sink`. Returns the
    /// number of bytes used; fewer than `data.len()` only when the body ended.
    pub fn feed<'a>(
        &mut self,
        data: &'a [u8],
        sink: &mut dyn FnMut(&'a [u8]),
    ) -> Result<usize, HttpError> {
        let mut pos = 0usize;
        while pos < data.len() {
            let rest = data.get(pos..).unwrap_or_default();
            match &mut self.state {
                State::Done => break,
                State::UntilClose => {
                    sink(rest);
                    pos = data.len();
                }
                State::Length { remaining } => {
                    let n = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    sink(rest.get(..n).unwrap_or_default());
                    *remaining -= n as u64;
                    pos += n;
                    if *remaining == 0 {
                        self.state = State::Done;
                    }
                }
                State::Chunked(chunk) => {
                    let (used, finished) = feed_chunked(chunk, rest, sink)?;
                    pos += used;
                    if finished {
                        self.state = State::Done;
                    }
                }
            }
        }
        Ok(pos)
    }

    /// `len` bytes were lost from the stream. Returns true when they fell entirely inside body
    /// data, so framing is intact and parsing can go on (the body just misses those bytes).
    pub fn skip_lost(&mut self, len: u64) -> bool {
        if len == 0 {
            return false;
        }
        match &mut self.state {
            State::UntilClose => true,
            State::Length { remaining } if len < *remaining => {
                *remaining -= len;
                true
            }
            State::Length { remaining } if len == *remaining => {
                self.state = State::Done;
                true
            }
            State::Chunked(ChunkState::Data { remaining }) if len < *remaining => {
                *remaining -= len;
                true
            }
            _ => false,
        }
    }
}

fn feed_chunked<'a>(
    state: &mut ChunkState,
    data: &'a [u8],
    sink: &mut dyn FnMut(&'a [u8]),
) -> Result<(usize, bool), HttpError> {
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = data.get(pos..).unwrap_or_default();
        match state {
            ChunkState::SizeLine { line } => {
                match memchr::memchr(b'\n', rest) {
                    Some(i) => {
                        line.extend_from_slice(rest.get(..i).unwrap_or_default());
                        pos += i + 1;
                        let size = parse_chunk_size(line)?;
                        *state = if size == 0 {
                            ChunkState::Trailers {
                                line_len: 0,
                                total: 0,
                            }
                        } else {
                            ChunkState::Data { remaining: size }
                        };
                    }
                    None => {
                        line.extend_from_slice(rest);
                        pos = data.len();
                    }
                }
                if let ChunkState::SizeLine { line } = state
                    && line.len() > MAX_CHUNK_LINE
                {
                    return Err(HttpError::ChunkSize);
                }
            }
            ChunkState::Data { remaining } => {
                let n = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(rest.len());
                sink(rest.get(..n).unwrap_or_default());
                *remaining -= n as u64;
                pos += n;
                if *remaining == 0 {
                    *state = ChunkState::DataEnd { seen_cr: false };
                }
            }
            ChunkState::DataEnd { seen_cr } => {
                let b = rest.first().copied().unwrap_or(0);
                pos += 1;
                match (b, *seen_cr) {
                    (b'\r', false) => *seen_cr = true,
                    (b'\n', _) => *state = ChunkState::SizeLine { line: Vec::new() },
                    _ => return Err(HttpError::ChunkTerminator),
                }
            }
            ChunkState::Trailers { line_len, total } => {
                let b = rest.first().copied().unwrap_or(0);
                pos += 1;
                *total += 1;
                if *total > MAX_TRAILERS {
                    return Err(HttpError::TrailerTooLarge(MAX_TRAILERS));
                }
                match b {
                    b'\n' if *line_len == 0 => return Ok((pos, true)),
                    b'\n' => *line_len = 0,
                    b'\r' => {}
                    _ => *line_len += 1,
                }
            }
        }
    }
    Ok((pos, false))
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let hex = line.split(|&b| b == b';').next().unwrap_or_default();
    let hex = std::str::from_utf8(hex)
        .map_err(|_| HttpError::ChunkSize)?
        .trim();
    if hex.is_empty() || hex.len() > 15 {
        return Err(HttpError::ChunkSize);
    }
    u64::from_str_radix(hex, 16).map_err(|_| HttpError::ChunkSize)
}

/// Wraps `body` in chunked transfer coding with chunks of at most `chunk_size` bytes (tests and
/// cassette replay).
pub fn encode_chunked(body: &[u8], chunk_size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / chunk_size.max(1) * 8 + 8);
    for piece in body.chunks(chunk_size.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(framing: BodyFraming, wire: &[u8], split: usize) -> (Vec<u8>, usize, bool) {
        let mut reader = BodyReader::new(framing);
        let mut body = Vec::new();
        let mut used = 0;
        for piece in wire.chunks(split) {
            if reader.is_done() {
                break;
            }
            used += reader
                .feed(piece, &mut |b| body.extend_from_slice(b))
                .unwrap();
        }
        (body, used, reader.is_done())
    }

    #[test]
    fn chunked_with_extensions_and_trailers_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: a\r\n\r\nNEXT";
        for split in 1..wire.len() {
            let (body, used, done) = run(BodyFraming::Chunked, wire, split);
            assert_eq!(body, b"hello world");
            assert!(done);
            assert_eq!(&wire[used..], b"NEXT", "split {split}");
        }
    }

    #[test]
    fn content_length_stops_at_end() {
        let (body, used, done) = run(BodyFraming::Length(3), b"abcdef", 2);
        assert_eq!(body, b"abc");
        assert_eq!(used, 3);
        assert!(done);
    }

    #[test]
    fn round_trip_encoder() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let wire = encode_chunked(&data, 77);
        let (body, _, done) = run(BodyFraming::Chunked, &wire, 13);
        assert_eq!(body, data);
        assert!(done);
    }

    #[test]
    fn bad_chunk_size_is_an_error() {
        let mut reader = BodyReader::new(BodyFraming::Chunked);
        assert_eq!(
            reader.feed(b"zz\r\n", &mut |_| {}),
            Err(HttpError::ChunkSize)
        );
        let mut reader = BodyReader::new(BodyFraming::Chunked);
        assert_eq!(
            reader.feed(b"1\r\nabc", &mut |_| {}),
            Err(HttpError::ChunkTerminator)
        );
    }

    #[test]
    fn lost_bytes_inside_data_keep_framing() {
        let mut reader = BodyReader::new(BodyFraming::Chunked);
        let mut body = Vec::new();
        reader
            .feed(b"a\r\nab", &mut |b| body.extend_from_slice(b))
            .unwrap();
        assert!(reader.skip_lost(4));
        reader
            .feed(b"ghij\r\n0\r\n\r\n", &mut |b| body.extend_from_slice(b))
            .unwrap();
        assert!(reader.is_done());
        assert_eq!(body, b"abghij");
        let mut reader = BodyReader::new(BodyFraming::Chunked);
        assert!(!reader.skip_lost(3), "gap in a size line loses framing");
    }
}
