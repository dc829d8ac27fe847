//! `llmtap-replay`: serves recorded LLM API exchanges (tests/data/cassettes) over HTTPS, so real
//! SDKs and curl can call `https://api.openai.com/...` unmodified while llmtap traces them.
//!
//! - TLS with a per-run test CA (written to `STATE_DIR/ca.pem`) and one leaf certificate naming
//!   every provider host of the recordings; ALPN offers `h2` and `http/1.1` (`--http1-only`: only
//!   the latter).
//! - Listens on a loopback address of its own, `127.a.b.c:443` (`--listen auto`), so a client
//!   whose `/etc/hosts` maps the provider names there connects to the default HTTPS port.
//!   `STATE_DIR/hosts` is that `/etc/hosts` file; `STATE_DIR/ready` holds the address once listening.
//! - A request is matched by method and path, then scored on host, query and body (byte-equal
//!   bodies win; JSON bodies score per equal top-level key); among equal scores the recording
//!   served least often wins, so identical requests replay their recordings in order.
//! - The response has the recorded status, headers and body bytes (compressed as recorded).
//!   Streams (SSE, NDJSON, AWS event-stream) go out one event per write, `--chunk-delay-ms`
//!   apart, so time to first chunk and chunk timings are real.
//! - `--unique-ids`: each response's id gets a `-rN` suffix (N counts requests), so concurrent
//!   clients replaying one recording can each be told apart by the id they received.
//! - `--plain`: plain HTTP instead (HTTP/1.1, or h2 with prior knowledge) on `127.0.0.1` and a
//!   free port (`--listen auto`), serving every recording, `http://` ones (Ollama) included,
//!   as a local model server or gateway would: clients are pointed at `http://ADDR`.
//! - `--websocket plain|deflate|deflate-no-context-takeover`: `GET /v1/responses` with
//!   `Upgrade: websocket` is accepted (HTTP/1.1), with `permessage-deflate` (with or without
//!   context takeover) when the client offers it; each client `response.create` is matched
//!   like a `POST /v1/responses` with its fields as the body, and the recorded stream's events
//!   go out as text messages, one per write, `--chunk-delay-ms` apart (a warm-up,
//!   `"generate": false`, gets an empty response instead). Off by default: the
//!   upgrade then finds no recording (404) and clients such as the Codex CLI fall back to SSE.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use llmtap::testing::websocket::sse_payloads;
use llmtap::testing::{Cassette, load_cassette};
use llmtap_tests::websocket::{Incoming, ServerSocket, WsMode, accept_key, negotiate};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

#[derive(Parser)]
#[command(
    name = "llmtap-replay",
    about = "Replays recorded LLM API exchanges over HTTPS"
)]
struct Args {
    /// Cassette files, or directories of them (`*.json`).
    #[arg(required = true)]
    cassettes: Vec<PathBuf>,
    /// Where `ca.pem`, `hosts` and `ready` are written.
    #[arg(long)]
    state_dir: PathBuf,
    /// `IP:PORT` to listen on, or `auto` for a free `127.a.b.c:443`.
    #[arg(long, default_value = "auto")]
    listen: String,
    /// Offer only `http/1.1` through ALPN (h2 clients then fall back to HTTP/1.1).
    #[arg(long)]
    http1_only: bool,
    /// Pause before each streamed event, in milliseconds.
    #[arg(long, default_value_t = 15)]
    chunk_delay_ms: u64,
    /// Give every response a distinct id (`<recorded id>-rN`).
    #[arg(long)]
    unique_ids: bool,
    /// Serve plain HTTP (no TLS) on 127.0.0.1, every recording included.
    #[arg(long)]
    plain: bool,
    /// Answer WebSocket upgrades of `/v1/responses`: off, plain, deflate,
    /// deflate-no-context-takeover.
    #[arg(long, default_value = "off")]
    websocket: WsMode,
}

/// One recording ready to serve.
struct Recording {
    cassette: Cassette,
    host: String,
    path: String,
    query: String,
    body_json: Option<Value>,
    served: AtomicUsize,
}

struct Replay {
    recordings: Vec<Recording>,
    chunk_delay: Duration,
    unique_ids: bool,
    websocket: WsMode,
    requests: AtomicU64,
}

type ReplayBody = BoxBody<Bytes, Infallible>;

fn percent_decoded(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn split_target(target: &str) -> (String, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    (percent_decoded(path), query.to_string())
}

fn load_recordings(inputs: &[PathBuf], plain: bool) -> anyhow::Result<Vec<Recording>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("reading {}", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    let mut recordings = Vec::new();
    for file in files {
        let cassette = load_cassette(&file).with_context(|| format!("{}", file.display()))?;
        // Over TLS only HTTPS recordings: the clients reach them on port 443 under their
        // providers' names. Plain HTTP serves any recording on its own port.
        if !plain && !cassette.url.starts_with("https://") {
            log::info!("skipping {} (not an HTTPS recording)", cassette.name);
            continue;
        }
        let (authority, target) = cassette.host_and_target();
        let host = authority
            .split(':')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let (path, query) = split_target(&target);
        let body_json = serde_json::from_slice(&cassette.request_body).ok();
        recordings.push(Recording {
            cassette,
            host,
            path,
            query,
            body_json,
            served: AtomicUsize::new(0),
        });
    }
    if recordings.is_empty() {
        bail!("no recordings to serve among {inputs:?}");
    }
    Ok(recordings)
}

/// How well a request fits a recording with the same method and path (higher is better).
fn score(rec: &Recording, host: &str, query: &str, body: &[u8]) -> i64 {
    let mut score = 0;
    if rec.host == host {
        score += 10_000;
    }
    if rec.query == query {
        score += 1_000;
    }
    if rec.cassette.request_body == body {
        score += 500;
    }
    if let (Some(Value::Object(want)), Ok(Value::Object(got))) = (
        rec.body_json.as_ref(),
        serde_json::from_slice::<Value>(body),
    ) {
        let keys: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
        for key in keys {
            score += if want.get(key) == got.get(key) { 1 } else { -1 };
        }
    }
    score
}

impl Replay {
    fn find(&self, method: &str, host: &str, target: &str, body: &[u8]) -> Option<&Recording> {
        let (path, query) = split_target(target);
        self.recordings
            .iter()
            .enumerate()
            .filter(|(_, r)| r.cassette.method.eq_ignore_ascii_case(method) && r.path == path)
            .max_by_key(|(i, r)| {
                (
                    score(r, host, &query, body),
                    std::cmp::Reverse(r.served.load(Ordering::Relaxed)),
                    std::cmp::Reverse(*i),
                )
            })
            .map(|(_, r)| r)
    }

    async fn handle(self: Arc<Self>, req: Request<hyper::body::Incoming>) -> Response<ReplayBody> {
        let is_upgrade = req
            .headers()
            .get(hyper::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        if is_upgrade && self.websocket != WsMode::Off && req.method() == hyper::Method::GET {
            return self.upgrade(req);
        }
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let method = req.method().as_str().to_string();
        let version = format!("{:?}", req.version());
        let target = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        // HTTP/2 carries the host in :authority (the URI), HTTP/1.1 in the Host header.
        let host = req
            .uri()
            .host()
            .map(str::to_string)
            .or_else(|| {
                req.headers()
                    .get(hyper::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(|h| h.split(':').next().unwrap_or("").to_string())
            })
            .unwrap_or_default()
            .to_ascii_lowercase();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                log::warn!("request {n}: reading the body failed: {e}");
                return plain(StatusCode::BAD_REQUEST, "unreadable request body");
            }
        };
        let Some(rec) = self.find(&method, &host, &target, &body) else {
            log::warn!("request {n}: no recording for {method} {host}{target} ({version})");
            return plain(
                StatusCode::NOT_FOUND,
                r#"{"error":{"type":"replay_no_match","message":"no recording matches this request"}}"#,
            );
        };
        rec.served.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "request {n}: {method} {host}{target} ({version}) -> {}",
            rec.cassette.name
        );
        self.respond(rec, n)
    }

    /// Accepts a WebSocket upgrade and serves `response.create` messages on it.
    fn upgrade(self: Arc<Self>, mut req: Request<hyper::body::Incoming>) -> Response<ReplayBody> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let Some(key) = header("sec-websocket-key") else {
            return plain(StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key");
        };
        let offer = header("sec-websocket-extensions");
        let extensions = negotiate(self.websocket, offer.as_deref());
        let host = header("host")
            .map(|h| h.split(':').next().unwrap_or("").to_ascii_lowercase())
            .unwrap_or_default();
        let path = req.uri().path().to_string();
        log::info!("WebSocket upgrade {host}{path}: offered {offer:?}, agreed {extensions:?}");
        let on_upgrade = hyper::upgrade::on(&mut req);
        let agreed = extensions.clone();
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket = ServerSocket::new(TokioIo::new(upgraded), agreed.as_deref());
                    if let Err(e) = self.serve_socket(socket, &host, &path).await {
                        log::debug!("WebSocket {host}{path}: {e}");
                    }
                }
                Err(e) => log::warn!("WebSocket upgrade {host}{path} failed: {e}"),
            }
        });
        let mut builder = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(hyper::header::UPGRADE, "websocket")
            .header(hyper::header::CONNECTION, "Upgrade")
            .header("sec-websocket-accept", accept_key(&key));
        if let Some(e) = &extensions {
            builder = builder.header("sec-websocket-extensions", e.as_str());
        }
        builder
            .body(Full::new(Bytes::new()).boxed())
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "bad upgrade"))
    }

    /// Answers each `response.create` with the best recording's events, in order.
    async fn serve_socket<S>(
        &self,
        mut socket: ServerSocket<S>,
        host: &str,
        path: &str,
    ) -> std::io::Result<()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        while let Some(message) = socket.recv().await? {
            let text = match message {
                Incoming::Text(t) => t,
                Incoming::Binary(_) => continue,
                Incoming::Close => {
                    socket.close().await?;
                    return Ok(());
                }
            };
            let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(&text) else {
                log::warn!("WebSocket {host}{path}: a message that is not a JSON object");
                continue;
            };
            if fields
                .remove("type")
                .and_then(|t| t.as_str().map(str::to_string))
                .as_deref()
                != Some("response.create")
            {
                continue;
            }
            let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
            if fields.get("generate") == Some(&Value::Bool(false)) {
                // A warm-up (the Codex CLI sends one on a new socket): no generation, so no
                // recording; the response opens and completes with no output.
                log::info!("request {n}: WS response.create {host}{path} (websocket) -> warm-up");
                let model = fields.get("model").cloned().unwrap_or(Value::Null);
                let response = serde_json::json!({
                    "id": format!("resp_replay_warmup_{n}"),
                    "object": "response",
                    "model": model,
                    "output": [],
                });
                for (kind, status) in [
                    ("response.created", "in_progress"),
                    ("response.completed", "completed"),
                ] {
                    let mut r = response.clone();
                    r["status"] = Value::from(status);
                    let event = serde_json::json!({"type": kind, "response": r});
                    socket.send_text(event.to_string().as_bytes()).await?;
                }
                continue;
            }
            // Over WebSocket the events always stream; the recordings asked for it.
            fields.insert("stream".into(), Value::Bool(true));
            let body = serde_json::to_vec(&Value::Object(fields)).unwrap_or_default();
            let Some(rec) = self.find("POST", host, path, &body) else {
                log::warn!("request {n}: no recording for WebSocket {host}{path}");
                let error = r#"{"type":"error","status":404,"error":{"type":"replay_no_match","message":"no recording matches this request"}}"#;
                socket.send_text(error.as_bytes()).await?;
                continue;
            };
            rec.served.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "request {n}: WS response.create {host}{path} (websocket) -> {}",
                rec.cassette.name
            );
            let mut events = sse_payloads(&rec.cassette.response_body);
            if self.unique_ids
                && let Some(id) = rec.cassette.expected["response_id"]
                    .as_str()
                    .filter(|s| !s.is_empty())
            {
                let new_id = format!("{id}-r{n}");
                for e in &mut events {
                    *e = replace_all(e, id.as_bytes(), new_id.as_bytes());
                }
            }
            for event in events {
                if self.chunk_delay.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(self.chunk_delay).await;
                }
                socket.send_text(&event).await?;
            }
        }
        Ok(())
    }

    fn respond(&self, rec: &Recording, n: u64) -> Response<ReplayBody> {
        let c = &rec.cassette;
        let header = |name: &str| {
            c.response_headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let content_type = header("content-type").unwrap_or_default();
        let encoded = header("content-encoding").is_some_and(|e| e != "identity");
        let mut body = c.response_body.clone();
        let mut assigned_id = None;
        let is_eventstream = content_type.contains("amazon.eventstream");
        if self.unique_ids
            && !encoded
            && !is_eventstream
            && let Some(id) = c.expected["response_id"].as_str().filter(|s| !s.is_empty())
        {
            let new_id = format!("{id}-r{n}");
            body = replace_all(&body, id.as_bytes(), new_id.as_bytes());
            assigned_id = Some(new_id);
        }
        let mut builder = Response::builder().status(c.status);
        for (name, value) in &c.response_headers {
            if is_framing_or_hop_header(name) {
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                builder = builder.header(name, value);
            }
        }
        if let Some(id) = &assigned_id {
            builder = builder.header("x-llmtap-replay-response-id", id.as_str());
        }
        let streamed = c.status == 200
            && !encoded
            && (c.streaming
                || content_type.contains("event-stream")
                || content_type.contains("ndjson"));
        let body: ReplayBody = if streamed {
            let pieces = if is_eventstream {
                eventstream_frames(&body)
            } else if content_type.contains("ndjson") {
                split_after(&body, b"\n")
            } else {
                sse_events(&body)
            };
            paced(pieces, self.chunk_delay)
        } else {
            Full::new(Bytes::from(body)).boxed()
        };
        builder.body(body).unwrap_or_else(|e| {
            log::warn!("request {n}: recorded response unusable: {e}");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "bad recording")
        })
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<ReplayBody> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    *resp.status_mut() = status;
    resp
}

/// The recording describes its own wire framing; hyper frames the replayed body itself, and
/// HTTP/2 forbids connection-specific headers.
fn is_framing_or_hop_header(name: &str) -> bool {
    [
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len() + 64);
    let mut rest = haystack;
    while let Some(i) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to);
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Splits after every occurrence of `sep` (the separator stays with the piece before it).
fn split_after(body: &[u8], sep: &[u8]) -> Vec<Bytes> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + sep.len() <= body.len() {
        if &body[i..i + sep.len()] == sep {
            pieces.push(Bytes::copy_from_slice(&body[start..i + sep.len()]));
            start = i + sep.len();
            i = start;
        } else {
            i += 1;
        }
    }
    if start < body.len() {
        pieces.push(Bytes::copy_from_slice(&body[start..]));
    }
    pieces
}

/// SSE events: each piece ends with its blank line (LF or CRLF line endings).
fn sse_events(body: &[u8]) -> Vec<Bytes> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < body.len() {
        let end = if body[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if body[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        };
        match end {
            Some(end) => {
                pieces.push(Bytes::copy_from_slice(&body[start..end]));
                start = end;
                i = end;
            }
            None => i += 1,
        }
    }
    if start < body.len() {
        pieces.push(Bytes::copy_from_slice(&body[start..]));
    }
    pieces
}

/// AWS event-stream messages: each starts with its 4-byte big-endian total length.
fn eventstream_frames(body: &[u8]) -> Vec<Bytes> {
    let mut pieces = Vec::new();
    let mut rest = body;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < 16 || len > rest.len() {
            break;
        }
        pieces.push(Bytes::copy_from_slice(&rest[..len]));
        rest = &rest[len..];
    }
    if !rest.is_empty() {
        pieces.push(Bytes::copy_from_slice(rest));
    }
    pieces
}

/// A body that yields each piece after `delay`: one write (h1 chunk, h2 DATA frame) each.
fn paced(pieces: Vec<Bytes>, delay: Duration) -> ReplayBody {
    let stream = futures::stream::unfold(pieces.into_iter(), move |mut rest| async move {
        let piece = rest.next()?;
        if delay.is_zero() {
            // tokio's timer has millisecond granularity: a zero sleep would still cost ~1 ms.
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(delay).await;
        }
        Some((Ok::<_, Infallible>(Frame::data(piece)), rest))
    });
    StreamBody::new(stream).boxed()
}

struct Pki {
    ca_pem: String,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn make_pki(hosts: &[String], ip: IpAddr) -> anyhow::Result<Pki> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "llmtap replay test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut names: Vec<String> = hosts.to_vec();
    names.push("localhost".into());
    let mut leaf_params = CertificateParams::new(names)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "llmtap replay server");
    leaf_params.subject_alt_names.push(SanType::IpAddress(ip));
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        chain: vec![leaf.der().clone(), ca_cert.der().clone()],
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    })
}

/// Binds the requested address, or the first free `127.a.b.c:443` derived from our pid (plain
/// HTTP: a free port on 127.0.0.1).
async fn bind(listen: &str, plain: bool) -> anyhow::Result<TcpListener> {
    if listen == "auto" && plain {
        return TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding 127.0.0.1");
    }
    if listen != "auto" {
        let addr: SocketAddr = listen
            .parse()
            .with_context(|| format!("--listen {listen}"))?;
        return TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"));
    }
    let seed = std::process::id();
    for attempt in 0..512u32 {
        let v = seed
            .wrapping_mul(2_654_435_761)
            .wrapping_add(attempt * 7919);
        let ip = Ipv4Addr::new(
            127,
            100 + (v % 100) as u8,
            (v >> 8) as u8,
            2 + (v >> 16) as u8 % 250,
        );
        match TcpListener::bind((ip, 443)).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e).with_context(|| format!("binding {ip}:443")),
        }
    }
    bail!("no free 127.x.y.z:443 address found")
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut f = std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let recordings = load_recordings(&args.cassettes, args.plain)?;
    let hosts: Vec<String> = recordings
        .iter()
        .map(|r| r.host.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    let listener = bind(&args.listen, args.plain).await?;
    let addr = listener.local_addr()?;
    let replay = Arc::new(Replay {
        recordings,
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
        unique_ids: args.unique_ids,
        websocket: args.websocket,
        requests: AtomicU64::new(0),
    });
    if args.plain {
        std::fs::create_dir_all(&args.state_dir)?;
        log::info!(
            "serving {} recordings on http://{addr}",
            replay.recordings.len()
        );
        write_file(&args.state_dir.join("ready"), &format!("{addr}\n"))?;
        return serve_plain(listener, replay).await;
    }
    let pki = make_pki(&hosts, addr.ip())?;
    std::fs::create_dir_all(&args.state_dir)?;
    write_file(&args.state_dir.join("ca.pem"), &pki.ca_pem)?;
    let mut hosts_file = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for host in &hosts {
        hosts_file.push_str(&format!("{} {host}\n", addr.ip()));
    }
    write_file(&args.state_dir.join("hosts"), &hosts_file)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(pki.chain, pki.key)?;
    tls.alpn_protocols = if args.http1_only {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    log::info!(
        "serving {} recordings for {} hosts on https://{addr}",
        replay.recordings.len(),
        hosts.len()
    );
    // Written last: its presence means the CA, hosts file and socket are all ready.
    write_file(&args.state_dir.join("ready"), &format!("{addr}\n"))?;

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = sigterm.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        // As API front ends do (nginx's default): each stream event leaves at once instead of
        // waiting, under Nagle's algorithm, for the client's delayed ACK of the one before.
        if let Err(e) = tcp.set_nodelay(true) {
            log::warn!("TCP_NODELAY on {peer}: {e}");
        }
        let acceptor = acceptor.clone();
        let replay = replay.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    log::warn!("TLS handshake with {peer} failed: {e}");
                    return;
                }
            };
            let alpn = tls
                .get_ref()
                .1
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_else(|| "none".into());
            log::info!("connection from {peer}: TLS established, ALPN {alpn}");
            let service = hyper::service::service_fn(move |req| {
                let replay = replay.clone();
                async move { Ok::<_, Infallible>(replay.handle(req).await) }
            });
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                log::debug!("connection from {peer}: {e}");
            }
        });
    }
}

/// Serves plain HTTP until SIGTERM or Ctrl-C (HTTP/1.1, or h2 with prior knowledge).
async fn serve_plain(listener: TcpListener, replay: Arc<Replay>) -> anyhow::Result<()> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = sigterm.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        if let Err(e) = tcp.set_nodelay(true) {
            log::warn!("TCP_NODELAY on {peer}: {e}");
        }
        let replay = replay.clone();
        tokio::spawn(async move {
            log::info!("connection from {peer}: plain HTTP");
            let service = hyper::service::service_fn(move |req| {
                let replay = replay.clone();
                async move { Ok::<_, Infallible>(replay.handle(req).await) }
            });
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await
            {
                log::debug!("connection from {peer}: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_keep_their_blank_lines() {
        let pieces = sse_events(b"data: a\n\ndata: b\r\n\r\ndata: c");
        assert_eq!(pieces, vec!["data: a\n\n", "data: b\r\n\r\n", "data: c"]);
    }

    #[test]
    fn eventstream_frames_split_on_declared_length() {
        let mut body = Vec::new();
        for len in [16u32, 20] {
            body.extend_from_slice(&len.to_be_bytes());
            body.extend(std::iter::repeat_n(0u8, len as usize - 4));
        }
        let pieces = eventstream_frames(&body);
        assert_eq!(pieces.iter().map(Bytes::len).collect::<Vec<_>>(), [16, 20]);
    }

    #[test]
    fn replace_all_rewrites_every_occurrence() {
        assert_eq!(replace_all(b"id x id", b"id", b"id-r1"), b"id-r1 x id-r1");
    }
}
