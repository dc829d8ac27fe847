//! OTLP export end to end: call records → `Exporters` → a local OTLP receiver, over gRPC and
//! HTTP/protobuf.

mod export_support;

use std::time::Duration;

use export_support::*;
use llmtap::export::{
    ClockOffset, ExportArgs, ExporterOptions, Exporters, HealthSnapshot, OtlpProtocol,
    metrics::{DURATION_BUCKETS, TOKEN_USAGE_BUCKETS},
    otlp::SPAN_QUEUE_CAPACITY,
};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};

fn options(proc_root: std::path::PathBuf) -> ExporterOptions {
    ExporterOptions {
        clock: ClockOffset::fixed(CLOCK_OFFSET_NS),
        proc_root,
        stdout: Box::new(std::io::sink()),
        env: Default::default(),
        // Long enough that only the shutdown collection exports metrics.
        metric_interval: Some(Duration::from_secs(3600)),
        kubernetes: None,
    }
}

fn otlp_args(endpoint: &str, protocol: OtlpProtocol) -> ExportArgs {
    ExportArgs {
        outputs: vec!["otlp".parse().expect("output")],
        otlp_endpoint: Some(endpoint.to_string()),
        otlp_protocol: Some(protocol),
        otlp_headers: vec![("x-tenant".into(), "acme".into())],
        otlp_timeout: Some(Duration::from_secs(5)),
        // Opt-in: checked to reach the collector when asked for.
        export_command_line: true,
        ..ExportArgs::default()
    }
}

async fn export_three_calls_and_check(
    endpoint: String,
    receiver: Receiver,
    protocol: OtlpProtocol,
) {
    let root = fake_proc(
        &format!("{protocol:?}"),
        &[
            (1001, &["/usr/bin/python3", "chat.py"], "/usr/bin/python3"),
            (1002, &["node", "agent.js"], "/usr/local/bin/node"),
        ],
    );
    let mut exporters = Exporters::with_options(&otlp_args(&endpoint, protocol), options(root))
        .await
        .expect("exporters");
    exporters.export(&openai_stream(1001, 10_000_000_000));
    exporters.export(&anthropic_cached(1002, 11_000_000_000));
    exporters.export(&openai_400(1001, 12_000_000_000));
    exporters.record_health(&HealthSnapshot {
        capture_events: 120,
        capture_bytes: 65_536,
        ring_buffer_drops: 3,
        parse_errors: 1,
        ..HealthSnapshot::default()
    });
    exporters.shutdown().await;
    settle().await;

    assert!(
        receiver.header_seen("x-tenant: acme"),
        "configured header not sent"
    );

    // --- spans ---
    let spans = receiver.spans();
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let find = |name: &str, status: StatusCode| {
        spans
            .iter()
            .find(|(_, s)| {
                s.name == name && s.status.as_ref().map(|st| st.code) == Some(status as i32)
            })
            .unwrap_or_else(|| panic!("no span {name} / {status:?} in {spans:#?}"))
    };
    let (resource, chat) = find("chat gpt-4o-mini", StatusCode::Unset);
    assert_eq!(chat.kind, SpanKind::Client as i32);
    assert_eq!(hex(&chat.trace_id), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(hex(&chat.parent_span_id), "b7ad6b7169203331");
    assert_eq!(chat.span_id.len(), 8);
    let start = (CLOCK_OFFSET_NS + 10_000_000_000) as u64;
    assert_eq!(chat.start_time_unix_nano, start);
    assert_eq!(chat.end_time_unix_nano, start + 600_000_000);
    let a = &chat.attributes;
    assert_eq!(
        str_attr(a, "gen_ai.operation.name").as_deref(),
        Some("chat")
    );
    assert_eq!(
        str_attr(a, "gen_ai.provider.name").as_deref(),
        Some("openai")
    );
    assert_eq!(
        str_attr(a, "gen_ai.request.model").as_deref(),
        Some("gpt-4o-mini")
    );
    assert_eq!(
        str_attr(a, "gen_ai.response.model").as_deref(),
        Some("gpt-4o-mini-2024-07-18")
    );
    assert_eq!(
        str_attr(a, "gen_ai.response.id").as_deref(),
        Some("chatcmpl-ChZNa5AVXUvGOZAleY7FgQlVr6bxn")
    );
    assert_eq!(
        strings_attr(a, "gen_ai.response.finish_reasons"),
        Some(vec!["stop".to_string()])
    );
    assert_eq!(int_attr(a, "gen_ai.usage.input_tokens"), Some(23));
    assert_eq!(int_attr(a, "gen_ai.usage.output_tokens"), Some(8));
    assert_eq!(int_attr(a, "gen_ai.usage.cache_read.input_tokens"), Some(0));
    assert_eq!(int_attr(a, "server.port"), Some(443));
    assert_eq!(
        str_attr(a, "server.address").as_deref(),
        Some("api.openai.com")
    );
    assert_eq!(
        double_attr(a, "gen_ai.response.time_to_first_chunk"),
        Some(0.4)
    );
    assert_eq!(int_attr(a, "llmtap.stream.chunks"), Some(8));
    assert_eq!(
        str_attr(a, "openai.api.type").as_deref(),
        Some("chat_completions")
    );
    assert_eq!(
        str_attr(a, "openai.response.system_fingerprint").as_deref(),
        Some("fp_560af6e559")
    );
    let cost = double_attr(a, "llmtap.usage.cost_usd").expect("cost");
    assert!(
        (cost - (23.0 * 0.15 + 8.0 * 0.60) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    assert_eq!(
        str_attr(resource, "service.name").as_deref(),
        Some("python3")
    );
    assert_eq!(int_attr(resource, "process.pid"), Some(1001));
    assert_eq!(
        str_attr(resource, "process.executable.path").as_deref(),
        Some("/usr/bin/python3")
    );
    assert_eq!(
        str_attr(resource, "process.command_line").as_deref(),
        Some("/usr/bin/python3 chat.py")
    );
    assert_eq!(
        str_attr(resource, "telemetry.sdk.name").as_deref(),
        Some("llmtap")
    );

    let (resource, claude) = find("chat claude-3-5-sonnet-20240620", StatusCode::Unset);
    assert!(
        claude.parent_span_id.is_empty(),
        "no traceparent: no parent"
    );
    assert_eq!(claude.trace_id.len(), 16);
    assert_ne!(hex(&claude.trace_id), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(
        int_attr(&claude.attributes, "gen_ai.usage.cache_read.input_tokens"),
        Some(1165)
    );
    let cost = double_attr(&claude.attributes, "llmtap.usage.cost_usd").expect("cost");
    assert!(
        (cost - (4.0 * 3.0 + 1165.0 * 0.30 + 221.0 * 15.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    assert_eq!(str_attr(resource, "service.name").as_deref(), Some("node"));
    assert_eq!(int_attr(resource, "process.pid"), Some(1002));

    let (_, failed) = find("chat gpt-4o-mini", StatusCode::Error);
    assert_eq!(
        str_attr(&failed.attributes, "error.type").as_deref(),
        Some("invalid_request_error")
    );
    assert_eq!(
        int_attr(&failed.attributes, "http.response.status_code"),
        Some(400)
    );
    assert_eq!(
        failed.status.as_ref().map(|s| s.message.as_str()),
        Some("Invalid image.")
    );

    // --- metrics ---
    let tokens = receiver
        .metric("gen_ai.client.token.usage")
        .expect("token usage metric");
    assert_eq!(tokens.unit, "{token}");
    let points = histogram(&tokens);
    // openai input/output + anthropic input/output (the failed call has no usage).
    assert_eq!(points.len(), 4, "{points:#?}");
    for p in points {
        assert_eq!(p.explicit_bounds, TOKEN_USAGE_BUCKETS.to_vec());
    }
    let token_sum = |provider: &str, kind: &str| {
        points
            .iter()
            .filter(|p| {
                str_attr(&p.attributes, "gen_ai.provider.name").as_deref() == Some(provider)
                    && str_attr(&p.attributes, "gen_ai.token.type").as_deref() == Some(kind)
            })
            .map(|p| p.sum.unwrap_or(-1.0))
            .sum::<f64>()
    };
    assert_eq!(token_sum("openai", "input"), 23.0);
    assert_eq!(token_sum("openai", "output"), 8.0);
    assert_eq!(token_sum("anthropic", "input"), 1169.0);
    assert_eq!(token_sum("anthropic", "output"), 221.0);

    let duration = receiver
        .metric("gen_ai.client.operation.duration")
        .expect("duration metric");
    assert_eq!(duration.unit, "s");
    let points = histogram(&duration);
    assert_eq!(points.iter().map(|p| p.count).sum::<u64>(), 3);
    assert!(
        points
            .iter()
            .all(|p| p.explicit_bounds == DURATION_BUCKETS.to_vec())
    );
    let error_point = points
        .iter()
        .find(|p| str_attr(&p.attributes, "error.type").is_some())
        .expect("duration point with error.type");
    assert_eq!(
        str_attr(&error_point.attributes, "error.type").as_deref(),
        Some("invalid_request_error")
    );
    assert!((error_point.sum.unwrap_or(0.0) - 0.25).abs() < 1e-9);

    let ttfc = receiver
        .metric("gen_ai.client.operation.time_to_first_chunk")
        .expect("ttfc metric");
    assert_eq!(histogram(&ttfc).iter().map(|p| p.count).sum::<u64>(), 2);
    let tpoc = receiver
        .metric("gen_ai.client.operation.time_per_output_chunk")
        .expect("tpoc metric");
    // 7 gaps in the OpenAI stream, 1 in the Anthropic one.
    assert_eq!(histogram(&tpoc).iter().map(|p| p.count).sum::<u64>(), 8);
    let openai_tpoc = histogram(&tpoc)
        .iter()
        .find(|p| str_attr(&p.attributes, "gen_ai.provider.name").as_deref() == Some("openai"))
        .expect("openai tpoc");
    assert!((openai_tpoc.sum.unwrap_or(0.0) - 7.0 * 0.02).abs() < 1e-9);
    assert_eq!(
        str_attr(&openai_tpoc.attributes, "server.address").as_deref(),
        Some("api.openai.com")
    );
    assert_eq!(int_attr(&openai_tpoc.attributes, "server.port"), Some(443));

    let calls = receiver.metric("llmtap.calls").expect("calls metric");
    // One series per finish-reason class: the openai calls are their sum.
    let openai_calls: i64 = sum_points(&calls)
        .iter()
        .filter(|p| str_attr(&p.attributes, "gen_ai.provider.name").as_deref() == Some("openai"))
        .inspect(|p| assert!(str_attr(&p.attributes, "llmtap.finish_reason").is_some()))
        .filter_map(as_int)
        .sum();
    assert_eq!(openai_calls, 2);
    for (name, value) in [
        ("llmtap.capture.events", 120),
        ("llmtap.capture.bytes", 65_536),
        ("llmtap.capture.ring_buffer.drops", 3),
        ("llmtap.parse.errors", 1),
        ("llmtap.export.dropped_spans", 0),
    ] {
        let metric = receiver.metric(name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(
            sum_points(&metric).first().and_then(as_int),
            Some(value),
            "{name}"
        );
    }
    assert_eq!(
        str_attr(&receiver.metrics_resource(), "service.name").as_deref(),
        Some("llmtap")
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_over_grpc() {
    let (endpoint, receiver) = start_grpc_receiver().await;
    export_three_calls_and_check(endpoint, receiver, OtlpProtocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_over_http_protobuf() {
    let (endpoint, receiver) = start_http_receiver().await;
    export_three_calls_and_check(endpoint, receiver, OtlpProtocol::HttpProtobuf).await;
}

/// Export N records and shut down at once: the receiver must hold all N (the batch delay is
/// seconds; only shutdown's flush can deliver them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_every_pending_span() {
    const N: u64 = 300;
    assert!(N < SPAN_QUEUE_CAPACITY as u64);
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let (endpoint, receiver) = match protocol {
            OtlpProtocol::Grpc => start_grpc_receiver().await,
            OtlpProtocol::HttpProtobuf => start_http_receiver().await,
        };
        let root = std::env::temp_dir().join("llmtap-no-such-proc");
        let mut exporters = Exporters::with_options(&otlp_args(&endpoint, protocol), options(root))
            .await
            .expect("exporters");
        for i in 0..N {
            exporters.export(&openai_stream(
                2000 + (i % 7) as u32,
                1_000_000_000 * (i + 1),
            ));
        }
        assert_eq!(exporters.dropped_spans(), 0);
        exporters.shutdown().await;
        let spans = receiver.spans();
        assert_eq!(spans.len() as u64, N, "{protocol:?}");
        // Seven processes → seven resources, each with its own pid.
        let mut pids: Vec<i64> = spans
            .iter()
            .filter_map(|(r, _)| int_attr(r, "process.pid"))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        assert_eq!(pids, (2000..2007).collect::<Vec<i64>>());
    }
}

/// `https://` endpoints build a TLS client for both transports (the HTTP client needs the ring
/// provider installed, gRPC needs trust roots); a dead endpoint only costs logged export errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_build_and_unreachable_collectors_do_not_block_shutdown() {
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let mut args = otlp_args("https://127.0.0.1:9", protocol);
        args.otlp_timeout = Some(Duration::from_millis(500));
        let root = std::env::temp_dir().join("llmtap-no-such-proc");
        let mut exporters = Exporters::with_options(&args, options(root))
            .await
            .unwrap_or_else(|e| panic!("{protocol:?}: {e}"));
        exporters.export(&openai_stream(1, 1_000_000_000));
        tokio::time::timeout(Duration::from_secs(30), exporters.shutdown())
            .await
            .unwrap_or_else(|_| panic!("{protocol:?}: shutdown hung"));
    }
}

/// `OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`: each renamed metric and span
/// attribute arrives under its newer name, and the v1.41 name of each is gone (embeddings keep
/// the v1.41 metrics: the newer conventions rename the inference ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_experimental_conventions_on_request() {
    use llmtap::export::semconv::latest;
    let (endpoint, receiver) = start_http_receiver().await;
    let root = fake_proc(
        "latest-semconv",
        &[
            (1001, &["/usr/bin/python3", "chat.py"], "/usr/bin/python3"),
            (1002, &["node", "agent.js"], "/usr/local/bin/node"),
        ],
    );
    let mut opts = options(root);
    opts.env = [(
        "OTEL_SEMCONV_STABILITY_OPT_IN".to_string(),
        "http, gen_ai_latest_experimental".to_string(),
    )]
    .into();
    let mut exporters =
        Exporters::with_options(&otlp_args(&endpoint, OtlpProtocol::HttpProtobuf), opts)
            .await
            .expect("exporters");
    let mut cached = anthropic_cached(1002, 11_000_000_000);
    cached.usage.cache_creation_input_tokens = Some(4);
    cached.request.top_k = Some(40.0);
    let mut embeddings = openai_400(1001, 13_000_000_000);
    embeddings.error = None;
    embeddings.http_status = Some(200);
    embeddings.operation = llmtap::genai::Operation::Embeddings;
    embeddings.request.model = Some("text-embedding-3-small".into());
    embeddings.usage.input_tokens = Some(5);
    exporters.export(&openai_stream(1001, 10_000_000_000));
    exporters.export(&cached);
    exporters.export(&openai_400(1001, 12_000_000_000));
    exporters.export(&embeddings);
    exporters.shutdown().await;
    settle().await;

    // Span attributes.
    let spans = receiver.spans();
    let anthropic = spans
        .iter()
        .find(|(_, s)| s.name.starts_with("chat claude"))
        .map(|(_, s)| s)
        .expect("anthropic span");
    assert_eq!(
        int_attr(
            &anthropic.attributes,
            latest::USAGE_CACHE_WRITE_INPUT_TOKENS
        ),
        Some(4)
    );
    assert_eq!(
        attr(
            &anthropic.attributes,
            "gen_ai.usage.cache_creation.input_tokens"
        ),
        None
    );
    assert_eq!(
        int_attr(&anthropic.attributes, "gen_ai.request.top_k"),
        Some(40)
    );
    let cost = double_attr(&anthropic.attributes, latest::USAGE_COST_AMOUNT);
    assert!(cost.is_some_and(|c| c > 0.0), "{:?}", anthropic.attributes);
    assert_eq!(
        str_attr(&anthropic.attributes, latest::USAGE_COST_CURRENCY).as_deref(),
        Some("USD")
    );
    assert_eq!(attr(&anthropic.attributes, "llmtap.usage.cost_usd"), None);

    // Inference metrics under their newer names.
    let duration = receiver
        .metric(latest::INFERENCE_DURATION)
        .expect("inference duration");
    assert_eq!(duration.unit, "s");
    assert_eq!(
        histogram(&duration).iter().map(|p| p.count).sum::<u64>(),
        3,
        "the three chat calls"
    );
    let ttfc = receiver
        .metric(latest::INFERENCE_TIME_TO_FIRST_CHUNK)
        .expect("inference ttfc");
    assert_eq!(histogram(&ttfc).iter().map(|p| p.count).sum::<u64>(), 2);
    let tpoc = receiver
        .metric(latest::INFERENCE_TIME_PER_OUTPUT_CHUNK)
        .expect("inference tpoc");
    assert_eq!(histogram(&tpoc).iter().map(|p| p.count).sum::<u64>(), 8);
    let counter_sum = |name: &str| {
        let metric = receiver.metric(name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(metric.unit, "{token}", "{name}");
        let points = sum_points(&metric);
        assert!(
            points.iter().all(
                |p| str_attr(&p.attributes, latest::TOKEN_MODALITY).as_deref() == Some("unknown")
            ),
            "{name}: {points:?}"
        );
        points.iter().filter_map(as_int).sum::<i64>()
    };
    assert_eq!(counter_sum(latest::USAGE_INPUT_TOKENS), 23 + 1169);
    assert_eq!(counter_sum(latest::USAGE_OUTPUT_TOKENS), 8 + 221);
    assert_eq!(counter_sum(latest::USAGE_CACHE_READ_INPUT_TOKENS), 1165);
    assert_eq!(
        counter_sum(latest::USAGE_CACHE_WRITE_INPUT_TOKENS_METRIC),
        4
    );
    assert_eq!(counter_sum(latest::USAGE_REASONING_OUTPUT_TOKENS), 0);
    // Per call, failures included (as 0).
    let per_call = |name: &str| {
        let metric = receiver.metric(name).unwrap_or_else(|| panic!("no {name}"));
        let points = histogram(&metric);
        (
            points.iter().map(|p| p.count).sum::<u64>(),
            points.iter().filter_map(|p| p.sum).sum::<f64>(),
        )
    };
    assert_eq!(
        per_call(latest::OPERATION_INPUT_TOKENS),
        (3, f64::from(23 + 1169))
    );
    assert_eq!(
        per_call(latest::OPERATION_OUTPUT_TOKENS),
        (3, f64::from(8 + 221))
    );

    // Embeddings keep v1.41's metrics; inference calls are gone from them.
    let v1_duration = receiver
        .metric("gen_ai.client.operation.duration")
        .expect("embeddings duration");
    let points = histogram(&v1_duration);
    assert_eq!(points.iter().map(|p| p.count).sum::<u64>(), 1);
    assert!(points.iter().all(|p| {
        str_attr(&p.attributes, "gen_ai.operation.name").as_deref() == Some("embeddings")
    }));
    let v1_tokens = receiver
        .metric("gen_ai.client.token.usage")
        .expect("embeddings tokens");
    assert_eq!(
        histogram(&v1_tokens).iter().map(|p| p.count).sum::<u64>(),
        1
    );
    assert!(
        receiver
            .metric("gen_ai.client.operation.time_to_first_chunk")
            .is_none()
    );
}
