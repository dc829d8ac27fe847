//! Bench sections about the host rather than the traced call: what llmtap copies on a host
//! busy with TLS traffic of no use to it (kernel-side filtering on and off), and what
//! discovery costs on a host with many processes and frequent execs.

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::bench::{Killed, Stream, median, self_signed, start_and_wait};
use crate::bench_load::{ReplayBench, cpu_seconds, load_level};

/// Interleaved rounds of the filtered-traffic measurement, and seconds of downloads in each.
const FILTER_ROUNDS: usize = 3;
const DOWNLOAD_SECONDS: &str = "4";
/// Size of each downloaded file.
const DOWNLOAD_SIZE: &str = "4194304";

/// Idle processes and execs per second on the discovery bench's host.
const IDLE_PROCESSES: usize = 2000;
const EXECS_PER_S: u64 = 50;
/// Seconds over which the daemon's CPU is measured.
const CPU_WINDOW_S: u64 = 10;
/// Concurrent streams of the load run made meanwhile.
const DISCOVERY_LOAD_STREAMS: usize = 200;

/// Stops llmtap (SIGINT: it prints its exit summary) and returns its log lines.
fn stop_with_log(tracer: Killed) -> Vec<String> {
    let log = tracer.1.clone();
    drop(tracer);
    // The reader thread sees the last lines once the pipe closes.
    std::thread::sleep(Duration::from_millis(200));
    log.lock().map(|l| l.clone()).unwrap_or_default()
}

/// The number just before `before` on the log line containing `marker`.
fn number_before(log: &[String], marker: &str, before: &str) -> Option<f64> {
    let line = log.iter().rev().find(|l| l.contains(marker))?;
    let at = line.find(before)?;
    line[..at]
        .split_whitespace()
        .last()?
        .trim_start_matches('(')
        .parse()
        .ok()
}

/// Bytes copied into the ring per second while a process downloads files over TLS in a loop
/// (non-LLM traffic on both its client and its server side), `--kernel-filter on` and `off`.
pub fn filtered_traffic(root: &Path, out_dir: &Path) -> anyhow::Result<(Value, String)> {
    let llmtap = root.join("target/release/llmtap");
    let (cert, key) = self_signed(out_dir)?;
    let run = |mode: &str| -> anyhow::Result<(f64, f64, f64)> {
        let mut process = Command::new("python3")
            .arg(root.join("bench/tls_download_loop.py"))
            .arg(&cert)
            .arg(&key)
            .args([DOWNLOAD_SECONDS, DOWNLOAD_SIZE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("python3 bench/tls_download_loop.py")?;
        let pid = process.id().to_string();
        let jsonl = out_dir.join("filtered.jsonl");
        let tracer = start_and_wait(
            Command::new(&llmtap)
                .arg("run")
                .arg("--output")
                .arg(format!("jsonl={}", jsonl.display()))
                .args(["--pid", &pid, "--kernel-filter", mode])
                .env("RUST_LOG", "info"),
            "tracing LLM calls",
            Stream::Stderr,
        )?;
        process.stdin.take().context("stdin")?.write_all(b"\n")?;
        let out = process.wait_with_output()?;
        if !out.status.success() {
            bail!("tls_download_loop.py failed");
        }
        let result: Value = serde_json::from_slice(&out.stdout)?;
        let seconds = result["seconds"].as_f64().unwrap_or(f64::NAN);
        let downloaded = result["bytes"].as_f64().unwrap_or(f64::NAN);
        let log = stop_with_log(tracer);
        let copied = number_before(&log, "calls exported; captured", "bytes),")
            .context("llmtap's exit summary")?;
        let filtered = number_before(&log, "filtered in the kernel:", "bytes)")
            .context("llmtap's filter summary")?;
        Ok((copied / seconds, filtered / seconds, downloaded / seconds))
    };
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..FILTER_ROUNDS {
        eprintln!(
            "bench: filtered traffic, round {}/{FILTER_ROUNDS}",
            round + 1
        );
        on.push(run("on")?);
        off.push(run("off")?);
    }
    let pick = |runs: &[(f64, f64, f64)], field: usize| -> f64 {
        let values: Vec<f64> = runs
            .iter()
            .map(|r| match field {
                0 => r.0,
                1 => r.1,
                _ => r.2,
            })
            .collect();
        median(&values)
    };
    let mb = |bytes_per_s: f64| bytes_per_s / 1e6;
    let (copied_on, copied_off) = (pick(&on, 0), pick(&off, 0));
    let json = json!({
        "rounds": FILTER_ROUNDS, "download_seconds": DOWNLOAD_SECONDS, "file_bytes": DOWNLOAD_SIZE,
        "runs_on": on.iter().map(|r| json!({"copied_b_s": r.0, "filtered_b_s": r.1, "downloaded_b_s": r.2})).collect::<Vec<_>>(),
        "runs_off": off.iter().map(|r| json!({"copied_b_s": r.0, "filtered_b_s": r.1, "downloaded_b_s": r.2})).collect::<Vec<_>>(),
        "median_copied_b_s": {"filter_on": copied_on, "filter_off": copied_off},
        "copied_ratio_on_to_off": copied_on / copied_off,
    });
    let md = format!(
        "## Kernel-side filtering on a host busy with non-LLM TLS (a file download loop)\n\n\
         One process downloads a {} MiB file again and again over one keep-alive HTTPS \
         connection from its own TLS server thread ({DOWNLOAD_SECONDS} s per run, {FILTER_ROUNDS} \
         interleaved rounds, `llmtap run --pid`): its client side is muted until its next \
         request, its server side until it closes.\n\n\
         | `--kernel-filter` | copied into the ring, MB/s | filtered (counted, not copied), MB/s | downloads, MB/s |\n|---|---|---|---|\n\
         | on (default) | {:.1} | {:.1} | {:.1} |\n\
         | off | {:.1} | {:.1} | {:.1} |\n\n\
         With the filter, **{:.1}%** of the bytes copied without it still reach the ring: each \
         new request on the connection is copied (it could be an LLM call) and wakes the reader, \
         and the response bytes read until llmtap has muted the connection again are copied \
         too. Filtered bytes count both sides (the server's writes and the client's reads).\n",
        DOWNLOAD_SIZE.parse::<f64>().unwrap_or(0.0) / 1048576.0,
        mb(copied_on),
        mb(pick(&on, 1)),
        mb(pick(&on, 2)),
        mb(copied_off),
        mb(pick(&off, 1)),
        mb(pick(&off, 2)),
        copied_on / copied_off * 100.0,
    );
    Ok((json, md))
}

/// Idle processes kept alive for a measurement; killed when dropped.
struct Idle(Vec<Child>);

impl Drop for Idle {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// A thread running `true` [`EXECS_PER_S`] times a second until dropped.
struct Execs(Arc<AtomicBool>, Option<std::thread::JoinHandle<u64>>);

impl Execs {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let period = Duration::from_micros(1_000_000 / EXECS_PER_S);
            let mut next = Instant::now();
            let mut count = 0;
            while !flag.load(Ordering::Relaxed) {
                let _ = Command::new("true").status();
                count += 1;
                next += period;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            count
        });
        Self(stop, Some(handle))
    }
}

impl Drop for Execs {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        if let Some(handle) = self.1.take() {
            let _ = handle.join();
        }
    }
}

/// Daemon CPU on a host with [`IDLE_PROCESSES`] idle processes and [`EXECS_PER_S`] execs a
/// second, with periodic sweeps (every 2 s, the default) and without; then ring-buffer drops
/// and calls traced under a load of streaming calls on that host.
pub fn discovery_cost(
    root: &Path,
    replay: &ReplayBench,
    out_dir: &Path,
) -> anyhow::Result<(Value, String)> {
    let llmtap = root.join("target/release/llmtap");
    eprintln!("bench: discovery, starting {IDLE_PROCESSES} idle processes");
    let mut idle = Idle(Vec::with_capacity(IDLE_PROCESSES));
    for _ in 0..IDLE_PROCESSES {
        idle.0.push(
            Command::new("sleep")
                .arg("3600")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting idle processes")?,
        );
    }
    let _execs = Execs::start();
    let cpu_per_s = |extra: &[&str]| -> anyhow::Result<(f64, f64)> {
        let jsonl = out_dir.join("discovery.jsonl");
        let started = Instant::now();
        let tracer = crate::bench_load::start_llmtap(&llmtap, &jsonl, extra)?;
        let startup_s = started.elapsed().as_secs_f64();
        let pid = tracer.0.id();
        let before = cpu_seconds(pid);
        std::thread::sleep(Duration::from_secs(CPU_WINDOW_S));
        let cpu = (cpu_seconds(pid) - before) / CPU_WINDOW_S as f64;
        drop(tracer);
        Ok((cpu, startup_s))
    };
    eprintln!("bench: discovery, daemon CPU with sweeps");
    let (with_sweeps, startup) = cpu_per_s(&[])?;
    eprintln!("bench: discovery, daemon CPU without sweeps");
    let (without_sweeps, _) = cpu_per_s(&["--rescan-interval", "0"])?;
    eprintln!("bench: discovery, {DISCOVERY_LOAD_STREAMS} streams meanwhile");
    let level = load_level(
        root,
        replay,
        &llmtap,
        out_dir,
        DISCOVERY_LOAD_STREAMS,
        &["--rescan-interval", "1"],
    )?;
    let json = json!({
        "idle_processes": IDLE_PROCESSES, "execs_per_s": EXECS_PER_S, "window_s": CPU_WINDOW_S,
        "daemon_cpu_s_per_s": {"sweeps_every_2s": with_sweeps, "no_sweeps": without_sweeps},
        "startup_s": startup,
        "load": level.json,
    });
    let md = format!(
        "## Discovery on a busy host ({IDLE_PROCESSES} idle processes, {EXECS_PER_S} execs/s)\n\n\
         | measurement | figure |\n|---|---|\n\
         | daemon CPU, sweeps every 2 s (default) | {:.1}% of a core |\n\
         | daemon CPU, no periodic sweep (`--rescan-interval 0`) | {:.1}% of a core |\n\
         | start-up (first look at every process) until ready | {startup:.1} s |\n\
         | {DISCOVERY_LOAD_STREAMS} concurrent streams meanwhile, sweeps every 1 s: traced, ring-buffer drops | {:.1}%, {} |\n\n\
         Each exec is scanned on the discovery thread, never on the task that drains the ring; \
         a sweep scans only the processes not seen yet, and files analysed once are recognised \
         from their maps line without being opened again.\n",
        with_sweeps * 100.0,
        without_sweeps * 100.0,
        level.traced_pct,
        level.drops,
    );
    Ok((json, md))
}
