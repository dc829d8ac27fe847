//! OTLP export of spans (gRPC or HTTP/protobuf) and metrics.
//!
//! Spans: llmtap reports calls after they finished, with kernel timestamps in the past, and
//! each call belongs to a different process, i.e. a different OpenTelemetry *resource*. The SDK's
//! tracer/`BatchSpanProcessor` path can do neither (spans start "now"; one resource per
//! provider), so llmtap builds `SpanData` itself and drives the OTLP `SpanExporter` from its own
//! bounded batching task, calling `set_resource` before each per-resource export. That keeps one
//! gRPC/HTTP connection for all processes, with no provider per process to create and evict.
//!
//! Metrics: one `SdkMeterProvider` whose resource is llmtap itself (the instruments' attributes
//! carry provider/model/server as the conventions define); a periodic reader on the tokio
//! runtime pushes them, and `shutdown` performs a final collection.

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry::{
    InstrumentationScope, KeyValue,
    metrics::MeterProvider as _,
    trace::{SpanContext, SpanKind, Status, TraceFlags, TraceState},
};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::{
    Resource,
    metrics::{SdkMeterProvider, periodic_reader_with_async_runtime::PeriodicReader},
    runtime,
    trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks},
};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    attributes::{from_strings, keys, to_key_values},
    metrics::{GenAiMetrics, HealthSnapshot},
    resource::{ProcessResource, SDK_NAME},
    span::{CallSpan, Kind, SpanStatus},
};
use crate::genai::CallRecord;

/// Spans waiting for export; beyond this, new spans are dropped and counted.
pub const SPAN_QUEUE_CAPACITY: usize = 4096;
/// Spans per export request.
pub const MAX_EXPORT_BATCH: usize = 512;
/// Longest `shutdown` waits for queued spans to be exported.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);
/// How long a span may wait in a partial batch.
pub const EXPORT_DELAY: Duration = Duration::from_secs(2);

/// OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    #[value(name = "grpc")]
    Grpc,
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    /// Parses an `OTEL_EXPORTER_OTLP_*PROTOCOL` value.
    pub fn from_env_value(value: &str) -> Option<Self> {
        match value.trim() {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" => Some(Self::HttpProtobuf),
            _ => None,
        }
    }
}

/// Resolved OTLP settings for one signal. `None` fields are left to the SDK, which reads the
/// standard `OTEL_EXPORTER_OTLP_{,TRACES_,METRICS_}{ENDPOINT,HEADERS,TIMEOUT}` variables.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalSettings {
    pub protocol: OtlpProtocol,
    /// Full URL for HTTP (signal path included), `scheme://host:port` for gRPC.
    pub endpoint: Option<String>,
    pub headers: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    /// The effective endpoint (flag or variable) is `https://`: gRPC then needs trust roots.
    pub https: bool,
}

/// Errors setting up OTLP export.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("cannot build the OTLP {signal} exporter: {message}")]
    Build {
        signal: &'static str,
        message: String,
    },
    #[error("invalid OTLP header {0:?} for gRPC metadata")]
    InvalidHeader(String),
}

fn metadata(headers: &[(String, String)]) -> Result<tonic::metadata::MetadataMap, OtlpError> {
    let mut map = tonic::metadata::MetadataMap::new();
    for (name, value) in headers {
        let key = tonic::metadata::MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| OtlpError::InvalidHeader(name.clone()))?;
        let value = value
            .parse()
            .map_err(|_| OtlpError::InvalidHeader(name.clone()))?;
        map.insert(key, value);
    }
    Ok(map)
}

fn build_error(
    signal: &'static str,
) -> impl Fn(opentelemetry_otlp::ExporterBuildError) -> OtlpError {
    move |e| OtlpError::Build {
        signal,
        message: e.to_string(),
    }
}

/// TLS for gRPC over `https://`: tonic's default config has no trust roots, so add the bundled
/// WebPKI roots and, when the system has a CA store, the system's (corporate CAs live there).
fn grpc_tls() -> tonic::transport::ClientTlsConfig {
    let tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
    let system_store = std::env::var_os("SSL_CERT_FILE").is_some()
        || std::env::var_os("SSL_CERT_DIR").is_some()
        || std::path::Path::new("/etc/ssl/certs").is_dir();
    if system_store {
        tls.with_native_roots()
    } else {
        tls
    }
}

fn span_exporter(s: &SignalSettings) -> Result<opentelemetry_otlp::SpanExporter, OtlpError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    match s.protocol {
        OtlpProtocol::Grpc => grpc_settings(builder.with_tonic(), s)?.build(),
        OtlpProtocol::HttpProtobuf => http_settings(builder.with_http(), s).build(),
    }
    .map_err(build_error("span"))
}

fn metric_exporter(s: &SignalSettings) -> Result<opentelemetry_otlp::MetricExporter, OtlpError> {
    let builder = opentelemetry_otlp::MetricExporter::builder();
    match s.protocol {
        OtlpProtocol::Grpc => grpc_settings(builder.with_tonic(), s)?.build(),
        OtlpProtocol::HttpProtobuf => http_settings(builder.with_http(), s).build(),
    }
    .map_err(build_error("metric"))
}

/// A signal's gRPC exporter settings: headers as metadata, TLS for `https://`.
fn grpc_settings<B: WithTonicConfig + WithExportConfig>(
    builder: B,
    s: &SignalSettings,
) -> Result<B, OtlpError> {
    let mut b = builder.with_metadata(metadata(&s.headers)?);
    if s.https {
        b = b.with_tls_config(grpc_tls());
    }
    Ok(endpoint_settings(b, s))
}

/// A signal's HTTP/protobuf exporter settings.
fn http_settings<B: WithHttpConfig + WithExportConfig>(builder: B, s: &SignalSettings) -> B {
    let b = builder
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_headers(s.headers.iter().cloned().collect::<HashMap<_, _>>());
    endpoint_settings(b, s)
}

fn endpoint_settings<B: WithExportConfig>(mut b: B, s: &SignalSettings) -> B {
    if let Some(endpoint) = &s.endpoint {
        b = b.with_endpoint(endpoint.clone());
    }
    if let Some(timeout) = s.timeout {
        b = b.with_timeout(timeout);
    }
    b
}

fn otel_resource(resource: &ProcessResource) -> Resource {
    Resource::builder_empty()
        .with_attributes(to_key_values(&resource.attributes()))
        .build()
}

fn unix_time(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// A call span as the SDK's export type.
pub fn span_data(span: &CallSpan, scope: &InstrumentationScope) -> SpanData {
    let parent = span.parent_span_id;
    SpanData {
        span_context: SpanContext::new(
            span.trace_id,
            span.span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent.unwrap_or(opentelemetry::trace::SpanId::INVALID),
        parent_span_is_remote: span.parent_is_remote,
        span_kind: match span.kind {
            Kind::Client => SpanKind::Client,
            Kind::Internal => SpanKind::Internal,
        },
        name: Cow::Owned(span.name.clone()),
        start_time: unix_time(span.start_unix_nanos),
        end_time: unix_time(span.end_unix_nanos),
        attributes: to_key_values(&span.attributes),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match &span.status {
            SpanStatus::Unset => Status::Unset,
            SpanStatus::Error { message } => Status::error(message.clone()),
        },
        instrumentation_scope: scope.clone(),
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(SDK_NAME)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// Exports one batch, one request per distinct resource.
async fn export_batch(
    exporter: &mut opentelemetry_otlp::SpanExporter,
    batch: &mut Vec<CallSpan>,
    scope: &InstrumentationScope,
) {
    let mut groups: Vec<(Arc<ProcessResource>, Vec<SpanData>)> = Vec::new();
    for span in batch.drain(..) {
        let data = span_data(&span, scope);
        match groups
            .iter_mut()
            .find(|(r, _)| Arc::ptr_eq(r, &span.resource) || **r == *span.resource)
        {
            Some((_, spans)) => spans.push(data),
            None => groups.push((span.resource, vec![data])),
        }
    }
    for (resource, spans) in groups {
        let count = spans.len();
        exporter.set_resource(&otel_resource(&resource));
        if let Err(e) = exporter.export(spans).await {
            log::warn!("OTLP span export of {count} spans failed: {e}");
        }
    }
}

async fn run_span_exporter(
    mut exporter: opentelemetry_otlp::SpanExporter,
    mut queue: mpsc::Receiver<CallSpan>,
) {
    let scope = scope();
    let mut batch: Vec<CallSpan> = Vec::with_capacity(MAX_EXPORT_BATCH);
    let mut tick = tokio::time::interval(EXPORT_DELAY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            next = queue.recv() => match next {
                Some(span) => {
                    batch.push(span);
                    if batch.len() >= MAX_EXPORT_BATCH {
                        export_batch(&mut exporter, &mut batch, &scope).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if !batch.is_empty() {
                    export_batch(&mut exporter, &mut batch, &scope).await;
                }
            }
        }
    }
    if !batch.is_empty() {
        export_batch(&mut exporter, &mut batch, &scope).await;
    }
    if let Err(e) = exporter.shutdown() {
        log::warn!("OTLP span exporter shutdown: {e}");
    }
}

/// The OTLP output: span queue + export task, meter provider + instruments.
pub struct OtlpPipeline {
    queue: mpsc::Sender<CallSpan>,
    task: JoinHandle<()>,
    dropped_spans: Arc<AtomicU64>,
    meter_provider: SdkMeterProvider,
    metrics: GenAiMetrics,
}

impl OtlpPipeline {
    /// Must be called inside a tokio runtime. `agent_service_name` names llmtap's own resource
    /// (metrics).
    pub fn start(
        traces: &SignalSettings,
        metrics: &SignalSettings,
        agent_service_name: &str,
        host_name: Option<&str>,
        node_name: Option<&str>,
        metric_interval: Option<Duration>,
    ) -> Result<Self, OtlpError> {
        // HTTPS for the HTTP exporter goes through reqwest + rustls built without a crypto
        // provider (to avoid the aws-lc C build): make ring the process default. An error only
        // means a provider is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let span_exporter = span_exporter(traces)?;
        let (queue, receiver) = mpsc::channel(SPAN_QUEUE_CAPACITY);
        let task = tokio::spawn(run_span_exporter(span_exporter, receiver));

        let mut reader = PeriodicReader::builder(metric_exporter(metrics)?, runtime::Tokio);
        if let Some(interval) = metric_interval {
            reader = reader.with_interval(interval);
        }
        let mut agent: Vec<KeyValue> = vec![
            KeyValue::new(keys::SERVICE_NAME, agent_service_name.to_string()),
            KeyValue::new(keys::TELEMETRY_SDK_NAME, SDK_NAME),
            KeyValue::new(keys::TELEMETRY_SDK_LANGUAGE, "rust"),
            KeyValue::new(keys::TELEMETRY_SDK_VERSION, env!("CARGO_PKG_VERSION")),
        ];
        if let Some(host) = host_name {
            agent.push(KeyValue::new(keys::HOST_NAME, host.to_string()));
        }
        // Every call this agent sees was made on its node.
        if let Some(node) = node_name {
            agent.push(KeyValue::new(crate::k8s::keys::NODE_NAME, node.to_string()));
        }
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(reader.build())
            .with_resource(Resource::builder_empty().with_attributes(agent).build())
            .build();
        let dropped_spans = Arc::new(AtomicU64::new(0));
        let metrics =
            GenAiMetrics::new(&meter_provider.meter(SDK_NAME), Arc::clone(&dropped_spans));
        Ok(Self {
            queue,
            task,
            dropped_spans,
            meter_provider,
            metrics,
        })
    }

    /// Queues an agent span (`invoke_agent`, `execute_tool`); never waits.
    pub fn export_span(&self, span: CallSpan) {
        if self.queue.try_send(span).is_err() {
            let dropped = self.dropped_spans.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                log::warn!("OTLP span queue full or closed: {dropped} spans dropped so far");
            }
        }
    }

    /// Queues the span and records the call's metrics; never waits.
    pub fn export(&self, span: CallSpan, record: &CallRecord) {
        let workload = span
            .resource
            .kubernetes
            .as_ref()
            .map(|pod| from_strings(pod.metric_attributes()))
            .unwrap_or_default();
        self.metrics.record_call(record, &workload);
        self.export_span(span);
    }

    pub fn record_health(&self, snapshot: &HealthSnapshot) {
        self.metrics.record_health(snapshot);
    }

    pub fn dropped_spans(&self) -> u64 {
        self.dropped_spans.load(Ordering::Relaxed)
    }

    /// Exports every queued span and a final metric collection, then closes the exporters.
    pub async fn shutdown(self) {
        let Self {
            queue,
            task,
            meter_provider,
            ..
        } = self;
        drop(queue);
        // Each per-resource request may take the full export timeout when the collector is
        // down; the daemon is stopping, so bound the wait and say what was lost.
        let abort = task.abort_handle();
        match tokio::time::timeout(SHUTDOWN_DEADLINE, task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::warn!("OTLP span export task failed: {e}"),
            Err(_) => {
                abort.abort();
                log::warn!(
                    "OTLP span export did not finish within {SHUTDOWN_DEADLINE:?}: pending spans lost"
                );
            }
        }
        // The async periodic reader's shutdown blocks on its worker task: keep it off the
        // runtime threads.
        match tokio::task::spawn_blocking(move || meter_provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::warn!("OTLP metrics shutdown: {e}"),
            Err(e) => log::warn!("OTLP metrics shutdown task failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{
        clock::ClockOffset,
        span::{ContentCapture, SpanBuilder, tests::streamed_chat},
    };

    #[test]
    fn span_data_keeps_ids_times_kind_and_parent() {
        let mut record = streamed_chat();
        record.request.traceparent =
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        let resource = Arc::new(ProcessResource {
            service_name: "svc".into(),
            pid: 1,
            executable_name: "x".into(),
            executable_path: None,
            command_line: None,
            host_name: None,
            container_id: None,
            kubernetes: None,
        });
        let span = SpanBuilder::new(
            ClockOffset::fixed(0),
            ContentCapture {
                enabled: false,
                max_bytes: 0,
            },
        )
        .build(&record, resource, None);
        let data = span_data(&span, &scope());
        assert_eq!(data.span_context.trace_id(), span.trace_id);
        assert_eq!(data.span_context.span_id(), span.span_id);
        assert_eq!(format!("{}", data.parent_span_id), "00f067aa0ba902b7");
        assert!(data.parent_span_is_remote);
        assert_eq!(data.span_kind, SpanKind::Client);
        assert_eq!(data.start_time, UNIX_EPOCH + Duration::from_secs(1));
        assert_eq!(data.end_time, UNIX_EPOCH + Duration::from_millis(1500));
        assert_eq!(data.attributes.len(), span.attributes.len());
        assert_eq!(data.status, Status::Unset);
    }

    #[test]
    fn grpc_metadata_rejects_bad_header_names() {
        assert!(metadata(&[("X-Tenant".into(), "a".into())]).is_ok());
        assert!(matches!(
            metadata(&[("bad header".into(), "a".into())]),
            Err(OtlpError::InvalidHeader(_))
        ));
        assert_eq!(
            OtlpProtocol::from_env_value("grpc"),
            Some(OtlpProtocol::Grpc)
        );
        assert_eq!(
            OtlpProtocol::from_env_value("http/protobuf"),
            Some(OtlpProtocol::HttpProtobuf)
        );
        assert_eq!(OtlpProtocol::from_env_value("http/json"), None);
    }
}
