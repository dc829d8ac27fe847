//! Processes started after llmtap give the right span, not just the right bytes: a one-shot
//! `python3 -c` on the system libssl, traced from its very first TLS write, and Node (OpenSSL
//! linked statically into /usr/bin/node) with no flag. Each posts a recorded request to a
//! `https://api.openai.com`, answered by the replay server. Real eBPF, the real `llmtap` binary.

use std::process::Command;

use llmtap_tests::replay::{LlmtapRun, ReplayServer, assert_one_span_matches_cassette};
use llmtap_tests::{repo_root, require_ebpf, run_client};

const CASSETTE: &str = "tests/data/cassettes/openai__chat_stream_include_usage.json";

/// No pause: the system libssl is hooked when llmtap starts, so the first write is seen.
const PYTHON_ONE_SHOT: &str = r#"
import http.client, json, ssl, sys
cassette = json.load(open(sys.argv[1])); req = cassette["request"]
c = http.client.HTTPSConnection("api.openai.com", context=ssl.create_default_context())
c.request(req["method"], "/v1/chat/completions", body=req["body"].encode(),
          headers={"Host": "api.openai.com", "Content-Type": "application/json",
                   "Authorization": "Bearer sk-test-not-a-real-key"})
r = c.getresponse(); body = r.read()
print(r.status, len(body))
"#;

const NODE_CLIENT: &str = r#"
const fs = require('fs'), https = require('https');
const [cassettePath] = process.argv.slice(1);
const req = JSON.parse(fs.readFileSync(cassettePath)).request;
const r = https.request({host: 'api.openai.com', method: req.method, path: '/v1/chat/completions',
  headers: {Host: 'api.openai.com', 'Content-Type': 'application/json',
            Authorization: 'Bearer sk-test-not-a-real-key'}}, res => {
  let n = 0; res.on('data', d => { n += d.length; });
  res.on('end', () => { console.log(res.statusCode, n); });
});
r.end(req.body);
"#;

fn traced_span(test: &str, client: &mut dyn FnMut(&ReplayServer) -> Command) {
    if !require_ebpf(test) {
        return;
    }
    let cassette_path = repo_root().join(CASSETTE);
    let cassette: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cassette_path).expect("cassette")).expect("json");
    let server = ReplayServer::start(std::slice::from_ref(&cassette_path)).expect("server");
    let llmtap = LlmtapRun::start(&[]).expect("llmtap");
    let (pid, out) = run_client(&mut client(&server)).expect("client");
    assert!(out.starts_with("200 "), "{out}");
    let (spans, log) = llmtap.stop_after(1);
    assert_one_span_matches_cassette(&spans, pid, &cassette, &log);
}

#[test]
fn one_shot_python_started_after_llmtap_yields_the_span() {
    traced_span(
        "one_shot_python_started_after_llmtap_yields_the_span",
        &mut |server| {
            let mut cmd = server.client_command("python3");
            cmd.args(["-c", PYTHON_ONE_SHOT])
                .arg(repo_root().join(CASSETTE));
            cmd
        },
    );
}

#[test]
fn node_without_flags_yields_the_span() {
    traced_span("node_without_flags_yields_the_span", &mut |server| {
        let mut cmd = server.client_command("/usr/bin/node");
        cmd.args(["-e", NODE_CLIENT])
            .arg(repo_root().join(CASSETTE));
        cmd
    });
}
