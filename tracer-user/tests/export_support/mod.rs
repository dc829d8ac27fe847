//! Test support for the export integration tests: an OTLP receiver (gRPC via tonic and
//! HTTP/protobuf via a minimal HTTP/1.1 server) on 127.0.0.1:0, and realistic call records.
#![allow(dead_code)] // each test binary uses a different subset

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use llmtap::genai::{
    CallError, CallRecord, CallTiming, Operation, ProcessRef, RequestParams, ResponseInfo, Usage,
};
use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::{AnyValue, KeyValue, any_value},
    metrics::v1::{Metric, metric},
    trace::v1::Span,
};
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Everything the receiver got.
#[derive(Default, Debug)]
pub struct Received {
    pub traces: Vec<ExportTraceServiceRequest>,
    pub metrics: Vec<ExportMetricsServiceRequest>,
    /// Raw request bodies (protobuf), to search for leaked strings.
    pub raw: Vec<Vec<u8>>,
    /// HTTP request heads / gRPC metadata seen, lower-cased `name: value` lines.
    pub headers: Vec<String>,
    /// Trace requests answer this HTTP status (0: 200).
    pub trace_status: u16,
    /// Trace requests answer a partial success refusing this many spans.
    pub reject_spans: i64,
    /// Each trace request is answered only once this many were in flight together (or after
    /// [`HOLD_LIMIT`]): shows whether the exporter sends requests concurrently.
    pub hold_until_concurrent: usize,
    pub in_flight: usize,
    pub max_in_flight: usize,
    /// HTTP: each request's path and `content-encoding` header.
    pub encodings: Vec<(String, Option<String>)>,
}

/// Longest a held trace request waits for the others; shorter than the exporters' timeout, so
/// a held request is answered, not retried (a retry would overlap it).
pub const HOLD_LIMIT: Duration = Duration::from_secs(3);

#[derive(Clone, Default)]
pub struct Receiver(pub Arc<Mutex<Received>>);

impl Receiver {
    pub fn spans(&self) -> Vec<(Vec<KeyValue>, Span)> {
        let received = self.0.lock().expect("receiver lock");
        let mut out = Vec::new();
        for request in &received.traces {
            for rs in &request.resource_spans {
                let resource = rs
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push((resource.clone(), span.clone()));
                    }
                }
            }
        }
        out
    }

    /// The last export of each metric (cumulative temporality: the last one holds the totals).
    pub fn metric(&self, name: &str) -> Option<Metric> {
        let received = self.0.lock().expect("receiver lock");
        received
            .metrics
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .rfind(|m| m.name == name)
            .cloned()
    }

    pub fn metrics_resource(&self) -> Vec<KeyValue> {
        let received = self.0.lock().expect("receiver lock");
        received
            .metrics
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .filter_map(|rm| rm.resource.as_ref())
            .map(|r| r.attributes.clone())
            .next_back()
            .unwrap_or_default()
    }

    pub fn contains_bytes(&self, needle: &str) -> bool {
        let received = self.0.lock().expect("receiver lock");
        received
            .raw
            .iter()
            .any(|body| body.windows(needle.len()).any(|w| w == needle.as_bytes()))
    }

    pub fn header_seen(&self, line: &str) -> bool {
        let received = self.0.lock().expect("receiver lock");
        received.headers.iter().any(|h| h == line)
    }
}

fn record_metadata<T>(receiver: &Receiver, request: &tonic::Request<T>) {
    let mut received = receiver.0.lock().expect("receiver lock");
    for kv in request.metadata().iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
            received.headers.push(format!(
                "{}: {}",
                k.as_str(),
                v.to_str().unwrap_or_default()
            ));
        }
    }
}

impl Receiver {
    /// Waits as [`Received::hold_until_concurrent`] says.
    async fn hold_trace_request(&self) {
        let wanted = {
            let mut r = self.0.lock().expect("receiver lock");
            r.in_flight += 1;
            r.max_in_flight = r.max_in_flight.max(r.in_flight);
            r.hold_until_concurrent
        };
        let start = tokio::time::Instant::now();
        while wanted > 0
            && self.0.lock().expect("receiver lock").max_in_flight < wanted
            && start.elapsed() < HOLD_LIMIT
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.0.lock().expect("receiver lock").in_flight -= 1;
    }

    /// The trace response the receiver is configured to give.
    fn trace_response(&self) -> ExportTraceServiceResponse {
        let rejected = self.0.lock().expect("receiver lock").reject_spans;
        ExportTraceServiceResponse {
            partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: "test receiver refuses some spans".into(),
            }),
        }
    }

    pub fn trace_requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.0.lock().expect("receiver lock").traces.clone()
    }

    pub fn max_in_flight(&self) -> usize {
        self.0.lock().expect("receiver lock").max_in_flight
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        record_metadata(self, &request);
        self.hold_trace_request().await;
        let body = request.into_inner();
        {
            let mut received = self.0.lock().expect("receiver lock");
            received.raw.push(body.encode_to_vec());
            received.traces.push(body);
        }
        Ok(tonic::Response::new(self.trace_response()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        record_metadata(self, &request);
        let body = request.into_inner();
        let mut received = self.0.lock().expect("receiver lock");
        received.raw.push(body.encode_to_vec());
        received.metrics.push(body);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Starts a gRPC OTLP receiver; returns its endpoint URL.
pub async fn start_grpc_receiver() -> (String, Receiver) {
    start_grpc_receiver_with(None).await
}

/// A gRPC OTLP receiver, over TLS with this config when given (gzip requests accepted).
pub async fn start_grpc_receiver_with(
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> (String, Receiver) {
    use tonic::codec::CompressionEncoding::Gzip;
    let receiver = Receiver::default();
    let incoming =
        tonic::transport::server::TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind gRPC receiver");
    let addr = incoming.local_addr().expect("receiver address");
    let mut builder = tonic::transport::Server::builder();
    let scheme = match tls {
        Some(tls) => {
            builder = builder.tls_config(tls).expect("server TLS config");
            "https"
        }
        None => "http",
    };
    let server = builder
        .add_service(TraceServiceServer::new(receiver.clone()).accept_compressed(Gzip))
        .add_service(MetricsServiceServer::new(receiver.clone()).accept_compressed(Gzip))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    (format!("{scheme}://{addr}"), receiver)
}

/// Starts an HTTP/protobuf OTLP receiver (`POST /v1/traces`, `POST /v1/metrics`); returns its
/// base URL.
pub async fn start_http_receiver() -> (String, Receiver) {
    start_http_receiver_with(None).await
}

/// An HTTP/protobuf OTLP receiver, over TLS with this config when given. Gzip bodies
/// (`content-encoding: gzip`) are decoded.
pub async fn start_http_receiver_with(
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
) -> (String, Receiver) {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind HTTP receiver");
    let addr = listener.local_addr().expect("receiver address");
    let accepting = receiver.clone();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let receiver = accepting.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(stream).await {
                            let _ = serve_http_connection(tls, receiver).await;
                        }
                    }
                    None => {
                        let _ = serve_http_connection(stream, receiver).await;
                    }
                }
            });
        }
    });
    (format!("{scheme}://{addr}"), receiver)
}

async fn serve_http_connection<S>(stream: S, receiver: Receiver) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut stream = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if stream.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let mut content_length = 0usize;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).await?;
            let line = line.trim_end().to_string();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            headers.push(lower);
        }
        let mut body = vec![0u8; content_length];
        stream.read_exact(&mut body).await?;
        let encoding = headers
            .iter()
            .find_map(|h| h.strip_prefix("content-encoding:"))
            .map(|v| v.trim().to_string());
        receiver
            .0
            .lock()
            .expect("receiver lock")
            .encodings
            .push((path.clone(), encoding));
        if headers.iter().any(|h| h == "content-encoding: gzip") {
            let mut plain = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(body.as_slice()),
                &mut plain,
            )?;
            body = plain;
        }
        let is_traces = path == "/v1/traces";
        if is_traces {
            receiver.hold_trace_request().await;
        }
        let status = {
            let mut received = receiver.0.lock().expect("receiver lock");
            received.headers.extend(headers);
            let status = if is_traces && received.trace_status != 0 {
                received.trace_status
            } else {
                200
            };
            received.raw.push(body.clone());
            match path.as_str() {
                "/v1/traces" if status == 200 => {
                    if let Ok(r) = ExportTraceServiceRequest::decode(body.as_slice()) {
                        received.traces.push(r);
                    }
                }
                "/v1/metrics" => {
                    if let Ok(r) = ExportMetricsServiceRequest::decode(body.as_slice()) {
                        received.metrics.push(r);
                    }
                }
                _ => {}
            }
            status
        };
        let body = if is_traces && status == 200 {
            receiver.trace_response().encode_to_vec()
        } else {
            Vec::new()
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.get_mut().write_all(head.as_bytes()).await?;
        stream.get_mut().write_all(&body).await?;
    }
}

/// A per-test PKI (rcgen): a CA, a server certificate for 127.0.0.1 and a client certificate,
/// written as PEM files for the `OTEL_EXPORTER_OTLP_*CERTIFICATE`/`CLIENT_KEY` variables.
pub struct TestPki {
    pub dir: PathBuf,
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub ca_path: PathBuf,
    pub client_cert_path: PathBuf,
    pub client_key_path: PathBuf,
}

impl TestPki {
    pub fn generate(tag: &str) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose, SanType,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "llmtap OTLP test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |name: &str, purpose: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
            params.distinguished_name.push(DnType::CommonName, name);
            params
                .subject_alt_names
                .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
            params.extended_key_usages = vec![purpose];
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &issuer).expect("signed");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert_pem, server_key_pem) =
            leaf("otlp collector", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert_pem, client_key_pem) =
            leaf("llmtap agent", ExtendedKeyUsagePurpose::ClientAuth);
        let dir = std::env::temp_dir().join(format!("llmtap-pki-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        Self {
            ca_path: write("ca.pem", &ca_cert.pem()),
            client_cert_path: write("client.pem", &client_cert_pem),
            client_key_path: write("client.key", &client_key_pem),
            ca_pem: ca_cert.pem(),
            server_cert_pem,
            server_key_pem,
            dir,
        }
    }

    /// rustls server config for the HTTP receiver; `require_client_cert`: mTLS.
    pub fn rustls_server(
        &self,
        require_client_cert: bool,
    ) -> Arc<tokio_rustls::rustls::ServerConfig> {
        use tokio_rustls::rustls::{
            self, RootCertStore,
            pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
            server::WebPkiClientVerifier,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.server_cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("server chain");
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).expect("key");
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = if require_client_cert {
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
                roots.add(ca.expect("CA")).expect("root");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(builder.with_single_cert(chain, key).expect("server config"))
    }

    /// tonic server TLS for the gRPC receiver, requiring a client certificate from our CA.
    pub fn tonic_server_mtls(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &self.server_cert_pem,
                &self.server_key_pem,
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(&self.ca_pem))
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

pub fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

pub fn str_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attr(attributes, key) {
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

pub fn int_attr(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attributes, key) {
        Some(any_value::Value::IntValue(n)) => Some(*n),
        _ => None,
    }
}

pub fn double_attr(attributes: &[KeyValue], key: &str) -> Option<f64> {
    match attr(attributes, key) {
        Some(any_value::Value::DoubleValue(x)) => Some(*x),
        _ => None,
    }
}

pub fn strings_attr(attributes: &[KeyValue], key: &str) -> Option<Vec<String>> {
    match attr(attributes, key) {
        Some(any_value::Value::ArrayValue(a)) => Some(
            a.values
                .iter()
                .filter_map(|v| match &v.value {
                    Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

pub fn histogram(
    metric: &Metric,
) -> &[opentelemetry_proto::tonic::metrics::v1::HistogramDataPoint] {
    match &metric.data {
        Some(metric::Data::Histogram(h)) => &h.data_points,
        _ => &[],
    }
}

pub fn sum_points(metric: &Metric) -> &[opentelemetry_proto::tonic::metrics::v1::NumberDataPoint] {
    match &metric.data {
        Some(metric::Data::Sum(s)) => &s.data_points,
        _ => &[],
    }
}

pub fn as_int(point: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint) -> Option<i64> {
    match point.value {
        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(n)) => {
            Some(n)
        }
        _ => None,
    }
}

/// Offset making monotonic 0 = 2026-01-01T00:00:00Z.
pub const CLOCK_OFFSET_NS: i128 = 1_767_225_600_000_000_000;

/// A fake `/proc/PID` with the given command line and executable.
pub fn fake_proc(tag: &str, processes: &[(u32, &[&str], &str)]) -> PathBuf {
    let root =
        std::env::temp_dir().join(format!("llmtap-export-test-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    for (pid, args, exe) in processes {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).expect("fake proc dir");
        let mut cmdline = Vec::new();
        for arg in *args {
            cmdline.extend_from_slice(arg.as_bytes());
            cmdline.push(0);
        }
        std::fs::write(dir.join("cmdline"), cmdline).expect("cmdline");
        std::fs::write(dir.join("cgroup"), "0::/user.slice\n").expect("cgroup");
        std::os::unix::fs::symlink(exe, dir.join("exe")).expect("exe link");
    }
    root
}

fn base(pid: u32, comm: &str) -> CallRecord {
    CallRecord {
        process: ProcessRef {
            pid,
            tid: pid,
            comm: comm.into(),
        },
        connection_id: 1,
        operation: Operation::Chat,
        provider: String::new(),
        api: String::new(),
        server_address: None,
        server_port: Some(443),
        network_peer_address: None,
        network_peer_port: None,
        http_method: "POST".into(),
        url_path: String::new(),
        http_status: Some(200),
        http_version: "1.1".into(),
        request: RequestParams::default(),
        response: ResponseInfo::default(),
        usage: Usage::default(),
        error: None,
        timing: CallTiming::default(),
        stream_chunks: None,
        truncated: false,
        incomplete: false,
        content: None,
        agent: None,
    }
}

/// `openai__chat_stream_include_usage.json`: streamed gpt-4o-mini, 23 → 8 tokens, 8 chunks.
pub fn openai_stream(pid: u32, start_ns: u64) -> CallRecord {
    let mut r = base(pid, "python3");
    r.provider = "openai".into();
    r.api = "chat_completions".into();
    r.server_address = Some("api.openai.com".into());
    r.url_path = "/v1/chat/completions".into();
    r.request = RequestParams {
        model: Some("gpt-4o-mini".into()),
        stream: true,
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        ..RequestParams::default()
    };
    r.response = ResponseInfo {
        id: Some("chatcmpl-ChZNa5AVXUvGOZAleY7FgQlVr6bxn".into()),
        model: Some("gpt-4o-mini-2024-07-18".into()),
        finish_reasons: vec!["stop".into()],
        system_fingerprint: Some("fp_560af6e559".into()),
        service_tier: Some("default".into()),
        ..ResponseInfo::default()
    };
    r.usage = Usage {
        input_tokens: Some(23),
        output_tokens: Some(8),
        cache_read_input_tokens: Some(0),
        reasoning_output_tokens: Some(0),
        ..Usage::default()
    };
    // First chunk at +400 ms, then one every 20 ms: 8 chunks, 7 gaps; end at +600 ms.
    let chunks: Vec<u64> = (0..8)
        .map(|i| start_ns + 400_000_000 + i * 20_000_000)
        .collect();
    r.timing = CallTiming {
        request_start_ns: start_ns,
        request_end_ns: start_ns + 1_000_000,
        response_start_ns: Some(start_ns + 350_000_000),
        first_chunk_ns: Some(chunks[0]),
        chunk_times_ns: chunks,
        response_end_ns: start_ns + 600_000_000,
    };
    r.stream_chunks = Some(8);
    r
}

/// `anthropic__messages_stream_prompt_caching_2.json`: 1169 (1165 cached) → 221 tokens.
pub fn anthropic_cached(pid: u32, start_ns: u64) -> CallRecord {
    let mut r = base(pid, "node");
    r.provider = "anthropic".into();
    r.api = "anthropic_messages".into();
    r.server_address = Some("api.anthropic.com".into());
    r.url_path = "/v1/messages".into();
    r.request = RequestParams {
        model: Some("claude-3-5-sonnet-20240620".into()),
        max_tokens: Some(1024),
        stream: true,
        ..RequestParams::default()
    };
    r.response = ResponseInfo {
        id: Some("msg_01XQRA3bs4SB4yTBMwD3dbUi".into()),
        model: Some("claude-3-5-sonnet-20240620".into()),
        finish_reasons: vec!["end_turn".into()],
        ..ResponseInfo::default()
    };
    r.usage = Usage {
        input_tokens: Some(1169),
        output_tokens: Some(221),
        cache_read_input_tokens: Some(1165),
        cache_creation_input_tokens: Some(0),
        ..Usage::default()
    };
    r.timing = CallTiming {
        request_start_ns: start_ns,
        request_end_ns: start_ns + 2_000_000,
        response_start_ns: Some(start_ns + 700_000_000),
        first_chunk_ns: Some(start_ns + 900_000_000),
        chunk_times_ns: vec![start_ns + 900_000_000, start_ns + 1_000_000_000],
        response_end_ns: start_ns + 3_000_000_000,
    };
    r.stream_chunks = Some(40);
    r
}

/// `openai__chat_vision_then_400_3.json`: HTTP 400 `invalid_request_error`.
pub fn openai_400(pid: u32, start_ns: u64) -> CallRecord {
    let mut r = base(pid, "python3");
    r.provider = "openai".into();
    r.api = "chat_completions".into();
    r.server_address = Some("api.openai.com".into());
    r.url_path = "/v1/chat/completions".into();
    r.http_status = Some(400);
    r.request.model = Some("gpt-4o-mini".into());
    r.error = Some(CallError {
        error_type: "invalid_request_error".into(),
        http_status: Some(400),
        mid_stream: false,
        message: Some("Invalid image.".into()),
    });
    r.timing = CallTiming {
        request_start_ns: start_ns,
        request_end_ns: start_ns + 1_000_000,
        response_start_ns: Some(start_ns + 200_000_000),
        first_chunk_ns: None,
        chunk_times_ns: Vec::new(),
        response_end_ns: start_ns + 250_000_000,
    };
    r
}

/// Gives the exporters' background tasks a moment (nothing is asserted on timing).
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}
