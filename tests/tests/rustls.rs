//! rustls clients (no OpenSSL anywhere) are traced through their symbols: a reqwest + rustls
//! client built by this package (`clients/rustls_client.rs`, test profile, unstripped) posts a
//! recorded request to `https://api.openai.com`, answered by the replay server, and `llmtap run`
//! exports exactly one span with the cassette's values. A stripped copy of the same client is
//! refused with one clear log line and a `llmtap targets` reason. Real eBPF, the real binary.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use llmtap_tests::replay::{LlmtapRun, ReplayServer};
use llmtap_tests::{ChildGuard, TempDir, llmtap_bin, repo_root, require_ebpf, run_client};

const CASSETTE: &str = "tests/data/cassettes/openai__chat_stream_include_usage.json";

/// Serializes these tests: each runs its own llmtap.
static SERIAL: Mutex<()> = Mutex::new(());

fn client_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rustls-client"))
}

#[test]
fn rustls_client_yields_the_cassette_span() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf("rustls_client_yields_the_cassette_span") {
        return;
    }
    let cassette_path = repo_root().join(CASSETTE);
    let cassette: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cassette_path).expect("cassette")).expect("json");
    let server = ReplayServer::start(std::slice::from_ref(&cassette_path)).expect("server");
    let llmtap = LlmtapRun::start(&[]).expect("llmtap");
    let (pid, out) = run_client(
        server
            .client_command(client_bin())
            .arg(&cassette_path)
            .env("RUSTLS_CLIENT_DELAY_MS", "500"),
    )
    .expect("rustls client");
    assert!(out.starts_with("status 200"), "{out}");
    let (spans, log) = llmtap.stop_after(1);
    let ours: Vec<_> = spans
        .iter()
        .filter(|s| s["resource"]["process.pid"].as_u64() == Some(u64::from(pid)))
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "exactly one span for the rustls client: {spans:#?}\n{log}"
    );
    assert!(
        log.contains("rustls Writer::write") && log.contains(&client_bin().display().to_string()),
        "the client binary was hooked by its rustls symbols:\n{log}"
    );
    let span = ours[0];
    let attrs = &span["attributes"];
    let expected = &cassette["expected"];
    assert_eq!(span["name"], "chat gpt-4o-mini", "{span:#}");
    assert_eq!(attrs["gen_ai.operation.name"], expected["operation"]);
    assert_eq!(attrs["gen_ai.provider.name"], cassette["provider"]);
    assert_eq!(attrs["gen_ai.request.model"], expected["request_model"]);
    assert_eq!(attrs["gen_ai.response.model"], expected["response_model"]);
    assert_eq!(attrs["gen_ai.response.id"], expected["response_id"]);
    assert_eq!(
        attrs["gen_ai.response.finish_reasons"],
        expected["finish_reasons"]
    );
    assert_eq!(attrs["gen_ai.usage.input_tokens"], expected["input_tokens"]);
    assert_eq!(
        attrs["gen_ai.usage.output_tokens"],
        expected["output_tokens"]
    );
    assert_eq!(attrs["llmtap.stream.chunks"], expected["stream_chunks"]);
    assert_eq!(attrs["gen_ai.request.stream"], true);
    assert_eq!(attrs["http.response.status_code"], 200);
    assert_eq!(attrs["network.protocol.version"], "1.1");
    assert_eq!(attrs["server.address"], "api.openai.com");
    assert!(attrs.get("llmtap.call.incomplete").is_none(), "{span:#}");
    assert_eq!(span["status"]["code"], "UNSET");
    assert_eq!(span["resource"]["process.executable.name"], "rustls-client");
}

#[test]
fn stripped_rustls_binary_is_refused_with_one_log_line_and_a_targets_reason() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf("stripped_rustls_binary_is_refused_with_one_log_line_and_a_targets_reason") {
        return;
    }
    let dir = TempDir::new("rustls-stripped").expect("tmp");
    let stripped = dir.path().join("rustls-client");
    let status = Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&stripped)
        .arg(client_bin())
        .status()
        .expect("strip (binutils)");
    assert!(status.success());
    let info = llmtap::capture::elf::inspect(&stripped, true).expect("inspect");
    assert!(!info.has_symtab && info.rustls_hooks.is_empty(), "{info:?}");

    let cassette_path = repo_root().join(CASSETTE);
    let server = ReplayServer::start(std::slice::from_ref(&cassette_path)).expect("server");
    let llmtap = LlmtapRun::start(&[]).expect("llmtap");
    // Long-lived enough for `llmtap targets` to look at it; it runs twice so a second
    // sighting of the same binary is seen to stay quiet.
    let spawn = || {
        server
            .client_command(&stripped)
            .arg(&cassette_path)
            .env("RUSTLS_CLIENT_DELAY_MS", "1500")
            .stdout(Stdio::null())
            .spawn()
            .expect("stripped client")
    };
    let mut first = ChildGuard(spawn());
    std::thread::sleep(Duration::from_millis(500));
    let targets = Command::new(llmtap_bin())
        .args(["targets", "--all", "--pid", &first.0.id().to_string()])
        .output()
        .expect("llmtap targets");
    let listing = String::from_utf8_lossy(&targets.stdout);
    assert!(
        listing.contains("not hooked") && listing.contains("stripped of its symbol table"),
        "{listing}"
    );
    assert!(first.0.wait().expect("wait").success());
    let mut second = ChildGuard(spawn());
    assert!(second.0.wait().expect("wait").success());
    let (spans, log) = llmtap.stop_after(0);
    // Only this test's binary counts: other stripped Rust programs may run on the host and
    // get their own line (issue 19, item 18).
    let ours = stripped.display().to_string();
    let lines: Vec<_> = log
        .lines()
        .filter(|l| l.contains("stripped of its symbol table") && l.contains(&ours))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one clear line for the stripped binary:\n{log}"
    );
    assert!(
        !spans
            .iter()
            .any(|s| s["resource"]["process.executable.name"] == "rustls-client"),
        "{spans:#?}"
    );
}

#[test]
fn targets_lists_an_unstripped_rustls_client_as_hooked_by_its_symbols() {
    // Discovery only reads /proc and the ELF file: no eBPF needed. The client waits before
    // sending, long enough to be looked at; its request then fails (nothing listens there).
    let mut client = ChildGuard(
        Command::new(client_bin())
            .arg(repo_root().join(CASSETTE))
            .arg("127.0.0.1:9")
            .env("RUSTLS_CLIENT_DELAY_MS", "3000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("client"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let targets = Command::new(llmtap_bin())
        .args(["targets", "--pid", &client.0.id().to_string()])
        .output()
        .expect("llmtap targets");
    let listing = String::from_utf8_lossy(&targets.stdout);
    let _ = client.0.kill();
    assert!(targets.status.success(), "{listing}");
    assert!(
        listing.contains("hook (rustls)") && listing.contains(&client_bin().display().to_string()),
        "{listing}"
    );
}
