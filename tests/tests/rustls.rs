//! rustls clients (no OpenSSL anywhere) are traced through their symbols: a reqwest + rustls
//! client built by this package (`clients/rustls_client.rs`, test profile, unstripped) posts a
//! recorded request to a local HTTPS server replaying the recorded response, and `llmtap run`
//! exports exactly one span with the cassette's values. A stripped copy of the same client is
//! refused with one clear log line and a `llmtap targets` reason. Real eBPF, the real binary.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use llmtap_tests::{ChildGuard, TempDir, llmtap_bin, repo_root, require_ebpf, run_client};

const CASSETTE: &str = "tests/data/cassettes/openai__chat_stream_include_usage.json";

/// Serializes these tests: each runs its own llmtap.
static SERIAL: Mutex<()> = Mutex::new(());

fn client_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rustls-client"))
}

/// A test CA and a leaf for `api.openai.com` (and localhost) it signed (webpki refuses a self-signed leaf).
struct TestPki {
    dir: TempDir,
}

impl TestPki {
    fn generate() -> anyhow::Result<Self> {
        let dir = TempDir::new("rustls-pki")?;
        let p = |name: &str| dir.path().join(name);
        std::fs::write(
            p("leaf.ext"),
            "subjectAltName=DNS:localhost,DNS:api.openai.com,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )?;
        let run = |cmd: &mut Command| -> anyhow::Result<()> {
            let status = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .context("running openssl")?;
            if !status.success() {
                bail!("{cmd:?}: {status}");
            }
            Ok(())
        };
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=llmtap test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign"])
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.pem")))?;
        run(Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
            ])
            .arg("-keyout")
            .arg(p("key.pem"))
            .arg("-out")
            .arg(p("leaf.csr")))?;
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "1", "-CAcreateserial"])
            .arg("-in")
            .arg(p("leaf.csr"))
            .arg("-CA")
            .arg(p("ca.pem"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(p("leaf.ext"))
            .arg("-out")
            .arg(p("cert.pem")))?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// tests/servers/cassette_server.py: replays the cassette's response over HTTPS/1.1.
struct CassetteServer {
    port: u16,
    _child: ChildGuard,
}

impl CassetteServer {
    fn start(pki: &TestPki, cassette: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new("python3")
            .arg(repo_root().join("tests/servers/cassette_server.py"))
            .arg("--cert")
            .arg(pki.path("cert.pem"))
            .arg("--key")
            .arg(pki.path("key.pem"))
            .arg("--cassette")
            .arg(cassette)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the cassette server")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let child = ChildGuard(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let port = line
            .trim()
            .parse()
            .with_context(|| format!("server said {line:?}"))?;
        Ok(Self {
            port,
            _child: child,
        })
    }
}

/// `llmtap run --output jsonl=FILE` as a subprocess, ready once its hooks are attached.
struct LlmtapRun {
    child: ChildGuard,
    jsonl: PathBuf,
    log: Arc<Mutex<String>>,
    _dir: TempDir,
}

impl LlmtapRun {
    fn start() -> anyhow::Result<Self> {
        let dir = TempDir::new("rustls-run")?;
        let jsonl = dir.path().join("spans.jsonl");
        let mut child = Command::new(llmtap_bin())
            .arg("run")
            .arg("--output")
            .arg(format!("jsonl={}", jsonl.display()))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", llmtap_bin().display()))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let child = ChildGuard(child);
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
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
        })
    }

    fn log_text(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn spans_now(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.jsonl)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (bounded) until `n` spans were written, then stops llmtap (SIGTERM flushes) and
    /// returns every span it wrote.
    fn stop_after(mut self, n: usize) -> (Vec<serde_json::Value>, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.spans_now().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.0.id() as i32, libc::SIGTERM) };
        let _ = self.child.0.wait();
        std::thread::sleep(Duration::from_millis(100));
        (self.spans_now(), self.log_text())
    }
}

#[test]
fn rustls_client_yields_the_cassette_span() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf("rustls_client_yields_the_cassette_span") {
        return;
    }
    let cassette_path = repo_root().join(CASSETTE);
    let cassette: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cassette_path).expect("cassette")).expect("json");
    let pki = TestPki::generate().expect("pki");
    let server = CassetteServer::start(&pki, &cassette_path).expect("server");
    let llmtap = LlmtapRun::start().expect("llmtap");
    let (pid, out) = run_client(
        Command::new(client_bin())
            .arg(&cassette_path)
            .arg(format!("127.0.0.1:{}", server.port))
            .env("SSL_CERT_FILE", pki.path("ca.pem"))
            .env("RUSTLS_CLIENT_DELAY_MS", "500"),
    )
    .expect("rustls client");
    assert!(out.starts_with("status 200"), "{out}");
    let (spans, log) = llmtap.stop_after(1);
    let ours: Vec<_> = spans
        .iter()
        .filter(|s| s["resource"]["process.pid"].as_u64() == Some(u64::from(pid)))
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "exactly one span for the rustls client: {spans:#?}\n{log}"
    );
    assert!(
        log.contains("rustls Writer::write") && log.contains(&client_bin().display().to_string()),
        "the client binary was hooked by its rustls symbols:\n{log}"
    );
    let span = ours[0];
    let attrs = &span["attributes"];
    let expected = &cassette["expected"];
    assert_eq!(span["name"], "chat gpt-4o-mini", "{span:#}");
    assert_eq!(attrs["gen_ai.operation.name"], expected["operation"]);
    assert_eq!(attrs["gen_ai.provider.name"], cassette["provider"]);
    assert_eq!(attrs["gen_ai.request.model"], expected["request_model"]);
    assert_eq!(attrs["gen_ai.response.model"], expected["response_model"]);
    assert_eq!(attrs["gen_ai.response.id"], expected["response_id"]);
    assert_eq!(
        attrs["gen_ai.response.finish_reasons"],
        expected["finish_reasons"]
    );
    assert_eq!(attrs["gen_ai.usage.input_tokens"], expected["input_tokens"]);
    assert_eq!(
        attrs["gen_ai.usage.output_tokens"],
        expected["output_tokens"]
    );
    assert_eq!(attrs["llmtap.stream.chunks"], expected["stream_chunks"]);
    assert_eq!(attrs["gen_ai.request.stream"], true);
    assert_eq!(attrs["http.response.status_code"], 200);
    assert_eq!(attrs["network.protocol.version"], "1.1");
    assert_eq!(attrs["server.address"], "api.openai.com");
    assert!(attrs.get("llmtap.call.incomplete").is_none(), "{span:#}");
    assert_eq!(span["status"]["code"], "UNSET");
    assert_eq!(span["resource"]["process.executable.name"], "rustls-client");
}

#[test]
fn stripped_rustls_binary_is_refused_with_one_log_line_and_a_targets_reason() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf("stripped_rustls_binary_is_refused_with_one_log_line_and_a_targets_reason") {
        return;
    }
    let dir = TempDir::new("rustls-stripped").expect("tmp");
    let stripped = dir.path().join("rustls-client");
    let status = Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&stripped)
        .arg(client_bin())
        .status()
        .expect("strip (binutils)");
    assert!(status.success());
    let info = llmtap::capture::elf::inspect(&stripped, true).expect("inspect");
    assert!(!info.has_symtab && info.rustls_hooks.is_empty(), "{info:?}");

    let cassette_path = repo_root().join(CASSETTE);
    let pki = TestPki::generate().expect("pki");
    let server = CassetteServer::start(&pki, &cassette_path).expect("server");
    let llmtap = LlmtapRun::start().expect("llmtap");
    // Long-lived enough for `llmtap targets` to look at it; it runs twice so a second
    // sighting of the same binary is seen to stay quiet.
    let spawn = || {
        Command::new(&stripped)
            .arg(&cassette_path)
            .arg(format!("127.0.0.1:{}", server.port))
            .env("SSL_CERT_FILE", pki.path("ca.pem"))
            .env("RUSTLS_CLIENT_DELAY_MS", "1500")
            .stdout(Stdio::null())
            .spawn()
            .expect("stripped client")
    };
    let mut first = ChildGuard(spawn());
    std::thread::sleep(Duration::from_millis(500));
    let targets = Command::new(llmtap_bin())
        .args(["targets", "--all", "--pid", &first.0.id().to_string()])
        .output()
        .expect("llmtap targets");
    let listing = String::from_utf8_lossy(&targets.stdout);
    assert!(
        listing.contains("not hooked") && listing.contains("stripped of its symbol table"),
        "{listing}"
    );
    assert!(first.0.wait().expect("wait").success());
    let mut second = ChildGuard(spawn());
    assert!(second.0.wait().expect("wait").success());
    let (spans, log) = llmtap.stop_after(0);
    let lines: Vec<_> = log
        .lines()
        .filter(|l| l.contains("stripped of its symbol table"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one clear line for the stripped binary:\n{log}"
    );
    assert!(
        lines[0].contains(&stripped.display().to_string()),
        "{}",
        lines[0]
    );
    assert!(
        !spans
            .iter()
            .any(|s| s["resource"]["process.executable.name"] == "rustls-client"),
        "{spans:#?}"
    );
}
