//! Many calls at once, traced by a real llmtap (eBPF): 50 streaming curl processes, each on its
//! own connection, and 20 streams multiplexed on one HTTP/2 connection by the Python SDK over
//! httpx. The replay server gives every response its own id, so each span can be checked
//! against the call that produced it.

use std::collections::BTreeSet;

use llmtap_tests::replay::{
    LlmtapRun, ReplayOptions, ReplayServer, cassette_path, curl_command, load_json,
    python_sdk_command, run_client, sdk_clients_missing, span_differences, spans_of,
};
use llmtap_tests::require_ebpf;
use serde_json::Value;

/// The first `"id":"..."` a client printed: the id of the response it received.
fn first_response_id(output: &str) -> Option<String> {
    let start = output.find("\"id\":\"")? + 6;
    let len = output.get(start..)?.find('"')?;
    output.get(start..start + len).map(str::to_string)
}

/// The recording's expected values, with the server's per-request id suffix.
fn expected_with_id(cassette: &Value, id: &str) -> Value {
    let mut c = cassette.clone();
    c["expected"]["response_id"] = Value::from(id);
    c
}

#[test]
fn fifty_concurrent_streaming_clients_get_their_own_spans() {
    if !require_ebpf("fifty_concurrent_streaming_clients_get_their_own_spans") {
        return;
    }
    const CLIENTS: usize = 50;
    let path = cassette_path("openai__chat_stream_include_usage");
    let cassette = load_json(&path).expect("cassette");
    let server = ReplayServer::start_with(
        std::slice::from_ref(&path),
        &ReplayOptions {
            unique_ids: true,
            ..ReplayOptions::default()
        },
    )
    .expect("replay server");
    let llmtap = LlmtapRun::start(&[]).expect("llmtap starts");

    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| scope.spawn(|| run_client(&mut curl_command(&server, &cassette, false))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread").expect("client runs"))
            .collect()
    });
    let pids: Vec<u32> = outcomes.iter().map(|o| o.pid).collect();
    llmtap.wait_for(|spans| pids.iter().all(|p| !spans_of(spans, *p).is_empty()));
    let (spans, _, log) = llmtap.stop();

    let mut ids = BTreeSet::new();
    let mut failures = Vec::new();
    for outcome in &outcomes {
        assert_eq!(outcome.code, Some(0), "curl failed: {}", outcome.stderr);
        let id = first_response_id(&outcome.stdout).expect("the stream carries an id");
        ids.insert(id.clone());
        let ours = spans_of(&spans, outcome.pid);
        if ours.len() != 1 {
            failures.push(format!("pid {}: {} spans", outcome.pid, ours.len()));
            continue;
        }
        let diffs = span_differences(ours[0], &expected_with_id(&cassette, &id), "1.1");
        if !diffs.is_empty() {
            failures.push(format!("pid {} ({id}): {}", outcome.pid, diffs.join("; ")));
        }
    }
    assert_eq!(ids.len(), CLIENTS, "every call got its own response id");
    assert_eq!(server.connections(), CLIENTS, "one connection per client");
    assert!(
        spans_of(&spans, server.pid()).is_empty(),
        "no span for the server"
    );
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} calls wrong:\n{}\n{log}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(spans.len(), CLIENTS, "exactly one span per call: {spans:#?}");
}

#[test]
fn twenty_h2_streams_on_one_connection_get_their_own_spans() {
    let test = "twenty_h2_streams_on_one_connection_get_their_own_spans";
    if !require_ebpf(test) {
        return;
    }
    if let Some(missing) = sdk_clients_missing() {
        assert!(!llmtap_tests::ebpf_required(), "{test}: {missing}");
        eprintln!("SKIPPED {test}: {missing}");
        return;
    }
    const STREAMS: usize = 20;
    let path = cassette_path("openai__chat_stream_include_usage");
    let cassette = load_json(&path).expect("cassette");
    let server = ReplayServer::start_with(
        std::slice::from_ref(&path),
        &ReplayOptions {
            unique_ids: true,
            ..ReplayOptions::default()
        },
    )
    .expect("replay server");
    let llmtap = LlmtapRun::start(&[]).expect("llmtap starts");
    let outcome = run_client(&mut python_sdk_command(
        &server,
        &path,
        &["--http2", "--concurrent", &STREAMS.to_string()],
    ))
    .expect("client runs");
    assert_eq!(outcome.code, Some(0), "client failed: {}", outcome.stderr);
    let printed: BTreeSet<String> = outcome
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("id "))
        .map(str::to_string)
        .collect();
    assert_eq!(printed.len(), STREAMS, "{}", outcome.stdout);
    let spans = llmtap.wait_for(|spans| spans_of(spans, outcome.pid).len() >= STREAMS);
    let (spans_at_stop, _, log) = llmtap.stop();
    assert!(spans_at_stop.len() >= spans.len());

    assert_eq!(server.connections(), 1, "one h2 connection: {}", server.log());
    assert!(
        server.served().iter().all(|(_, v)| v == "HTTP/2.0"),
        "{:?}",
        server.served()
    );
    let ours = spans_of(&spans_at_stop, outcome.pid);
    assert_eq!(ours.len(), STREAMS, "{ours:#?}\n{log}");
    let mut seen = BTreeSet::new();
    for span in ours {
        let id = span["attributes"]["gen_ai.response.id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(printed.contains(&id), "span id {id} not among {printed:?}");
        let diffs = span_differences(span, &expected_with_id(&cassette, &id), "2");
        assert!(diffs.is_empty(), "{id}: {diffs:#?}");
        seen.insert(id);
    }
    assert_eq!(seen, printed, "each stream's span carries its own id");
}
