//! GenAI client metrics (semconv v1.41, explicit bucket boundaries) and llmtap's health
//! counters.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter, ObservableCounter},
};

use super::{
    attributes::{AttrValue, Attributes, keys, to_key_values},
    semconv::{Semconv, is_inference, latest},
    span::{has_output_tokens, is_openai_provider},
};
use crate::genai::{CallRecord, finish_reason_class, is_known_provider};

/// `gen_ai.client.token.usage` buckets.
pub const TOKEN_USAGE_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// Buckets of the duration, TTFC and TPOC histograms (seconds).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

pub const TOKEN_USAGE: &str = "gen_ai.client.token.usage";
pub const OPERATION_DURATION: &str = "gen_ai.client.operation.duration";
pub const TIME_TO_FIRST_CHUNK: &str = "gen_ai.client.operation.time_to_first_chunk";
pub const TIME_PER_OUTPUT_CHUNK: &str = "gen_ai.client.operation.time_per_output_chunk";

/// Cumulative counts the capture daemon reports about itself (totals since start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HealthSnapshot {
    /// Kernel events read from the ring buffer.
    pub capture_events: u64,
    /// Plaintext bytes captured.
    pub capture_bytes: u64,
    /// Events the kernel could not queue because the ring buffer was full.
    pub ring_buffer_drops: u64,
    /// HTTP/SSE/provider payloads that could not be parsed.
    pub parse_errors: u64,
    /// The finer counters behind these, exposed on `/metrics` (`--metrics-listen`).
    pub detail: HealthDetail,
}

/// The capture and pipeline counters the daemon tracks, one by one (totals since start,
/// except the two "now" gauges).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HealthDetail {
    /// Data records the kernel dropped because the ring buffer was full.
    pub ring_full_records: u64,
    /// Close notifications dropped on a full ring buffer.
    pub ring_full_closes: u64,
    /// Process-exit notifications dropped on a full ring buffer.
    pub ring_full_exits: u64,
    /// Records lost because the application's memory was not readable at probe time.
    pub unreadable_records: u64,
    /// TLS calls copied only up to `--max-capture-bytes`.
    pub truncated_captures: u64,
    /// Calls and plaintext bytes of muted connections (of no use to llmtap), filtered in the
    /// kernel: counted, never copied.
    pub filtered_calls: u64,
    pub filtered_bytes: u64,
    /// TLS calls not tracked: in-flight call table full.
    pub inflight_table_full: u64,
    /// Ring buffer records that did not decode.
    pub decode_errors: u64,
    /// New processes held at their first connect until hooked.
    pub held_processes: u64,
    /// Records whose bytes had already been delivered.
    pub duplicate_records: u64,
    /// Calls dropped because bytes were lost in a head or in body framing.
    pub calls_dropped_by_gap: u64,
    /// HTTP/2 streams skipped (headers not decodable).
    pub http2_streams_skipped: u64,
    /// WebSocket connections given up after lost bytes.
    pub websocket_gaps: u64,
    /// Connections evicted past `--max-connections`.
    pub evicted_connections: u64,
    /// Connections tracked now.
    pub open_connections: u64,
    /// Calls in flight now.
    pub calls_in_flight: u64,
}

/// Lock-free counters the daemon's stages increment; [`HealthCounters::snapshot`] is what it
/// hands to `Exporters::record_health`.
#[derive(Debug, Default)]
pub struct HealthCounters {
    pub capture_events: AtomicU64,
    pub capture_bytes: AtomicU64,
    pub ring_buffer_drops: AtomicU64,
    pub parse_errors: AtomicU64,
}

impl HealthCounters {
    pub fn snapshot(&self) -> HealthSnapshot {
        HealthSnapshot {
            capture_events: self.capture_events.load(Ordering::Relaxed),
            capture_bytes: self.capture_bytes.load(Ordering::Relaxed),
            ring_buffer_drops: self.ring_buffer_drops.load(Ordering::Relaxed),
            parse_errors: self.parse_errors.load(Ordering::Relaxed),
            detail: HealthDetail::default(),
        }
    }
}

/// Spans the OTLP output lost, by cause; each is reported as `llmtap.export.dropped_spans`
/// with its `error.type`.
#[derive(Debug, Default)]
pub struct SpanLosses {
    /// The span queue was full (the collector could not keep up).
    pub queue_full: AtomicU64,
    /// The export request failed after its retries, or shutdown's deadline passed first.
    pub export_failed: AtomicU64,
    /// The collector accepted the request but refused these spans (partial success).
    pub rejected: AtomicU64,
}

impl SpanLosses {
    pub fn total(&self) -> u64 {
        self.by_cause().iter().map(|(_, n)| n).sum()
    }

    /// `(error.type, count)` of each cause.
    pub fn by_cause(&self) -> [(&'static str, u64); 3] {
        [
            ("queue_full", self.queue_full.load(Ordering::Relaxed)),
            ("export_failed", self.export_failed.load(Ordering::Relaxed)),
            ("rejected", self.rejected.load(Ordering::Relaxed)),
        ]
    }
}

/// What one call contributes to the GenAI metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct CallMeasurements {
    /// Attributes common to all four metrics.
    pub attributes: Attributes,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub duration_s: f64,
    /// `error.type`, for the duration metric only.
    pub error_type: Option<String>,
    pub time_to_first_chunk_s: Option<f64>,
    pub time_per_output_chunk_s: Vec<f64>,
}

/// `gen_ai.provider.name` on metrics: a provider llmtap names, else `_OTHER`. A provider not
/// recognised is named after the request's host, one metric series per host name: that stays
/// on the span only (with `server.address`).
pub fn metric_provider_name(provider: &str) -> &str {
    if is_known_provider(provider) {
        provider
    } else {
        OTHER_PROVIDER
    }
}

/// Attributes of `llmtap.calls`: the provider and the first choice's finish reason as a
/// bounded class (`none` when the response reported none: an error or a cut stream), so a
/// truncation rate (`length`) or a tool-call rate reads the same across APIs.
pub fn call_counter_attributes(record: &CallRecord) -> Vec<KeyValue> {
    let finish = record
        .response
        .finish_reasons
        .first()
        .map_or("none", |raw| finish_reason_class(raw));
    vec![
        KeyValue::new(
            keys::PROVIDER_NAME,
            metric_provider_name(&record.provider).to_string(),
        ),
        KeyValue::new(keys::LLMTAP_FINISH_REASON, finish),
    ]
}

/// The metric value of every provider llmtap does not recognise.
pub const OTHER_PROVIDER: &str = "_OTHER";

/// Measurements of a call. Metric attributes are the spec's: operation, provider, request and
/// response model, server address/port, and the OpenAI response service tier/fingerprint.
pub fn call_measurements(record: &CallRecord) -> CallMeasurements {
    let s = |v: &str| AttrValue::Str(v.to_string());
    let mut attributes: Attributes = vec![
        (keys::OPERATION_NAME, s(record.operation.as_str())),
        (
            keys::PROVIDER_NAME,
            s(metric_provider_name(&record.provider)),
        ),
    ];
    if let Some(m) = record.request.model.as_deref().filter(|m| !m.is_empty()) {
        attributes.push((keys::REQUEST_MODEL, s(m)));
    }
    if let Some(m) = record.response.model.as_deref().filter(|m| !m.is_empty()) {
        attributes.push((keys::RESPONSE_MODEL, s(m)));
    }
    if let Some(address) = record.server_address.as_deref().filter(|a| !a.is_empty()) {
        attributes.push((keys::SERVER_ADDRESS, s(address)));
        if let Some(port) = record.server_port {
            attributes.push((keys::SERVER_PORT, AttrValue::Int(i64::from(port))));
        }
    }
    if is_openai_provider(&record.provider) {
        if let Some(tier) = &record.response.service_tier {
            attributes.push((keys::OPENAI_RESPONSE_SERVICE_TIER, s(tier)));
        }
        if let Some(fp) = &record.response.system_fingerprint {
            attributes.push((keys::OPENAI_RESPONSE_SYSTEM_FINGERPRINT, s(fp)));
        }
    }
    let streaming = record.request.stream;
    let time_per_output_chunk_s = if streaming {
        record
            .timing
            .chunk_times_ns
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]) as f64 / 1e9)
            .collect()
    } else {
        Vec::new()
    };
    CallMeasurements {
        attributes,
        input_tokens: record.usage.input_tokens,
        output_tokens: record
            .usage
            .output_tokens
            .filter(|_| has_output_tokens(record.operation)),
        duration_s: record.timing.duration_s(),
        error_type: record.error.as_ref().map(|e| e.error_type.clone()),
        time_to_first_chunk_s: record.timing.time_to_first_chunk_s().filter(|_| streaming),
        time_per_output_chunk_s,
    }
}

/// The instruments, created on one meter.
pub struct GenAiMetrics {
    token_usage: Histogram<u64>,
    duration: Histogram<f64>,
    time_to_first_chunk: Histogram<f64>,
    time_per_output_chunk: Histogram<f64>,
    calls: Counter<u64>,
    /// The newer conventions' inference instruments (`OTEL_SEMCONV_STABILITY_OPT_IN`).
    latest: Option<LatestInstruments>,
    health: Arc<Mutex<HealthSnapshot>>,
    // Kept alive: dropping an observable instrument does not unregister it, but holding them
    // documents that their callbacks read `health`/`losses`.
    _observables: Vec<ObservableCounter<u64>>,
}

/// What one call contributes to the newer conventions' per-kind token counters: `(kind's
/// metric, count)`, for the counts the call reported.
pub fn latest_token_counts(record: &CallRecord, m: &CallMeasurements) -> Vec<(&'static str, u64)> {
    let usage = &record.usage;
    [
        (latest::USAGE_INPUT_TOKENS, m.input_tokens),
        (latest::USAGE_OUTPUT_TOKENS, m.output_tokens),
        (
            latest::USAGE_CACHE_READ_INPUT_TOKENS,
            usage.cache_read_input_tokens,
        ),
        (
            latest::USAGE_CACHE_WRITE_INPUT_TOKENS_METRIC,
            usage.cache_creation_input_tokens,
        ),
        (
            latest::USAGE_REASONING_OUTPUT_TOKENS,
            usage.reasoning_output_tokens,
        ),
    ]
    .into_iter()
    .filter_map(|(name, n)| n.map(|n| (name, n)))
    .collect()
}

/// The per-call token histograms of the newer conventions: the counts reported, and 0 for a
/// failed call that reported none (the conventions record failures too).
pub fn latest_operation_tokens(m: &CallMeasurements) -> (Option<u64>, Option<u64>) {
    let failed = m.error_type.is_some();
    let or_zero = |n: Option<u64>| n.or(failed.then_some(0));
    (or_zero(m.input_tokens), or_zero(m.output_tokens))
}

/// `gen_ai.token.modality` of the per-kind counters: llmtap does not split usage by
/// modality, and the providers' totals mix them.
pub const UNKNOWN_MODALITY: &str = "unknown";

/// Instruments of the newer conventions (inference operations).
struct LatestInstruments {
    duration: Histogram<f64>,
    time_to_first_chunk: Histogram<f64>,
    time_per_output_chunk: Histogram<f64>,
    usage: Vec<(&'static str, Counter<u64>)>,
    operation_input_tokens: Histogram<u64>,
    operation_output_tokens: Histogram<u64>,
}

impl LatestInstruments {
    fn new(meter: &Meter) -> Self {
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build()
        };
        let tokens = |name: &'static str, description: &'static str| {
            meter
                .u64_histogram(name)
                .with_unit("{token}")
                .with_description(description)
                .with_boundaries(TOKEN_USAGE_BUCKETS.to_vec())
                .build()
        };
        let usage = [
            latest::USAGE_INPUT_TOKENS,
            latest::USAGE_OUTPUT_TOKENS,
            latest::USAGE_CACHE_READ_INPUT_TOKENS,
            latest::USAGE_CACHE_WRITE_INPUT_TOKENS_METRIC,
            latest::USAGE_REASONING_OUTPUT_TOKENS,
        ]
        .into_iter()
        .map(|name| {
            let counter = meter
                .u64_counter(name)
                .with_unit("{token}")
                .with_description("Tokens used by inference calls, by kind")
                .build();
            (name, counter)
        })
        .collect();
        Self {
            duration: seconds(latest::INFERENCE_DURATION, "GenAI inference duration"),
            time_to_first_chunk: seconds(
                latest::INFERENCE_TIME_TO_FIRST_CHUNK,
                "Time to receive the first chunk of a streamed response",
            ),
            time_per_output_chunk: seconds(
                latest::INFERENCE_TIME_PER_OUTPUT_CHUNK,
                "Time between consecutive chunks of a streamed response",
            ),
            usage,
            operation_input_tokens: tokens(
                latest::OPERATION_INPUT_TOKENS,
                "Input tokens of one inference call",
            ),
            operation_output_tokens: tokens(
                latest::OPERATION_OUTPUT_TOKENS,
                "Output tokens of one inference call",
            ),
        }
    }

    fn record(&self, record: &CallRecord, m: &CallMeasurements, common: &[KeyValue]) {
        let with = |extra: KeyValue| {
            let mut attrs = common.to_vec();
            attrs.push(extra);
            attrs
        };
        let modality = with(KeyValue::new(latest::TOKEN_MODALITY, UNKNOWN_MODALITY));
        for (name, n) in latest_token_counts(record, m) {
            if let Some((_, counter)) = self.usage.iter().find(|(k, _)| *k == name) {
                counter.add(n, &modality);
            }
        }
        let (input, output) = latest_operation_tokens(m);
        if let Some(n) = input {
            self.operation_input_tokens.record(n, common);
        }
        if let Some(n) = output {
            self.operation_output_tokens.record(n, common);
        }
        match &m.error_type {
            Some(error) => self.duration.record(
                m.duration_s,
                &with(KeyValue::new(keys::ERROR_TYPE, error.clone())),
            ),
            None => self.duration.record(m.duration_s, common),
        }
        if let Some(ttfc) = m.time_to_first_chunk_s {
            self.time_to_first_chunk.record(ttfc, common);
        }
        for gap in &m.time_per_output_chunk_s {
            self.time_per_output_chunk.record(*gap, common);
        }
    }
}

impl GenAiMetrics {
    /// `losses` are the OTLP output's lost spans, reported as `llmtap.export.dropped_spans`.
    pub fn new(meter: &Meter, losses: Arc<SpanLosses>) -> Self {
        Self::with_semconv(meter, losses, Semconv::V1_41)
    }

    /// With the newer conventions' inference metrics instead of v1.41's when `semconv` says so
    /// (embeddings keep the v1.41 ones).
    pub fn with_semconv(meter: &Meter, losses: Arc<SpanLosses>, semconv: Semconv) -> Self {
        let health = Arc::new(Mutex::new(HealthSnapshot::default()));
        let observable = |name: &'static str,
                          unit: &'static str,
                          description: &'static str,
                          read: fn(&HealthSnapshot) -> u64| {
            let health = Arc::clone(&health);
            meter
                .u64_observable_counter(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(move |observer| {
                    if let Ok(snapshot) = health.lock() {
                        observer.observe(read(&snapshot), &[]);
                    }
                })
                .build()
        };
        let mut observables = vec![
            observable(
                "llmtap.capture.events",
                "{event}",
                "Kernel capture events read",
                |h| h.capture_events,
            ),
            observable(
                "llmtap.capture.bytes",
                "By",
                "Plaintext bytes captured",
                |h| h.capture_bytes,
            ),
            observable(
                "llmtap.capture.ring_buffer.drops",
                "{event}",
                "Events lost because the ring buffer was full",
                |h| h.ring_buffer_drops,
            ),
            observable(
                "llmtap.parse.errors",
                "{error}",
                "Payloads that could not be parsed",
                |h| h.parse_errors,
            ),
        ];
        observables.push(
            meter
                .u64_observable_counter("llmtap.export.dropped_spans")
                .with_unit("{span}")
                .with_description(
                    "Spans not delivered by OTLP: queue full, export failed, or rejected",
                )
                .with_callback(move |observer| {
                    for (cause, count) in losses.by_cause() {
                        observer.observe(count, &[KeyValue::new(keys::ERROR_TYPE, cause)]);
                    }
                })
                .build(),
        );
        Self {
            token_usage: meter
                .u64_histogram(TOKEN_USAGE)
                .with_unit("{token}")
                .with_description("Number of input and output tokens used")
                .with_boundaries(TOKEN_USAGE_BUCKETS.to_vec())
                .build(),
            duration: meter
                .f64_histogram(OPERATION_DURATION)
                .with_unit("s")
                .with_description("GenAI operation duration")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            time_to_first_chunk: meter
                .f64_histogram(TIME_TO_FIRST_CHUNK)
                .with_unit("s")
                .with_description("Time to receive the first chunk of a streamed response")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            time_per_output_chunk: meter
                .f64_histogram(TIME_PER_OUTPUT_CHUNK)
                .with_unit("s")
                .with_description("Time between consecutive chunks of a streamed response")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            calls: meter
                .u64_counter("llmtap.calls")
                .with_unit("{call}")
                .with_description("LLM API calls seen, by provider")
                .build(),
            latest: semconv.is_latest().then(|| LatestInstruments::new(meter)),
            health,
            _observables: observables,
        }
    }

    /// `workload`: the caller's `k8s.*` metric attributes (empty outside Kubernetes).
    pub fn record_call(&self, record: &CallRecord, workload: &Attributes) {
        let m = call_measurements(record);
        let mut common = to_key_values(&m.attributes);
        common.extend(to_key_values(workload));
        let with = |extra: KeyValue| {
            let mut attrs = common.clone();
            attrs.push(extra);
            attrs
        };
        let calls = call_counter_attributes(record);
        if let Some(latest) = &self.latest
            && is_inference(record.operation)
        {
            latest.record(record, &m, &common);
            self.calls.add(1, &calls);
            return;
        }
        if let Some(n) = m.input_tokens {
            self.token_usage
                .record(n, &with(KeyValue::new(keys::TOKEN_TYPE, "input")));
        }
        if let Some(n) = m.output_tokens {
            self.token_usage
                .record(n, &with(KeyValue::new(keys::TOKEN_TYPE, "output")));
        }
        match &m.error_type {
            Some(error) => self.duration.record(
                m.duration_s,
                &with(KeyValue::new(keys::ERROR_TYPE, error.clone())),
            ),
            None => self.duration.record(m.duration_s, &common),
        }
        if let Some(ttfc) = m.time_to_first_chunk_s {
            self.time_to_first_chunk.record(ttfc, &common);
        }
        for gap in &m.time_per_output_chunk_s {
            self.time_per_output_chunk.record(*gap, &common);
        }
        self.calls.add(1, &calls);
    }

    pub fn record_health(&self, snapshot: &HealthSnapshot) {
        if let Ok(mut current) = self.health.lock() {
            *current = *snapshot;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::span::tests::streamed_chat;

    #[test]
    fn streamed_call_measurements() {
        let m = call_measurements(&streamed_chat());
        assert_eq!(m.input_tokens, Some(1130));
        assert_eq!(m.output_tokens, Some(9));
        assert!((m.duration_s - 0.5).abs() < 1e-12);
        assert_eq!(m.time_to_first_chunk_s, Some(0.35));
        // Chunks at 1.35, 1.40, 1.48 s: two gaps.
        assert_eq!(m.time_per_output_chunk_s.len(), 2);
        assert!((m.time_per_output_chunk_s[0] - 0.05).abs() < 1e-9);
        assert!((m.time_per_output_chunk_s[1] - 0.08).abs() < 1e-9);
        let keys_present: Vec<&str> = m.attributes.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys_present,
            [
                keys::OPERATION_NAME,
                keys::PROVIDER_NAME,
                keys::REQUEST_MODEL,
                keys::RESPONSE_MODEL,
                keys::SERVER_ADDRESS,
                keys::SERVER_PORT,
                keys::OPENAI_RESPONSE_SERVICE_TIER,
                keys::OPENAI_RESPONSE_SYSTEM_FINGERPRINT,
            ]
        );
    }

    /// `llmtap.calls` counts by finish-reason class: a chat `tool_calls` and a Responses
    /// `tool_call` are one series, a call without a reason is `none`.
    #[test]
    fn call_counter_finish_reason_class() {
        let finish_of = |record: &CallRecord| {
            call_counter_attributes(record)
                .into_iter()
                .find(|kv| kv.key.as_str() == keys::LLMTAP_FINISH_REASON)
                .map(|kv| kv.value.to_string())
        };
        let mut record = streamed_chat();
        record.response.finish_reasons = vec!["tool_calls".into()];
        assert_eq!(finish_of(&record).as_deref(), Some("tool_call"));
        record.response.finish_reasons = vec!["tool_call".into()];
        assert_eq!(finish_of(&record).as_deref(), Some("tool_call"));
        record.response.finish_reasons = vec!["max_tokens".into(), "stop".into()];
        assert_eq!(finish_of(&record).as_deref(), Some("length"));
        record.response.finish_reasons.clear();
        assert_eq!(finish_of(&record).as_deref(), Some("none"));
    }

    /// A provider not recognised falls back to the request's Host on the span; on metrics
    /// that would be one series per host name: bounded to the known values, else `_OTHER`.
    #[test]
    fn metric_provider_names_are_bounded() {
        let mut record = streamed_chat();
        let provider_of = |r: &CallRecord| {
            call_measurements(r)
                .attributes
                .iter()
                .find(|(k, _)| *k == keys::PROVIDER_NAME)
                .map(|(_, v)| v.clone())
        };
        for known in [
            "openai",
            "anthropic",
            "aws.bedrock",
            "gcp.vertex_ai",
            "ollama",
        ] {
            record.provider = known.into();
            assert_eq!(provider_of(&record), Some(AttrValue::Str(known.into())));
        }
        for host in ["llm-7f3a.internal.example.com", "10.0.0.12", "localhost"] {
            record.provider = host.into();
            assert_eq!(provider_of(&record), Some(AttrValue::Str("_OTHER".into())));
        }
        // The span keeps what was seen.
        let attrs = crate::export::span::call_attributes(
            &record,
            crate::export::span::ContentCapture {
                enabled: false,
                max_bytes: 0,
            },
            None,
        );
        assert_eq!(
            crate::export::attributes::find(&attrs, keys::PROVIDER_NAME),
            Some(&AttrValue::Str("localhost".into()))
        );
    }

    #[test]
    fn non_streamed_and_embeddings() {
        let mut record = streamed_chat();
        record.request.stream = false;
        record.operation = crate::genai::Operation::Embeddings;
        let m = call_measurements(&record);
        assert_eq!(m.time_to_first_chunk_s, None);
        assert!(m.time_per_output_chunk_s.is_empty());
        assert_eq!(m.output_tokens, None);
    }

    #[test]
    fn health_counters_snapshot() {
        let counters = HealthCounters::default();
        counters.capture_events.fetch_add(5, Ordering::Relaxed);
        counters.ring_buffer_drops.fetch_add(2, Ordering::Relaxed);
        assert_eq!(
            counters.snapshot(),
            HealthSnapshot {
                capture_events: 5,
                capture_bytes: 0,
                ring_buffer_drops: 2,
                parse_errors: 0,
                detail: HealthDetail::default(),
            }
        );
    }
}
