//! WebSocket dispatch: a `101 Switching Protocols` answer to an `Upgrade: websocket` request
//! turns the connection over to [`crate::websocket`]; its messages are reported under the
//! upgrade exchange's key. Bytes lost or frames that cannot be read end the WebSocket loudly
//! (counted, logged): what follows has no known place in the framing.

use crate::flow::{ConnectionId, Direction, StreamChunk};
use crate::http::{AbortReason, ExchangeKey, HttpEvent, RequestHead, ResponseHead};
use crate::websocket::{FrameReader, Negotiated, WsPiece};

use super::{Connection, ConnectionConfig, ConnectionStats, Mode};

/// Both directions of an upgraded connection.
#[derive(Debug)]
pub(super) struct WsConnection {
    key: ExchangeKey,
    client: FrameReader,
    server: FrameReader,
    /// A close frame, an error or lost bytes ended it: later bytes are ignored.
    ended: bool,
}

/// Whether `head` asks for a WebSocket upgrade.
pub(super) fn is_upgrade_request(head: &RequestHead) -> bool {
    head.headers.has_token("upgrade", "websocket")
}

/// Whether `head` accepts one.
pub(super) fn is_upgrade_response(head: &ResponseHead) -> bool {
    head.status == 101 && head.headers.has_token("upgrade", "websocket")
}

/// The upgrade exchange `seq` was accepted; `rest` is what the read chunk held after the
/// `101` head (the server's first frames, when they came in the same read).
#[allow(clippy::too_many_arguments)]
pub(super) fn start(
    config: &ConnectionConfig,
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    chunk: &StreamChunk,
    seq: u64,
    request: RequestHead,
    response: ResponseHead,
    rest: &[u8],
    out: &mut Vec<HttpEvent>,
) {
    stats.websocket_connections += 1;
    let negotiated = Negotiated::from_response(&response);
    let key = ExchangeKey { conn: id, seq };
    log::debug!("{id}: WebSocket ({negotiated:?}) to {}", request.path());
    out.push(HttpEvent::WebSocketOpen {
        key,
        request,
        response,
        ts_ns: c.resp_head_ts,
        comm: chunk.comm.as_str().into_owned(),
    });
    let cap = config.max_decompressed_bytes;
    c.mode = Mode::WebSocket;
    c.ws = Some(Box::new(WsConnection {
        key,
        client: FrameReader::new(true, &negotiated, cap),
        server: FrameReader::new(false, &negotiated, cap),
        ended: false,
    }));
    on_data(stats, id, c, chunk, rest, out);
}

/// Frames of `chunk`'s direction (`data`: its bytes not yet consumed).
pub(super) fn on_data(
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    chunk: &StreamChunk,
    data: &[u8],
    out: &mut Vec<HttpEvent>,
) {
    let Some(ws) = c.ws.as_mut().filter(|ws| !ws.ended) else {
        return;
    };
    let key = ws.key;
    let direction = chunk.direction;
    let reader = match direction {
        Direction::Write => &mut ws.client,
        Direction::Read => &mut ws.server,
    };
    let mut pieces = Vec::new();
    let result = reader.feed(data, &mut |p| pieces.push(p));
    for piece in pieces {
        match piece {
            WsPiece::Data {
                text,
                data,
                first,
                last,
                truncated,
            } => {
                stats.websocket_messages_truncated += u64::from(truncated);
                out.push(HttpEvent::WebSocketMessage {
                    key,
                    direction,
                    text,
                    data,
                    first,
                    last,
                    truncated,
                    ts_entry_ns: chunk.ts_entry_ns,
                    ts_ns: chunk.ts_ns,
                    tid: chunk.tid,
                });
            }
            WsPiece::Close { code } => {
                log::debug!("{id}: WebSocket close frame ({direction:?}, code {code:?})");
                ws.ended = true;
                out.push(HttpEvent::WebSocketClosed {
                    key,
                    ts_ns: chunk.ts_ns,
                    reason: None,
                });
                return;
            }
        }
    }
    if let Err(e) = result {
        stats.websocket_errors += 1;
        log::warn!(
            "{id}: WebSocket frames of the {} unreadable ({e}); the connection's calls end here",
            match direction {
                Direction::Write => "client",
                Direction::Read => "server",
            }
        );
        ws.ended = true;
        out.push(HttpEvent::WebSocketClosed {
            key,
            ts_ns: chunk.ts_ns,
            reason: Some(AbortReason::ParseError),
        });
    }
}

/// Lost bytes; `false` when the connection is not a WebSocket.
pub(super) fn on_gap(
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    len: u64,
    ts_ns: u64,
    out: &mut Vec<HttpEvent>,
) -> bool {
    let Some(ws) = c.ws.as_mut() else {
        return false;
    };
    if !ws.ended {
        // A frame boundary can no longer be found, and with context takeover the inflater's
        // window misses the lost bytes: nothing after them can be read reliably.
        stats.websocket_gaps += 1;
        log::warn!(
            "{id}: {len} WebSocket bytes lost in capture; the connection's calls are dropped"
        );
        ws.ended = true;
        out.push(HttpEvent::WebSocketClosed {
            key: ws.key,
            ts_ns,
            reason: Some(AbortReason::FramingLost),
        });
    }
    true
}

/// The connection ended; `false` when it is not a WebSocket.
pub(super) fn close(
    c: &mut Connection,
    ts_ns: u64,
    reason: AbortReason,
    out: &mut Vec<HttpEvent>,
) -> bool {
    let Some(ws) = c.ws.as_mut() else {
        return false;
    };
    if !ws.ended {
        ws.ended = true;
        out.push(HttpEvent::WebSocketClosed {
            key: ws.key,
            ts_ns,
            reason: Some(reason),
        });
    }
    true
}
