//! Console and JSONL outputs through `Exporters`, as the daemon drives them.

mod export_support;

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use export_support::*;
use llmtap::export::{ClockOffset, ExportArgs, ExporterOptions, Exporters};
use serde_json::Value;

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

fn options(stdout: SharedBuf, tag: &str) -> ExporterOptions {
    ExporterOptions {
        clock: ClockOffset::fixed(CLOCK_OFFSET_NS),
        proc_root: fake_proc(
            tag,
            &[(1001, &["/usr/bin/python3", "chat.py"], "/usr/bin/python3")],
        ),
        stdout: Box::new(stdout),
        env: Default::default(),
        metric_interval: None,
        kubernetes: None,
    }
}

#[tokio::test]
async fn jsonl_on_stdout_has_the_documented_shape() {
    let out = SharedBuf::default();
    let args = ExportArgs {
        outputs: vec!["jsonl=-".parse().expect("output")],
        ..ExportArgs::default()
    };
    let mut exporters = Exporters::with_options(&args, options(out.clone(), "jsonl"))
        .await
        .expect("exporters");
    exporters.export(&openai_stream(1001, 10_000_000_000));
    exporters.export(&openai_400(1001, 12_000_000_000));
    exporters.shutdown().await;
    let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let ok = &lines[0];
    let start = (CLOCK_OFFSET_NS + 10_000_000_000) as u64;
    let expected_top = serde_json::json!({
        "name": "chat gpt-4o-mini",
        "kind": "CLIENT",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "parent_span_id": "b7ad6b7169203331",
        "start_time_unix_nano": start,
        "end_time_unix_nano": start + 600_000_000,
        "status": {"code": "UNSET", "message": null},
    });
    for (key, value) in expected_top.as_object().expect("object") {
        assert_eq!(&ok[key], value, "{key}");
    }
    assert_eq!(ok["span_id"].as_str().map(str::len), Some(16));
    let attrs = &ok["attributes"];
    assert_eq!(attrs["gen_ai.usage.input_tokens"], 23);
    assert_eq!(attrs["gen_ai.usage.output_tokens"], 8);
    assert_eq!(attrs["gen_ai.request.stream"], true);
    assert_eq!(attrs["gen_ai.response.time_to_first_chunk"], 0.4);
    assert_eq!(
        attrs["gen_ai.response.finish_reasons"],
        serde_json::json!(["stop"])
    );
    assert!(attrs["llmtap.usage.cost_usd"].is_f64());
    let resource = &ok["resource"];
    assert_eq!(resource["service.name"], "python3");
    assert_eq!(resource["process.pid"], 1001);
    assert_eq!(resource["process.executable.name"], "python3");
    // Opt-in (`--export-command-line`): absent by default.
    assert_eq!(resource["process.command_line"], Value::Null);
    assert_eq!(resource["process.executable.path"], "/usr/bin/python3");
    assert_eq!(resource["telemetry.sdk.language"], "rust");

    let failed = &lines[1];
    assert_eq!(
        failed["status"],
        serde_json::json!({"code": "ERROR", "message": "Invalid image."})
    );
    assert_eq!(failed["parent_span_id"], Value::Null);
    assert_eq!(failed["attributes"]["error.type"], "invalid_request_error");
    assert_eq!(failed["attributes"]["http.response.status_code"], 400);
}

#[tokio::test]
async fn console_is_the_default_and_summarises_at_shutdown() {
    let out = SharedBuf::default();
    let args = ExportArgs {
        summary_interval: Duration::ZERO,
        service_name: Some("override".into()),
        ..ExportArgs::default()
    };
    let mut exporters = Exporters::with_options(&args, options(out.clone(), "console"))
        .await
        .expect("exporters");
    exporters.export(&openai_stream(1001, 10_000_000_000));
    exporters.export(&anthropic_cached(1002, 11_000_000_000));
    exporters.shutdown().await;
    let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("TIME(UTC)"), "{text}");
    assert!(
        lines[1].contains("1001/python3") && lines[1].contains("23→8"),
        "{text}"
    );
    // pid 1002 has no /proc entry: the record's comm is used.
    assert!(
        lines[2].contains("1002/node") && lines[2].contains("1169→221"),
        "{text}"
    );
    assert!(
        lines[2].contains(" stop ") && lines[2].contains("3.000s"),
        "{text}"
    );
    assert!(text.contains("── summary ──"), "{text}");
    assert_eq!(lines.len(), 3 + 1 + 2, "{text}");
}
