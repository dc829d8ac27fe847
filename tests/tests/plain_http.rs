//! Plain HTTP (no TLS), real eBPF: local model servers and OpenAI-compatible gateways.
//!
//! - Real clients against the replay server in plain mode (`llmtap-replay --plain`, a free
//!   port on 127.0.0.1): the official `ollama` Python SDK and curl for the Ollama recordings,
//!   the `openai` Python SDK (`base_url="http://127.0.0.1:PORT/v1"`) and curl for OpenAI ones,
//!   curl also over h2 with prior knowledge (h2c).
//!   Each call yields exactly one span equal to the recording's `expected` values, with
//!   `server.*` and `network.peer.*` naming the server; the clients behave the same with and
//!   without llmtap; the server's own sockets yield nothing; the planted key appears nowhere.
//! - A process's non-LLM TCP traffic (a raw echo protocol, an HTTP GET of a page) is classified
//!   and never copied: only its LLM call's bytes reach user space, as the kernel's own
//!   classification counters confirm.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use llmtap::capture::TracerConfig;
use llmtap::testing::assert_no_failures;
use llmtap_tests::replay::{
    ClientOutcome, LlmtapRun, PLANTED_API_KEY, ReplayOptions, ReplayServer, cassette_path,
    curl_plain_command, load_json, ollama_sdk_command, python_sdk_plain_command,
    span_differences_at, spans_of,
};
use llmtap_tests::{LiveCapture, ebpf_required, repo_root, require_ebpf};
use serde_json::Value;

struct Case {
    name: &'static str,
    path: PathBuf,
    json: Value,
}

fn case(name: &'static str) -> Case {
    let path = cassette_path(name);
    let json = load_json(&path).expect("recording");
    Case { name, path, json }
}

const OLLAMA: &[&str] = &["ollama__chat", "ollama__chat_stream_ndjson"];
/// OpenAI recordings replayed by an OpenAI-compatible server over plain HTTP: chat (whole,
/// streamed, tools), completions, embeddings, responses.
const OPENAI: &[&str] = &[
    "openai__chat_parallel_tool_calls",
    "openai__chat_stream_include_usage",
    "openai__completions_stream",
    "openai__embeddings_then_completions_1",
    "openai__responses_stream_1",
];

type Client = fn(&ReplayServer, &Case) -> Command;

/// A client's outcome against its own plain replay server, with the server's pid and port.
struct Run {
    outcome: ClientOutcome,
    server_pid: u32,
    server_port: u16,
    served: Vec<(String, String)>,
}

fn run_one(client: Client, case: &Case) -> anyhow::Result<Run> {
    let server = ReplayServer::start_with(
        std::slice::from_ref(&case.path),
        &ReplayOptions {
            plain: true,
            // Over plain TCP a client that reads late gets a whole stream in one recv (and then
            // rightly a first chunk at the end): pace events far enough apart for a loaded host.
            chunk_delay_ms: 40,
            ..ReplayOptions::default()
        },
    )?;
    let outcome = llmtap_tests::replay::run_client(&mut client(&server, case))?;
    Ok(Run {
        outcome,
        server_pid: server.pid(),
        server_port: server.addr().port(),
        served: server.served(),
    })
}

/// What one run is: a label, its client, its recording and the HTTP version it speaks.
type MatrixRun = (&'static str, Client, Case, &'static str);

/// Every run without llmtap, then with it; returns the failures.
fn run_matrix(runs: &[MatrixRun]) -> Vec<String> {
    let mut failures = Vec::new();
    let baseline: Vec<Option<ClientOutcome>> = runs
        .iter()
        .map(|(label, client, case, _)| match run_one(*client, case) {
            Ok(run) => Some(run.outcome),
            Err(e) => {
                failures.push(format!("{label} {}: baseline run: {e:#}", case.name));
                None
            }
        })
        .collect();
    let llmtap = LlmtapRun::start(&[]).expect("llmtap starts");
    let traced: Vec<Option<Run>> = runs
        .iter()
        .map(|(label, client, case, _)| match run_one(*client, case) {
            Ok(run) => Some(run),
            Err(e) => {
                failures.push(format!("{label} {}: traced run: {e:#}", case.name));
                None
            }
        })
        .collect();
    let pids: Vec<u32> = traced.iter().flatten().map(|r| r.outcome.pid).collect();
    llmtap.wait_for(|spans| pids.iter().all(|pid| !spans_of(spans, *pid).is_empty()));
    let (spans, jsonl, log) = llmtap.stop();

    for (((label, _, case, protocol), before), after) in runs.iter().zip(&baseline).zip(&traced) {
        let (Some(before), Some(after)) = (before, after) else {
            continue;
        };
        let name = case.name;
        if after.served.len() != 1 || after.served[0].0 != name {
            failures.push(format!(
                "{label} {name}: the server served {:?}",
                after.served
            ));
        }
        if before.visible() != after.outcome.visible() {
            failures.push(format!(
                "{label} {name}: the client behaved differently under llmtap:\n  without: {:?}\n  with: {:?}\n  stderr: {}",
                before.visible(),
                after.outcome.visible(),
                after.outcome.stderr
            ));
        }
        if !spans_of(&spans, after.server_pid).is_empty() {
            failures.push(format!("{label} {name}: a span for the replay server"));
        }
        let ours = spans_of(&spans, after.outcome.pid);
        if ours.len() != 1 {
            failures.push(format!(
                "{label} {name}: {} spans for client pid {} (exit {:?}, stderr {}): {ours:#?}",
                ours.len(),
                after.outcome.pid,
                after.outcome.code,
                after.outcome.stderr.trim()
            ));
            continue;
        }
        let span = ours[0];
        let mut diffs = span_differences_at(span, &case.json, protocol, "127.0.0.1");
        let attrs = &span["attributes"];
        let port = Value::from(after.server_port);
        for (key, want) in [
            ("server.port", &port),
            ("network.peer.address", &Value::from("127.0.0.1")),
            ("network.peer.port", &port),
        ] {
            if &attrs[key] != want {
                diffs.push(format!("{key}: expected {want}, got {}", attrs[key]));
            }
        }
        if !diffs.is_empty() {
            failures.push(format!("{label} {name}:\n    {}", diffs.join("\n    ")));
        }
    }
    if jsonl.contains(PLANTED_API_KEY) || log.contains(PLANTED_API_KEY) {
        failures.push("the planted API key reached llmtap's output".to_string());
    }
    if !failures.is_empty() {
        failures.push(format!("llmtap log:\n{log}"));
    }
    failures
}

fn python_sdks_ready(test: &str) -> bool {
    if !require_ebpf(test) {
        return false;
    }
    let venv = repo_root().join("tests/.venv/bin/python3");
    let ready = Command::new(&venv)
        .args(["-c", "import ollama, openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        assert!(
            !ebpf_required(),
            "{test}: the Python SDKs are missing: run `cargo xtask setup`"
        );
        eprintln!("SKIPPED {test}: the Python SDKs are missing (cargo xtask setup)");
    }
    ready
}

#[test]
fn ollama_and_openai_compatible_servers_over_plain_http() {
    if !python_sdks_ready("ollama_and_openai_compatible_servers_over_plain_http") {
        return;
    }
    let mut runs: Vec<MatrixRun> = Vec::new();
    for name in OLLAMA {
        runs.push((
            "ollama SDK",
            |s, c| ollama_sdk_command(s, &c.path),
            case(name),
            "1.1",
        ));
        runs.push((
            "curl",
            |s, c| curl_plain_command(s, &c.json, false),
            case(name),
            "1.1",
        ));
    }
    for name in OPENAI {
        runs.push((
            "openai SDK",
            |s, c| python_sdk_plain_command(s, &c.path),
            case(name),
            "1.1",
        ));
        runs.push((
            "curl",
            |s, c| curl_plain_command(s, &c.json, false),
            case(name),
            "1.1",
        ));
    }
    for name in [
        "ollama__chat_stream_ndjson",
        "openai__chat_stream_include_usage",
    ] {
        runs.push((
            "curl h2c",
            |s, c| curl_plain_command(s, &c.json, true),
            case(name),
            "2",
        ));
    }
    assert_no_failures(run_matrix(&runs));
}

/// Serves one connection of a raw echo protocol.
fn echo_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let mut buf = [0u8; 65536];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    (port, handle)
}

/// Serves two HTTP/1.1 requests, one connection each: a 1 MiB page for a GET, a small chat
/// completion for a POST.
fn http_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = std::thread::spawn(move || {
        for _ in 0..2 {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            let head_end = loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
                if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while request.len() < head_end + length {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let (ctype, body) = if head.starts_with("get") {
                ("text/html", vec![b'x'; 1 << 20])
            } else {
                (
                    "application/json",
                    br#"{"id":"chatcmpl-plain","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#.to_vec(),
                )
            };
            let _ = conn.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            let _ = conn.write_all(&body);
        }
    });
    (port, handle)
}

#[test]
fn non_llm_tcp_traffic_is_classified_and_never_copied() {
    if !require_ebpf("non_llm_tcp_traffic_is_classified_and_never_copied") {
        return;
    }
    let (echo_port, echo) = echo_server();
    let (http_port, http) = http_server();
    let mut client = Command::new("python3")
        .arg(repo_root().join("tests/clients/plain_tcp_client.py"))
        .arg(echo_port.to_string())
        .arg(http_port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let pid = client.id();
    // Only this process: the counters then describe its sockets alone.
    let capture = LiveCapture::start(
        TracerConfig {
            pids: vec![pid],
            ..TracerConfig::default()
        },
        &[],
    )
    .expect("tracer");
    client
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("start the client");
    let out = client.wait_with_output().expect("client");
    let _ = (echo.join(), http.join());
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next(),
        Some("102400"),
        "the echo round trip"
    );

    let streams = capture.wait_for(pid, Duration::from_secs(20), |streams| {
        streams
            .values()
            .any(|s| s.text().contains("chatcmpl-plain"))
    });
    let conns: std::collections::BTreeSet<_> = streams.keys().map(|(c, _)| *c).collect();
    assert_eq!(
        conns.len(),
        1,
        "only the LLM call's connection is copied: {:?}",
        streams.keys().collect::<Vec<_>>()
    );
    let conn = *conns.iter().next().expect("one connection");
    assert!(conn.is_plain_tcp(), "{conn}");
    let write = streams
        .iter()
        .find(|((_, d), _)| *d == llmtap::capture::Direction::Write)
        .map(|(_, s)| s.text())
        .unwrap_or_default();
    assert!(
        write.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
        "{write:?}"
    );
    let copied: u64 = streams.values().map(|s| s.captured_bytes()).sum();
    assert!(
        copied < 4096,
        "{copied} bytes copied: the echo (100 KiB) or the page (1 MiB) leaked into capture"
    );
    let peers: Vec<_> = capture
        .events()
        .into_iter()
        .filter_map(|e| match e {
            llmtap::capture::CaptureEvent::ConnectionInfo { conn: c, peer, .. } if c == conn => {
                Some(peer)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        peers,
        [std::net::SocketAddr::from(([127, 0, 0, 1], http_port))],
        "the socket's peer"
    );
    let counters = capture.counters();
    assert_eq!(
        (
            counters.plain_http_connections,
            counters.plain_ignored_connections,
            counters.tls_connections
        ),
        (1, 2, 0),
        "classification of the process's three connections: {counters:?}"
    );
}

/// Serves an Ollama-shaped API on two keep-alive connections: `/api/tags` (a small list),
/// `/api/blob` (1 MiB), `/api/chat` (a chat response).
fn ollama_shaped_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = std::thread::spawn(move || {
        for _ in 0..2 {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let mut pending = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let head_end = loop {
                    if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break 0,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                    }
                };
                if head_end == 0 {
                    break;
                }
                let head = String::from_utf8_lossy(&pending[..head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while pending.len() < head_end + length {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                    }
                }
                pending.drain(..head_end + length);
                let body: Vec<u8> = if head.starts_with("get /api/tags") {
                    br#"{"models":[]}"#.to_vec()
                } else if head.starts_with("get /api/blob") {
                    vec![b'b'; 1 << 20]
                } else {
                    br#"{"model":"llama3","created_at":"2024-05-24T20:01:31Z","message":{"role":"assistant","content":"hi"},"done_reason":"stop","done":true,"prompt_eval_count":5,"eval_count":2}"#.to_vec()
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                if conn.write_all(head.as_bytes()).is_err() || conn.write_all(&body).is_err() {
                    break;
                }
            }
        }
    });
    (port, handle)
}

/// A plain connection whose first request goes to an LLM-looking path but is not an LLM call
/// (`GET /api/tags`) is copied until user space has parsed that request, then marked ignored
/// in the kernel: the 1 MiB response of its next request is never copied, while the process's
/// LLM call on another connection still is.
#[test]
fn connection_whose_first_request_is_not_an_llm_call_stops_being_copied() {
    use std::io::BufRead as _;
    if !require_ebpf("connection_whose_first_request_is_not_an_llm_call_stops_being_copied") {
        return;
    }
    let (port, server) = ollama_shaped_server();
    let mut client = Command::new("python3")
        .arg(repo_root().join("tests/clients/plain_keepalive_client.py"))
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let pid = client.id();
    let mut stdin = client.stdin.take().expect("stdin");
    let mut lines = std::io::BufReader::new(client.stdout.take().expect("stdout")).lines();
    let llmtap = LlmtapRun::start_logging(
        &["--pid", &pid.to_string()],
        "info,llmtap::capture::tracer=debug",
    )
    .expect("llmtap");
    stdin.write_all(b"\n").expect("step 1");
    let tags = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(tags, "tags 13");
    // An event, not a delay: llmtap says when it has marked the connection.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !llmtap.log_text().contains("no longer copied") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        llmtap.log_text().contains("no longer copied"),
        "the connection was not marked:\n{}",
        llmtap.log_text()
    );
    stdin.write_all(b"\n").expect("step 2");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(rest, ["blob 1048576", "chat 170"], "the client's view");
    let _ = client.wait();
    let _ = server.join();
    let spans = llmtap.wait_for(|spans| !spans_of(spans, pid).is_empty());
    let (_, _, log) = llmtap.stop();
    let ours = spans_of(&spans, pid);
    assert_eq!(ours.len(), 1, "the one LLM call: {ours:#?}\n{log}");
    assert_eq!(ours[0]["attributes"]["gen_ai.provider.name"], "ollama");
    assert_eq!(ours[0]["attributes"]["gen_ai.usage.output_tokens"], 2);
    let summary = log
        .lines()
        .find(|l| l.contains("calls exported; captured"))
        .unwrap_or_default();
    let bytes: u64 = summary
        .split("records (")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        bytes < 64 * 1024,
        "{bytes} bytes captured: the 1 MiB response was copied ({summary})"
    );
    assert!(
        log.contains("2 plain HTTP copied (1 of them ignored after a first request"),
        "{log}"
    );
}
