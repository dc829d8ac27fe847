//! HTTP/1.x pairing: requests written and responses read on one connection, turned into
//! exchanges. Requests queue up in order and each response belongs to the oldest request
//! still waiting for one (keep-alive, pipelining).

use std::collections::VecDeque;

use crate::flow::{ConnectionId, Direction, StreamChunk};
use crate::http::head::{Sniff, find_message_start, sniff};
use crate::http::{
    AbortReason, BodyFraming, BodyReader, ContentDecoder, ExchangeKey, HeadAccumulator, HttpEvent,
    RequestHead, ResponseHead, emit_decoded,
};

use super::{Connection, ConnectionConfig, ConnectionStats, Mode, h2, ignore, websocket};

/// A request waiting for its response.
#[derive(Debug)]
pub(super) struct Pending {
    seq: u64,
    head_request: bool,
    /// No events are reported for it (its request was lost); its response is still consumed.
    silent: bool,
    /// An `Upgrade: websocket` request: its head, for the WebSocket a `101` answer opens.
    upgrade: Option<Box<RequestHead>>,
}

#[derive(Debug)]
pub(super) enum RequestState {
    Head,
    Body {
        seq: u64,
        reader: BodyReader,
        decoder: Option<ContentDecoder>,
    },
    Resync,
}

#[derive(Debug)]
pub(super) enum ResponseState {
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

/// Bytes of a message sniffed before deciding what a direction carries.
const SNIFF_LEN: usize = 16;

/// A connection whose traffic shows no HTTP/1.x message start within this many bytes (for
/// instance one attached in the middle of a body) is not HTTP/1.x.
const UNSYNCED_LIMIT: u64 = 256 * 1024;

/// What the parsing loop of one direction does after a step.
enum Step<'a> {
    /// Go on with these bytes, in whatever state the step left.
    Next(&'a [u8]),
    /// The rest of the chunk is not parsed: the head is incomplete, or the connection is
    /// ignored or handed to HTTP/2.
    Stop,
}

/// Bytes the process wrote: requests.
pub(super) fn on_write(
    config: &ConnectionConfig,
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    chunk: &StreamChunk,
    out: &mut Vec<HttpEvent>,
) {
    let mut data: &[u8] = &chunk.data;
    while !data.is_empty() && c.mode != Mode::Ignored {
        let step = match c.req {
            RequestState::Resync => match find_message_start(data, true, Sniff::Request) {
                Some(pos) => {
                    c.req = RequestState::Head;
                    Step::Next(data.get(pos..).unwrap_or_default())
                }
                None => {
                    unsynced(stats, id, c, data.len());
                    Step::Stop
                }
            },
            RequestState::Head => request_head(config, stats, id, c, chunk, data, out),
            RequestState::Body { .. } => request_body(stats, id, c, chunk, data, out),
        };
        match step {
            Step::Next(rest) => data = rest,
            Step::Stop => return,
        }
    }
}

/// Bytes the process read: responses.
pub(super) fn on_read(
    config: &ConnectionConfig,
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    chunk: &StreamChunk,
    out: &mut Vec<HttpEvent>,
) {
    let mut data: &[u8] = &chunk.data;
    while !data.is_empty() && c.mode != Mode::Ignored {
        let step = match c.resp {
            ResponseState::Resync => match find_message_start(data, true, Sniff::Response) {
                Some(pos) => {
                    c.resp = ResponseState::Head;
                    Step::Next(data.get(pos..).unwrap_or_default())
                }
                None => {
                    unsynced(stats, id, c, data.len());
                    Step::Stop
                }
            },
            ResponseState::Head => response_head(config, stats, id, c, chunk, data, out),
            ResponseState::Body { .. } => response_body(stats, id, c, chunk, data, out),
        };
        match step {
            Step::Next(rest) => data = rest,
            Step::Stop => return,
        }
    }
}

fn request_head<'a>(
    config: &ConnectionConfig,
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    chunk: &StreamChunk,
    data: &'a [u8],
    out: &mut Vec<HttpEvent>,
) -> Step<'a> {
    if c.req_head.peek().len() < SNIFF_LEN {
        if let Some(step) = sniff_request(config, stats, id, c, chunk, data, out) {
            return step;
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
            // Resync after the oversized head's current line: searching from the same byte
            // would find the same head again, forever.
            return Step::Next(skip_line(data));
        }
    };
    let data = data.get(used..).unwrap_or_default();
    if !complete {
        return Step::Stop;
    }
    match c.req_head.parse_request() {
        Ok(head) => start_request(config, id, c, chunk, head, out),
        Err(_) => {
            stats.http_parse_errors += 1;
            c.req_head.clear();
            c.req = RequestState::Resync;
        }
    }
    Step::Next(data)
}

/// What the first bytes of a written head say; `None`: an HTTP/1 request, parse on.
fn sniff_request<'a>(
    config: &ConnectionConfig,
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    chunk: &StreamChunk,
    data: &'a [u8],
    out: &mut Vec<HttpEvent>,
) -> Option<Step<'a>> {
    match sniff_with(&c.req_head, data) {
        Sniff::Request | Sniff::NeedMore => None,
        Sniff::Http2Preface if c.mode == Mode::Unknown => {
            let mut bytes = c.req_head.peek().to_vec();
            bytes.extend_from_slice(data);
            c.req_head.clear();
            h2::start_with_preface(config, stats, id, c, chunk, &bytes, out);
            Some(Step::Stop)
        }
        Sniff::Http2Preface => {
            ignore(stats, id, c, false);
            Some(Step::Stop)
        }
        Sniff::Response if c.mode == Mode::Unknown => {
            // The process writes responses: a server.
            ignore(stats, id, c, true);
            Some(Step::Stop)
        }
        Sniff::Response | Sniff::Other => {
            if c.mode == Mode::Client {
                stats.http_parse_errors += 1;
            }
            c.req_head.clear();
            c.req = RequestState::Resync;
            Some(Step::Next(data))
        }
    }
}

/// A complete request head: report it and expect its body.
fn start_request(
    config: &ConnectionConfig,
    id: ConnectionId,
    c: &mut Connection,
    chunk: &StreamChunk,
    head: RequestHead,
    out: &mut Vec<HttpEvent>,
) {
    c.mode = Mode::Client;
    let seq = c.next_seq;
    c.next_seq += 1;
    let key = ExchangeKey { conn: id, seq };
    let waiting = Pending {
        seq,
        head_request: head.method.eq_ignore_ascii_case("HEAD"),
        silent: false,
        upgrade: websocket::is_upgrade_request(&head).then(|| Box::new(head.clone())),
    };
    queue_request(
        &mut c.pending,
        config.max_pending_requests,
        waiting,
        id,
        chunk.ts_ns,
        AbortReason::ParseError,
        out,
    );
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
        let decoder = ContentDecoder::new(encoding.as_deref(), config.max_decompressed_bytes);
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

fn request_body<'a>(
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    chunk: &StreamChunk,
    data: &'a [u8],
    out: &mut Vec<HttpEvent>,
) -> Step<'a> {
    let RequestState::Body {
        seq,
        reader,
        decoder,
    } = &mut c.req
    else {
        // Not in a body: the loop dispatches on the actual state.
        return Step::Next(data);
    };
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
            silence(&mut c.pending, key.seq);
            c.req = RequestState::Resync;
            return Step::Next(data);
        }
    };
    let done = reader.is_done();
    emit_decoded(key, Direction::Write, decoder, &raw, done, None, out);
    if done {
        out.push(HttpEvent::RequestEnd {
            key,
            ts_ns: chunk.ts_ns,
        });
        c.req = RequestState::Head;
    }
    Step::Next(data.get(used..).unwrap_or_default())
}

fn response_head<'a>(
    config: &ConnectionConfig,
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    chunk: &StreamChunk,
    data: &'a [u8],
    out: &mut Vec<HttpEvent>,
) -> Step<'a> {
    if c.resp_head.peek().len() < SNIFF_LEN {
        if let Some(step) = sniff_response(stats, id, c, data) {
            return step;
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
            // As for requests: resync after the oversized head's current line.
            return Step::Next(skip_line(data));
        }
    };
    let data = data.get(used..).unwrap_or_default();
    if !complete {
        return Step::Stop;
    }
    let head = match c.resp_head.parse_response() {
        Ok(h) => h,
        Err(_) => {
            stats.http_parse_errors += 1;
            c.resp_head.clear();
            c.resp = ResponseState::Resync;
            return Step::Next(data);
        }
    };
    if websocket::is_upgrade_response(&head)
        && c.pending
            .front()
            .is_some_and(|p| p.upgrade.is_some() && !p.silent)
        && let Some(Pending {
            seq,
            upgrade: Some(request),
            ..
        }) = c.pending.pop_front()
    {
        // Requests written after the upgrade request were not HTTP after all.
        abort_pending(
            &mut c.pending,
            id,
            chunk.ts_ns,
            AbortReason::ConnectionClosed,
            out,
        );
        c.req_head.clear();
        websocket::start(config, stats, id, c, chunk, seq, *request, head, data, out);
        return Step::Stop;
    }
    if head.status == 101 {
        // Another protocol switch (h2c, or a WebSocket whose request was not seen): no longer
        // HTTP/1.x.
        abort_pending(
            &mut c.pending,
            id,
            chunk.ts_ns,
            AbortReason::ConnectionClosed,
            out,
        );
        ignore(stats, id, c, false);
        return Step::Stop;
    }
    // An interim response (100 Continue, 103 Early Hints) is skipped: the final one follows.
    if head.status >= 200 {
        start_response(config, stats, id, c, chunk.ts_ns, head, out);
    }
    Step::Next(data)
}

/// What the first bytes of a read head say; `None`: an HTTP/1 response, parse on.
fn sniff_response<'a>(
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    data: &'a [u8],
) -> Option<Step<'a>> {
    match sniff_with(&c.resp_head, data) {
        Sniff::Response | Sniff::NeedMore => None,
        Sniff::Request if c.mode == Mode::Unknown => {
            // The process reads requests: a server or proxy.
            ignore(stats, id, c, true);
            Some(Step::Stop)
        }
        Sniff::Http2Preface => {
            // The process reads the HTTP/2 client preface: a server.
            ignore(stats, id, c, c.mode == Mode::Unknown);
            Some(Step::Stop)
        }
        Sniff::Request | Sniff::Other => {
            if c.mode == Mode::Client {
                stats.http_parse_errors += 1;
            }
            c.resp_head.clear();
            c.resp = ResponseState::Resync;
            Some(Step::Next(data))
        }
    }
}

/// A final response head: pair it with the oldest waiting request and expect its body.
fn start_response(
    config: &ConnectionConfig,
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    ts_ns: u64,
    head: ResponseHead,
    out: &mut Vec<HttpEvent>,
) {
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
        finish_response(id, c, ts_ns, out);
    }
}

fn response_body<'a>(
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    chunk: &StreamChunk,
    data: &'a [u8],
    out: &mut Vec<HttpEvent>,
) -> Step<'a> {
    let ResponseState::Body {
        seq,
        silent,
        reader,
        decoder,
    } = &mut c.resp
    else {
        // Not in a body: the loop dispatches on the actual state.
        return Step::Next(data);
    };
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
            return Step::Next(data);
        }
    };
    let done = reader.is_done();
    if let (Some(seq), false) = (*seq, *silent) {
        let key = ExchangeKey { conn: id, seq };
        let ts_ns = Some(chunk.ts_ns);
        emit_decoded(key, Direction::Read, decoder, &raw, done, ts_ns, out);
    }
    if done {
        finish_response(id, c, chunk.ts_ns, out);
    }
    Step::Next(data.get(used..).unwrap_or_default())
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
            let ts = Some(ts_ns);
            emit_decoded(key, Direction::Read, &mut decoder, &[], true, ts, out);
            out.push(HttpEvent::ResponseEnd { key, ts_ns });
        }
        if c.pending.front().is_some_and(|p| p.seq == seq) {
            c.pending.pop_front();
        }
    }
}

/// `len` request bytes were lost.
pub(super) fn request_gap(
    max_pending: usize,
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    len: u64,
    ts_ns: u64,
    out: &mut Vec<HttpEvent>,
) {
    match &mut c.req {
        RequestState::Body { seq, reader, .. } => {
            let key = ExchangeKey {
                conn: id,
                seq: *seq,
            };
            if reader.skip_lost(len) {
                out.push(HttpEvent::Lost {
                    key,
                    direction: Direction::Write,
                });
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
                silence(&mut c.pending, key.seq);
                c.req = RequestState::Resync;
            }
        }
        RequestState::Head => {
            // A head (at least one request) was lost: keep a silent placeholder so its
            // response is consumed rather than given to the next request.
            c.req_head.clear();
            stats.dropped_by_gap += 1;
            let seq = c.next_seq;
            c.next_seq += 1;
            let placeholder = Pending {
                seq,
                head_request: false,
                silent: true,
                upgrade: None,
            };
            let reason = AbortReason::FramingLost;
            queue_request(
                &mut c.pending,
                max_pending,
                placeholder,
                id,
                ts_ns,
                reason,
                out,
            );
            c.req = RequestState::Resync;
        }
        RequestState::Resync => {}
    }
}

/// `len` response bytes were lost.
pub(super) fn response_gap(
    stats: &mut ConnectionStats,
    id: ConnectionId,
    c: &mut Connection,
    len: u64,
    ts_ns: u64,
    out: &mut Vec<HttpEvent>,
) {
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
                        direction: Direction::Read,
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
    if let Some(p) = c.pending.pop_front()
        && !p.silent
    {
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

/// The connection ended: a close-delimited response ends normally, every other exchange in
/// flight is aborted with `reason`.
pub(super) fn close(
    id: ConnectionId,
    c: &mut Connection,
    ts_ns: u64,
    reason: AbortReason,
    out: &mut Vec<HttpEvent>,
) {
    if reason == AbortReason::ConnectionClosed
        && matches!(&c.resp, ResponseState::Body { reader, .. } if reader.is_until_close())
    {
        finish_response(id, c, ts_ns, out);
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
    abort_pending(&mut c.pending, id, ts_ns, reason, out);
}

/// Queues a request for its response; beyond `max_pending` the oldest waiting one is given up
/// (aborted with `reason` unless it is silent).
fn queue_request(
    pending: &mut VecDeque<Pending>,
    max_pending: usize,
    request: Pending,
    id: ConnectionId,
    ts_ns: u64,
    reason: AbortReason,
    out: &mut Vec<HttpEvent>,
) {
    if pending.len() >= max_pending.max(1)
        && let Some(old) = pending.pop_front()
        && !old.silent
    {
        out.push(HttpEvent::Aborted {
            key: ExchangeKey {
                conn: id,
                seq: old.seq,
            },
            ts_ns,
            reason,
        });
    }
    pending.push_back(request);
}

/// Aborts every request waiting for a response.
fn abort_pending(
    pending: &mut VecDeque<Pending>,
    id: ConnectionId,
    ts_ns: u64,
    reason: AbortReason,
    out: &mut Vec<HttpEvent>,
) {
    for p in pending.drain(..) {
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

/// Request `seq` is no longer reported (its response is still consumed).
fn silence(pending: &mut VecDeque<Pending>, seq: u64) {
    if let Some(p) = pending.iter_mut().find(|p| p.seq == seq) {
        p.silent = true;
    }
}

/// Bytes skipped while looking for a message start.
fn unsynced(stats: &mut ConnectionStats, id: ConnectionId, c: &mut Connection, len: usize) {
    if c.mode == Mode::Unknown {
        c.unsynced_bytes += len as u64;
        if c.unsynced_bytes > UNSYNCED_LIMIT {
            ignore(stats, id, c, false);
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
