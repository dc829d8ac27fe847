//! Stage 2a, connections: per (pid, `SSL*`) state for both directions, turning ordered
//! plaintext into HTTP exchanges ([`HttpEvent`]s).
//!
//! Keep-alive and pipelining: requests queue up in order and each response belongs to the
//! oldest request still waiting for one. Lost bytes ([`StreamEvent::Gap`]) inside a body keep
//! the exchange (flagged [`HttpEvent::Lost`]); lost bytes in a head or in framing drop the
//! exchange and the parser resynchronises on the next request/status line. Only the client
//! side becomes exchanges: a process that reads requests (or the HTTP/2 preface) is a server
//! (ignored). A connection that starts with the HTTP/2 client preface (or shows HTTP/2 frames
//! mid-way) is handed to [`crate::http2`]; one upgraded to WebSocket (`101` answer to an
//! `Upgrade: websocket` request) to [`crate::websocket`]; other protocols are ignored.
//!
//! An HTTP/2 connection evicted while idle keeps its HPACK state (parked, a bounded number of
//! them): pooled connections are reused after long pauses, and header blocks can only be
//! decoded with the table built from the connection's start.
//!
//! This file tracks connections and their lifetimes (creation, eviction, idle timeout,
//! close); `http1.rs` pairs HTTP/1.x requests and responses; `h2.rs` recognises HTTP/2 and
//! hands it its bytes; `websocket.rs` does the same for upgraded connections.

mod h2;
mod http1;
mod websocket;

use std::collections::{HashMap, VecDeque, hash_map::Entry};

use crate::flow::{ConnectionId, Direction, StreamChunk, StreamEvent};
use crate::http::{AbortReason, HeadAccumulator, HttpEvent};
use crate::http2::H2Connection;
use http1::{Pending, RequestState, ResponseState};

/// Limits of the connection stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// A connection with no traffic for this long is forgotten and its calls ended.
    pub idle_timeout_ns: u64,
    /// Largest request or response head kept while it arrives.
    pub header_cap: usize,
    /// Largest decompressed body size; the rest of the body is dropped (and flagged).
    pub max_decompressed_bytes: u64,
    /// Most connections tracked at once; the least recently active is evicted beyond.
    pub max_connections: usize,
    /// Most requests waiting for their responses on one connection.
    pub max_pending_requests: usize,
    /// Most HTTP/2 streams tracked at once on one connection.
    pub max_http2_streams: usize,
    /// Most idle-evicted HTTP/2 connections whose HPACK state is kept for their reuse (each
    /// holds two HPACK tables, 4 KiB each by default); the oldest is forgotten beyond.
    pub max_parked_http2: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            idle_timeout_ns: 300_000_000_000,
            header_cap: 64 * 1024,
            max_decompressed_bytes: 64 * 1024 * 1024,
            max_connections: 16 * 1024,
            max_pending_requests: 64,
            max_http2_streams: 256,
            max_parked_http2: 256,
        }
    }
}

/// Counters of the connection stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    pub connections_tracked: u64,
    /// Connections where the process read requests: servers and proxies, not clients.
    pub server_connections: u64,
    /// Connections that are not HTTP/1.x (HTTP/2, other protocols).
    pub non_http_connections: u64,
    pub http_parse_errors: u64,
    /// Exchanges dropped because bytes were lost in a head or in body framing.
    pub dropped_by_gap: u64,
    /// Responses with no request waiting for them.
    pub unmatched_responses: u64,
    pub evicted_connections: u64,
    /// Client connections speaking HTTP/2.
    pub http2_connections: u64,
    /// HTTP/2 streams not reported because the HPACK state was unknown (connection start not
    /// captured, or bytes lost outside DATA payloads).
    pub http2_streams_skipped: u64,
    /// Idle HTTP/2 connections whose kept HPACK state was forgotten (over
    /// `max_parked_http2`): their later streams are skipped.
    pub http2_states_dropped: u64,
    /// Client connections upgraded to WebSocket.
    pub websocket_connections: u64,
    /// WebSocket connections given up on invalid frames.
    pub websocket_errors: u64,
    /// WebSocket connections given up because capture lost bytes of them.
    pub websocket_gaps: u64,
    /// WebSocket messages cut at the size cap.
    pub websocket_messages_truncated: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// No complete message seen yet.
    Unknown,
    Client,
    /// HTTP/2 client: `Connection::h2` holds the state.
    Http2,
    /// Upgraded to WebSocket: `Connection::ws` holds the state.
    WebSocket,
    /// Server side or not HTTP/1.x: ignored until closed.
    Ignored,
}

#[derive(Debug)]
struct Connection {
    mode: Mode,
    last_seen_ns: u64,
    next_seq: u64,
    req: RequestState,
    req_head: HeadAccumulator,
    req_head_start: (u64, u32),
    resp: ResponseState,
    resp_head: HeadAccumulator,
    resp_head_ts: u64,
    pending: VecDeque<Pending>,
    /// Bytes skipped before the first message start (tracing began mid-connection).
    unsynced_bytes: u64,
    /// The read direction carried bytes before the mode was known.
    read_seen: bool,
    h2: Option<Box<H2Connection>>,
    ws: Option<Box<websocket::WsConnection>>,
}

impl Connection {
    fn new(now: u64) -> Self {
        Connection {
            mode: Mode::Unknown,
            last_seen_ns: now,
            next_seq: 0,
            req: RequestState::Head,
            req_head: HeadAccumulator::default(),
            req_head_start: (0, 0),
            resp: ResponseState::Head,
            resp_head: HeadAccumulator::default(),
            resp_head_ts: 0,
            pending: VecDeque::new(),
            unsynced_bytes: 0,
            read_seen: false,
            h2: None,
            ws: None,
        }
    }
}

/// Tracks every connection's HTTP state.
#[derive(Debug, Default)]
pub struct ConnectionTracker {
    config: ConnectionConfig,
    conns: HashMap<ConnectionId, Connection>,
    /// HTTP/2 state of connections evicted while idle (no stream open), oldest first in
    /// `parked_order`.
    parked_h2: HashMap<ConnectionId, Box<H2Connection>>,
    parked_order: VecDeque<ConnectionId>,
    stats: ConnectionStats,
    /// Connections ignored (server side, not HTTP) since the last
    /// [`ConnectionTracker::take_ignored`]: nothing more of them is ever used.
    ignored: Vec<ConnectionId>,
}

/// Most newly ignored connections remembered between two [`ConnectionTracker::take_ignored`]
/// (the rest are simply not reported: they are still ignored here).
const IGNORED_MAX: usize = 4096;

impl ConnectionTracker {
    pub fn new(config: ConnectionConfig) -> Self {
        ConnectionTracker {
            config,
            conns: HashMap::new(),
            parked_h2: HashMap::new(),
            parked_order: VecDeque::new(),
            stats: ConnectionStats::default(),
            ignored: Vec::new(),
        }
    }

    /// Connections that became ignored (a server's side, or not HTTP) since the last call:
    /// capture may stop copying them.
    pub fn take_ignored(&mut self) -> Vec<ConnectionId> {
        std::mem::take(&mut self.ignored)
    }

    /// Whether `id` is an HTTP/1 client connection (not HTTP/2, not upgraded, not ignored).
    pub fn is_http1_client(&self, id: ConnectionId) -> bool {
        self.conns.get(&id).is_some_and(|c| c.mode == Mode::Client)
    }

    pub fn stats(&self) -> &ConnectionStats {
        &self.stats
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    pub fn push(&mut self, ev: StreamEvent, out: &mut Vec<HttpEvent>) {
        match ev {
            StreamEvent::Data(chunk) => self.on_data(chunk, out),
            StreamEvent::Gap {
                conn,
                direction,
                len,
                ts_ns,
            } => self.on_gap(conn, direction, len, ts_ns, out),
            StreamEvent::Closed { conn, ts_ns } => {
                if self.parked_h2.remove(&conn).is_some() {
                    self.parked_order.retain(|id| *id != conn);
                }
                if let Some(c) = self.conns.remove(&conn) {
                    close(conn, c, ts_ns, AbortReason::ConnectionClosed, out);
                }
            }
        }
    }

    /// Ends connections idle for longer than the configured timeout.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<HttpEvent>) {
        let timeout = self.config.idle_timeout_ns;
        let idle: Vec<ConnectionId> = self
            .conns
            .iter()
            .filter(|(_, c)| now_ns.saturating_sub(c.last_seen_ns) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            if let Some(c) = self.conns.remove(&id) {
                self.evict(id, c, now_ns, out);
            }
        }
    }

    /// Ends an evicted connection's exchanges; an HTTP/2 client connection's HPACK state is
    /// parked so that its later streams can still be decoded.
    fn evict(&mut self, id: ConnectionId, mut c: Connection, now: u64, out: &mut Vec<HttpEvent>) {
        self.stats.evicted_connections += 1;
        let Some(mut h2) = c.h2.take().filter(|_| c.mode == Mode::Http2) else {
            close(id, c, now, AbortReason::IdleTimeout, out);
            return;
        };
        h2.close(now, AbortReason::IdleTimeout, out);
        if self.parked_h2.len() >= self.config.max_parked_http2
            && let Some(oldest) = self.parked_order.pop_front()
            && self.parked_h2.remove(&oldest).is_some()
        {
            self.stats.http2_states_dropped += 1;
            log::warn!(
                "{oldest}: HPACK state of an idle HTTP/2 connection forgotten (more than {} \
                 idle connections kept); its later calls will not be reported",
                self.config.max_parked_http2
            );
        }
        if self.config.max_parked_http2 > 0 && self.parked_h2.insert(id, h2).is_none() {
            self.parked_order.push_back(id);
        }
    }

    /// Ends every connection (shutdown).
    pub fn finish(&mut self, now_ns: u64, out: &mut Vec<HttpEvent>) {
        let mut all: Vec<(ConnectionId, Connection)> = self.conns.drain().collect();
        all.sort_by_key(|(id, _)| *id);
        for (id, c) in all {
            close(id, c, now_ns, AbortReason::Shutdown, out);
        }
    }

    /// Makes sure `id` is tracked (evicting the least recently active beyond the cap).
    fn ensure_connection(&mut self, id: ConnectionId, now: u64, out: &mut Vec<HttpEvent>) {
        if !self.conns.contains_key(&id) && self.conns.len() >= self.config.max_connections.max(1) {
            let oldest = self
                .conns
                .iter()
                .min_by_key(|(_, c)| c.last_seen_ns)
                .map(|(k, _)| *k);
            if let Some((old_id, old)) = oldest.and_then(|k| self.conns.remove_entry(&k)) {
                self.evict(old_id, old, now, out);
            }
        }
        let c = match self.conns.entry(id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let mut c = Connection::new(now);
                if let Some(h2) = self.parked_h2.remove(&id) {
                    // An idle HTTP/2 connection in use again: its HPACK state carries on.
                    self.parked_order.retain(|p| *p != id);
                    c.mode = Mode::Http2;
                    c.h2 = Some(h2);
                } else {
                    self.stats.connections_tracked += 1;
                }
                e.insert(c)
            }
        };
        c.last_seen_ns = c.last_seen_ns.max(now);
    }

    fn on_data(&mut self, chunk: StreamChunk, out: &mut Vec<HttpEvent>) {
        let id = chunk.conn;
        self.ensure_connection(id, chunk.ts_ns, out);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.mode == Mode::Ignored {
            return;
        }
        let config = &self.config;
        let stats = &mut self.stats;
        if c.mode == Mode::WebSocket {
            websocket::on_data(stats, id, c, &chunk, &chunk.data, out);
            return;
        }
        h2::detect_mid_connection(config, stats, id, c, &chunk);
        if c.mode == Mode::Http2 {
            h2::on_data(stats, id, c, &chunk, &chunk.data, out);
            if c.mode == Mode::Ignored && self.ignored.len() < IGNORED_MAX {
                self.ignored.push(id);
            }
            return;
        }
        if chunk.direction == Direction::Read && c.mode == Mode::Unknown {
            c.read_seen = true;
        }
        match chunk.direction {
            Direction::Write => http1::on_write(config, stats, id, c, &chunk, out),
            Direction::Read => http1::on_read(config, stats, id, c, &chunk, out),
        }
        if c.mode == Mode::Ignored && self.ignored.len() < IGNORED_MAX {
            self.ignored.push(id);
        }
    }

    fn on_gap(
        &mut self,
        id: ConnectionId,
        direction: Direction,
        len: u64,
        ts_ns: u64,
        out: &mut Vec<HttpEvent>,
    ) {
        if self.parked_h2.contains_key(&id) {
            // Bytes lost on a parked connection: its HPACK state must hear of it.
            self.ensure_connection(id, ts_ns, out);
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.mode == Mode::Ignored {
            return;
        }
        c.last_seen_ns = c.last_seen_ns.max(ts_ns);
        if h2::on_gap(c, direction, len, ts_ns, out) {
            return;
        }
        let stats = &mut self.stats;
        if websocket::on_gap(stats, id, c, len, ts_ns, out) {
            return;
        }
        match direction {
            Direction::Write => {
                let max_pending = self.config.max_pending_requests;
                http1::request_gap(max_pending, stats, id, c, len, ts_ns, out)
            }
            Direction::Read => http1::response_gap(stats, id, c, len, ts_ns, out),
        }
    }
}

/// The connection ended (closed, idle, evicted, shutdown): its exchanges in flight end too.
fn close(
    id: ConnectionId,
    mut c: Connection,
    ts_ns: u64,
    reason: AbortReason,
    out: &mut Vec<HttpEvent>,
) {
    if !h2::close(&mut c, ts_ns, reason, out) && !websocket::close(&mut c, ts_ns, reason, out) {
        http1::close(id, &mut c, ts_ns, reason, out);
    }
}

/// The connection is a server's, or not HTTP: ignored until it closes.
fn ignore(stats: &mut ConnectionStats, id: ConnectionId, c: &mut Connection, server: bool) {
    if server {
        log::debug!("{id}: server side of HTTP (reads requests), ignored");
        stats.server_connections += 1;
    } else {
        log::debug!("{id}: not HTTP/1.x, ignored");
        stats.non_http_connections += 1;
    }
    c.mode = Mode::Ignored;
    c.pending.clear();
    c.req_head.clear();
    c.resp_head.clear();
}

#[cfg(test)]
mod tests;
