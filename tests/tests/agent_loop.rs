//! An agent's tool loop traced end to end by a real llmtap (eBPF) (issue 18 item 6): the
//! official `openai` Python SDK asks for two tools (a recorded first turn), runs them as real
//! child processes, and sends their results (a constructed second turn,
//! `tests/data/agent/`). The span tree is checked exactly: one `invoke_agent` root, both `chat`
//! calls and both `execute_tool` spans its children in one trace, tool names and call ids as
//! on the wire, each tool span from the end of the response that asked to the start of the
//! request that answered, with the processes the tools started (a shell and its `sleep`) as
//! events, and nothing else for the process.

use llmtap_tests::replay::{
    LlmtapRun, ReplayOptions, ReplayServer, agent_spans_of, cassette_path, run_client,
    sdk_clients_missing, spans_of,
};
use llmtap_tests::{repo_root, require_ebpf};
use serde_json::Value;

fn nanos(span: &Value, key: &str) -> u64 {
    span[key].as_u64().unwrap_or(0)
}

#[test]
fn sdk_tool_loop_is_one_agent_turn_with_its_tool_executions() {
    if !require_ebpf("sdk_tool_loop_is_one_agent_turn_with_its_tool_executions") {
        return;
    }
    if let Some(missing) = sdk_clients_missing() {
        panic!("{missing}");
    }
    let first = cassette_path("openai__chat_parallel_tool_calls");
    let second = repo_root().join("tests/data/agent/openai__chat_tool_results.json");
    let server = ReplayServer::start_with(&[first.clone(), second], &ReplayOptions::default())
        .expect("replay server");
    let llmtap = LlmtapRun::start(&[]).expect("llmtap");
    let mut client = server.client_command(repo_root().join("tests/.venv/bin/python3"));
    client
        .arg(repo_root().join("tests/clients/agent_loop_client.py"))
        .arg(&first);
    let outcome = run_client(&mut client).expect("agent");
    assert_eq!(
        outcome.stdout,
        "tools get_weather,get_news\nanswer It is 18C and sunny in San Francisco, and cable cars run late tonight.\n",
        "{}",
        outcome.stderr
    );
    let pid = outcome.pid;
    llmtap
        .wait_for(|spans| spans_of(spans, pid).len() >= 2 && agent_spans_of(spans, pid).len() >= 3);
    let (spans, _, log) = llmtap.stop();

    let mut calls = spans_of(&spans, pid);
    calls.sort_by_key(|s| nanos(s, "start_time_unix_nano"));
    let agent = agent_spans_of(&spans, pid);
    assert_eq!(calls.len(), 2, "{spans:#?}\n{log}");
    assert_eq!(agent.len(), 3, "{spans:#?}\n{log}");
    let turns: Vec<&&Value> = agent
        .iter()
        .filter(|s| s["name"] == "invoke_agent")
        .collect();
    assert_eq!(turns.len(), 1, "{agent:#?}");
    let turn = turns[0];
    let mut tools: Vec<&&Value> = agent
        .iter()
        .filter(|s| s["name"] != "invoke_agent")
        .collect();
    tools.sort_by_key(|s| {
        s["attributes"]["gen_ai.tool.call.id"]
            .as_str()
            .map(str::to_string)
    });

    // The tree: one trace, the turn its root, every other span its child.
    assert_eq!(turn["parent_span_id"], Value::Null, "{turn:#}");
    let trace = &turn["trace_id"];
    for span in calls.iter().copied().chain(tools.iter().map(|s| **s)) {
        assert_eq!(&span["trace_id"], trace, "{span:#}");
        assert_eq!(span["parent_span_id"], turn["span_id"], "{span:#}");
    }
    assert_eq!(turn["attributes"]["llmtap.agent.calls"], 2);
    assert_eq!(turn["attributes"]["llmtap.agent.tool_executions"], 2);

    // The calls, as recorded.
    assert_eq!(
        calls[0]["attributes"]["gen_ai.response.id"],
        "chatcmpl-BWksGmkBZRsvsGK2EVzzmjTI7wn6P"
    );
    assert_eq!(
        calls[1]["attributes"]["gen_ai.response.id"],
        "chatcmpl-llmtapAgentTurn2"
    );

    // The tools: names and ids from the wire, each between the two calls.
    let summary: Vec<(String, String, String)> = tools
        .iter()
        .map(|s| {
            let a = &s["attributes"];
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                a["gen_ai.tool.name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                a["gen_ai.tool.call.id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "execute_tool get_weather".to_string(),
                "get_weather".to_string(),
                "call_EgULHWKqGjuB36aUeiOSpALZ".to_string()
            ),
            (
                "execute_tool get_news".to_string(),
                "get_news".to_string(),
                "call_Xer9QGOTDMG2Bxn9AKGiVM14".to_string()
            ),
        ]
    );
    // One clock offset per span: the same instant may differ by the offset's re-measurement.
    const SLACK_NS: u64 = 5_000_000;
    let first_end = nanos(calls[0], "end_time_unix_nano");
    let second_start = nanos(calls[1], "start_time_unix_nano");
    for tool in &tools {
        let (start, end) = (
            nanos(tool, "start_time_unix_nano"),
            nanos(tool, "end_time_unix_nano"),
        );
        assert!(
            start.abs_diff(first_end) <= SLACK_NS,
            "{tool:#}\n{:#}",
            calls[0]
        );
        assert!(
            end.abs_diff(second_start) <= SLACK_NS,
            "{tool:#}\n{:#}",
            calls[1]
        );
        // The tools ran between the two calls (0.3 s and 0.2 s of sleep).
        assert!(end - start >= 500_000_000, "{tool:#}");
    }
    assert_eq!(tools[0]["kind"], "INTERNAL");

    // The processes the tools ran (`sh -c`, and the `sleep` it started) are events of the
    // tool spans: the two calls ran one after the other in one window, which both share.
    for tool in &tools {
        let events = tool["events"].as_array().cloned().unwrap_or_default();
        let of = |name: &str| -> Vec<&Value> {
            events
                .iter()
                .filter(|e| e["attributes"]["process.executable.name"] == name)
                .collect()
        };
        let sleeps = of("sleep");
        assert_eq!(sleeps.len(), 2, "{tool:#}");
        let shells: Vec<&Value> = events
            .iter()
            .filter(|e| e["attributes"]["process.parent_pid"] == u64::from(pid))
            .collect();
        assert_eq!(
            shells.len(),
            2,
            "one shell per tool, children of the agent: {tool:#}"
        );
        let shell_pids: Vec<&Value> = shells
            .iter()
            .map(|e| &e["attributes"]["process.pid"])
            .collect();
        for sleep in &sleeps {
            let a = &sleep["attributes"];
            assert_eq!(
                a["llmtap.process.duration"].as_f64().map(|d| d >= 0.2),
                Some(true),
                "{sleep:#}"
            );
            assert!(shell_pids.contains(&&a["process.parent_pid"]), "{sleep:#}");
            assert_eq!(
                a["process.command_line"],
                Value::Null,
                "command lines are opt-in"
            );
            let at = sleep["time_unix_nano"].as_u64().unwrap_or(0);
            assert!(
                at >= nanos(tool, "start_time_unix_nano")
                    && at <= nanos(tool, "end_time_unix_nano")
            );
        }
    }
    assert!(nanos(turn, "start_time_unix_nano") <= nanos(calls[0], "start_time_unix_nano"));
    assert!(nanos(turn, "end_time_unix_nano") >= nanos(calls[1], "end_time_unix_nano"));
}
