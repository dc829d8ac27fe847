use super::*;
use crate::genai::record::{CallTiming, Operation, RequestParams, ResponseInfo, Usage};

fn call(pid: u32, start: u64, end: u64) -> CallRecord {
    CallRecord {
        process: ProcessRef {
            pid,
            tid: pid,
            comm: "agent".into(),
        },
        connection_id: 1,
        operation: Operation::Chat,
        provider: "anthropic".into(),
        api: "anthropic_messages".into(),
        server_address: None,
        server_port: None,
        network_peer_address: None,
        network_peer_port: None,
        http_method: "POST".into(),
        url_path: "/v1/messages".into(),
        http_status: Some(200),
        http_version: "1.1".into(),
        request: RequestParams::default(),
        response: ResponseInfo::default(),
        usage: Usage::default(),
        error: None,
        timing: CallTiming {
            request_start_ns: start,
            request_end_ns: start,
            response_end_ns: end,
            ..CallTiming::default()
        },
        stream_chunks: None,
        truncated: false,
        incomplete: false,
        content: None,
        agent: None,
    }
}

fn tool(id: Option<&str>, name: &str) -> ToolCallRef {
    ToolCallRef {
        id: id.map(str::to_string),
        name: Some(name.to_string()),
        content: None,
    }
}

fn tools(out: &[AgentRecord]) -> Vec<&ToolExecution> {
    out.iter()
        .filter_map(|r| match r {
            AgentRecord::Tool(t) => Some(t),
            _ => None,
        })
        .collect()
}

#[test]
fn previous_response_id_links_and_ids_match_results() {
    let mut t = AgentTracker::new(AgentConfig::default());
    let mut out = Vec::new();
    let mut a = call(1, 100, 200);
    a.response.id = Some("resp_1".into());
    a.response.tool_requests = vec![tool(Some("fc_1"), "search")];
    t.observe(&mut a, &mut out);
    let mut b = call(1, 500, 700);
    b.request.previous_response_id = Some("resp_1".into());
    b.request.tool_results = vec![tool(Some("fc_1"), "ignored")];
    t.observe(&mut b, &mut out);
    let la = a.agent.clone().expect("linked");
    let lb = b.agent.clone().expect("linked");
    assert_eq!(la.session, lb.session);
    assert_eq!(la.turn, lb.turn);
    assert!(la.turn.is_some());
    let found = tools(&out);
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].start_ns, found[0].end_ns), (200, 500));
    assert_eq!(found[0].call.name.as_deref(), Some("search"));
    // b asked for no more tools: the turn is over, reported at once.
    assert!(
        matches!(out.last(), Some(AgentRecord::Turn(turn)) if turn.start_ns == 100 && turn.end_ns == 700 && turn.calls == 2 && turn.tool_executions == 1)
    );
}

#[test]
fn history_extension_links_without_ids_and_gemini_matches_by_name() {
    let mut t = AgentTracker::new(AgentConfig::default());
    let mut out = Vec::new();
    let mut a = call(7, 0, 10);
    a.request.message_hashes = vec![11];
    a.response.tool_requests = vec![tool(None, "get_weather"), tool(None, "get_weather")];
    t.observe(&mut a, &mut out);
    let mut b = call(7, 30, 40);
    b.request.message_hashes = vec![11, 12, 13];
    b.request.tool_results = vec![tool(None, "get_weather")];
    t.observe(&mut b, &mut out);
    assert_eq!(
        a.agent.as_ref().map(|l| l.session),
        b.agent.as_ref().map(|l| l.session)
    );
    assert_eq!(
        tools(&out).len(),
        1,
        "one result answers one call, first asked first"
    );
    // Another process's identical history is another session.
    let mut c = call(8, 50, 60);
    c.request.message_hashes = vec![11, 12, 13, 14];
    t.observe(&mut c, &mut out);
    assert_ne!(c.agent.map(|l| l.session), b.agent.map(|l| l.session));
    // An unrelated call of process 7 starts its own session, no turn.
    let mut d = call(7, 70, 80);
    d.request.message_hashes = vec![99];
    t.observe(&mut d, &mut out);
    let d_link = d.agent.expect("linked");
    assert_ne!(Some(d_link.session), a.agent.map(|l| l.session));
    assert_eq!(d_link.turn, None);
}

#[test]
fn new_input_ends_the_turn_and_unanswered_calls_get_nothing() {
    let mut t = AgentTracker::new(AgentConfig::default());
    let mut out = Vec::new();
    let mut a = call(3, 0, 10);
    a.request.message_hashes = vec![1];
    a.response.tool_requests = vec![tool(Some("x"), "bash")];
    t.observe(&mut a, &mut out);
    let mut b = call(3, 20, 30);
    b.request.message_hashes = vec![1, 2, 3];
    t.observe(&mut b, &mut out);
    assert!(tools(&out).is_empty());
    assert!(matches!(&out[..], [AgentRecord::Turn(turn)] if turn.end_ns == 10 && turn.calls == 1));
    assert_eq!(
        a.agent.as_ref().map(|l| l.session),
        b.agent.as_ref().map(|l| l.session)
    );
    assert_eq!(b.agent.and_then(|l| l.turn), None);
}

#[test]
fn idle_timeout_exit_and_caps_bound_memory() {
    let cfg = AgentConfig {
        idle_timeout_ns: 100,
        max_processes: 2,
        max_sessions_per_process: 3,
        max_pending_tools: 2,
        max_response_ids: 2,
    };
    let mut t = AgentTracker::new(cfg);
    let mut out = Vec::new();
    for i in 0..10u64 {
        let mut c = call(1, i, i + 1);
        c.request.message_hashes = vec![1000 + i];
        c.response.tool_requests = (0..5)
            .map(|k| tool(Some(&format!("{i}-{k}")), "t"))
            .collect();
        t.observe(&mut c, &mut out);
    }
    assert_eq!(t.sessions(), 3);
    for pid in 2..6 {
        t.observe(&mut call(pid, 20, 21), &mut out);
    }
    assert!(t.processes.len() <= 2);
    t.tick(1_000, &mut out);
    assert_eq!(t.sessions(), 0);
    let mut c = call(9, 0, 1);
    c.response.tool_requests = vec![tool(Some("z"), "t")];
    t.observe(&mut c, &mut out);
    out.clear();
    t.process_exit(9, &mut out);
    assert!(matches!(&out[..], [AgentRecord::Turn(_)]));
    assert_eq!(t.sessions(), 0);
}

#[test]
fn session_keeps_the_first_traceparent() {
    let mut t = AgentTracker::new(AgentConfig::default());
    let mut out = Vec::new();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut a = call(5, 0, 10);
    a.request.traceparent = Some(tp.into());
    a.request.message_hashes = vec![1];
    t.observe(&mut a, &mut out);
    let mut b = call(5, 20, 30);
    b.request.message_hashes = vec![1, 2, 3];
    t.observe(&mut b, &mut out);
    assert_eq!(b.agent.and_then(|l| l.traceparent).as_deref(), Some(tp));
}

fn mcp_call(pid: u32, at: u64) -> McpCall {
    McpCall {
        process: ProcessRef {
            pid,
            tid: pid,
            comm: "agent".into(),
        },
        connection_id: 9,
        server_address: Some("tools.internal".into()),
        server_port: Some(8443),
        transport: crate::genai::McpTransport::Http {
            version: "1.1".into(),
        },
        method: "tools/call".into(),
        request_id: Some("1".into()),
        jsonrpc_version: None,
        tool_name: Some("search".into()),
        prompt_name: None,
        resource_uri: None,
        session_id: None,
        protocol_version: Some("2025-06-18".into()),
        start_ns: at,
        end_ns: at + 5,
        error_type: None,
        error_message: None,
        rpc_status_code: None,
        arguments: None,
        result: None,
        incomplete: false,
        agent: None,
    }
}

/// An MCP call made while the process's turn is open belongs to that turn; a process without
/// a session leaves it unlinked.
#[test]
fn mcp_calls_join_the_open_turn_of_their_process() {
    let mut t = AgentTracker::new(AgentConfig::default());
    let mut out = Vec::new();
    let mut a = call(3, 100, 200);
    a.response.tool_requests = vec![tool(Some("t1"), "search")];
    t.observe(&mut a, &mut out);
    let turn = a.agent.clone().expect("linked").turn;
    assert!(turn.is_some());
    t.observe_mcp(mcp_call(3, 250), &mut out);
    t.observe_mcp(mcp_call(4, 250), &mut out);
    let mcp: Vec<&McpCall> = out
        .iter()
        .filter_map(|r| match r {
            AgentRecord::Mcp(m) => Some(m.as_ref()),
            _ => None,
        })
        .collect();
    assert_eq!(mcp.len(), 2);
    assert_eq!(mcp[0].agent.as_ref().and_then(|l| l.turn), turn);
    assert_eq!(
        mcp[0].agent.as_ref().map(|l| l.session),
        a.agent.as_ref().map(|l| l.session)
    );
    assert_eq!(mcp[1].agent, None);
}

/// Processes the agent started while a tool call was pending ride on its execution; one
/// started by another process, or outside the window, does not.
#[test]
fn tool_executions_carry_the_processes_started_in_their_window() {
    let mut t = AgentTracker::new(AgentConfig::default());
    let mut out = Vec::new();
    let mut a = call(5, 100, 200);
    a.response.tool_requests = vec![tool(Some("t1"), "bash")];
    t.observe(&mut a, &mut out);
    let started = |pid, parent_pid, start_ns| ToolProcess {
        pid,
        parent_pid,
        executable: "/usr/bin/pytest".into(),
        args: vec!["pytest".into()],
        start_ns,
        exit_ns: None,
    };
    assert!(t.wants_exec(5));
    assert!(!t.wants_exec(6));
    t.observe_exec(started(50, 5, 250)); // the tool's shell
    assert!(t.wants_exec(50), "its children are followed too");
    t.observe_exec(started(51, 50, 260)); // what the shell ran
    t.observe_exit(51, 900);
    t.observe_exec(started(52, 5, 2_000)); // after the result was sent
    let mut b = call(5, 1_000, 1_100);
    b.request.tool_results = vec![tool(Some("t1"), "bash")];
    t.observe(&mut b, &mut out);
    let found = tools(&out);
    assert_eq!(found.len(), 1);
    let pids: Vec<u32> = found[0].processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, vec![50, 51]);
    assert_eq!(found[0].processes[1].exit_ns, Some(900));
    assert_eq!(found[0].processes_not_listed, 0);
}
