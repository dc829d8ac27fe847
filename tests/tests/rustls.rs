//! rustls clients (no OpenSSL anywhere) are traced through their symbols: a reqwest + rustls
//! client built by this package (`clients/rustls_client.rs`, test profile, unstripped) posts a
//! recorded request to `https://api.openai.com`, answered by the replay server, and `llmtap run`
//! exports exactly one span with the cassette's values. A stripped copy of the same client is
//! refused with one clear log line and a `llmtap targets` reason. Real eBPF, the real binary.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use llmtap_tests::replay::{LlmtapRun, ReplayServer, span_differences, spans_of};
use llmtap_tests::{ChildGuard, TempDir, llmtap_bin, repo_root, require_ebpf, run_client};

const CASSETTE: &str = "tests/data/cassettes/openai__chat_stream_include_usage.json";

/// Serializes these tests: each runs its own llmtap.
static SERIAL: Mutex<()> = Mutex::new(());

fn client_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rustls-client"))
}

fn sync_client_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rustls-sync-client"))
}

/// Spans of `pid` equal to the recording's values (HTTP/1.1, nothing incomplete).
fn matching_spans(spans: &[serde_json::Value], pid: u32, cassette: &serde_json::Value) -> usize {
    spans_of(spans, pid)
        .into_iter()
        .filter(|span| span_differences(span, cassette, "1.1").is_empty())
        .count()
}

fn load_cassette() -> (PathBuf, serde_json::Value) {
    let path = repo_root().join(CASSETTE);
    let cassette = serde_json::from_slice(&std::fs::read(&path).expect("cassette")).expect("json");
    (path, cassette)
}

/// Issue 19, item 7: a request written with one `write_vectored` of 150 slices (llmtap once
/// followed 64 and silently dropped the rest) is captured whole.
#[test]
fn a_vectored_write_of_many_slices_is_captured_whole() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf("a_vectored_write_of_many_slices_is_captured_whole") {
        return;
    }
    let (cassette_path, cassette) = load_cassette();
    let server = ReplayServer::start(std::slice::from_ref(&cassette_path)).expect("server");
    let llmtap = LlmtapRun::start(&[]).expect("llmtap");
    let (pid, out) = run_client(
        server
            .client_command(sync_client_bin())
            .arg("vectored")
            .arg(&cassette_path)
            .env("RUSTLS_CLIENT_DELAY_MS", "500"),
    )
    .expect("rustls sync client");
    assert!(out.starts_with("status 200"), "{out}");
    let spans = llmtap.wait_for(|spans| !spans_of(spans, pid).is_empty());
    let (all, _, log) = llmtap.stop();
    let ours = spans_of(&all, pid);
    assert_eq!(ours.len(), 1, "one span for the call: {spans:#?}\n{log}");
    let diffs = span_differences(ours[0], &cassette, "1.1");
    assert!(diffs.is_empty(), "{diffs:#?}\n{:#}\n{log}", ours[0]);
    assert!(
        log.contains("rustls Writer::write_vectored"),
        "write_vectored was hooked:\n{log}"
    );
}

/// Issue 19, item 4: rustls has no close call; a dropped connection's address goes to the next
/// connection. Calls in turn, every other one dropped mid-response, each connection in the
/// place of the last: every whole call gives its span, none inherits the last one's state.
#[test]
fn a_dropped_connections_address_does_not_pass_its_state_to_the_next_connection() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf("a_dropped_connections_address_does_not_pass_its_state_to_the_next_connection")
    {
        return;
    }
    let (cassette_path, cassette) = load_cassette();
    let server = ReplayServer::start(std::slice::from_ref(&cassette_path)).expect("server");
    let llmtap = LlmtapRun::start(&[]).expect("llmtap");
    let (pid, out) = run_client(
        server
            .client_command(sync_client_bin())
            .arg("sequence")
            .arg(&cassette_path)
            .env("RUSTLS_CLIENT_DELAY_MS", "500"),
    )
    .expect("rustls sync client");
    // `call I conn 0xADDRESS full|partial`, then `status …` after each full call.
    let calls: Vec<(String, bool)> = out
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("call ")?.split_whitespace().skip(2);
            Some((words.next()?.to_string(), words.next()? == "full"))
        })
        .collect();
    let full = calls.iter().filter(|(_, full)| *full).count();
    assert!(full >= 3, "{out}");
    assert!(
        calls
            .windows(2)
            .any(|pair| pair[0].0 == pair[1].0 && !pair[0].1 && pair[1].1),
        "a whole call ran on the address of a connection dropped mid-response:\n{out}"
    );
    let spans = llmtap.wait_for(|spans| matching_spans(spans, pid, &cassette) >= full);
    let (all, _, log) = llmtap.stop();
    assert_eq!(
        matching_spans(&all, pid, &cassette),
        full,
        "every whole call gives its span:\n{out}\n{:#?}\n{log}",
        spans_of(&spans, pid)
    );
    assert!(
        log.contains("rustls connection drop"),
        "the connection's drop was hooked:\n{log}"
    );
}

/// Issue 19, item 4: kernel state outlives its process. A process exits with a connection
/// open (no drop), then a new process gets its pid and, address randomisation off as for both,
/// the same connection address: its call is whole, not the continuation of the dead one's.
#[test]
fn a_new_process_with_a_dead_ones_pid_starts_its_connections_afresh() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf("a_new_process_with_a_dead_ones_pid_starts_its_connections_afresh") {
        return;
    }
    let (cassette_path, cassette) = load_cassette();
    let server = ReplayServer::start(std::slice::from_ref(&cassette_path)).expect("server");
    let llmtap = LlmtapRun::start(&[]).expect("llmtap");
    let run = |mode: &str| {
        // Same length of arguments and the same environment: the same stack, hence the same
        // connection address, in both processes.
        run_client(
            server
                .client_command("setarch")
                .args(["x86_64", "-R"])
                .arg(sync_client_bin())
                .arg(mode)
                .arg(&cassette_path)
                .env("RUSTLS_CLIENT_DELAY_MS", "300"),
        )
        .expect("rustls sync client")
    };
    let address = |out: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix("conn "))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no address in {out:?}"))
    };
    // Another process on the host may take the pid first: a few tries.
    let mut reused = None;
    for _ in 0..10 {
        let (dead, part_out) = run("part");
        std::fs::write("/proc/sys/kernel/ns_last_pid", (dead - 1).to_string())
            .expect("writing ns_last_pid (root)");
        let (pid, full_out) = run("full");
        if pid == dead {
            assert_eq!(
                address(&part_out),
                address(&full_out),
                "same connection address in both processes"
            );
            assert!(full_out.contains("status 200"), "{full_out}");
            reused = Some(pid);
            break;
        }
    }
    let pid = reused.expect("no process got the exited one's pid in 10 tries");
    // The dead process's call was cut off; the new one's is whole and the only one matching.
    let spans = llmtap.wait_for(|spans| matching_spans(spans, pid, &cassette) >= 1);
    let (all, _, log) = llmtap.stop();
    assert_eq!(
        matching_spans(&all, pid, &cassette),
        1,
        "{:#?}\n{log}",
        spans_of(&spans, pid)
    );
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
