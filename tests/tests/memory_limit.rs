//! `--memory-limit` under a flood of long prompts (issue 19 item 12): 1,000 concurrent chat
//! calls with 4 MiB prompts from one process, traced by a real llmtap (eBPF) whose limit is far
//! below what the bodies would take (4 GiB): llmtap's peak resident size stays under the limit,
//! and every call is a span with the model seen on the wire and the response's values.
//! llmtap follows the client's pid only, so no other program of the host weighs on its size.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use llmtap_tests::replay::{
    LlmtapRun, ReplayOptions, ReplayServer, cassette_path, load_json, sdk_clients_missing, spans_of,
};
use llmtap_tests::{repo_root, require_ebpf};

const CALLS: usize = 1000;
const PROMPT_BYTES: usize = 4 * 1024 * 1024;
const LIMIT_MIB: u64 = 128;

/// Peak resident size (`VmHWM`) of a process, in bytes.
fn peak_resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[test]
fn thousand_concurrent_long_prompts_stay_under_the_memory_limit() {
    if !require_ebpf("thousand_concurrent_long_prompts_stay_under_the_memory_limit") {
        return;
    }
    if let Some(missing) = sdk_clients_missing() {
        panic!("{missing}");
    }
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
    let limit = format!("{LIMIT_MIB}M");
    // The client starts first and waits; llmtap follows its pid only, so what it analyses
    // and holds is this test's and no other program's on the host.
    let mut command = server.client_command(repo_root().join("tests/.venv/bin/python3"));
    let mut client = command
        .arg(repo_root().join("tests/clients/long_prompts_client.py"))
        .arg(CALLS.to_string())
        .arg(PROMPT_BYTES.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client");
    let client_pid = client.id();
    // Python has imported ssl (libssl mapped) by the time it reads stdin; give it that long.
    std::thread::sleep(Duration::from_secs(2));
    let pid = client_pid.to_string();
    let llmtap = LlmtapRun::start(&["--memory-limit", &limit, "--pid", &pid]).expect("llmtap");
    let mut stdin = client.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").expect("release the client");
    drop(stdin);
    let watchdog = {
        let deadline = Instant::now() + Duration::from_secs(300);
        std::thread::spawn(move || {
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                if !std::path::Path::new(&format!("/proc/{client_pid}")).exists() {
                    return;
                }
            }
            // SAFETY: kill(2) on the test's own child.
            unsafe { libc::kill(client_pid as i32, libc::SIGKILL) };
        })
    };
    let output = client.wait_with_output().expect("client output");
    let _ = watchdog.join();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ids: BTreeSet<String> = stdout.lines().skip(1).map(str::to_string).collect();
    assert_eq!(ids.len(), CALLS, "every answer has its own id");

    llmtap.wait_for(|spans| spans_of(spans, client_pid).len() >= CALLS);
    let peak = peak_resident_bytes(llmtap.pid()).expect("llmtap's /proc status");
    let (spans, _, log) = llmtap.stop();
    assert!(
        peak < LIMIT_MIB * 1024 * 1024,
        "llmtap peaked at {peak} bytes, over --memory-limit {limit}\n{log}"
    );
    let ours = spans_of(&spans, client_pid);
    assert_eq!(ours.len(), CALLS, "one span per call\n{log}");
    let expected = &cassette["expected"];
    let mut seen = BTreeSet::new();
    for span in &ours {
        let a = &span["attributes"];
        assert_eq!(a["gen_ai.request.model"], "gpt-4o-mini", "{span:#}");
        assert_eq!(
            a["gen_ai.response.model"], expected["response_model"],
            "{span:#}"
        );
        assert_eq!(
            a["gen_ai.usage.output_tokens"], expected["output_tokens"],
            "{span:#}"
        );
        let id = a["gen_ai.response.id"].as_str().unwrap_or_default();
        assert!(
            ids.contains(id),
            "span of an answer the client got: {span:#}"
        );
        seen.insert(id.to_string());
    }
    assert_eq!(seen.len(), CALLS, "each call once");
    // The limit was what kept it there (without it llmtap peaks near 1 GB on this test).
    assert!(
        log.contains("bodies cut for memory: ") && !log.contains("bodies cut for memory: 0)"),
        "bodies were cut for memory: {log}"
    );
}
