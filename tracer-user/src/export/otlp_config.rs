//! OTLP settings per signal, from the flags and the `OTEL_EXPORTER_OTLP_*` variables, resolved
//! as the OTLP exporter specification says: flags first, then the signal's variable, then the
//! generic one. Everything is resolved here (nothing is left to the SDK's own reading of the
//! environment), so the result is one value per setting that the tests and the log can show.
//!
//! Endpoints: `--otlp-endpoint` and `OTEL_EXPORTER_OTLP_ENDPOINT` are base URLs to which HTTP
//! appends `/v1/traces` or `/v1/metrics`; `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT` are
//! used as they are. A signal whose endpoint is set alone is exported alone; with no endpoint
//! at all (`--output otlp` only) both go to the spec's default `localhost` endpoints.

use std::{path::Path, time::Duration};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::{
    ExportArgs,
    otel_env::{self, Env, non_empty, otlp_var},
    otlp::OtlpProtocol,
};

/// Export timeout when no flag or variable sets one (spec default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest certificate or key file read (a PEM bundle of every public root is ~250 KiB).
const MAX_PEM_FILE: u64 = 4 * 1024 * 1024;

/// The two signals llmtap exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    /// The infix of the signal's variables (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
    pub fn var(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
        }
    }

    /// The OTLP/HTTP path of the signal.
    fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
        }
    }

    /// `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER`.
    fn exporter_var(self) -> &'static str {
        match self {
            Signal::Traces => "OTEL_TRACES_EXPORTER",
            Signal::Metrics => "OTEL_METRICS_EXPORTER",
        }
    }
}

/// Request body compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

/// A client certificate chain and its private key (mTLS), PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    // The key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity(..)")
    }
}

/// TLS to the collector beyond the system's trust roots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `..._CERTIFICATE`: the only roots trusted for the collector's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// `..._CLIENT_CERTIFICATE` + `..._CLIENT_KEY`.
    pub identity: Option<ClientIdentity>,
}

/// Resolved settings of one signal.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalSettings {
    pub protocol: OtlpProtocol,
    /// Full URL for HTTP (signal path included), `scheme://host:port` for gRPC.
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub compression: Compression,
    pub tls: TlsSettings,
}

impl SignalSettings {
    pub fn https(&self) -> bool {
        self.endpoint.starts_with("https://")
    }
}

/// What OTLP exports: each signal's settings, `None` when that signal is off.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpSettings {
    pub traces: Option<SignalSettings>,
    pub metrics: Option<SignalSettings>,
}

/// A setting that cannot work; llmtap does not start with it.
#[derive(Debug, thiserror::Error)]
pub enum OtlpConfigError {
    #[error("invalid OTLP endpoint {value:?} (from {source_name}): {reason}")]
    Endpoint {
        source_name: String,
        value: String,
        reason: String,
    },
    #[error("{var}={path}: {reason}")]
    TlsFile {
        var: String,
        path: String,
        reason: String,
    },
    #[error("{present} is set but {missing} is not: a client certificate needs its key")]
    TlsPair { present: String, missing: String },
}

/// Whether any endpoint is configured (flag or variable): the OTLP output is then on.
pub fn endpoint_configured(args: &ExportArgs, env: &Env) -> bool {
    args.otlp_endpoint.is_some()
        || [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        ]
        .iter()
        .any(|name| non_empty(env, name).is_some())
}

/// Both signals' settings.
pub fn resolve(args: &ExportArgs, env: &Env) -> Result<OtlpSettings, OtlpConfigError> {
    Ok(OtlpSettings {
        traces: signal_settings(args, env, Signal::Traces)?,
        metrics: signal_settings(args, env, Signal::Metrics)?,
    })
}

fn protocol(args: &ExportArgs, env: &Env, signal: Signal) -> OtlpProtocol {
    let from_env = |name: &str| {
        let value = non_empty(env, name)?;
        let protocol = OtlpProtocol::from_env_value(value);
        if protocol.is_none() {
            log::warn!("{name}={value} is not supported (grpc, http/protobuf): ignored");
        }
        protocol
    };
    args.otlp_protocol
        .or_else(|| from_env(&format!("OTEL_EXPORTER_OTLP_{}_PROTOCOL", signal.var())))
        .or_else(|| from_env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or(OtlpProtocol::HttpProtobuf)
}

/// `OTEL_{SIGNAL}_EXPORTER=none` turns the signal off; llmtap only exports OTLP.
fn signal_disabled(env: &Env, signal: Signal) -> bool {
    let name = signal.exporter_var();
    let Some(value) = non_empty(env, name) else {
        return false;
    };
    let exporters: Vec<&str> = value.split(',').map(str::trim).collect();
    if exporters.iter().all(|e| e.eq_ignore_ascii_case("none")) {
        return true;
    }
    if !exporters.iter().any(|e| e.eq_ignore_ascii_case("otlp")) {
        log::warn!("{name}={value}: llmtap exports only otlp (or none): ignored");
    }
    false
}

/// The signal's endpoint and where it came from; `None`: the signal is off.
fn endpoint(
    args: &ExportArgs,
    env: &Env,
    signal: Signal,
    protocol: OtlpProtocol,
) -> Option<(String, String)> {
    let with_path = |base: &str| match protocol {
        OtlpProtocol::Grpc => base.to_string(),
        OtlpProtocol::HttpProtobuf => {
            format!("{}{}", base.trim_end_matches('/'), signal.http_path())
        }
    };
    if let Some(base) = &args.otlp_endpoint {
        return Some((with_path(base), "--otlp-endpoint".into()));
    }
    let signal_var = format!("OTEL_EXPORTER_OTLP_{}_ENDPOINT", signal.var());
    if let Some(url) = non_empty(env, &signal_var) {
        return Some((url.to_string(), signal_var));
    }
    if let Some(base) = non_empty(env, "OTEL_EXPORTER_OTLP_ENDPOINT") {
        return Some((with_path(base), "OTEL_EXPORTER_OTLP_ENDPOINT".into()));
    }
    if endpoint_configured(args, env) {
        // Another signal has its own endpoint: this one was not asked for.
        return None;
    }
    let default = match protocol {
        OtlpProtocol::Grpc => "http://localhost:4317".to_string(),
        OtlpProtocol::HttpProtobuf => format!("http://localhost:4318{}", signal.http_path()),
    };
    Some((default, "the default endpoint".into()))
}

/// Checks the URL; a gRPC endpoint without a scheme gets `https://`, or `http://` when
/// `OTEL_EXPORTER_OTLP_{,SIGNAL_}INSECURE=true` (spec).
fn checked_endpoint(
    url: String,
    source_name: String,
    env: &Env,
    signal: Signal,
    protocol: OtlpProtocol,
) -> Result<String, OtlpConfigError> {
    let error = |reason: &str| OtlpConfigError::Endpoint {
        source_name: source_name.clone(),
        value: url.clone(),
        reason: reason.to_string(),
    };
    let url = if protocol == OtlpProtocol::Grpc && !url.contains("://") {
        let insecure =
            otlp_var(env, signal.var(), "INSECURE").is_some_and(|(_, v)| otel_env::is_true(v));
        format!("{}://{url}", if insecure { "http" } else { "https" })
    } else {
        url.clone()
    };
    let parsed = reqwest::Url::parse(&url).map_err(|e| error(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(error("the scheme must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(error("no host"));
    }
    Ok(url)
}

fn signal_settings(
    args: &ExportArgs,
    env: &Env,
    signal: Signal,
) -> Result<Option<SignalSettings>, OtlpConfigError> {
    if signal_disabled(env, signal) {
        return Ok(None);
    }
    let protocol = protocol(args, env, signal);
    let Some((url, source_name)) = endpoint(args, env, signal, protocol) else {
        return Ok(None);
    };
    let endpoint = checked_endpoint(url, source_name, env, signal, protocol)?;

    // The signal's header variable replaces the generic one; flags add to it and win.
    let mut headers = otlp_var(env, signal.var(), "HEADERS")
        .map(|(name, value)| otel_env::parse_key_value_list(&name, value))
        .unwrap_or_default();
    for (name, value) in &args.otlp_headers {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        headers.push((name.clone(), value.clone()));
    }

    let timeout = args
        .otlp_timeout
        .or_else(|| {
            let (name, value) = otlp_var(env, signal.var(), "TIMEOUT")?;
            otel_env::timeout_millis(&name, value)
        })
        .unwrap_or(DEFAULT_TIMEOUT);

    let compression = match otlp_var(env, signal.var(), "COMPRESSION") {
        None => Compression::None,
        Some((_, v)) if v.eq_ignore_ascii_case("gzip") => Compression::Gzip,
        Some((_, v)) if v.eq_ignore_ascii_case("none") => Compression::None,
        Some((name, v)) => {
            log::warn!("{name}={v} is not supported (gzip, none): sent uncompressed");
            Compression::None
        }
    };

    let tls = tls_settings(env, signal)?;
    if tls != TlsSettings::default() && !endpoint.starts_with("https://") {
        log::warn!(
            "OTLP {}: certificate variables are set but {endpoint} is not https: not used",
            signal.var().to_ascii_lowercase()
        );
    }
    Ok(Some(SignalSettings {
        protocol,
        endpoint,
        headers,
        timeout,
        compression,
        tls,
    }))
}

fn tls_settings(env: &Env, signal: Signal) -> Result<TlsSettings, OtlpConfigError> {
    let ca = otlp_var(env, signal.var(), "CERTIFICATE");
    let cert = otlp_var(env, signal.var(), "CLIENT_CERTIFICATE");
    let key = otlp_var(env, signal.var(), "CLIENT_KEY");
    let ca_pem = match ca {
        Some((var, path)) => Some(read_certificates(&var, path)?),
        None => None,
    };
    let identity = match (cert, key) {
        (None, None) => None,
        (Some((present, _)), None) => {
            return Err(OtlpConfigError::TlsPair {
                missing: present.replace("CLIENT_CERTIFICATE", "CLIENT_KEY"),
                present,
            });
        }
        (None, Some((present, _))) => {
            return Err(OtlpConfigError::TlsPair {
                missing: present.replace("CLIENT_KEY", "CLIENT_CERTIFICATE"),
                present,
            });
        }
        (Some((cert_var, cert_path)), Some((key_var, key_path))) => Some(ClientIdentity {
            cert_pem: read_certificates(&cert_var, cert_path)?,
            key_pem: read_private_key(&key_var, key_path)?,
        }),
    };
    Ok(TlsSettings { ca_pem, identity })
}

fn read_pem_file(var: &str, path: &str) -> Result<Vec<u8>, OtlpConfigError> {
    use std::io::Read as _;
    let error = |reason: String| OtlpConfigError::TlsFile {
        var: var.to_string(),
        path: path.to_string(),
        reason,
    };
    let file = std::fs::File::open(Path::new(path)).map_err(|e| error(e.to_string()))?;
    let metadata = file.metadata().map_err(|e| error(e.to_string()))?;
    if !metadata.is_file() {
        return Err(error("not a regular file".into()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| error(e.to_string()))?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(error(format!("larger than {MAX_PEM_FILE} bytes")));
    }
    Ok(bytes)
}

/// A PEM file holding at least one certificate, all of them well-formed.
fn read_certificates(var: &str, path: &str) -> Result<Vec<u8>, OtlpConfigError> {
    let bytes = read_pem_file(var, path)?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        cert.map_err(|e| OtlpConfigError::TlsFile {
            var: var.to_string(),
            path: path.to_string(),
            reason: format!("invalid PEM: {e}"),
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(OtlpConfigError::TlsFile {
            var: var.to_string(),
            path: path.to_string(),
            reason: "no PEM certificate in the file".into(),
        });
    }
    Ok(bytes)
}

/// A PEM file holding a private key (PKCS#8, PKCS#1 or SEC1).
fn read_private_key(var: &str, path: &str) -> Result<Vec<u8>, OtlpConfigError> {
    let bytes = read_pem_file(var, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| OtlpConfigError::TlsFile {
        var: var.to_string(),
        path: path.to_string(),
        reason: format!("no usable PEM private key: {e}"),
    })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn resolved(args: &ExportArgs, pairs: &[(&str, &str)]) -> OtlpSettings {
        resolve(args, &env(pairs)).expect("valid settings")
    }

    fn endpoints(s: &OtlpSettings) -> (Option<&str>, Option<&str>) {
        (
            s.traces.as_ref().map(|t| t.endpoint.as_str()),
            s.metrics.as_ref().map(|m| m.endpoint.as_str()),
        )
    }

    #[test]
    fn flag_endpoint_is_a_base_url_for_http_and_as_is_for_grpc() {
        let args = ExportArgs {
            otlp_endpoint: Some("http://collector:4318/".into()),
            ..ExportArgs::default()
        };
        let s = resolved(&args, &[]);
        assert_eq!(
            endpoints(&s),
            (
                Some("http://collector:4318/v1/traces"),
                Some("http://collector:4318/v1/metrics")
            )
        );
        let grpc = resolved(
            &args,
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
            ],
        );
        let metrics = grpc.metrics.expect("metrics");
        assert_eq!(metrics.protocol, OtlpProtocol::Grpc);
        assert_eq!(metrics.endpoint, "http://collector:4318/");
        assert_eq!(
            grpc.traces.expect("traces").protocol,
            OtlpProtocol::HttpProtobuf
        );
    }

    /// The signal's endpoint is used as it is, the generic one gets the signal's path, and a
    /// signal endpoint set alone exports that signal alone.
    #[test]
    fn signal_endpoints_follow_the_spec() {
        let args = ExportArgs::default();
        let traces_only = resolved(
            &args,
            &[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://tempo:4318/custom/path",
            )],
        );
        assert_eq!(
            endpoints(&traces_only),
            (Some("https://tempo:4318/custom/path"), None)
        );
        let metrics_only = resolved(
            &args,
            &[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://prom:4318")],
        );
        assert_eq!(endpoints(&metrics_only), (None, Some("http://prom:4318")));
        let both = resolved(
            &args,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/otlp/"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://t:4318/v1/traces",
                ),
            ],
        );
        assert_eq!(
            endpoints(&both),
            (
                Some("http://t:4318/v1/traces"),
                Some("http://c:4318/otlp/v1/metrics")
            )
        );
        // `--output otlp` with nothing configured: the spec's defaults.
        assert_eq!(
            endpoints(&resolved(&args, &[])),
            (
                Some("http://localhost:4318/v1/traces"),
                Some("http://localhost:4318/v1/metrics")
            )
        );
        assert_eq!(
            endpoints(&resolved(&args, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])),
            (Some("http://localhost:4317"), Some("http://localhost:4317"))
        );
        // OTEL_METRICS_EXPORTER=none turns metrics off.
        let no_metrics = resolved(
            &args,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_METRICS_EXPORTER", "none"),
            ],
        );
        assert_eq!(
            endpoints(&no_metrics),
            (Some("http://c:4318/v1/traces"), None)
        );
        // The flag wins over every variable.
        let flag = ExportArgs {
            otlp_endpoint: Some("http://flag:4318".into()),
            ..ExportArgs::default()
        };
        assert_eq!(
            endpoints(&resolved(
                &flag,
                &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env:1/x")]
            )),
            (
                Some("http://flag:4318/v1/traces"),
                Some("http://flag:4318/v1/metrics")
            )
        );
    }

    #[test]
    fn grpc_endpoints_without_a_scheme_use_tls_unless_insecure() {
        let args = ExportArgs {
            otlp_protocol: Some(OtlpProtocol::Grpc),
            ..ExportArgs::default()
        };
        let s = resolved(&args, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]);
        assert_eq!(
            endpoints(&s),
            (
                Some("https://collector:4317"),
                Some("https://collector:4317")
            )
        );
        let s = resolved(
            &args,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true"),
            ],
        );
        assert_eq!(
            endpoints(&s),
            (
                Some("http://collector:4317"),
                Some("https://collector:4317")
            )
        );
    }

    #[test]
    fn bad_endpoints_are_startup_errors() {
        for bad in ["not a url", "ftp://c:21", "http://"] {
            let e = resolve(
                &ExportArgs::default(),
                &env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", bad)]),
            );
            match e {
                Err(OtlpConfigError::Endpoint { source_name, .. }) => {
                    assert_eq!(source_name, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn headers_timeout_and_compression_precedence() {
        let args = ExportArgs {
            otlp_endpoint: Some("http://c:4318".into()),
            otlp_headers: vec![("X-Tenant".into(), "flag".into())],
            ..ExportArgs::default()
        };
        let s = resolved(
            &args,
            &[
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=env,x-generic=1"),
                (
                    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
                    "x-metrics=a%20b,broken",
                ),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "oops"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "none"),
            ],
        );
        let traces = s.traces.expect("traces");
        let metrics = s.metrics.expect("metrics");
        assert_eq!(
            traces.headers,
            [
                ("x-generic".to_string(), "1".to_string()),
                ("X-Tenant".to_string(), "flag".to_string())
            ]
        );
        // The signal's variable replaces the generic one.
        assert_eq!(
            metrics.headers,
            [
                ("x-metrics".to_string(), "a b".to_string()),
                ("X-Tenant".to_string(), "flag".to_string())
            ]
        );
        assert_eq!(traces.timeout, Duration::from_millis(2500));
        // An invalid signal value is ignored, not replaced by the generic one.
        assert_eq!(metrics.timeout, DEFAULT_TIMEOUT);
        assert_eq!(traces.compression, Compression::Gzip);
        assert_eq!(metrics.compression, Compression::None);
        let flag_timeout = ExportArgs {
            otlp_timeout: Some(Duration::from_secs(3)),
            ..args
        };
        let s = resolved(&flag_timeout, &[("OTEL_EXPORTER_OTLP_TIMEOUT", "100")]);
        assert_eq!(s.traces.expect("traces").timeout, Duration::from_secs(3));
        let unknown = resolved(
            &ExportArgs::default(),
            &[("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd")],
        );
        assert_eq!(
            unknown.traces.expect("traces").compression,
            Compression::None
        );
    }

    #[test]
    fn certificate_files_are_checked_at_startup() {
        let dir = std::env::temp_dir().join(format!("llmtap-otlp-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        let junk_path = dir.join("junk.pem");
        std::fs::write(&cert_path, cert.pem()).expect("write");
        std::fs::write(&key_path, key.serialize_pem()).expect("write");
        std::fs::write(&junk_path, "not a certificate").expect("write");
        let p = |p: &std::path::Path| p.display().to_string();
        let (cert_s, key_s, junk_s) = (p(&cert_path), p(&key_path), p(&junk_path));

        let s = resolved(
            &ExportArgs::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", &cert_s),
                ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", &cert_s),
                ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", &key_s),
            ],
        );
        let traces = s.traces.expect("traces");
        assert_eq!(traces.tls.ca_pem.as_deref(), Some(cert.pem().as_bytes()));
        let identity = traces.tls.identity.expect("client identity");
        assert_eq!(identity.key_pem, key.serialize_pem().as_bytes());
        let metrics = s.metrics.expect("metrics");
        assert!(metrics.tls.ca_pem.is_some() && metrics.tls.identity.is_none());

        let error = |pairs: &[(&str, &str)]| {
            resolve(&ExportArgs::default(), &env(pairs))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let missing = error(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")]);
        assert!(
            missing.starts_with("OTEL_EXPORTER_OTLP_CERTIFICATE=/nonexistent/ca.pem: "),
            "{missing}"
        );
        let junk = error(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", &junk_s)]);
        assert!(junk.contains("no PEM certificate"), "{junk}");
        let not_a_key = error(&[
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert_s),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &cert_s),
        ]);
        assert!(
            not_a_key.contains("no usable PEM private key"),
            "{not_a_key}"
        );
        let directory = error(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/")]);
        assert!(directory.contains("not a regular file"), "{directory}");
        let half = error(&[("OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", &key_s)]);
        assert_eq!(
            half,
            "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY is set but \
             OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE is not: a client certificate needs its key"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
