//! A cassette replayed over HTTPS/1.1 by a test-owned server, and `llmtap run` with JSONL
//! output: enough to check that a client's call becomes the right span. (A small stand-in
//! used by the rustls and mount-namespace tests.)

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use crate::{ChildGuard, TempDir, llmtap_bin, repo_root};

/// A test CA and a leaf for `api.openai.com` (and localhost) it signed (webpki refuses a self-signed leaf).
pub struct TestPki {
    dir: TempDir,
}

impl TestPki {
    pub fn generate() -> anyhow::Result<Self> {
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

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// tests/servers/cassette_server.py: replays the cassette's response over HTTPS/1.1.
pub struct CassetteServer {
    pub port: u16,
    _child: ChildGuard,
}

impl CassetteServer {
    pub fn start(pki: &TestPki, cassette: &Path) -> anyhow::Result<Self> {
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
pub struct LlmtapRun {
    child: ChildGuard,
    jsonl: PathBuf,
    log: Arc<Mutex<String>>,
    _dir: TempDir,
}

impl LlmtapRun {
    pub fn start() -> anyhow::Result<Self> {
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

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn spans_now(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.jsonl)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (bounded) until `n` spans were written, then stops llmtap (SIGTERM flushes) and
    /// returns every span it wrote.
    pub fn stop_after(mut self, n: usize) -> (Vec<serde_json::Value>, String) {
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

/// The one span of process `pid` among `spans`, checked against the cassette's `expected`
/// values (provider, models, id, usage, chunks) and never flagged incomplete.
pub fn assert_one_span_matches_cassette(
    spans: &[serde_json::Value],
    pid: u32,
    cassette: &serde_json::Value,
    log: &str,
) {
    let ours: Vec<_> = spans
        .iter()
        .filter(|s| s["resource"]["process.pid"].as_u64() == Some(u64::from(pid)))
        .collect();
    assert_eq!(ours.len(), 1, "one span for pid {pid}: {spans:#?}\n{log}");
    let attrs = &ours[0]["attributes"];
    let expected = &cassette["expected"];
    assert_eq!(attrs["gen_ai.provider.name"], cassette["provider"]);
    for (attr, key) in [
        ("gen_ai.request.model", "request_model"),
        ("gen_ai.response.model", "response_model"),
        ("gen_ai.response.id", "response_id"),
        ("gen_ai.usage.input_tokens", "input_tokens"),
        ("gen_ai.usage.output_tokens", "output_tokens"),
        ("llmtap.stream.chunks", "stream_chunks"),
    ] {
        assert_eq!(attrs[attr], expected[key], "{attr}: {:#}", ours[0]);
    }
    assert!(
        attrs.get("llmtap.call.incomplete").is_none(),
        "{:#}",
        ours[0]
    );
}
