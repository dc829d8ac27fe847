//! A process in its own mount namespace, using its own copy of libssl (a different inode,
//! bind-mounted over the system path inside the namespace only), posts a recorded request:
//! llmtap hooks the copy through /proc/PID/root and exports the cassette's span. Real eBPF,
//! the real `llmtap` binary.

use llmtap_tests::replay::{LlmtapRun, ReplayServer, assert_one_span_matches_cassette};
use llmtap_tests::{TempDir, repo_root, require_ebpf, run_client};

const CASSETTE: &str = "tests/data/cassettes/openai__chat_stream_include_usage.json";

/// Posts the cassette's request to https://api.openai.com (the replay server). It waits a moment after
/// loading `ssl`: a library file no process mapped before is hooked within milliseconds of
/// being mapped (README), and this test checks where the hook goes, not that race.
const CLIENT: &str = r#"
import http.client, json, ssl, sys, time
cassette = json.load(open(sys.argv[1]))
time.sleep(0.5)
c = http.client.HTTPSConnection("api.openai.com", context=ssl.create_default_context())
req = cassette["request"]
c.request(req["method"], "/v1/chat/completions", body=req["body"].encode(),
          headers={"Host": "api.openai.com", "Content-Type": "application/json",
                   "Authorization": "Bearer sk-test-not-a-real-key"})
r = c.getresponse(); body = r.read()
print(r.status, len(body), ssl.OPENSSL_VERSION)
"#;

#[test]
fn process_in_its_own_mount_namespace_with_its_own_libssl_yields_the_span() {
    if !require_ebpf("process_in_its_own_mount_namespace_with_its_own_libssl_yields_the_span") {
        return;
    }
    let system_libssl =
        llmtap::capture::targets::default_libssl().expect("system libssl (cargo xtask setup)");
    let system_libssl = std::fs::canonicalize(&system_libssl).expect("canonical libssl");
    let libdir = TempDir::new("ns-own-libssl").expect("tmp");
    let copy = libdir.path().join("libssl.so.3");
    std::fs::copy(&system_libssl, &copy).expect("copy libssl");

    let cassette_path = repo_root().join(CASSETTE);
    let cassette: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cassette_path).expect("cassette")).expect("json");
    let server = ReplayServer::start(std::slice::from_ref(&cassette_path)).expect("server");
    let llmtap = LlmtapRun::start(&[]).expect("llmtap");
    // Inside the client's private mount namespace the system libssl path shows our copy; on
    // the host it is still the host's file, so only /proc/PID/root leads to the inode the
    // process really maps.
    let script = format!(
        "mount --bind {} {} && exec python3 -c \"$0\" \"$1\"",
        copy.display(),
        system_libssl.display()
    );
    let (pid, out) = run_client(
        server
            .client_command("sh")
            .args(["-c", &script, CLIENT])
            .arg(&cassette_path),
    )
    .expect("namespaced python");
    assert!(out.starts_with("200 "), "{out}");
    let (spans, log) = llmtap.stop_after(1);
    assert!(
        log.contains(&format!("/proc/{pid}/root{}", system_libssl.display())),
        "the namespace's own libssl copy was hooked through /proc/PID/root:\n{log}"
    );
    assert_one_span_matches_cassette(&spans, pid, &cassette, &log);
}
