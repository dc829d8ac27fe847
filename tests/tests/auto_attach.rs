//! Processes started after llmtap are traced with no flags: a one-shot Python on the system
//! libssl and a static-OpenSSL binary (Node) from their very first TLS write; a Python with its
//! own copy of libssl (a new inode, found through the dynamic loader hook), a process in its own
//! mount namespace whose libssl is only reachable through /proc/PID/root, and a library replaced
//! at the same path. Real eBPF, the real `llmtap` binary.
//!
//! A file nobody has mapped before is hooked within milliseconds of being mapped, which races
//! with a process that does TLS at once; those clients pause briefly after loading `ssl` so the
//! tests check discovery and exactness rather than that race.

use std::process::Command;

use llmtap_tests::{
    CliCapture, LoggingTlsServer, TempDir, assert_cli_connection_matches, repo_root, require_ebpf,
    run_client,
};

fn system_libssl() -> std::path::PathBuf {
    llmtap::capture::targets::default_libssl().expect("system libssl (cargo xtask setup)")
}

const ONE_SHOT: &str = r#"
import http.client, ssl, sys, time
time.sleep(float(sys.argv[2]))
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
c = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=ctx)
c.request("GET", "/bytes/3000"); body = c.getresponse().read(); assert len(body) == 3000
print(ssl.OPENSSL_VERSION)
"#;

/// Serializes these tests: each runs its own llmtap, and reaction times matter here.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn one_shot_python_started_later_is_traced_from_its_first_write() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf("one_shot_python_started_later_is_traced_from_its_first_write") {
        return;
    }
    let server = LoggingTlsServer::start().expect("server");
    let capture = CliCapture::start(&["--comm", "python3"]).expect("llmtap");
    let (pid, out) =
        run_client(Command::new("python3").args(["-c", ONE_SHOT, &server.port.to_string(), "0"]))
            .expect("python one-shot");
    assert!(out.contains("OpenSSL"), "{out}");
    assert_cli_connection_matches(&capture, &server, pid, 0);
    assert!(capture.stop());
}

#[test]
fn node_started_later_is_traced_without_flags() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf("node_started_later_is_traced_without_flags") {
        return;
    }
    let server = LoggingTlsServer::start().expect("server");
    let capture = CliCapture::start(&["--comm", "node"]).expect("llmtap");
    let (pid, _) = run_client(
        Command::new("/usr/bin/node")
            .arg(repo_root().join("tests/clients/node_client.js"))
            .arg(server.port.to_string())
            .arg("5000"),
    )
    .expect("node client");
    assert_cli_connection_matches(&capture, &server, pid, 0);
    assert!(
        capture.log_text().contains("usr/bin/node"),
        "{}",
        capture.log_text()
    );
    assert!(capture.stop());
}

#[test]
fn python_with_its_own_libssl_copy_is_traced() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf("python_with_its_own_libssl_copy_is_traced") {
        return;
    }
    let server = LoggingTlsServer::start().expect("server");
    let libdir = TempDir::new("libssl-copy").expect("tmp");
    let copy = libdir.path().join("libssl.so.3");
    std::fs::copy(system_libssl(), &copy).expect("copy libssl");
    let capture = CliCapture::start(&["--comm", "python3"]).expect("llmtap");
    let (pid, out) = run_client(
        Command::new("python3")
            .args(["-c", ONE_SHOT, &server.port.to_string(), "0.5"])
            .env("LD_LIBRARY_PATH", libdir.path()),
    )
    .expect("python one-shot");
    assert!(out.contains("OpenSSL"), "{out}");
    // The copy (a distinct inode) must have been found and hooked by itself.
    let log = capture.log_text();
    assert!(
        log.contains(&copy.display().to_string()),
        "copy hooked:\n{log}"
    );
    assert_cli_connection_matches(&capture, &server, pid, 0);
    assert!(capture.stop());
}

#[test]
fn process_in_its_own_mount_namespace_is_traced_through_proc_root() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf("process_in_its_own_mount_namespace_is_traced_through_proc_root") {
        return;
    }
    let server = LoggingTlsServer::start().expect("server");
    let libdir = TempDir::new("ns-libssl").expect("tmp");
    let copy = libdir.path().join("libssl.so.3");
    std::fs::copy(system_libssl(), &copy).expect("copy libssl");
    let capture = CliCapture::start(&["--comm", "python3"]).expect("llmtap");
    // Inside the namespace, the system libssl path shows a different file (our copy): the
    // host path names the host's file, so only /proc/PID/root reaches the right inode.
    let script = format!(
        "mount --bind {} {} && exec python3 -c \"$0\" \"$1\" 0.5",
        copy.display(),
        system_libssl().display()
    );
    let (pid, out) = run_client(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
                ONE_SHOT,
            ])
            .arg(server.port.to_string()),
    )
    .expect("namespaced python");
    assert!(out.contains("OpenSSL"), "{out}");
    let log = capture.log_text();
    assert!(
        log.contains(&format!(
            "/proc/{pid}/root{}",
            std::fs::canonicalize(system_libssl())
                .expect("canonical")
                .display()
        )),
        "the namespace's own libssl was hooked through /proc/PID/root:\n{log}"
    );
    assert_cli_connection_matches(&capture, &server, pid, 0);
    assert!(capture.stop());
}

#[test]
fn replaced_library_is_hooked_again_and_gone_files_are_unhooked() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf("replaced_library_is_hooked_again_and_gone_files_are_unhooked") {
        return;
    }
    let server = LoggingTlsServer::start().expect("server");
    let libdir = TempDir::new("libssl-replace").expect("tmp");
    let lib = libdir.path().join("libssl.so.3");
    std::fs::copy(system_libssl(), &lib).expect("copy libssl");
    let capture =
        CliCapture::start(&["--comm", "python3", "--rescan-interval", "1"]).expect("llmtap");
    let run = || {
        run_client(
            Command::new("python3")
                .args(["-c", ONE_SHOT, &server.port.to_string(), "0.5"])
                .env("LD_LIBRARY_PATH", libdir.path()),
        )
        .expect("python one-shot")
        .0
    };
    let first = run();
    assert_cli_connection_matches(&capture, &server, first, 0);

    // A new file at the same path (a new inode, as a package upgrade does) is found and hooked.
    let staged = libdir.path().join("libssl.so.3.new");
    std::fs::copy(system_libssl(), &staged).expect("stage");
    std::fs::rename(&staged, &lib).expect("replace");
    let second = run();
    assert_cli_connection_matches(&capture, &server, second, 1);
    let lib_lines = |what: &str| {
        capture
            .log_text()
            .lines()
            .filter(|l| l.contains(what) && l.contains(&lib.display().to_string()))
            .count()
    };
    assert_eq!(
        lib_lines("hooked SSL_write"),
        2,
        "hooked once per inode:\n{}",
        capture.log_text()
    );

    let wait_for_unhooks = |n: usize, secs: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while lib_lines("unhooked") < n && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    // The replaced inode can never be mapped again: unhooked at a rescan. The file at the path
    // stays hooked although nobody uses it now, ready for the program's next run.
    wait_for_unhooks(1, 20);
    assert_eq!(lib_lines("unhooked"), 1, "{}", capture.log_text());
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(
        lib_lines("unhooked"),
        1,
        "an unused file that exists stays hooked:\n{}",
        capture.log_text()
    );
    // Deleted: unhooked too.
    std::fs::remove_file(&lib).expect("delete");
    wait_for_unhooks(2, 20);
    assert_eq!(lib_lines("unhooked"), 2, "{}", capture.log_text());
    assert!(capture.stop());
}
