//! OTLP export of spans (gRPC or HTTP/protobuf) and metrics.
//!
//! Spans: llmtap reports calls after they finished, with kernel timestamps in the past, and
//! each call belongs to a different process, i.e. a different OpenTelemetry *resource*. The SDK's
//! tracer/`BatchSpanProcessor` path can do neither (spans start "now"; one resource per
//! provider), so llmtap builds `SpanData` itself, batches it in its own bounded queue and sends
//! each batch as one request holding every process's resource (`otlp_client`), a few batches
//! in flight at once: a slow collector slows export, not one request per process in a row.
//!
//! Metrics: one `SdkMeterProvider` whose resource is llmtap itself (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`; the instruments' attributes carry provider/model/server as the
//! conventions define); a periodic reader on the tokio runtime pushes them through the SDK's
//! exporter over the same kind of connection, and `shutdown` performs a final collection.

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
use opentelemetry_proto::{
    tonic::collector::trace::v1::ExportTraceServiceRequest,
    transform::{
        common::tonic::ResourceAttributesWithSchema,
        trace::tonic::group_spans_by_resource_and_scope,
    },
};
use opentelemetry_sdk::{
    Resource,
    metrics::{SdkMeterProvider, periodic_reader_with_async_runtime::PeriodicReader},
    runtime,
    trace::{SpanData, SpanEvents, SpanLinks},
};
use tokio::{
    sync::{Semaphore, mpsc},
    task::{JoinHandle, JoinSet},
};

use super::{
    attributes::{from_strings, to_key_values},
    metrics::{GenAiMetrics, HealthSnapshot, SpanLosses},
    otlp_client::{self, ClientError, ExportOutcome, TraceClient},
    otlp_config::{Compression, OtlpSettings, SignalSettings},
    resource::{ProcessResource, SDK_NAME},
    span::{CallSpan, Kind, SpanStatus},
};
use crate::genai::CallRecord;

/// Spans waiting for export; beyond this, new spans are dropped and counted.
pub const SPAN_QUEUE_CAPACITY: usize = 4096;
/// Spans per export request.
pub const MAX_EXPORT_BATCH: usize = 512;
/// Export requests in flight at once; a full batch waits for a free slot (the queue then
/// fills, and overflows counted).
pub const MAX_CONCURRENT_EXPORTS: usize = 4;
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

/// Errors setting up OTLP export.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error(transparent)]
    Config(#[from] super::otlp_config::OtlpConfigError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot build the OTLP metric exporter: {0}")]
    MetricExporter(String),
}

fn metric_exporter(s: &SignalSettings) -> Result<opentelemetry_otlp::MetricExporter, OtlpError> {
    let builder = opentelemetry_otlp::MetricExporter::builder();
    let compression =
        (s.compression == Compression::Gzip).then_some(opentelemetry_otlp::Compression::Gzip);
    let built = match s.protocol {
        OtlpProtocol::Grpc => {
            let mut b = builder
                .with_tonic()
                .with_channel(otlp_client::grpc_channel("metrics", s)?)
                .with_metadata(otlp_client::grpc_metadata("metrics", &s.headers)?)
                .with_endpoint(s.endpoint.clone())
                .with_timeout(s.timeout);
            if let Some(c) = compression {
                b = b.with_compression(c);
            }
            b.build()
        }
        OtlpProtocol::HttpProtobuf => {
            let mut b = builder
                .with_http()
                .with_http_client(otlp_client::http_client("metrics", s)?)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_headers(s.headers.iter().cloned().collect::<HashMap<_, _>>())
                .with_endpoint(s.endpoint.clone())
                .with_timeout(s.timeout);
            if let Some(c) = compression {
                b = b.with_compression(c);
            }
            b.build()
        }
    };
    built.map_err(|e| OtlpError::MetricExporter(e.to_string()))
}

fn otel_resource(resource: &ProcessResource) -> Resource {
    let mut attributes = to_key_values(&resource.attributes());
    attributes.extend(
        resource
            .extra_attributes()
            .map(|(k, v)| KeyValue::new(k.to_string(), v.to_string())),
    );
    Resource::builder_empty()
        .with_attributes(attributes)
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
        attributes: to_key_values(&span.attributes)
            .into_iter()
            .chain(
                span.flattened_attributes
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.to_otel())),
            )
            .collect(),
        dropped_attributes_count: 0,
        events: span_events(span),
        links: SpanLinks::default(),
        status: match &span.status {
            SpanStatus::Unset => Status::Unset,
            SpanStatus::Error { message } => Status::error(message.clone()),
        },
        instrumentation_scope: scope.clone(),
    }
}

fn span_events(span: &CallSpan) -> SpanEvents {
    let mut events = SpanEvents::default();
    events.events = span
        .events
        .iter()
        .map(|e| {
            opentelemetry::trace::Event::new(
                e.name,
                unix_time(e.time_unix_nanos),
                to_key_values(&e.attributes),
                0,
            )
        })
        .collect();
    events
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(SDK_NAME)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// One export request for a batch: one `ResourceSpans` per distinct process resource.
pub fn trace_request(
    batch: impl IntoIterator<Item = CallSpan>,
    scope: &InstrumentationScope,
) -> ExportTraceServiceRequest {
    let mut groups: Vec<(Arc<ProcessResource>, Vec<SpanData>)> = Vec::new();
    for span in batch {
        let data = span_data(&span, scope);
        match groups
            .iter_mut()
            .find(|(r, _)| Arc::ptr_eq(r, &span.resource) || **r == *span.resource)
        {
            Some((_, spans)) => spans.push(data),
            None => groups.push((span.resource, vec![data])),
        }
    }
    let resource_spans = groups
        .into_iter()
        .flat_map(|(resource, spans)| {
            let resource = ResourceAttributesWithSchema::from(&otel_resource(&resource));
            group_spans_by_resource_and_scope(spans, &resource)
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

/// What the export tasks share.
struct ExportState {
    client: TraceClient,
    losses: Arc<SpanLosses>,
    /// Spans queued or in a request not yet answered: what a missed shutdown deadline loses.
    pending: Arc<AtomicU64>,
}

impl ExportState {
    async fn export(&self, request: ExportTraceServiceRequest, count: u64) {
        // A collector down for hours fails every batch: warn when a total passes a power of
        // two, not for each batch.
        let passes_power_of_two = |before: u64, added: u64| {
            added > 0 && (before == 0 || (before + added).ilog2() > before.ilog2())
        };
        match self.client.export(request).await {
            ExportOutcome::Accepted { rejected, message } => {
                let before = self.losses.rejected.fetch_add(rejected, Ordering::Relaxed);
                if passes_power_of_two(before, rejected) {
                    log::warn!(
                        "OTLP collector rejected {rejected} of {count} spans ({} so far): {message}",
                        before + rejected
                    );
                }
            }
            ExportOutcome::Failed(error) => {
                let before = self
                    .losses
                    .export_failed
                    .fetch_add(count, Ordering::Relaxed);
                if passes_power_of_two(before, count) {
                    log::warn!(
                        "OTLP span export of {count} spans failed ({} spans lost so far): {error}",
                        before + count
                    );
                }
            }
        }
        self.pending.fetch_sub(count, Ordering::Relaxed);
    }
}

/// Sends the batch as one request once one of the [`MAX_CONCURRENT_EXPORTS`] slots is free.
async fn dispatch(
    batch: &mut Vec<CallSpan>,
    state: &Arc<ExportState>,
    slots: &Arc<Semaphore>,
    in_flight: &mut JoinSet<()>,
    scope: &InstrumentationScope,
) {
    // The semaphore is never closed: acquiring fails only if it were.
    let Ok(permit) = Arc::clone(slots).acquire_owned().await else {
        return;
    };
    let count = batch.len() as u64;
    let request = trace_request(batch.drain(..), scope);
    let state = Arc::clone(state);
    in_flight.spawn(async move {
        state.export(request, count).await;
        drop(permit);
    });
}

async fn run_span_exporter(state: Arc<ExportState>, mut queue: mpsc::Receiver<CallSpan>) {
    let scope = scope();
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_EXPORTS));
    let mut in_flight = JoinSet::new();
    let mut batch: Vec<CallSpan> = Vec::with_capacity(MAX_EXPORT_BATCH);
    let mut tick = tokio::time::interval(EXPORT_DELAY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            next = queue.recv() => match next {
                Some(span) => {
                    batch.push(span);
                    if batch.len() >= MAX_EXPORT_BATCH {
                        dispatch(&mut batch, &state, &slots, &mut in_flight, &scope).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if !batch.is_empty() {
                    dispatch(&mut batch, &state, &slots, &mut in_flight, &scope).await;
                }
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
    if !batch.is_empty() {
        dispatch(&mut batch, &state, &slots, &mut in_flight, &scope).await;
    }
    while in_flight.join_next().await.is_some() {}
}

/// The OTLP output: span queue + export task, meter provider + instruments.
pub struct OtlpPipeline {
    /// `None` when traces are off (only a metrics endpoint is configured).
    spans: Option<(mpsc::Sender<CallSpan>, JoinHandle<()>)>,
    losses: Arc<SpanLosses>,
    pending: Arc<AtomicU64>,
    meter_provider: Option<SdkMeterProvider>,
    metrics: Option<GenAiMetrics>,
}

impl OtlpPipeline {
    /// Must be called inside a tokio runtime. `agent_resource` is llmtap's own resource (its
    /// metrics).
    pub fn start(
        settings: &OtlpSettings,
        agent_resource: Vec<KeyValue>,
        metric_interval: Option<Duration>,
        semconv: super::semconv::Semconv,
    ) -> Result<Self, OtlpError> {
        // HTTPS goes through reqwest/tonic + rustls built without a crypto provider (to avoid
        // the aws-lc C build): make ring the process default. An error only means a provider is
        // installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let losses = Arc::new(SpanLosses::default());
        let pending = Arc::new(AtomicU64::new(0));
        let spans = match &settings.traces {
            Some(traces) => {
                let state = Arc::new(ExportState {
                    client: TraceClient::new(traces)?,
                    losses: Arc::clone(&losses),
                    pending: Arc::clone(&pending),
                });
                let (queue, receiver) = mpsc::channel(SPAN_QUEUE_CAPACITY);
                Some((queue, tokio::spawn(run_span_exporter(state, receiver))))
            }
            None => None,
        };
        let (meter_provider, metrics) = match &settings.metrics {
            Some(metrics) => {
                let mut reader = PeriodicReader::builder(metric_exporter(metrics)?, runtime::Tokio);
                if let Some(interval) = metric_interval {
                    reader = reader.with_interval(interval);
                }
                let provider = SdkMeterProvider::builder()
                    .with_reader(reader.build())
                    .with_resource(
                        Resource::builder_empty()
                            .with_attributes(agent_resource)
                            .build(),
                    )
                    .build();
                let instruments = GenAiMetrics::with_semconv(
                    &provider.meter(SDK_NAME),
                    Arc::clone(&losses),
                    semconv,
                );
                (Some(provider), Some(instruments))
            }
            None => (None, None),
        };
        for (signal, s) in [("traces", &settings.traces), ("metrics", &settings.metrics)] {
            match s {
                Some(s) => log::info!(
                    "OTLP {signal}: {} {:?}{}{}",
                    s.endpoint,
                    s.protocol,
                    if s.compression == Compression::Gzip {
                        ", gzip"
                    } else {
                        ""
                    },
                    if s.tls.identity.is_some() {
                        ", client certificate"
                    } else {
                        ""
                    },
                ),
                None => log::info!("OTLP {signal}: off (no endpoint for it)"),
            }
        }
        Ok(Self {
            spans,
            losses,
            pending,
            meter_provider,
            metrics,
        })
    }

    /// Queues an agent span (`invoke_agent`, `execute_tool`); never waits.
    pub fn export_span(&self, span: CallSpan) {
        let Some((queue, _)) = &self.spans else {
            return;
        };
        if queue.try_send(span).is_ok() {
            self.pending.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let dropped = self.losses.queue_full.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped.is_power_of_two() {
            log::warn!("OTLP span queue full or closed: {dropped} spans dropped so far");
        }
    }

    /// Queues the span and records the call's metrics; never waits.
    pub fn export(&self, span: CallSpan, record: &CallRecord) {
        if let Some(metrics) = &self.metrics {
            let workload = span
                .resource
                .kubernetes
                .as_ref()
                .map(|pod| from_strings(pod.metric_attributes()))
                .unwrap_or_default();
            metrics.record_call(record, &workload);
        }
        self.export_span(span);
    }

    pub fn record_health(&self, snapshot: &HealthSnapshot) {
        if let Some(metrics) = &self.metrics {
            metrics.record_health(snapshot);
        }
    }

    /// Spans lost so far: queue full, export failed, or rejected by the collector.
    pub fn dropped_spans(&self) -> u64 {
        self.losses.total()
    }

    /// The lost spans by cause.
    pub fn losses(&self) -> &SpanLosses {
        &self.losses
    }

    /// Exports every queued span and a final metric collection, then closes the exporters.
    pub async fn shutdown(self) {
        let Self {
            spans,
            losses,
            pending,
            meter_provider,
            ..
        } = self;
        if let Some((queue, task)) = spans {
            drop(queue);
            // Each request may take the full export timeout when the collector is down; the
            // daemon is stopping, so bound the wait and count what was lost.
            let abort = task.abort_handle();
            match tokio::time::timeout(SHUTDOWN_DEADLINE, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::warn!("OTLP span export task failed: {e}"),
                Err(_) => {
                    abort.abort();
                    let lost = pending.swap(0, Ordering::Relaxed);
                    losses.export_failed.fetch_add(lost, Ordering::Relaxed);
                    log::warn!(
                        "OTLP span export did not finish within {SHUTDOWN_DEADLINE:?}: {lost} pending spans lost"
                    );
                }
            }
            let lost = losses.total();
            if lost > 0 {
                let [queue_full, failed, rejected] = losses.by_cause().map(|(_, n)| n);
                log::warn!(
                    "OTLP: {lost} spans not delivered ({queue_full} queue full, {failed} export failed, {rejected} rejected by the collector)"
                );
            }
        }
        let Some(meter_provider) = meter_provider else {
            return;
        };
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
            configured_attributes: Default::default(),
            openinference_project: None,
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
        use otlp_client::grpc_metadata;
        assert!(grpc_metadata("traces", &[("X-Tenant".into(), "a".into())]).is_ok());
        assert!(matches!(
            grpc_metadata("traces", &[("bad header".into(), "a".into())]),
            Err(ClientError::Header { .. })
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
