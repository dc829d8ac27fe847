//! Stage 2b', HTTP/2 over TLS: frames from both directions of a connection, HPACK (through
//! `loona-hpack`, one dynamic table per direction), each stream turned into the same
//! [`HttpEvent`]s an HTTP/1.1 exchange gives, so body decoding, SSE and provider parsing are
//! shared.
//!
//! Only a connection whose preface was captured is decoded: HPACK state cannot be rebuilt
//! from the middle of a connection, so streams of a connection seen mid-way, or after bytes
//! were lost outside a DATA payload, are skipped and counted, never given guessed headers.

pub mod frame;

use std::collections::BTreeMap;

use loona_hpack::Decoder;

use crate::flow::{ConnectionId, Direction, StreamChunk};
use crate::http::{
    AbortReason, ContentDecoder, ExchangeKey, Headers, HttpEvent, RequestHead, ResponseHead,
    emit_decoded, is_credential_header,
};
use frame::{
    END_HEADERS, END_STREAM, FrameReader, FrameType, Item, PREFACE, SETTINGS_HEADER_TABLE_SIZE,
    Stamp, looks_like_frames,
};

/// Limits of one HTTP/2 connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Config {
    /// Largest header block (compressed, all CONTINUATIONs) and largest non-DATA frame.
    pub header_cap: usize,
    pub max_decompressed_bytes: u64,
    /// Most streams tracked at once (the oldest is ended beyond).
    pub max_streams: usize,
}

/// What one HTTP/2 connection counts; the connection stage adds these to its own stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2Counters {
    /// Frames, header blocks or streams that broke the protocol (or lost HPACK sync).
    pub parse_errors: u64,
    /// Streams not reported because the HPACK state was unknown.
    pub streams_skipped: u64,
}

/// Largest HPACK dynamic table followed; a peer growing it further loses HPACK sync (counted).
const HPACK_TABLE_CAP: usize = 64 * 1024;
/// HPACK's initial table size (RFC 7541 §4.2 / RFC 9113 §6.5.2).
const HPACK_DEFAULT_TABLE: usize = 4096;
/// Decoded header bytes kept per block, relative to the compressed cap (indexed fields expand).
const DECODED_FACTOR: usize = 4;

const WRITE: usize = 0;
const READ: usize = 1;

fn side_of(d: Direction) -> usize {
    match d {
        Direction::Write => WRITE,
        Direction::Read => READ,
    }
}

#[derive(Debug)]
enum BlockKind {
    Headers { end_stream: bool },
    PushPromise,
}

/// A header block waiting for its CONTINUATION frames.
#[derive(Debug)]
struct Block {
    stream: u32,
    kind: BlockKind,
    fragment: Vec<u8>,
    start: Stamp,
}

struct Side {
    reader: FrameReader,
    hpack: Decoder<'static>,
    allowed_table: usize,
    block: Option<Block>,
    /// Frame boundaries known.
    aligned: bool,
    /// The HPACK table is known to match the peer's: header blocks can be trusted.
    hpack_ok: bool,
    /// Preface bytes still expected at the start of this direction (client side).
    preface_left: usize,
    /// Bytes seen in this direction (to recognise a server reading the preface).
    seen: u64,
}

impl std::fmt::Debug for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Side")
            .field("aligned", &self.aligned)
            .field("hpack_ok", &self.hpack_ok)
            .field("allowed_table", &self.allowed_table)
            .field("block", &self.block)
            .finish_non_exhaustive()
    }
}

impl Side {
    fn new(max_payload: usize, aligned: bool, hpack_ok: bool, preface_left: usize) -> Self {
        let mut hpack = Decoder::new();
        hpack.set_max_allowed_table_size(HPACK_DEFAULT_TABLE);
        Side {
            reader: FrameReader::new(max_payload),
            hpack,
            allowed_table: HPACK_DEFAULT_TABLE,
            block: None,
            aligned,
            hpack_ok,
            preface_left,
            seen: 0,
        }
    }
}

#[derive(Debug)]
enum Response {
    AwaitingHead,
    Body {
        decoder: Option<ContentDecoder>,
        /// DATA payload bytes still due by the response's `Content-Length`: the body is
        /// complete when they arrived, even if END_STREAM (which may follow on a separate
        /// empty DATA frame) is never read by the client.
        content_left: Option<u64>,
    },
    Ended,
}

/// A stream being reported as a call.
#[derive(Debug)]
struct Stream {
    seq: u64,
    /// A HEAD request: its response's `Content-Length` announces no body.
    head_request: bool,
    request_open: bool,
    req_decoder: Option<ContentDecoder>,
    response: Response,
}

/// What became of the connection after a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    /// The process reads the client preface: it is the server side, ignore the connection.
    Server,
}

/// Per-connection HTTP/2 state.
#[derive(Debug)]
pub struct H2Connection {
    id: ConnectionId,
    config: H2Config,
    sides: [Side; 2],
    streams: BTreeMap<u32, Stream>,
    next_seq: u64,
    highest_client_stream: u32,
    /// A GOAWAY was seen: streams still open when the connection ends were cut by it.
    goaway: bool,
}

impl H2Connection {
    /// A connection whose client preface starts the captured bytes of the write direction.
    /// `read_seen`: the read direction already carried bytes (server frames sent before the
    /// preface was written can hold no header block, so HPACK state is still the initial one;
    /// frame boundaries are found again at the next TLS read that is whole frames).
    pub fn with_preface(id: ConnectionId, config: H2Config, read_seen: bool) -> Self {
        let max_payload = config.header_cap.max(16 * 1024);
        H2Connection {
            id,
            sides: [
                Side::new(max_payload, true, true, PREFACE.len()),
                Side::new(max_payload, !read_seen, true, 0),
            ],
            config,
            streams: BTreeMap::new(),
            next_seq: 0,
            highest_client_stream: 0,
            goaway: false,
        }
    }

    /// A connection recognised from frames in the middle (no preface captured): its HPACK
    /// state is unknown, so its streams are only counted. `aligned` is the direction whose
    /// current chunk was recognised as whole frames.
    pub fn mid_connection(id: ConnectionId, config: H2Config, aligned: Direction) -> Self {
        let max_payload = config.header_cap.max(16 * 1024);
        let w = aligned == Direction::Write;
        H2Connection {
            id,
            sides: [
                Side::new(max_payload, w, false, 0),
                Side::new(max_payload, !w, false, 0),
            ],
            config,
            streams: BTreeMap::new(),
            next_seq: 0,
            highest_client_stream: 0,
            goaway: false,
        }
    }

    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Feeds captured bytes of one direction.
    pub fn on_data(
        &mut self,
        chunk: &StreamChunk,
        data: &[u8],
        stats: &mut H2Counters,
        out: &mut Vec<HttpEvent>,
    ) -> Verdict {
        let s = side_of(chunk.direction);
        let mut data = data;
        let side = &mut self.sides[s];
        if s == READ && side.seen == 0 && starts_like_preface(data) {
            return Verdict::Server;
        }
        side.seen += data.len() as u64;
        if side.preface_left > 0 {
            let done = PREFACE.len() - side.preface_left;
            let n = side.preface_left.min(data.len());
            if data.get(..n) != PREFACE.get(done..done + n) {
                stats.parse_errors += 1;
                self.lose_side(s, chunk.ts_ns, out);
                side_reset(&mut self.sides[s]);
                return Verdict::Continue;
            }
            self.sides[s].preface_left -= n;
            data = data.get(n..).unwrap_or_default();
        }
        if data.is_empty() {
            return Verdict::Continue;
        }
        if !self.sides[s].aligned {
            if !looks_like_frames(data) {
                // Frame boundaries unknown: whatever this chunk held is unknown too.
                self.sides[s].hpack_ok = false;
                return Verdict::Continue;
            }
            self.sides[s].aligned = true;
        }
        let stamp = Stamp {
            ts_entry_ns: chunk.ts_entry_ns,
            ts_ns: chunk.ts_ns,
            tid: chunk.tid,
        };
        let mut items = Vec::new();
        let fed = self.sides[s].reader.feed(data, stamp, &mut items);
        for item in items {
            self.on_item(s, item, chunk, stats, out);
        }
        if let Err(e) = fed {
            log::debug!("{}: HTTP/2 {:?} framing: {e}", self.id, chunk.direction);
            stats.parse_errors += 1;
            self.lose_side(s, chunk.ts_ns, out);
            side_reset(&mut self.sides[s]);
        }
        Verdict::Continue
    }

    /// `len` bytes of `direction` were lost.
    pub fn on_gap(&mut self, direction: Direction, len: u64, ts_ns: u64, out: &mut Vec<HttpEvent>) {
        let s = side_of(direction);
        let side = &mut self.sides[s];
        if !side.aligned || side.preface_left > 0 {
            side.hpack_ok = false;
            side.preface_left = 0;
            return;
        }
        let mut items = Vec::new();
        match side.reader.skip_lost(len, &mut items) {
            Some(stream) => {
                if let Some(st) = self.streams.get(&stream) {
                    out.push(HttpEvent::Lost {
                        key: self.key(st.seq),
                        direction,
                    });
                }
                for item in items {
                    if let Item::DataEnd { stream, end_stream } = item {
                        self.data_end(s, stream, end_stream, ts_ns, out);
                    }
                }
            }
            None => {
                log::debug!(
                    "{}: {len} HTTP/2 bytes lost outside DATA, HPACK state unknown",
                    self.id
                );
                self.lose_side(s, ts_ns, out);
                side_reset(&mut self.sides[s]);
            }
        }
    }

    /// Ends every stream still open (connection closed, idle, shutdown).
    pub fn close(&mut self, ts_ns: u64, reason: AbortReason, out: &mut Vec<HttpEvent>) {
        let reason = if self.goaway && reason == AbortReason::ConnectionClosed {
            AbortReason::GoAway
        } else {
            reason
        };
        for (_, st) in std::mem::take(&mut self.streams) {
            out.push(HttpEvent::Aborted {
                key: self.key(st.seq),
                ts_ns,
                reason,
            });
        }
    }

    fn key(&self, seq: u64) -> ExchangeKey {
        ExchangeKey { conn: self.id, seq }
    }

    /// Frame sync or HPACK state of side `s` is gone: end the streams that needed it.
    fn lose_side(&mut self, s: usize, ts_ns: u64, out: &mut Vec<HttpEvent>) {
        let affected: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, st)| {
                if s == WRITE {
                    st.request_open
                } else {
                    !matches!(st.response, Response::Ended)
                }
            })
            .map(|(id, _)| *id)
            .collect();
        for id in affected {
            if let Some(st) = self.streams.remove(&id) {
                out.push(HttpEvent::Aborted {
                    key: self.key(st.seq),
                    ts_ns,
                    reason: AbortReason::FramingLost,
                });
            }
        }
    }

    fn on_item(
        &mut self,
        s: usize,
        item: Item,
        chunk: &StreamChunk,
        stats: &mut H2Counters,
        out: &mut Vec<HttpEvent>,
    ) {
        if !self.sides[s].aligned {
            // An earlier item of this chunk lost sync.
            return;
        }
        match item {
            Item::Data { stream, bytes } => {
                if self.sides[s].block.is_some() {
                    return self.protocol_error(s, "DATA inside a header block", chunk, stats, out);
                }
                self.data(s, stream, &bytes, chunk.ts_ns, out);
            }
            Item::DataEnd { stream, end_stream } => {
                self.data_end(s, stream, end_stream, chunk.ts_ns, out)
            }
            Item::Frame {
                header,
                payload,
                start,
            } => {
                if self.sides[s].block.is_some() && header.kind != FrameType::Continuation {
                    return self.protocol_error(
                        s,
                        "frame inside a header block",
                        chunk,
                        stats,
                        out,
                    );
                }
                match header.kind {
                    FrameType::Headers | FrameType::PushPromise => {
                        let fragment = if header.kind == FrameType::Headers {
                            frame::headers_fragment(&header, &payload)
                        } else {
                            frame::push_promise_fragment(&header, &payload)
                        };
                        let Ok(fragment) = fragment else {
                            return self.protocol_error(s, "bad HEADERS", chunk, stats, out);
                        };
                        let kind = if header.kind == FrameType::Headers {
                            BlockKind::Headers {
                                end_stream: header.has(END_STREAM),
                            }
                        } else {
                            BlockKind::PushPromise
                        };
                        self.sides[s].block = Some(Block {
                            stream: header.stream,
                            kind,
                            fragment,
                            start,
                        });
                        if header.has(END_HEADERS) {
                            self.end_block(s, chunk, stats, out);
                        }
                    }
                    FrameType::Continuation => {
                        let cap = self.config.header_cap;
                        let Some(block) = self.sides[s].block.as_mut() else {
                            return self.protocol_error(s, "stray CONTINUATION", chunk, stats, out);
                        };
                        if block.stream != header.stream
                            || block.fragment.len() + payload.len() > cap
                        {
                            return self.protocol_error(s, "bad CONTINUATION", chunk, stats, out);
                        }
                        block.fragment.extend_from_slice(&payload);
                        if header.has(END_HEADERS) {
                            self.end_block(s, chunk, stats, out);
                        }
                    }
                    FrameType::Settings => {
                        if header.has(frame::ACK) {
                            return;
                        }
                        let Ok(list) = frame::settings(&payload) else {
                            stats.parse_errors += 1;
                            return;
                        };
                        for (id, value) in list {
                            if id == SETTINGS_HEADER_TABLE_SIZE {
                                // This side's decoder size bounds what the peer's encoder,
                                // i.e. the other direction's header blocks, may use.
                                let other = &mut self.sides[1 - s];
                                let v = (value as usize).min(HPACK_TABLE_CAP);
                                if v > other.allowed_table {
                                    other.allowed_table = v;
                                    other.hpack.set_max_allowed_table_size(v);
                                }
                            }
                        }
                    }
                    FrameType::RstStream => {
                        if frame::rst_stream(&payload).is_err() {
                            stats.parse_errors += 1;
                            return;
                        }
                        self.reset_stream(header.stream, chunk.ts_ns, out);
                    }
                    FrameType::GoAway => {
                        let Ok((last, code)) = frame::goaway(&payload) else {
                            stats.parse_errors += 1;
                            return;
                        };
                        self.on_goaway(s, last, code, chunk.ts_ns, out);
                    }
                    FrameType::Ping
                    | FrameType::Priority
                    | FrameType::WindowUpdate
                    | FrameType::Unknown(_) => {
                        if !header.is_plausible() && !matches!(header.kind, FrameType::Unknown(_)) {
                            stats.parse_errors += 1;
                        }
                    }
                    FrameType::Data => {}
                }
            }
        }
    }

    fn protocol_error(
        &mut self,
        s: usize,
        what: &str,
        chunk: &StreamChunk,
        stats: &mut H2Counters,
        out: &mut Vec<HttpEvent>,
    ) {
        log::debug!("{}: HTTP/2 {:?}: {what}", self.id, chunk.direction);
        stats.parse_errors += 1;
        self.lose_side(s, chunk.ts_ns, out);
        side_reset(&mut self.sides[s]);
    }

    fn end_block(
        &mut self,
        s: usize,
        chunk: &StreamChunk,
        stats: &mut H2Counters,
        out: &mut Vec<HttpEvent>,
    ) {
        let Some(block) = self.sides[s].block.take() else {
            return;
        };
        if block.fragment.len() > self.config.header_cap {
            return self.protocol_error(s, "header block over the cap", chunk, stats, out);
        }
        let trusted = self.sides[WRITE].hpack_ok && self.sides[READ].hpack_ok;
        let is_new_request = s == WRITE
            && matches!(block.kind, BlockKind::Headers { .. })
            && !self.streams.contains_key(&block.stream)
            && block.stream % 2 == 1
            && block.stream > self.highest_client_stream;
        if is_new_request {
            self.highest_client_stream = block.stream;
        }
        let fields = if self.sides[s].hpack_ok {
            match decode_block(
                &mut self.sides[s].hpack,
                &block.fragment,
                self.config.header_cap * DECODED_FACTOR,
            ) {
                Ok(f) => Some(f),
                Err(e) => {
                    log::debug!("{}: HPACK {:?}: {e}", self.id, chunk.direction);
                    stats.parse_errors += 1;
                    self.sides[s].hpack_ok = false;
                    self.lose_side(s, chunk.ts_ns, out);
                    None
                }
            }
        } else {
            None
        };
        let trusted = trusted && self.sides[WRITE].hpack_ok && self.sides[READ].hpack_ok;
        // Fields past the decoded-size cap were not kept: the head is unknown, not guessed.
        let fields = fields.filter(|f| {
            if f.truncated {
                stats.parse_errors += 1;
            }
            !f.truncated
        });
        let BlockKind::Headers { end_stream } = block.kind else {
            return; // PUSH_PROMISE: decoded only to keep the table in sync.
        };
        if is_new_request {
            match fields {
                Some(fields) if trusted => self.new_request(
                    block.stream,
                    fields,
                    block.start,
                    end_stream,
                    chunk,
                    stats,
                    out,
                ),
                _ => stats.streams_skipped += 1,
            }
            return;
        }
        let Some(fields) = fields else {
            // Undecodable trailers or response head of a reported stream.
            if let Some(st) = self.streams.remove(&block.stream) {
                out.push(HttpEvent::Aborted {
                    key: self.key(st.seq),
                    ts_ns: chunk.ts_ns,
                    reason: AbortReason::ParseError,
                });
            }
            return;
        };
        if s == WRITE {
            // Request trailers.
            if end_stream {
                self.request_end(block.stream, chunk.ts_ns, out);
            }
        } else {
            self.response_headers(
                block.stream,
                fields,
                block.start,
                end_stream,
                chunk,
                stats,
                out,
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn new_request(
        &mut self,
        stream: u32,
        fields: Fields,
        start: Stamp,
        end_stream: bool,
        chunk: &StreamChunk,
        stats: &mut H2Counters,
        out: &mut Vec<HttpEvent>,
    ) {
        let Some(head) = fields.request_head() else {
            stats.parse_errors += 1;
            return;
        };
        if self.streams.len() >= self.config.max_streams.max(1)
            && let Some((_, old)) = self.streams.pop_first()
        {
            out.push(HttpEvent::Aborted {
                key: self.key(old.seq),
                ts_ns: chunk.ts_ns,
                reason: AbortReason::IdleTimeout,
            });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let key = self.key(seq);
        let encoding = head.headers.get("content-encoding").map(str::to_string);
        let head_request = head.method.eq_ignore_ascii_case("HEAD");
        out.push(HttpEvent::Request {
            key,
            head,
            ts_entry_ns: start.ts_entry_ns,
            tid: start.tid,
            comm: chunk.comm.as_str().into_owned(),
        });
        let req_decoder = if end_stream {
            out.push(HttpEvent::RequestEnd {
                key,
                ts_ns: chunk.ts_ns,
            });
            None
        } else {
            let d = ContentDecoder::new(encoding.as_deref(), self.config.max_decompressed_bytes);
            if d.is_none() {
                out.push(HttpEvent::Lost {
                    key,
                    direction: Direction::Write,
                });
            }
            d
        };
        self.streams.insert(
            stream,
            Stream {
                seq,
                head_request,
                request_open: !end_stream,
                req_decoder,
                response: Response::AwaitingHead,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn response_headers(
        &mut self,
        stream: u32,
        fields: Fields,
        start: Stamp,
        end_stream: bool,
        chunk: &StreamChunk,
        stats: &mut H2Counters,
        out: &mut Vec<HttpEvent>,
    ) {
        let id = self.id;
        let max = self.config.max_decompressed_bytes;
        let Some(st) = self.streams.get_mut(&stream) else {
            return; // a pushed or skipped stream
        };
        let key = ExchangeKey {
            conn: id,
            seq: st.seq,
        };
        if matches!(st.response, Response::AwaitingHead) {
            let Some(head) = fields.response_head() else {
                stats.parse_errors += 1;
                let seq = st.seq;
                self.streams.remove(&stream);
                out.push(HttpEvent::Aborted {
                    key: self.key(seq),
                    ts_ns: chunk.ts_ns,
                    reason: AbortReason::ParseError,
                });
                return;
            };
            if head.status < 200 {
                return; // interim response: the final one follows
            }
            let decoder = ContentDecoder::new(head.headers.get("content-encoding"), max);
            let undecodable = decoder.is_none();
            // RFC 9113 §8.1.1: Content-Length equals the DATA payload of the response
            // (none after HEAD, 204 or 304).
            let content_left = if st.head_request || head.status == 204 || head.status == 304 {
                None
            } else {
                head.headers
                    .get("content-length")
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            out.push(HttpEvent::Response {
                key,
                head,
                ts_ns: start.ts_ns,
            });
            if undecodable {
                out.push(HttpEvent::Lost {
                    key,
                    direction: Direction::Read,
                });
            }
            st.response = Response::Body {
                decoder,
                content_left,
            };
        }
        // Otherwise: trailers.
        let body_done = matches!(
            st.response,
            Response::Body {
                content_left: Some(0),
                ..
            }
        );
        if end_stream || body_done {
            self.response_end(stream, chunk.ts_ns, out);
        }
    }

    fn data(&mut self, s: usize, stream: u32, bytes: &[u8], ts_ns: u64, out: &mut Vec<HttpEvent>) {
        let id = self.id;
        let Some(st) = self.streams.get_mut(&stream) else {
            return;
        };
        let key = ExchangeKey {
            conn: id,
            seq: st.seq,
        };
        if s == WRITE {
            if st.request_open {
                emit_decoded(
                    key,
                    Direction::Write,
                    &mut st.req_decoder,
                    bytes,
                    false,
                    None,
                    out,
                );
            }
        } else if let Response::Body {
            decoder,
            content_left,
        } = &mut st.response
        {
            emit_decoded(
                key,
                Direction::Read,
                decoder,
                bytes,
                false,
                Some(ts_ns),
                out,
            );
            if let Some(left) = content_left {
                *left = left.saturating_sub(bytes.len() as u64);
                if *left == 0 {
                    self.response_end(stream, ts_ns, out);
                }
            }
        }
    }

    fn data_end(
        &mut self,
        s: usize,
        stream: u32,
        end_stream: bool,
        ts_ns: u64,
        out: &mut Vec<HttpEvent>,
    ) {
        if !end_stream {
            return;
        }
        if s == WRITE {
            self.request_end(stream, ts_ns, out);
        } else {
            self.response_end(stream, ts_ns, out);
        }
    }

    fn request_end(&mut self, stream: u32, ts_ns: u64, out: &mut Vec<HttpEvent>) {
        let id = self.id;
        let Some(st) = self.streams.get_mut(&stream) else {
            return;
        };
        if !st.request_open {
            return;
        }
        let key = ExchangeKey {
            conn: id,
            seq: st.seq,
        };
        emit_decoded(
            key,
            Direction::Write,
            &mut st.req_decoder,
            &[],
            true,
            None,
            out,
        );
        out.push(HttpEvent::RequestEnd { key, ts_ns });
        st.request_open = false;
        if matches!(st.response, Response::Ended) {
            self.streams.remove(&stream);
        }
    }

    fn response_end(&mut self, stream: u32, ts_ns: u64, out: &mut Vec<HttpEvent>) {
        let id = self.id;
        let Some(st) = self.streams.get_mut(&stream) else {
            return;
        };
        let key = ExchangeKey {
            conn: id,
            seq: st.seq,
        };
        match std::mem::replace(&mut st.response, Response::Ended) {
            Response::Body { mut decoder, .. } => {
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
            Response::AwaitingHead => {
                // END_STREAM with no final response head: the exchange cannot complete.
                self.streams.remove(&stream);
                out.push(HttpEvent::Aborted {
                    key,
                    ts_ns,
                    reason: AbortReason::ParseError,
                });
                return;
            }
            Response::Ended => return,
        }
        if !st.request_open {
            self.streams.remove(&stream);
        }
    }

    /// RST_STREAM from either side.
    fn reset_stream(&mut self, stream: u32, ts_ns: u64, out: &mut Vec<HttpEvent>) {
        let Some(st) = self.streams.get(&stream) else {
            return;
        };
        if matches!(st.response, Response::Ended) {
            // The response is complete; the rest of the request is no longer wanted
            // (RFC 9113 §8.1): the exchange ends normally.
            self.request_end(stream, ts_ns, out);
            return;
        }
        if let Some(st) = self.streams.remove(&stream) {
            out.push(HttpEvent::Aborted {
                key: self.key(st.seq),
                ts_ns,
                reason: AbortReason::StreamReset,
            });
        }
    }

    fn on_goaway(&mut self, s: usize, last: u32, code: u32, ts_ns: u64, out: &mut Vec<HttpEvent>) {
        self.goaway = true;
        // The server's GOAWAY names the last client stream it processes; a GOAWAY with an
        // error means the connection is going down: nothing in flight will complete.
        let cut: Vec<u32> = self
            .streams
            .keys()
            .copied()
            .filter(|&id| code != 0 || (s == READ && id > last))
            .collect();
        for id in cut {
            if let Some(st) = self.streams.remove(&id) {
                out.push(HttpEvent::Aborted {
                    key: self.key(st.seq),
                    ts_ns,
                    reason: AbortReason::GoAway,
                });
            }
        }
    }
}

fn side_reset(side: &mut Side) {
    side.reader.reset();
    side.block = None;
    side.aligned = false;
    side.hpack_ok = false;
    side.preface_left = 0;
}

fn starts_like_preface(data: &[u8]) -> bool {
    let n = data.len().min(PREFACE.len());
    n >= 4 && data.get(..n) == PREFACE.get(..n)
}

#[derive(Debug, thiserror::Error)]
enum BlockError {
    #[error("{0}")]
    Hpack(loona_hpack::decoder::DecoderError),
}

/// The fields of one decoded header block (credentials already dropped).
#[derive(Debug, Default)]
struct Fields {
    method: Option<String>,
    path: Option<String>,
    authority: Option<String>,
    status: Option<String>,
    headers: Headers,
    /// Decoded bytes passed the cap: the rest was decoded (table sync) but not kept.
    truncated: bool,
}

impl Fields {
    fn request_head(self) -> Option<RequestHead> {
        let method = self.method?;
        let target = self.path.unwrap_or_default();
        // `:authority` stands for `Host` (RFC 9113 §8.3.1), first as HTTP/1.1 sends it.
        let headers = match self.authority {
            Some(a) if self.headers.get("host").is_none() => std::iter::once(("host", a.as_str()))
                .chain(self.headers.iter())
                .collect(),
            _ => self.headers,
        };
        Some(RequestHead {
            method,
            target,
            major_version: 2,
            minor_version: 0,
            headers,
        })
    }

    fn response_head(self) -> Option<ResponseHead> {
        let status = self.status?.trim().parse::<u16>().ok()?;
        Some(ResponseHead {
            status,
            major_version: 2,
            minor_version: 0,
            headers: self.headers,
        })
    }
}

fn decode_block(
    hpack: &mut Decoder<'static>,
    block: &[u8],
    cap: usize,
) -> Result<Fields, BlockError> {
    let mut f = Fields::default();
    let mut kept = 0usize;
    hpack
        .decode_with_cb(block, |name, value| {
            kept += name.len() + value.len();
            if kept > cap {
                f.truncated = true;
                return;
            }
            let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
            match &name[..] {
                b":method" => f.method = Some(text(&value)),
                b":path" => f.path = Some(text(&value)),
                b":authority" => f.authority = Some(text(&value)),
                b":status" => f.status = Some(text(&value)),
                n if n.first() == Some(&b':') => {}
                n => {
                    let name = String::from_utf8_lossy(n).to_ascii_lowercase();
                    if !is_credential_header(&name) {
                        f.headers
                            .push(&name, String::from_utf8_lossy(&value).trim());
                    }
                }
            }
        })
        .map_err(BlockError::Hpack)?;
    Ok(f)
}
