//! Every recorded exchange in `tests/data/cassettes/` replayed as capture events (realistic
//! chunks and 1-byte chunks) must yield exactly one call record matching its `expected` block.

use llmtap::genai::CallRecord;
use llmtap::testing::{
    Cassette, ReplayOptions, cassette_dir, cassette_events, check_every_cassette, load_all,
};
use llmtap::{Pipeline, PipelineConfig};
use serde_json::{Value, json};

fn run(c: &Cassette, opts: &ReplayOptions, config: PipelineConfig) -> Vec<CallRecord> {
    let mut pipeline = Pipeline::new(config);
    let mut out = Vec::new();
    for ev in cassette_events(c, opts) {
        pipeline.push(ev, &mut out);
    }
    pipeline.finish(&mut out);
    out
}

fn opt_u64(v: Option<u64>) -> Value {
    v.map(Value::from).unwrap_or(Value::Null)
}

fn opt_str(v: &Option<String>) -> Value {
    v.clone().map(Value::from).unwrap_or(Value::Null)
}

/// The record's values in the shape of the cassettes' `expected` block.
fn observed(r: &CallRecord) -> Value {
    let error = r.error.as_ref().map(|e| {
        let status = e.http_status.unwrap_or(0);
        // `body_type` is null when the body names no type: the record then carries the status.
        let body_type = if e.error_type == status.to_string() && !e.mid_stream {
            Value::Null
        } else {
            Value::from(e.error_type.clone())
        };
        json!({"http_status": status, "body_type": body_type, "mid_stream": e.mid_stream})
    });
    json!({
        "operation": r.operation.as_str(),
        "request_model": opt_str(&r.request.model),
        "response_model": opt_str(&r.response.model),
        "response_id": opt_str(&r.response.id),
        "finish_reasons": if r.response.finish_reasons.is_empty() { Value::Null } else { json!(r.response.finish_reasons) },
        "input_tokens": opt_u64(r.usage.input_tokens),
        "output_tokens": opt_u64(r.usage.output_tokens),
        "cache_read_tokens": opt_u64(r.usage.cache_read_input_tokens),
        "cache_creation_tokens": opt_u64(r.usage.cache_creation_input_tokens),
        "reasoning_tokens": opt_u64(r.usage.reasoning_output_tokens),
        "stream_chunks": opt_u64(r.stream_chunks),
        "error": error.unwrap_or(Value::Null),
    })
}

fn check(c: &Cassette, opts: &ReplayOptions, label: &str) -> Result<(), String> {
    let records = run(c, opts, PipelineConfig::default());
    if records.len() != 1 {
        return Err(format!("{} [{label}]: {} records", c.name, records.len()));
    }
    let r = &records[0];
    let got = observed(r);
    let mut diffs = Vec::new();
    let Some(expected) = c.expected.as_object() else {
        return Err(format!("{}: no expected block", c.name));
    };
    for (key, want) in expected {
        if got.get(key) != Some(want) {
            diffs.push(format!(
                "{key}: expected {want}, got {}",
                got.get(key).unwrap_or(&Value::Null)
            ));
        }
    }
    if r.provider != c.provider {
        diffs.push(format!(
            "provider: expected {}, got {}",
            c.provider, r.provider
        ));
    }
    if r.api != c.api {
        diffs.push(format!("api: expected {}, got {}", c.api, r.api));
    }
    if r.request.stream != c.streaming {
        diffs.push(format!(
            "stream: expected {}, got {}",
            c.streaming, r.request.stream
        ));
    }
    if r.truncated || r.incomplete {
        diffs.push("flagged truncated/incomplete".into());
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!("{} [{label}]:\n  {}", c.name, diffs.join("\n  ")))
    }
}

#[test]
fn every_cassette_matches_expected() {
    let realistic = ReplayOptions::default();
    check_every_cassette(|c| check(c, &realistic, "realistic"));
}

#[test]
fn every_cassette_matches_expected_one_byte_at_a_time() {
    let tiny = ReplayOptions::one_byte_at_a_time();
    check_every_cassette(|c| check(c, &tiny, "1-byte"));
}

#[test]
fn credentials_never_reach_records() {
    let cassettes = load_all(&cassette_dir()).expect("cassettes load");
    let config = PipelineConfig {
        capture_content: true,
        ..PipelineConfig::default()
    };
    for c in &cassettes {
        let mut planted = c.clone();
        for (k, v) in planted.request_headers.iter_mut() {
            if v == "REDACTED" {
                *v = format!("sk-PLANTED-{k}-SECRET");
            }
        }
        planted
            .request_headers
            .push(("Cookie".into(), "session=sk-PLANTED-cookie-SECRET".into()));
        let records = run(&planted, &ReplayOptions::default(), config.clone());
        let text = serde_json::to_string(&records).expect("serialize");
        assert!(!text.contains("PLANTED"), "{}: credential leaked", c.name);
    }
}

#[test]
fn a_wrong_expectation_is_reported() {
    let cassettes = load_all(&cassette_dir()).expect("cassettes load");
    for c in cassettes.iter().take(5) {
        let mut wrong = c.clone();
        if let Some(obj) = wrong.expected.as_object_mut() {
            obj.insert("response_id".into(), json!("not-the-id"));
        }
        assert!(
            check(&wrong, &ReplayOptions::default(), "mutated").is_err(),
            "{}",
            c.name
        );
    }
}
