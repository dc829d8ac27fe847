//! Stage 2a, connections: per (pid, `SSL*`) state for both directions, turning ordered
//! plaintext into HTTP exchanges ([`HttpEvent`]s).
//!
//! Keep-alive and pipelining: requests queue up in order and each response belongs to the
//! oldest request still waiting for one. Lost bytes ([`StreamEvent::Gap`]) inside a body keep
//! the exchange (flagged [`HttpEvent::Lost`]); lost bytes in a head or in framing drop the
//! exchange and the parser resynchronises on the next request/status line. Only the client
//! side becomes exchanges: a process that reads requests (or the HTTP/2 preface) is a server
//! (ignored). A connection that starts with the HTTP/2 client preface (or shows HTTP/2 frames
//! mid-way) is handed to [`crate::http2`]; other protocols are ignored.

use std::collections::{HashMap, VecDeque};

use crate::flow::{ConnectionId, Direction, StreamChunk, StreamEvent};
use crate::http::head::{Sniff, find_message_start, sniff};
use crate::http::{
    AbortReason, BodyFraming, BodyReader, ContentDecoder, ExchangeKey, HeadAccumulator, HttpEvent,
    RequestHead, ResponseHead, emit_decoded,
};
use crate::http2::{H2Config, H2Connection, H2Counters, Verdict, frame::looks_like_frames};

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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// No complete message seen yet.
    Unknown,
    Client,
    /// HTTP/2 client: `Connection::h2` holds the state.
    Http2,
    /// Server side or not HTTP/1.x: ignored until closed.
    Ignored,
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    head_request: bool,
    /// No events are reported for it (its request was lost); its response is still consumed.
    silent: bool,
}

#[derive(Debug)]
enum RequestState {
    Head,
    Body {
        seq: u64,
        reader: BodyReader,
        decoder: Option<ContentDecoder>,
    },
    Resync,
}

#[derive(Debug)]
enum ResponseState {
    Head,
    Body {
        /// `None` when no request was waiting: parsed to stay in sync, never reported.
        seq: Option<u64>,
        silent: bool,
        reader: BodyReader,
        decoder: Option<ContentDecoder>,
    },
    Resync,
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
        }
    }
}

/// Tracks every connection's HTTP state.
#[derive(Debug, Default)]
pub struct ConnectionTracker {
    config: ConnectionConfig,
    conns: HashMap<ConnectionId, Connection>,
    stats: ConnectionStats,
}

impl ConnectionTracker {
    pub fn new(config: ConnectionConfig) -> Self {
        ConnectionTracker {
            config,
            conns: HashMap::new(),
            stats: ConnectionStats::default(),
        }
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
                self.stats.evicted_connections += 1;
                close(id, c, now_ns, AbortReason::IdleTimeout, out);
            }
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
            if let Some(old) = oldest.and_then(|k| self.conns.remove_entry(&k)) {
                self.stats.evicted_connections += 1;
                close(old.0, old.1, now, AbortReason::IdleTimeout, out);
            }
        }
        let stats = &mut self.stats;
        let c = self.conns.entry(id).or_insert_with(|| {
            stats.connections_tracked += 1;
            Connection::new(now)
        });
        c.last_seen_ns = c.last_seen_ns.max(now);
    }

    fn on_data(&mut self, chunk: StreamChunk, out: &mut Vec<HttpEvent>) {
        let config = self.config.clone();
        let id = chunk.conn;
        self.ensure_connection(id, chunk.ts_ns, out);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.mode == Mode::Ignored {
            return;
        }
        let stats = &mut self.stats;
        if c.mode == Mode::Unknown
            && c.req_head.is_empty()
            && c.resp_head.is_empty()
            && looks_like_frames(&chunk.data)
        {
            // HTTP/2 frames with no preface: tracing began mid-connection.
            log::debug!("{id}: HTTP/2 frames without a captured preface");
            stats.http2_connections += 1;
            c.mode = Mode::Http2;
            c.h2 = Some(Box::new(H2Connection::mid_connection(
                id,
                h2_config(&config),
                chunk.direction,
            )));
        }
        if c.mode == Mode::Http2 {
            on_h2_data(stats, id, c, &chunk, &chunk.data, out);
            return;
        }
        if chunk.direction == Direction::Read && c.mode == Mode::Unknown {
            c.read_seen = true;
        }
        match chunk.direction {
            Direction::Write => on_write(&config, stats, id, c, &chunk, out),
            Direction::Read => on_read(&config, stats, id, c, &chunk, out),
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
        let max_pending = self.config.max_pending_requests.max(1);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.mode == Mode::Ignored {
            return;
        }
        c.last_seen_ns = c.last_seen_ns.max(ts_ns);
        if let Some(h2) = c.h2.as_mut() {
            h2.on_gap(direction, len, ts_ns, out);
            return;
        }
        let stats = &mut self.stats;
        match direction {
            Direction::Write => match &mut c.req {
                RequestState::Body { seq, reader, .. } => {
                    let key = ExchangeKey {
                        conn: id,
                        seq: *seq,
                    };
                    if reader.skip_lost(len) {
                        out.push(HttpEvent::Lost { key, direction });
                        if reader.is_done() {
                            out.push(HttpEvent::RequestEnd { key, ts_ns });
                            c.req = RequestState::Head;
                        }
                    } else {
                        stats.dropped_by_gap += 1;
                        out.push(HttpEvent::Aborted {
                            key,
                            ts_ns,
                            reason: AbortReason::FramingLost,
                        });
                        if let Some(p) = c.pending.iter_mut().find(|p| p.seq == key.seq) {
                            p.silent = true;
                        }
                        c.req = RequestState::Resync;
                    }
                }
                RequestState::Head => {
                    // A head (at least one request) was lost: keep a silent placeholder so
                    // its response is consumed rather than given to the next request.
                    c.req_head.clear();
                    stats.dropped_by_gap += 1;
                    let seq = c.next_seq;
                    c.next_seq += 1;
                    if c.pending.len() >= max_pending
                        && let Some(old) = c.pending.pop_front()
                        && !old.silent
                    {
                        out.push(HttpEvent::Aborted {
                            key: ExchangeKey {
                                conn: id,
                                seq: old.seq,
                            },
                            ts_ns,
                            reason: AbortReason::FramingLost,
                        });
                    }
                    c.pending.push_back(Pending {
                        seq,
                        head_request: false,
                        silent: true,
                    });
                    c.req = RequestState::Resync;
                }
                RequestState::Resync => {}
            },
            Direction::Read => {
                let lost_in_body = match &mut c.resp {
                    ResponseState::Body {
                        seq,
                        silent,
                        reader,
                        ..
                    } => {
                        if reader.skip_lost(len) {
                            if let (Some(seq), false) = (*seq, *silent) {
                                out.push(HttpEvent::Lost {
                                    key: ExchangeKey { conn: id, seq },
                                    direction,
                                });
                            }
                            true
                        } else {
                            false
                        }
                    }
                    ResponseState::Resync => return,
                    ResponseState::Head => false,
                };
                if lost_in_body {
                    if let ResponseState::Body { reader, .. } = &c.resp
                        && reader.is_done()
                    {
                        finish_response(id, c, ts_ns, out);
                    }
                    return;
                }
                c.resp_head.clear();
                c.resp = ResponseState::Resync;
                log::debug!("{id}: {len} response bytes lost outside a body, resynchronising");
                if let Some(p) = c.pending.pop_front() {
                    if !p.silent {
                        stats.dropped_by_gap += 1;
                        out.push(HttpEvent::Aborted {
                            key: ExchangeKey {
                                conn: id,
                                seq: p.seq,
                            },
                            ts_ns,
                            reason: AbortReason::FramingLost,
                        });
                    }
                }
            }
        }
    }
}

fn close(
    id: ConnectionId,
    mut c: Connection,
    ts_ns: u64,
    reason: AbortReason,
    out: &mut Vec<HttpEvent>,
) {
    if let Some(h2) = c.h2.as_mut() {
        h2.close(ts_ns, reason, out);
        return;
    }
    // A close-delimited response ends normally when the connection closes.
    if reason == AbortReason::ConnectionClosed
        && matches!(&c.resp, ResponseState::Body { reader, .. } if reader.is_until_close())
    {
        finish_response(id, &mut c, ts_ns, out);
    }
    // A request still being written whose response already ended is not in `pending`.
    if let RequestState::Body { seq, .. } = &c.req
        && !c.pending.iter().any(|p| p.seq == *seq)
    {
        out.push(HttpEvent::Aborted {
            key: ExchangeKey {
                conn: id,
                seq: *seq,
            },
            ts_ns,
            reason,
        });
    }
    for p in c.pending.drain(..) {
        if !p.silent {
            out.push(HttpEvent::Aborted {
                key: ExchangeKey {
                    conn: id,
                    seq: p.seq,
                },
                ts_ns,
                reason,
            });
        }
    }
}

/// `data` after its first line terminator (empty when there is none).
fn skip_line(data: &[u8]) -> &[u8] {
    match memchr::memchr(b'\n', data) {
        Some(i) => data.get(i + 1..).unwrap_or_default(),
        None => &[],
    }
}

fn sniff_with(acc: &HeadAccumulator, data: &[u8]) -> Sniff {
    let mut probe: Vec<u8> = acc.peek().iter().take(16).copied().collect();
    probe.extend(data.iter().take(16));
    sniff(&probe)
}

fn on_write(
    config: &ConnectionConfig,
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    chunk: &StreamChunk,
    out: &mut Vec<HttpEvent>,
) {
    let mut data: &[u8] = &chunk.data;
    while !data.is_empty() && c.mode != Mode::Ignored {
        match &mut c.req {
            RequestState::Resync => match find_message_start(data, true, Sniff::Request) {
                Some(pos) => {
                    data = data.get(pos..).unwrap_or_default();
                    c.req = RequestState::Head;
                }
                None => {
                    unsynced(stats, id, c, data.len());
                    return;
                }
            },
            RequestState::Head => {
                if c.req_head.peek().len() < SNIFF_LEN {
                    match sniff_with(&c.req_head, data) {
                        Sniff::Request | Sniff::NeedMore => {}
                        Sniff::Http2Preface if c.mode == Mode::Unknown => {
                            // The client preface: HTTP/2 from the first byte.
                            let mut bytes = c.req_head.peek().to_vec();
                            bytes.extend_from_slice(data);
                            c.req_head.clear();
                            stats.http2_connections += 1;
                            c.mode = Mode::Http2;
                            c.h2 = Some(Box::new(H2Connection::with_preface(
                                id,
                                h2_config(config),
                                c.read_seen,
                            )));
                            on_h2_data(stats, id, c, chunk, &bytes, out);
                            return;
                        }
                        Sniff::Http2Preface => {
                            ignore(stats, id, c, false);
                            return;
                        }
                        Sniff::Response if c.mode == Mode::Unknown => {
                            // The process writes responses: a server.
                            ignore(stats, id, c, true);
                            return;
                        }
                        Sniff::Response | Sniff::Other => {
                            if c.mode == Mode::Client {
                                stats.http_parse_errors += 1;
                            }
                            c.req_head.clear();
                            c.req = RequestState::Resync;
                            continue;
                        }
                    }
                    if c.req_head.is_empty() {
                        c.req_head_start = (chunk.ts_entry_ns, chunk.tid);
                    }
                }
                let (used, complete) = match c.req_head.push(data, config.header_cap) {
                    Ok(r) => r,
                    Err(_) => {
                        stats.http_parse_errors += 1;
                        c.req_head.clear();
                        c.req = RequestState::Resync;
                        // Resync after the oversized head's current line: searching from the
                        // same byte would find the same head again, forever.
                        data = skip_line(data);
                        continue;
                    }
                };
                data = data.get(used..).unwrap_or_default();
                if !complete {
                    return;
                }
                let head = match c.req_head.parse_request() {
                    Ok(h) => h,
                    Err(_) => {
                        stats.http_parse_errors += 1;
                        c.req_head.clear();
                        c.req = RequestState::Resync;
                        continue;
                    }
                };
                c.mode = Mode::Client;
                let seq = c.next_seq;
                c.next_seq += 1;
                let key = ExchangeKey { conn: id, seq };
                if c.pending.len() >= config.max_pending_requests.max(1)
                    && let Some(old) = c.pending.pop_front()
                    && !old.silent
                {
                    out.push(HttpEvent::Aborted {
                        key: ExchangeKey {
                            conn: id,
                            seq: old.seq,
                        },
                        ts_ns: chunk.ts_ns,
                        reason: AbortReason::ParseError,
                    });
                }
                c.pending.push_back(Pending {
                    seq,
                    head_request: head.method.eq_ignore_ascii_case("HEAD"),
                    silent: false,
                });
                let framing = request_framing(&head);
                let encoding = head.headers.get("content-encoding").map(str::to_string);
                let (ts_entry_ns, tid) = c.req_head_start;
                out.push(HttpEvent::Request {
                    key,
                    head,
                    ts_entry_ns,
                    tid,
                    comm: chunk.comm.as_str().into_owned(),
                });
                let reader = BodyReader::new(framing);
                if reader.is_done() {
                    out.push(HttpEvent::RequestEnd {
                        key,
                        ts_ns: chunk.ts_ns,
                    });
                } else {
                    let decoder =
                        ContentDecoder::new(encoding.as_deref(), config.max_decompressed_bytes);
                    if decoder.is_none() {
                        out.push(HttpEvent::Lost {
                            key,
                            direction: Direction::Write,
                        });
                    }
                    c.req = RequestState::Body {
                        seq,
                        reader,
                        decoder,
                    };
                }
            }
            RequestState::Body {
                seq,
                reader,
                decoder,
            } => {
                let key = ExchangeKey {
                    conn: id,
                    seq: *seq,
                };
                let mut raw = Vec::new();
                let used = match reader.feed(data, &mut |b| raw.extend_from_slice(b)) {
                    Ok(n) => n,
                    Err(_) => {
                        stats.http_parse_errors += 1;
                        out.push(HttpEvent::Aborted {
                            key,
                            ts_ns: chunk.ts_ns,
                            reason: AbortReason::ParseError,
                        });
                        if let Some(p) = c.pending.iter_mut().find(|p| p.seq == key.seq) {
                            p.silent = true;
                        }
                        c.req = RequestState::Resync;
                        continue;
                    }
                };
                data = data.get(used..).unwrap_or_default();
                let done = reader.is_done();
                emit_decoded(key, Direction::Write, decoder, &raw, done, None, out);
                if done {
                    out.push(HttpEvent::RequestEnd {
                        key,
                        ts_ns: chunk.ts_ns,
                    });
                    c.req = RequestState::Head;
                }
            }
        }
    }
}

/// Bytes of a message sniffed before deciding what a direction carries.
const SNIFF_LEN: usize = 16;

/// A connection whose traffic shows no HTTP/1.x message start within this many bytes (for
/// instance one attached in the middle of a body) is not HTTP/1.x.
const UNSYNCED_LIMIT: u64 = 256 * 1024;

/// Bytes skipped while looking for a message start.
fn unsynced(stats: &mut ConnectionStats, id: ConnectionId, c: &mut Connection, len: usize) {
    if c.mode == Mode::Unknown {
        c.unsynced_bytes += len as u64;
        if c.unsynced_bytes > UNSYNCED_LIMIT {
            ignore(stats, id, c, false);
        }
    }
}

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

fn request_framing(head: &RequestHead) -> BodyFraming {
    if head.headers.has_token("transfer-encoding", "chunked") {
        BodyFraming::Chunked
    } else if let Some(n) = head
        .headers
        .get("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        BodyFraming::Length(n)
    } else {
        BodyFraming::None
    }
}

fn response_framing(head: &ResponseHead, head_request: bool) -> BodyFraming {
    if head_request || head.status == 204 || head.status == 304 || head.status < 200 {
        BodyFraming::None
    } else if head.headers.has_token("transfer-encoding", "chunked") {
        BodyFraming::Chunked
    } else if let Some(n) = head
        .headers
        .get("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        BodyFraming::Length(n)
    } else {
        BodyFraming::UntilClose
    }
}

fn h2_config(config: &ConnectionConfig) -> H2Config {
    H2Config {
        header_cap: config.header_cap,
        max_decompressed_bytes: config.max_decompressed_bytes,
        max_streams: config.max_http2_streams,
    }
}

fn on_h2_data(
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

fn on_read(
    config: &ConnectionConfig,
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    chunk: &StreamChunk,
    out: &mut Vec<HttpEvent>,
) {
    let mut data: &[u8] = &chunk.data;
    while !data.is_empty() && c.mode != Mode::Ignored {
        match &mut c.resp {
            ResponseState::Resync => match find_message_start(data, true, Sniff::Response) {
                Some(pos) => {
                    data = data.get(pos..).unwrap_or_default();
                    c.resp = ResponseState::Head;
                }
                None => {
                    unsynced(stats, id, c, data.len());
                    return;
                }
            },
            ResponseState::Head => {
                if c.resp_head.peek().len() < SNIFF_LEN {
                    match sniff_with(&c.resp_head, data) {
                        Sniff::Response | Sniff::NeedMore => {}
                        Sniff::Request if c.mode == Mode::Unknown => {
                            // The process reads requests: a server or proxy.
                            ignore(stats, id, c, true);
                            return;
                        }
                        Sniff::Http2Preface => {
                            // The process reads the HTTP/2 client preface: a server.
                            ignore(stats, id, c, c.mode == Mode::Unknown);
                            return;
                        }
                        Sniff::Request | Sniff::Other => {
                            if c.mode == Mode::Client {
                                stats.http_parse_errors += 1;
                            }
                            c.resp_head.clear();
                            c.resp = ResponseState::Resync;
                            continue;
                        }
                    }
                    if c.resp_head.is_empty() {
                        c.resp_head_ts = chunk.ts_ns;
                    }
                }
                let (used, complete) = match c.resp_head.push(data, config.header_cap) {
                    Ok(r) => r,
                    Err(_) => {
                        stats.http_parse_errors += 1;
                        c.resp_head.clear();
                        c.resp = ResponseState::Resync;
                        // Resync after the oversized head's current line: searching from the
                        // same byte would find the same head again, forever.
                        data = skip_line(data);
                        continue;
                    }
                };
                data = data.get(used..).unwrap_or_default();
                if !complete {
                    return;
                }
                let head = match c.resp_head.parse_response() {
                    Ok(h) => h,
                    Err(_) => {
                        stats.http_parse_errors += 1;
                        c.resp_head.clear();
                        c.resp = ResponseState::Resync;
                        continue;
                    }
                };
                if head.status == 101 {
                    // Protocol switch (WebSocket, h2c): no longer HTTP/1.x.
                    for p in c.pending.drain(..) {
                        if !p.silent {
                            out.push(HttpEvent::Aborted {
                                key: ExchangeKey {
                                    conn: id,
                                    seq: p.seq,
                                },
                                ts_ns: chunk.ts_ns,
                                reason: AbortReason::ConnectionClosed,
                            });
                        }
                    }
                    ignore(stats, id, c, false);
                    return;
                }
                if head.status < 200 {
                    // Interim response (100 Continue, 103 Early Hints): the final one follows.
                    continue;
                }
                let front = c.pending.front();
                let seq = front.map(|p| p.seq);
                let silent = front.is_none_or(|p| p.silent);
                let head_request = front.is_some_and(|p| p.head_request);
                if front.is_none() {
                    stats.unmatched_responses += 1;
                }
                let framing = response_framing(&head, head_request);
                let decoder = ContentDecoder::new(
                    head.headers.get("content-encoding"),
                    config.max_decompressed_bytes,
                );
                if let (Some(seq), false) = (seq, silent) {
                    let key = ExchangeKey { conn: id, seq };
                    let undecodable = decoder.is_none();
                    out.push(HttpEvent::Response {
                        key,
                        head,
                        ts_ns: c.resp_head_ts,
                    });
                    if undecodable {
                        out.push(HttpEvent::Lost {
                            key,
                            direction: Direction::Read,
                        });
                    }
                }
                c.resp = ResponseState::Body {
                    seq,
                    silent,
                    reader: BodyReader::new(framing),
                    decoder,
                };
                if let ResponseState::Body { reader, .. } = &c.resp
                    && reader.is_done()
                {
                    finish_response(id, c, chunk.ts_ns, out);
                }
            }
            ResponseState::Body {
                seq,
                silent,
                reader,
                decoder,
            } => {
                let mut raw = Vec::new();
                let used = match reader.feed(data, &mut |b| raw.extend_from_slice(b)) {
                    Ok(n) => n,
                    Err(_) => {
                        stats.http_parse_errors += 1;
                        if let (Some(seq), false) = (*seq, *silent) {
                            out.push(HttpEvent::Aborted {
                                key: ExchangeKey { conn: id, seq },
                                ts_ns: chunk.ts_ns,
                                reason: AbortReason::ParseError,
                            });
                        }
                        if seq.is_some() {
                            c.pending.pop_front();
                        }
                        c.resp = ResponseState::Resync;
                        continue;
                    }
                };
                data = data.get(used..).unwrap_or_default();
                let done = reader.is_done();
                if let (Some(seq), false) = (*seq, *silent) {
                    let key = ExchangeKey { conn: id, seq };
                    emit_decoded(
                        key,
                        Direction::Read,
                        decoder,
                        &raw,
                        done,
                        Some(chunk.ts_ns),
                        out,
                    );
                }
                if done {
                    finish_response(id, c, chunk.ts_ns, out);
                }
            }
        }
    }
}

/// The response in progress is complete: report it and pass to the next request.
fn finish_response(id: ConnectionId, c: &mut Connection, ts_ns: u64, out: &mut Vec<HttpEvent>) {
    let state = std::mem::replace(&mut c.resp, ResponseState::Head);
    if let ResponseState::Body {
        seq: Some(seq),
        silent,
        mut decoder,
        ..
    } = state
    {
        let key = ExchangeKey { conn: id, seq };
        if !silent {
            emit_decoded(
                key,
                Direction::Read,
                &mut decoder,
                &[],
                true,
                Some(ts_ns),
                out,
            );
            out.push(HttpEvent::ResponseEnd { key, ts_ns });
        }
        if c.pending.front().is_some_and(|p| p.seq == seq) {
            c.pending.pop_front();
        }
    }
}

#[cfg(test)]
mod tests;
