//! Frames of one direction → pieces of data messages. Frame headers are parsed by
//! `tungstenite`'s passive [`FrameHeader::parse`]; reassembly across fragments, unmasking,
//! control frames interleaved in a fragmented message and inflation are here.

use std::io::Cursor;

use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::{Inflater, Negotiated, WsError};

/// The longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;
/// RFC 6455 5.5: control frames carry at most 125 bytes.
const MAX_CONTROL: u64 = 125;

/// What a direction's frames carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsPiece {
    /// Payload bytes of a data message, in order. `first` opens a message, `last` closes it;
    /// `truncated` on the last piece: output past the size cap was dropped.
    Data {
        text: bool,
        data: Vec<u8>,
        first: bool,
        last: bool,
        truncated: bool,
    },
    /// A close frame, with its status code when it has one.
    Close { code: Option<u16> },
}

#[derive(Debug)]
enum State {
    Header,
    Payload {
        remaining: u64,
        mask: Option<[u8; 4]>,
        mask_pos: usize,
        kind: PayloadKind,
    },
}

#[derive(Debug)]
enum PayloadKind {
    /// A frame of the current data message; `last` when FIN is set.
    Data {
        last: bool,
    },
    Control {
        opcode: Control,
        payload: Vec<u8>,
    },
}

/// The data message being read (possibly fragmented).
#[derive(Debug)]
struct Message {
    text: bool,
    compressed: bool,
    /// A piece of it was handed on.
    started: bool,
    delivered: u64,
    truncated: bool,
}

/// Reads the frames of one direction of a WebSocket connection.
#[derive(Debug)]
pub struct FrameReader {
    /// Frames written by the client must be masked, the server's must not.
    from_client: bool,
    inflater: Option<Inflater>,
    max_message_bytes: u64,
    header: Vec<u8>,
    state: State,
    message: Option<Message>,
    /// A close frame was read: the direction carries nothing more.
    closed: bool,
    error: Option<WsError>,
    /// Pings and pongs seen (not handed on).
    pub control_frames: u64,
}

impl FrameReader {
    /// `from_client`: the direction the client writes. `max_message_bytes`: largest message
    /// output handed on (after inflation); the rest is dropped and the message flagged.
    pub fn new(from_client: bool, negotiated: &Negotiated, max_message_bytes: u64) -> Self {
        let inflater = negotiated.deflate.map(|d| {
            Inflater::new(if from_client {
                d.client_no_context_takeover
            } else {
                d.server_no_context_takeover
            })
        });
        FrameReader {
            from_client,
            inflater,
            max_message_bytes,
            header: Vec::with_capacity(MAX_HEADER),
            state: State::Header,
            message: None,
            closed: false,
            error: None,
            control_frames: 0,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The error that stopped this direction, if any.
    pub fn error(&self) -> Option<&WsError> {
        self.error.as_ref()
    }

    /// Feeds bytes of this direction in capture order. After an error (returned once) or a
    /// close frame, later bytes are ignored.
    pub fn feed(&mut self, data: &[u8], out: &mut dyn FnMut(WsPiece)) -> Result<(), WsError> {
        if self.error.is_some() || self.closed {
            return Ok(());
        }
        let result = self.feed_frames(data, out);
        if let Err(e) = &result {
            self.error = Some(e.clone());
        }
        result
    }

    fn feed_frames(
        &mut self,
        mut data: &[u8],
        out: &mut dyn FnMut(WsPiece),
    ) -> Result<(), WsError> {
        while !data.is_empty() && !self.closed {
            data = match self.state {
                State::Header => self.read_header(data)?,
                State::Payload { .. } => self.read_payload(data, out)?,
            };
            if let State::Payload { remaining: 0, .. } = self.state {
                self.end_frame(out)?;
            }
        }
        Ok(())
    }

    /// Collects header bytes; once whole, checks the frame and starts its payload.
    fn read_header<'a>(&mut self, data: &'a [u8]) -> Result<&'a [u8], WsError> {
        let take = (MAX_HEADER - self.header.len()).min(data.len());
        let old = self.header.len();
        self.header
            .extend_from_slice(data.get(..take).unwrap_or_default());
        let mut cursor = Cursor::new(self.header.as_slice());
        let parsed = FrameHeader::parse(&mut cursor).map_err(|e| WsError::Header(e.to_string()))?;
        let Some((header, length)) = parsed else {
            // Incomplete: everything taken is header.
            return Ok(data.get(take..).unwrap_or_default());
        };
        let header_len = cursor.position() as usize;
        self.header.clear();
        let rest = data
            .get(header_len.saturating_sub(old)..)
            .unwrap_or_default();
        self.start_frame(header, length)?;
        Ok(rest)
    }

    fn start_frame(&mut self, header: FrameHeader, length: u64) -> Result<(), WsError> {
        if length > i64::MAX as u64 {
            return Err(WsError::LengthTooLarge);
        }
        match (self.from_client, header.mask.is_some()) {
            (true, false) => return Err(WsError::UnmaskedClientFrame),
            (false, true) => return Err(WsError::MaskedServerFrame),
            _ => {}
        }
        let rsv =
            (u8::from(header.rsv1) << 2) | (u8::from(header.rsv2) << 1) | u8::from(header.rsv3);
        let rsv1_allowed = self.inflater.is_some()
            && matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
        if header.rsv2 || header.rsv3 || (header.rsv1 && !rsv1_allowed) {
            return Err(WsError::ReservedBits(rsv));
        }
        let kind = match header.opcode {
            OpCode::Control(opcode) => {
                if !header.is_final || length > MAX_CONTROL {
                    return Err(WsError::BadControlFrame);
                }
                PayloadKind::Control {
                    opcode,
                    payload: Vec::with_capacity(length as usize),
                }
            }
            OpCode::Data(Data::Continue) => {
                if self.message.is_none() {
                    return Err(WsError::StrayContinuation);
                }
                PayloadKind::Data {
                    last: header.is_final,
                }
            }
            OpCode::Data(data) => {
                if self.message.is_some() {
                    return Err(WsError::InterleavedMessage);
                }
                self.message = Some(Message {
                    text: data == Data::Text,
                    compressed: header.rsv1,
                    started: false,
                    delivered: 0,
                    truncated: false,
                });
                PayloadKind::Data {
                    last: header.is_final,
                }
            }
        };
        self.state = State::Payload {
            remaining: length,
            mask: header.mask,
            mask_pos: 0,
            kind,
        };
        Ok(())
    }

    fn read_payload<'a>(
        &mut self,
        data: &'a [u8],
        out: &mut dyn FnMut(WsPiece),
    ) -> Result<&'a [u8], WsError> {
        let State::Payload {
            remaining,
            mask,
            mask_pos,
            kind,
        } = &mut self.state
        else {
            return Ok(data);
        };
        let take = (*remaining).min(data.len() as u64) as usize;
        let mut bytes = data.get(..take).unwrap_or_default().to_vec();
        if let Some(mask) = mask {
            for (i, b) in bytes.iter_mut().enumerate() {
                *b ^= mask[(*mask_pos + i) % 4];
            }
            *mask_pos = (*mask_pos + take) % 4;
        }
        *remaining -= take as u64;
        match kind {
            PayloadKind::Control { payload, .. } => payload.extend_from_slice(&bytes),
            PayloadKind::Data { last } => {
                let end = *last && *remaining == 0;
                self.deliver(&bytes, end, out)?;
            }
        }
        Ok(data.get(take..).unwrap_or_default())
    }

    /// Hands on payload bytes of the current message (inflated if it is compressed), within
    /// the size cap; `end`: they are its last.
    fn deliver(
        &mut self,
        bytes: &[u8],
        end: bool,
        out: &mut dyn FnMut(WsPiece),
    ) -> Result<(), WsError> {
        let FrameReader {
            inflater,
            message,
            max_message_bytes,
            ..
        } = self;
        let Some(msg) = message.as_mut() else {
            return Ok(());
        };
        let mut produced = Vec::new();
        let mut room = max_message_bytes.saturating_sub(msg.delivered);
        let mut truncated = false;
        let mut keep = |piece: &[u8]| {
            let n = (piece.len() as u64).min(room) as usize;
            produced.extend_from_slice(piece.get(..n).unwrap_or_default());
            room -= n as u64;
            truncated |= n < piece.len();
        };
        match (msg.compressed, inflater.as_mut()) {
            (true, Some(inflater)) => {
                inflater.feed(bytes, &mut keep)?;
                if end {
                    inflater.end_message(&mut keep)?;
                }
            }
            _ => keep(bytes),
        }
        msg.truncated |= truncated;
        msg.delivered += produced.len() as u64;
        if !produced.is_empty() || end {
            out(WsPiece::Data {
                text: msg.text,
                data: produced,
                first: !msg.started,
                last: end,
                truncated: end && msg.truncated,
            });
            msg.started = true;
        }
        if end {
            *message = None;
        }
        Ok(())
    }

    /// A frame's payload is complete: control frames take effect, the next header follows.
    fn end_frame(&mut self, out: &mut dyn FnMut(WsPiece)) -> Result<(), WsError> {
        let state = std::mem::replace(&mut self.state, State::Header);
        match state {
            State::Payload {
                kind: PayloadKind::Control { opcode, payload },
                ..
            } => match opcode {
                Control::Close => {
                    let code = match payload.as_slice() {
                        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
                        _ => None,
                    };
                    self.closed = true;
                    out(WsPiece::Close { code });
                }
                Control::Ping | Control::Pong => self.control_frames += 1,
                Control::Reserved(_) => return Err(WsError::BadControlFrame),
            },
            // An empty final frame delivered nothing yet: the message still ends.
            State::Payload {
                kind: PayloadKind::Data { last: true },
                ..
            } if self.message.is_some() => self.deliver(&[], true, out)?,
            _ => {}
        }
        Ok(())
    }
}
