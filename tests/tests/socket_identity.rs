//! Socket identity of TLS connections (real eBPF): the peer and local addresses of the socket
//! under each `SSL*`, reported once per connection, and reported again when a freed `SSL*`
//! is reused for a new connection; and the peer on the call spans (`network.peer.*`).

use std::process::Command;
use std::time::{Duration, Instant};

use llmtap_tests::{CliCapture, LoggingTlsServer, require_ebpf, run_client};

#[test]
fn each_connection_reports_its_peer_even_when_the_ssl_pointer_is_reused() {
    if !require_ebpf("each_connection_reports_its_peer_even_when_the_ssl_pointer_is_reused") {
        return;
    }
    let a = LoggingTlsServer::start().expect("server a");
    let b = LoggingTlsServer::start().expect("server b");
    let capture = CliCapture::start(&["--comm", "curl"]).expect("llmtap");
    // Two hosts in one curl run: two connections, one after the other, in one process (the
    // second SSL object often lands at the freed address of the first).
    let (pid, _) = run_client(
        Command::new("curl")
            .args(["-sSk", "--http1.1", "-o", "/dev/null", "-o", "/dev/null"])
            .arg(format!("https://127.0.0.1:{}/bytes/10", a.port))
            .arg(format!("https://127.0.0.1:{}/bytes/20", b.port)),
    )
    .expect("curl");

    let deadline = Instant::now() + Duration::from_secs(20);
    let sockets = loop {
        let sockets: Vec<serde_json::Value> = capture
            .records()
            .into_iter()
            .filter(|v| v["event"] == "socket" && v["pid"] == pid)
            .collect();
        if sockets.len() >= 2 || Instant::now() > deadline {
            break sockets;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let peers: Vec<&str> = sockets.iter().filter_map(|v| v["peer"].as_str()).collect();
    assert_eq!(
        peers,
        [
            format!("127.0.0.1:{}", a.port),
            format!("127.0.0.1:{}", b.port)
        ],
        "one socket report per connection, in order: {sockets:?}"
    );
    for s in &sockets {
        assert!(
            s["local"]
                .as_str()
                .is_some_and(|l| l.starts_with("127.0.0.1:")),
            "{s}"
        );
    }
    // Each connection's data is attributed to the connection whose socket it came through:
    // the first connection's reads hold the 10-byte body, the second's the 20-byte body. When
    // the SSL pointer was reused, the free in between separates them (positions restart).
    let read_text = |conn: &str| -> String {
        let lines = capture.records();
        let mut text = String::new();
        let mut seen_close = 0;
        for v in &lines {
            if v["pid"] != pid || v["conn"] != conn {
                continue;
            }
            if v["event"] == "close" {
                seen_close += 1;
            }
            if v["event"] == "data" && v["direction"] == "read" {
                use base64::Engine as _;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(v["data_b64"].as_str().unwrap_or_default())
                    .unwrap_or_default();
                text.push_str(&format!("[{seen_close}]"));
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
        text
    };
    let conn_a = sockets[0]["conn"].as_str().unwrap_or_default().to_string();
    let conn_b = sockets[1]["conn"].as_str().unwrap_or_default().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(read_text(&conn_a).contains("Content-Length: 10")
        && read_text(&conn_b).contains("Content-Length: 20"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ta, tb) = (read_text(&conn_a), read_text(&conn_b));
    assert!(
        ta.contains("Content-Length: 10"),
        "connection {conn_a}: {ta:?}"
    );
    assert!(
        tb.contains("Content-Length: 20"),
        "connection {conn_b}: {tb:?}"
    );
    if conn_a == conn_b {
        // Reused pointer: the first response came before the free, the second after it.
        assert!(
            ta.contains("[0]HTTP/1.1 200 OK") && ta.contains("[1]HTTP/1.1 200 OK"),
            "{ta:?}"
        );
    }
    assert!(capture.stop());
}

/// Issue 19 item 17: the socket identity reaches the spans. A TLS call's span names the socket's
/// peer (`network.peer.*`) besides the `Host` header's `server.*`.
#[test]
fn tls_spans_carry_their_socket_peer() {
    use llmtap_tests::replay::{
        LlmtapRun, ReplayServer, cassette_path, curl_command, load_json, spans_of,
    };
    if !require_ebpf("tls_spans_carry_their_socket_peer") {
        return;
    }
    let path = cassette_path("openai__chat_stream_include_usage");
    let cassette = load_json(&path).expect("recording");
    let server = ReplayServer::start(std::slice::from_ref(&path)).expect("replay server");
    let llmtap = LlmtapRun::start(&[]).expect("llmtap");
    let outcome = llmtap_tests::replay::run_client(&mut curl_command(&server, &cassette, false))
        .expect("curl");
    let spans = llmtap.wait_for(|spans| !spans_of(spans, outcome.pid).is_empty());
    let (_, _, log) = llmtap.stop();
    let ours = spans_of(&spans, outcome.pid);
    assert_eq!(ours.len(), 1, "{ours:#?}\n{log}");
    let attrs = &ours[0]["attributes"];
    assert_eq!(attrs["server.address"], "api.openai.com");
    assert_eq!(attrs["server.port"], 443);
    assert_eq!(
        attrs["network.peer.address"],
        server.addr().ip().to_string(),
        "{attrs:#}"
    );
    assert_eq!(attrs["network.peer.port"], 443);
}
