//! HTTP exchanges, whatever the protocol version: the events an HTTP/1.x connection and an
//! HTTP/2 stream both turn into, so body decoding, SSE and provider parsing downstream are
//! shared. A connection upgraded to WebSocket goes on as the messages of its upgrade exchange.

use crate::flow::{ConnectionId, Direction};

use super::{ContentDecoder, RequestHead, ResponseHead};

/// One request/response pair on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExchangeKey {
    pub conn: ConnectionId,
    /// Order of the request on its connection.
    pub seq: u64,
}

/// Why an exchange ended without a complete response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// The connection closed before the response was complete.
    ConnectionClosed,
    /// The connection was idle past the timeout (or evicted to bound memory).
    IdleTimeout,
    /// Lost bytes hit a head or body framing: nothing reliable can be said about this call.
    FramingLost,
    /// The bytes were not valid HTTP/1.x.
    ParseError,
    /// The tracer is shutting down.
    Shutdown,
    /// HTTP/2: the stream was reset (RST_STREAM) before its response completed.
    StreamReset,
    /// HTTP/2: a GOAWAY ended the connection before the stream completed.
    GoAway,
}

impl AbortReason {
    pub fn as_str(self) -> &'static str {
        match self {
            AbortReason::ConnectionClosed => "connection_closed",
            AbortReason::IdleTimeout => "idle_timeout",
            AbortReason::FramingLost => "incomplete_capture",
            AbortReason::ParseError => "http_parse_error",
            AbortReason::Shutdown => "shutdown",
            AbortReason::StreamReset => "http2_stream_reset",
            AbortReason::GoAway => "http2_goaway",
        }
    }
}

/// What the connection stage reports, per exchange, in capture order.
#[derive(Debug, PartialEq, Eq)]
pub enum HttpEvent {
    Request {
        key: ExchangeKey,
        head: RequestHead,
        /// Entry of the write that carried the first request byte.
        ts_entry_ns: u64,
        tid: u32,
        comm: String,
    },
    /// Decoded request body bytes.
    RequestBody {
        key: ExchangeKey,
        data: Vec<u8>,
    },
    RequestEnd {
        key: ExchangeKey,
        ts_ns: u64,
    },
    /// The final (non-1xx) response head; `ts_ns` is when its first byte reached the app.
    Response {
        key: ExchangeKey,
        head: ResponseHead,
        ts_ns: u64,
    },
    /// Decoded response body bytes and when they reached the app.
    ResponseBody {
        key: ExchangeKey,
        data: Vec<u8>,
        ts_ns: u64,
    },
    ResponseEnd {
        key: ExchangeKey,
        ts_ns: u64,
    },
    /// Bytes of this exchange's body in `direction` were lost (framing intact) or could not be
    /// decoded: values from them are unknown.
    Lost {
        key: ExchangeKey,
        direction: Direction,
    },
    /// A body passed the decompressed-size cap; the rest is dropped.
    Truncated {
        key: ExchangeKey,
        direction: Direction,
    },
    Aborted {
        key: ExchangeKey,
        ts_ns: u64,
        reason: AbortReason,
    },
    /// The server answered the upgrade request `key` with `101 Switching Protocols` to
    /// WebSocket: the connection now carries messages, reported under the same key.
    WebSocketOpen {
        key: ExchangeKey,
        request: RequestHead,
        response: ResponseHead,
        /// When the `101` answer reached the app.
        ts_ns: u64,
        comm: String,
    },
    /// Payload bytes of a WebSocket data message (unmasked, inflated), in order: `first`
    /// opens a message, `last` ends it (`truncated`: bytes past the size cap were dropped).
    WebSocketMessage {
        key: ExchangeKey,
        direction: Direction,
        text: bool,
        data: Vec<u8>,
        first: bool,
        last: bool,
        truncated: bool,
        /// When the app called into TLS with these bytes (writes) and when the call returned.
        ts_entry_ns: u64,
        ts_ns: u64,
        tid: u32,
    },
    /// The WebSocket ended: a close frame (`reason` `None`), or the connection closed, went
    /// idle, lost bytes or carried invalid frames (`reason` says which).
    WebSocketClosed {
        key: ExchangeKey,
        ts_ns: u64,
        reason: Option<AbortReason>,
    },
}

/// Decodes `raw` body bytes and reports them (plus truncation/corruption).
pub fn emit_decoded(
    key: ExchangeKey,
    direction: Direction,
    decoder: &mut Option<ContentDecoder>,
    raw: &[u8],
    done: bool,
    ts_ns: Option<u64>,
    out: &mut Vec<HttpEvent>,
) {
    let Some(dec) = decoder else {
        return;
    };
    let mut outcome = dec.feed(raw);
    if done {
        let tail = dec.finish();
        outcome.data.extend(tail.data);
        outcome.capped |= tail.capped;
        outcome.failed |= tail.failed;
    }
    if !outcome.data.is_empty() {
        out.push(match (direction, ts_ns) {
            (Direction::Read, Some(ts_ns)) => HttpEvent::ResponseBody {
                key,
                data: outcome.data,
                ts_ns,
            },
            _ => HttpEvent::RequestBody {
                key,
                data: outcome.data,
            },
        });
    }
    if outcome.capped {
        out.push(HttpEvent::Truncated { key, direction });
    }
    if outcome.failed {
        out.push(HttpEvent::Lost { key, direction });
    }
}
