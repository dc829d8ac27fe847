//! An agent's tool loop traced end to end by a real llmtap (eBPF) (issue 18 item 6), for each
//! API with tool calls: an official SDK (`openai` for Chat Completions and Responses,
//! `anthropic` for Messages) asks for tools (a recorded first turn), runs them as real child
//! processes, and sends their results (a constructed second turn, `tests/data/agent/`). The
//! span tree is checked exactly: one `invoke_agent` root, both model calls and one
//! `execute_tool` span per tool call its children in one trace, tool names and call ids as on
//! the wire, each tool span from the end of the response that asked to the start of the
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

/// One two-turn tool loop and what its trace must be.
struct Loop<'a> {
    test: &'a str,
    /// `agent_loop_client.py`'s API argument.
    api: &'a str,
    first_cassette: &'a str,
    second_cassette: &'a str,
    stdout: &'a str,
    response_ids: [&'a str; 2],
    /// (tool name, call id), sorted by call id.
    tools: &'a [(&'a str, &'a str)],
}

#[test]
fn sdk_tool_loop_is_one_agent_turn_with_its_tool_executions() {
    check_loop(Loop {
        test: "sdk_tool_loop_is_one_agent_turn_with_its_tool_executions",
        api: "chat",
        first_cassette: "openai__chat_parallel_tool_calls",
        second_cassette: "openai__chat_tool_results.json",
        stdout: "tools get_weather,get_news\nanswer It is 18C and sunny in San Francisco, and cable cars run late tonight.\n",
        response_ids: [
            "chatcmpl-BWksGmkBZRsvsGK2EVzzmjTI7wn6P",
            "chatcmpl-llmtapAgentTurn2",
        ],
        tools: &[
            ("get_weather", "call_EgULHWKqGjuB36aUeiOSpALZ"),
            ("get_news", "call_Xer9QGOTDMG2Bxn9AKGiVM14"),
        ],
    });
}

#[test]
fn responses_function_call_loop_is_one_agent_turn() {
    check_loop(Loop {
        test: "responses_function_call_loop_is_one_agent_turn",
        api: "responses",
        first_cassette: "openai__responses_function_call",
        second_cassette: "openai__responses_function_call_output.json",
        stdout: "tools get_weather\nanswer It is 18C and sunny in Paris.\n",
        response_ids: [
            "resp_0e24a47955abae920069cbdf5f685c81978d9f91c3422081db",
            "resp_llmtapAgentTurn2",
        ],
        tools: &[("get_weather", "call_u7hc7oWBn1bvGlcSegpiJOiJ")],
    });
}

#[test]
fn anthropic_tool_use_loop_is_one_agent_turn() {
    check_loop(Loop {
        test: "anthropic_tool_use_loop_is_one_agent_turn",
        api: "anthropic",
        first_cassette: "anthropic__messages_tool_use",
        second_cassette: "anthropic__messages_tool_results.json",
        stdout: "tools get_weather,get_time\nanswer It is 64F and cloudy in New York, and the local time is 10:02.\n",
        response_ids: ["msg_01RBkXFe9TmDNNWThMz2HmGt", "msg_llmtapAgentTurn2"],
        tools: &[
            ("get_weather", "toolu_012r6TBCWjRHG71j6zruYyUL"),
            ("get_time", "toolu_01SkeBKkLCNYWNuivqFerGDd"),
        ],
    });
}

fn check_loop(case: Loop<'_>) {
    if !require_ebpf(case.test) {
        return;
    }
    if let Some(missing) = sdk_clients_missing() {
        panic!("{missing}");
    }
    let first = cassette_path(case.first_cassette);
    let second = repo_root()
        .join("tests/data/agent")
        .join(case.second_cassette);
    let server = ReplayServer::start_with(&[first.clone(), second], &ReplayOptions::default())
        .expect("replay server");
    let llmtap = LlmtapRun::start(&[]).expect("llmtap");
    let mut client = server.client_command(repo_root().join("tests/.venv/bin/python3"));
    client
        .arg(repo_root().join("tests/clients/agent_loop_client.py"))
        .arg(case.api)
        .arg(&first);
    let outcome = run_client(&mut client).expect("agent");
    assert_eq!(outcome.stdout, case.stdout, "{}", outcome.stderr);
    let pid = outcome.pid;
    let tool_count = case.tools.len();
    llmtap.wait_for(|spans| {
        spans_of(spans, pid).len() >= 2 && agent_spans_of(spans, pid).len() > tool_count
    });
    let (spans, _, log) = llmtap.stop();

    let mut calls = spans_of(&spans, pid);
    calls.sort_by_key(|s| nanos(s, "start_time_unix_nano"));
    let agent = agent_spans_of(&spans, pid);
    assert_eq!(calls.len(), 2, "{spans:#?}\n{log}");
    assert_eq!(agent.len(), 1 + tool_count, "{spans:#?}\n{log}");
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
    assert_eq!(
        turn["attributes"]["llmtap.agent.tool_executions"],
        tool_count
    );

    // The calls, as recorded.
    for (call, id) in calls.iter().zip(case.response_ids) {
        assert_eq!(call["attributes"]["gen_ai.response.id"], id, "{call:#}");
    }

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
    let want: Vec<(String, String, String)> = case
        .tools
        .iter()
        .map(|(name, id)| {
            (
                format!("execute_tool {name}"),
                name.to_string(),
                id.to_string(),
            )
        })
        .collect();
    assert_eq!(summary, want);
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
        // The tools ran between the two calls (0.3 s and 0.2 s of sleep each, one after
        // the other; a single tool sleeps 0.3 s).
        let slept = if tool_count > 1 {
            500_000_000
        } else {
            300_000_000
        };
        assert!(end - start >= slept, "{tool:#}");
    }
    assert_eq!(tools[0]["kind"], "INTERNAL");

    // The processes the tools ran (`sh -c`, and the `sleep` it started) are events of the
    // tool spans: parallel calls ran one after the other in one window, which they share.
    for tool in &tools {
        let events = tool["events"].as_array().cloned().unwrap_or_default();
        let of = |name: &str| -> Vec<&Value> {
            events
                .iter()
                .filter(|e| e["attributes"]["process.executable.name"] == name)
                .collect()
        };
        let sleeps = of("sleep");
        assert_eq!(sleeps.len(), tool_count, "{tool:#}");
        let shells: Vec<&Value> = events
            .iter()
            .filter(|e| e["attributes"]["process.parent_pid"] == u64::from(pid))
            .collect();
        assert_eq!(
            shells.len(),
            tool_count,
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
