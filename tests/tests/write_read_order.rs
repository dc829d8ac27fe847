//! Issue 19, item 5: a request must come before its response whatever thread reads the
//! response and however late the writing call returns. A C client on the system OpenSSL
//! (`clients/openssl_slow_write_client.c`, compiled here) reads on one thread while its
//! `SSL_write` on another returns only after the whole response was read (its write BIO sends,
//! then waits for the reader, as a preempted thread or a slow BIO would). `llmtap run` must
//! still export the recorded call's span. Real eBPF, the real system libssl.

use std::path::{Path, PathBuf};
use std::process::Command;

use llmtap_tests::replay::{LlmtapRun, ReplayServer, span_differences, spans_of};
use llmtap_tests::{TempDir, repo_root, require_ebpf, run_client};

const CASSETTE: &str = "tests/data/cassettes/openai__chat_stream_include_usage.json";

fn compile_client(dir: &Path) -> PathBuf {
    let out = dir.join("openssl-slow-write-client");
    let status = Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&out)
        .arg(repo_root().join("tests/clients/openssl_slow_write_client.c"))
        .args(["-lssl", "-lcrypto", "-lpthread"])
        .status()
        .expect("cc (gcc and libssl-dev, installed by cargo xtask setup)");
    assert!(status.success(), "compiling the client");
    out
}

/// The cassette's request as HTTP/1.1 bytes (`connection: close`: the response ends with the
/// connection, which the client's reader reads to its end).
fn request_bytes(cassette: &serde_json::Value) -> (String, Vec<u8>) {
    let request = &cassette["request"];
    let url = request["url"].as_str().expect("url");
    let rest = url.split("://").nth(1).expect("absolute url");
    let (host, path) = rest.split_at(rest.find('/').expect("path"));
    let body = request["body"].as_str().unwrap_or_default();
    let mut head = format!(
        "{} {path} HTTP/1.1\r\nhost: {host}\r\n",
        request["method"].as_str().unwrap_or("POST")
    );
    for (name, value) in request["headers"].as_object().expect("headers") {
        if matches!(
            name.to_ascii_lowercase().as_str(),
            "host" | "content-length" | "accept-encoding" | "connection" | "transfer-encoding"
        ) {
            continue;
        }
        head.push_str(&format!(
            "{name}: {}\r\n",
            value.as_str().unwrap_or_default()
        ));
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    (host.to_string(), bytes)
}

#[test]
fn a_write_returning_after_its_response_was_read_still_pairs_with_it() {
    if !require_ebpf("a_write_returning_after_its_response_was_read_still_pairs_with_it") {
        return;
    }
    let dir = TempDir::new("slow-write").expect("tmp");
    let client = compile_client(dir.path());
    let cassette_path = repo_root().join(CASSETTE);
    let cassette: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cassette_path).expect("cassette")).expect("json");
    let (host, request) = request_bytes(&cassette);
    let request_file = dir.path().join("request.http");
    std::fs::write(&request_file, request).expect("request file");

    let server = ReplayServer::start(std::slice::from_ref(&cassette_path)).expect("server");
    let llmtap = LlmtapRun::start(&[]).expect("llmtap");
    let (pid, out) = run_client(
        server
            .client_command(&client)
            .arg(&host)
            .arg("443")
            .arg(&request_file),
    )
    .expect("client");
    assert!(out.starts_with("status 200"), "{out}");
    // Otherwise the test would not test the order it is about.
    assert!(
        out.contains("write returned after the response"),
        "the write returned before the response was read:\n{out}"
    );
    let spans = llmtap.wait_for(|spans| !spans_of(spans, pid).is_empty());
    let (all, _, log) = llmtap.stop();
    let ours = spans_of(&all, pid);
    assert_eq!(ours.len(), 1, "one span for the call: {spans:#?}\n{log}");
    let diffs = span_differences(ours[0], &cassette, "1.1");
    assert!(diffs.is_empty(), "{diffs:#?}\n{:#}\n{log}", ours[0]);
}
