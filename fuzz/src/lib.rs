//! Shared pieces of the fuzz targets: a deterministic splitter that cuts fuzzed byte streams
//! at arbitrary boundaries, and the drivers that feed them to llmtap's stages the way capture
//! does (both directions of one connection, with optional capture gaps).

use bytes::Bytes;
use llmtap::capture::{ConnectionId, Direction, StreamChunk, StreamEvent};
use llmtap::genai::CallRecord;
use llmtap::testing::comm;
use llmtap::{Pipeline, PipelineConfig};

/// xorshift64*: chunk boundaries and interleavings from a seed taken from the input.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A piece length in `1..=max`, biased to small pieces (1 byte, a few bytes, a record).
    pub fn piece(&mut self, max: usize) -> usize {
        let limit = match self.next() % 8 {
            0 => 1,
            1 => 3,
            2 | 3 => 17,
            4 => 300,
            5 => 4096,
            _ => 16_384,
        };
        (1 + (self.next() as usize) % limit).min(max.max(1))
    }

    pub fn one_in(&mut self, n: u64) -> bool {
        self.next() % n.max(1) == 0
    }
}

/// Cuts `data` into pieces at boundaries chosen by `rng`.
pub fn split<'a>(data: &'a [u8], rng: &mut Rng) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = rng.piece(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    out
}

/// Reads a little-endian u64 / u32 / u16 prefix; missing bytes are zero.
pub fn take_u64(data: &mut &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    u64::from_le_bytes(b)
}

pub fn take_u32(data: &mut &[u8]) -> u32 {
    let mut b = [0u8; 4];
    let n = data.len().min(4);
    b[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    u32::from_le_bytes(b)
}

pub fn take_u8(data: &mut &[u8]) -> u8 {
    match data.split_first() {
        Some((b, rest)) => {
            *data = rest;
            *b
        }
        None => 0,
    }
}

/// `[u64 seed][u32 request length][request][response]`: the two directions of a connection.
pub struct Exchange<'a> {
    pub seed: u64,
    pub request: &'a [u8],
    pub response: &'a [u8],
}

impl<'a> Exchange<'a> {
    pub fn parse(mut data: &'a [u8]) -> Self {
        let seed = take_u64(&mut data);
        let req_len = (take_u32(&mut data) as usize).min(data.len());
        let (request, response) = data.split_at(req_len);
        Exchange {
            seed,
            request,
            response,
        }
    }

    pub fn encode(seed: u64, request: &[u8], response: &[u8]) -> Vec<u8> {
        let mut out = seed.to_le_bytes().to_vec();
        out.extend_from_slice(&(request.len() as u32).to_le_bytes());
        out.extend_from_slice(request);
        out.extend_from_slice(response);
        out
    }
}

/// Small caps so the fuzzer reaches the limits with small inputs.
pub fn small_config() -> PipelineConfig {
    PipelineConfig {
        header_cap: 4096,
        request_body_cap: 8192,
        response_body_cap: 8192,
        stream_event_cap: 2048,
        max_decompressed_bytes: 64 * 1024,
        output_text_cap: 2048,
        max_chunk_times: 64,
        max_pending_requests: 8,
        ..PipelineConfig::default()
    }
}

/// Feeds both directions of one connection to a [`Pipeline`]: request pieces as writes,
/// response pieces as reads, interleaved (seed bit 0), with capture gaps (seed bit 1) and a
/// close or not (seed bit 2); then idle eviction and shutdown. Checks what must hold for any
/// input: no panic, state bounded by the configured caps, nothing left in flight after
/// shutdown, every record counted.
pub fn run_pipeline(ex: &Exchange<'_>, config: PipelineConfig) -> Vec<CallRecord> {
    let mut rng = Rng::new(ex.seed);
    let interleave = ex.seed & 1 != 0;
    let gaps = ex.seed & 2 != 0;
    let close = ex.seed & 4 != 0;
    let conn = ConnectionId {
        pid: 4242,
        conn: 0x5555_0000_1000,
    };
    let c = comm("fuzz");
    let max_pending = config.max_pending_requests as u64;
    let mut pipeline = Pipeline::new(config);
    let mut out = Vec::new();
    let writes = split(ex.request, &mut rng);
    let reads = split(ex.response, &mut rng);
    let (mut w, mut r) = (writes.iter().peekable(), reads.iter().peekable());
    let mut now = 1_000_000_000u64;
    loop {
        let direction = match (w.peek().is_some(), r.peek().is_some()) {
            (false, false) => break,
            (true, false) => Direction::Write,
            (false, true) => Direction::Read,
            (true, true) if interleave && rng.one_in(2) => Direction::Read,
            (true, true) if interleave => Direction::Write,
            (true, true) => Direction::Write,
        };
        let Some(piece) = (match direction {
            Direction::Write => w.next(),
            Direction::Read => r.next(),
        }) else {
            break;
        };
        now += 1 + rng.next() % 5_000_000;
        let event = if gaps && rng.one_in(24) {
            // Capture lost these bytes (ring buffer full); sometimes of unknown size.
            let len = if rng.one_in(4) { 0 } else { piece.len() as u64 };
            StreamEvent::Gap {
                conn,
                direction,
                len,
                ts_ns: now,
            }
        } else {
            StreamEvent::Data(StreamChunk {
                conn,
                direction,
                tid: 4243,
                comm: c,
                ts_entry_ns: now,
                ts_ns: now + 1000,
                data: Bytes::copy_from_slice(piece),
            })
        };
        pipeline.push(event, &mut out);
        let stats = pipeline.stats();
        assert!(stats.open_connections <= 1, "{stats:?}");
        // Calls in flight on one connection: bounded by the pending-request cap (plus the
        // call whose response is being read, and HTTP/2 streams, capped separately at 256).
        assert!(
            stats.calls_in_flight <= max_pending.max(256) + 1,
            "{stats:?}"
        );
    }
    if close {
        pipeline.push(
            StreamEvent::Closed {
                conn,
                ts_ns: now + 1,
            },
            &mut out,
        );
    }
    pipeline.tick(now + 3_600_000_000_000, &mut out);
    pipeline.finish(&mut out);
    let stats = pipeline.stats();
    assert_eq!(stats.open_connections, 0, "{stats:?}");
    assert_eq!(stats.calls_in_flight, 0, "{stats:?}");
    assert_eq!(stats.calls, out.len() as u64);
    out
}

/// Provider endpoints the provider target builds requests for: `(host, request target)`.
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("api.openai.com", "/v1/chat/completions"),
    ("api.openai.com", "/v1/responses"),
    ("api.openai.com", "/v1/completions"),
    ("api.openai.com", "/v1/embeddings"),
    ("api.anthropic.com", "/v1/messages"),
    (
        "bedrock-runtime.us-east-1.amazonaws.com",
        "/model/amazon.nova-lite-v1%3A0/converse",
    ),
    (
        "bedrock-runtime.us-east-1.amazonaws.com",
        "/model/anthropic.claude-3-sonnet-20240229-v1%3A0/converse-stream",
    ),
    (
        "bedrock-runtime.us-east-1.amazonaws.com",
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke",
    ),
    (
        "bedrock-runtime.us-east-1.amazonaws.com",
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream",
    ),
    (
        "generativelanguage.googleapis.com",
        "/v1beta/models/gemini-2.5-flash:generateContent",
    ),
    (
        "generativelanguage.googleapis.com",
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
    ),
    (
        "generativelanguage.googleapis.com",
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
    ),
    ("127.0.0.1:11434", "/api/chat"),
    ("127.0.0.1:11434", "/api/generate"),
    ("api.cohere.com", "/v2/chat"),
    (
        "res.openai.azure.com",
        "/openai/deployments/dep/chat/completions?api-version=2024-02-01",
    ),
    ("openrouter.ai", "/api/v1/chat/completions"),
];

pub const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "text/event-stream; charset=utf-8",
    "application/x-ndjson",
    "application/vnd.amazon.eventstream",
];

pub const ENCODINGS: &[Option<&str>] = &[
    None,
    Some("gzip"),
    Some("deflate"),
    Some("br"),
    Some("zstd"),
];

/// `[endpoint][flags][u16 status-ish][u32 request body length][request body][response body]`:
/// a well-formed HTTP/1.1 exchange for one provider endpoint whose bodies are fuzzed, so the
/// fuzzer spends its time in the request and response parsers. `flags`: content type (bits
/// 0-1), chunked (bit 2), content encoding (bits 3-5), status 200 vs. the fuzzed one (bit 6).
pub struct ProviderInput<'a> {
    pub endpoint: usize,
    pub flags: u8,
    pub status: u16,
    pub request_body: &'a [u8],
    pub response_body: &'a [u8],
}

impl<'a> ProviderInput<'a> {
    pub fn parse(mut data: &'a [u8]) -> Self {
        let endpoint = take_u8(&mut data) as usize % ENDPOINTS.len();
        let flags = take_u8(&mut data);
        let status = 100 + (take_u8(&mut data) as u16 * 2) % 500;
        let len = (take_u32(&mut data) as usize).min(data.len());
        let (request_body, response_body) = data.split_at(len);
        ProviderInput {
            endpoint,
            flags,
            status,
            request_body,
            response_body,
        }
    }

    pub fn encode(
        endpoint: usize,
        flags: u8,
        request_body: &[u8],
        response_body: &[u8],
    ) -> Vec<u8> {
        let mut out = vec![endpoint as u8, flags, 0];
        out.extend_from_slice(&(request_body.len() as u32).to_le_bytes());
        out.extend_from_slice(request_body);
        out.extend_from_slice(response_body);
        out
    }

    /// The request and response bytes on the wire.
    pub fn wire(&self) -> (Vec<u8>, Vec<u8>) {
        let (host, target) = ENDPOINTS[self.endpoint];
        let mut req = format!(
            "POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             anthropic-version: 2023-06-01\r\nAuthorization: Bearer sk-fuzz\r\n\
             Content-Length: {}\r\n\r\n",
            self.request_body.len()
        )
        .into_bytes();
        req.extend_from_slice(self.request_body);
        let status = if self.flags & 0x40 != 0 {
            self.status
        } else {
            200
        };
        let ctype = CONTENT_TYPES[(self.flags & 3) as usize];
        let encoding = ENCODINGS[((self.flags >> 3) & 7) as usize % ENCODINGS.len()];
        let mut resp = format!("HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\n").into_bytes();
        if let Some(e) = encoding {
            resp.extend_from_slice(format!("Content-Encoding: {e}\r\n").as_bytes());
        }
        if self.flags & 4 != 0 {
            resp.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            resp.extend_from_slice(&llmtap::http::body::encode_chunked(self.response_body, 97));
        } else {
            resp.extend_from_slice(
                format!("Content-Length: {}\r\n\r\n", self.response_body.len()).as_bytes(),
            );
            resp.extend_from_slice(self.response_body);
        }
        (req, resp)
    }
}
