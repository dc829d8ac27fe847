//! Real clients against the replay server, traced by a real llmtap (eBPF): curl over HTTP/1.1
//! and h2, the official `openai` and `anthropic` Python SDKs, and the `openai` npm SDK on node.
//! For every recording a client can reproduce: exactly one span for the call, equal to the
//! recording's `expected` values; the client's output and exit code are the same with and
//! without llmtap; the replay server's own TLS traffic yields no span; the planted API key
//! appears nowhere in llmtap's output or log.

use std::path::PathBuf;
use std::process::Command;

use llmtap::testing::assert_no_failures;
use llmtap_tests::replay::{
    ClientOutcome, LlmtapRun, PLANTED_API_KEY, ReplayServer, curl_command, https_cassettes,
    load_json, node_sdk_command, python_sdk_command, sdk_clients_missing, span_differences,
    spans_of,
};
use llmtap_tests::require_ebpf;
use serde_json::Value;

struct Case {
    path: PathBuf,
    json: Value,
}

impl Case {
    fn name(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

fn cases(keep: impl Fn(&Value) -> bool) -> Vec<Case> {
    https_cassettes()
        .into_iter()
        .filter_map(|path| {
            let json = load_json(&path).ok()?;
            keep(&json).then_some(Case { path, json })
        })
        .collect()
}

const OPENAI_COMPATIBLE: &[&str] = &[
    "openai",
    "azure.ai.openai",
    "groq",
    "deepseek",
    "mistral_ai",
    "openrouter",
];
const OPENAI_APIS: &[&str] = &["chat_completions", "completions", "embeddings", "responses"];

fn openai_sdk_case(c: &Value) -> bool {
    OPENAI_COMPATIBLE.contains(&c["provider"].as_str().unwrap_or_default())
        && OPENAI_APIS.contains(&c["api"].as_str().unwrap_or_default())
}

/// A client's outcome, the pid of the replay server it used, and what that server served.
type TracedClient = (ClientOutcome, u32, Vec<(String, String)>);

/// Runs each case's client twice, each time against a fresh replay server holding only that
/// recording (so identical requests recorded twice cannot be confused): first without llmtap,
/// then with it; returns the failures found.
fn run_matrix(
    label: &str,
    cases: &[Case],
    protocol: &str,
    client: impl Fn(&ReplayServer, &Case) -> Command + Sync,
) -> Vec<String> {
    let run_one = |case: &Case| -> anyhow::Result<TracedClient> {
        let server = ReplayServer::start(std::slice::from_ref(&case.path))?;
        let outcome = llmtap_tests::replay::run_client(&mut client(&server, case))?;
        Ok((outcome, server.pid(), server.served()))
    };
    let mut failures = Vec::new();
    let baseline: Vec<_> = run_parallel(cases, &run_one)
        .into_iter()
        .zip(cases)
        .map(|(run, case)| match run {
            Ok((outcome, _, _)) => Some(outcome),
            Err(e) => {
                failures.push(format!("{label} {}: baseline run: {e:#}", case.name()));
                None
            }
        })
        .collect();

    let llmtap = LlmtapRun::start(&[]).expect("llmtap starts");
    let traced: Vec<_> = run_parallel(cases, &run_one)
        .into_iter()
        .zip(cases)
        .map(|(run, case)| match run {
            Ok(run) => Some(run),
            Err(e) => {
                failures.push(format!("{label} {}: traced run: {e:#}", case.name()));
                None
            }
        })
        .collect();
    let pids: Vec<u32> = traced.iter().flatten().map(|(o, _, _)| o.pid).collect();
    llmtap.wait_for(|spans| pids.iter().all(|pid| !spans_of(spans, *pid).is_empty()));
    let (spans, jsonl, log) = llmtap.stop();

    for ((case, before), after) in cases.iter().zip(&baseline).zip(&traced) {
        let (Some(before), Some((after, server_pid, served))) = (before, after) else {
            continue;
        };
        let name = case.name();
        if served.len() != 1 || served[0].0 != name {
            failures.push(format!("{label} {name}: the server served {served:?}"));
        }
        if before.visible() != after.visible() {
            failures.push(format!(
                "{label} {name}: the client behaved differently under llmtap:\n  without: {:?}\n  with: {:?}\n  stderr: {}",
                before.visible(),
                after.visible(),
                after.stderr
            ));
        }
        if !spans_of(&spans, *server_pid).is_empty() {
            failures.push(format!(
                "{label} {name}: a span for the replay server's own TLS"
            ));
        }
        let ours = spans_of(&spans, after.pid);
        if ours.len() != 1 {
            failures.push(format!(
                "{label} {name}: {} spans for client pid {} (exit {:?}, stderr {}): {ours:#?}",
                ours.len(),
                after.pid,
                after.code,
                after.stderr.trim()
            ));
            continue;
        }
        let diffs = span_differences(ours[0], &case.json, protocol);
        if !diffs.is_empty() {
            failures.push(format!("{label} {name}:\n    {}", diffs.join("\n    ")));
        }
    }
    if jsonl.contains(PLANTED_API_KEY) || log.contains(PLANTED_API_KEY) {
        failures.push(format!(
            "{label}: the planted API key reached llmtap's output"
        ));
    }
    if !failures.is_empty() {
        failures.push(format!("{label}: llmtap log:\n{log}"));
    }
    failures
}

/// Clients run a few at a time (each against its own server): quicker on small machines, and
/// llmtap must keep concurrent processes apart anyway.
fn run_parallel<T: Send>(cases: &[Case], run: &(impl Fn(&Case) -> T + Sync)) -> Vec<T> {
    const AT_ONCE: usize = 3;
    let mut out = Vec::with_capacity(cases.len());
    for batch in cases.chunks(AT_ONCE) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = batch.iter().map(|c| scope.spawn(move || run(c))).collect();
            for handle in handles {
                out.push(handle.join().expect("client thread"));
            }
        });
    }
    out
}

#[test]
fn curl_http1_replays_every_recording() {
    if !require_ebpf("curl_http1_replays_every_recording") {
        return;
    }
    let all = cases(|_| true);
    assert!(all.len() >= 47, "{} HTTPS recordings", all.len());
    assert_no_failures(run_matrix("curl --http1.1", &all, "1.1", |s, c| {
        curl_command(s, &c.json, false)
    }));
}

#[test]
fn curl_h2_replays_every_recording() {
    if !require_ebpf("curl_h2_replays_every_recording") {
        return;
    }
    let all = cases(|_| true);
    assert_no_failures(run_matrix("curl --http2", &all, "2", |s, c| {
        curl_command(s, &c.json, true)
    }));
}

fn sdks_ready(test: &str) -> bool {
    if !require_ebpf(test) {
        return false;
    }
    if let Some(missing) = sdk_clients_missing() {
        assert!(
            !llmtap_tests::ebpf_required(),
            "{test}: the SDK clients are missing: {missing}"
        );
        eprintln!("SKIPPED {test}: {missing}");
        return false;
    }
    true
}

#[test]
fn python_openai_and_anthropic_sdks() {
    if !sdks_ready("python_openai_and_anthropic_sdks") {
        return;
    }
    let sdk_cases = cases(|c| openai_sdk_case(c) || c["api"] == "anthropic_messages");
    assert!(sdk_cases.len() >= 35, "{} SDK recordings", sdk_cases.len());
    assert_no_failures(run_matrix("python SDK", &sdk_cases, "1.1", |s, c| {
        python_sdk_command(s, &c.path, &[])
    }));
}

#[test]
fn python_sdks_over_httpx_h2() {
    if !sdks_ready("python_sdks_over_httpx_h2") {
        return;
    }
    // One streaming and one plain call per SDK, with httpx's `http2=True`.
    let names = [
        "openai__chat_stream_include_usage",
        "openai__responses_reasoning_1",
        "anthropic__messages_stream_thinking",
        "anthropic__messages_tool_use",
    ];
    let sdk_cases: Vec<Case> = cases(|_| true)
        .into_iter()
        .filter(|c| names.contains(&c.name().as_str()))
        .collect();
    assert_eq!(sdk_cases.len(), names.len());
    assert_no_failures(run_matrix("python SDK h2", &sdk_cases, "2", |s, c| {
        python_sdk_command(s, &c.path, &["--http2"])
    }));
}

#[test]
fn node_openai_sdk() {
    if !sdks_ready("node_openai_sdk") {
        return;
    }
    let node_cases = cases(|c| openai_sdk_case(c) && c["provider"] != "azure.ai.openai");
    assert!(node_cases.len() >= 20, "{} recordings", node_cases.len());
    assert_no_failures(run_matrix("node SDK", &node_cases, "1.1", |s, c| {
        node_sdk_command(s, &c.path)
    }));
}
