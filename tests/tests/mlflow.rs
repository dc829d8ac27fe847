//! MLflow, the real tracking server (`mlflow`, installed by `cargo xtask setup` into
//! tests/.venv-mlflow), receives llmtap's OTLP spans of real SDK clients on `/v1/traces` (the
//! experiment named by the `x-mlflow-experiment-id` header) and keeps them as traces: read back
//! through MLflow's own client (`mlflow.search_traces`), each call is there with the recorded
//! model, token counts and finish reason, and with its messages when content capture is on.

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llmtap_tests::replay::{
    LlmtapRun, PLANTED_API_KEY, ReplayServer, cassette_path, load_json, python_sdk_command,
    run_client, sdk_clients_missing, spans_of,
};
use llmtap_tests::{ChildGuard, TempDir, ebpf_required, repo_root, require_ebpf};
use serde_json::Value;

/// Two SDKs, streamed and not.
const CASSETTES: &[&str] = &[
    "openai__chat_stream_include_usage",
    "anthropic__messages_tool_use",
];

const STARTUP_LIMIT: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn venv_bin(name: &str) -> PathBuf {
    let path = repo_root().join("tests/.venv-mlflow/bin").join(name);
    assert!(
        path.is_file(),
        "{} missing: run `cargo xtask setup`",
        path.display()
    );
    path
}

/// Every span of the experiment's traces, through MLflow's own client, as JSON.
const SEARCH_TRACES: &str = r#"
import json, sys, mlflow
mlflow.set_tracking_uri(sys.argv[1])
traces = mlflow.search_traces(locations=[sys.argv[2]], return_type="list")
print(json.dumps([s.to_dict() for t in traces for s in t.data.spans]))
"#;

/// The server's process group: `mlflow server` starts uvicorn and job workers as its
/// children, which outlive it unless the whole group is ended.
struct ProcessGroup(ChildGuard);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let pgid = self.0.0.id() as i32;
        // SAFETY: kill(2) of the process group this test created (the server leads it).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

/// `mlflow server` on loopback with a SQLite store in a temp directory.
struct Mlflow {
    _child: ProcessGroup,
    dir: TempDir,
    port: u16,
    experiment_id: String,
}

impl Mlflow {
    fn start() -> Self {
        let dir = TempDir::new("mlflow").expect("temp dir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("mlflow.log")).expect("log file");
        let child = Command::new(venv_bin("mlflow"))
            .args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}/mlflow.db", dir.path().display()))
            .arg("--default-artifact-root")
            .arg(dir.path().join("artifacts"))
            .args(["--workers", "1"])
            .env("MLFLOW_ENABLE_TELEMETRY", "false")
            .env("DO_NOT_TRACK", "true")
            .current_dir(dir.path())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("mlflow server starts");
        let mut mlflow = Self {
            _child: ProcessGroup(ChildGuard(child)),
            dir,
            port,
            // The Default experiment every store starts with.
            experiment_id: "0".into(),
        };
        let deadline = Instant::now() + STARTUP_LIMIT;
        loop {
            let up = Command::new("curl")
                .args(["-sf", "--max-time", "5", &mlflow.url("/health")])
                .output()
                .is_ok_and(|o| o.status.success());
            if up {
                return mlflow;
            }
            if let Ok(Some(status)) = mlflow._child.0.0.try_wait() {
                panic!("mlflow server exited ({status}):\n{}", mlflow.log());
            }
            assert!(
                Instant::now() < deadline,
                "mlflow server not up after {STARTUP_LIMIT:?}:\n{}",
                mlflow.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mlflow.log")).unwrap_or_default()
    }

    /// The experiment's spans, waiting (bounded) until those of `ours` are there.
    fn spans(&self, ours: &[Value]) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(venv_bin("python3"))
                .args(["-c", SEARCH_TRACES, &self.url(""), &self.experiment_id])
                .output()
                .expect("python");
            let spans: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let all_there = ours.iter().all(|o| span_of(&spans, o).is_some());
            if all_there || Instant::now() > deadline {
                assert!(
                    out.status.success(),
                    "search_traces failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return spans;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Runs the recordings' Python SDK clients with llmtap exporting to Phoenix; returns the
/// cassettes and llmtap's JSONL spans (the same spans it sent).
fn traced_calls(mlflow: &Mlflow, llmtap_args: &[&str]) -> (Vec<Value>, Vec<Value>, String) {
    let endpoint = mlflow.url("");
    let experiment = format!("x-mlflow-experiment-id={}", mlflow.experiment_id);
    let mut args = vec!["--otlp-endpoint", &endpoint, "--otlp-header", &experiment];
    args.extend_from_slice(llmtap_args);
    // MLflow takes traces only: no metrics to push to it.
    let llmtap = LlmtapRun::start_with_env(&args, &[("OTEL_METRICS_EXPORTER", "none")])
        .expect("llmtap starts");
    let paths: Vec<PathBuf> = CASSETTES.iter().map(|c| cassette_path(c)).collect();
    let server = ReplayServer::start(&paths).expect("replay server");
    let mut pids = Vec::new();
    for path in &paths {
        let outcome = run_client(&mut python_sdk_command(&server, path, &[])).expect("client");
        assert_eq!(
            outcome.code,
            Some(0),
            "{}: {}",
            path.display(),
            outcome.stderr
        );
        pids.push(outcome.pid);
    }
    llmtap.wait_for(|spans| pids.iter().all(|pid| spans_of(spans, *pid).len() == 1));
    // SIGTERM flushes the OTLP queue before llmtap exits.
    let (spans, jsonl, log) = llmtap.stop();
    assert!(
        !jsonl.contains(PLANTED_API_KEY) && !log.contains(PLANTED_API_KEY),
        "the API key reached llmtap's output"
    );
    let ours: Vec<Value> = pids
        .iter()
        .map(|pid| {
            let found = spans_of(&spans, *pid);
            assert_eq!(found.len(), 1, "one span for pid {pid}:\n{log}");
            found[0].clone()
        })
        .collect();
    let cassettes = paths
        .iter()
        .map(|p| load_json(p).expect("cassette"))
        .collect();
    (cassettes, ours, log)
}

/// MLflow's span of llmtap's span: MLflow keeps the OTLP span id (base64 of its bytes in
/// `span_id`, or hex), so match by name and start time too.
fn span_of<'a>(spans: &'a [Value], ours: &Value) -> Option<&'a Value> {
    let hex = ours["span_id"].as_str().unwrap_or_default();
    spans.iter().find(|s| {
        let id = s["span_id"].as_str().unwrap_or_default();
        id == hex || decode_b64_hex(id).as_deref() == Some(hex)
    })
}

fn decode_b64_hex(text: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A span attribute as MLflow keeps it: JSON-encoded values.
fn attribute(span: &Value, key: &str) -> Value {
    match &span["attributes"][key] {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
        other => other.clone(),
    }
}

/// The last user message's text in a recorded request body.
fn user_text(cassette: &Value) -> String {
    let body: Value = serde_json::from_str(cassette["request"]["body"].as_str().unwrap_or("{}"))
        .unwrap_or_default();
    let last_user = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user").cloned())
        .unwrap_or_default();
    match &last_user["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .find_map(|p| p["text"].as_str().map(str::to_string))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

#[test]
fn mlflow_keeps_llmtap_spans_of_real_clients() {
    if !require_ebpf("mlflow_keeps_llmtap_spans_of_real_clients") {
        return;
    }
    if let Some(missing) = sdk_clients_missing() {
        assert!(!ebpf_required(), "the SDK clients are missing: {missing}");
        eprintln!("SKIPPED: {missing}");
        return;
    }
    let mlflow = Mlflow::start();
    let (cassettes, ours, log) = traced_calls(&mlflow, &["--capture-content"]);
    let spans = mlflow.spans(&ours);
    let artifacts = repo_root().join("target/mlflow");
    let _ = std::fs::create_dir_all(&artifacts);
    let _ = std::fs::write(
        artifacts.join("spans.json"),
        serde_json::to_string_pretty(&spans).unwrap_or_default(),
    );
    for (cassette, span) in cassettes.iter().zip(&ours) {
        let kept = span_of(&spans, span).unwrap_or_else(|| {
            panic!(
                "{span:#} not in MLflow: {spans:#?}\n{log}\n{}",
                mlflow.log()
            )
        });
        let expected = &cassette["expected"];
        assert_eq!(kept["name"], span["name"], "{kept:#}");
        assert_eq!(
            attribute(kept, "gen_ai.response.model"),
            expected["response_model"],
            "{kept:#}"
        );
        assert_eq!(
            attribute(kept, "gen_ai.usage.input_tokens"),
            expected["input_tokens"],
            "{kept:#}"
        );
        assert_eq!(
            attribute(kept, "gen_ai.usage.output_tokens"),
            expected["output_tokens"],
            "{kept:#}"
        );
        assert_eq!(
            attribute(kept, "gen_ai.response.finish_reasons"),
            expected["finish_reasons"],
            "{kept:#}"
        );
        // MLflow's own reading of the GenAI span: a chat model call with its model, usage and
        // the messages as the span's inputs and outputs.
        assert_eq!(attribute(kept, "mlflow.spanType"), "CHAT_MODEL", "{kept:#}");
        assert_eq!(
            attribute(kept, "mlflow.llm.model"),
            expected["response_model"],
            "{kept:#}"
        );
        let usage = attribute(kept, "mlflow.chat.tokenUsage");
        assert_eq!(usage["input_tokens"], expected["input_tokens"], "{kept:#}");
        assert_eq!(
            usage["output_tokens"], expected["output_tokens"],
            "{kept:#}"
        );
        let question = user_text(cassette);
        assert!(!question.is_empty());
        let inputs = attribute(kept, "mlflow.spanInputs").to_string();
        assert!(inputs.contains(&question), "{question:?} not in {kept:#}");
        assert!(attribute(kept, "mlflow.spanOutputs").is_array(), "{kept:#}");
        assert!(!kept.to_string().contains(PLANTED_API_KEY));
    }
}
