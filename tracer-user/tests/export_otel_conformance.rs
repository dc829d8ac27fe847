//! OpenTelemetry conformance of the OTLP output (issue 19, item 15), end to end: call records →
//! `Exporters` configured by `OTEL_*` variables → a local OTLP collector (HTTP/protobuf or
//! gRPC, plain, TLS or mutual TLS), asserting on what the collector received.

mod export_support;

use std::{collections::HashMap, path::PathBuf, time::Duration};

use export_support::*;
use llmtap::export::{
    ClockOffset, ExportArgs, ExporterOptions, Exporters, OtlpProtocol, otlp::MAX_EXPORT_BATCH,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn options(proc_root: PathBuf, env: HashMap<String, String>) -> ExporterOptions {
    ExporterOptions {
        clock: ClockOffset::fixed(CLOCK_OFFSET_NS),
        proc_root,
        stdout: Box::new(std::io::sink()),
        env,
        // Long enough that only the shutdown collection exports metrics.
        metric_interval: Some(Duration::from_secs(3600)),
        kubernetes: None,
    }
}

fn otlp_output() -> ExportArgs {
    ExportArgs {
        outputs: vec!["otlp".parse().expect("output")],
        ..ExportArgs::default()
    }
}

/// OTLP to this endpoint, given by the flag.
fn otlp_to(endpoint: &str, grpc: bool) -> ExportArgs {
    ExportArgs {
        otlp_endpoint: Some(endpoint.to_string()),
        otlp_protocol: Some(if grpc {
            OtlpProtocol::Grpc
        } else {
            OtlpProtocol::HttpProtobuf
        }),
        ..otlp_output()
    }
}

fn no_proc() -> PathBuf {
    std::env::temp_dir().join("llmtap-no-such-proc")
}

/// The resources of every span the receiver holds, by `process.pid`.
fn resources_by_pid(receiver: &Receiver) -> HashMap<i64, Vec<KeyValue>> {
    receiver
        .spans()
        .into_iter()
        .filter_map(|(resource, _)| Some((int_attr(&resource, "process.pid")?, resource)))
        .collect()
}

/// `llmtap.export.dropped_spans` for one `error.type`.
fn dropped_metric(receiver: &Receiver, cause: &str) -> Option<i64> {
    let metric = receiver.metric("llmtap.export.dropped_spans")?;
    sum_points(&metric)
        .iter()
        .find(|p| str_attr(&p.attributes, "error.type").as_deref() == Some(cause))
        .and_then(as_int)
}

/// `OTEL_SERVICE_NAME` names llmtap's own metrics and never the traced processes;
/// `OTEL_RESOURCE_ATTRIBUTES` (percent-decoded, a bad entry skipped) reaches both; gzip
/// compresses both signals' requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_name_resource_attributes_and_gzip_over_http() {
    let (endpoint, receiver) = start_http_receiver().await;
    let root = fake_proc(
        "conformance-http",
        &[
            (3001, &["/usr/bin/python3", "chat.py"], "/usr/bin/python3"),
            (3002, &["node", "agent.js"], "/usr/local/bin/node"),
        ],
    );
    let variables = env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_SERVICE_NAME", "llmtap"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=staging,team=ai%2Cml,broken,service.name=attrs,service.version=2.0",
        ),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
    ]);
    let mut exporters = Exporters::with_options(&ExportArgs::default(), options(root, variables))
        .await
        .expect("exporters");
    exporters.export(&openai_stream(3001, 10_000_000_000));
    exporters.export(&anthropic_cached(3002, 11_000_000_000));
    exporters.shutdown().await;

    let resources = resources_by_pid(&receiver);
    assert_eq!(resources.len(), 2, "{resources:#?}");
    for (pid, service) in [(3001, "python3"), (3002, "node")] {
        let r = &resources[&pid];
        assert_eq!(
            str_attr(r, "service.name").as_deref(),
            Some(service),
            "{r:#?}"
        );
        assert_eq!(
            str_attr(r, "deployment.environment.name").as_deref(),
            Some("staging")
        );
        assert_eq!(str_attr(r, "team").as_deref(), Some("ai,ml"));
        // The service identity in the variable is llmtap's, not the traced process's.
        assert_eq!(str_attr(r, "service.version"), None);
        assert_eq!(str_attr(r, "broken"), None);
        assert_eq!(r.iter().filter(|kv| kv.key == "service.name").count(), 1);
    }
    let agent = receiver.metrics_resource();
    assert_eq!(str_attr(&agent, "service.name").as_deref(), Some("llmtap"));
    assert_eq!(str_attr(&agent, "service.version").as_deref(), Some("2.0"));
    assert_eq!(
        str_attr(&agent, "deployment.environment.name").as_deref(),
        Some("staging")
    );

    let encodings = receiver.0.lock().expect("lock").encodings.clone();
    for path in ["/v1/traces", "/v1/metrics"] {
        let seen: Vec<_> = encodings.iter().filter(|(p, _)| p == path).collect();
        assert!(!seen.is_empty(), "no {path} request: {encodings:?}");
        assert!(
            seen.iter().all(|(_, e)| e.as_deref() == Some("gzip")),
            "{path} not gzip: {encodings:?}"
        );
    }
}

/// gRPC with gzip: the receiver accepts gzip and sees `grpc-encoding: gzip`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_over_grpc() {
    let (endpoint, receiver) = start_grpc_receiver().await;
    let variables = env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
    ]);
    let mut exporters = Exporters::with_options(&otlp_output(), options(no_proc(), variables))
        .await
        .expect("exporters");
    exporters.export(&openai_stream(3100, 10_000_000_000));
    exporters.shutdown().await;
    assert_eq!(receiver.spans().len(), 1);
    assert!(
        receiver.header_seen("grpc-encoding: gzip"),
        "{:?}",
        receiver.0.lock().expect("lock").headers
    );
    assert!(receiver.metric("gen_ai.client.token.usage").is_some());
}

/// A signal's endpoint set alone turns OTLP on for that signal only, used as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_endpoint_alone_enables_that_signal() {
    let (base, receiver) = start_http_receiver().await;
    let traces_only = env(&[(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        &format!("{base}/v1/traces"),
    )]);
    // No --output: the default console (here a sink) plus OTLP, because of the variable.
    let mut exporters =
        Exporters::with_options(&ExportArgs::default(), options(no_proc(), traces_only))
            .await
            .expect("exporters");
    exporters.export(&openai_stream(3200, 10_000_000_000));
    exporters.shutdown().await;
    assert_eq!(receiver.spans().len(), 1);
    assert!(receiver.0.lock().expect("lock").metrics.is_empty());

    let (base, receiver) = start_http_receiver().await;
    let metrics_only = env(&[(
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        &format!("{base}/v1/metrics"),
    )]);
    let mut exporters =
        Exporters::with_options(&ExportArgs::default(), options(no_proc(), metrics_only))
            .await
            .expect("exporters");
    exporters.export(&openai_stream(3201, 10_000_000_000));
    exporters.shutdown().await;
    assert!(receiver.spans().is_empty());
    assert!(receiver.metric("gen_ai.client.token.usage").is_some());
}

/// A batch of spans from many processes is one request holding every process's resource,
/// each span under its own process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_carries_every_process_of_a_batch() {
    const PROCESSES: u32 = 100;
    const SPANS: u64 = 300;
    for grpc in [false, true] {
        let (endpoint, receiver) = if grpc {
            start_grpc_receiver().await
        } else {
            start_http_receiver().await
        };
        let mut exporters =
            Exporters::with_options(&otlp_to(&endpoint, grpc), options(no_proc(), env(&[])))
                .await
                .expect("exporters");
        for i in 0..SPANS {
            let pid = 4000 + (i % u64::from(PROCESSES)) as u32;
            exporters.export(&openai_stream(pid, 1_000_000_000 * (i + 1)));
        }
        exporters.shutdown().await;
        let requests = receiver.trace_requests();
        let spans = receiver.spans();
        assert_eq!(spans.len() as u64, SPANS, "grpc={grpc}");
        // Before: one request per process.
        assert!(
            requests.len() < PROCESSES as usize,
            "grpc={grpc}: {} requests for {PROCESSES} processes",
            requests.len()
        );
        assert!(
            requests.iter().any(|r| r.resource_spans.len() > 1),
            "grpc={grpc}: every request holds one resource"
        );
        for (resource, span) in &spans {
            let pid = int_attr(resource, "process.pid").expect("pid");
            assert!((4000..4000 + i64::from(PROCESSES)).contains(&pid));
            // `openai_stream` puts the pid nowhere else: the span sits under the resource of
            // the process the record named (its comm is the fallback executable name).
            assert_eq!(
                str_attr(resource, "service.name").as_deref(),
                Some("python3")
            );
            assert_eq!(span.name, "chat gpt-4o-mini");
        }
        let mut pids: Vec<i64> = resources_by_pid(&receiver).into_keys().collect();
        pids.sort_unstable();
        assert_eq!(
            pids,
            (4000..4000 + i64::from(PROCESSES)).collect::<Vec<_>>()
        );
    }
}

/// Full batches are sent while earlier ones are still unanswered: the receiver holds each
/// trace request until two are in flight together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_exported_concurrently() {
    let (endpoint, receiver) = start_http_receiver().await;
    receiver.0.lock().expect("lock").hold_until_concurrent = 2;
    let args = ExportArgs {
        otlp_timeout: Some(HOLD_LIMIT * 4),
        ..otlp_to(&endpoint, false)
    };
    let mut exporters = Exporters::with_options(&args, options(no_proc(), env(&[])))
        .await
        .expect("exporters");
    let spans = 2 * MAX_EXPORT_BATCH as u64;
    for i in 0..spans {
        exporters.export(&openai_stream(
            5000 + (i % 50) as u32,
            1_000_000_000 * (i + 1),
        ));
    }
    exporters.shutdown().await;
    assert!(
        receiver.max_in_flight() >= 2,
        "trace requests were sent one at a time"
    );
    assert_eq!(receiver.spans().len() as u64, spans);
    assert_eq!(all_dropped(&receiver), Some(0));
}

/// `llmtap.export.dropped_spans`, all causes.
fn all_dropped(receiver: &Receiver) -> Option<i64> {
    let metric = receiver.metric("llmtap.export.dropped_spans")?;
    Some(sum_points(&metric).iter().filter_map(as_int).sum())
}

/// A batch the collector refuses, or spans it rejects in a partial success, are counted by
/// cause (`llmtap.export.dropped_spans{error.type}`), never lost silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_rejected_spans_are_counted() {
    for (status, reject, cause, lost) in [
        (400u16, 0i64, "export_failed", 10u64),
        (0, 3, "rejected", 3),
    ] {
        let (endpoint, receiver) = start_http_receiver().await;
        {
            let mut r = receiver.0.lock().expect("lock");
            r.trace_status = status;
            r.reject_spans = reject;
        }
        let mut exporters =
            Exporters::with_options(&otlp_to(&endpoint, false), options(no_proc(), env(&[])))
                .await
                .expect("exporters");
        for i in 0..10 {
            exporters.export(&openai_stream(6000 + i, 1_000_000_000 * u64::from(i + 1)));
        }
        // Shutdown's final metric push carries the count.
        exporters.shutdown().await;
        assert_eq!(
            dropped_metric(&receiver, cause),
            Some(lost as i64),
            "{cause}"
        );
        assert_eq!(all_dropped(&receiver), Some(lost as i64), "{cause}");
    }
}

/// Custom CA and client certificate (mutual TLS) from the standard variables, over HTTP and
/// gRPC; without the client certificate the collector refuses the connection and the spans
/// are counted as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_the_certificate_variables() {
    let pki = TestPki::generate("mtls");
    let ca = pki.ca_path.display().to_string();
    let cert = pki.client_cert_path.display().to_string();
    let key = pki.client_key_path.display().to_string();
    for grpc in [false, true] {
        for with_client_cert in [true, false] {
            let (endpoint, receiver) = if grpc {
                start_grpc_receiver_with(Some(pki.tonic_server_mtls())).await
            } else {
                start_http_receiver_with(Some(pki.rustls_server(true))).await
            };
            assert!(endpoint.starts_with("https://"));
            let mut variables = env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
            ]);
            if grpc {
                variables.insert("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into());
            }
            if with_client_cert {
                variables.insert("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE".into(), cert.clone());
                variables.insert("OTEL_EXPORTER_OTLP_CLIENT_KEY".into(), key.clone());
            }
            let mut exporters =
                Exporters::with_options(&otlp_output(), options(no_proc(), variables))
                    .await
                    .expect("exporters");
            exporters.export(&openai_stream(7000, 10_000_000_000));
            exporters.export(&openai_stream(7001, 11_000_000_000));
            exporters.shutdown().await;
            let case = format!("grpc={grpc} client_cert={with_client_cert}");
            if with_client_cert {
                assert_eq!(receiver.spans().len(), 2, "{case}");
                assert!(
                    receiver.metric("gen_ai.client.token.usage").is_some(),
                    "{case}"
                );
            } else {
                assert!(receiver.spans().is_empty(), "{case}");
                assert!(
                    receiver.0.lock().expect("lock").metrics.is_empty(),
                    "{case}"
                );
            }
        }
    }
}

/// A certificate variable naming a missing or non-PEM file stops llmtap at startup with the
/// variable named, rather than failing every export later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificate_files_are_startup_errors() {
    let junk = std::env::temp_dir().join(format!("llmtap-junk-{}.pem", std::process::id()));
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let junk = junk.display().to_string();
    for (var, value, expected) in [
        (
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "/nonexistent/ca.pem",
            "No such file",
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            junk.as_str(),
            "invalid PEM",
        ),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            junk.as_str(),
            "CLIENT_KEY is not",
        ),
    ] {
        let variables = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:9"),
            (var, value),
        ]);
        let error =
            match Exporters::with_options(&otlp_output(), options(no_proc(), variables)).await {
                Ok(_) => panic!("{var}={value} accepted"),
                Err(e) => e.to_string(),
            };
        assert!(error.contains(var) && error.contains(expected), "{error}");
    }
    std::fs::remove_file(&junk).ok();
}
