//! `--hold-new-processes` never leaves a process stopped (real eBPF). llmtap itself is stopped
//! (SIGSTOP) so that it cannot hook a new client nor continue it: the kernel still holds the
//! client at its first `connect`, and the hold guard must end the hold, past its bound while
//! llmtap is stuck, at once when llmtap is killed. The client then completes as it does
//! without llmtap.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llmtap_tests::replay::{
    ClientOutcome, LlmtapRun, ReplayServer, curl_command, load_json, run_client,
};
use llmtap_tests::{repo_root, require_ebpf};

const CASSETTE: &str = "tests/data/cassettes/openai__chat_stream_include_usage.json";

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a process this test started.
    unsafe { libc::kill(pid as i32, signal) };
}

/// curl run in its own session (no controlling terminal: a process with one is never held).
fn detached_curl(server: &ReplayServer) -> Command {
    let cassette = load_json(&repo_root().join(CASSETTE)).expect("cassette");
    let curl = curl_command(server, &cassette, false);
    let mut cmd = Command::new("setsid");
    cmd.arg(curl.get_program()).args(curl.get_args());
    for (key, value) in curl.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd
}

/// The curl process under `setsid` → `unshare` → `sh` → `curl` (one pid, several execs) is the
/// one stopped: waits until it is in state `T`.
fn wait_until_stopped(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_ascii_whitespace().next());
        if state == Some("T") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The client's output without llmtap, then llmtap started and stopped (SIGSTOP): it can
/// neither hook nor continue a new process, while the kernel still holds it.
fn baseline_then_stuck_llmtap(server: &ReplayServer) -> (ClientOutcome, LlmtapRun) {
    let baseline = run_client(&mut detached_curl(server)).expect("curl runs");
    assert_eq!(baseline.code, Some(0), "{}", baseline.stderr);
    let llmtap = LlmtapRun::start(&["--hold-new-processes", "on"]).expect("llmtap starts");
    signal(llmtap.pid(), libc::SIGSTOP);
    (baseline, llmtap)
}

fn server() -> ReplayServer {
    ReplayServer::start(&[repo_root().join(CASSETTE)]).expect("replay server")
}

#[test]
fn a_hold_ends_at_its_bound_when_llmtap_is_stuck() {
    if !require_ebpf("a_hold_ends_at_its_bound_when_llmtap_is_stuck") {
        return;
    }
    let server = server();
    let (baseline, llmtap) = baseline_then_stuck_llmtap(&server);
    let held = run_client(&mut detached_curl(&server)).expect("curl runs");
    signal(llmtap.pid(), libc::SIGCONT);
    let (_, _, log) = llmtap.stop();
    assert_eq!(
        held.visible(),
        baseline.visible(),
        "the held client completes as without llmtap:\n{log}"
    );
    assert!(
        log.contains(&format!("pid {} held for", held.pid)),
        "the guard continued pid {} past the bound:\n{log}",
        held.pid
    );
}

#[test]
fn held_processes_continue_when_llmtap_is_killed() {
    if !require_ebpf("held_processes_continue_when_llmtap_is_killed") {
        return;
    }
    let server = server();
    let (baseline, llmtap) = baseline_then_stuck_llmtap(&server);
    let client = detached_curl(&server)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl starts");
    let pid = client.id();
    // Without the guard the client would stay stopped: bound the test.
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: signal 0 only probes whether the client still exists.
            if unsafe { libc::kill(pid as i32, 0) } != 0 {
                return;
            }
        }
        signal(pid, libc::SIGKILL);
    });
    let stopped = wait_until_stopped(pid, Duration::from_secs(10));
    // SIGKILL: no Drop, no SIGTERM handling; only the guard is left to continue the client.
    signal(llmtap.pid(), libc::SIGKILL);
    let out = client.wait_with_output().expect("curl ends");
    let log = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = llmtap.log_text();
            if log.contains(&format!("continuing held pid {pid}")) || Instant::now() > deadline {
                break log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(stopped, "the client was held at its connect:\n{log}");
    assert_eq!(
        (
            String::from_utf8_lossy(&out.stdout).as_ref(),
            out.status.code()
        ),
        baseline.visible(),
        "the held client completes as without llmtap:\n{log}"
    );
    assert!(
        log.contains(&format!("llmtap is gone; continuing held pid {pid}")),
        "the guard continued pid {pid} once llmtap was killed:\n{log}"
    );
    drop(llmtap);
}
