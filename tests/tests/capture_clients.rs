//! Capture end to end, with real eBPF: real TLS clients (curl through libssl's SSL_read/
//! SSL_write, Python through SSL_read_ex/SSL_write_ex, Node with OpenSSL linked statically)
//! talk to a test server that logs the exact plaintext of each connection; the bytes llmtap
//! captured for the client must equal what the server received and sent.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use llmtap::capture::{Direction, TracerConfig};
use llmtap_tests::{LiveCapture, LoggingTlsServer, TempDir, require_ebpf, run_client};

const MIB: usize = 1024 * 1024;

/// Checks the client's single connection against the server's log of connection `conn_index`.
fn assert_connection_matches(
    capture: &LiveCapture,
    server: &LoggingTlsServer,
    pid: u32,
    conn_index: usize,
) -> (llmtap_tests::CapturedStream, llmtap_tests::CapturedStream) {
    // The server logs after each send returns, which can be after the client read the bytes:
    // poll both sides until they agree in length (or time out and let the checks explain).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (server_in, server_out, streams) = loop {
        let conns = server.connections().expect("server logs");
        let (server_in, server_out) = conns.get(conn_index).cloned().unwrap_or_default();
        let streams = capture.streams_of(pid);
        let len = |d| {
            streams
                .iter()
                .filter(|((_, dir), _)| *dir == d)
                .map(|(_, st)| st.len)
                .sum::<u64>()
        };
        let settled = len(Direction::Write) == server_in.len() as u64
            && len(Direction::Read) == server_out.len() as u64;
        if settled || std::time::Instant::now() > deadline {
            break (server_in, server_out, streams);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!server_in.is_empty(), "server saw connection {conn_index}");
    let conn_ids: std::collections::BTreeSet<_> = streams.keys().map(|(c, _)| *c).collect();
    assert_eq!(
        conn_ids.len(),
        1,
        "expected one TLS connection for pid {pid}, got {conn_ids:?}"
    );
    let write = streams
        .iter()
        .find(|((_, d), _)| *d == Direction::Write)
        .map(|(_, s)| s.clone())
        .unwrap_or_default();
    let read = streams
        .iter()
        .find(|((_, d), _)| *d == Direction::Read)
        .map(|(_, s)| s.clone())
        .unwrap_or_default();
    if let Err(e) = write.check_against(&server_in) {
        panic!("request bytes (client writes) differ from what the server received: {e}");
    }
    if let Err(e) = read.check_against(&server_out) {
        panic!("response bytes (client reads) differ from what the server sent: {e}");
    }
    (write, read)
}

fn count_requests(bytes: &[u8]) -> usize {
    bytes
        .windows(9)
        .filter(|w| w.starts_with(b"GET /") || w.starts_with(b"POST /"))
        .count()
}

#[test]
fn curl_keepalive_requests_and_large_bodies_are_captured_exactly() {
    if !require_ebpf("curl_keepalive_requests_and_large_bodies_are_captured_exactly") {
        return;
    }
    let server = LoggingTlsServer::start().expect("server");
    let capture = LiveCapture::start(TracerConfig::default(), &[]).expect("tracer");
    let base = format!("https://127.0.0.1:{}", server.port);

    // Three keep-alive requests on one connection, the last with a 1 MiB response.
    let (pid, _) = run_client(
        Command::new("curl")
            .args([
                "-sSk",
                "--http1.1",
                "-o",
                "/dev/null",
                "-o",
                "/dev/null",
                "-o",
                "/dev/null",
            ])
            .arg(format!("{base}/bytes/100"))
            .arg(format!("{base}/bytes/20000"))
            .arg(format!("{base}/bytes/{MIB}")),
    )
    .expect("curl GETs");
    let (write, read) = assert_connection_matches(&capture, &server, pid, 0);
    assert_eq!(
        count_requests(&write.pieces.concat_bytes()),
        3,
        "three requests on one connection"
    );
    assert!(
        read.gaps.is_empty(),
        "reads are one TLS record each, never truncated: {:?}",
        read.gaps
    );

    // A 1 MiB request body.
    let dir = TempDir::new("upload").expect("tmp");
    let file = dir.path().join("body.bin");
    std::fs::write(&file, vec![b'z'; MIB]).expect("write body");
    let (pid, out) = run_client(
        Command::new("curl")
            .args(["-sSk", "--http1.1", "--data-binary"])
            .arg(format!("@{}", file.display()))
            .arg(format!("{base}/upload")),
    )
    .expect("curl POST");
    assert!(out.contains(&format!("received {MIB} bytes")), "{out}");
    let (write, _) = assert_connection_matches(&capture, &server, pid, 1);
    assert!(write.len > MIB as u64);
}

#[test]
fn python_ssl_ex_variants_are_captured_exactly() {
    if !require_ebpf("python_ssl_ex_variants_are_captured_exactly") {
        return;
    }
    let server = LoggingTlsServer::start().expect("server");
    let capture = LiveCapture::start(TracerConfig::default(), &[]).expect("tracer");
    let client = llmtap_tests::repo_root().join("tests/clients/py_client.py");
    let (pid, out) = run_client(
        Command::new("python3")
            .arg(client)
            .arg(server.port.to_string())
            .arg(MIB.to_string()),
    )
    .expect("python client");
    assert!(out.contains(&format!("received {MIB} bytes")), "{out}");
    let (write, _) = assert_connection_matches(&capture, &server, pid, 0);
    assert_eq!(count_requests(&write.pieces.concat_bytes()), 4);
    // Python hands the whole 1 MiB body to one SSL_write_ex: the default 256 KiB cap keeps the
    // first part and reports the rest as a hole of the exact size.
    let cap = tracer_common_cap();
    assert_eq!(write.gaps.len(), 1, "one truncated call: {:?}", write.gaps);
    assert_eq!(write.gaps[0].1, (MIB - cap) as u64, "hole = body - cap");
}

#[test]
fn node_with_static_openssl_is_captured_exactly() {
    if !require_ebpf("node_with_static_openssl_is_captured_exactly") {
        return;
    }
    let node = Path::new("/usr/bin/node");
    assert!(
        node.exists(),
        "/usr/bin/node missing: run `cargo xtask setup`"
    );
    let server = LoggingTlsServer::start().expect("server");
    let capture = LiveCapture::start(TracerConfig::default(), &[node]).expect("tracer");
    let client = llmtap_tests::repo_root().join("tests/clients/node_client.js");
    let (pid, out) = run_client(
        Command::new(node)
            .arg(client)
            .arg(server.port.to_string())
            .arg(MIB.to_string()),
    )
    .expect("node client");
    assert!(out.contains(&format!("received {MIB} bytes")), "{out}");
    let (write, _) = assert_connection_matches(&capture, &server, pid, 0);
    assert_eq!(count_requests(&write.pieces.concat_bytes()), 4);
}

#[test]
fn larger_cap_captures_a_large_write_whole() {
    if !require_ebpf("larger_cap_captures_a_large_write_whole") {
        return;
    }
    let server = LoggingTlsServer::start().expect("server");
    let config = TracerConfig {
        max_capture_bytes: 2 * MIB as u32,
        ..Default::default()
    };
    let capture = LiveCapture::start(config, &[]).expect("tracer");
    let client = llmtap_tests::repo_root().join("tests/clients/py_client.py");
    let (pid, _) = run_client(
        Command::new("python3")
            .arg(client)
            .arg(server.port.to_string())
            .arg(MIB.to_string()),
    )
    .expect("python client");
    let (write, _) = assert_connection_matches(&capture, &server, pid, 0);
    assert!(
        write.gaps.is_empty(),
        "nothing truncated under a 2 MiB cap: {:?}",
        write.gaps
    );
}

fn tracer_common_cap() -> usize {
    llmtap::cli_default_max_capture_bytes() as usize
}

trait ConcatBytes {
    fn concat_bytes(&self) -> Vec<u8>;
}

impl ConcatBytes for Vec<(u64, Vec<u8>)> {
    fn concat_bytes(&self) -> Vec<u8> {
        self.iter().flat_map(|(_, b)| b.iter().copied()).collect()
    }
}

#[test]
fn pid_filter_keeps_other_processes_out() {
    if !require_ebpf("pid_filter_keeps_other_processes_out") {
        return;
    }
    let server = LoggingTlsServer::start().expect("server");
    // Trace only the (Python) server: the curl client must not appear at all.
    let config = TracerConfig {
        pids: vec![server.pid()],
        ..Default::default()
    };
    let capture = LiveCapture::start(config, &[]).expect("tracer");
    let (client_pid, _) = run_client(
        Command::new("curl")
            .args(["-sSk", "--http1.1", "-o", "/dev/null"])
            .arg(format!("https://127.0.0.1:{}/bytes/500", server.port)),
    )
    .expect("curl");
    // The server reads the request and writes the response: wait for its side.
    let streams = capture.wait_for(server.pid(), Duration::from_secs(20), |s| {
        s.iter()
            .any(|((_, d), st)| *d == Direction::Write && st.len > 500)
    });
    assert!(!streams.is_empty(), "server traffic captured");
    assert!(
        capture
            .events()
            .iter()
            .all(|e| e.conn().pid == server.pid())
    );
    assert!(
        capture.streams_of(client_pid).is_empty(),
        "client filtered out in the kernel"
    );
}

#[test]
fn undersized_ring_buffer_drops_are_counted_and_become_gaps() {
    if !require_ebpf("undersized_ring_buffer_drops_are_counted_and_become_gaps") {
        return;
    }
    let server = LoggingTlsServer::start().expect("server");
    // One page cannot hold a 16 KiB record: the large reads of a 1 MiB response are dropped.
    let config = TracerConfig {
        ring_buffer_bytes: 4096,
        ..Default::default()
    };
    let capture = LiveCapture::start(config, &[]).expect("tracer");
    let (pid, _) = run_client(
        Command::new("curl")
            .args(["-sSk", "--http1.1", "-o", "/dev/null"])
            .arg(format!("https://127.0.0.1:{}/bytes/{MIB}", server.port)),
    )
    .expect("curl");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while capture.counters().ringbuf_dropped_records == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let counters = capture.counters();
    assert!(
        counters.ringbuf_dropped_records > 0,
        "drops counted: {counters:?}"
    );
    assert!(counters.ringbuf_dropped_bytes > 0);
    // Whatever arrived is still placed exactly; the losses are explicit holes.
    let conns = server.connections().expect("logs");
    let streams = capture.streams_of(pid);
    if let Some(read) = streams
        .iter()
        .find(|((_, d), _)| *d == Direction::Read)
        .map(|(_, s)| s)
    {
        let truth = &conns[0].1;
        for (pos, bytes) in &read.pieces {
            let start = *pos as usize;
            assert_eq!(
                &truth[start..start + bytes.len()],
                bytes.as_slice(),
                "piece at {pos}"
            );
        }
        assert!(read.captured_bytes() < truth.len() as u64);
    }
}
