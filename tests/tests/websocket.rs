//! OpenAI Responses over WebSocket, traced with real eBPF: the Python `websockets` library
//! (its own TLS through CPython's libssl) opens `wss://api.openai.com/v1/responses` on the
//! replay server and sends `response.create` for each recorded stream on one socket, without
//! compression and with `permessage-deflate` (with and without context takeover). Each
//! exchange yields the span the same recording yields over SSE, in order; the client prints the
//! same events and exits the same way with and without llmtap; the planted API key appears in
//! no llmtap output.

use std::path::PathBuf;

use llmtap_tests::replay::{
    LlmtapRun, PLANTED_API_KEY, ReplayOptions, ReplayServer, load_json, run_client,
    span_differences, spans_of,
};
use llmtap_tests::websocket::WsMode;
use llmtap_tests::{repo_root, require_ebpf};

const STREAMS: [&str; 2] = [
    "tests/data/cassettes/openai__responses_stream_1.json",
    "tests/data/cassettes/openai__responses_stream_2.json",
];

fn python() -> Option<PathBuf> {
    let venv = repo_root().join("tests/.venv/bin/python3");
    let ok = venv.is_file()
        && std::process::Command::new(&venv)
            .args(["-c", "import websockets"])
            .output()
            .is_ok_and(|o| o.status.success());
    if ok {
        Some(venv)
    } else if llmtap_tests::ebpf_required() {
        panic!("the Python `websockets` library is missing: run `cargo xtask setup`")
    } else {
        eprintln!("skipping: the Python `websockets` library is missing (cargo xtask setup)");
        None
    }
}

#[test]
fn python_websockets_responses_give_the_sse_spans() {
    if !require_ebpf("python_websockets_responses_give_the_sse_spans") {
        return;
    }
    let Some(python) = python() else {
        return;
    };
    let paths: Vec<PathBuf> = STREAMS.iter().map(|p| repo_root().join(p)).collect();
    let cassettes: Vec<serde_json::Value> = paths
        .iter()
        .map(|p| load_json(p).expect("cassette"))
        .collect();
    let modes = [
        (WsMode::Plain, false),
        (WsMode::Deflate, true),
        (WsMode::DeflateNoContextTakeover, true),
    ];
    let run = |mode: WsMode, deflate: bool| {
        let opts = ReplayOptions {
            http1_only: true,
            websocket: mode,
            ..ReplayOptions::default()
        };
        let server = ReplayServer::start_with(&paths, &opts).expect("replay server");
        let mut cmd = server.client_command(&python);
        cmd.arg(repo_root().join("tests/clients/ws_client.py"))
            .args(&paths);
        if deflate {
            cmd.arg("--deflate");
        }
        let out = run_client(&mut cmd).expect("ws client");
        (out, server)
    };
    let baseline: Vec<_> = modes.iter().map(|&(m, d)| run(m, d).0).collect();
    let llmtap = LlmtapRun::start(&[]).expect("llmtap starts");
    let mut runs = Vec::new();
    for (&(mode, deflate), before) in modes.iter().zip(&baseline) {
        let (out, server) = run(mode, deflate);
        assert_eq!(
            out.visible(),
            before.visible(),
            "{mode:?}: the client behaved differently under llmtap"
        );
        assert_eq!(
            out.code,
            Some(0),
            "{mode:?}: {}\n{}\n{}",
            out.stdout,
            out.stderr,
            server.log()
        );
        let log = server.log();
        let agreed = log
            .lines()
            .find(|l| l.contains("WebSocket upgrade"))
            .unwrap_or_default()
            .to_string();
        assert_eq!(
            agreed.contains("agreed Some"),
            deflate,
            "{mode:?}: compression as asked: {agreed}"
        );
        let served: Vec<String> = server.served().into_iter().map(|(c, _)| c).collect();
        assert_eq!(
            served,
            ["openai__responses_stream_1", "openai__responses_stream_2"],
            "{mode:?}:\n{log}"
        );
        runs.push((mode, out.pid));
    }
    let pids: Vec<u32> = runs.iter().map(|(_, pid)| *pid).collect();
    llmtap.wait_for(|spans| pids.iter().all(|pid| spans_of(spans, *pid).len() >= 2));
    let (spans, jsonl, log) = llmtap.stop();
    let mut failures = Vec::new();
    for (mode, pid) in runs {
        let ours = spans_of(&spans, pid);
        if ours.len() != 2 {
            failures.push(format!(
                "{mode:?}: {} spans for pid {pid}: {ours:#?}",
                ours.len()
            ));
            continue;
        }
        let mut ours = ours;
        ours.sort_by_key(|s| s["start_time_unix_nano"].as_u64());
        for (span, cassette) in ours.iter().zip(&cassettes) {
            let diffs = span_differences(span, cassette, "1.1");
            if !diffs.is_empty() {
                failures.push(format!("{mode:?}: {diffs:#?}\n{span:#}"));
            }
            // The HTTP status of a call over WebSocket is its socket's `101`.
            let status = &span["attributes"]["http.response.status_code"];
            if status != 101 {
                failures.push(format!("{mode:?}: http.response.status_code {status}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}\n{log}");
    for (what, text) in [("log", &log), ("spans", &jsonl)] {
        assert!(
            !text.contains(PLANTED_API_KEY),
            "API key in llmtap's {what}"
        );
    }
}
