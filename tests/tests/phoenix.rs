//! Arize Phoenix, the real server (`arize-phoenix`, installed by `cargo xtask setup` into
//! tests/.venv-phoenix), receives llmtap's OTLP spans of real SDK clients and shows them: read
//! back through Phoenix's REST API, each call is an LLM span with the recorded model, token
//! counts and finish reason, with its content when content capture is on (and without it when
//! off), in the project `--openinference-project` names; and Phoenix's own page, rendered by
//! headless Chromium, shows the call (its DOM names the model). The screenshot is kept in
//! target/phoenix/ as a test artifact.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llmtap_tests::replay::{
    LlmtapRun, PLANTED_API_KEY, ReplayServer, cassette_path, load_json, python_sdk_command,
    run_client, sdk_clients_missing, spans_of,
};
use llmtap_tests::{ChildGuard, TempDir, ebpf_required, repo_root, require_ebpf};
use serde_json::Value;

/// Two SDKs, streamed and not, one answering with a tool call.
const CASSETTES: &[&str] = &[
    "openai__chat_stream_include_usage",
    "anthropic__messages_tool_use",
];

/// Phoenix migrates its fresh database and imports a large Python tree at startup: tens of
/// seconds on a busy two-core machine.
const STARTUP_LIMIT: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `curl -sf URL` (bounded), the body when it answers 2xx.
fn http_get(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "10", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `phoenix serve` on loopback with its own working directory (database) and ports.
struct Phoenix {
    child: ChildGuard,
    dir: TempDir,
    port: u16,
}

impl Phoenix {
    fn start() -> Self {
        let venv = repo_root().join("tests/.venv-phoenix/bin/phoenix");
        assert!(
            venv.is_file(),
            "{} missing: run `cargo xtask setup`",
            venv.display()
        );
        let dir = TempDir::new("phoenix").expect("temp dir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("phoenix.log")).expect("log file");
        let child = Command::new(&venv)
            .arg("serve")
            .env("PHOENIX_HOST", "127.0.0.1")
            .env("PHOENIX_PORT", port.to_string())
            .env("PHOENIX_GRPC_PORT", free_port().to_string())
            .env("PHOENIX_WORKING_DIR", dir.path())
            .env("PHOENIX_TELEMETRY_ENABLED", "false")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("phoenix serve starts");
        let mut phoenix = Self {
            child: ChildGuard(child),
            dir,
            port,
        };
        let deadline = Instant::now() + STARTUP_LIMIT;
        loop {
            if http_get(&phoenix.url("/healthz")).is_some() {
                return phoenix;
            }
            if let Ok(Some(status)) = phoenix.child.0.try_wait() {
                panic!("phoenix serve exited ({status}):\n{}", phoenix.log());
            }
            assert!(
                Instant::now() < deadline,
                "phoenix serve not up after {STARTUP_LIMIT:?}:\n{}",
                phoenix.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("phoenix.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// The project's spans, waiting (bounded) until those of `ours` (llmtap's JSONL spans)
    /// are there. The project may hold more: an agent turn's `invoke_agent` span.
    fn spans(&self, project: &str, ours: &[Value]) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans: Vec<Value> =
                http_get(&self.url(&format!("/v1/projects/{project}/spans?limit=100")))
                    .and_then(|body| serde_json::from_str::<Value>(&body).ok())
                    .and_then(|v| v["data"].as_array().cloned())
                    .unwrap_or_default();
            let all_there = ours.iter().all(|o| {
                spans
                    .iter()
                    .any(|s| s["context"]["span_id"] == o["span_id"])
            });
            if all_there || Instant::now() > deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Phoenix's id of a project (its page is `/projects/{id}`).
    fn project_id(&self, name: &str) -> Option<String> {
        let body = http_get(&self.url("/v1/projects"))?;
        let projects: Value = serde_json::from_str(&body).ok()?;
        projects["data"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["id"].as_str().map(str::to_string))
    }
}

/// Runs the recordings' Python SDK clients with llmtap exporting to Phoenix; returns the
/// cassettes and llmtap's JSONL spans (the same spans it sent).
fn traced_calls(phoenix: &Phoenix, llmtap_args: &[&str]) -> (Vec<Value>, Vec<Value>, String) {
    let endpoint = phoenix.url("");
    let mut args = vec!["--otlp-endpoint", &endpoint, "--compat", "openinference"];
    args.extend_from_slice(llmtap_args);
    // Phoenix takes traces only: no metrics to push to it.
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

/// The Phoenix span of llmtap's span (same span id).
fn phoenix_span<'a>(phoenix_spans: &'a [Value], ours: &Value) -> &'a Value {
    let span_id = ours["span_id"].as_str().unwrap_or_default();
    phoenix_spans
        .iter()
        .find(|s| s["context"]["span_id"] == span_id)
        .unwrap_or_else(|| panic!("span {span_id} not in Phoenix: {phoenix_spans:#?}"))
}

/// What every call must show in Phoenix: an LLM span with the recording's model, tokens and
/// finish reason.
fn check_call(span: &Value, cassette: &Value) {
    let expected = &cassette["expected"];
    let attrs = &span["attributes"];
    // Phoenix files `openinference.span.kind` as the span's kind (not among its attributes).
    assert_eq!(span["span_kind"], "LLM", "{span:#}");
    assert_eq!(
        attrs["llm.model_name"], expected["response_model"],
        "{span:#}"
    );
    assert_eq!(
        attrs["llm.token_count.prompt"], expected["input_tokens"],
        "{span:#}"
    );
    assert_eq!(
        attrs["llm.token_count.completion"], expected["output_tokens"],
        "{span:#}"
    );
    assert_eq!(
        attrs["llm.finish_reason"], expected["finish_reasons"][0],
        "{span:#}"
    );
    assert_eq!(
        attrs["gen_ai.response.finish_reasons"], expected["finish_reasons"],
        "{span:#}"
    );
    assert_eq!(
        attrs["gen_ai.provider.name"], cassette["provider"],
        "{span:#}"
    );
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

/// Headless Chromium renders the page (bounded retries while Phoenix's app loads its data);
/// returns the DOM once it contains `needle`, and saves a screenshot to `screenshot`.
fn browser_shows(url: &str, needle: &str, screenshot: &Path) -> Result<(), String> {
    let profile = TempDir::new("chromium").map_err(|e| e.to_string())?;
    let chromium = |extra: &[String]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1600,1000",
                "--virtual-time-budget=20000",
                "--timeout=40000",
                // Only the loopback server: no background or update traffic, no other host.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-domain-reliability",
                "--disable-sync",
                "--no-first-run",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(url)
            .stdin(Stdio::null())
            .output()
    };
    let mut last = String::new();
    for _ in 0..3 {
        let out = chromium(&["--dump-dom".to_string()]).map_err(|e| format!("chromium: {e}"))?;
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        let _ = std::fs::write(screenshot.with_extension("html"), &last);
        if last.contains(needle) {
            let shot = chromium(&[format!("--screenshot={}", screenshot.display())])
                .map_err(|e| format!("chromium: {e}"))?;
            if !screenshot.is_file() {
                return Err(format!(
                    "no screenshot: {}",
                    String::from_utf8_lossy(&shot.stderr)
                ));
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(format!(
        "{needle:?} not in the page's DOM ({} bytes): {}",
        last.len(),
        last.chars().take(2000).collect::<String>()
    ))
}

#[test]
fn phoenix_shows_llmtap_spans_of_real_clients() {
    if !require_ebpf("phoenix_shows_llmtap_spans_of_real_clients") {
        return;
    }
    if let Some(missing) = sdk_clients_missing() {
        assert!(!ebpf_required(), "the SDK clients are missing: {missing}");
        eprintln!("SKIPPED: {missing}");
        return;
    }
    let phoenix = Phoenix::start();

    // Content capture on: the calls and what was said.
    let project = "llmtap-content";
    let (cassettes, ours, log) = traced_calls(
        &phoenix,
        &["--capture-content", "--openinference-project", project],
    );
    let spans = phoenix.spans(project, &ours);
    assert!(!spans.is_empty(), "{log}\n{}", phoenix.log());
    for (cassette, span) in cassettes.iter().zip(&ours) {
        let shown = phoenix_span(&spans, span);
        check_call(shown, cassette);
        let attrs = &shown["attributes"];
        let question = user_text(cassette);
        assert!(!question.is_empty());
        let input = attrs["input.value"].as_str().unwrap_or_default();
        assert!(input.contains(&question), "{question:?} not in {shown:#}");
        assert!(
            attrs["output.value"]
                .as_str()
                .is_some_and(|o| !o.is_empty()),
            "{shown:#}"
        );
        assert!(
            attrs["llm.input_messages.0.message.role"].is_string(),
            "{shown:#}"
        );
        assert!(!shown.to_string().contains(PLANTED_API_KEY));
    }
    // The Anthropic call answered with a tool call: Phoenix keeps it in the output message.
    let tool_call = phoenix_span(&spans, &ours[1]);
    assert!(
        tool_call["attributes"]["llm.output_messages.0.message.tool_calls.0.tool_call.function.name"]
            .is_string(),
        "{tool_call:#}"
    );

    // Phoenix's own page of the project, in a real browser, names the model of the call.
    let id = phoenix.project_id(project).expect("the project exists");
    let artifacts = repo_root().join("target/phoenix");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let screenshot = artifacts.join("phoenix-project.png");
    let _ = std::fs::remove_file(&screenshot);
    // The span list names each span: `chat gpt-4o-mini` (operation and requested model).
    let name = ours[0]["name"].as_str().unwrap_or_default();
    assert!(name.contains("gpt-4o-mini"), "{name}");
    if let Err(e) = browser_shows(&phoenix.url(&format!("/projects/{id}")), name, &screenshot) {
        panic!("Phoenix's page does not show the call: {e}");
    }

    // Content capture off: the same calls, without content.
    let project = "llmtap-no-content";
    let (cassettes, ours, log) = traced_calls(&phoenix, &["--openinference-project", project]);
    let spans = phoenix.spans(project, &ours);
    assert!(!spans.is_empty(), "{log}\n{}", phoenix.log());
    for (cassette, span) in cassettes.iter().zip(&ours) {
        let shown = phoenix_span(&spans, span);
        check_call(shown, cassette);
        let attrs = &shown["attributes"];
        assert!(
            attrs.get("input.value").is_none_or(Value::is_null),
            "{shown:#}"
        );
        assert!(
            attrs
                .get("llm.input_messages.0.message.role")
                .is_none_or(Value::is_null),
            "{shown:#}"
        );
        assert!(
            !shown.to_string().contains(&user_text(cassette)),
            "{shown:#}"
        );
    }
}
