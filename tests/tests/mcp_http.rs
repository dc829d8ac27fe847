//! MCP over Streamable HTTP with TLS, traced by a real llmtap (eBPF): the Python `mcp` SDK's
//! own client and server (issue 18 item 4). Every JSON-RPC request the client sends is one MCP
//! client span of the client's process with its method, request id and protocol version; a tool
//! call is `execute_tool {tool}` with the tool's name, and a failing tool says `tool_error`.
//! The server's side of the same connections (it reads the requests) gives no span. Over TLS
//! and over plain HTTP, and on the legacy HTTP+SSE transport (answers on the event stream,
//! another connection).

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use llmtap_tests::replay::{LlmtapRun, mcp_spans_of, run_client, sdk_clients_missing, spans_of};
use llmtap_tests::{ChildGuard, SelfSigned, repo_root, require_ebpf};
use serde_json::Value;

/// A port free on loopback now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn mcp_sdk_requests_over_streamable_http_with_tls_are_client_spans() {
    if !require_ebpf("mcp_sdk_requests_over_streamable_http_with_tls_are_client_spans") {
        return;
    }
    mcp_sdk_session_is_traced(true, Transport::Streamable);
}

/// The same over plain HTTP: the kernel copies connections whose first request goes to `/mcp`.
#[test]
fn mcp_sdk_requests_over_plain_streamable_http_are_client_spans() {
    if !require_ebpf("mcp_sdk_requests_over_plain_streamable_http_are_client_spans") {
        return;
    }
    mcp_sdk_session_is_traced(false, Transport::Streamable);
}

/// The legacy HTTP+SSE transport over TLS: each request is POSTed to the endpoint the event
/// stream named, answered `202`, and its response comes as an event on the stream.
#[test]
fn mcp_sdk_requests_over_legacy_sse_are_client_spans() {
    if !require_ebpf("mcp_sdk_requests_over_legacy_sse_are_client_spans") {
        return;
    }
    mcp_sdk_session_is_traced(true, Transport::LegacySse);
}

/// The same over plain HTTP (`/sse` and `/messages/` are among the copied paths).
#[test]
fn mcp_sdk_requests_over_plain_legacy_sse_are_client_spans() {
    if !require_ebpf("mcp_sdk_requests_over_plain_legacy_sse_are_client_spans") {
        return;
    }
    mcp_sdk_session_is_traced(false, Transport::LegacySse);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Streamable,
    LegacySse,
}

fn mcp_sdk_session_is_traced(tls: bool, transport: Transport) {
    let legacy = transport == Transport::LegacySse;
    if let Some(missing) = sdk_clients_missing() {
        panic!("{missing}");
    }
    let python = repo_root().join("tests/.venv/bin/python3");
    let cert = SelfSigned::generate().expect("certificate");
    let port = free_port();
    let mut server = Command::new(&python);
    server.arg(repo_root().join("tests/clients/mcp_http_server.py"));
    if legacy {
        server.arg("--sse");
    }
    server.arg(port.to_string());
    if tls {
        server.arg(&cert.cert).arg(&cert.key);
    }
    let mut server = server
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("MCP server");
    let stdout = server.stdout.take().expect("server stdout");
    let server = ChildGuard(server);
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.trim() == "ready" {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the MCP server listens");

    let llmtap = LlmtapRun::start(&[]).expect("llmtap");
    let mut client = Command::new(&python);
    let scheme = if tls { "https" } else { "http" };
    let (script, url) = if legacy {
        (
            "mcp_sse_client.py",
            format!("{scheme}://localhost:{port}/sse"),
        )
    } else {
        (
            "mcp_http_client.py",
            format!("{scheme}://localhost:{port}/mcp"),
        )
    };
    client
        .arg(repo_root().join("tests/clients").join(script))
        .arg(url)
        .env("SSL_CERT_FILE", &cert.cert);
    let outcome = run_client(&mut client).expect("MCP client");
    assert_eq!(
        outcome.stdout, "tools add,fail\nadd 42\nfail error\n",
        "{}",
        outcome.stderr
    );
    assert_eq!(outcome.code, Some(0));
    let expected_spans = if legacy { 5 } else { 4 };
    llmtap.wait_for(|spans| mcp_spans_of(spans, outcome.pid).len() >= expected_spans);
    let (spans, _, log) = llmtap.stop();
    let mut ours: Vec<&Value> = mcp_spans_of(&spans, outcome.pid);
    ours.sort_by_key(|s| s["start_time_unix_nano"].as_u64());
    let attr = |s: &Value, k: &str| s["attributes"][k].as_str().map(str::to_string);
    // (span name, method, request id, error type)
    type Row = (String, Option<String>, Option<String>, Option<String>);
    let summary: Vec<Row> = ours
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                attr(s, "mcp.method.name"),
                attr(s, "jsonrpc.request.id"),
                attr(s, "error.type"),
            )
        })
        .collect();
    let some = |v: &str| Some(v.to_string());
    let expected: Vec<Row> = if legacy {
        // The session's own handshake (`initialize`, then the `initialized` notification),
        // with the ids ClientSession numbers from 1.
        vec![
            ("initialize".into(), some("initialize"), some("1"), None),
            (
                "notifications/initialized".into(),
                some("notifications/initialized"),
                None,
                None,
            ),
            ("tools/list".into(), some("tools/list"), some("2"), None),
            (
                "execute_tool add".into(),
                some("tools/call"),
                some("3"),
                None,
            ),
            (
                "execute_tool fail".into(),
                some("tools/call"),
                some("4"),
                some("tool_error"),
            ),
        ]
    } else {
        vec![
            (
                "server/discover".into(),
                some("server/discover"),
                some("1"),
                None,
            ),
            ("tools/list".into(), some("tools/list"), some("2"), None),
            (
                "execute_tool add".into(),
                some("tools/call"),
                some("3"),
                None,
            ),
            (
                "execute_tool fail".into(),
                some("tools/call"),
                some("4"),
                some("tool_error"),
            ),
        ]
    };
    assert_eq!(summary, expected, "{log}");
    let tool_call = if legacy { 3 } else { 2 };
    if legacy {
        // One session: the digest of the id the endpoint carries, on every request.
        let session = attr(ours[0], "mcp.session.id");
        assert!(
            session.as_deref().is_some_and(|s| s.len() == 32),
            "{:#}",
            ours[0]
        );
        for span in &ours {
            assert_eq!(attr(span, "mcp.session.id"), session, "{span:#}");
        }
    }
    for span in &ours {
        assert_eq!(span["kind"], "CLIENT", "{span:#}");
        if !legacy {
            assert_eq!(attr(span, "mcp.protocol.version"), some("2026-07-28"));
        }
        assert_eq!(attr(span, "server.address"), some("localhost"));
        assert_eq!(span["attributes"]["server.port"], u64::from(port));
        assert_eq!(attr(span, "network.transport"), some("tcp"));
        assert_eq!(attr(span, "network.protocol.version"), some("1.1"));
        let start = span["start_time_unix_nano"].as_u64().unwrap_or(0);
        let end = span["end_time_unix_nano"].as_u64().unwrap_or(0);
        assert!(start > 0 && end >= start, "{span:#}");
    }
    if legacy {
        // The version `initialize` agreed on names every later request of the session.
        let version = attr(ours[0], "mcp.protocol.version");
        assert!(version.is_some(), "{:#}", ours[0]);
    }
    assert_eq!(attr(ours[tool_call], "gen_ai.tool.name"), some("add"));
    assert_eq!(
        attr(ours[tool_call], "gen_ai.operation.name"),
        some("execute_tool")
    );
    assert_eq!(
        ours[tool_call]["attributes"]["gen_ai.tool.call.arguments"],
        Value::Null,
        "content capture is off"
    );
    assert!(
        spans_of(&spans, outcome.pid).is_empty(),
        "no LLM call spans for MCP traffic"
    );
    assert!(
        mcp_spans_of(&spans, server.0.id()).is_empty(),
        "the server side gives no span"
    );
}
