//! The replay harness: recorded LLM API exchanges served over HTTPS by `llmtap-replay`
//! (src/bin/llmtap-replay.rs), real clients that reach it under the providers' real host names,
//! and the check that llmtap's span for a call equals the recording's `expected` block.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{ChildGuard, TempDir, repo_root};

/// The API key the clients send: it must never appear in llmtap's output or log.
pub const PLANTED_API_KEY: &str = "sk-llmtap-planted-0d9c5e2a71f34b86";

/// The recordings a real client can reproduce: every HTTPS one (the Ollama recordings are
/// plain HTTP to 127.0.0.1:11434, which llmtap, a TLS tracer, does not see).
pub fn https_cassettes() -> Vec<PathBuf> {
    let dir = repo_root().join("tests/data/cassettes");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .filter(|p| {
                    load_json(p).is_ok_and(|c| {
                        c["request"]["url"]
                            .as_str()
                            .is_some_and(|u| u.starts_with("https://"))
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

pub fn cassette_path(name: &str) -> PathBuf {
    repo_root().join(format!("tests/data/cassettes/{name}.json"))
}

pub fn load_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}", path.display()))
}

/// Where the replay server binary is: `LLMTAP_REPLAY_BIN`, else next to the test executables
/// (cargo builds a package's binaries for its integration tests).
pub fn replay_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("LLMTAP_REPLAY_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("llmtap-replay")
}

#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Offer only `http/1.1` through ALPN.
    pub http1_only: bool,
    /// Give every response its own id (`<recorded id>-rN`).
    pub unique_ids: bool,
    pub chunk_delay_ms: u64,
    /// Plain HTTP on `127.0.0.1` and a free port, every recording served (see
    /// [`ReplayServer::plain_url`]).
    pub plain: bool,
    /// Answer WebSocket upgrades of `/v1/responses` (`--websocket`).
    pub websocket: crate::websocket::WsMode,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            http1_only: false,
            unique_ids: false,
            chunk_delay_ms: 10,
            plain: false,
            websocket: crate::websocket::WsMode::Off,
        }
    }
}

/// A running `llmtap-replay` on its own `127.a.b.c:443`.
pub struct ReplayServer {
    child: ChildGuard,
    dir: TempDir,
    addr: SocketAddr,
}

impl ReplayServer {
    pub fn start(cassettes: &[PathBuf]) -> anyhow::Result<Self> {
        Self::start_with(cassettes, &ReplayOptions::default())
    }

    pub fn start_with(cassettes: &[PathBuf], opts: &ReplayOptions) -> anyhow::Result<Self> {
        let dir = TempDir::new("replay")?;
        let mut cmd = Command::new(replay_bin());
        cmd.arg("--state-dir")
            .arg(dir.path())
            .arg("--chunk-delay-ms")
            .arg(opts.chunk_delay_ms.to_string())
            .args(cassettes)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("server.log"))?);
        if opts.http1_only {
            cmd.arg("--http1-only");
        }
        if opts.unique_ids {
            cmd.arg("--unique-ids");
        }
        if opts.plain {
            cmd.arg("--plain");
        }
        let websocket = match opts.websocket {
            crate::websocket::WsMode::Off => "off",
            crate::websocket::WsMode::Plain => "plain",
            crate::websocket::WsMode::Deflate => "deflate",
            crate::websocket::WsMode::DeflateNoContextTakeover => "deflate-no-context-takeover",
        };
        cmd.args(["--websocket", websocket]);
        let child = ChildGuard(
            cmd.spawn()
                .with_context(|| format!("starting {}", replay_bin().display()))?,
        );
        let mut server = Self {
            child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 443)),
        };
        let ready = server.dir.path().join("ready");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(addr) = text.trim().parse()
            {
                server.addr = addr;
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.0.try_wait() {
                bail!("llmtap-replay exited ({status}):\n{}", server.log());
            }
            if Instant::now() > deadline {
                bail!("llmtap-replay did not become ready:\n{}", server.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A recording's URL on this (plain HTTP) server: its path and query under `http://ADDR`.
    pub fn plain_url(&self, cassette: &Value) -> String {
        let url = cassette["request"]["url"].as_str().unwrap_or_default();
        let url = url.split('#').next().unwrap_or(url);
        let target = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
            .unwrap_or("/");
        format!("http://{}{target}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn hosts_path(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The recording served for each request so far, in order, with the protocol version.
    pub fn served(&self) -> Vec<(String, String)> {
        self.log()
            .lines()
            .filter_map(|line| {
                let (head, cassette) = line.split_once(" -> ")?;
                let version = head.rsplit_once('(')?.1.trim_end_matches(')');
                Some((cassette.trim().to_string(), version.to_string()))
            })
            .collect()
    }

    /// `program` run as the replay server's client: in a private mount namespace whose
    /// `/etc/hosts` sends the providers' host names to the server, trusting the test CA, so it
    /// calls `https://api.openai.com/...` unmodified. `unshare` and `sh` exec into the program,
    /// so the child's pid is the client's own.
    pub fn client_command(&self, program: impl AsRef<OsStr>) -> Command {
        let ca = self.ca_pem_path();
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
            .arg(self.hosts_path())
            .arg(program)
            .env("SSL_CERT_FILE", &ca)
            .env("REQUESTS_CA_BUNDLE", &ca)
            .env("CURL_CA_BUNDLE", &ca)
            .env("NODE_EXTRA_CA_CERTS", &ca)
            .env("LLMTAP_TEST_API_KEY", PLANTED_API_KEY);
        cmd
    }
}

/// What a client printed and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOutcome {
    pub pid: u32,
    pub stdout: String,
    pub stderr: String,
    pub code: Option<i32>,
}

impl ClientOutcome {
    /// What the application visibly did: output and exit code (not the pid).
    pub fn visible(&self) -> (&str, Option<i32>) {
        (&self.stdout, self.code)
    }
}

/// Runs a client to completion (bounded: killed after 120 s).
pub fn run_client(cmd: &mut Command) -> anyhow::Result<ClientOutcome> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: signal 0 only probes whether our child still exists.
            if unsafe { libc::kill(pid as i32, 0) } != 0 {
                return;
            }
        }
        // SAFETY: plain kill(2) of our own child that overran its time.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let out = child.wait_with_output()?;
    let _ = watchdog.join();
    Ok(ClientOutcome {
        pid,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    })
}

/// curl sending the recorded request byte for byte (method, headers, body), with the planted
/// key in place of the recording's redacted credential headers.
pub fn curl_command(server: &ReplayServer, cassette: &Value, http2: bool) -> Command {
    let url = cassette["request"]["url"].as_str().unwrap_or_default();
    let url = url.split('#').next().unwrap_or(url).to_string();
    curl_request(server.client_command("curl"), cassette, http2, &url)
}

/// [`curl_command`] against a plain-HTTP replay server: HTTP/1.1, or with `h2c` HTTP/2 with
/// prior knowledge (the connection opens with the h2 preface).
pub fn curl_plain_command(server: &ReplayServer, cassette: &Value, h2c: bool) -> Command {
    let mut cmd = Command::new("curl");
    cmd.env("LLMTAP_TEST_API_KEY", PLANTED_API_KEY);
    let mut cmd = curl_request(cmd, cassette, false, &server.plain_url(cassette));
    if h2c {
        // After curl_request's `--http1.1`: the last protocol option wins.
        cmd.arg("--http2-prior-knowledge");
    }
    cmd
}

fn curl_request(mut cmd: Command, cassette: &Value, http2: bool, url: &str) -> Command {
    cmd.args(["-sS", "--no-progress-meter"]);
    cmd.arg(if http2 { "--http2" } else { "--http1.1" });
    let req = &cassette["request"];
    cmd.arg("-X").arg(req["method"].as_str().unwrap_or("POST"));
    if let Some(headers) = req["headers"].as_object() {
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            // curl frames the body and sets Host itself; HTTP/2 forbids connection headers.
            if [
                "host",
                "content-length",
                "transfer-encoding",
                "connection",
                "keep-alive",
            ]
            .contains(&lower.as_str())
            {
                continue;
            }
            let value = value.as_str().unwrap_or_default();
            let value = if value == "REDACTED" {
                match lower.as_str() {
                    "authorization" => format!("Bearer {PLANTED_API_KEY}"),
                    _ => PLANTED_API_KEY.to_string(),
                }
            } else {
                value.to_string()
            };
            cmd.arg("-H").arg(format!("{name}: {value}"));
        }
    }
    let body = req["body"].as_str().unwrap_or_default();
    if !body.is_empty() {
        cmd.arg("--data-binary").arg(body);
    }
    cmd.arg(url);
    cmd
}

/// The Python SDK client (tests/clients/sdk_client.py) in the project's virtualenv.
pub fn python_sdk_command(server: &ReplayServer, cassette: &Path, extra: &[&str]) -> Command {
    let mut cmd = server.client_command(repo_root().join("tests/.venv/bin/python3"));
    cmd.arg(repo_root().join("tests/clients/sdk_client.py"))
        .arg(cassette)
        .args(extra);
    cmd
}

/// The Python `openai` SDK client against a plain-HTTP replay server, as an application calls
/// an OpenAI-compatible model server (`base_url="http://HOST:PORT/v1"`).
pub fn python_sdk_plain_command(server: &ReplayServer, cassette: &Path) -> Command {
    let mut cmd = Command::new(repo_root().join("tests/.venv/bin/python3"));
    cmd.arg(repo_root().join("tests/clients/sdk_client.py"))
        .arg(cassette)
        .arg("--base-url")
        .arg(format!("http://{}", server.addr()))
        .env("LLMTAP_TEST_API_KEY", PLANTED_API_KEY);
    cmd
}

/// The official `ollama` Python SDK (tests/clients/ollama_client.py) against a plain-HTTP
/// replay server.
pub fn ollama_sdk_command(server: &ReplayServer, cassette: &Path) -> Command {
    let mut cmd = Command::new(repo_root().join("tests/.venv/bin/python3"));
    cmd.arg(repo_root().join("tests/clients/ollama_client.py"))
        .arg(cassette)
        .arg(format!("http://{}", server.addr()));
    cmd
}

/// The Node `openai` SDK client (tests/clients/sdk_client.mjs) on the system's node.
pub fn node_sdk_command(server: &ReplayServer, cassette: &Path) -> Command {
    let mut cmd = server.client_command("node");
    cmd.arg(repo_root().join("tests/clients/sdk_client.mjs"))
        .arg(cassette);
    cmd
}

/// The SDK clients installed by `cargo xtask setup`, or why not.
pub fn sdk_clients_missing() -> Option<String> {
    let venv = repo_root().join("tests/.venv/bin/python3");
    if !venv.exists() {
        return Some(format!(
            "{} missing: run `cargo xtask setup`",
            venv.display()
        ));
    }
    let node = repo_root().join("tests/node_modules/openai");
    if !node.exists() {
        return Some(format!(
            "{} missing: run `cargo xtask setup`",
            node.display()
        ));
    }
    None
}

/// Differences between the span's attributes and the recording's `expected` block (empty when
/// they agree), plus the checks every traced call must pass: the provider, the real host name
/// as `server.address`, the protocol version, no incomplete/truncated flags, and for streams
/// `0 < time to first chunk < duration`.
pub fn span_differences(span: &Value, cassette: &Value, protocol: &str) -> Vec<String> {
    let url = cassette["request"]["url"].as_str().unwrap_or_default();
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_default();
    span_differences_at(span, cassette, protocol, host)
}

/// [`span_differences`] for a call that reached the recording at `server_address` (the plain
/// replay server's IP).
pub fn span_differences_at(
    span: &Value,
    cassette: &Value,
    protocol: &str,
    server_address: &str,
) -> Vec<String> {
    let attrs = &span["attributes"];
    let expected = &cassette["expected"];
    let mut diffs = Vec::new();
    let mut check = |what: &str, got: &Value, want: &Value| {
        if got != want {
            diffs.push(format!("{what}: expected {want}, got {got}"));
        }
    };
    let absent = Value::Null;
    let attr = |key: &str| attrs.get(key).unwrap_or(&absent);
    check(
        "gen_ai.provider.name",
        attr("gen_ai.provider.name"),
        &cassette["provider"],
    );
    for (key, field) in [
        ("gen_ai.operation.name", "operation"),
        ("gen_ai.request.model", "request_model"),
        ("gen_ai.response.model", "response_model"),
        ("gen_ai.response.id", "response_id"),
        ("gen_ai.response.finish_reasons", "finish_reasons"),
        ("gen_ai.usage.input_tokens", "input_tokens"),
        ("gen_ai.usage.output_tokens", "output_tokens"),
        ("gen_ai.usage.cache_read.input_tokens", "cache_read_tokens"),
        (
            "gen_ai.usage.cache_creation.input_tokens",
            "cache_creation_tokens",
        ),
        ("gen_ai.usage.reasoning.output_tokens", "reasoning_tokens"),
        ("llmtap.stream.chunks", "stream_chunks"),
    ] {
        check(key, attr(key), &expected[field]);
    }
    match expected["error"].as_object() {
        None => check("error.type", attr("error.type"), &absent),
        Some(error) => {
            let status = error.get("http_status").cloned().unwrap_or(Value::Null);
            let want_type = match error.get("body_type") {
                Some(Value::String(t)) => Value::from(t.clone()),
                _ => Value::from(status.to_string()),
            };
            check("error.type", attr("error.type"), &want_type);
            check(
                "http.response.status_code",
                attr("http.response.status_code"),
                &status,
            );
        }
    }
    check(
        "server.address",
        attr("server.address"),
        &Value::from(server_address),
    );
    check(
        "network.protocol.version",
        attr("network.protocol.version"),
        &Value::from(protocol),
    );
    for flag in ["llmtap.call.incomplete", "llmtap.call.truncated"] {
        check(flag, attr(flag), &absent);
    }
    let streamed = cassette["streaming"].as_bool() == Some(true)
        && !expected["stream_chunks"].is_null()
        && expected["stream_chunks"].as_u64() != Some(0);
    if streamed {
        let duration_s = span["end_time_unix_nano"]
            .as_u64()
            .zip(span["start_time_unix_nano"].as_u64())
            .map(|(end, start)| end.saturating_sub(start) as f64 / 1e9);
        let ttfc = attr("gen_ai.response.time_to_first_chunk").as_f64();
        match (ttfc, duration_s) {
            (Some(t), Some(d)) if t > 0.0 && t < d => {}
            _ => diffs.push(format!(
                "stream timing: expected 0 < time_to_first_chunk < duration, got {ttfc:?} and {duration_s:?}"
            )),
        }
    }
    diffs
}

/// The spans of process `pid`.
/// The call spans (one per LLM call, kind CLIENT) of a process: agent turns (`invoke_agent`)
/// and tool executions (`execute_tool`) llmtap adds around them are left to [`agent_spans_of`],
/// MCP requests to [`mcp_spans_of`].
pub fn spans_of(spans: &[Value], pid: u32) -> Vec<&Value> {
    spans
        .iter()
        .filter(|s| s["resource"]["process.pid"].as_u64() == Some(u64::from(pid)))
        .filter(|s| s["kind"] != "INTERNAL")
        .filter(|s| s["attributes"]["mcp.method.name"].is_null())
        .collect()
}

/// The MCP client spans (one per JSON-RPC request or notification) of a process.
pub fn mcp_spans_of(spans: &[Value], pid: u32) -> Vec<&Value> {
    spans
        .iter()
        .filter(|s| s["resource"]["process.pid"].as_u64() == Some(u64::from(pid)))
        .filter(|s| !s["attributes"]["mcp.method.name"].is_null())
        .collect()
}

/// The `invoke_agent` and `execute_tool` spans (kind INTERNAL) of a process.
pub fn agent_spans_of(spans: &[Value], pid: u32) -> Vec<&Value> {
    spans
        .iter()
        .filter(|s| s["resource"]["process.pid"].as_u64() == Some(u64::from(pid)))
        .filter(|s| s["kind"] == "INTERNAL")
        .collect()
}

impl ReplayServer {
    /// TLS connections the server accepted so far.
    pub fn connections(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("TLS established"))
            .count()
    }
}

/// One `llmtap run` at a time per test binary: each instance traces every process, so two at
/// once would only make each other's runs harder to read.
static LLMTAP_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `llmtap run --output jsonl=FILE` as a subprocess, ready once its hooks are attached.
pub struct LlmtapRun {
    child: ChildGuard,
    jsonl: PathBuf,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    _dir: TempDir,
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl LlmtapRun {
    pub fn start(extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_configured(extra_args, "info", &[])
    }

    /// [`LlmtapRun::start`] with `RUST_LOG` set to `log_filter`.
    pub fn start_logging(extra_args: &[&str], log_filter: &str) -> anyhow::Result<Self> {
        Self::start_configured(extra_args, log_filter, &[])
    }

    /// Same, with these environment variables set for llmtap (`OTEL_*`, ...).
    pub fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_configured(extra_args, "info", env)
    }

    fn start_configured(
        extra_args: &[&str],
        log_filter: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        use std::io::BufRead as _;
        let lock = LLMTAP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = TempDir::new("llmtap-run")?;
        let jsonl = dir.path().join("spans.jsonl");
        let mut child = Command::new(crate::llmtap_bin())
            .arg("run")
            .arg("--output")
            .arg(format!("jsonl={}", jsonl.display()))
            .args(extra_args)
            .envs(env.iter().copied())
            // LLMTAP_TEST_LOG: a more verbose log when debugging a test.
            .env(
                "RUST_LOG",
                std::env::var("LLMTAP_TEST_LOG").unwrap_or_else(|_| log_filter.to_string()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", crate::llmtap_bin().display()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        let child = ChildGuard(child);
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("tracing LLM calls")
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let log = log.lock().map(|l| l.clone()).unwrap_or_default();
            bail!("llmtap run did not start:\n{log}");
        }
        Ok(Self {
            child,
            jsonl,
            log,
            _dir: dir,
            _lock: lock,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn jsonl_text(&self) -> String {
        std::fs::read_to_string(&self.jsonl).unwrap_or_default()
    }

    pub fn spans_now(&self) -> Vec<Value> {
        self.jsonl_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (bounded, 30 s) until `done` holds for the spans written so far.
    pub fn wait_for(&self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans_now();
            if done(&spans) || Instant::now() > deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: llmtap dies without flushing or detaching (its probes go with its fds).
    pub fn kill(mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }

    /// Stops llmtap (SIGTERM flushes what it holds) and returns every span it wrote, the raw
    /// JSONL and its log.
    pub fn stop(mut self) -> (Vec<Value>, String, String) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.0.id() as i32, libc::SIGTERM) };
        // Detaching every probe takes seconds on a loaded 2-CPU VM: the exit summary comes
        // after it, and tests read that summary.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(100));
        (self.spans_now(), self.jsonl_text(), self.log_text())
    }
}

impl LlmtapRun {
    /// Runs `warm_up` (a short command of the program under test) and waits (bounded, 30 s)
    /// until llmtap says it hooked a file whose path contains `hooked_path`. A program llmtap
    /// has never seen is analysed and hooked within a few hundred milliseconds of its exec; a
    /// client that makes its call sooner misses it (README, *What gets hooked, and when*).
    /// Tests of what is captured start once the hooks are in place.
    pub fn warm_up(&self, warm_up: &mut Command, hooked_path: &str) -> anyhow::Result<()> {
        let _ = warm_up
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("running {warm_up:?}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self
                .log_text()
                .lines()
                .any(|l| l.contains(" hooked ") && l.contains(hooked_path))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "llmtap did not hook {hooked_path} after {warm_up:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) until `n` spans were written, then stops llmtap; returns every span and
    /// its log.
    pub fn stop_after(self, n: usize) -> (Vec<Value>, String) {
        self.wait_for(|spans| spans.len() >= n);
        let (spans, _, log) = self.stop();
        (spans, log)
    }
}

/// Exactly one span of process `pid` among `spans`, equal to the recording's `expected`
/// values over HTTP/1.1 (see [`span_differences`]).
pub fn assert_one_span_matches_cassette(spans: &[Value], pid: u32, cassette: &Value, log: &str) {
    let ours = spans_of(spans, pid);
    assert_eq!(ours.len(), 1, "one span for pid {pid}: {spans:#?}\n{log}");
    let diffs = span_differences(ours[0], cassette, "1.1");
    assert!(diffs.is_empty(), "{diffs:#?}\n{:#}", ours[0]);
}
