//! Agent traces from recorded multi-turn tool use: a real first exchange (the model asks for two
//! tools in parallel) and a constructed second one carrying both results, replayed as capture
//! output of one process, run through the pipeline, the agent tracker and the span builder.
//! The span tree is checked exactly.

use std::path::Path;
use std::sync::Arc;

use llmtap::export::attributes::{AttrValue, find, keys};
use llmtap::export::clock::ClockOffset;
use llmtap::export::resource::ProcessResource;
use llmtap::export::span::{CallSpan, ContentCapture, Kind, SpanBuilder};
use llmtap::genai::{AgentConfig, AgentRecord, AgentTracker, CallRecord};
use llmtap::testing::{ReplayOptions, cassette_events, load_cassette};
use llmtap::{Pipeline, PipelineConfig};

fn fixture(name: &str) -> llmtap::testing::Cassette {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/agent")
        .join(name);
    load_cassette(&path).expect("fixture loads")
}

/// Both turns of one process (two connections), the second starting 2 s after the first.
fn two_turns(capture_content: bool) -> (Vec<CallRecord>, Vec<AgentRecord>) {
    let mut pipeline = Pipeline::new(PipelineConfig {
        capture_content,
        ..PipelineConfig::default()
    });
    let mut calls = Vec::new();
    let first = ReplayOptions {
        start_ns: 1_000_000_000,
        ..ReplayOptions::default()
    };
    let mut second = ReplayOptions {
        start_ns: 3_000_000_000,
        ..ReplayOptions::default()
    };
    second.conn.conn += 1;
    for event in cassette_events(
        &fixture("openai__chat_parallel_tool_calls_turn1.json"),
        &first,
    ) {
        pipeline.push(event, &mut calls);
    }
    for event in cassette_events(&fixture("openai__chat_tool_results_turn2.json"), &second) {
        pipeline.push(event, &mut calls);
    }
    pipeline.finish(&mut calls);
    assert_eq!(calls.len(), 2);
    let mut tracker = AgentTracker::new(AgentConfig::default());
    let mut agent = Vec::new();
    for call in &mut calls {
        tracker.observe(call, &mut agent);
    }
    tracker.process_exit(4242, &mut agent);
    assert_eq!(tracker.sessions(), 0, "the exit ends the sessions");
    (calls, agent)
}

fn resource() -> Arc<ProcessResource> {
    Arc::new(ProcessResource {
        service_name: "python3".into(),
        pid: 4242,
        executable_name: "python3".into(),
        executable_path: None,
        command_line: None,
        host_name: None,
        container_id: None,
        kubernetes: None,
        configured_attributes: Default::default(),
        openinference_project: None,
    })
}

fn spans(capture_content: bool) -> Vec<CallSpan> {
    let (calls, agent) = two_turns(capture_content);
    let builder = SpanBuilder::new(
        ClockOffset::fixed(0),
        ContentCapture {
            enabled: capture_content,
            max_bytes: 1 << 16,
        },
    );
    let mut out: Vec<CallSpan> = calls
        .iter()
        .map(|c| builder.build(c, resource(), None))
        .collect();
    out.extend(agent.iter().map(|a| builder.build_agent(a, resource())));
    out
}

fn str_attr<'a>(span: &'a CallSpan, key: &str) -> Option<&'a str> {
    match find(&span.attributes, key) {
        Some(AttrValue::Str(s)) => Some(s),
        _ => None,
    }
}

#[test]
fn a_tool_loop_is_one_trace_under_invoke_agent() {
    let spans = spans(false);
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "chat gpt-4.1-nano",
            "chat gpt-4.1-nano",
            "execute_tool get_weather",
            "execute_tool get_news",
            "invoke_agent",
        ]
    );
    let (chat1, chat2, weather, news, agent) =
        (&spans[0], &spans[1], &spans[2], &spans[3], &spans[4]);
    // One trace; invoke_agent is the root, everything else its child.
    for s in &spans {
        assert_eq!(s.trace_id, agent.trace_id, "{}", s.name);
    }
    assert_eq!(agent.parent_span_id, None);
    assert_eq!(agent.kind, Kind::Internal);
    for s in [chat1, chat2, weather, news] {
        assert_eq!(s.parent_span_id, Some(agent.span_id), "{}", s.name);
        assert!(!s.parent_is_remote);
    }
    assert_eq!(chat1.kind, Kind::Client);
    assert_eq!(weather.kind, Kind::Internal);
    // Durations: each tool runs from the end of the asking response to the start of the
    // request carrying its result; the turn spans both calls.
    assert!(chat1.end_unix_nanos <= weather.start_unix_nanos);
    assert_eq!(weather.start_unix_nanos, chat1.end_unix_nanos);
    assert_eq!(weather.end_unix_nanos, chat2.start_unix_nanos);
    assert_eq!(news.start_unix_nanos, chat1.end_unix_nanos);
    assert_eq!(news.end_unix_nanos, chat2.start_unix_nanos);
    assert_eq!(chat2.start_unix_nanos, 3_000_000_000);
    assert!(weather.end_unix_nanos > weather.start_unix_nanos);
    assert_eq!(agent.start_unix_nanos, chat1.start_unix_nanos);
    assert_eq!(agent.end_unix_nanos, chat2.end_unix_nanos);
    // Attributes.
    assert_eq!(
        str_attr(weather, keys::OPERATION_NAME),
        Some("execute_tool")
    );
    assert_eq!(str_attr(weather, keys::TOOL_NAME), Some("get_weather"));
    assert_eq!(
        str_attr(weather, keys::TOOL_CALL_ID),
        Some("call_EgULHWKqGjuB36aUeiOSpALZ")
    );
    assert_eq!(
        str_attr(news, keys::TOOL_CALL_ID),
        Some("call_Xer9QGOTDMG2Bxn9AKGiVM14")
    );
    assert_eq!(str_attr(weather, keys::TOOL_TYPE), Some("function"));
    assert_eq!(
        str_attr(weather, keys::TOOL_CALL_ARGUMENTS),
        None,
        "content is off"
    );
    assert_eq!(
        str_attr(weather, keys::TOOL_CALL_RESULT),
        None,
        "content is off"
    );
    assert_eq!(str_attr(agent, keys::OPERATION_NAME), Some("invoke_agent"));
    assert_eq!(
        find(&agent.attributes, keys::LLMTAP_AGENT_CALLS),
        Some(&AttrValue::Int(2))
    );
    assert_eq!(
        find(&agent.attributes, keys::LLMTAP_AGENT_TOOL_EXECUTIONS),
        Some(&AttrValue::Int(2))
    );
    assert_eq!(
        find(&chat1.attributes, keys::LLMTAP_TOOL_CALLS),
        Some(&AttrValue::StrArray(vec![
            "get_weather".into(),
            "get_news".into()
        ]))
    );
}

#[test]
fn tool_arguments_and_results_only_with_content_capture() {
    let spans = spans(true);
    let weather = spans
        .iter()
        .find(|s| s.name == "execute_tool get_weather")
        .expect("tool span");
    assert_eq!(
        str_attr(weather, keys::TOOL_CALL_ARGUMENTS),
        Some(r#"{"location": "San Francisco"}"#)
    );
    assert_eq!(
        str_attr(weather, keys::TOOL_CALL_RESULT),
        Some(r#"{"temperature_c": 17, "sky": "fog"}"#)
    );
}

#[test]
fn an_unanswered_tool_call_gets_no_span() {
    let mut pipeline = Pipeline::new(PipelineConfig::default());
    let mut calls = Vec::new();
    let opts = ReplayOptions::default();
    for event in cassette_events(
        &fixture("openai__chat_parallel_tool_calls_turn1.json"),
        &opts,
    ) {
        pipeline.push(event, &mut calls);
    }
    pipeline.finish(&mut calls);
    let mut tracker = AgentTracker::new(AgentConfig::default());
    let mut agent = Vec::new();
    for call in &mut calls {
        tracker.observe(call, &mut agent);
    }
    assert!(agent.is_empty(), "nothing before the turn ends");
    tracker.finish(&mut agent);
    // The turn (the model asked for tools) is reported; no tool execution is invented.
    assert_eq!(agent.len(), 1);
    assert!(matches!(&agent[0], AgentRecord::Turn(t) if t.calls == 1 && t.tool_executions == 0));
    assert_eq!(calls[0].response.tool_calls, ["get_weather", "get_news"]);
}
