//! Processes started after llmtap give the right span, not just the right bytes: a one-shot
//! `python3 -c` on the system libssl, traced from its very first TLS write, and Node (OpenSSL
//! linked statically into /usr/bin/node) with no flag. Each posts a recorded request to a
//! test-owned HTTPS server as `api.openai.com`. Real eBPF, the real `llmtap` binary.

use std::process::Command;

use llmtap_tests::cassette_run::{
    CassetteServer, LlmtapRun, TestPki, assert_one_span_matches_cassette,
};
use llmtap_tests::{repo_root, require_ebpf, run_client};

const CASSETTE: &str = "tests/data/cassettes/openai__chat_stream_include_usage.json";

/// No pause: the system libssl is hooked when llmtap starts, so the first write is seen.
const PYTHON_ONE_SHOT: &str = r#"
import http.client, json, ssl, sys
cassette = json.load(open(sys.argv[1])); req = cassette["request"]
ctx = ssl.create_default_context(cafile=sys.argv[3])
c = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[2]), context=ctx)
c.request(req["method"], "/v1/chat/completions", body=req["body"].encode(),
          headers={"Host": "api.openai.com", "Content-Type": "application/json",
                   "Authorization": "Bearer sk-test-not-a-real-key"})
r = c.getresponse(); body = r.read()
print(r.status, len(body))
"#;

const NODE_CLIENT: &str = r#"
const fs = require('fs'), https = require('https');
const [cassettePath, port, caPath] = process.argv.slice(1);
const req = JSON.parse(fs.readFileSync(cassettePath)).request;
const r = https.request({host: '127.0.0.1', port: Number(port), servername: 'api.openai.com',
  method: req.method, path: '/v1/chat/completions', ca: fs.readFileSync(caPath),
  headers: {Host: 'api.openai.com', 'Content-Type': 'application/json',
            Authorization: 'Bearer sk-test-not-a-real-key'}}, res => {
  let n = 0; res.on('data', d => { n += d.length; });
  res.on('end', () => { console.log(res.statusCode, n); });
});
r.end(req.body);
"#;

/// Serializes these tests: each runs its own llmtap.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn traced_span(test: &str, client: &mut dyn FnMut(&CassetteServer, &TestPki) -> Command) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf(test) {
        return;
    }
    let cassette_path = repo_root().join(CASSETTE);
    let cassette: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cassette_path).expect("cassette")).expect("json");
    let pki = TestPki::generate().expect("pki");
    let server = CassetteServer::start(&pki, &cassette_path).expect("server");
    let llmtap = LlmtapRun::start().expect("llmtap");
    let (pid, out) = run_client(&mut client(&server, &pki)).expect("client");
    assert!(out.starts_with("200 "), "{out}");
    let (spans, log) = llmtap.stop_after(1);
    assert_one_span_matches_cassette(&spans, pid, &cassette, &log);
}

#[test]
fn one_shot_python_started_after_llmtap_yields_the_span() {
    traced_span(
        "one_shot_python_started_after_llmtap_yields_the_span",
        &mut |server, pki| {
            let mut cmd = Command::new("python3");
            cmd.args(["-c", PYTHON_ONE_SHOT])
                .arg(repo_root().join(CASSETTE))
                .arg(server.port.to_string())
                .arg(pki.path("ca.pem"));
            cmd
        },
    );
}

#[test]
fn node_without_flags_yields_the_span() {
    traced_span("node_without_flags_yields_the_span", &mut |server, pki| {
        let mut cmd = Command::new("/usr/bin/node");
        cmd.args(["-e", NODE_CLIENT])
            .arg(repo_root().join(CASSETTE))
            .arg(server.port.to_string())
            .arg(pki.path("ca.pem"));
        cmd
    });
}
