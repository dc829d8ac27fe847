//! MCP over stdio, traced by a real llmtap (eBPF, `--mcp-stdio on`): the Python `mcp` SDK's own
//! client spawning the SDK's server and speaking newline-delimited JSON-RPC over its pipes
//! (issue 18 items 5 and 6). Every JSON-RPC request the client writes is one MCP client span of
//! the client's process, timed by the kernel from the write of the request to the read of its
//! answer, with its method, request id and protocol version and `network.transport` `pipe`; a
//! tool call is `execute_tool {tool}`, and the failing tool says `tool_error`. The server's side
//! of the same pipes gives no span. Meanwhile a pipe-heavy shell pipeline and a process writing
//! JSON-RPC-looking lines to a pipe that is not an MCP peer give no span, and the kernel copies
//! none of their bytes. An agent whose tools are served over stdio has its MCP spans in its
//! turn's trace, children of the `invoke_agent` span.

use std::process::{Command, Stdio};

use llmtap_tests::replay::{
    LlmtapRun, ReplayOptions, ReplayServer, agent_spans_of, cassette_path, mcp_spans_of,
    run_client, sdk_clients_missing, spans_of,
};
use llmtap_tests::{repo_root, require_ebpf};
use serde_json::Value;

/// Bytes the unrelated processes push through pipes meanwhile.
const PIPELINE_BYTES: u64 = 50 * 1024 * 1024;
const JSON_LINES_BYTES: u64 = 1024 * 1024;

/// `(channels found, bytes copied)` from llmtap's exit summary.
fn mcp_stdio_counters(log: &str) -> Option<(u64, u64)> {
    let line = log.lines().find(|l| l.contains("MCP over stdio: "))?;
    let rest = line.split("MCP over stdio: ").nth(1)?;
    let mut words = rest.split_whitespace();
    let channels = words.next()?.parse().ok()?;
    let bytes = rest
        .split(", ")
        .find(|part| part.ends_with("bytes copied"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((channels, bytes))
}

#[test]
fn mcp_sdk_requests_over_stdio_are_client_spans_and_other_pipes_are_not_copied() {
    if !require_ebpf("mcp_sdk_requests_over_stdio_are_client_spans_and_other_pipes_are_not_copied")
    {
        return;
    }
    if let Some(missing) = sdk_clients_missing() {
        panic!("{missing}");
    }
    let python = repo_root().join("tests/.venv/bin/python3");
    let llmtap = LlmtapRun::start(&["--mcp-stdio", "on"]).expect("llmtap");

    // Unrelated pipe traffic while the MCP session runs.
    let mut pipeline = Command::new("sh")
        .arg("-c")
        .arg(format!("yes | head -c {PIPELINE_BYTES} | wc -c"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("yes | head | wc");
    let mut json_lines = Command::new(&python);
    json_lines
        .arg(repo_root().join("tests/clients/json_lines_writer.py"))
        .arg(JSON_LINES_BYTES.to_string());
    let json_lines = std::thread::spawn(move || run_client(&mut json_lines));

    let mut client = Command::new(&python);
    client.arg(repo_root().join("tests/clients/mcp_stdio_client.py"));
    let outcome = run_client(&mut client).expect("MCP client");
    assert_eq!(
        outcome.stdout, "tools add,fail,get_news,get_weather\nadd 42\nfail error\n",
        "{}",
        outcome.stderr
    );
    assert_eq!(outcome.code, Some(0), "{}", outcome.stderr);
    let server_pid: u32 = outcome
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("mcp-server-pid "))
        .and_then(|pid| pid.trim().parse().ok())
        .expect("the server says its pid");

    let json_lines = json_lines
        .join()
        .expect("JSON lines writer thread")
        .expect("JSON lines writer");
    assert!(
        json_lines.stdout.starts_with("wrote "),
        "{}",
        json_lines.stderr
    );
    let counted = {
        use std::io::Read as _;
        let mut out = String::new();
        pipeline
            .stdout
            .take()
            .expect("pipeline stdout")
            .read_to_string(&mut out)
            .expect("pipeline output");
        assert!(pipeline.wait().expect("pipeline").success());
        out.trim().parse::<u64>().expect("wc -c")
    };
    assert_eq!(counted, PIPELINE_BYTES);

    llmtap.wait_for(|spans| mcp_spans_of(spans, outcome.pid).len() >= 4);
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
    assert_eq!(
        summary,
        vec![
            (
                "server/discover".into(),
                some("server/discover"),
                some("1"),
                None
            ),
            ("tools/list".into(), some("tools/list"), some("2"), None),
            (
                "execute_tool add".into(),
                some("tools/call"),
                some("3"),
                None
            ),
            (
                "execute_tool fail".into(),
                some("tools/call"),
                some("4"),
                some("tool_error")
            ),
        ],
        "{log}"
    );
    let times: Vec<(u64, u64)> = ours
        .iter()
        .map(|s| {
            (
                s["start_time_unix_nano"].as_u64().unwrap_or(0),
                s["end_time_unix_nano"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    for span in &ours {
        assert_eq!(span["kind"], "CLIENT", "{span:#}");
        assert_eq!(attr(span, "mcp.protocol.version"), some("2026-07-28"));
        assert_eq!(attr(span, "network.transport"), some("pipe"), "{span:#}");
        assert_eq!(span["attributes"]["network.protocol.name"], Value::Null);
        assert_eq!(span["attributes"]["server.address"], Value::Null);
        // No LLM call in this process: no agent turn to join, none invented.
        assert_eq!(span["parent_span_id"], Value::Null, "{span:#}");
    }
    // The client waits for each answer before its next request: the spans follow each other,
    // and the first one includes the server's start (a Python interpreter importing the SDK),
    // which the others do not.
    for (i, (start, end)) in times.iter().enumerate() {
        assert!(*start > 0 && end > start, "span {i}: {times:?}");
        if let Some((next_start, _)) = times.get(i + 1) {
            assert!(next_start >= end, "span {i} overlaps the next: {times:?}");
        }
    }
    let duration = |i: usize| times[i].1 - times[i].0;
    assert!(
        duration(0) > duration(1) && duration(0) > duration(2),
        "the first request waits for the server to start: {times:?}"
    );
    assert_eq!(attr(ours[2], "gen_ai.tool.name"), some("add"));
    assert_eq!(attr(ours[2], "gen_ai.operation.name"), some("execute_tool"));
    assert_eq!(
        ours[2]["attributes"]["gen_ai.tool.call.arguments"],
        Value::Null,
        "content capture is off"
    );
    assert!(
        spans_of(&spans, outcome.pid).is_empty(),
        "no LLM call spans for MCP traffic"
    );
    assert!(
        mcp_spans_of(&spans, server_pid).is_empty(),
        "the server side gives no span"
    );
    assert!(
        mcp_spans_of(&spans, json_lines.pid).is_empty(),
        "JSON-RPC lines to a pipe that is not an MCP peer give no span"
    );
    let pipeline_pid = pipeline.id();
    assert!(
        !spans
            .iter()
            .any(|s| s["resource"]["process.pid"] == pipeline_pid),
        "the shell pipeline gives no span"
    );
    // Host-wide counters: another MCP session elsewhere on the host could add a channel, but
    // not the megabytes the unrelated pipes moved.
    let (channels, bytes) = mcp_stdio_counters(&log).expect("MCP over stdio summary");
    assert!(channels >= 1, "{log}");
    assert!(
        bytes > 0 && bytes < JSON_LINES_BYTES / 4,
        "only the MCP session's bytes are copied, not the other pipes' ({bytes}):\n{log}"
    );
}

/// The `openai` SDK's tool loop (a recorded first turn asking for two tools, a constructed
/// second turn) with the tools called on a stdio MCP server between the turns: the MCP spans
/// join the agent's turn, children of its `invoke_agent` span in its trace, and the tool calls
/// are named by the tools the model asked for.
#[test]
fn mcp_stdio_calls_made_inside_an_agent_turn_are_its_children() {
    if !require_ebpf("mcp_stdio_calls_made_inside_an_agent_turn_are_its_children") {
        return;
    }
    if let Some(missing) = sdk_clients_missing() {
        panic!("{missing}");
    }
    let first = cassette_path("openai__chat_parallel_tool_calls");
    let second = repo_root().join("tests/data/agent/openai__chat_tool_results.json");
    let server = ReplayServer::start_with(&[first.clone(), second], &ReplayOptions::default())
        .expect("replay server");
    let llmtap = LlmtapRun::start(&["--mcp-stdio", "on"]).expect("llmtap");
    let mut client = server.client_command(repo_root().join("tests/.venv/bin/python3"));
    client
        .arg(repo_root().join("tests/clients/mcp_stdio_agent_client.py"))
        .arg(&first);
    let outcome = run_client(&mut client).expect("agent");
    assert_eq!(
        outcome.stdout,
        "tools get_weather,get_news\nanswer It is 18C and sunny in San Francisco, and cable cars run late tonight.\n",
        "{}",
        outcome.stderr
    );
    let pid = outcome.pid;
    llmtap.wait_for(|spans| {
        spans_of(spans, pid).len() >= 2
            && mcp_spans_of(spans, pid)
                .iter()
                .filter(|s| s["attributes"]["mcp.method.name"] == "tools/call")
                .count()
                >= 2
    });
    let (spans, _, log) = llmtap.stop();
    let turns: Vec<&Value> = agent_spans_of(&spans, pid)
        .into_iter()
        .filter(|s| s["name"] == "invoke_agent")
        .collect();
    assert_eq!(turns.len(), 1, "{spans:#?}\n{log}");
    let turn = turns[0];
    let mut mcp = mcp_spans_of(&spans, pid);
    mcp.sort_by_key(|s| s["start_time_unix_nano"].as_u64());
    let names: Vec<&str> = mcp.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names.first(), Some(&"server/discover"), "{names:?}");
    let tool_calls: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with("execute_tool "))
        .collect();
    assert_eq!(
        tool_calls,
        ["execute_tool get_weather", "execute_tool get_news"],
        "{names:?}"
    );
    for span in &mcp {
        assert_eq!(span["trace_id"], turn["trace_id"], "{span:#}");
        assert_eq!(span["parent_span_id"], turn["span_id"], "{span:#}");
        assert_eq!(span["attributes"]["network.transport"], "pipe", "{span:#}");
        assert_eq!(span["attributes"]["error.type"], Value::Null, "{span:#}");
    }
}
