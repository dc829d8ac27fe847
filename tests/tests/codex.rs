//! The Codex CLI (`@openai/codex`, a stripped static-pie musl Rust binary: rustls over aws-lc,
//! no symbols) is traced unmodified through aws-lc's AEAD functions, found by content
//! (`capture::awslc`). `codex exec` runs against the replay server answering as
//! `api.openai.com`, in both of its transports: over its default WebSocket
//! (`GET /v1/responses` upgraded, `response.create`, the recorded events as messages), and,
//! when the server refuses the upgrade, over the streaming `POST /v1/responses` (SSE) it falls
//! back to. Either way the call yields exactly one span with the recording's values. The
//! planted API key appears in no llmtap output. Real eBPF.

use std::path::PathBuf;
use std::time::Duration;

use llmtap_tests::replay::{
    LlmtapRun, PLANTED_API_KEY, ReplayOptions, ReplayServer, span_differences, spans_of,
};
use llmtap_tests::websocket::WsMode;
use llmtap_tests::{
    ChildGuard, TempDir, ebpf_required, llmtap_bin, repo_root, require_ebpf, run_client,
};

const CASSETTE: &str = "tests/data/cassettes/openai__responses_stream_1.json";

/// The native binary `cargo xtask setup` installs from `@openai/codex` (its optional
/// platform package), or `LLMTAP_CODEX_BIN`.
fn codex_bin() -> Option<PathBuf> {
    let path = std::env::var_os("LLMTAP_CODEX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            repo_root().join(
                "tests/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex",
            )
        });
    path.is_file().then_some(path)
}

fn codex_or_skip(test: &str) -> Option<PathBuf> {
    match codex_bin() {
        Some(bin) => Some(bin),
        None if ebpf_required() => {
            panic!("{test}: the Codex CLI is missing: run `cargo xtask setup`")
        }
        None => {
            eprintln!("skipping {test}: the Codex CLI is not installed (cargo xtask setup)");
            None
        }
    }
}

#[test]
fn codex_exec_falling_back_to_sse_yields_the_responses_span() {
    codex_exec_yields_the_responses_span(
        "codex_exec_falling_back_to_sse_yields_the_responses_span",
        WsMode::Off,
    );
}

#[test]
fn codex_exec_over_websocket_yields_the_responses_span() {
    codex_exec_yields_the_responses_span(
        "codex_exec_over_websocket_yields_the_responses_span",
        WsMode::Deflate,
    );
}

/// `codex exec` against a server answering WebSocket upgrades as `websocket` says (`Off`: not
/// at all, Codex falls back to SSE).
fn codex_exec_yields_the_responses_span(test: &str, websocket: WsMode) {
    if !require_ebpf(test) {
        return;
    }
    let Some(codex) = codex_or_skip(test) else {
        return;
    };
    let cassette_path = repo_root().join(CASSETTE);
    let cassette: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cassette_path).expect("cassette")).expect("json");
    let opts = ReplayOptions {
        websocket,
        ..ReplayOptions::default()
    };
    let server =
        ReplayServer::start_with(std::slice::from_ref(&cassette_path), &opts).expect("server");
    let llmtap = LlmtapRun::start(&[]).expect("llmtap");
    // Codex opens its WebSocket as it starts: the call is traced once the executable is hooked.
    llmtap
        .warm_up(
            std::process::Command::new(&codex).arg("--version"),
            "codex-linux-x64",
        )
        .expect("codex hooked");
    let home = TempDir::new("codex-home").expect("tmp");
    let work = TempDir::new("codex-work").expect("tmp");
    let model = cassette["request"]["body"]
        .as_str()
        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .and_then(|b| b["model"].as_str().map(str::to_string))
        .expect("recorded model");
    let (pid, out) = run_client(
        server
            .client_command(&codex)
            .args([
                "exec",
                "--skip-git-repo-check",
                "-m",
                &model,
                "What is 2+2?",
            ])
            .current_dir(work.path())
            .env("CODEX_HOME", home.path())
            .env("OPENAI_API_KEY", PLANTED_API_KEY)
            .env_remove("OPENAI_BASE_URL"),
    )
    .expect("codex exec");
    let served = server.served();
    let calls: Vec<&String> = served
        .iter()
        .filter(|(c, _)| c.contains("responses_stream_1"))
        .map(|(_, version)| version)
        .collect();
    let over_websocket = websocket != WsMode::Off;
    assert!(
        calls.len() == 1 && (calls[0] == "websocket") == over_websocket,
        "one call served (over WebSocket: {over_websocket}): {served:?}\n{}",
        server.log()
    );
    // Let the tail of the stream reach llmtap before it stops.
    std::thread::sleep(Duration::from_millis(500));
    let (spans, jsonl, log) = llmtap.stop();
    let ours = spans_of(&spans, pid);
    let llm: Vec<_> = ours
        .iter()
        .filter(|s| s["attributes"]["gen_ai.operation.name"].is_string())
        .collect();
    // Over WebSocket, Codex first warms the socket up with a `response.create` that asks for
    // no generation (`"generate": false`): a call of its own, answered with an empty response.
    let (warm_ups, calls): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) =
        llm.iter().copied().partition(|s| {
            s["attributes"]["gen_ai.response.id"]
                .as_str()
                .is_some_and(|id| id.starts_with("resp_replay_warmup_"))
        });
    assert_eq!(
        (calls.len(), warm_ups.len()),
        (1, usize::from(over_websocket)),
        "exactly one GenAI span for codex's call (pid {pid}), and its warm-up over WebSocket; \
         codex said:\n{out}\nspans: {spans:#?}\n{log}"
    );
    let span = calls[0];
    let protocol = span["attributes"]["network.protocol.version"]
        .as_str()
        .unwrap_or("1.1")
        .to_string();
    let diffs = span_differences(span, &cassette, &protocol);
    assert!(diffs.is_empty(), "{diffs:#?}\n{span:#}");
    if over_websocket {
        assert_eq!(
            span["attributes"]["http.response.status_code"], 101,
            "{span:#}"
        );
        let warm_up = warm_ups[0];
        assert!(
            warm_up["attributes"]["error.type"].is_null()
                && warm_up["attributes"]["llmtap.stream.chunks"]
                    .as_u64()
                    .unwrap_or(0)
                    == 0,
            "{warm_up:#}"
        );
    }
    // The path llmtap names is the executable's real one (tests/node_modules may be a link).
    let real_path = codex.canonicalize().unwrap_or(codex.clone());
    assert!(
        log.contains("EVP_AEAD_CTX_seal") && log.contains(&real_path.display().to_string()),
        "codex was hooked through aws-lc:\n{log}"
    );
    for (what, text) in [("log", &log), ("spans", &jsonl)] {
        assert!(
            !text.contains(PLANTED_API_KEY),
            "API key in llmtap's {what}"
        );
    }
}

#[test]
fn targets_names_codex_and_the_method() {
    let Some(codex) = codex_or_skip("targets_names_codex_and_the_method") else {
        return;
    };
    let home = TempDir::new("codex-home").expect("tmp");
    // Without a prompt argument `codex exec` reads it from stdin: alive until stdin closes.
    let child = std::process::Command::new(&codex)
        .args(["exec", "--skip-git-repo-check"])
        .env("CODEX_HOME", home.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start codex");
    let guard = ChildGuard(child);
    let pid = guard.0.id();
    // The executable is mapped once exec is done.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .as_deref()
        != Some(codex.as_path())
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = std::time::Instant::now();
    let out = std::process::Command::new(llmtap_bin())
        .args(["targets", "--pid", &pid.to_string()])
        .output()
        .expect("llmtap targets");
    eprintln!("llmtap targets analysed codex in {:?}", started.elapsed());
    drop(guard);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("hook (aws-lc)") && text.contains("aws-lc AEAD seal/open"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
