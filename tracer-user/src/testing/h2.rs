//! HTTP/2 byte streams for tests and benches: a small encoder (HPACK through `loona-hpack`
//! with its dynamic table, optional padding, PRIORITY flags, CONTINUATION splits and table
//! size updates) and [`H2Session`], one client connection whose writes and reads become
//! capture events the way [`super::cassette_events`] does for HTTP/1.1.

use bytes::Bytes;
use loona_hpack::Encoder;

use super::{Cassette, ReplayOptions, comm, is_framing_header};
use crate::flow::{Direction, StreamChunk, StreamEvent};
use crate::http2::frame::{
    END_HEADERS, END_STREAM, FrameHeader, FrameType, PADDED, PREFACE, PRIORITY,
    SETTINGS_HEADER_TABLE_SIZE,
};

/// One side's frame encoder.
pub struct H2Writer {
    hpack: Encoder<'static>,
    /// Largest frame payload written (HEADERS beyond it continue in CONTINUATION frames).
    pub max_frame: usize,
    /// Padding added to DATA and HEADERS frames (0: none).
    pub pad: u8,
    /// Mark HEADERS frames with the PRIORITY flag (5 extra bytes).
    pub priority: bool,
    size_update: Option<usize>,
}

impl Default for H2Writer {
    fn default() -> Self {
        H2Writer {
            hpack: Encoder::new(),
            max_frame: 16_384,
            pad: 0,
            priority: false,
            size_update: None,
        }
    }
}

/// A frame: header and payload.
pub fn frame(kind: FrameType, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
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

/// A SETTINGS frame with these `(identifier, value)` pairs.
pub fn settings(list: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in list {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(FrameType::Settings, 0, 0, &p)
}

pub fn settings_ack() -> Vec<u8> {
    frame(FrameType::Settings, 1, 0, &[])
}

pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(FrameType::RstStream, 0, stream, &code.to_be_bytes())
}

pub fn goaway(last_stream: u32, code: u32) -> Vec<u8> {
    let mut p = last_stream.to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    frame(FrameType::GoAway, 0, 0, &p)
}

pub fn window_update(stream: u32, inc: u32) -> Vec<u8> {
    frame(FrameType::WindowUpdate, 0, stream, &inc.to_be_bytes())
}

pub fn ping(ack: bool) -> Vec<u8> {
    frame(FrameType::Ping, u8::from(ack), 0, b"llmtap!!")
}

impl H2Writer {
    /// The next header block starts with a dynamic table size update to `size`.
    pub fn set_table_size(&mut self, size: usize) {
        self.hpack.set_max_table_size(size);
        self.size_update = Some(size);
    }

    /// The HPACK block of `fields` (the encoder's table is updated).
    pub fn header_block(&mut self, fields: &[(String, String)]) -> Vec<u8> {
        let mut block = Vec::new();
        if let Some(size) = self.size_update.take() {
            let mut upd = loona_hpack::encoder::encode_integer(size, 5);
            if let Some(b) = upd.first_mut() {
                *b |= 0x20;
            }
            block.extend(upd);
        }
        block.extend(
            self.hpack
                .encode(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))),
        );
        block
    }

    /// HEADERS (+ CONTINUATION) frames carrying `fields`.
    pub fn headers(
        &mut self,
        stream: u32,
        fields: &[(String, String)],
        end_stream: bool,
    ) -> Vec<u8> {
        let block = self.header_block(fields);
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        let mut flags = if end_stream { END_STREAM } else { 0 };
        if self.pad > 0 {
            flags |= PADDED;
            prefix.push(self.pad);
        }
        if self.priority {
            flags |= PRIORITY;
            prefix.extend_from_slice(&[0, 0, 0, 0, 15]);
        }
        let room = self
            .max_frame
            .saturating_sub(prefix.len() + usize::from(self.pad))
            .max(1);
        let mut pieces = block.chunks(room).peekable();
        let first = pieces.next().unwrap_or_default();
        let mut payload = prefix;
        payload.extend_from_slice(first);
        payload.extend(std::iter::repeat_n(0u8, usize::from(self.pad)));
        if pieces.peek().is_none() {
            flags |= END_HEADERS;
        }
        out.extend(frame(FrameType::Headers, flags, stream, &payload));
        while let Some(piece) = pieces.next() {
            let f = if pieces.peek().is_none() {
                END_HEADERS
            } else {
                0
            };
            out.extend(frame(FrameType::Continuation, f, stream, piece));
        }
        out
    }

    /// DATA frames of at most `max_frame` payload bytes carrying `body`.
    pub fn data(&mut self, stream: u32, body: &[u8], end_stream: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let room = self
            .max_frame
            .saturating_sub(usize::from(self.pad) + usize::from(self.pad > 0))
            .max(1);
        let pieces: Vec<&[u8]> = if body.is_empty() {
            vec![&[]]
        } else {
            body.chunks(room).collect()
        };
        let n = pieces.len();
        for (i, piece) in pieces.into_iter().enumerate() {
            let mut flags = if end_stream && i + 1 == n {
                END_STREAM
            } else {
                0
            };
            let mut payload = Vec::with_capacity(piece.len() + 256);
            if self.pad > 0 {
                flags |= PADDED;
                payload.push(self.pad);
            }
            payload.extend_from_slice(piece);
            payload.extend(std::iter::repeat_n(0u8, usize::from(self.pad)));
            out.extend(frame(FrameType::Data, flags, stream, &payload));
        }
        out
    }
}

impl Cassette {
    /// The request's HTTP/2 fields: pseudo-headers, then the recorded headers (lower-cased,
    /// without `Host` and HTTP/1 connection headers), content-length recomputed.
    pub fn h2_request_fields(&self) -> Vec<(String, String)> {
        let (host, target) = self.host_and_target();
        let authority = self
            .request_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.clone())
            .unwrap_or(host);
        let mut f = vec![
            (":method".to_string(), self.method.clone()),
            (":scheme".to_string(), "https".to_string()),
            (":authority".to_string(), authority),
            (":path".to_string(), target),
        ];
        for (k, v) in &self.request_headers {
            if !is_framing_header(k) && !is_connection_header(k) && !k.eq_ignore_ascii_case("host")
            {
                f.push((k.to_ascii_lowercase(), v.clone()));
            }
        }
        f.push((
            "content-length".to_string(),
            self.request_body.len().to_string(),
        ));
        f
    }

    /// The response's HTTP/2 fields (`:status`, recorded headers; content-length when the
    /// recording was not chunked).
    pub fn h2_response_fields(&self) -> Vec<(String, String)> {
        let mut f = vec![(":status".to_string(), self.status.to_string())];
        for (k, v) in &self.response_headers {
            if !is_framing_header(k) && !is_connection_header(k) {
                f.push((k.to_ascii_lowercase(), v.clone()));
            }
        }
        if !self.response_chunked() {
            f.push((
                "content-length".to_string(),
                self.response_body.len().to_string(),
            ));
        }
        f
    }
}

/// Headers HTTP/2 forbids (RFC 9113 §8.2.2).
fn is_connection_header(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "te",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// One HTTP/2 client connection seen from the client: its writes and reads as capture events.
pub struct H2Session {
    pub client: H2Writer,
    pub server: H2Writer,
    pub opts: ReplayOptions,
    pub now: u64,
    pub events: Vec<StreamEvent>,
    next_stream: u32,
}

impl H2Session {
    /// A connection whose preface and SETTINGS exchange are captured.
    pub fn new(opts: ReplayOptions) -> Self {
        let mut s = Self::without_preface(opts);
        let mut hello = PREFACE.to_vec();
        hello.extend(settings(&[(0x2, 0), (0x4, 4 << 20)]));
        hello.extend(window_update(0, 10 << 20));
        s.write(&hello);
        let mut server_hello = settings(&[(0x3, 100), (0x4, 1 << 20)]);
        server_hello.extend(settings_ack());
        s.read(&server_hello);
        s.write(&settings_ack());
        s
    }

    /// A connection already open when capture began (nothing written yet by this session).
    pub fn without_preface(opts: ReplayOptions) -> Self {
        H2Session {
            client: H2Writer::default(),
            server: H2Writer::default(),
            now: opts.start_ns,
            opts,
            events: Vec::new(),
            next_stream: 1,
        }
    }

    /// The client's next stream id.
    pub fn open_stream(&mut self) -> u32 {
        let id = self.next_stream;
        self.next_stream += 2;
        id
    }

    /// Bytes the client writes, cut into `opts.write_size` TLS writes.
    pub fn write(&mut self, bytes: &[u8]) {
        let size = self.opts.write_size;
        self.push(bytes, Direction::Write, size);
    }

    /// Bytes the client reads, cut into `opts.read_size` TLS reads.
    pub fn read(&mut self, bytes: &[u8]) {
        let size = self.opts.read_size;
        self.push(bytes, Direction::Read, size);
    }

    fn push(&mut self, bytes: &[u8], direction: Direction, size: usize) {
        let c = comm(&self.opts.comm);
        for piece in bytes.chunks(size.max(1)) {
            self.events.push(StreamEvent::Data(StreamChunk {
                conn: self.opts.conn,
                direction,
                tid: self.opts.tid,
                comm: c,
                ts_entry_ns: self.now,
                ts_ns: self.now + self.opts.step_ns / 2,
                data: Bytes::copy_from_slice(piece),
            }));
            self.now += self.opts.step_ns;
        }
    }

    pub fn wait(&mut self, ns: u64) {
        self.now += ns;
    }

    /// The request of `c` on `stream` (HEADERS, then DATA with END_STREAM).
    pub fn request_bytes(&mut self, stream: u32, c: &Cassette) -> Vec<u8> {
        let fields = c.h2_request_fields();
        let mut out = self
            .client
            .headers(stream, &fields, c.request_body.is_empty());
        if !c.request_body.is_empty() {
            out.extend(self.client.data(stream, &c.request_body, true));
        }
        out
    }

    /// The response of `c` on `stream`: HEADERS, then one DATA frame per
    /// `opts.transfer_chunk_size` body bytes, the last with END_STREAM. Returned as one
    /// piece per DATA frame (streams arrive as separate reads).
    pub fn response_pieces(&mut self, stream: u32, c: &Cassette) -> Vec<Vec<u8>> {
        let fields = c.h2_response_fields();
        let body = &c.response_body;
        let mut pieces = vec![self.server.headers(stream, &fields, body.is_empty())];
        let chunks: Vec<&[u8]> = body.chunks(self.opts.transfer_chunk_size.max(1)).collect();
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            pieces.push(self.server.data(stream, chunk, i + 1 == n));
        }
        pieces
    }

    /// One whole exchange: request writes, the server latency, then response reads.
    pub fn exchange(&mut self, c: &Cassette) -> u32 {
        let stream = self.open_stream();
        let req = self.request_bytes(stream, c);
        self.write(&req);
        self.wait(self.opts.server_latency_ns);
        let resp: Vec<u8> = self.response_pieces(stream, c).concat();
        self.read(&resp);
        stream
    }

    /// The client advertises a decoder table of `size` bytes; the server's encoder adopts it
    /// with a size update in its next header block (RFC 7541 §4.2).
    pub fn client_header_table_size(&mut self, size: u32) {
        self.write(&settings(&[(SETTINGS_HEADER_TABLE_SIZE, size)]));
        self.read(&settings_ack());
        self.server.set_table_size(size as usize);
    }

    pub fn close(&mut self) {
        self.events.push(StreamEvent::Closed {
            conn: self.opts.conn,
            ts_ns: self.now,
        });
    }
}

/// The events of one exchange over HTTP/2, like [`super::cassette_events`] for HTTP/1.1.
pub fn cassette_events_h2(c: &Cassette, opts: &ReplayOptions) -> Vec<StreamEvent> {
    let mut s = H2Session::new(opts.clone());
    s.exchange(c);
    if opts.close {
        s.close();
    }
    s.events
}
