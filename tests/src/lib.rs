//! Harness for llmtap's end-to-end tests: a test-owned TLS server, real clients, and llmtap's
//! tracer running for real (eBPF). Tests that need eBPF call [`require_ebpf`] first: it skips
//! them with a clear message when eBPF is unavailable, unless `LLMTAP_REQUIRE_EBPF=1`.

pub mod replay;
pub mod websocket;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use llmtap::capture::{
    CaptureEvent, ConnectionId, Direction, StreamAssembler, StreamEvent, Tracer, TracerConfig,
};

/// Repository root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Whether eBPF tests must run (CI sets `LLMTAP_REQUIRE_EBPF=1`).
pub fn ebpf_required() -> bool {
    std::env::var("LLMTAP_REQUIRE_EBPF").is_ok_and(|v| v == "1")
}

/// Returns `Some(reason)` when eBPF tracing cannot work here.
pub fn ebpf_unavailable_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("kernel BTF (/sys/kernel/btf/vmlinux) not available".into());
    }
    None
}

/// Skips (returns false) or fails the calling test when eBPF is unavailable.
pub fn require_ebpf(test: &str) -> bool {
    match ebpf_unavailable_reason() {
        None => true,
        Some(reason) if ebpf_required() => {
            panic!("{test}: eBPF required (LLMTAP_REQUIRE_EBPF=1) but unavailable: {reason}")
        }
        Some(reason) => {
            eprintln!(
                "SKIPPED {test}: needs eBPF ({reason}); set LLMTAP_REQUIRE_EBPF=1 to fail instead"
            );
            false
        }
    }
}

/// A self-signed certificate and key in a temporary directory.
pub struct SelfSigned {
    pub dir: TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl SelfSigned {
    pub fn generate() -> anyhow::Result<Self> {
        let dir = TempDir::new("cert")?;
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running openssl (installed by `cargo xtask setup`)")?;
        if !status.success() {
            bail!("openssl req failed: {status}");
        }
        Ok(Self { dir, cert, key })
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("llmtap-test-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test-owned HTTPS server that logs each connection's plaintext (tests/servers).
pub struct LoggingTlsServer {
    pub port: u16,
    pid: u32,
    pub log_dir: TempDir,
    _cert: SelfSigned,
    _child: ChildGuard,
}

impl LoggingTlsServer {
    pub fn start() -> anyhow::Result<Self> {
        let cert = SelfSigned::generate()?;
        let log_dir = TempDir::new("server-log")?;
        let mut child = Command::new("python3")
            .arg(repo_root().join("tests/servers/tls_capture_server.py"))
            .arg("--cert")
            .arg(&cert.cert)
            .arg("--key")
            .arg(&cert.key)
            .arg("--log-dir")
            .arg(log_dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the test TLS server")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let pid = child.id();
        let child = ChildGuard(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let port = line
            .trim()
            .parse()
            .with_context(|| format!("server said {line:?}"))?;
        Ok(Self {
            port,
            pid,
            log_dir,
            _cert: cert,
            _child: child,
        })
    }

    /// Process id of the server (it does TLS through the system libssl too).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Bytes the server received and sent on each connection, in accept order.
    pub fn connections(&self) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for i in 0.. {
            let inp = self.log_dir.path().join(format!("conn-{i}.in"));
            if !inp.exists() {
                break;
            }
            let outp = self.log_dir.path().join(format!("conn-{i}.out"));
            out.push((std::fs::read(inp)?, std::fs::read(outp)?));
        }
        Ok(out)
    }
}

/// One direction of a connection as captured: contiguous pieces and holes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapturedStream {
    /// (position, bytes) of each captured piece.
    pub pieces: Vec<(u64, Vec<u8>)>,
    /// (position, length) of each hole.
    pub gaps: Vec<(u64, u64)>,
    /// Total length, captured + holes.
    pub len: u64,
}

impl CapturedStream {
    pub fn captured_bytes(&self) -> u64 {
        self.pieces.iter().map(|(_, b)| b.len() as u64).sum()
    }

    /// The captured pieces in order, as text (lossy), holes left out.
    pub fn text(&self) -> String {
        let bytes: Vec<u8> = self.pieces.iter().flat_map(|(_, b)| b.clone()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Checks this stream against the bytes the peer really saw: every captured byte equal at
    /// its position, holes only where declared, same total length.
    pub fn check_against(&self, truth: &[u8]) -> Result<(), String> {
        if self.len != truth.len() as u64 {
            return Err(format!(
                "length {} (captured {} + holes {:?}) != real {}",
                self.len,
                self.captured_bytes(),
                self.gaps,
                truth.len()
            ));
        }
        for (pos, bytes) in &self.pieces {
            let start = *pos as usize;
            let real = truth
                .get(start..start + bytes.len())
                .ok_or("piece out of range")?;
            if real != bytes.as_slice() {
                let at = real
                    .iter()
                    .zip(bytes)
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                return Err(format!("bytes differ at stream offset {}", start + at));
            }
        }
        Ok(())
    }
}

/// The in-process tracer, collecting events on a background runtime.
pub struct LiveCapture {
    events: Arc<Mutex<Vec<CaptureEvent>>>,
    counters: Arc<Mutex<llmtap::capture::CaptureCounters>>,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LiveCapture {
    /// Loads the tracer, hooks the system libssl and `extra_targets`.
    pub fn start(config: TracerConfig, extra_targets: &[&Path]) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = events.clone();
        let counters = Arc::new(Mutex::new(llmtap::capture::CaptureCounters::default()));
        let counters_sink = counters.clone();
        let targets: Vec<PathBuf> = extra_targets.iter().map(|p| p.to_path_buf()).collect();
        runtime.spawn(async move {
            let setup = (|| -> anyhow::Result<Tracer> {
                let mut tracer = Tracer::load(&config)?;
                if let Some(lib) = llmtap::capture::targets::default_libssl() {
                    tracer.attach_openssl(&lib)?;
                }
                for t in &targets {
                    tracer.attach_openssl(t)?;
                }
                Ok(tracer)
            })();
            let mut tracer = match setup {
                Ok(t) => {
                    let _ = ready_tx.send(Ok(()));
                    t
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut batch = Vec::new();
            loop {
                tokio::select! {
                    r = tracer.read_events(&mut batch) => {
                        if r.is_err() { break; }
                        if let Ok(mut all) = sink.lock() { all.append(&mut batch); }
                        if let Ok(mut c) = counters_sink.lock() { *c = tracer.counters(); }
                    }
                    _ = &mut stop_rx => break,
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .context("tracer did not start")??;
        Ok(Self {
            events,
            counters,
            runtime: Some(runtime),
            stop: Some(stop_tx),
        })
    }

    /// The tracer's counters as of the last batch read.
    pub fn counters(&self) -> llmtap::capture::CaptureCounters {
        self.counters.lock().map(|c| *c).unwrap_or_default()
    }

    /// A copy of the events captured so far.
    pub fn events(&self) -> Vec<CaptureEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Streams of one process, per connection and direction, rebuilt with the library's
    /// stream assembler.
    pub fn streams_of(&self, pid: u32) -> BTreeMap<(ConnectionId, Direction), CapturedStream> {
        let mut assembler = StreamAssembler::new();
        let mut out = Vec::new();
        for ev in self.events().into_iter().filter(|e| e.conn().pid == pid) {
            assembler.push(ev, &mut out);
        }
        assembler.release_due(u64::MAX, &mut out);
        let mut streams: BTreeMap<(ConnectionId, Direction), CapturedStream> = BTreeMap::new();
        for ev in out {
            match ev {
                StreamEvent::Data(c) => {
                    let s = streams.entry((c.conn, c.direction)).or_default();
                    s.pieces.push((s.len, c.data.to_vec()));
                    s.len += c.data.len() as u64;
                }
                StreamEvent::Gap {
                    conn,
                    direction,
                    len,
                    ..
                } => {
                    let s = streams.entry((conn, direction)).or_default();
                    s.gaps.push((s.len, len));
                    s.len += len;
                }
                StreamEvent::Closed { .. } => {}
            }
        }
        streams
    }

    /// Waits until `done` holds for the streams of `pid` or the timeout passes.
    pub fn wait_for(
        &self,
        pid: u32,
        timeout: Duration,
        done: impl Fn(&BTreeMap<(ConnectionId, Direction), CapturedStream>) -> bool,
    ) -> BTreeMap<(ConnectionId, Direction), CapturedStream> {
        let deadline = Instant::now() + timeout;
        loop {
            let streams = self.streams_of(pid);
            if done(&streams) || Instant::now() > deadline {
                return streams;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LiveCapture {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// Path of the llmtap binary under test (`LLMTAP_BIN`, as `cargo xtask test` sets it; else
/// target/release/llmtap).
pub fn llmtap_bin() -> PathBuf {
    std::env::var_os("LLMTAP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/llmtap"))
}

/// Runs a command to completion, returning (pid, stdout) and failing on a non-zero exit.
pub fn run_client(cmd: &mut Command) -> anyhow::Result<(u32, String)> {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let pid = child.id();
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok((pid, String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// `llmtap capture --format jsonl` running as a subprocess, as a user runs it: discovery and
/// attachment policy (exec events, dynamic loader hook, rescans) included.
pub struct CliCapture {
    child: ChildGuard,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
    pub log: Arc<Mutex<String>>,
}

impl CliCapture {
    pub fn start(extra_args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(llmtap_bin())
            .args(["capture", "--format", "jsonl"])
            .args(extra_args)
            .env(
                "RUST_LOG",
                std::env::var("LLMTAP_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", llmtap_bin().display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let child = ChildGuard(child);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(String::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line)
                    && let Ok(mut all) = sink.lock()
                {
                    all.push(v);
                }
            }
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let log_sink = log.clone();
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("capturing TLS plaintext")
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
                if let Ok(mut l) = log_sink.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let log = log.lock().map(|l| l.clone()).unwrap_or_default();
            bail!("llmtap capture did not start:\n{log}");
        }
        Ok(Self { child, lines, log })
    }

    /// Streams of one process rebuilt from the JSON lines (positions from `stream_pos` +
    /// `offset`, holes where `uncaptured_len` says so).
    pub fn streams_of(&self, pid: u32) -> BTreeMap<(String, String), CapturedStream> {
        use base64::Engine as _;
        let lines = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        // (position, bytes, hole after) per (connection, direction)
        type Pieces = Vec<(u64, Vec<u8>, u64)>;
        let mut pieces: BTreeMap<(String, String), Pieces> = BTreeMap::new();
        for v in lines
            .iter()
            .filter(|v| v["event"] == "data" && v["pid"] == pid)
        {
            let key = (
                v["conn"].as_str().unwrap_or_default().to_string(),
                v["direction"].as_str().unwrap_or_default().to_string(),
            );
            let pos = v["stream_pos"].as_u64().unwrap_or(0) + v["offset"].as_u64().unwrap_or(0);
            let data = base64::engine::general_purpose::STANDARD
                .decode(v["data_b64"].as_str().unwrap_or_default())
                .unwrap_or_default();
            let end_of_call = v["offset"].as_u64().unwrap_or(0) + data.len() as u64
                == v["call_len"].as_u64().unwrap_or(0) - v["uncaptured_len"].as_u64().unwrap_or(0);
            let hole = if end_of_call {
                v["uncaptured_len"].as_u64().unwrap_or(0)
            } else {
                0
            };
            pieces.entry(key).or_default().push((pos, data, hole));
        }
        pieces
            .into_iter()
            .map(|(key, mut ps)| {
                ps.sort_by_key(|(pos, _, _)| *pos);
                let mut s = CapturedStream::default();
                for (pos, data, hole) in ps {
                    if pos > s.len {
                        s.gaps.push((s.len, pos - s.len));
                        s.len = pos;
                    }
                    s.pieces.push((pos, data.clone()));
                    s.len = pos + data.len() as u64;
                    if hole > 0 {
                        s.gaps.push((s.len, hole));
                        s.len += hole;
                    }
                }
                (key, s)
            })
            .collect()
    }

    /// Polls until `done` holds for the pid's streams or the timeout passes.
    pub fn wait_for(
        &self,
        pid: u32,
        timeout: Duration,
        done: impl Fn(&BTreeMap<(String, String), CapturedStream>) -> bool,
    ) -> BTreeMap<(String, String), CapturedStream> {
        let deadline = Instant::now() + timeout;
        loop {
            let streams = self.streams_of(pid);
            if done(&streams) || Instant::now() > deadline {
                return streams;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every JSON line received so far.
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// (pid, comm) of every process seen in data records.
    pub fn pids_seen(&self) -> std::collections::BTreeSet<(u64, String)> {
        let lines = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        lines
            .iter()
            .filter(|v| v["event"] == "data")
            .map(|v| {
                (
                    v["pid"].as_u64().unwrap_or(0),
                    v["comm"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Stops llmtap with SIGINT and returns whether it exited successfully.
    pub fn stop(mut self) -> bool {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.0.id() as i32, libc::SIGINT) };
        self.child.0.wait().is_ok_and(|s| s.success())
    }
}

/// Checks one client process's single connection (as captured by a [`CliCapture`]) against
/// the server's log of connection `conn_index`.
pub fn assert_cli_connection_matches(
    capture: &CliCapture,
    server: &LoggingTlsServer,
    pid: u32,
    conn_index: usize,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let conns = server.connections().unwrap_or_default();
        let (server_in, server_out) = conns.get(conn_index).cloned().unwrap_or_default();
        let streams = capture.streams_of(pid);
        let get = |d: &str| {
            streams
                .iter()
                .find(|((_, dir), _)| dir == d)
                .map(|(_, s)| s.clone())
                .unwrap_or_default()
        };
        let (write, read) = (get("write"), get("read"));
        let conns_seen: std::collections::BTreeSet<_> =
            streams.keys().map(|(c, _)| c.clone()).collect();
        let settled = !server_in.is_empty()
            && write.len == server_in.len() as u64
            && read.len == server_out.len() as u64;
        if settled || Instant::now() > deadline {
            assert_eq!(
                conns_seen.len(),
                1,
                "one TLS connection for pid {pid}: {conns_seen:?}; processes seen: {:?}\n{}",
                capture.pids_seen(),
                capture.log_text()
            );
            if let Err(e) = write.check_against(&server_in) {
                panic!(
                    "pid {pid}: request bytes differ from what the server received: {e}\n{}",
                    capture.log_text()
                );
            }
            if let Err(e) = read.check_against(&server_out) {
                panic!(
                    "pid {pid}: response bytes differ from what the server sent: {e}\n{}",
                    capture.log_text()
                );
            }
            assert!(
                write.gaps.is_empty(),
                "captured from the first write: {:?}",
                write.gaps
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Builds the Go test client (tests/clients/go-client) as `dir/go-client/NAME` with these
/// `-ldflags`: offline (no module downloads, caches under `dir`), pure Go, as a user would.
pub fn go_client(dir: &Path, name: &str, ldflags: &str) -> PathBuf {
    let out = dir.join("go-client");
    let exe = out.join(name);
    let result = Command::new("go")
        .current_dir(repo_root().join("tests/clients/go-client"))
        .args(["build", "-trimpath", "-ldflags", ldflags, "-o"])
        .arg(&exe)
        .arg(".")
        // Offline and self-contained: no module downloads, caches in the target dir, pure Go
        // (cgo would bring in libc's resolver, not OpenSSL, but keep it out).
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", out.join("cache"))
        .env("GOPATH", out.join("gopath"))
        .output()
        .expect("running `go build` (Debian golang-go, installed by `cargo xtask setup`)");
    assert!(
        result.status.success(),
        "go build {name}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    exe
}
