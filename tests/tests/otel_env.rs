//! The real `llmtap run` configured by `OTEL_*` variables only, as the DaemonSet does (issue 19,
//! item 15): `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` alone turns trace export on (gzip from
//! `..._TRACES_COMPRESSION`), `OTEL_SERVICE_NAME=llmtap` does not rename the traced client, and
//! `OTEL_RESOURCE_ATTRIBUTES` reaches its span. A real Python client calls the replay server;
//! a minimal OTLP/HTTP collector in this test receives the spans. Real eBPF.

use std::io::Read as _;
use std::sync::{Arc, Mutex};

use llmtap_tests::replay::{LlmtapRun, ReplayServer};
use llmtap_tests::{repo_root, require_ebpf, run_client};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value},
};
use prost::Message as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const CASSETTE: &str = "tests/data/cassettes/openai__chat_stream_include_usage.json";

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

/// What the collector received: (path, content-encoding, decoded body).
type Requests = Arc<Mutex<Vec<(String, Option<String>, Vec<u8>)>>>;

/// A minimal OTLP/HTTP collector: records every POST, answers 200.
async fn start_collector() -> (String, Requests) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind collector");
    let addr = listener.local_addr().expect("address");
    let requests = Requests::default();
    let sink = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let (mut length, mut encoding) = (0usize, None);
                    loop {
                        let mut header = String::new();
                        if stream.read_line(&mut header).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let header = header.trim_end().to_ascii_lowercase();
                        if header.is_empty() {
                            break;
                        }
                        if let Some(v) = header.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if let Some(v) = header.strip_prefix("content-encoding:") {
                            encoding = Some(v.trim().to_string());
                        }
                    }
                    let mut body = vec![0u8; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if encoding.as_deref() == Some("gzip") {
                        let mut plain = Vec::new();
                        if flate2::read::GzDecoder::new(body.as_slice())
                            .read_to_end(&mut plain)
                            .is_ok()
                        {
                            body = plain;
                        }
                    }
                    sink.lock().expect("lock").push((path, encoding, body));
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if stream.get_mut().write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), requests)
}

fn str_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

fn int_attr(attributes: &[KeyValue], key: &str) -> Option<i64> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::IntValue(n)) => Some(*n),
            _ => None,
        })
}

#[test]
fn otel_variables_configure_the_daemon_and_never_rename_the_traced_client() {
    if !require_ebpf("otel_variables_configure_the_daemon_and_never_rename_the_traced_client") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (collector, requests) = runtime.block_on(start_collector());
    let cassette = repo_root().join(CASSETTE);
    let server = ReplayServer::start(std::slice::from_ref(&cassette)).expect("replay server");
    let traces_endpoint = format!("{collector}/v1/traces");
    let llmtap = LlmtapRun::start_with_env(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &traces_endpoint),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
            ("OTEL_SERVICE_NAME", "llmtap"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=e2e,team=ai%2Cml",
            ),
        ],
    )
    .expect("llmtap");
    let mut client = server.client_command("python3");
    client.args(["-c", PYTHON_ONE_SHOT]).arg(&cassette);
    let (pid, out) = run_client(&mut client).expect("client");
    assert!(out.starts_with("200 "), "{out}");
    llmtap.wait_for(|spans| {
        spans
            .iter()
            .any(|s| s["resource"]["process.pid"] == i64::from(pid))
    });
    // SIGTERM flushes the OTLP queue before llmtap exits.
    let (jsonl_spans, _, log) = llmtap.stop();

    // JSONL carries the same resource.
    let jsonl = jsonl_spans
        .iter()
        .find(|s| s["resource"]["process.pid"] == i64::from(pid))
        .unwrap_or_else(|| panic!("no JSONL span of pid {pid}:\n{log}"));
    // The client's executable as llmtap read it from /proc (python3 may be a launcher of
    // python3.X): its name, never OTEL_SERVICE_NAME, is the service.
    let exe_name = jsonl["resource"]["process.executable.name"]
        .as_str()
        .expect("executable name")
        .to_string();
    assert!(exe_name.starts_with("python"), "{jsonl}");
    assert_eq!(
        jsonl["resource"]["service.name"],
        exe_name.as_str(),
        "{jsonl}"
    );
    assert_eq!(jsonl["resource"]["deployment.environment.name"], "e2e");

    let requests = requests.lock().expect("lock").clone();
    assert!(
        requests.iter().all(|(path, _, _)| path == "/v1/traces"),
        "only the traces endpoint is configured: {:?}",
        requests.iter().map(|(p, _, _)| p).collect::<Vec<_>>()
    );
    let mut found = false;
    for (_, encoding, body) in &requests {
        assert_eq!(encoding.as_deref(), Some("gzip"));
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP request");
        for rs in &request.resource_spans {
            let resource = rs
                .resource
                .as_ref()
                .map(|r| r.attributes.clone())
                .unwrap_or_default();
            if int_attr(&resource, "process.pid") != Some(i64::from(pid)) {
                continue;
            }
            found = true;
            assert_eq!(
                str_attr(&resource, "service.name").as_deref(),
                Some(exe_name.as_str())
            );
            assert_eq!(
                str_attr(&resource, "deployment.environment.name").as_deref(),
                Some("e2e")
            );
            assert_eq!(str_attr(&resource, "team").as_deref(), Some("ai,ml"));
            let spans: Vec<_> = rs.scope_spans.iter().flat_map(|s| &s.spans).collect();
            assert_eq!(spans.len(), 1, "{spans:#?}");
            assert_eq!(spans[0].name, "chat gpt-4o-mini");
        }
    }
    assert!(
        found,
        "the collector got no span of pid {pid} ({} requests):\n{log}",
        requests.len()
    );
}
