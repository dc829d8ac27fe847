//! HTTP/2 dispatch: recognising a connection as HTTP/2 (by its client preface, or by frames in
//! the middle) and handing its bytes to [`crate::http2`].

use crate::flow::{ConnectionId, Direction, StreamChunk};
use crate::http::HttpEvent;
use crate::http2::{H2Config, H2Connection, H2Counters, Verdict, frame::looks_like_frames};

use super::{Connection, ConnectionConfig, ConnectionStats, Mode, ignore};
use crate::http::AbortReason;

fn h2_config(config: &ConnectionConfig) -> H2Config {
    H2Config {
        header_cap: config.header_cap,
        max_decompressed_bytes: config.max_decompressed_bytes,
        max_streams: config.max_http2_streams,
    }
}

/// A connection not yet recognised whose chunk is whole HTTP/2 frames with no preface
/// (tracing began mid-connection) becomes HTTP/2; its streams are counted, not decoded.
pub(super) fn detect_mid_connection(
    config: &ConnectionConfig,
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    chunk: &StreamChunk,
) {
    if c.mode == Mode::Unknown
        && c.req_head.is_empty()
        && c.resp_head.is_empty()
        && looks_like_frames(&chunk.data)
    {
        log::debug!("{id}: HTTP/2 frames without a captured preface");
        stats.http2_connections += 1;
        c.mode = Mode::Http2;
        c.h2 = Some(Box::new(H2Connection::mid_connection(
            id,
            h2_config(config),
            chunk.direction,
        )));
    }
}

/// The client wrote the HTTP/2 preface: HTTP/2 from the first byte; `bytes` start with it.
pub(super) fn start_with_preface(
    config: &ConnectionConfig,
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    chunk: &StreamChunk,
    bytes: &[u8],
    out: &mut Vec<HttpEvent>,
) {
    stats.http2_connections += 1;
    c.mode = Mode::Http2;
    c.h2 = Some(Box::new(H2Connection::with_preface(
        id,
        h2_config(config),
        c.read_seen,
    )));
    on_data(stats, id, c, chunk, bytes, out);
}

/// Feeds `data` (of `chunk`'s direction) to the connection's HTTP/2 state; a process found
/// reading the preface is a server, and the connection is ignored from then on.
pub(super) fn on_data(
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    chunk: &StreamChunk,
    data: &[u8],
    out: &mut Vec<HttpEvent>,
) {
    let Some(h2) = c.h2.as_mut() else {
        return;
    };
    let mut counters = H2Counters::default();
    let verdict = h2.on_data(chunk, data, &mut counters, out);
    stats.http_parse_errors += counters.parse_errors;
    stats.http2_streams_skipped += counters.streams_skipped;
    if verdict == Verdict::Server {
        stats.http2_connections = stats.http2_connections.saturating_sub(1);
        h2.close(chunk.ts_ns, AbortReason::ConnectionClosed, out);
        c.h2 = None;
        ignore(stats, id, c, true);
    }
}

/// Lost bytes of one direction; `false` when the connection is not HTTP/2.
pub(super) fn on_gap(
    c: &mut Connection,
    direction: Direction,
    len: u64,
    ts_ns: u64,
    out: &mut Vec<HttpEvent>,
) -> bool {
    match c.h2.as_mut() {
        Some(h2) => {
            h2.on_gap(direction, len, ts_ns, out);
            true
        }
        None => false,
    }
}

/// Ends the connection's streams; `false` when the connection is not HTTP/2.
pub(super) fn close(
    c: &mut Connection,
    ts_ns: u64,
    reason: AbortReason,
    out: &mut Vec<HttpEvent>,
) -> bool {
    match c.h2.as_mut() {
        Some(h2) => {
            h2.close(ts_ns, reason, out);
            true
        }
        None => false,
    }
}
