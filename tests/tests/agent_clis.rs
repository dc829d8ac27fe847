//! Agent CLIs and the runtimes they are built on, traced unmodified with real eBPF: Bun (its
//! BoringSSL has no symbols) through `fetch` and `node:https`, Claude Code (a Bun executable)
//! in print mode, and Deno (stripped Rust: rustls over aws-lc) through `fetch` over h2. The
//! Codex CLI has its own file (`codex.rs`). Each runs against the replay server answering as the provider's
//! real host name, with the planted API key, and must yield exactly one span per LLM call
//! with the recorded values, no span for its other calls, and no trace of the key.

use std::path::PathBuf;
use std::process::Command;

use llmtap_tests::replay::{
    LlmtapRun, PLANTED_API_KEY, ReplayServer, cassette_path, load_json, run_client,
    span_differences, spans_of,
};
use llmtap_tests::{TempDir, repo_root, require_ebpf};
use serde_json::Value;

/// An npm-installed binary of tests/node_modules, or `None` (a skip) without setup; CI
/// (`LLMTAP_REQUIRE_EBPF=1`) must have it.
fn installed(relative: &str) -> Option<PathBuf> {
    let path = repo_root().join("tests/node_modules").join(relative);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        !llmtap_tests::ebpf_required(),
        "{} missing: run `cargo xtask setup`",
        path.display()
    );
    eprintln!("SKIPPED: {} not installed", path.display());
    None
}

const BUN: &str = "@oven/bun-linux-x64/bin/bun";
const CLAUDE: &str = ".bin/claude";
/// Deno's native executable, from its platform package (no install script needed).
const DENO: &str = "@deno/linux-x64-glibc/deno";

fn assert_key_never_leaks(jsonl: &str, log: &str) {
    assert!(!jsonl.contains(PLANTED_API_KEY), "API key in spans");
    assert!(!log.contains(PLANTED_API_KEY), "API key in llmtap's log");
}

/// `bun bun_client.mjs CASSETTE MODE` as the replay server's client.
fn bun_client(server: &ReplayServer, bun: &PathBuf, cassette: &str, mode: &str) -> Command {
    let mut cmd = server.client_command(bun);
    cmd.arg(repo_root().join("tests/clients/bun_client.mjs"))
        .arg(cassette_path(cassette))
        .arg(mode);
    cmd
}

#[test]
fn bun_fetch_and_node_https_yield_the_recorded_spans() {
    if !require_ebpf("bun_fetch_and_node_https_yield_the_recorded_spans") {
        return;
    }
    let Some(bun) = installed(BUN) else { return };
    // A stream through `fetch` (Bun's HTTP client thread) and a JSON response through
    // `node:https` (the main thread, whose first SSL_write returns -1 and is repeated).
    let cases = [
        ("openai__chat_stream_include_usage", "fetch"),
        ("anthropic__messages_stream", "fetch"),
        ("openai__chat_prompt_cache_read", "https"),
        ("anthropic__messages_tool_use", "https"),
    ];
    let recordings: Vec<PathBuf> = cases.iter().map(|(c, _)| cassette_path(c)).collect();
    let server = ReplayServer::start(&recordings).expect("replay server");
    // Without llmtap first: what the application prints must not change under tracing.
    let baseline: Vec<_> = cases
        .iter()
        .map(|(c, mode)| run_client(&mut bun_client(&server, &bun, c, mode)).expect("bun runs"))
        .collect();
    let llmtap = LlmtapRun::start(&[]).expect("llmtap starts");
    llmtap
        .warm_up(Command::new(&bun).args(["-e", "0"]), BUN)
        .expect("bun hooked");
    let mut runs = Vec::new();
    for ((cassette, mode), before) in cases.iter().zip(&baseline) {
        let outcome = run_client(&mut bun_client(&server, &bun, cassette, mode)).expect("bun runs");
        assert_eq!(
            outcome.code,
            Some(0),
            "{cassette} {mode}: {}",
            outcome.stderr
        );
        assert_eq!(
            outcome.visible(),
            before.visible(),
            "{cassette} {mode}: output changed under llmtap"
        );
        runs.push((cassette, mode, outcome.pid));
    }
    let pids: Vec<u32> = runs.iter().map(|(_, _, pid)| *pid).collect();
    llmtap.wait_for(|spans| pids.iter().all(|pid| !spans_of(spans, *pid).is_empty()));
    let (spans, jsonl, log) = llmtap.stop();
    for (cassette, mode, pid) in runs {
        let ours = spans_of(&spans, pid);
        assert_eq!(
            ours.len(),
            1,
            "{cassette} {mode}: one span: {ours:#?}\n{log}"
        );
        let recording = load_json(&cassette_path(cassette)).expect("cassette");
        let diffs = span_differences(ours[0], &recording, "1.1");
        assert!(
            diffs.is_empty(),
            "{cassette} {mode}: {diffs:#?}\n{:#}",
            ours[0]
        );
    }
    assert_key_never_leaks(&jsonl, &log);
}

#[test]
fn deno_fetch_over_h2_yields_the_recorded_spans() {
    if !require_ebpf("deno_fetch_over_h2_yields_the_recorded_spans") {
        return;
    }
    let Some(deno) = installed(DENO) else { return };
    let cases = [
        "openai__chat_stream_include_usage",
        "anthropic__messages_stream",
        "openai__chat_prompt_cache_read",
    ];
    let recordings: Vec<PathBuf> = cases.iter().map(|c| cassette_path(c)).collect();
    let server = ReplayServer::start(&recordings).expect("replay server");
    let cache = TempDir::new("deno-dir").expect("temp dir");
    let client = |cassette: &str| {
        let mut cmd = server.client_command(&deno);
        cmd.args(["run", "--allow-net", "--allow-read", "--allow-env"])
            .arg(repo_root().join("tests/clients/deno_client.ts"))
            .arg(cassette_path(cassette))
            .env("DENO_CERT", server.ca_pem_path())
            .env("DENO_DIR", cache.path())
            .env("NO_COLOR", "1");
        cmd
    };
    let baseline: Vec<_> = cases
        .iter()
        .map(|c| run_client(&mut client(c)).expect("deno runs"))
        .collect();
    let llmtap = LlmtapRun::start(&[]).expect("llmtap starts");
    llmtap
        .warm_up(Command::new(&deno).arg("--version"), DENO)
        .expect("deno hooked");
    let mut runs = Vec::new();
    for (cassette, before) in cases.iter().zip(&baseline) {
        let outcome = run_client(&mut client(cassette)).expect("deno runs");
        assert_eq!(outcome.code, Some(0), "{cassette}: {}", outcome.stderr);
        assert_eq!(
            outcome.visible(),
            before.visible(),
            "{cassette}: output changed under llmtap"
        );
        runs.push((cassette, outcome.pid));
    }
    let pids: Vec<u32> = runs.iter().map(|(_, pid)| *pid).collect();
    llmtap.wait_for(|spans| pids.iter().all(|pid| !spans_of(spans, *pid).is_empty()));
    let (spans, jsonl, log) = llmtap.stop();
    for (cassette, pid) in runs {
        let ours = spans_of(&spans, pid);
        assert_eq!(ours.len(), 1, "{cassette}: one span: {ours:#?}\n{log}");
        let recording = load_json(&cassette_path(cassette)).expect("cassette");
        // Deno offers h2 and the replay server takes it.
        let diffs = span_differences(ours[0], &recording, "2");
        assert!(diffs.is_empty(), "{cassette}: {diffs:#?}\n{:#}", ours[0]);
    }
    assert!(
        log.contains("EVP_AEAD_CTX_seal"),
        "deno was hooked through aws-lc:\n{log}"
    );
    assert_key_never_leaks(&jsonl, &log);
}

#[test]
fn claude_code_print_mode_yields_one_span_per_messages_call() {
    if !require_ebpf("claude_code_print_mode_yields_one_span_per_messages_call") {
        return;
    }
    let Some(claude) = installed(CLAUDE) else {
        return;
    };
    let recording_name = "anthropic__messages_stream";
    let recording = load_json(&cassette_path(recording_name)).expect("cassette");
    let model = recording["expected"]["request_model"]
        .as_str()
        .expect("recorded model")
        .to_string();
    let server = ReplayServer::start(&[cassette_path(recording_name)]).expect("replay server");
    let home = TempDir::new("claude-home").expect("temp home");
    let llmtap = LlmtapRun::start(&[]).expect("llmtap starts");
    let mut cmd = server.client_command(&claude);
    // Unmodified: a fresh home, the key in its documented variable, the test CA through
    // NODE_EXTRA_CA_CERTS (set by the harness). Its settings, bootstrap and event-logging
    // calls to api.anthropic.com go out as they would for a user.
    cmd.args(["-p", "Tell me a joke about OpenTelemetry", "--model"])
        .arg(&model)
        .env("HOME", home.path())
        .env("ANTHROPIC_API_KEY", PLANTED_API_KEY)
        .env_remove("ANTHROPIC_AUTH_TOKEN")
        .env_remove("ANTHROPIC_BASE_URL");
    let outcome = run_client(&mut cmd).expect("claude runs");
    assert_eq!(outcome.code, Some(0), "claude: {}", outcome.stderr);
    assert!(
        outcome.stdout.contains("OpenTelemetry"),
        "claude printed the recorded answer: {}",
        outcome.stdout
    );
    let messages_calls = server
        .log()
        .lines()
        .filter(|l| l.contains("/v1/messages") && l.contains(" -> "))
        .count();
    let other_calls = server
        .log()
        .lines()
        .filter(|l| l.contains("no recording for"))
        .count();
    assert!(
        messages_calls >= 1,
        "claude called /v1/messages:\n{}",
        server.log()
    );
    let pid = outcome.pid;
    llmtap.wait_for(|spans| spans_of(spans, pid).len() >= messages_calls);
    // Give any span for the non-LLM calls time to appear before counting.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (spans, jsonl, log) = llmtap.stop();
    let ours: Vec<&Value> = spans_of(&spans, pid);
    assert_eq!(
        ours.len(),
        messages_calls,
        "one span per /v1/messages call and none for the {other_calls} other calls: {ours:#?}\n{}\n{log}",
        server.log()
    );
    for span in ours {
        let diffs = span_differences(span, &recording, "1.1");
        assert!(diffs.is_empty(), "{diffs:#?}\n{span:#}");
    }
    assert_key_never_leaks(&jsonl, &log);
}

/// `--comm bun` follows the bun process on every thread: its `fetch` runs on a thread named
/// `HTTP Client`, whose name the kernel sees at the TLS call (issue 19, item 14). Another
/// program (curl) stays out.
#[test]
fn comm_filter_matches_the_process_not_the_calling_thread() {
    if !require_ebpf("comm_filter_matches_the_process_not_the_calling_thread") {
        return;
    }
    let Some(bun) = installed(BUN) else { return };
    let cassette = "openai__chat_stream_include_usage";
    let server = ReplayServer::start(&[cassette_path(cassette)]).expect("replay server");
    let llmtap = LlmtapRun::start(&["--comm", "bun"]).expect("llmtap starts");
    llmtap
        .warm_up(Command::new(&bun).args(["-e", "0"]), BUN)
        .expect("bun hooked");
    let traced = run_client(&mut bun_client(&server, &bun, cassette, "fetch")).expect("bun runs");
    assert_eq!(traced.code, Some(0), "{}", traced.stderr);
    let recording = load_json(&cassette_path(cassette)).expect("cassette");
    let other = run_client(&mut llmtap_tests::replay::curl_command(
        &server, &recording, false,
    ))
    .expect("curl runs");
    assert_eq!(other.code, Some(0), "{}", other.stderr);
    llmtap.wait_for(|spans| !spans_of(spans, traced.pid).is_empty());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (spans, _, log) = llmtap.stop();
    let ours = spans_of(&spans, traced.pid);
    assert_eq!(ours.len(), 1, "bun's call traced under --comm bun:\n{log}");
    let diffs = span_differences(ours[0], &recording, "1.1");
    assert!(diffs.is_empty(), "{diffs:#?}");
    assert!(
        spans_of(&spans, other.pid).is_empty(),
        "curl is not `bun`: {spans:#?}"
    );
}

#[test]
fn targets_names_the_method_for_bun_and_claude_code() {
    if !require_ebpf("targets_names_the_method_for_bun_and_claude_code") {
        return;
    }
    let Some(bun) = installed(BUN) else { return };
    // A Bun process that stays up while `llmtap targets` looks at it.
    let mut child = llmtap_tests::ChildGuard(
        Command::new(&bun)
            .args(["-e", "setTimeout(() => {}, 20000)"])
            .spawn()
            .expect("bun starts"),
    );
    let pid = child.0.id();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = Command::new(llmtap_tests::llmtap_bin())
        .args(["targets", "--pid", &pid.to_string()])
        .output()
        .expect("llmtap targets");
    let _ = child.0.kill();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&pid.to_string()))
        .unwrap_or_else(|| panic!("pid {pid} listed: {text}"));
    assert!(line.contains("hook (boringssl)"), "{line}");
    assert!(line.contains("located by their error sites"), "{line}");
}
