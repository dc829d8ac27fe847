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

use std::collections::BTreeMap;
use std::io::Write;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

use super::{
    attributes::{AttrValue, Attributes},
    span::{CallSpan, Kind, SpanEvent, SpanStatus},
};

/// An attribute value as written: one of llmtap's, or a configured resource string.
enum JsonAttr<'a> {
    Attr(&'a AttrValue),
    Text(&'a str),
}

impl Serialize for JsonAttr<'_> {
    fn serialize<S: Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        match self {
            JsonAttr::Text(text) => out.serialize_str(text),
            JsonAttr::Attr(AttrValue::Str(text)) => out.serialize_str(text),
            JsonAttr::Attr(AttrValue::Int(n)) => out.serialize_i64(*n),
            // A non-finite float is written `null`, as serde_json writes it.
            JsonAttr::Attr(AttrValue::Double(x)) => out.serialize_f64(*x),
            JsonAttr::Attr(AttrValue::Bool(b)) => out.serialize_bool(*b),
            JsonAttr::Attr(AttrValue::StrArray(items)) => {
                let mut seq = out.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
        }
    }
}

/// An attribute object: keys in sorted order, a repeated key keeping its last value (the
/// object's layout since the format was defined).
type AttrObject<'a> = BTreeMap<&'a str, JsonAttr<'a>>;

fn attribute_object(attributes: &Attributes) -> AttrObject<'_> {
    attributes
        .iter()
        .map(|(key, value)| (*key, JsonAttr::Attr(value)))
        .collect()
}

/// The span's attributes, the flattened ones (`--compat openinference`) after the others.
fn span_attribute_object(span: &CallSpan) -> AttrObject<'_> {
    let mut object = attribute_object(&span.attributes);
    for (key, value) in &span.flattened_attributes {
        object.insert(key.as_str(), JsonAttr::Attr(value));
    }
    object
}

/// `{"code", "message"}` of a span.
struct JsonStatus<'a>(&'a SpanStatus);

impl Serialize for JsonStatus<'_> {
    fn serialize<S: Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        let mut map = out.serialize_map(Some(2))?;
        match self.0 {
            SpanStatus::Unset => {
                map.serialize_entry("code", "UNSET")?;
                map.serialize_entry("message", &None::<&str>)?;
            }
            SpanStatus::Error { message } => {
                map.serialize_entry("code", "ERROR")?;
                map.serialize_entry("message", message)?;
            }
        }
        map.end()
    }
}

struct JsonEvent<'a>(&'a SpanEvent);

impl Serialize for JsonEvent<'_> {
    fn serialize<S: Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        let mut map = out.serialize_map(Some(3))?;
        map.serialize_entry("attributes", &attribute_object(&self.0.attributes))?;
        map.serialize_entry("name", self.0.name)?;
        map.serialize_entry("time_unix_nano", &self.0.time_unix_nanos)?;
        map.end()
    }
}

struct JsonEvents<'a>(&'a [SpanEvent]);

impl Serialize for JsonEvents<'_> {
    fn serialize<S: Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        out.collect_seq(self.0.iter().map(JsonEvent))
    }
}

/// A string written through its `Display` form, without an intermediate `String`.
struct Displayed<T>(T);

impl<T: std::fmt::Display> Serialize for Displayed<T> {
    fn serialize<S: Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        out.collect_str(&self.0)
    }
}

/// One span as its JSON object, written straight from the span (no `serde_json::Value`
/// tree per call). Keys come in sorted order.
pub struct SpanJson<'a>(pub &'a CallSpan);

impl Serialize for SpanJson<'_> {
    fn serialize<S: Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        let span = self.0;
        let resource_attributes = span.resource.attributes();
        let mut resource = attribute_object(&resource_attributes);
        for (key, value) in span.resource.extra_attributes() {
            resource.insert(key, JsonAttr::Text(value));
        }
        let mut map = out.serialize_map(None)?;
        map.serialize_entry("attributes", &span_attribute_object(span))?;
        map.serialize_entry("end_time_unix_nano", &span.end_unix_nanos)?;
        // Only spans that have events (tool executions that started processes) carry the key.
        if !span.events.is_empty() {
            map.serialize_entry("events", &JsonEvents(&span.events))?;
        }
        let kind = match span.kind {
            Kind::Client => "CLIENT",
            Kind::Internal => "INTERNAL",
        };
        map.serialize_entry("kind", kind)?;
        map.serialize_entry("name", &span.name)?;
        map.serialize_entry("parent_span_id", &span.parent_span_id.map(Displayed))?;
        map.serialize_entry("resource", &resource)?;
        map.serialize_entry("span_id", &Displayed(span.span_id))?;
        map.serialize_entry("start_time_unix_nano", &span.start_unix_nanos)?;
        map.serialize_entry("status", &JsonStatus(&span.status))?;
        map.serialize_entry("trace_id", &Displayed(span.trace_id))?;
        map.end()
    }
}

/// The JSON object of one span, as a `serde_json::Value` (for callers that inspect it).
pub fn span_to_json(span: &CallSpan) -> Value {
    // Serializing into a `Value` cannot fail: every key is a string.
    serde_json::to_value(SpanJson(span)).unwrap_or(Value::Null)
}

/// Writes spans as JSON lines into a buffer the daemon flushes after each batch of events, so
/// a reader (`tail -f`) sees calls as they complete without a write per call.
pub struct JsonlWriter {
    out: Box<dyn Write + Send>,
    /// The line being written, kept between spans: a span that fails to serialize leaves
    /// nothing half-written.
    line: Vec<u8>,
}

impl JsonlWriter {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            line: Vec::new(),
        }
    }

    pub fn write_span(&mut self, span: &CallSpan) -> std::io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, &SpanJson(span)).map_err(std::io::Error::other)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::{Map, json};

    use super::*;
    use crate::export::{
        clock::ClockOffset,
        resource::ProcessResource,
        span::{ContentCapture, SpanBuilder, tests::streamed_chat},
    };

    /// The line as the format was first defined: a `serde_json::Value` built from the span
    /// (sorted keys, a repeated key keeping its last value). The direct writer must produce
    /// exactly these bytes.
    fn reference_line(span: &CallSpan) -> Vec<u8> {
        fn attribute_map(attributes: &Attributes) -> Map<String, Value> {
            attributes
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_json()))
                .collect()
        }
        let mut attributes = attribute_map(&span.attributes);
        for (key, value) in &span.flattened_attributes {
            attributes.insert(key.clone(), value.to_json());
        }
        let mut resource = attribute_map(&span.resource.attributes());
        for (key, value) in span.resource.extra_attributes() {
            resource.insert(key.to_string(), value.into());
        }
        let (code, message) = match &span.status {
            SpanStatus::Unset => ("UNSET", Value::Null),
            SpanStatus::Error { message } => ("ERROR", Value::from(message.as_str())),
        };
        let mut object = json!({
            "name": span.name,
            "kind": match span.kind { Kind::Client => "CLIENT", Kind::Internal => "INTERNAL" },
            "trace_id": span.trace_id.to_string(),
            "span_id": span.span_id.to_string(),
            "parent_span_id": span.parent_span_id.map(|id| id.to_string()),
            "start_time_unix_nano": span.start_unix_nanos,
            "end_time_unix_nano": span.end_unix_nanos,
            "status": {"code": code, "message": message},
            "attributes": attributes,
            "resource": resource,
        });
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
        serde_json::to_vec(&object).unwrap_or_default()
    }

    fn written_line(span: &CallSpan) -> Vec<u8> {
        let buf = SharedBuf::default();
        let mut writer = JsonlWriter::new(Box::new(buf.clone()));
        writer.write_span(span).ok();
        let mut bytes = buf.0.lock().map(|b| b.clone()).unwrap_or_default();
        assert_eq!(bytes.pop(), Some(b'\n'));
        bytes
    }

    #[test]
    fn the_direct_writer_writes_the_bytes_of_the_defined_format() {
        let resource = Arc::new(ProcessResource {
            service_name: "agent".into(),
            pid: 7,
            executable_name: "node".into(),
            executable_path: None,
            command_line: None,
            host_name: None,
            container_id: None,
            kubernetes: None,
            configured_attributes: vec![
                (
                    "deployment.environment.name".to_string(),
                    "prod".to_string(),
                ),
                ("zone".to_string(), "a".to_string()),
                ("zone".to_string(), "b \"quoted\"".to_string()),
            ]
            .into(),
            openinference_project: None,
        });
        let builder = SpanBuilder::new(
            ClockOffset::fixed(1_700_000_000_000_000_000),
            ContentCapture {
                enabled: false,
                max_bytes: 10,
            },
        );
        let plain = builder.build(&streamed_chat(), Arc::clone(&resource), None);
        assert_eq!(written_line(&plain), reference_line(&plain));

        // Everything optional at once: an error, events, a repeated key, flattened
        // attributes, odd floats and escapes.
        let mut busy = plain.clone();
        busy.kind = Kind::Internal;
        busy.status = SpanStatus::Error {
            message: "rate \"limited\"\n".into(),
        };
        busy.attributes
            .push(("gen_ai.usage.input_tokens", AttrValue::Int(-3)));
        busy.attributes
            .push(("llmtap.ratio", AttrValue::Double(f64::NAN)));
        busy.attributes
            .push(("llmtap.half", AttrValue::Double(0.5)));
        busy.attributes.push((
            "llmtap.list",
            AttrValue::StrArray(vec!["a".into(), "ü".into()]),
        ));
        busy.flattened_attributes.push((
            "llm.input_messages.0.message.role".into(),
            AttrValue::Str("user".into()),
        ));
        busy.flattened_attributes
            .push(("gen_ai.usage.input_tokens".into(), AttrValue::Int(9)));
        busy.events.push(SpanEvent {
            name: crate::export::span::PROCESS_EVENT,
            time_unix_nanos: 42,
            attributes: vec![
                ("process.pid", AttrValue::Int(8)),
                ("b", AttrValue::Bool(false)),
            ],
        });
        assert_eq!(written_line(&busy), reference_line(&busy));
        assert_eq!(
            span_to_json(&busy),
            serde_json::from_slice::<Value>(&reference_line(&busy)).unwrap_or_default()
        );
    }

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
