//! `llmtap capture` as a person runs it (real eBPF): curl's request and response plaintext
//! appear, and a planted API key never does.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llmtap_tests::{ChildGuard, LoggingTlsServer, llmtap_bin, require_ebpf, run_client};

#[test]
fn capture_subcommand_shows_curl_plaintext_with_credentials_masked() {
    if !require_ebpf("capture_subcommand_shows_curl_plaintext_with_credentials_masked") {
        return;
    }
    let bin = llmtap_bin();
    assert!(
        bin.exists(),
        "{} missing: run the tests with `cargo xtask test`",
        bin.display()
    );
    let server = LoggingTlsServer::start().expect("server");
    let mut child = Command::new(&bin)
        .args(["capture", "--comm", "curl", "--preview-bytes", "400"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start llmtap");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut llmtap = ChildGuard(child);

    // Wait until the probes are attached.
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log.contains("capturing TLS plaintext") {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
            panic!("llmtap did not start:\n{log}");
        }
        log.push_str(&line);
    }

    let secret = "sk-live-planted-0123456789";
    run_client(
        Command::new("curl")
            .args(["-sSk", "--http1.1", "-o", "/dev/null", "-H"])
            .arg(format!("Authorization: Bearer {secret}"))
            .args(["-H", "x-api-key: planted-xkey-42"])
            .arg(format!("https://127.0.0.1:{}/bytes/64", server.port)),
    )
    .expect("curl");

    // Read output lines until the response shows up, then stop llmtap with SIGINT.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !lines.iter().any(|l: &String| l.contains("HTTP/1.1 200 OK"))
    {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(line);
        }
    }
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(llmtap.0.id() as i32, libc::SIGINT) };
    let status = llmtap.0.wait().expect("wait");
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        lines.push(line);
    }
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    log.push_str(&rest);
    let output = lines.join("\n");

    assert!(status.success(), "llmtap exited with {status}\n{log}");
    assert!(output.contains("comm=curl"), "{output}");
    assert!(
        output.contains("write") && output.contains("GET /bytes/64 HTTP/1.1"),
        "{output}"
    );
    assert!(
        output.contains("read ") && output.contains("HTTP/1.1 200 OK"),
        "{output}"
    );
    assert!(
        output.contains("Authorization:"),
        "header name stays visible: {output}"
    );
    for leaked in [secret, "planted-xkey-42"] {
        assert!(
            !output.contains(leaked),
            "credential leaked to stdout: {output}"
        );
        assert!(!log.contains(leaked), "credential leaked to logs: {log}");
    }
    assert!(log.contains("captured"), "exit summary missing: {log}");
}
