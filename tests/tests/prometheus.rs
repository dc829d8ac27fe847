//! `llmtap run --metrics-listen` scraped by the real Prometheus (Debian's `prometheus`, which
//! `cargo xtask setup` installs): a real Python client calls the replay server twice, and the
//! input-token counter read back through Prometheus's HTTP query API is the recording's usage
//! times two. `/healthz` and `/readyz` answer while llmtap runs. Real eBPF.
//!
//! Every metric sums over all traced processes, and other programs call LLMs on this host too:
//! llmtap traces only this test's client, started under a command name of its own (`--comm`).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llmtap_tests::replay::{LlmtapRun, ReplayServer, load_json};
use llmtap_tests::{ChildGuard, TempDir, ebpf_required, repo_root, require_ebpf, run_client};
use serde_json::Value;

const CASSETTE: &str = "tests/data/cassettes/openai__chat_stream_include_usage.json";

/// The client's command name (at most 15 bytes): a symlink to python3 of this name.
const CLIENT_COMM: &str = "llmtap-prom-py";

const PYTHON_ONE_SHOT: &str = r#"
import http.client, json, ssl, sys
cassette = json.load(open(sys.argv[1])); req = cassette["request"]
c = http.client.HTTPSConnection("api.openai.com", context=ssl.create_default_context())
c.request(req["method"], "/v1/chat/completions", body=req["body"].encode(),
          headers={"Host": "api.openai.com", "Content-Type": "application/json",
                   "Authorization": "Bearer sk-test-not-a-real-key"})
r = c.getresponse(); body = r.read()
print(r.status, len(body))
"#;

/// `GET path` over HTTP/1.0: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Where llmtap said it serves `/metrics`.
fn metrics_address(log: &str) -> Option<SocketAddr> {
    log.lines()
        .find(|l| l.contains("serving /metrics"))
        .and_then(|l| l.rsplit("http://").next())
        .and_then(|a| a.trim().parse().ok())
}

/// The value of an instant query's single sample, if there is one.
fn query(prometheus: SocketAddr, promql: &str) -> Option<f64> {
    let encoded = percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC);
    let (status, body) = http_get(prometheus, &format!("/api/v1/query?query={encoded}")).ok()?;
    if status != 200 {
        return None;
    }
    let answer: Value = serde_json::from_str(&body).ok()?;
    let result = answer["data"]["result"].as_array()?;
    result.first()?["value"][1].as_str()?.parse().ok()
}

fn prometheus_available() -> bool {
    Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start_prometheus(dir: &Path, target: SocketAddr) -> (ChildGuard, SocketAddr) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: llmtap\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .expect("write prometheus.yml");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log file"))
        .spawn()
        .expect("start prometheus");
    let guard = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_get(listen, "/-/ready").is_ok_and(|(status, _)| status == 200) {
        assert!(
            Instant::now() < deadline,
            "prometheus not ready:\n{}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (guard, listen)
}

#[test]
fn prometheus_scrapes_the_token_counter() {
    if !require_ebpf("prometheus_scrapes_the_token_counter") {
        return;
    }
    if !prometheus_available() {
        assert!(
            !ebpf_required(),
            "prometheus is not installed: run `cargo xtask setup`"
        );
        eprintln!("SKIPPED: prometheus is not installed (`cargo xtask setup` installs it)");
        return;
    }
    let dir = TempDir::new("prometheus").expect("temp dir");
    let cassette_path = repo_root().join(CASSETTE);
    let cassette = load_json(&cassette_path).expect("cassette");
    let input_tokens = cassette["expected"]["input_tokens"]
        .as_f64()
        .expect("recorded input tokens");
    let server = ReplayServer::start(std::slice::from_ref(&cassette_path)).expect("replay");
    let llmtap = LlmtapRun::start(&["--comm", CLIENT_COMM, "--metrics-listen", "127.0.0.1:0"])
        .expect("llmtap");
    let metrics = metrics_address(&llmtap.log_text())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{}", llmtap.log_text()));
    assert_eq!(http_get(metrics, "/healthz").expect("healthz").0, 200);
    // Ready once capture is attached and the loop has come round (once a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(metrics, "/readyz").expect("readyz").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready:\n{}",
            llmtap.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let (_prometheus, prometheus) = start_prometheus(dir.path(), metrics);

    let python = dir.path().join(CLIENT_COMM);
    // The interpreter itself (python3 on PATH may be a launcher script, e.g. pyenv's).
    let real_python = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .expect("python3 on PATH");
    std::os::unix::fs::symlink(&real_python, &python).expect("client symlink");
    let mut pids = Vec::new();
    for _ in 0..2 {
        let mut client = server.client_command(&python);
        client.args(["-c", PYTHON_ONE_SHOT]).arg(&cassette_path);
        let (pid, out) = run_client(&mut client).expect("client");
        assert!(out.starts_with("200 "), "{out}");
        pids.push(i64::from(pid));
    }
    llmtap.wait_for(|spans| {
        pids.iter()
            .all(|pid| spans.iter().any(|s| s["resource"]["process.pid"] == *pid))
    });

    let promql = "sum(gen_ai_client_token_usage_sum{job=\"llmtap\",gen_ai_token_type=\"input\",\
                  gen_ai_provider_name=\"openai\",gen_ai_request_model=\"gpt-4o-mini\"})";
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        last = query(prometheus, promql);
        if last == Some(2.0 * input_tokens) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // Read before llmtap stops: a failed scrape marks its series stale.
    let calls = query(
        prometheus,
        "sum(llmtap_calls_total{job=\"llmtap\",gen_ai_provider_name=\"openai\"})",
    );
    let events = query(prometheus, "llmtap_capture_events_total{job=\"llmtap\"}");
    let (_, _, log) = llmtap.stop();
    assert_eq!(
        last,
        Some(2.0 * input_tokens),
        "{promql} through Prometheus\nllmtap log:\n{log}\nprometheus log:\n{}",
        std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
    );
    // The same scrape carries the call counter and the daemon's health.
    assert_eq!(calls, Some(2.0));
    assert!(events.is_some_and(|v| v > 0.0), "{events:?}");
}
