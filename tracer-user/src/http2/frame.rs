//! HTTP/2 framing (RFC 9113 §4, §6): frame headers, an incremental frame reader that streams
//! DATA payloads through (no buffering) and buffers every other frame up to a cap.

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const FRAME_HEADER_LEN: usize = 9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY: u8 = 0x20;

/// `SETTINGS_HEADER_TABLE_SIZE`.
pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    Data,
    Headers,
    Priority,
    RstStream,
    Settings,
    PushPromise,
    Ping,
    GoAway,
    WindowUpdate,
    Continuation,
    /// Extension frames: ignored (RFC 9113 §5.5).
    Unknown(u8),
}

impl FrameType {
    pub fn from_u8(t: u8) -> Self {
        match t {
            0 => FrameType::Data,
            1 => FrameType::Headers,
            2 => FrameType::Priority,
            3 => FrameType::RstStream,
            4 => FrameType::Settings,
            5 => FrameType::PushPromise,
            6 => FrameType::Ping,
            7 => FrameType::GoAway,
            8 => FrameType::WindowUpdate,
            9 => FrameType::Continuation,
            other => FrameType::Unknown(other),
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            FrameType::Data => 0,
            FrameType::Headers => 1,
            FrameType::Priority => 2,
            FrameType::RstStream => 3,
            FrameType::Settings => 4,
            FrameType::PushPromise => 5,
            FrameType::Ping => 6,
            FrameType::GoAway => 7,
            FrameType::WindowUpdate => 8,
            FrameType::Continuation => 9,
            FrameType::Unknown(t) => t,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: FrameType,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(b: &[u8; FRAME_HEADER_LEN]) -> Self {
        FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: FrameType::from_u8(b[3]),
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let l = self.len.to_be_bytes();
        let s = (self.stream & 0x7fff_ffff).to_be_bytes();
        [
            l[1],
            l[2],
            l[3],
            self.kind.as_u8(),
            self.flags,
            s[0],
            s[1],
            s[2],
            s[3],
        ]
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Whether the header is plausible for its type (stream 0 or not, fixed lengths).
    pub fn is_plausible(&self) -> bool {
        let on_stream = self.stream != 0;
        match self.kind {
            FrameType::Data | FrameType::Headers | FrameType::Continuation => on_stream,
            FrameType::PushPromise => on_stream && self.len >= 4,
            FrameType::Priority => on_stream && self.len == 5,
            FrameType::RstStream => on_stream && self.len == 4,
            FrameType::Settings => !on_stream && self.len.is_multiple_of(6),
            FrameType::Ping => !on_stream && self.len == 8,
            FrameType::GoAway => !on_stream && self.len >= 8,
            FrameType::WindowUpdate => self.len == 4,
            FrameType::Unknown(_) => false,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("{kind:?} frame of {len} bytes exceeds the {cap}-byte cap")]
    TooLarge {
        kind: FrameType,
        len: u32,
        cap: usize,
    },
    #[error("DATA frame on stream 0")]
    DataOnStreamZero,
    #[error("padding longer than the frame payload")]
    BadPadding,
    #[error("malformed {0:?} frame")]
    Malformed(FrameType),
}

/// When and by which thread the bytes of a frame started (its first byte's TLS call).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    pub ts_entry_ns: u64,
    pub ts_ns: u64,
    pub tid: u32,
}

/// What the reader yields, in wire order.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// A complete frame other than DATA, with its payload (padding not removed).
    Frame {
        header: FrameHeader,
        payload: Vec<u8>,
        start: Stamp,
    },
    /// Bytes of a DATA frame's payload (padding removed).
    Data { stream: u32, bytes: Vec<u8> },
    /// The end of a DATA frame.
    DataEnd { stream: u32, end_stream: bool },
}

#[derive(Debug)]
enum State {
    Header {
        buf: [u8; FRAME_HEADER_LEN],
        have: usize,
    },
    Payload {
        header: FrameHeader,
        buf: Vec<u8>,
        start: Stamp,
    },
    Data {
        stream: u32,
        end_stream: bool,
        /// The pad-length byte is still to come.
        pad_pending: bool,
        payload_left: u32,
        data_left: u32,
    },
}

impl Default for State {
    fn default() -> Self {
        State::Header {
            buf: [0; FRAME_HEADER_LEN],
            have: 0,
        }
    }
}

/// Incremental frame reader for one direction. Memory: one buffered non-DATA frame, at most
/// `max_payload` bytes.
#[derive(Debug, Default)]
pub struct FrameReader {
    state: State,
    max_payload: usize,
    start: Stamp,
}

impl FrameReader {
    pub fn new(max_payload: usize) -> Self {
        FrameReader {
            state: State::default(),
            max_payload,
            start: Stamp::default(),
        }
    }

    /// Forgets any partial frame (after lost bytes).
    pub fn reset(&mut self) {
        self.state = State::default();
    }

    /// Consumes `data` (bytes of one TLS call stamped `stamp`), appending items to `out`.
    /// After an error the reader is out of sync; [`FrameReader::reset`] it before reuse.
    pub fn feed(
        &mut self,
        data: &[u8],
        stamp: Stamp,
        out: &mut Vec<Item>,
    ) -> Result<(), FrameError> {
        let mut pos = 0usize;
        while pos < data.len() {
            let rest = data.get(pos..).unwrap_or_default();
            match &mut self.state {
                State::Header { buf, have } => {
                    if *have == 0 {
                        self.start = stamp;
                    }
                    let n = (FRAME_HEADER_LEN - *have).min(rest.len());
                    if let (Some(dst), Some(src)) = (buf.get_mut(*have..*have + n), rest.get(..n)) {
                        dst.copy_from_slice(src);
                    }
                    *have += n;
                    pos += n;
                    if *have == FRAME_HEADER_LEN {
                        let header = FrameHeader::parse(buf);
                        self.begin_frame(header, out)?;
                    }
                }
                State::Payload { header, buf, start } => {
                    let need = (header.len as usize).saturating_sub(buf.len());
                    let n = need.min(rest.len());
                    buf.extend_from_slice(rest.get(..n).unwrap_or_default());
                    pos += n;
                    if buf.len() >= header.len as usize {
                        out.push(Item::Frame {
                            header: *header,
                            payload: std::mem::take(buf),
                            start: *start,
                        });
                        self.state = State::default();
                    }
                }
                State::Data {
                    stream,
                    end_stream,
                    pad_pending,
                    payload_left,
                    data_left,
                } => {
                    if *pad_pending {
                        let pad = u32::from(rest.first().copied().unwrap_or(0));
                        pos += 1;
                        *payload_left -= 1;
                        *pad_pending = false;
                        if pad > *payload_left {
                            return Err(FrameError::BadPadding);
                        }
                        *data_left = *payload_left - pad;
                    } else if *data_left > 0 {
                        let n = (*data_left as usize).min(rest.len());
                        out.push(Item::Data {
                            stream: *stream,
                            bytes: rest.get(..n).unwrap_or_default().to_vec(),
                        });
                        *data_left -= n as u32;
                        *payload_left -= n as u32;
                        pos += n;
                    } else {
                        let n = (*payload_left as usize).min(rest.len());
                        *payload_left -= n as u32;
                        pos += n;
                    }
                    if *payload_left == 0 && !*pad_pending {
                        out.push(Item::DataEnd {
                            stream: *stream,
                            end_stream: *end_stream,
                        });
                        self.state = State::default();
                    }
                }
            }
        }
        Ok(())
    }

    fn begin_frame(&mut self, header: FrameHeader, out: &mut Vec<Item>) -> Result<(), FrameError> {
        if header.kind == FrameType::Data {
            if header.stream == 0 {
                return Err(FrameError::DataOnStreamZero);
            }
            let padded = header.has(PADDED);
            if padded && header.len == 0 {
                return Err(FrameError::BadPadding);
            }
            let end_stream = header.has(END_STREAM);
            if header.len == 0 {
                out.push(Item::DataEnd {
                    stream: header.stream,
                    end_stream,
                });
                self.state = State::default();
            } else {
                self.state = State::Data {
                    stream: header.stream,
                    end_stream,
                    pad_pending: padded,
                    payload_left: header.len,
                    data_left: if padded { 0 } else { header.len },
                };
            }
            return Ok(());
        }
        if header.len as usize > self.max_payload {
            return Err(FrameError::TooLarge {
                kind: header.kind,
                len: header.len,
                cap: self.max_payload,
            });
        }
        if header.len == 0 {
            out.push(Item::Frame {
                header,
                payload: Vec::new(),
                start: self.start,
            });
            self.state = State::default();
        } else {
            self.state = State::Payload {
                header,
                buf: Vec::with_capacity(header.len as usize),
                start: self.start,
            };
        }
        Ok(())
    }

    /// `len` bytes of this direction were lost. When they fall inside the DATA payload being
    /// read, framing is intact: returns the stream that misses bytes (and pushes `DataEnd`
    /// if the frame ended within them). Otherwise returns `None`: frame sync is lost.
    pub fn skip_lost(&mut self, len: u64, out: &mut Vec<Item>) -> Option<u32> {
        let State::Data {
            stream,
            end_stream,
            pad_pending: false,
            payload_left,
            data_left,
        } = &mut self.state
        else {
            return None;
        };
        if len == 0 || len > u64::from(*payload_left) {
            return None;
        }
        let len = len as u32;
        *payload_left -= len;
        *data_left = data_left.saturating_sub(len);
        let stream = *stream;
        if *payload_left == 0 {
            out.push(Item::DataEnd {
                stream,
                end_stream: *end_stream,
            });
            self.state = State::default();
        }
        Some(stream)
    }
}

/// Whether `data` is a whole number of plausible HTTP/2 frames: used to find frame
/// boundaries on a connection whose beginning was not captured (TLS writes carry whole frames).
pub fn looks_like_frames(data: &[u8]) -> bool {
    let mut pos = 0usize;
    let mut frames = 0usize;
    while pos < data.len() {
        let Some(raw) = data
            .get(pos..pos + FRAME_HEADER_LEN)
            .and_then(|b| <&[u8; FRAME_HEADER_LEN]>::try_from(b).ok())
        else {
            return false;
        };
        let h = FrameHeader::parse(raw);
        if !h.is_plausible() {
            return false;
        }
        pos += FRAME_HEADER_LEN + h.len as usize;
        frames += 1;
    }
    frames > 0 && pos == data.len()
}

/// The header block fragment of a HEADERS frame (padding and priority removed).
pub fn headers_fragment(header: &FrameHeader, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut body = unpad(header, payload)?;
    if header.has(PRIORITY) {
        body = body.get(5..).ok_or(FrameError::Malformed(header.kind))?;
    }
    Ok(body.to_vec())
}

/// The header block fragment of a PUSH_PROMISE frame (padding and promised stream removed).
pub fn push_promise_fragment(header: &FrameHeader, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let body = unpad(header, payload)?;
    Ok(body
        .get(4..)
        .ok_or(FrameError::Malformed(header.kind))?
        .to_vec())
}

fn unpad<'a>(header: &FrameHeader, payload: &'a [u8]) -> Result<&'a [u8], FrameError> {
    if !header.has(PADDED) {
        return Ok(payload);
    }
    let pad = usize::from(*payload.first().ok_or(FrameError::BadPadding)?);
    let rest = payload.get(1..).unwrap_or_default();
    let end = rest.len().checked_sub(pad).ok_or(FrameError::BadPadding)?;
    rest.get(..end).ok_or(FrameError::BadPadding)
}

/// `(identifier, value)` pairs of a SETTINGS payload.
pub fn settings(payload: &[u8]) -> Result<Vec<(u16, u32)>, FrameError> {
    if !payload.len().is_multiple_of(6) {
        return Err(FrameError::Malformed(FrameType::Settings));
    }
    Ok(payload
        .chunks_exact(6)
        .map(|s| {
            (
                u16::from_be_bytes([s[0], s[1]]),
                u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
            )
        })
        .collect())
}

/// `(last_stream_id, error_code)` of a GOAWAY payload.
pub fn goaway(payload: &[u8]) -> Result<(u32, u32), FrameError> {
    match payload {
        [a, b, c, d, e, f, g, h, ..] => Ok((
            u32::from_be_bytes([*a, *b, *c, *d]) & 0x7fff_ffff,
            u32::from_be_bytes([*e, *f, *g, *h]),
        )),
        _ => Err(FrameError::Malformed(FrameType::GoAway)),
    }
}

/// Error code of a RST_STREAM payload.
pub fn rst_stream(payload: &[u8]) -> Result<u32, FrameError> {
    match payload {
        [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(FrameError::Malformed(FrameType::RstStream)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: FrameType, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = FrameHeader {
            len: payload.len() as u32,
            kind,
            flags,
            stream,
        }
        .encode()
        .to_vec();
        v.extend_from_slice(payload);
        v
    }

    fn read_all(wire: &[u8], split: usize) -> Vec<Item> {
        let mut r = FrameReader::new(1024);
        let mut out = Vec::new();
        for piece in wire.chunks(split) {
            r.feed(piece, Stamp::default(), &mut out).unwrap();
        }
        out
    }

    fn data_of(items: &[Item], stream: u32) -> Vec<u8> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Data { stream: s, bytes } if *s == stream => Some(bytes.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn padded_data_and_frames_in_any_split() {
        let mut wire = frame(FrameType::Settings, 0, 0, &[0, 1, 0, 0, 0x10, 0]);
        wire.extend(frame(FrameType::Data, PADDED, 1, b"\x03helloPPP"));
        wire.extend(frame(FrameType::Data, END_STREAM, 1, b" world"));
        wire.extend(frame(FrameType::Ping, 0, 0, &[0; 8]));
        wire.extend(frame(FrameType::Data, PADDED, 3, b"\x00"));
        for split in 1..wire.len() {
            let items = read_all(&wire, split);
            assert_eq!(data_of(&items, 1), b"hello world", "split {split}");
            let ends: Vec<_> = items
                .iter()
                .filter_map(|i| match i {
                    Item::DataEnd { stream, end_stream } => Some((*stream, *end_stream)),
                    _ => None,
                })
                .collect();
            assert_eq!(ends, vec![(1, false), (1, true), (3, false)]);
            let frames = items
                .iter()
                .filter(|i| matches!(i, Item::Frame { .. }))
                .count();
            assert_eq!(frames, 2);
        }
        assert!(looks_like_frames(&wire));
        assert!(!looks_like_frames(&wire[..wire.len() - 1]));
        assert!(!looks_like_frames(
            b"POST /v1/chat/completions HTTP/1.1\r\n"
        ));
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut r = FrameReader::new(16);
        let mut out = Vec::new();
        let big = frame(FrameType::Headers, 0, 1, &[0; 17]);
        assert!(matches!(
            r.feed(&big, Stamp::default(), &mut out),
            Err(FrameError::TooLarge { .. })
        ));
        let mut r = FrameReader::new(16);
        let bad_pad = frame(FrameType::Data, PADDED, 1, b"\x09abc");
        assert_eq!(
            r.feed(&bad_pad, Stamp::default(), &mut out),
            Err(FrameError::BadPadding)
        );
        let mut r = FrameReader::new(16);
        assert_eq!(
            r.feed(
                &frame(FrameType::Data, 0, 0, b"x"),
                Stamp::default(),
                &mut out
            ),
            Err(FrameError::DataOnStreamZero)
        );
        let h = FrameHeader {
            len: 4,
            kind: FrameType::Headers,
            flags: PADDED | PRIORITY,
            stream: 1,
        };
        assert!(headers_fragment(&h, &[3, 1, 2, 3]).is_err());
        let h = FrameHeader {
            len: 9,
            kind: FrameType::Headers,
            flags: PADDED | PRIORITY,
            stream: 1,
        };
        assert_eq!(
            headers_fragment(&h, &[2, 0, 0, 0, 1, 16, 0x82, 0x84, 0, 0]).unwrap(),
            vec![0x82, 0x84]
        );
        assert!(settings(&[0; 5]).is_err());
        assert!(goaway(&[0; 7]).is_err());
    }

    #[test]
    fn lost_bytes_inside_data_keep_sync() {
        let mut r = FrameReader::new(64);
        let mut out = Vec::new();
        let wire = frame(FrameType::Data, END_STREAM, 5, b"0123456789");
        r.feed(&wire[..11], Stamp::default(), &mut out).unwrap();
        assert_eq!(r.skip_lost(4, &mut out), Some(5));
        r.feed(&wire[15..], Stamp::default(), &mut out).unwrap();
        assert_eq!(data_of(&out, 5), b"016789");
        assert!(out.contains(&Item::DataEnd {
            stream: 5,
            end_stream: true
        }));
        assert_eq!(r.skip_lost(1, &mut out), None, "gap in a frame header");
    }
}
