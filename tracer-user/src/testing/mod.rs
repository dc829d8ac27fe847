//! Test support: recorded exchanges (cassettes, `tests/data/cassettes/`) replayed as the
//! [`StreamEvent`]s capture would produce, for unit, property, end-to-end tests and benches.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;

use crate::flow::{Comm, ConnectionId, Direction, StreamChunk, StreamEvent};
use crate::http::body::encode_chunked;

#[derive(Debug, thiserror::Error)]
pub enum CassetteError {
    #[error("reading {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("parsing {0}: {1}")]
    Json(PathBuf, serde_json::Error),
    #[error("{0}: missing or malformed field `{1}`")]
    Field(PathBuf, &'static str),
}

/// One recorded HTTP exchange.
#[derive(Clone, Debug)]
pub struct Cassette {
    pub name: String,
    pub provider: String,
    pub api: String,
    pub streaming: bool,
    pub method: String,
    pub url: String,
    pub request_headers: Vec<(String, String)>,
    pub request_body: Vec<u8>,
    pub status: u16,
    pub response_headers: Vec<(String, String)>,
    /// Response body bytes as recorded (still content-encoded).
    pub response_body: Vec<u8>,
    /// The file's `expected` block.
    pub expected: Value,
}

/// `tests/data/cassettes` of this repository.
pub fn cassette_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/cassettes")
}

/// Every `*.json` cassette in `dir`, sorted by file name.
pub fn load_all(dir: &Path) -> Result<Vec<Cassette>, CassetteError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CassetteError::Io(dir.to_path_buf(), e))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths.iter().map(|p| load_cassette(p)).collect()
}

fn headers(v: Option<&Value>) -> Vec<(String, String)> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn load_cassette(path: &Path) -> Result<Cassette, CassetteError> {
    let p = || path.to_path_buf();
    let text = std::fs::read_to_string(path).map_err(|e| CassetteError::Io(p(), e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| CassetteError::Json(p(), e))?;
    let s = |ptr: &str, field: &'static str| {
        v.pointer(ptr)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or(CassetteError::Field(p(), field))
    };
    let body_b64 = s("/response/body_b64", "response.body_b64")?;
    Ok(Cassette {
        name: path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        provider: s("/provider", "provider")?,
        api: s("/api", "api")?,
        streaming: v
            .pointer("/streaming")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        method: s("/request/method", "request.method")?,
        url: s("/request/url", "request.url")?,
        request_headers: headers(v.pointer("/request/headers")),
        request_body: s("/request/body", "request.body")?.into_bytes(),
        status: v
            .pointer("/response/status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .ok_or(CassetteError::Field(p(), "response.status"))?,
        response_headers: headers(v.pointer("/response/headers")),
        response_body: base64::engine::general_purpose::STANDARD
            .decode(body_b64)
            .map_err(|_| CassetteError::Field(p(), "response.body_b64"))?,
        expected: v.get("expected").cloned().unwrap_or(Value::Null),
    })
}

fn is_framing_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding")
}

impl Cassette {
    /// `(host[:port], path?query)` of the URL (the `#fragment` is an SDK artifact).
    pub fn host_and_target(&self) -> (String, String) {
        let url = self.url.split('#').next().unwrap_or("");
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
        match rest.find('/') {
            Some(i) => (
                rest.get(..i).unwrap_or("").to_string(),
                rest.get(i..).unwrap_or("/").to_string(),
            ),
            None => (rest.to_string(), "/".to_string()),
        }
    }

    /// Whether the recorded response used chunked transfer coding.
    pub fn response_chunked(&self) -> bool {
        self.response_headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    }

    /// The request as an HTTP/1.1 client writes it (Host added if the recording lacks it,
    /// Content-Length recomputed).
    pub fn request_bytes(&self) -> Vec<u8> {
        let (host, target) = self.host_and_target();
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, target).into_bytes();
        if !self
            .request_headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("host"))
        {
            out.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
        }
        for (k, v) in &self.request_headers {
            if !is_framing_header(k) {
                out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
            }
        }
        out.extend_from_slice(
            format!("Content-Length: {}\r\n\r\n", self.request_body.len()).as_bytes(),
        );
        out.extend_from_slice(&self.request_body);
        out
    }

    /// The response as the server sends it: chunked (chunks of `chunk_size` bytes) when the
    /// recording was chunked, else with a recomputed Content-Length.
    pub fn response_bytes(&self, chunk_size: usize) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        )
        .into_bytes();
        for (k, v) in &self.response_headers {
            if !is_framing_header(k) {
                out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
            }
        }
        if self.response_chunked() {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            out.extend_from_slice(&encode_chunked(&self.response_body, chunk_size));
        } else {
            out.extend_from_slice(
                format!("Content-Length: {}\r\n\r\n", self.response_body.len()).as_bytes(),
            );
            out.extend_from_slice(&self.response_body);
        }
        out
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

/// How to cut a replay into capture events.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub conn: ConnectionId,
    pub tid: u32,
    pub comm: String,
    /// Bytes per `SSL_write` of the request.
    pub write_size: usize,
    /// Bytes per `SSL_read` of the response.
    pub read_size: usize,
    /// Body bytes per chunk of chunked transfer coding.
    pub transfer_chunk_size: usize,
    /// Time of the first request write (ns).
    pub start_ns: u64,
    /// Time between the last request byte and the first response byte.
    pub server_latency_ns: u64,
    /// Time between successive reads (and writes).
    pub step_ns: u64,
    /// End with a `Closed` event.
    pub close: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            conn: ConnectionId {
                pid: 4242,
                conn: 0x5555_0000_1000,
            },
            tid: 4243,
            comm: "python3".to_string(),
            write_size: 16 * 1024,
            read_size: 4096,
            transfer_chunk_size: 512,
            start_ns: 1_000_000_000,
            server_latency_ns: 250_000_000,
            step_ns: 1_000_000,
            close: false,
        }
    }
}

impl ReplayOptions {
    /// Every write and read one byte, transfers in 7-byte pieces: the hardest split.
    pub fn one_byte_at_a_time() -> Self {
        ReplayOptions {
            write_size: 1,
            read_size: 1,
            transfer_chunk_size: 7,
            step_ns: 1_000,
            ..ReplayOptions::default()
        }
    }
}

/// Fewer cassettes than this in `cassette_dir()` means they were not found, not that the
/// recordings shrank.
const MIN_CASSETTES: usize = 49;

/// Runs `check` on every cassette of `cassette_dir()`, then fails listing each one that did
/// not pass.
pub fn check_every_cassette(check: impl FnMut(&Cassette) -> Result<(), String>) {
    let cassettes = load_all(&cassette_dir()).expect("cassettes load");
    assert!(
        cassettes.len() >= MIN_CASSETTES,
        "found {} cassettes",
        cassettes.len()
    );
    assert_no_failures(
        cassettes
            .iter()
            .map(check)
            .filter_map(Result::err)
            .collect(),
    );
}

/// Fails listing every failure, if there is any.
pub fn assert_no_failures(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A kernel `comm` from a name (cut to 15 bytes).
pub fn comm(name: &str) -> Comm {
    let mut c = Comm::default();
    let room = c.0.len().saturating_sub(1);
    for (dst, src) in c.0.iter_mut().zip(name.bytes().take(room)) {
        *dst = src;
    }
    c
}

/// Splits `bytes` into capture events of one direction, starting at `*now`.
pub fn chunk_events(
    bytes: &[u8],
    direction: Direction,
    size: usize,
    now: &mut u64,
    opts: &ReplayOptions,
    out: &mut Vec<StreamEvent>,
) {
    let c = comm(&opts.comm);
    for piece in bytes.chunks(size.max(1)) {
        out.push(StreamEvent::Data(StreamChunk {
            conn: opts.conn,
            direction,
            tid: opts.tid,
            comm: c,
            ts_entry_ns: *now,
            ts_ns: *now + opts.step_ns / 2,
            data: Bytes::copy_from_slice(piece),
        }));
        *now += opts.step_ns;
    }
}

/// The events of one exchange: request writes from `opts.start_ns`, then (after the server
/// latency) response reads, then `Closed` if `opts.close`.
pub fn cassette_events(c: &Cassette, opts: &ReplayOptions) -> Vec<StreamEvent> {
    let mut out = Vec::new();
    let mut now = opts.start_ns;
    chunk_events(
        &c.request_bytes(),
        Direction::Write,
        opts.write_size,
        &mut now,
        opts,
        &mut out,
    );
    now += opts.server_latency_ns;
    chunk_events(
        &c.response_bytes(opts.transfer_chunk_size),
        Direction::Read,
        opts.read_size,
        &mut now,
        opts,
        &mut out,
    );
    if opts.close {
        out.push(StreamEvent::Closed {
            conn: opts.conn,
            ts_ns: now,
        });
    }
    out
}

/// The same exchanges over HTTP/2 (test-only encoder).
pub mod h2;

/// Recorded Responses streams replayed over WebSocket (test-only encoder).
pub mod websocket;
