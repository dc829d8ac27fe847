//! The GenAI metrics and llmtap's health counters in the Prometheus/OpenMetrics text format
//! (`--metrics-listen`), through `prometheus-client`.
//!
//! Names follow OpenTelemetry's Prometheus compatibility rules, so a dashboard works on either
//! path (OTLP into a collector's Prometheus exporter, or this endpoint): dots become
//! underscores, `s` becomes a `_seconds` suffix, annotations such as `{token}` are dropped and
//! counters end in `_total`. Labels are the OTLP metric attributes, renamed the same way; the
//! per-call values are [`call_measurements`], shared with the OTLP metrics.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use super::{
    attributes::{AttrValue, Attributes, keys},
    metrics::{
        CallMeasurements, DURATION_BUCKETS, HealthSnapshot, SpanLosses, TOKEN_USAGE_BUCKETS,
        UNKNOWN_MODALITY, call_measurements, latest_operation_tokens, latest_token_counts,
        metric_provider_name,
    },
    semconv::{Semconv, is_inference, latest},
};
use crate::genai::CallRecord;

/// One series' labels, in a fixed order.
pub type Labels = Vec<(String, String)>;

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Series kept at most per metric, as the OpenTelemetry SDK's default cardinality limit; past
/// it, new label sets are counted in one `otel_metric_overflow="true"` series. Models and
/// finish reasons come from the wire, so this is what bounds memory.
pub const MAX_SERIES_PER_METRIC: usize = 2000;

/// `Content-Type` of [`PrometheusMetrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn token_histogram() -> Histogram {
    Histogram::new(TOKEN_USAGE_BUCKETS)
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// A counter llmtap sets to a running total it keeps elsewhere.
fn total() -> Counter<u64, AtomicU64> {
    Counter::default()
}

fn set_total(counter: &Counter<u64, AtomicU64>, value: u64) {
    counter.inner().store(value, Ordering::Relaxed);
}

/// The metric attribute key as a Prometheus label name (`gen_ai.request.model` →
/// `gen_ai_request_model`).
pub fn label_name(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn label_value(value: &AttrValue) -> String {
    match value {
        AttrValue::Str(s) => s.clone(),
        AttrValue::Int(n) => n.to_string(),
        AttrValue::Double(d) => d.to_string(),
        AttrValue::Bool(b) => b.to_string(),
        AttrValue::StrArray(items) => items.join(","),
    }
}

fn to_labels(attributes: &Attributes) -> Labels {
    attributes
        .iter()
        .map(|(k, v)| (label_name(k), label_value(v)))
        .collect()
}

/// The label sets one metric holds, up to [`MAX_SERIES_PER_METRIC`].
#[derive(Default)]
struct SeriesLimit {
    seen: Mutex<HashSet<Labels>>,
}

impl SeriesLimit {
    /// Whether `labels` is (now) one of the metric's series.
    fn admit(&self, labels: &Labels) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        if seen.contains(labels) {
            return true;
        }
        if seen.len() >= MAX_SERIES_PER_METRIC {
            return false;
        }
        seen.insert(labels.clone());
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }
}

/// Series limits of the per-call metrics.
#[derive(Default)]
struct Limits {
    token_usage: SeriesLimit,
    duration: SeriesLimit,
    time_to_first_chunk: SeriesLimit,
    time_per_output_chunk: SeriesLimit,
    finish_reasons: SeriesLimit,
    cost: SeriesLimit,
}

/// The newer conventions' inference metrics (`OTEL_SEMCONV_STABILITY_OPT_IN`), each with its
/// series limit.
struct LatestFamilies {
    duration: (HistogramFamily, SeriesLimit),
    time_to_first_chunk: (HistogramFamily, SeriesLimit),
    time_per_output_chunk: (HistogramFamily, SeriesLimit),
    /// One counter per kind of token, by its OpenTelemetry name.
    usage: Vec<(&'static str, Family<Labels, Counter>, SeriesLimit)>,
    operation_input_tokens: (HistogramFamily, SeriesLimit),
    operation_output_tokens: (HistogramFamily, SeriesLimit),
}

/// An OpenTelemetry metric name as Prometheus names it (before unit and `_total` suffixes).
pub fn metric_name(otel_name: &str) -> String {
    label_name(otel_name)
}

impl LatestFamilies {
    fn register(registry: &mut Registry) -> Self {
        let mut histogram =
            |name: &str, help: &str, unit: Option<Unit>, make: fn() -> Histogram| {
                let family = HistogramFamily::new_with_constructor(make);
                match unit {
                    Some(unit) => {
                        registry.register_with_unit(metric_name(name), help, unit, family.clone())
                    }
                    None => registry.register(metric_name(name), help, family.clone()),
                }
                (family, SeriesLimit::default())
            };
        let duration = histogram(
            latest::INFERENCE_DURATION,
            "GenAI inference duration",
            Some(Unit::Seconds),
            duration_histogram,
        );
        let time_to_first_chunk = histogram(
            latest::INFERENCE_TIME_TO_FIRST_CHUNK,
            "Time to receive the first chunk of a streamed response",
            Some(Unit::Seconds),
            duration_histogram,
        );
        let time_per_output_chunk = histogram(
            latest::INFERENCE_TIME_PER_OUTPUT_CHUNK,
            "Time between consecutive chunks of a streamed response",
            Some(Unit::Seconds),
            duration_histogram,
        );
        let operation_input_tokens = histogram(
            latest::OPERATION_INPUT_TOKENS,
            "Input tokens of one inference call",
            None,
            token_histogram,
        );
        let operation_output_tokens = histogram(
            latest::OPERATION_OUTPUT_TOKENS,
            "Output tokens of one inference call",
            None,
            token_histogram,
        );
        let usage = [
            latest::USAGE_INPUT_TOKENS,
            latest::USAGE_OUTPUT_TOKENS,
            latest::USAGE_CACHE_READ_INPUT_TOKENS,
            latest::USAGE_CACHE_WRITE_INPUT_TOKENS_METRIC,
            latest::USAGE_REASONING_OUTPUT_TOKENS,
        ]
        .into_iter()
        .map(|name| {
            let family = Family::<Labels, Counter>::default();
            registry.register(
                metric_name(name),
                "Tokens used by inference calls, by kind",
                family.clone(),
            );
            (name, family, SeriesLimit::default())
        })
        .collect();
        Self {
            duration,
            time_to_first_chunk,
            time_per_output_chunk,
            usage,
            operation_input_tokens,
            operation_output_tokens,
        }
    }
}

/// llmtap's health totals (see [`HealthSnapshot`]).
struct HealthMetrics {
    capture_events: Counter<u64, AtomicU64>,
    capture_bytes: Counter<u64, AtomicU64>,
    ring_buffer_drops: Counter<u64, AtomicU64>,
    parse_errors: Counter<u64, AtomicU64>,
    lost_records: Family<Labels, Counter<u64, AtomicU64>>,
    truncated_captures: Counter<u64, AtomicU64>,
    filtered_calls: Counter<u64, AtomicU64>,
    filtered_bytes: Counter<u64, AtomicU64>,
    inflight_table_full: Counter<u64, AtomicU64>,
    decode_errors: Counter<u64, AtomicU64>,
    held_processes: Counter<u64, AtomicU64>,
    duplicate_records: Counter<u64, AtomicU64>,
    calls_dropped: Family<Labels, Counter<u64, AtomicU64>>,
    evicted_connections: Counter<u64, AtomicU64>,
    open_connections: Gauge,
    calls_in_flight: Gauge,
}

/// The registry `/metrics` serves, and the families calls are recorded into.
pub struct PrometheusMetrics {
    registry: Registry,
    token_usage: HistogramFamily,
    duration: HistogramFamily,
    time_to_first_chunk: HistogramFamily,
    time_per_output_chunk: HistogramFamily,
    calls: Family<Labels, Counter>,
    finish_reasons: Family<Labels, Counter>,
    cost: Family<Labels, Counter<f64, AtomicU64>>,
    health: HealthMetrics,
    limits: Limits,
    latest: Option<LatestFamilies>,
    dropped_spans: Family<Labels, Counter<u64, AtomicU64>>,
    /// Label sets folded into the overflow series (cardinality limit reached).
    overflowed: AtomicU64,
    overflow_counter: Counter<u64, AtomicU64>,
}

impl Default for PrometheusMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PrometheusMetrics {
    /// The v1.41 conventions' metrics.
    pub fn new() -> Self {
        Self::with_semconv(Semconv::V1_41)
    }

    /// With the newer conventions' inference metrics when `semconv` says so (embeddings keep
    /// the v1.41 ones, which are registered either way).
    pub fn with_semconv(semconv: Semconv) -> Self {
        let mut registry = Registry::default();
        let histograms = |name: &str,
                          help: &str,
                          unit: Option<Unit>,
                          make: fn() -> Histogram,
                          registry: &mut Registry| {
            let family = HistogramFamily::new_with_constructor(make);
            match unit {
                Some(unit) => registry.register_with_unit(name, help, unit, family.clone()),
                None => registry.register(name, help, family.clone()),
            }
            family
        };
        let token_usage = histograms(
            "gen_ai_client_token_usage",
            "Number of input and output tokens used",
            None,
            token_histogram,
            &mut registry,
        );
        let duration = histograms(
            "gen_ai_client_operation_duration",
            "GenAI operation duration",
            Some(Unit::Seconds),
            duration_histogram,
            &mut registry,
        );
        let time_to_first_chunk = histograms(
            "gen_ai_client_operation_time_to_first_chunk",
            "Time to receive the first chunk of a streamed response",
            Some(Unit::Seconds),
            duration_histogram,
            &mut registry,
        );
        let time_per_output_chunk = histograms(
            "gen_ai_client_operation_time_per_output_chunk",
            "Time between consecutive chunks of a streamed response",
            Some(Unit::Seconds),
            duration_histogram,
            &mut registry,
        );
        let calls = Family::<Labels, Counter>::default();
        registry.register(
            "llmtap_calls",
            "LLM API calls seen, by provider",
            calls.clone(),
        );
        let finish_reasons = Family::<Labels, Counter>::default();
        registry.register(
            "llmtap_call_finish_reasons",
            "Finish reasons of the calls (one per choice), with the metric attributes and workload",
            finish_reasons.clone(),
        );
        let cost = Family::<Labels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "llmtap_call_cost_usd",
            "Estimated cost of the calls in US dollars (price table), by model and workload",
            cost.clone(),
        );
        let counter = |name: &str, help: &str, registry: &mut Registry| {
            let c = total();
            registry.register(name, help, c.clone());
            c
        };
        let cause_family = |name: &str, help: &str, registry: &mut Registry| {
            let f = Family::<Labels, Counter<u64, AtomicU64>>::default();
            registry.register(name, help, f.clone());
            f
        };
        let gauge = |name: &str, help: &str, registry: &mut Registry| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let r = &mut registry;
        let health = HealthMetrics {
            capture_events: counter("llmtap_capture_events", "Kernel capture events read", r),
            // `By` is appended as `bytes` only when the name does not end in it already.
            capture_bytes: counter("llmtap_capture_bytes", "Plaintext bytes captured", r),
            ring_buffer_drops: counter(
                "llmtap_capture_ring_buffer_drops",
                "Events lost because the ring buffer was full or memory was unreadable",
                r,
            ),
            parse_errors: counter(
                "llmtap_parse_errors",
                "Payloads that could not be parsed",
                r,
            ),
            lost_records: cause_family(
                "llmtap_capture_lost_records",
                "Kernel records lost, by cause",
                r,
            ),
            truncated_captures: counter(
                "llmtap_capture_truncated_calls",
                "TLS reads/writes copied only up to --max-capture-bytes",
                r,
            ),
            filtered_calls: counter(
                "llmtap_capture_filtered_calls",
                "TLS calls of connections of no use to llmtap (server sides, not HTTP, HTTP/1 \
                 requests that are not LLM calls), filtered in the kernel: counted, not copied",
                r,
            ),
            filtered_bytes: counter(
                "llmtap_capture_filtered_bytes",
                "Plaintext bytes of those calls",
                r,
            ),
            inflight_table_full: counter(
                "llmtap_capture_inflight_table_full",
                "TLS calls not tracked because the in-flight call table was full",
                r,
            ),
            decode_errors: counter(
                "llmtap_capture_decode_errors",
                "Ring buffer records that did not decode",
                r,
            ),
            held_processes: counter(
                "llmtap_capture_held_processes",
                "New processes held at their first connect until hooked",
                r,
            ),
            duplicate_records: counter(
                "llmtap_capture_duplicate_records",
                "Records whose bytes had already been delivered",
                r,
            ),
            calls_dropped: cause_family(
                "llmtap_pipeline_calls_dropped",
                "Calls or streams given up, by cause",
                r,
            ),
            evicted_connections: counter(
                "llmtap_pipeline_evicted_connections",
                "Connections evicted past --max-connections",
                r,
            ),
            open_connections: gauge(
                "llmtap_pipeline_open_connections",
                "Connections tracked now",
                r,
            ),
            calls_in_flight: gauge("llmtap_pipeline_calls_in_flight", "Calls in flight now", r),
        };
        let dropped_spans = cause_family(
            "llmtap_export_dropped_spans",
            "Spans not delivered by OTLP: queue full, export failed, or rejected",
            &mut registry,
        );
        let latest = semconv
            .is_latest()
            .then(|| LatestFamilies::register(&mut registry));
        let overflow_counter = counter(
            "llmtap_metric_series_overflow",
            "Measurements folded into an otel_metric_overflow series (cardinality limit)",
            &mut registry,
        );
        Self {
            registry,
            token_usage,
            duration,
            time_to_first_chunk,
            time_per_output_chunk,
            calls,
            finish_reasons,
            cost,
            health,
            limits: Limits::default(),
            latest,
            dropped_spans,
            overflowed: AtomicU64::new(0),
            overflow_counter,
        }
    }

    /// `labels`, or the overflow label set when `limit`'s metric is at its series limit and
    /// does not hold them yet.
    fn bounded(&self, limit: &SeriesLimit, labels: Labels) -> Labels {
        if limit.admit(&labels) {
            return labels;
        }
        let n = self.overflowed.fetch_add(1, Ordering::Relaxed) + 1;
        set_total(&self.overflow_counter, n);
        if n.is_power_of_two() {
            log::warn!(
                "Prometheus metrics: {n} measurements folded into the overflow series \
                 ({MAX_SERIES_PER_METRIC} series per metric at most)"
            );
        }
        vec![("otel_metric_overflow".to_string(), "true".to_string())]
    }

    /// One finished call. `workload`: the caller's `k8s.*` metric attributes (empty outside
    /// Kubernetes); `cost_usd`: its price-table cost, if known.
    pub fn record_call(&self, record: &CallRecord, workload: &Attributes, cost_usd: Option<f64>) {
        let m = call_measurements(record);
        let mut common = to_labels(&m.attributes);
        common.extend(to_labels(workload));
        let with = |key: &str, value: &str| {
            let mut labels = common.clone();
            labels.push((label_name(key), value.to_string()));
            labels
        };
        match &self.latest {
            Some(latest) if is_inference(record.operation) => {
                self.record_latest(latest, record, &m, &common);
            }
            _ => self.record_v1_41(&m, &common),
        }
        self.calls
            .get_or_create(&vec![(
                label_name(keys::PROVIDER_NAME),
                metric_provider_name(&record.provider).to_string(),
            )])
            .inc();
        for reason in &record.response.finish_reasons {
            let labels = self.bounded(
                &self.limits.finish_reasons,
                with(keys::RESPONSE_FINISH_REASONS, reason),
            );
            self.finish_reasons.get_or_create(&labels).inc();
        }
        if let Some(cost) = cost_usd.filter(|c| c.is_finite() && *c >= 0.0) {
            let labels = self.bounded(&self.limits.cost, common.clone());
            self.cost.get_or_create(&labels).inc_by(cost);
        }
    }

    /// The newer conventions' inference metrics of one call.
    fn record_latest(
        &self,
        latest: &LatestFamilies,
        record: &CallRecord,
        m: &CallMeasurements,
        common: &Labels,
    ) {
        let with = |key: &str, value: &str| {
            let mut labels = common.clone();
            labels.push((label_name(key), value.to_string()));
            labels
        };
        let modality = with(latest::TOKEN_MODALITY, UNKNOWN_MODALITY);
        for (name, n) in latest_token_counts(record, m) {
            if let Some((_, family, limit)) = latest.usage.iter().find(|(k, _, _)| *k == name) {
                let labels = self.bounded(limit, modality.clone());
                family.get_or_create(&labels).inc_by(n);
            }
        }
        let (input, output) = latest_operation_tokens(m);
        for (tokens, (family, limit)) in [
            (input, &latest.operation_input_tokens),
            (output, &latest.operation_output_tokens),
        ] {
            if let Some(n) = tokens {
                let labels = self.bounded(limit, common.clone());
                family.get_or_create(&labels).observe(n as f64);
            }
        }
        let duration_labels = match &m.error_type {
            Some(error) => with(keys::ERROR_TYPE, error),
            None => common.clone(),
        };
        let (family, limit) = &latest.duration;
        family
            .get_or_create(&self.bounded(limit, duration_labels))
            .observe(m.duration_s);
        if let Some(ttfc) = m.time_to_first_chunk_s {
            let (family, limit) = &latest.time_to_first_chunk;
            family
                .get_or_create(&self.bounded(limit, common.clone()))
                .observe(ttfc);
        }
        if !m.time_per_output_chunk_s.is_empty() {
            let (family, limit) = &latest.time_per_output_chunk;
            let histogram = family.get_or_create(&self.bounded(limit, common.clone()));
            for gap in &m.time_per_output_chunk_s {
                histogram.observe(*gap);
            }
        }
    }

    /// The v1.41 conventions' metrics of one call.
    fn record_v1_41(&self, m: &CallMeasurements, common: &Labels) {
        let with = |key: &str, value: &str| {
            let mut labels = common.clone();
            labels.push((label_name(key), value.to_string()));
            labels
        };
        for (kind, tokens) in [("input", m.input_tokens), ("output", m.output_tokens)] {
            if let Some(n) = tokens {
                let labels = self.bounded(&self.limits.token_usage, with(keys::TOKEN_TYPE, kind));
                self.token_usage.get_or_create(&labels).observe(n as f64);
            }
        }
        let duration_labels = match &m.error_type {
            Some(error) => with(keys::ERROR_TYPE, error),
            None => common.clone(),
        };
        let duration_labels = self.bounded(&self.limits.duration, duration_labels);
        self.duration
            .get_or_create(&duration_labels)
            .observe(m.duration_s);
        if let Some(ttfc) = m.time_to_first_chunk_s {
            let labels = self.bounded(&self.limits.time_to_first_chunk, common.clone());
            self.time_to_first_chunk
                .get_or_create(&labels)
                .observe(ttfc);
        }
        if !m.time_per_output_chunk_s.is_empty() {
            let labels = self.bounded(&self.limits.time_per_output_chunk, common.clone());
            let histogram = self.time_per_output_chunk.get_or_create(&labels);
            for gap in &m.time_per_output_chunk_s {
                histogram.observe(*gap);
            }
        }
    }

    /// The daemon's latest totals.
    pub fn record_health(&self, snapshot: &HealthSnapshot) {
        let h = &self.health;
        set_total(&h.capture_events, snapshot.capture_events);
        set_total(&h.capture_bytes, snapshot.capture_bytes);
        set_total(&h.ring_buffer_drops, snapshot.ring_buffer_drops);
        set_total(&h.parse_errors, snapshot.parse_errors);
        let d = &snapshot.detail;
        for (cause, value) in [
            ("ring_buffer_full", d.ring_full_records),
            ("ring_buffer_full_close", d.ring_full_closes),
            ("ring_buffer_full_exit", d.ring_full_exits),
            ("memory_unreadable", d.unreadable_records),
        ] {
            set_total(&h.lost_records.get_or_create(&cause_label(cause)), value);
        }
        set_total(&h.truncated_captures, d.truncated_captures);
        set_total(&h.filtered_calls, d.filtered_calls);
        set_total(&h.filtered_bytes, d.filtered_bytes);
        set_total(&h.inflight_table_full, d.inflight_table_full);
        set_total(&h.decode_errors, d.decode_errors);
        set_total(&h.held_processes, d.held_processes);
        set_total(&h.duplicate_records, d.duplicate_records);
        for (cause, value) in [
            ("capture_gap", d.calls_dropped_by_gap),
            ("http2_stream_skipped", d.http2_streams_skipped),
            ("websocket_gap", d.websocket_gaps),
        ] {
            set_total(&h.calls_dropped.get_or_create(&cause_label(cause)), value);
        }
        set_total(&h.evicted_connections, d.evicted_connections);
        h.open_connections
            .set(i64::try_from(d.open_connections).unwrap_or(i64::MAX));
        h.calls_in_flight
            .set(i64::try_from(d.calls_in_flight).unwrap_or(i64::MAX));
    }

    /// The OTLP output's lost spans, by cause.
    pub fn record_span_losses(&self, losses: &SpanLosses) {
        for (cause, count) in losses.by_cause() {
            set_total(
                &self
                    .dropped_spans
                    .get_or_create(&vec![(label_name(keys::ERROR_TYPE), cause.to_string())]),
                count,
            );
        }
    }

    /// The exposition, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; the encoder's only errors are the writer's.
        if let Err(e) = encode(&mut text, &self.registry) {
            log::warn!("Prometheus metrics could not be encoded: {e}");
        }
        text
    }
}

fn cause_label(cause: &str) -> Labels {
    vec![("cause".to_string(), cause.to_string())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::span::tests::streamed_chat;

    /// The value of the sample `name{labels...}` whose labels include every `(k, v)` given.
    pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|line| {
                let Some(rest) = line.strip_prefix(name) else {
                    return false;
                };
                (rest.starts_with('{') || rest.starts_with(' '))
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            })
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn a_streamed_call_in_otel_prometheus_names() {
        let metrics = PrometheusMetrics::new();
        let mut record = streamed_chat();
        record.response.finish_reasons = vec!["length".into()];
        let workload = vec![
            ("k8s.namespace.name", AttrValue::Str("shop".into())),
            ("k8s.deployment.name", AttrValue::Str("checkout".into())),
        ];
        metrics.record_call(&record, &workload, Some(0.25));
        metrics.record_call(&record, &workload, Some(0.25));
        let text = metrics.encode();
        let input = [
            ("gen_ai_token_type", "input"),
            ("gen_ai_provider_name", "openai"),
            ("gen_ai_operation_name", "chat"),
            ("gen_ai_request_model", "gpt-4o-mini"),
            ("k8s_deployment_name", "checkout"),
            ("k8s_namespace_name", "shop"),
        ];
        assert_eq!(
            sample(&text, "gen_ai_client_token_usage_sum", &input),
            Some(2.0 * 1130.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "gen_ai_client_token_usage_count", &input),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "gen_ai_client_token_usage_sum",
                &[("gen_ai_token_type", "output")]
            ),
            Some(18.0)
        );
        // 1130 falls in the 4096 bucket, not the 1024 one.
        let bucket = |le: &str| {
            let mut labels = input.to_vec();
            labels.push(("le", le));
            sample(&text, "gen_ai_client_token_usage_bucket", &labels)
        };
        assert_eq!(bucket("1024.0"), Some(0.0));
        assert_eq!(bucket("4096.0"), Some(2.0));
        assert_eq!(
            sample(
                &text,
                "gen_ai_client_operation_duration_seconds_count",
                &[("gen_ai_response_model", "gpt-4o-mini-2024-07-18")]
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "gen_ai_client_operation_time_to_first_chunk_seconds_sum",
                &[]
            ),
            Some(0.7)
        );
        assert_eq!(
            sample(
                &text,
                "gen_ai_client_operation_time_per_output_chunk_seconds_count",
                &[]
            ),
            Some(4.0)
        );
        assert_eq!(
            sample(
                &text,
                "llmtap_calls_total",
                &[("gen_ai_provider_name", "openai")]
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "llmtap_call_finish_reasons_total",
                &[
                    ("gen_ai_response_finish_reasons", "length"),
                    ("k8s_deployment_name", "checkout")
                ]
            ),
            Some(2.0)
        );
        assert_eq!(sample(&text, "llmtap_call_cost_usd_total", &[]), Some(0.5));
        assert!(text.contains("# UNIT gen_ai_client_operation_duration_seconds seconds"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn failed_calls_carry_error_type_on_the_duration_only() {
        let metrics = PrometheusMetrics::new();
        let mut record = streamed_chat();
        record.error = Some(crate::genai::CallError {
            error_type: "429".into(),
            http_status: Some(429),
            mid_stream: false,
            message: None,
        });
        metrics.record_call(&record, &Vec::new(), None);
        let text = metrics.encode();
        assert_eq!(
            sample(
                &text,
                "gen_ai_client_operation_duration_seconds_count",
                &[("error_type", "429")]
            ),
            Some(1.0)
        );
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("gen_ai_client_token_usage") && l.contains("error_type")),
            "{text}"
        );
        assert!(
            !text.contains("llmtap_call_cost_usd_total{"),
            "no cost known"
        );
    }

    #[test]
    fn health_totals_are_exposed_as_set() {
        let metrics = PrometheusMetrics::new();
        let mut snapshot = HealthSnapshot {
            capture_events: 10,
            capture_bytes: 4096,
            ring_buffer_drops: 3,
            parse_errors: 1,
            ..Default::default()
        };
        snapshot.detail.ring_full_records = 2;
        snapshot.detail.unreadable_records = 1;
        snapshot.detail.open_connections = 5;
        metrics.record_health(&snapshot);
        snapshot.capture_events = 12;
        metrics.record_health(&snapshot);
        let losses = SpanLosses::default();
        losses.queue_full.fetch_add(7, Ordering::Relaxed);
        metrics.record_span_losses(&losses);
        let text = metrics.encode();
        assert_eq!(
            sample(&text, "llmtap_capture_events_total", &[]),
            Some(12.0)
        );
        assert_eq!(
            sample(&text, "llmtap_capture_bytes_total", &[]),
            Some(4096.0)
        );
        assert_eq!(
            sample(&text, "llmtap_capture_ring_buffer_drops_total", &[]),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &text,
                "llmtap_capture_lost_records_total",
                &[("cause", "ring_buffer_full")]
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "llmtap_capture_lost_records_total",
                &[("cause", "memory_unreadable")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "llmtap_pipeline_open_connections", &[]),
            Some(5.0)
        );
        assert_eq!(
            sample(
                &text,
                "llmtap_export_dropped_spans_total",
                &[("error_type", "queue_full")]
            ),
            Some(7.0)
        );
    }

    /// Models come from the wire: a flood of distinct ones ends in one overflow series.
    #[test]
    fn series_are_bounded() {
        let metrics = PrometheusMetrics::new();
        let mut record = streamed_chat();
        for i in 0..(MAX_SERIES_PER_METRIC + 50) {
            record.request.model = Some(format!("model-{i}"));
            record.response.model = None;
            metrics.record_call(&record, &Vec::new(), None);
        }
        assert!(metrics.limits.duration.len() <= MAX_SERIES_PER_METRIC + 1);
        assert!(metrics.limits.token_usage.len() <= MAX_SERIES_PER_METRIC + 1);
        let text = metrics.encode();
        let overflow = sample(
            &text,
            "gen_ai_client_operation_duration_seconds_count",
            &[("otel_metric_overflow", "true")],
        );
        assert_eq!(overflow, Some(50.0));
        assert!(sample(&text, "llmtap_metric_series_overflow_total", &[]).unwrap_or(0.0) > 0.0);
    }

    /// Prometheus's own checker accepts the exposition (runs when `promtool` is installed:
    /// `cargo xtask setup` installs it, and CI requires it with LLMTAP_REQUIRE_EBPF).
    #[test]
    fn promtool_accepts_the_exposition() {
        use std::io::Write as _;
        let metrics = PrometheusMetrics::new();
        let mut record = streamed_chat();
        record.response.finish_reasons = vec!["stop".into()];
        metrics.record_call(&record, &Vec::new(), Some(0.01));
        metrics.record_health(&HealthSnapshot::default());
        let text = metrics.encode();
        let child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if std::env::var_os("LLMTAP_REQUIRE_EBPF").is_none() => {
                eprintln!("skipped: promtool not runnable ({e}); `cargo xtask setup` installs it");
                return;
            }
            Err(e) => panic!("promtool is required (cargo xtask setup installs it): {e}"),
        };
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("promtool");
        let report = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        // promtool lints with the classic text parser, which expects a counter's HELP under
        // its sample name (`x_total`); OpenMetrics puts it under the family name (`x`). That
        // finding is expected for each counter; any other (a parse error, a bad name, a
        // missing unit suffix) fails.
        for finding in report.lines().filter(|l| !l.trim().is_empty()) {
            let family = finding
                .strip_suffix(" no help text")
                .and_then(|sample| sample.strip_suffix("_total"));
            assert!(
                family.is_some_and(|f| text.contains(&format!("# HELP {f} "))
                    && text.contains(&format!("# TYPE {f} counter"))),
                "promtool check metrics: {finding}\n{report}\n---\n{text}"
            );
        }
    }
}

#[cfg(test)]
mod latest_tests {
    use super::tests::sample;
    use super::*;
    use crate::export::span::tests::streamed_chat;

    /// `OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`: every renamed inference
    /// metric under its newer Prometheus name, none under the v1.41 one.
    #[test]
    fn latest_conventions_rename_the_inference_metrics() {
        let metrics = PrometheusMetrics::with_semconv(Semconv::LatestExperimental);
        let mut record = streamed_chat();
        record.usage.cache_read_input_tokens = Some(1000);
        record.usage.cache_creation_input_tokens = Some(30);
        record.usage.reasoning_output_tokens = Some(2);
        metrics.record_call(&record, &Vec::new(), None);
        let text = metrics.encode();
        let unknown = [("gen_ai_token_modality", "unknown")];
        for (name, value) in [
            ("gen_ai_client_inference_usage_input_tokens_total", 1130.0),
            ("gen_ai_client_inference_usage_output_tokens_total", 9.0),
            (
                "gen_ai_client_inference_usage_cache_read_input_tokens_total",
                1000.0,
            ),
            (
                "gen_ai_client_inference_usage_cache_write_input_tokens_total",
                30.0,
            ),
            (
                "gen_ai_client_inference_usage_reasoning_output_tokens_total",
                2.0,
            ),
            ("gen_ai_client_inference_operation_input_tokens_sum", 1130.0),
            ("gen_ai_client_inference_operation_output_tokens_sum", 9.0),
            ("gen_ai_client_inference_duration_seconds_count", 1.0),
            (
                "gen_ai_client_inference_time_to_first_chunk_seconds_sum",
                0.35,
            ),
            (
                "gen_ai_client_inference_time_per_output_chunk_seconds_count",
                2.0,
            ),
        ] {
            let labels: &[(&str, &str)] = if name.ends_with("_total") {
                &unknown
            } else {
                &[]
            };
            assert_eq!(sample(&text, name, labels), Some(value), "{name}\n{text}");
        }
        for old in [
            "gen_ai_client_token_usage_sum",
            "gen_ai_client_operation_duration_seconds_count",
            "gen_ai_client_operation_time_to_first_chunk_seconds_sum",
            "gen_ai_client_operation_time_per_output_chunk_seconds_count",
        ] {
            assert_eq!(sample(&text, old, &[]), None, "{old} still has samples");
        }
    }

    #[test]
    fn failed_inference_calls_count_zero_tokens_and_embeddings_keep_v1_41() {
        let metrics = PrometheusMetrics::with_semconv(Semconv::LatestExperimental);
        let mut failed = streamed_chat();
        failed.usage = Default::default();
        failed.error = Some(crate::genai::CallError {
            error_type: "500".into(),
            http_status: Some(500),
            mid_stream: false,
            message: None,
        });
        metrics.record_call(&failed, &Vec::new(), None);
        let mut embeddings = streamed_chat();
        embeddings.operation = crate::genai::Operation::Embeddings;
        embeddings.request.stream = false;
        metrics.record_call(&embeddings, &Vec::new(), None);
        let text = metrics.encode();
        assert_eq!(
            sample(
                &text,
                "gen_ai_client_inference_operation_input_tokens_count",
                &[("error_type", "500")]
            )
            .or(sample(
                &text,
                "gen_ai_client_inference_operation_input_tokens_count",
                &[]
            )),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "gen_ai_client_inference_operation_input_tokens_sum",
                &[]
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                "gen_ai_client_inference_usage_input_tokens_total",
                &[]
            ),
            None,
            "no usage reported: nothing counted"
        );
        assert_eq!(
            sample(
                &text,
                "gen_ai_client_operation_duration_seconds_count",
                &[("gen_ai_operation_name", "embeddings")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "gen_ai_client_inference_duration_seconds_count",
                &[("error_type", "500")]
            ),
            Some(1.0)
        );
    }
}
