//! The `llmtap` binary: CLI edge (anyhow errors, signal handling) around the library stages.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use llmtap::budget::{MemoryBudget, MemoryGuard, resident_bytes};
use llmtap::capture::clock::WallClock;
use llmtap::capture::printer::{CaptureFormat, CapturePrinter};
use llmtap::capture::{CaptureCounters, CaptureSession};
use llmtap::cli::{CaptureArgs, PipelineArgs};
use llmtap::daemon::{CallSink, Daemon, DaemonHealth, warn_about_losses};
use llmtap::export::{ExportArgs, Exporters, HealthDetail, HealthSnapshot};
use llmtap::genai::CallRecord;
use llmtap::pipeline::Pipeline;
use tokio::signal::unix::{SignalKind, signal};

/// llmtap: see every LLM call a Linux host makes, without touching the application.
///
/// Without a subcommand it runs the tracer (same as `llmtap run`).
#[derive(Parser, Debug)]
#[command(name = "llmtap", version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

/// Options of the tracer daemon.
#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    #[command(flatten)]
    capture: CaptureArgs,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    export: ExportArgs,
    #[command(flatten)]
    kubernetes: llmtap::k8s::KubernetesArgs,
    /// Read `llmtap run` flags from this TOML file (keys are flag names); flags and the
    /// environment win over it.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Trace LLM calls and export them (console view by default; JSONL; OTLP).
    Run(Box<RunArgs>),
    /// Print captured TLS plaintext records as they happen (credentials masked).
    Capture {
        #[command(flatten)]
        capture: CaptureArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = CaptureFormat::Text)]
        format: CaptureFormat,
        /// Bytes of each record shown in text format.
        #[arg(long, value_name = "BYTES", default_value_t = 200)]
        preview_bytes: usize,
    },
    /// List processes and the TLS libraries or binaries llmtap would hook (or why not).
    Targets {
        /// Only these processes (repeatable).
        #[arg(long = "pid", value_name = "PID")]
        pids: Vec<u32>,
        /// Also list processes with nothing to hook.
        #[arg(long)]
        all: bool,
    },
    /// Check that this host can run llmtap; prints a fix for each failing check.
    Doctor,
}

fn main() -> anyhow::Result<()> {
    // Buffers of 128 KiB and more (call bodies, sections of executables being analysed) are
    // mapped on their own and handed back to the kernel when freed. glibc would otherwise
    // raise its threshold after the first such free and keep later ones in the heap, where
    // the resident size stays at its peak (`--memory-limit` measures it).
    // SAFETY: mallopt only changes the allocator's tuning; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    llmtap::capture::hold_guard::run_if_requested();
    let cli = with_config_file(Cli::parse())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Run(Box::new(cli.run))) {
            Command::Run(args) => run_daemon(*args).await,
            Command::Capture {
                capture,
                format,
                preview_bytes,
            } => run_capture(capture, format, preview_bytes).await,
            Command::Targets { pids, all } => print_targets(&pids, all),
            Command::Doctor => {
                let checks = llmtap::doctor::run_checks();
                print!("{}", llmtap::doctor::render(&checks));
                if checks
                    .iter()
                    .any(|c| c.status == llmtap::doctor::Status::Fail)
                {
                    anyhow::bail!("some checks failed");
                }
                Ok(())
            }
        }
    })
}

/// `llmtap run --config FILE`: parses the command line again with the file's settings that
/// neither a flag nor the environment sets placed before it (precedence: flag > environment >
/// file > default; see `llmtap::config`).
fn with_config_file(cli: Cli) -> anyhow::Result<Cli> {
    let path = match &cli.command {
        Some(Command::Run(run)) => run.config.clone(),
        None => cli.run.config.clone(),
        Some(_) => None,
    };
    let Some(path) = path else {
        return Ok(cli);
    };
    let table = llmtap::config::read(&path)?;
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let command = Cli::command();
    let matches = command.clone().get_matches_from(&argv);
    let (run_command, run_matches) = match matches.subcommand() {
        Some(("run", sub)) => (command.find_subcommand("run").cloned(), sub),
        _ => (Some(command.clone()), &matches),
    };
    let run_command = run_command.context("the run command")?;
    let env = |name: &str| std::env::var(name).ok();
    let file = llmtap::config::file_arguments(&run_command, run_matches, &table, &env, &path)?;
    for (key, why) in &file.overridden {
        log::info!("{}: {key} left out: set by {why:?}", path.display());
    }
    // [argv0, run, file settings..., the command line without its `run`].
    let mut full = vec![argv[0].clone(), "run".into()];
    full.extend(file.args);
    let rest = &argv[1..];
    let rest = match rest.first() {
        Some(first) if first == "run" => &rest[1..],
        _ => rest,
    };
    full.extend(rest.iter().cloned());
    Cli::try_parse_from(&full).map_err(|e| {
        anyhow::anyhow!(
            "in the settings of {} or on the command line: {}",
            path.display(),
            e.to_string().trim_end()
        )
    })
}

/// Hands finished calls and health totals to the exporters.
struct ExportSink<'a>(&'a mut Exporters);

impl CallSink for ExportSink<'_> {
    fn export(&mut self, record: &CallRecord) {
        self.0.export(record);
    }

    fn export_agent(&mut self, record: &llmtap::genai::AgentRecord) {
        self.0.export_agent(record);
    }

    fn process_seen(&mut self, pid: u32, comm: &str) {
        self.0.observe_process(pid, comm);
    }

    fn process_exited(&mut self, pid: u32) {
        self.0.process_exited(pid);
    }

    fn batch_done(&mut self) {
        self.0.flush_outputs();
    }

    fn health(&mut self, health: &DaemonHealth) {
        let p = &health.pipeline;
        self.0.record_health(&HealthSnapshot {
            capture_events: health.capture.records,
            capture_bytes: health.capture.bytes,
            ring_buffer_drops: health.capture.lost_records(),
            parse_errors: p.http_parse_errors
                + p.body_parse_errors
                + p.websocket_errors
                + health.capture.decode_errors,
            detail: HealthDetail {
                ring_full_records: health.capture.ringbuf_dropped_records,
                ring_full_closes: health.capture.ringbuf_dropped_close,
                ring_full_exits: health.capture.ringbuf_dropped_process,
                unreadable_records: health.capture.read_user_failed,
                truncated_captures: health.capture.truncated_calls,
                filtered_calls: health.capture.filtered_calls,
                filtered_bytes: health.capture.filtered_bytes,
                inflight_table_full: health.capture.inflight_table_full,
                decode_errors: health.capture.decode_errors,
                held_processes: health.capture.held_processes,
                duplicate_records: health.duplicate_records,
                calls_dropped_by_gap: p.dropped_by_gap,
                http2_streams_skipped: p.http2_streams_skipped,
                websocket_gaps: p.websocket_gaps,
                evicted_connections: p.evicted_connections,
                open_connections: p.open_connections,
                calls_in_flight: p.calls_in_flight,
            },
        });
    }
}

async fn run_daemon(args: RunArgs) -> anyhow::Result<()> {
    let kubernetes = llmtap::k8s::K8sMetadata::start(&args.kubernetes)
        .await
        .context("starting the Kubernetes pod watch (--kubernetes on)")?;
    let options = llmtap::export::ExporterOptions {
        kubernetes,
        ..Default::default()
    };
    let mut exporters = Exporters::with_options(&args.export, options)
        .await
        .context("setting up the exporters")?;
    let session =
        CaptureSession::start(&args.capture.session_config()).context("starting capture")?;
    exporters.readiness().set_attached();
    log::info!(
        "tracing LLM calls through {} hooked file(s); Ctrl-C to stop",
        session.tracer.attached_paths().count()
    );
    let budget = MemoryBudget::unlimited();
    let memory_guard = match args.pipeline.memory_limit {
        0 => None,
        limit => {
            let resident = resident_bytes().unwrap_or(0);
            let guard = MemoryGuard::new(limit, resident, &budget)?;
            log::info!(
                "--memory-limit {limit} bytes: call bodies may hold {} bytes together",
                guard.body_limit()
            );
            Some(guard)
        }
    };
    let pipeline = Pipeline::with_budget(
        args.pipeline.pipeline_config(args.export.content_capture()),
        budget,
    );
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    };
    let health = {
        let mut sink = ExportSink(&mut exporters);
        let mut daemon = Daemon::new(pipeline);
        if let Some(guard) = memory_guard {
            daemon = daemon.with_memory_guard(guard);
        }
        llmtap::daemon::run(session, daemon, &mut sink, shutdown)
            .await
            .context("reading captured events")?
    };
    // Flush every exporter (OTLP batches included) before exiting.
    exporters.shutdown().await;
    log::info!(
        "{} calls exported; captured {} records ({} bytes), lost records: {}, HTTP parse errors: {}, new processes held until hooked: {}, calls with a body cut by a size cap or --memory-limit: {} (bodies cut for memory: {})",
        health.calls_exported,
        health.capture.records,
        health.capture.bytes,
        health.capture.lost_records(),
        health.pipeline.http_parse_errors,
        health.capture.held_processes,
        health.pipeline.truncated_calls,
        health.pipeline.budget_refusals,
    );
    log_socket_classes(&health.capture);
    log_mcp_stdio(&health.capture, &health.pipeline);
    Ok(())
}

async fn run_capture(
    args: CaptureArgs,
    format: CaptureFormat,
    preview_bytes: usize,
) -> anyhow::Result<()> {
    let mut session = CaptureSession::start(&args.session_config()).context("starting capture")?;
    log::info!(
        "capturing TLS plaintext from {} hooked file(s); Ctrl-C to stop",
        session.tracer.attached_paths().count()
    );
    let mut printer = CapturePrinter::new(format, preview_bytes, WallClock::measure());
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut report_timer = tokio::time::interval(Duration::from_secs(5));
    let mut reported = CaptureCounters::default();
    let mut events = Vec::new();
    let stdout = std::io::stdout();
    loop {
        tokio::select! {
            result = session.next_events(&mut events) => {
                result.context("reading the ring buffer")?;
                let mut out = stdout.lock();
                for event in events.drain(..) {
                    if let Err(err) = printer.print(&event, &mut out) {
                        // A closed pipe (e.g. `| head`) ends the capture quietly.
                        if err.kind() == std::io::ErrorKind::BrokenPipe {
                            return Ok(());
                        }
                        return Err(err).context("writing to stdout");
                    }
                }
                out.flush().ok();
            }
            _ = report_timer.tick() => {
                reported = warn_about_losses(&session.tracer.counters(), reported);
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    let counters = session.tracer.counters();
    warn_about_losses(&counters, reported);
    log::info!(
        "captured {} records ({} bytes) from {} successful TLS calls; lost records: {}, calls truncated at the cap: {}",
        counters.records,
        counters.bytes,
        counters.calls,
        counters.lost_records(),
        counters.truncated_calls
    );
    log_socket_classes(&counters);
    Ok(())
}

/// How the kernel classified the TCP connections it saw (traced processes only).
fn log_socket_classes(c: &CaptureCounters) {
    log::info!(
        "filtered in the kernel: {} calls ({} bytes) of {} muted TLS connections (server sides, \
         not HTTP, HTTP/1 clients between requests that are not LLM calls); {} mutes found \
         stale, {} ended by a new request",
        c.filtered_calls,
        c.filtered_bytes,
        c.connections_muted,
        c.mutes_stale,
        c.mutes_resumed
    );
    log::info!(
        "TCP connections: {} plain HTTP copied ({} of them ignored after a first request that \
         was not an LLM call), {} ignored at their first bytes, {} TLS",
        c.plain_http_connections,
        c.plain_ignored_later,
        c.plain_ignored_connections,
        c.tls_connections
    );
}

/// What MCP over stdio captured: channels the kernel found and the bytes it copied of them.
fn log_mcp_stdio(c: &CaptureCounters, p: &llmtap::pipeline::PipelineStats) {
    log::info!(
        "MCP over stdio: {} channels found, {} bytes copied, {} servers whose output is not a \
         pipe, {} JSON-RPC lines lost",
        c.mcp_pipe_channels,
        c.mcp_pipe_bytes,
        c.mcp_pipe_no_response_pipe,
        p.mcp_stdio_lines_lost
    );
}

fn print_targets(pids: &[u32], all: bool) -> anyhow::Result<()> {
    // Nothing else to do meanwhile: a slow file is waited for (a hung one still is not).
    let reports =
        llmtap::capture::targets::Discovery::with_timeout(std::time::Duration::from_secs(60))
            .scan(pids);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:>7}  {:<15}  {:<16}  TARGET",
        "PID", "COMM", "STATUS"
    )?;
    for report in &reports {
        for target in &report.targets {
            let kind = match target.kind {
                llmtap::capture::targets::TargetKind::SharedLibssl => "hook (libssl)",
                llmtap::capture::targets::TargetKind::StaticOpenssl => "hook (static)",
                llmtap::capture::targets::TargetKind::Rustls => "hook (rustls)",
                llmtap::capture::targets::TargetKind::GoTls => "hook (go tls)",
                llmtap::capture::targets::TargetKind::BoringSsl => "hook (boringssl)",
                llmtap::capture::targets::TargetKind::AwsLcAead => "hook (aws-lc)",
            };
            let version = match (&target.kind, &report.go_version) {
                (llmtap::capture::targets::TargetKind::GoTls, Some(go)) => format!(" ({go})"),
                (llmtap::capture::targets::TargetKind::BoringSsl, _) => {
                    " (no symbols: SSL_write/SSL_read located by their error sites)".to_string()
                }
                (llmtap::capture::targets::TargetKind::AwsLcAead, _) => {
                    " (stripped rustls: aws-lc AEAD seal/open found by error sites)".to_string()
                }
                _ => String::new(),
            };
            writeln!(
                out,
                "{:>7}  {:<15}  {:<16}  {}{version}",
                report.pid, report.comm, kind, target.path
            )?;
        }
        // TLS stacks llmtap recognises but cannot hook are listed even without --all: the
        // user is likely looking for exactly that program.
        let recognised = report.go_version.is_some()
            || report.boringssl_unhookable.is_some()
            || report.rustls_unhookable.is_some();
        if report.targets.is_empty() && (all || recognised) {
            writeln!(
                out,
                "{:>7}  {:<15}  {:<16}  {} — {}",
                report.pid,
                report.comm,
                "not hooked",
                report.exe.as_deref().unwrap_or("?"),
                report.reason.as_deref().unwrap_or("")
            )?;
        }
    }
    if !pids.is_empty() {
        for pid in pids {
            if !reports.iter().any(|r| r.pid == *pid) {
                writeln!(
                    out,
                    "{pid:>7}  {:<15}  {:<16}  no such process (or a kernel thread)",
                    "?", "not hooked"
                )?;
            }
        }
    }
    Ok(())
}
