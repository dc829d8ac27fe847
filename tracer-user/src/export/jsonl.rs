//! JSON Lines output: one JSON object per span.
//!
//! # Format (stable)
//!
//! Each line is one finished LLM call:
//!
//! ```json
//! {"name":"chat gpt-4o-mini","kind":"CLIENT",
//!  "trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7",
//!  "parent_span_id":null,
//!  "start_time_unix_nano":1700000001000000000,"end_time_unix_nano":1700000001500000000,
//!  "status":{"code":"UNSET","message":null},
//!  "attributes":{"gen_ai.operation.name":"chat","gen_ai.provider.name":"openai",
//!                "gen_ai.usage.input_tokens":1130,"gen_ai.response.finish_reasons":["stop"]},
//!  "resource":{"service.name":"python3","process.pid":4242,"telemetry.sdk.name":"llmtap"}}
//! ```
//!
//! - `trace_id` (32) and `span_id`/`parent_span_id` (16) are lower-case hex; `parent_span_id` is
//!   the caller's span when the request carried a W3C `traceparent`, else the agent turn's
//!   `invoke_agent` span for a call in a tool loop, else `null`.
//! - `kind` is `"CLIENT"` for calls (and MCP requests), `"INTERNAL"` for agent turns
//!   (`invoke_agent`) and tool executions (`execute_tool`).
//! - `events` (only when there are some): `[{"name","time_unix_nano","attributes"}]`, one
//!   `llmtap.process` per process a tool execution started.
//! - Times are UNIX nanoseconds as JSON integers (they exceed 2^53: parse them as 64-bit
//!   integers, e.g. `jq` ≥ 1.7 keeps them exact).
//! - `status.code` is `"UNSET"` or `"ERROR"`; `status.message` is the provider's error message
//!   (credentials scrubbed) or `null`.
//! - `attributes` and `resource` are flat objects keyed by the OpenTelemetry attribute names
//!   (the same keys as the OTLP output); values are strings, integers, floats, booleans or
//!   arrays of strings. Absent values are omitted, never `null`. Content attributes
//!   (`gen_ai.input.messages`, …) are JSON documents encoded as strings.
//! - Keys may be added in later versions; existing keys keep their meaning.

use std::io::Write;

use serde_json::{Map, Value, json};

use super::{
    attributes::Attributes,
    span::{CallSpan, Kind, SpanStatus},
};

fn attribute_map(attributes: &Attributes) -> Map<String, Value> {
    attributes
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_json()))
        .collect()
}

/// The span's attributes, the flattened ones (`--compat openinference`) after the others.
fn span_attribute_map(span: &CallSpan) -> Map<String, Value> {
    let mut map = attribute_map(&span.attributes);
    for (key, value) in &span.flattened_attributes {
        map.insert(key.clone(), value.to_json());
    }
    map
}

/// The JSON object of one span.
pub fn span_to_json(span: &CallSpan) -> Value {
    let (code, message) = match &span.status {
        SpanStatus::Unset => ("UNSET", Value::Null),
        SpanStatus::Error { message } => ("ERROR", Value::from(message.as_str())),
    };
    let mut object = json!({
        "name": span.name,
        "kind": match span.kind {
            Kind::Client => "CLIENT",
            Kind::Internal => "INTERNAL",
        },
        "trace_id": span.trace_id.to_string(),
        "span_id": span.span_id.to_string(),
        "parent_span_id": span.parent_span_id.map(|id| id.to_string()),
        "start_time_unix_nano": span.start_unix_nanos,
        "end_time_unix_nano": span.end_unix_nanos,
        "status": {"code": code, "message": message},
        "attributes": span_attribute_map(span),
        "resource": resource_map(span),
    });
    // Only spans that have events (tool executions that started processes) carry the key.
    if !span.events.is_empty()
        && let Some(map) = object.as_object_mut()
    {
        let events: Vec<Value> = span
            .events
            .iter()
            .map(|e| {
                json!({
                    "name": e.name,
                    "time_unix_nano": e.time_unix_nanos,
                    "attributes": attribute_map(&e.attributes),
                })
            })
            .collect();
        map.insert("events".to_string(), Value::from(events));
    }
    object
}

/// The resource's attributes and the `OTEL_RESOURCE_ATTRIBUTES` entries added to them.
fn resource_map(span: &CallSpan) -> Map<String, Value> {
    let mut map = attribute_map(&span.resource.attributes());
    for (key, value) in span.resource.extra_attributes() {
        map.insert(key.to_string(), value.into());
    }
    map
}

/// Writes spans as JSON lines into a buffer the daemon flushes after each batch of events, so
/// a reader (`tail -f`) sees calls as they complete without a write per call.
pub struct JsonlWriter {
    out: Box<dyn Write + Send>,
}

impl JsonlWriter {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self { out }
    }

    pub fn write_span(&mut self, span: &CallSpan) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&span_to_json(span)).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.out.write_all(&line)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::export::{
        clock::ClockOffset,
        resource::ProcessResource,
        span::{ContentCapture, SpanBuilder, tests::streamed_chat},
    };

    /// A `Write` whose bytes the test can read back.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);
    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_line_per_span_with_the_documented_shape() {
        let resource = Arc::new(ProcessResource {
            service_name: "python3".into(),
            pid: 4242,
            executable_name: "python3".into(),
            executable_path: Some("/usr/bin/python3".into()),
            command_line: Some("python3 app.py".into()),
            host_name: Some("box".into()),
            container_id: None,
            kubernetes: None,
            configured_attributes: Default::default(),
            openinference_project: None,
        });
        let builder = SpanBuilder::new(
            ClockOffset::fixed(1_700_000_000_000_000_000),
            ContentCapture {
                enabled: false,
                max_bytes: 10,
            },
        );
        let mut record = streamed_chat();
        record.request.traceparent =
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        let span = builder.build(&record, resource, None);
        let buf = SharedBuf::default();
        let mut writer = JsonlWriter::new(Box::new(buf.clone()));
        writer.write_span(&span).ok();
        writer.write_span(&span).ok();
        let bytes = buf.0.lock().map(|b| b.clone()).unwrap_or_default();
        let text = String::from_utf8(bytes).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: Value = serde_json::from_str(lines[0]).unwrap_or_default();
        let keys: Vec<&str> = v
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            [
                "attributes",
                "end_time_unix_nano",
                "kind",
                "name",
                "parent_span_id",
                "resource",
                "span_id",
                "start_time_unix_nano",
                "status",
                "trace_id"
            ]
        );
        assert_eq!(v["name"], "chat gpt-4o-mini");
        assert_eq!(v["kind"], "CLIENT");
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["parent_span_id"], "00f067aa0ba902b7");
        assert_eq!(v["span_id"].as_str().map(str::len), Some(16));
        assert_eq!(
            v["start_time_unix_nano"].as_u64(),
            Some(1_700_000_001_000_000_000)
        );
        assert_eq!(
            v["end_time_unix_nano"].as_u64(),
            Some(1_700_000_001_500_000_000)
        );
        assert_eq!(v["status"], json!({"code": "UNSET", "message": null}));
        assert_eq!(v["attributes"]["gen_ai.usage.input_tokens"], 1130);
        assert_eq!(v["attributes"]["gen_ai.request.temperature"], 0.7);
        assert_eq!(v["attributes"]["gen_ai.request.stream"], true);
        assert_eq!(
            v["attributes"]["gen_ai.response.finish_reasons"],
            json!(["stop"])
        );
        assert_eq!(v["resource"]["process.pid"], 4242);
        assert_eq!(v["resource"]["service.name"], "python3");
        assert_eq!(v["resource"]["telemetry.sdk.name"], "llmtap");
        assert!(
            v["attributes"]
                .as_object()
                .is_some_and(|o| o.values().all(|x| !x.is_null()))
        );
    }
}
