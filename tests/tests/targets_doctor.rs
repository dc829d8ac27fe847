//! `llmtap targets` and `llmtap doctor` as a person runs them.

use std::process::{Command, Stdio};
use std::time::Duration;

use llmtap_tests::{ChildGuard, llmtap_bin, require_ebpf};

fn llmtap(args: &[&str]) -> (bool, String) {
    let out = Command::new(llmtap_bin())
        .args(args)
        .output()
        .expect("run llmtap");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn targets_finds_static_openssl_in_node_without_flags() {
    let node = ChildGuard(
        Command::new("/usr/bin/node")
            .args(["-e", "setTimeout(() => {}, 20000)"])
            .stdout(Stdio::null())
            .spawn()
            .expect("node"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let pid = node.0.id().to_string();
    let (ok, out) = llmtap(&["targets", "--pid", &pid]);
    assert!(ok, "{out}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(&pid))
        .unwrap_or_default();
    assert!(
        line.contains("hook (static)") && line.contains("/usr/bin/node"),
        "{out}"
    );
}

#[test]
fn targets_lists_shared_libssl_of_a_python_process() {
    let py = ChildGuard(
        Command::new("python3")
            .args([
                "-c",
                "import ssl, time; print('ready', flush=True); time.sleep(20)",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python"),
    );
    std::thread::sleep(Duration::from_millis(800));
    let pid = py.0.id().to_string();
    let (ok, out) = llmtap(&["targets", "--pid", &pid]);
    assert!(ok, "{out}");
    assert!(
        out.contains("hook (libssl)") && out.contains("libssl.so"),
        "{out}"
    );
}

#[test]
fn targets_explains_processes_without_tls() {
    let sleeper = ChildGuard(Command::new("sleep").arg("20").spawn().expect("sleep"));
    let pid = sleeper.0.id().to_string();
    let (ok, out) = llmtap(&["targets", "--all", "--pid", &pid]);
    assert!(ok, "{out}");
    assert!(
        out.contains("not hooked") && out.contains("no OpenSSL library mapped"),
        "{out}"
    );
    let (_, out) = llmtap(&["targets", "--pid", "999999999"]);
    assert!(out.contains("no such process"), "{out}");
}

#[test]
fn doctor_passes_on_a_capable_host() {
    if !require_ebpf("doctor_passes_on_a_capable_host") {
        return;
    }
    let (ok, out) = llmtap(&["doctor"]);
    assert!(
        ok,
        "doctor failed on a host that runs the eBPF tests:\n{out}"
    );
    for check in [
        "kernel",
        "btf",
        "capabilities",
        "ring buffer",
        "bpf_loop",
        "uprobes",
        "tracefs",
        "perf_event_paranoid",
    ] {
        assert!(out.contains(check), "missing check {check}:\n{out}");
    }
}
