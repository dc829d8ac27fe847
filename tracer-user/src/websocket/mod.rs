//! Stage 2b, WebSocket (RFC 6455) after an HTTP/1.1 upgrade: frames of one direction → the
//! payload of its data messages, in order and in pieces (unmasked, inflated when
//! `permessage-deflate` was negotiated), plus the close frame. Nothing knows about capture or
//! about what the messages mean.
//!
//! Memory is bounded whatever the traffic: a message is never buffered (its payload is handed
//! on as it arrives), only a frame header (at most 14 bytes) and a control frame's payload (at
//! most 125 bytes) are kept, and a message's output past the size cap is dropped and flagged.
//! Bytes that are not valid WebSocket framing stop the direction with an error.

pub mod deflate;
pub mod reader;

pub use deflate::{DeflateParams, Inflater};
pub use reader::{FrameReader, WsPiece};

use crate::http::ResponseHead;

/// Why a direction's frames can no longer be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum WsError {
    #[error("frame header: {0}")]
    Header(String),
    #[error("reserved bits set without a negotiated extension (RSV {0:#x})")]
    ReservedBits(u8),
    #[error("client frame not masked")]
    UnmaskedClientFrame,
    #[error("server frame masked")]
    MaskedServerFrame,
    #[error("continuation frame outside a fragmented message")]
    StrayContinuation,
    #[error("new data frame inside a fragmented message")]
    InterleavedMessage,
    #[error("invalid control frame (fragmented or longer than 125 bytes)")]
    BadControlFrame,
    #[error("payload length over 2^63")]
    LengthTooLarge,
    #[error("permessage-deflate: {0}")]
    Inflate(String),
}

/// What the server agreed to in its `101` answer that changes how frames are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// `permessage-deflate` and its parameters.
    pub deflate: Option<DeflateParams>,
}

impl Negotiated {
    /// The extensions of the server's `101 Switching Protocols` answer
    /// (`Sec-WebSocket-Extensions`). Only `permessage-deflate` is understood; any other
    /// extension that uses reserved bits makes the frames unreadable (reported then).
    pub fn from_response(head: &ResponseHead) -> Self {
        let mut negotiated = Negotiated::default();
        for (_, value) in head
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-extensions"))
        {
            for extension in value.split(',') {
                let mut params = extension.split(';').map(str::trim);
                if params
                    .next()
                    .is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate"))
                    && negotiated.deflate.is_none()
                {
                    let mut deflate = DeflateParams::default();
                    for param in params {
                        let name = param.split('=').next().unwrap_or("").trim();
                        if name.eq_ignore_ascii_case("server_no_context_takeover") {
                            deflate.server_no_context_takeover = true;
                        } else if name.eq_ignore_ascii_case("client_no_context_takeover") {
                            deflate.client_no_context_takeover = true;
                        }
                        // Window sizes need no setting: a 32 KiB window reads any smaller one.
                    }
                    negotiated.deflate = Some(deflate);
                }
            }
        }
        negotiated
    }
}

#[cfg(test)]
mod tests;
