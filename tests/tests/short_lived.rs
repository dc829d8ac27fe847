//! Short-lived clients, one call each, started one after another as a script or a cron job
//! would (issue 19 item 1): curl, the Python and Node `openai` SDKs, a Go binary and a Rust
//! (rustls) binary against the replay server, with no pause before their call. Some Go runs
//! use a copy made just before it runs (a file llmtap has never seen). Every call must be one
//! span with the recording's values. Real eBPF.
//!
//! `LLMTAP_SHORT_LIVED_CALLS` sets how many clients run (default 1000).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use llmtap_tests::replay::{
    LlmtapRun, ReplayServer, curl_command, load_json, node_sdk_command, python_sdk_command,
    run_client, sdk_clients_missing, span_differences, spans_of,
};
use llmtap_tests::{TempDir, go_client, repo_root, require_ebpf};

const CASSETTE: &str = "tests/data/cassettes/openai__chat_stream_include_usage.json";

/// Clients running at once: a busy host starts several programs at a time.
const AT_ONCE: usize = 4;

#[derive(Clone, Copy, Debug)]
enum Client {
    Curl,
    Python,
    Node,
    Go,
    GoFreshCopy,
    Rustls,
}

/// The mix: cheap clients often, the slow-starting SDKs less.
const MIX: &[Client] = &[
    Client::Curl,
    Client::Go,
    Client::Rustls,
    Client::Curl,
    Client::Python,
    Client::GoFreshCopy,
    Client::Curl,
    Client::Node,
    Client::Go,
    Client::Rustls,
];

#[test]
fn no_call_of_short_lived_clients_is_lost() {
    if !require_ebpf("no_call_of_short_lived_clients_is_lost") {
        return;
    }
    if let Some(why) = sdk_clients_missing() {
        panic!("{why}");
    }
    let calls: usize = std::env::var("LLMTAP_SHORT_LIVED_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let cassette_path = repo_root().join(CASSETTE);
    let cassette = load_json(&cassette_path).expect("cassette");
    let go = go_client(Path::new(env!("CARGO_TARGET_TMPDIR")), "go-client", "");
    let rustls = PathBuf::from(env!("CARGO_BIN_EXE_rustls-client"));
    let copies = TempDir::new("short-lived-go").expect("tmp");
    let server = ReplayServer::start(std::slice::from_ref(&cassette_path)).expect("server");
    let llmtap = LlmtapRun::start(&[]).expect("llmtap");

    let next = AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..AT_ONCE {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= calls {
                        return;
                    }
                    let kind = MIX[i % MIX.len()];
                    let mut cmd = command(
                        kind,
                        i,
                        &server,
                        &cassette_path,
                        &go,
                        &rustls,
                        copies.path(),
                    );
                    let outcome = run_client(&mut cmd).expect("client runs");
                    results.lock().expect("lock").push((kind, outcome));
                }
            });
        }
    });
    let results = results.into_inner().expect("lock");
    let failed_clients: Vec<String> = results
        .iter()
        .filter(|(_, o)| o.code != Some(0))
        .map(|(kind, o)| format!("{kind:?} pid {} exit {:?}: {}", o.pid, o.code, o.stderr))
        .collect();
    assert!(
        failed_clients.is_empty(),
        "clients failed: {failed_clients:#?}"
    );

    let pids: Vec<u32> = results.iter().map(|(_, o)| o.pid).collect();
    llmtap.wait_for(|spans| pids.iter().all(|pid| !spans_of(spans, *pid).is_empty()));
    let (spans, _, log) = llmtap.stop();
    let mut lost = Vec::new();
    for (kind, outcome) in &results {
        let ours = spans_of(&spans, outcome.pid);
        let protocol = "1.1";
        let problem = match ours.as_slice() {
            [] => Some("no span".to_string()),
            [one] => {
                let diffs = span_differences(one, &cassette, protocol);
                (!diffs.is_empty()).then(|| diffs.join("; "))
            }
            many => Some(format!("{} spans", many.len())),
        };
        if let Some(problem) = problem {
            lost.push(format!("{kind:?} pid {}: {problem}", outcome.pid));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {calls} calls lost or wrong:\n{}\nllmtap log:\n{log}",
        lost.len(),
        lost.join("\n")
    );
}

fn command(
    kind: Client,
    i: usize,
    server: &ReplayServer,
    cassette_path: &Path,
    go: &Path,
    rustls: &Path,
    copies: &Path,
) -> Command {
    match kind {
        Client::Curl => {
            let cassette = load_json(cassette_path).expect("cassette");
            curl_command(server, &cassette, false)
        }
        Client::Python => python_sdk_command(server, cassette_path, &[]),
        Client::Node => node_sdk_command(server, cassette_path),
        Client::Go | Client::GoFreshCopy => {
            let exe = if matches!(kind, Client::GoFreshCopy) {
                let copy = copies.join(format!("go-client-{i}"));
                std::fs::copy(go, &copy).expect("copy the Go client");
                copy
            } else {
                go.to_path_buf()
            };
            let mut cmd = server.client_command(exe);
            cmd.arg(cassette_path).env("GODEBUG", "http2client=0");
            cmd
        }
        Client::Rustls => {
            let mut cmd = server.client_command(rustls);
            cmd.arg(cassette_path);
            cmd
        }
    }
}
