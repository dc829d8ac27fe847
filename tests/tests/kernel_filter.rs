//! Kernel-side filtering, real eBPF: TLS connections user space has no use for are muted, and
//! the kernel stops copying them while still numbering their bytes.
//!
//! One Python process serves HTTPS and is its own client (`tests/clients/tls_keepalive_filter.py`),
//! both through the system's libssl: a 4 MiB download, then an LLM call (Ollama-shaped
//! `POST /api/chat`) on the same keep-alive connection. Once llmtap has seen the download's
//! request, it mutes the client's side until its next request and the server's side until
//! it closes: the rest of the download is filtered on both sides (counted, not copied), and
//! the chat call, a new request, is copied again and yields its span.

use std::io::{BufRead as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llmtap_tests::replay::{LlmtapRun, spans_of};
use llmtap_tests::{TempDir, repo_root, require_ebpf};

/// The number after `label` in llmtap's exit summary (`filtered in the kernel: N calls (B
/// bytes) ...`).
fn summary_number(log: &str, line_marker: &str, before: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains(line_marker))?;
    let at = line.find(before)?;
    line[..at]
        .split_whitespace()
        .last()?
        .trim_start_matches('(')
        .parse()
        .ok()
}

#[test]
fn a_download_is_filtered_in_the_kernel_and_the_next_llm_call_on_its_connection_is_not() {
    if !require_ebpf(
        "a_download_is_filtered_in_the_kernel_and_the_next_llm_call_on_its_connection_is_not",
    ) {
        return;
    }
    let dir = TempDir::new("kernel-filter").expect("temp dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl req");

    let mut process = Command::new("python3")
        .arg(repo_root().join("tests/clients/tls_keepalive_filter.py"))
        .arg(&cert)
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let pid = process.id();
    let llmtap = LlmtapRun::start_logging(
        &["--pid", &pid.to_string()],
        "info,llmtap::capture::tracer=debug",
    )
    .expect("llmtap");
    // The process waits for llmtap before its first request, then for the mutes.
    let mut stdin = process.stdin.take().expect("stdin");
    stdin.write_all(b"\n").expect("start");
    let mut lines = std::io::BufReader::new(process.stdout.take().expect("stdout")).lines();
    assert_eq!(
        lines.next().and_then(Result::ok).as_deref(),
        Some("head"),
        "the download started"
    );
    // An event, not a delay: llmtap logs each mute it sends to the kernel.
    let muted = |log: &str| {
        (
            log.matches("muted (UntilRequest)").count(),
            log.matches("muted (UntilClose)").count(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while muted(&llmtap.log_text()) != (1, 1) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        muted(&llmtap.log_text()),
        (1, 1),
        "the client's side muted until its next request, the server's until it closes:\n{}",
        llmtap.log_text()
    );
    stdin.write_all(b"\n").expect("go");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(
        rest,
        [format!("download {}", 4 << 20), "chat 186".to_string()],
        "the process's view is unchanged"
    );
    let out = process.wait_with_output().expect("process");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let spans = llmtap.wait_for(|spans| !spans_of(spans, pid).is_empty());
    let (_, _, log) = llmtap.stop();
    let ours = spans_of(&spans, pid);
    assert_eq!(ours.len(), 1, "the one LLM call: {ours:#?}\n{log}");
    assert_eq!(ours[0]["attributes"]["gen_ai.provider.name"], "ollama");
    assert_eq!(ours[0]["attributes"]["gen_ai.usage.output_tokens"], 2);
    assert_eq!(ours[0]["attributes"]["gen_ai.response.model"], "llama3");

    let captured = summary_number(&log, "calls exported; captured", "bytes),").unwrap_or(u64::MAX);
    assert!(
        captured < 256 * 1024,
        "{captured} bytes copied: the download leaked into capture\n{log}"
    );
    let filtered = summary_number(&log, "filtered in the kernel:", "bytes)").unwrap_or(0);
    assert!(
        filtered >= 2 * ((4 << 20) - 256 * 1024),
        "{filtered} bytes filtered: the download's rest, written by the server and read by \
         the client, must both be counted\n{log}"
    );
    assert!(
        log.contains("0 mutes found stale, 1 ended by a new request"),
        "the chat request ended the client's mute\n{log}"
    );
}
