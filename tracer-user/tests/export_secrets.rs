//! API-key planting: a key on the traced process's command line, in a Bearer credential, in an
//! error message and in captured content must never reach the console, JSONL, OTLP or logs.

mod export_support;

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use export_support::*;
use llmtap::{
    export::{ClockOffset, ExportArgs, ExporterOptions, Exporters, OtlpProtocol},
    genai::CallContent,
};

const KEY: &str = "sk-live-123";
const BEARER_TOKEN: &str = "tok-secret-xyz";

#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("buffer lock")).into_owned()
    }
}

/// Captures every log record of this test binary.
struct CapturingLogger(SharedBuf);

impl log::Log for CapturingLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let mut out = self.0.clone();
        let _ = writeln!(
            out,
            "{} {}: {}",
            record.level(),
            record.target(),
            record.args()
        );
    }
    fn flush(&self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_credentials_never_leave_llmtap() {
    let logs = SharedBuf::default();
    log::set_boxed_logger(Box::new(CapturingLogger(logs.clone()))).expect("logger");
    log::set_max_level(log::LevelFilter::Trace);

    let root = fake_proc(
        "secrets",
        &[(
            3001,
            &[
                "/usr/bin/python3",
                "agent.py",
                "--api-key",
                KEY,
                "-H",
                "Authorization: Bearer tok-secret-xyz",
                "--token=tok-secret-xyz",
            ],
            "/usr/bin/python3",
        )],
    );
    let jsonl_path =
        std::env::temp_dir().join(format!("llmtap-secrets-{}.jsonl", std::process::id()));
    std::fs::remove_file(&jsonl_path).ok();
    let (endpoint, receiver) = start_http_receiver().await;
    let args = ExportArgs {
        outputs: vec![
            "console".parse().expect("output"),
            format!("jsonl={}", jsonl_path.display())
                .parse()
                .expect("output"),
            "otlp".parse().expect("output"),
        ],
        capture_content: true,
        // The planted command-line key must be redacted when the command line is exported.
        export_command_line: true,
        otlp_endpoint: Some(endpoint),
        otlp_protocol: Some(OtlpProtocol::HttpProtobuf),
        ..ExportArgs::default()
    };
    let console = SharedBuf::default();
    let mut exporters = Exporters::with_options(
        &args,
        ExporterOptions {
            clock: ClockOffset::fixed(CLOCK_OFFSET_NS),
            proc_root: root,
            stdout: Box::new(console.clone()),
            // A malformed header entry (no '=') holding a credential: warned about, by
            // position only.
            env: [(
                "OTEL_EXPORTER_OTLP_HEADERS".to_string(),
                format!("x-ok=1,authorization Bearer {BEARER_TOKEN}"),
            )]
            .into(),
            metric_interval: Some(Duration::from_secs(3600)),
            kubernetes: None,
        },
    )
    .await
    .expect("exporters");

    let mut failed = openai_400(3001, 5_000_000_000);
    if let Some(error) = &mut failed.error {
        error.message = Some(format!("Incorrect API key provided: {KEY}"));
    }
    let mut chat = openai_stream(3001, 6_000_000_000);
    chat.content = Some(CallContent {
        input_messages: Some(serde_json::json!([{
            "role": "user",
            "parts": [{"type": "text", "content": format!("use {KEY} with Authorization: Bearer {BEARER_TOKEN}")}]
        }])),
        output_messages: Some(serde_json::json!([{
            "role": "assistant", "finish_reason": "stop",
            "parts": [{"type": "text", "content": "ok"}]
        }])),
        system_instructions: None,
        tool_definitions: None,
    });
    exporters.export(&failed);
    exporters.export(&chat);
    exporters.shutdown().await;

    let console = console.text();
    let jsonl = std::fs::read_to_string(&jsonl_path).expect("jsonl file");
    let logs = logs.text();

    // The data went through every output (so the absence checks below mean something).
    assert!(console.contains("3001/python3"), "{console}");
    assert_eq!(jsonl.lines().count(), 2, "{jsonl}");
    assert!(jsonl.contains("agent.py --api-key [REDACTED]"), "{jsonl}");
    assert!(
        jsonl.contains("Incorrect API key provided: [REDACTED]"),
        "{jsonl}"
    );
    assert!(jsonl.contains("gen_ai.input.messages"), "{jsonl}");
    assert_eq!(receiver.spans().len(), 2);
    assert!(receiver.contains_bytes("agent.py"));
    assert!(receiver.contains_bytes("[REDACTED]"));
    assert!(logs.contains("export outputs"), "{logs}");
    assert!(
        logs.contains("OTEL_EXPORTER_OTLP_HEADERS: entry 2 ignored"),
        "{logs}"
    );

    for secret in [KEY, BEARER_TOKEN] {
        assert!(!console.contains(secret), "{secret} in console:\n{console}");
        assert!(!jsonl.contains(secret), "{secret} in JSONL:\n{jsonl}");
        assert!(!receiver.contains_bytes(secret), "{secret} sent over OTLP");
        assert!(!logs.contains(secret), "{secret} in logs:\n{logs}");
    }
}
