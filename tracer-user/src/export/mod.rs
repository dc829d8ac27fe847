//! Stage 5, export: call records → spans and metrics on the chosen outputs (live console,
//! JSON Lines, OTLP).
//!
//! The daemon builds one [`Exporters`] from the flattened [`ExportArgs`], calls
//! [`Exporters::export`] for every finished call, [`Exporters::record_health`] with its
//! counters from time to time, and [`Exporters::shutdown`] on SIGINT/SIGTERM.

pub mod attributes;
pub mod clock;
pub mod console;
pub mod content;
pub mod cost;
pub mod jsonl;
pub mod metrics;
pub mod metrics_server;
pub mod openinference;
pub mod otel_env;
pub mod otlp;
pub mod otlp_client;
pub mod otlp_config;
pub mod prometheus;
pub mod redact;
pub mod resource;
pub mod semconv;
pub mod span;

use std::{
    collections::HashMap, io::Write, net::SocketAddr, path::PathBuf, str::FromStr, sync::Arc,
    time::Duration,
};

pub use clock::ClockOffset;
pub use cost::{ModelPrice, PriceTable};
pub use metrics::{HealthCounters, HealthDetail, HealthSnapshot};
pub use metrics_server::Readiness;
pub use otlp::OtlpProtocol;
pub use span::CallSpan;

use crate::genai::{AgentRecord, CallRecord, Operation};
use console::Console;
use jsonl::JsonlWriter;
use metrics_server::MetricsServer;
use otlp::OtlpPipeline;
use resource::ProcessResources;
use span::{ContentCapture, SpanBuilder};

/// Default cap of each content attribute.
pub const DEFAULT_MAX_CONTENT_BYTES: usize = 16 * 1024;

/// One `--output` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputSpec {
    Console,
    Otlp,
    /// `jsonl=PATH`; `None` is `jsonl=-` (stdout).
    Jsonl(Option<PathBuf>),
}

impl FromStr for OutputSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "console" => Ok(Self::Console),
            "otlp" => Ok(Self::Otlp),
            "jsonl" | "jsonl=-" => Ok(Self::Jsonl(None)),
            _ => match s.strip_prefix("jsonl=") {
                Some(path) if !path.is_empty() => Ok(Self::Jsonl(Some(PathBuf::from(path)))),
                _ => Err(format!(
                    "unknown output {s:?}: expected console, otlp, jsonl=PATH or jsonl=-"
                )),
            },
        }
    }
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// `500ms`, `10s`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, scale_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (s, 1000.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 500ms, 10s, 2m)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(value * scale_ms / 1000.0))
}

/// Export flags; the CLI flattens them into its command.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct ExportArgs {
    /// Where finished calls go: `console`, `otlp`, `jsonl=PATH` (`jsonl=-`: stdout). Repeat to
    /// combine. Default: console; OTLP is added when --otlp-endpoint or
    /// OTEL_EXPORTER_OTLP_{,TRACES_,METRICS_}ENDPOINT is set.
    #[arg(long = "output", value_name = "OUTPUT")]
    pub outputs: Vec<OutputSpec>,

    /// `service.name` of every traced call's span (default: the Kubernetes workload, else the
    /// traced process's executable name). OTEL_SERVICE_NAME names llmtap's own metrics, not
    /// the traced processes.
    #[arg(long, value_name = "NAME")]
    pub service_name: Option<String>,

    /// Record message content (gen_ai.input.messages, gen_ai.output.messages, ...). Also
    /// enabled by OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true|SPAN_ONLY|SPAN_AND_EVENT.
    #[arg(long)]
    pub capture_content: bool,

    /// Export each traced process's command line as `process.command_line` (credentials it
    /// is known to hold are redacted; others may not be).
    #[arg(long)]
    pub export_command_line: bool,

    /// Cut each content attribute to this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_CONTENT_BYTES)]
    pub max_content_bytes: usize,

    /// OTLP endpoint (gRPC `http://host:4317`; HTTP base URL `http://host:4318`, to which
    /// `/v1/traces` and `/v1/metrics` are appended). Default: OTEL_EXPORTER_OTLP_* variables.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// OTLP transport (default: OTEL_EXPORTER_OTLP_{TRACES_,METRICS_,}PROTOCOL, else
    /// http/protobuf).
    #[arg(long, value_enum, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<OtlpProtocol>,

    /// Extra OTLP header/metadata `KEY=VALUE` (repeatable), combined with
    /// OTEL_EXPORTER_OTLP_{,TRACES_,METRICS_}HEADERS.
    #[arg(long = "otlp-header", value_name = "KEY=VALUE", value_parser = parse_header)]
    pub otlp_headers: Vec<(String, String)>,

    /// OTLP export timeout (e.g. `10s`; default: OTEL_EXPORTER_OTLP_{TRACES_,METRICS_,}TIMEOUT
    /// in milliseconds, else 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub otlp_timeout: Option<Duration>,

    /// JSON or TOML file of model prices extending/overriding the built-in table.
    #[arg(long, value_name = "PATH")]
    pub price_file: Option<PathBuf>,

    /// How often the console prints its per-process/model summary (`0s`: only at exit).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub summary_interval: Duration,

    /// Serve Prometheus metrics on `/metrics`, and `/healthz` and `/readyz`, at this address
    /// (e.g. `0.0.0.0:9464`, `127.0.0.1:9464`).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Also emit the attributes of these conventions on every span: `openinference` (what
    /// Arize Phoenix and Arize AX show: `openinference.span.kind`, `llm.*`, and with content
    /// capture `input.value`/`output.value` and the flattened messages).
    #[arg(long, value_enum, value_name = "CONVENTIONS")]
    pub compat: Option<openinference::Compat>,

    /// With `--compat openinference`: the `openinference.project.name` (Phoenix project) of
    /// every traced process (default: the process's `service.name`).
    #[arg(long, value_name = "NAME", requires = "compat")]
    pub openinference_project: Option<String>,
}

impl Default for ExportArgs {
    fn default() -> Self {
        Self {
            outputs: Vec::new(),
            service_name: None,
            capture_content: false,
            export_command_line: false,
            max_content_bytes: DEFAULT_MAX_CONTENT_BYTES,
            otlp_endpoint: None,
            otlp_protocol: None,
            otlp_headers: Vec::new(),
            otlp_timeout: None,
            price_file: None,
            summary_interval: Duration::from_secs(60),
            metrics_listen: None,
            compat: None,
            openinference_project: None,
        }
    }
}

/// Errors setting up the exporters.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    PriceFile(#[from] cost::PriceFileError),
    #[error("cannot open JSONL output {path}: {source}")]
    OpenJsonl {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Otlp(#[from] otlp::OtlpError),
    #[error(transparent)]
    MetricsListen(#[from] metrics_server::MetricsListenError),
}

/// What [`Exporters::with_options`] takes besides the flags; the defaults are the real system.
pub struct ExporterOptions {
    pub clock: ClockOffset,
    /// Root of the `/proc` tree processes are read from.
    pub proc_root: PathBuf,
    /// Where console (and `jsonl=-`) output goes; default: stdout.
    pub stdout: Box<dyn Write + Send>,
    /// Environment variables consulted (OTEL_*): default, the process environment. Every
    /// OTLP setting is resolved from these and the flags.
    pub env: HashMap<String, String>,
    /// Metric push interval (default: OTEL_METRIC_EXPORT_INTERVAL, else 60s).
    pub metric_interval: Option<Duration>,
    /// Pod metadata for `k8s.*` attributes (none outside Kubernetes).
    pub kubernetes: Option<crate::k8s::K8sMetadata>,
}

impl Default for ExporterOptions {
    fn default() -> Self {
        Self {
            clock: ClockOffset::from_system(),
            proc_root: PathBuf::from("/proc"),
            stdout: Box::new(std::io::stdout()),
            env: otel_env::process_env(),
            metric_interval: None,
            kubernetes: None,
        }
    }
}

impl ExportArgs {
    /// Whether message content is captured: the flag, or
    /// OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT in the process environment. The
    /// pipeline only extracts content when this is on.
    pub fn content_capture(&self) -> bool {
        content_capture_enabled(self.capture_content, &otel_env::process_env())
    }
}

/// Content capture from the flag and OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT.
fn content_capture_enabled(flag: bool, env: &HashMap<String, String>) -> bool {
    if flag {
        return true;
    }
    match env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT") {
        Some(v) => {
            let v = v.trim();
            v.eq_ignore_ascii_case("true")
                || v.eq_ignore_ascii_case("span_only")
                || v.eq_ignore_ascii_case("span_and_event")
        }
        None => false,
    }
}

/// The resolved list of outputs.
fn resolve_outputs(args: &ExportArgs, env: &HashMap<String, String>) -> Vec<OutputSpec> {
    let mut outputs = args.outputs.clone();
    let otlp_configured = otlp_config::endpoint_configured(args, env);
    if outputs.is_empty() {
        outputs.push(OutputSpec::Console);
    }
    if otlp_configured && !outputs.contains(&OutputSpec::Otlp) {
        outputs.push(OutputSpec::Otlp);
    }
    outputs.dedup();
    outputs
}

/// All outputs of finished calls.
pub struct Exporters {
    resources: ProcessResources,
    spans: SpanBuilder,
    prices: PriceTable,
    console: Option<Console>,
    jsonl: Option<JsonlWriter>,
    otlp: Option<OtlpPipeline>,
    /// `--metrics-listen`: the registry and the endpoint serving it.
    prometheus: Option<(Arc<prometheus::PrometheusMetrics>, MetricsServer)>,
    readiness: Arc<Readiness>,
    write_failures: u64,
}

impl Exporters {
    /// Exporters for the real system (stdout, `/proc`, process environment). Must be called
    /// inside a tokio runtime when OTLP is on.
    pub async fn new(args: &ExportArgs) -> Result<Self, ExportError> {
        Self::with_options(args, ExporterOptions::default()).await
    }

    pub async fn with_options(
        args: &ExportArgs,
        options: ExporterOptions,
    ) -> Result<Self, ExportError> {
        let ExporterOptions {
            clock,
            proc_root,
            stdout,
            env,
            metric_interval,
            kubernetes,
        } = options;
        let prices = match &args.price_file {
            Some(path) => PriceTable::with_file(path)?,
            None => PriceTable::builtin(),
        };
        let outputs = resolve_outputs(args, &env);
        let semconv = semconv::Semconv::from_env(&env);
        let configured_attributes = otel_env::resource_attributes(&env);
        let mut stdout = Some(stdout);
        let mut console = None;
        let mut jsonl = None;
        let mut otlp = None;
        let summary_interval = (!args.summary_interval.is_zero()).then_some(args.summary_interval);
        for output in &outputs {
            match output {
                OutputSpec::Console => {
                    if let Some(out) = stdout.take() {
                        console = Some(Console::new(out, summary_interval));
                    } else {
                        log::warn!("console output ignored: stdout already carries JSONL");
                    }
                }
                OutputSpec::Jsonl(None) => match stdout.take() {
                    Some(out) => jsonl = Some(JsonlWriter::new(out)),
                    None => log::warn!("jsonl=- ignored: stdout already carries the console"),
                },
                OutputSpec::Jsonl(Some(path)) => {
                    let file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|source| ExportError::OpenJsonl {
                            path: path.display().to_string(),
                            source,
                        })?;
                    jsonl = Some(JsonlWriter::new(Box::new(std::io::BufWriter::new(file))));
                }
                OutputSpec::Otlp => {
                    let settings =
                        otlp_config::resolve(args, &env).map_err(otlp::OtlpError::from)?;
                    let agent = resource::agent_resource(
                        otel_env::agent_service_name(&env, &configured_attributes),
                        crate::host::local_host_name().as_deref(),
                        kubernetes.as_ref().map(crate::k8s::K8sMetadata::node_name),
                        &configured_attributes,
                    );
                    otlp = Some(OtlpPipeline::start(
                        &settings,
                        agent,
                        metric_interval,
                        semconv,
                    )?);
                }
            }
        }
        let readiness = Arc::new(Readiness::default());
        let prometheus = match args.metrics_listen {
            Some(addr) => {
                let metrics = Arc::new(prometheus::PrometheusMetrics::with_semconv(semconv));
                let server =
                    MetricsServer::start(addr, Arc::clone(&metrics), Arc::clone(&readiness))?;
                Some((metrics, server))
            }
            None => None,
        };
        let content = ContentCapture {
            enabled: content_capture_enabled(args.capture_content, &env),
            max_bytes: args.max_content_bytes,
        };
        let openinference = args.compat == Some(openinference::Compat::OpenInference);
        log::info!(
            "export outputs: {outputs:?}; content capture {}; GenAI conventions {}{}",
            if content.enabled { "on" } else { "off" },
            if semconv.is_latest() {
                "latest experimental (OTEL_SEMCONV_STABILITY_OPT_IN)"
            } else {
                "v1.41"
            },
            if openinference {
                ", with OpenInference attributes"
            } else {
                ""
            }
        );
        let project = openinference.then(|| match &args.openinference_project {
            Some(name) => openinference::ProjectName::Named(name.as_str().into()),
            None => openinference::ProjectName::ServiceName,
        });
        Ok(Self {
            resources: ProcessResources::new(proc_root, args.service_name.clone())
                .with_command_line(args.export_command_line)
                .with_kubernetes(kubernetes)
                .with_configured_attributes(&configured_attributes)
                .with_openinference_project(project),
            spans: SpanBuilder::new(clock, content)
                .with_semconv(semconv)
                .with_openinference(openinference)
                .with_command_line(args.export_command_line),
            prices,
            console,
            jsonl,
            otlp,
            prometheus,
            readiness,
            write_failures: 0,
        })
    }

    fn note_write_failure(&mut self, output: &str, error: &std::io::Error) {
        self.write_failures += 1;
        if self.write_failures.is_power_of_two() {
            log::warn!(
                "{output} output failed ({} failures so far): {error}",
                self.write_failures
            );
        }
    }

    /// Sends one finished call to every output. Never waits on the network: OTLP spans are
    /// queued (and dropped, counted, when the queue is full).
    pub fn export(&mut self, record: &CallRecord) {
        let resource = self.resources.get(&record.process);
        let cost = span::billed_model(record).and_then(|model| {
            self.prices.cost_usd(
                model,
                &record.usage,
                record.operation == Operation::Embeddings,
            )
        });
        if let Some((metrics, _)) = &self.prometheus {
            let workload = resource
                .kubernetes
                .as_ref()
                .map(|pod| attributes::from_strings(pod.metric_attributes()))
                .unwrap_or_default();
            metrics.record_call(record, &workload, cost);
        }
        let span = self.spans.build(record, resource, cost);
        if let Some(console) = &mut self.console
            && let Err(e) = console.write_call(&span)
        {
            self.note_write_failure("console", &e);
        }
        if let Some(jsonl) = &mut self.jsonl
            && let Err(e) = jsonl.write_span(&span)
        {
            self.note_write_failure("JSONL", &e);
        }
        if let Some(otlp) = &self.otlp {
            otlp.export(span, record);
        }
    }

    /// Sends an agent turn or tool execution span to every output (no metrics).
    pub fn export_agent(&mut self, record: &AgentRecord) {
        let process = match record {
            AgentRecord::Turn(t) => &t.process,
            AgentRecord::Tool(t) => &t.process,
            AgentRecord::Mcp(m) => &m.process,
        };
        let resource = self.resources.get(process);
        let span = self.spans.build_agent(record, resource);
        if let Some(console) = &mut self.console
            && let Err(e) = console.write_agent(&span)
        {
            self.note_write_failure("console", &e);
        }
        if let Some(jsonl) = &mut self.jsonl
            && let Err(e) = jsonl.write_span(&span)
        {
            self.note_write_failure("JSONL", &e);
        }
        if let Some(otlp) = &self.otlp {
            otlp.export_span(span);
        }
    }

    /// Reads a traced process's resource (executable, command line, container) now, while it
    /// runs: a short-lived client may have exited by the time its call completes.
    pub fn observe_process(&mut self, pid: u32, comm: &str) {
        self.resources.get(&crate::genai::ProcessRef {
            pid,
            tid: pid,
            comm: comm.to_string(),
        });
    }

    /// Writes what the JSONL output buffered (once per batch of calls, not per call).
    pub fn flush_outputs(&mut self) {
        if let Some(jsonl) = &mut self.jsonl
            && let Err(e) = jsonl.flush()
        {
            self.note_write_failure("JSONL", &e);
        }
    }

    /// A traced process exited: its pid's next lookup checks whether it names another process.
    pub fn process_exited(&mut self, pid: u32) {
        self.resources.process_exited(pid);
    }

    /// Latest totals of the daemon's health counters (OTLP metrics, console summary).
    pub fn record_health(&mut self, snapshot: &HealthSnapshot) {
        if let Some(console) = &mut self.console {
            console.set_health(*snapshot);
        }
        if let Some(otlp) = &self.otlp {
            otlp.record_health(snapshot);
        }
        if let Some((metrics, _)) = &self.prometheus {
            metrics.record_health(snapshot);
            if let Some(otlp) = &self.otlp {
                metrics.record_span_losses(otlp.losses());
            }
        }
        // The daemon reports after each turn of its loop: `/readyz` reads it.
        self.readiness.report();
    }

    /// What `/readyz` answers from; the daemon marks it attached once capture runs.
    pub fn readiness(&self) -> Arc<Readiness> {
        Arc::clone(&self.readiness)
    }

    /// Where `--metrics-listen` serves (the bound port when 0 was asked for).
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.prometheus.as_ref().map(|(_, s)| s.local_addr())
    }

    /// Spans the OTLP output lost: queue full, export failed, or rejected by the collector.
    pub fn dropped_spans(&self) -> u64 {
        self.otlp.as_ref().map_or(0, OtlpPipeline::dropped_spans)
    }

    /// Flushes every output: final console summary, JSONL buffers, all queued OTLP spans and a
    /// last metric push.
    pub async fn shutdown(mut self) {
        if let Some(console) = &mut self.console
            && let Err(e) = console.finish()
        {
            log::warn!("console output failed at shutdown: {e}");
        }
        if let Some(jsonl) = &mut self.jsonl
            && let Err(e) = jsonl.flush()
        {
            log::warn!("JSONL output failed at shutdown: {e}");
        }
        if let Some(otlp) = self.otlp.take() {
            otlp.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        export: ExportArgs,
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "llmtap",
            "--output",
            "console",
            "--output",
            "jsonl=/tmp/x.jsonl",
            "--output",
            "otlp",
            "--otlp-protocol",
            "http/protobuf",
            "--otlp-header",
            "x-tenant=a=b",
            "--otlp-timeout",
            "500ms",
            "--capture-content",
            "--max-content-bytes",
            "100",
            "--summary-interval",
            "2m",
            "--service-name",
            "svc",
        ]);
        let args = cli.map(|c| c.export).unwrap_or_default();
        assert_eq!(
            args.outputs,
            [
                OutputSpec::Console,
                OutputSpec::Jsonl(Some("/tmp/x.jsonl".into())),
                OutputSpec::Otlp
            ]
        );
        assert_eq!(args.otlp_protocol, Some(OtlpProtocol::HttpProtobuf));
        assert_eq!(
            args.otlp_headers,
            [("x-tenant".to_string(), "a=b".to_string())]
        );
        assert_eq!(args.otlp_timeout, Some(Duration::from_millis(500)));
        assert!(args.capture_content);
        assert_eq!(args.max_content_bytes, 100);
        assert_eq!(args.summary_interval, Duration::from_secs(120));
        assert_eq!(args.service_name.as_deref(), Some("svc"));
        assert!(Cli::try_parse_from(["llmtap", "--output", "kafka"]).is_err());
        let compat = Cli::try_parse_from([
            "llmtap",
            "--compat",
            "openinference",
            "--openinference-project",
            "shop",
        ])
        .map(|c| c.export)
        .unwrap_or_default();
        assert_eq!(compat.compat, Some(openinference::Compat::OpenInference));
        assert_eq!(compat.openinference_project.as_deref(), Some("shop"));
        assert_eq!(ExportArgs::default().compat, None, "off by default");
        assert!(Cli::try_parse_from(["llmtap", "--compat", "langfuse"]).is_err());
        // A project without the OpenInference attributes would be silently ignored.
        assert!(Cli::try_parse_from(["llmtap", "--openinference-project", "shop"]).is_err());
        assert!(Cli::try_parse_from(["llmtap", "--otlp-protocol", "http/json"]).is_err());
    }

    /// OTEL_SERVICE_NAME (the DaemonSet sets it) names llmtap's own telemetry: it must not
    /// feed `--service-name`, which renames every traced process.
    #[test]
    fn otel_service_name_is_not_the_service_name_flag() {
        use clap::CommandFactory as _;
        let command = Cli::command();
        let flag = command
            .get_arguments()
            .find(|a| a.get_id() == "service_name")
            .expect("--service-name");
        assert_eq!(flag.get_env(), None);
    }

    #[test]
    fn outputs_default_to_console_and_otlp_follows_the_endpoint_variable() {
        let args = ExportArgs::default();
        assert_eq!(resolve_outputs(&args, &env(&[])), [OutputSpec::Console]);
        assert_eq!(
            resolve_outputs(
                &args,
                &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])
            ),
            [OutputSpec::Console, OutputSpec::Otlp]
        );
        // A signal's endpoint alone turns OTLP on too.
        for var in [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        ] {
            assert_eq!(
                resolve_outputs(&args, &env(&[(var, "http://c:4318/v1/x")])),
                [OutputSpec::Console, OutputSpec::Otlp],
                "{var}"
            );
        }
        let jsonl_only = ExportArgs {
            outputs: vec![OutputSpec::Jsonl(None)],
            ..ExportArgs::default()
        };
        assert_eq!(
            resolve_outputs(&jsonl_only, &env(&[])),
            [OutputSpec::Jsonl(None)]
        );
    }

    #[test]
    fn content_switch_values() {
        let var = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";
        for on in ["true", "TRUE", "SPAN_ONLY", "span_and_event"] {
            assert!(content_capture_enabled(false, &env(&[(var, on)])), "{on}");
        }
        for off in ["false", "NO_CONTENT", "EVENT_ONLY", ""] {
            assert!(
                !content_capture_enabled(false, &env(&[(var, off)])),
                "{off}"
            );
        }
        assert!(content_capture_enabled(true, &env(&[(var, "false")])));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
