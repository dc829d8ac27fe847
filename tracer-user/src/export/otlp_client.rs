//! Connections to the collector, and the trace export request.
//!
//! Traces: one `ExportTraceServiceRequest` per batch, holding every process's resource (the
//! SDK's `SpanExporter` carries one resource per request, which made a batch of N processes N
//! requests in a row). Sent over HTTP/protobuf (reqwest) or gRPC (tonic), gzip when asked,
//! retried on the transient failures the OTLP specification names, within the export timeout.
//! The HTTP client and the gRPC channel built here (custom CA, client certificate) also carry
//! the SDK's metric exporter.

use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse, trace_service_client::TraceServiceClient,
};
use prost::Message as _;
use tonic::{
    codec::CompressionEncoding,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use super::otlp_config::{Compression, SignalSettings, TlsSettings};

/// First wait before a retry; doubled after each, up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Largest export response body read (it holds at most a partial-success message).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Errors building a connection to the collector.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("OTLP {signal}: invalid header {name:?}")]
    Header { signal: &'static str, name: String },
    #[error("OTLP {signal}: {message}")]
    Build {
        signal: &'static str,
        message: String,
    },
}

/// A reqwest client with the signal's trust roots and client certificate.
pub fn http_client(
    signal: &'static str,
    settings: &SignalSettings,
) -> Result<reqwest::Client, ClientError> {
    let build = |e: reqwest::Error| ClientError::Build {
        signal,
        message: format!("cannot build the HTTP client: {e}"),
    };
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("llmtap/", env!("CARGO_PKG_VERSION")))
        .timeout(settings.timeout);
    let TlsSettings { ca_pem, identity } = &settings.tls;
    if let Some(pem) = ca_pem {
        builder =
            builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(pem).map_err(build)?);
    }
    if let Some(identity) = identity {
        let mut pem = identity.cert_pem.clone();
        pem.push(b'\n');
        pem.extend_from_slice(&identity.key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(&pem).map_err(build)?);
    }
    builder.build().map_err(build)
}

/// A lazily connecting gRPC channel with the signal's TLS settings.
pub fn grpc_channel(
    signal: &'static str,
    settings: &SignalSettings,
) -> Result<Channel, ClientError> {
    let error = |e: tonic::transport::Error| ClientError::Build {
        signal,
        message: format!("invalid gRPC endpoint {}: {e}", settings.endpoint),
    };
    let mut endpoint = Endpoint::from_shared(settings.endpoint.clone())
        .map_err(error)?
        .timeout(settings.timeout);
    if settings.https() {
        endpoint = endpoint
            .tls_config(grpc_tls(&settings.tls))
            .map_err(error)?;
    }
    Ok(endpoint.connect_lazy())
}

/// tonic has no trust roots by default: the configured CA alone, else the bundled WebPKI roots
/// and the system's (corporate CAs live there).
fn grpc_tls(tls: &TlsSettings) -> ClientTlsConfig {
    let mut config = ClientTlsConfig::new();
    match &tls.ca_pem {
        Some(pem) => config = config.ca_certificate(Certificate::from_pem(pem)),
        None => {
            config = config.with_webpki_roots();
            let system_store = std::env::var_os("SSL_CERT_FILE").is_some()
                || std::env::var_os("SSL_CERT_DIR").is_some()
                || std::path::Path::new("/etc/ssl/certs").is_dir();
            if system_store {
                config = config.with_native_roots();
            }
        }
    }
    if let Some(identity) = &tls.identity {
        config = config.identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem));
    }
    config
}

/// Headers as gRPC metadata (lower-case keys).
pub fn grpc_metadata(
    signal: &'static str,
    headers: &[(String, String)],
) -> Result<MetadataMap, ClientError> {
    let mut map = MetadataMap::new();
    for (name, value) in headers {
        let invalid = || ClientError::Header {
            signal,
            name: name.clone(),
        };
        let key =
            MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| invalid())?;
        let value: MetadataValue<_> = value.parse().map_err(|_| invalid())?;
        map.insert(key, value);
    }
    Ok(map)
}

fn http_headers(headers: &[(String, String)]) -> Result<reqwest::header::HeaderMap, ClientError> {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        let invalid = || ClientError::Header {
            signal: "traces",
            name: name.clone(),
        };
        let name =
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let value = reqwest::header::HeaderValue::from_str(value).map_err(|_| invalid())?;
        map.insert(name, value);
    }
    Ok(map)
}

/// How an export ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ExportOutcome {
    /// Accepted; `rejected` spans were refused by the collector (partial success).
    Accepted { rejected: u64, message: String },
    /// Not delivered (after the retries the timeout allowed).
    Failed(String),
}

enum Transport {
    Http {
        client: reqwest::Client,
        url: String,
        headers: reqwest::header::HeaderMap,
    },
    Grpc {
        client: TraceServiceClient<Channel>,
        metadata: MetadataMap,
    },
}

/// Sends trace export requests to one collector.
pub struct TraceClient {
    transport: Transport,
    gzip: bool,
    timeout: Duration,
}

/// One attempt's failure.
struct AttemptError {
    message: String,
    retryable: bool,
    /// The server's requested wait (HTTP `Retry-After` in seconds).
    retry_after: Option<Duration>,
}

impl TraceClient {
    pub fn new(settings: &SignalSettings) -> Result<Self, ClientError> {
        let gzip = settings.compression == Compression::Gzip;
        let transport = match settings.protocol {
            super::OtlpProtocol::HttpProtobuf => Transport::Http {
                client: http_client("traces", settings)?,
                url: settings.endpoint.clone(),
                headers: http_headers(&settings.headers)?,
            },
            super::OtlpProtocol::Grpc => {
                let mut client = TraceServiceClient::new(grpc_channel("traces", settings)?)
                    .max_decoding_message_size(MAX_RESPONSE_BYTES);
                if gzip {
                    client = client.send_compressed(CompressionEncoding::Gzip);
                }
                Transport::Grpc {
                    client,
                    metadata: grpc_metadata("traces", &settings.headers)?,
                }
            }
        };
        Ok(Self {
            transport,
            gzip,
            timeout: settings.timeout,
        })
    }

    /// Sends the request, retrying transient failures until the export timeout has passed.
    pub async fn export(&self, request: ExportTraceServiceRequest) -> ExportOutcome {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let http_body = match &self.transport {
            Transport::Http { .. } => match self.http_body(&request) {
                Ok(body) => Some(body),
                Err(e) => return ExportOutcome::Failed(format!("cannot compress: {e}")),
            },
            Transport::Grpc { .. } => None,
        };
        let mut backoff = INITIAL_BACKOFF;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = match (&self.transport, &http_body) {
                (
                    Transport::Http {
                        client,
                        url,
                        headers,
                    },
                    Some(body),
                ) => {
                    let request = client
                        .post(url)
                        .headers(headers.clone())
                        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
                        .timeout(remaining)
                        .body(body.clone());
                    send_http(request, self.gzip).await
                }
                (Transport::Grpc { client, metadata }, _) => {
                    send_grpc(client, metadata, &request, remaining).await
                }
                (Transport::Http { .. }, None) => {
                    return ExportOutcome::Failed("no request body".into());
                }
            };
            let error = match attempt {
                Ok(response) => {
                    let partial = response.partial_success.unwrap_or_default();
                    return ExportOutcome::Accepted {
                        rejected: u64::try_from(partial.rejected_spans).unwrap_or(0),
                        message: partial.error_message,
                    };
                }
                Err(error) => error,
            };
            let wait = error.retry_after.unwrap_or(backoff);
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !error.retryable || wait >= remaining {
                return ExportOutcome::Failed(error.message);
            }
            log::debug!("OTLP trace export failed ({}): retrying", error.message);
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn http_body(&self, request: &ExportTraceServiceRequest) -> std::io::Result<Bytes> {
        let encoded = request.encode_to_vec();
        if !self.gzip {
            return Ok(Bytes::from(encoded));
        }
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(encoded.len() / 4),
            flate2::Compression::default(),
        );
        encoder.write_all(&encoded)?;
        Ok(Bytes::from(encoder.finish()?))
    }
}

async fn send_http(
    mut request: reqwest::RequestBuilder,
    gzip: bool,
) -> Result<ExportTraceServiceResponse, AttemptError> {
    if gzip {
        request = request.header(reqwest::header::CONTENT_ENCODING, "gzip");
    }
    let response = request.send().await.map_err(|e| AttemptError {
        message: error_chain(&e),
        // No response: the collector may be restarting; try again.
        retryable: true,
        retry_after: None,
    })?;
    let status = response.status();
    if !status.is_success() {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Err(AttemptError {
            message: format!("HTTP {status}"),
            // The statuses the OTLP/HTTP specification calls retryable.
            retryable: matches!(status.as_u16(), 429 | 502 | 503 | 504),
            retry_after,
        });
    }
    // The body is read only when small: a partial success is a few bytes.
    let small = response
        .content_length()
        .is_some_and(|n| n <= MAX_RESPONSE_BYTES as u64);
    if !small {
        return Ok(ExportTraceServiceResponse::default());
    }
    let bytes = response.bytes().await.unwrap_or_default();
    Ok(ExportTraceServiceResponse::decode(bytes).unwrap_or_default())
}

async fn send_grpc(
    client: &TraceServiceClient<Channel>,
    metadata: &MetadataMap,
    request: &ExportTraceServiceRequest,
    remaining: Duration,
) -> Result<ExportTraceServiceResponse, AttemptError> {
    let mut grpc_request = tonic::Request::new(request.clone());
    *grpc_request.metadata_mut() = metadata.clone();
    grpc_request.set_timeout(remaining);
    match client.clone().export(grpc_request).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => {
            use tonic::Code;
            Err(AttemptError {
                message: format!("gRPC {:?}: {}", status.code(), status.message()),
                // The codes the OTLP/gRPC specification calls retryable.
                retryable: matches!(
                    status.code(),
                    Code::Cancelled
                        | Code::DeadlineExceeded
                        | Code::Aborted
                        | Code::OutOfRange
                        | Code::Unavailable
                        | Code::DataLoss
                ),
                retry_after: None,
            })
        }
    }
}

/// An error with its causes (reqwest's top-level message omits the connect error).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
