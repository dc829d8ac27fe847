//! The `--metrics-listen` HTTP endpoint: `/metrics` (Prometheus scrape), `/healthz` (the
//! process answers) and `/readyz` (capture attached and the daemon loop drained the ring
//! buffer recently). HTTP/1.1 through hyper; a bounded number of connections, each with a
//! header timeout, so a stuck or hostile client cannot hold memory.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use super::prometheus::{CONTENT_TYPE, PrometheusMetrics};

/// Longest gap between two reports of the daemon loop for `/readyz` to stay ready. The loop
/// reports once a second after reading what the ring buffer holds; a loop stuck behind a
/// backlog (or not running) stops reporting.
pub const READY_WITHIN: Duration = Duration::from_secs(10);

/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 16;

/// What `/readyz` answers from.
#[derive(Debug)]
pub struct Readiness {
    start: Instant,
    attached: AtomicBool,
    /// Milliseconds after `start` of the last loop report, plus one (0: none yet).
    last_report_ms: AtomicU64,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            attached: AtomicBool::new(false),
            last_report_ms: AtomicU64::new(0),
        }
    }
}

impl Readiness {
    /// The capture session started: probes and tracepoints are attached.
    pub fn set_attached(&self) {
        self.attached.store(true, Ordering::Relaxed);
    }

    /// The daemon loop came round (it had read the ring buffer empty).
    pub fn report(&self) {
        self.report_at(Instant::now());
    }

    fn report_at(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.start).as_millis();
        self.last_report_ms.store(
            u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1,
            Ordering::Relaxed,
        );
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self, now: Instant) -> Result<(), &'static str> {
        if !self.attached.load(Ordering::Relaxed) {
            return Err("capture not attached yet");
        }
        let last = self.last_report_ms.load(Ordering::Relaxed);
        if last == 0 {
            return Err("the daemon loop has not reported yet");
        }
        let since = now
            .saturating_duration_since(self.start)
            .as_millis()
            .saturating_sub(u128::from(last - 1));
        if since > READY_WITHIN.as_millis() {
            return Err("the daemon loop has not drained the ring buffer recently");
        }
        Ok(())
    }
}

/// Errors starting the endpoint.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for --metrics-listen: {source}")]
pub struct MetricsListenError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// The running endpoint; stops when dropped.
pub struct MetricsServer {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Binds now (so a busy port is a startup error) and serves on the current tokio runtime.
    pub fn start(
        addr: SocketAddr,
        metrics: Arc<PrometheusMetrics>,
        readiness: Arc<Readiness>,
    ) -> Result<Self, MetricsListenError> {
        let error = |source| MetricsListenError { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(error)?;
        listener.set_nonblocking(true).map_err(error)?;
        let local_addr = listener.local_addr().map_err(error)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(error)?;
        let task = tokio::spawn(accept_loop(listener, metrics, readiness));
        log::info!("serving /metrics, /healthz and /readyz on http://{local_addr}");
        Ok(Self { local_addr, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    metrics: Arc<PrometheusMetrics>,
    readiness: Arc<Readiness>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                log::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        let readiness = Arc::clone(&readiness);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, &metrics, &readiness);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            // A whole exchange is bounded too (a client that never reads its response).
            let _ = tokio::time::timeout(Duration::from_secs(60), connection).await;
            drop(permit);
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// The answer to one request (the request body is never read).
pub fn respond(
    request: &Request<Incoming>,
    metrics: &PrometheusMetrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    route(request.method(), request.uri().path(), metrics, readiness)
}

fn route(
    method: &Method,
    path: &str,
    metrics: &PrometheusMetrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if method != Method::GET && method != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET and HEAD\n".into(),
        );
    }
    match path {
        "/metrics" => text(StatusCode::OK, CONTENT_TYPE, metrics.encode()),
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/readyz" => match readiness.check(Instant::now()) {
            Ok(()) => text(StatusCode::OK, PLAIN, "ready\n".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{why}\n")),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "llmtap serves /metrics, /healthz and /readyz\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_attached_capture_and_a_recent_report() {
        let readiness = Readiness::default();
        let t0 = readiness.start;
        assert_eq!(readiness.check(t0), Err("capture not attached yet"));
        readiness.set_attached();
        assert_eq!(
            readiness.check(t0),
            Err("the daemon loop has not reported yet")
        );
        readiness.report_at(t0 + Duration::from_secs(1));
        assert_eq!(readiness.check(t0 + Duration::from_secs(2)), Ok(()));
        assert_eq!(readiness.check(t0 + Duration::from_secs(11)), Ok(()));
        assert!(readiness.check(t0 + Duration::from_secs(12)).is_err());
        readiness.report_at(t0 + Duration::from_secs(12));
        assert_eq!(readiness.check(t0 + Duration::from_secs(12)), Ok(()));
    }

    #[test]
    fn routes() {
        let metrics = PrometheusMetrics::new();
        let readiness = Readiness::default();
        let status =
            |method: Method, path: &str| route(&method, path, &metrics, &readiness).status();
        assert_eq!(status(Method::GET, "/healthz"), StatusCode::OK);
        assert_eq!(
            status(Method::GET, "/readyz"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        readiness.set_attached();
        readiness.report();
        assert_eq!(status(Method::GET, "/readyz"), StatusCode::OK);
        assert_eq!(status(Method::GET, "/metrics"), StatusCode::OK);
        assert_eq!(status(Method::GET, "/"), StatusCode::NOT_FOUND);
        assert_eq!(
            status(Method::POST, "/metrics"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let response = route(&Method::GET, "/metrics", &metrics, &readiness);
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(CONTENT_TYPE.as_bytes())
        );
    }

    /// A real socket: a busy port is a startup error, and a GET is answered.
    #[tokio::test]
    async fn serves_over_tcp_and_reports_a_busy_port() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let metrics = Arc::new(PrometheusMetrics::new());
        let readiness = Arc::new(Readiness::default());
        let server = MetricsServer::start(
            "127.0.0.1:0".parse().expect("addr"),
            Arc::clone(&metrics),
            Arc::clone(&readiness),
        )
        .expect("start");
        let busy = MetricsServer::start(server.local_addr(), metrics, readiness);
        assert!(busy.is_err());
        let mut stream = tokio::net::TcpStream::connect(server.local_addr())
            .await
            .expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok\n"), "{answer}");
    }
}
