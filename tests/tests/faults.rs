//! Faults, end to end with real eBPF: clients and servers that fail mid-stream, llmtap killed
//! and restarted under load, an undersized ring buffer, a never-ending stream and a 100 MB
//! response. llmtap runs as a subprocess (`llmtap run --output jsonl=FILE --pid CLIENT`);
//! tests/servers/fault_server.py misbehaves on purpose; tests/clients/fault_client.py is the
//! traced Python client. Waits are bounded polls for conditions, never timing assertions.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use llmtap_tests::replay::{LlmtapRun, spans_of};
use llmtap_tests::{ChildGuard, SelfSigned, TempDir, repo_root, require_ebpf};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// Polls `cond` until it returns `Some` or `WAIT` passes.
fn wait_for<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = cond() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct FaultServer {
    port: u16,
    _child: ChildGuard,
    _cert: SelfSigned,
}

impl FaultServer {
    fn start() -> anyhow::Result<Self> {
        let cert = SelfSigned::generate()?;
        let mut child = Command::new("python3")
            .arg(repo_root().join("tests/servers/fault_server.py"))
            .arg("--cert")
            .arg(&cert.cert)
            .arg("--key")
            .arg(&cert.key)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting fault_server.py")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let child = ChildGuard(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let port = line
            .trim()
            .parse()
            .with_context(|| format!("server said {line:?}"))?;
        Ok(Self {
            port,
            _child: child,
            _cert: cert,
        })
    }
}

/// tests/clients/fault_client.py, paused until [`Client::go`] so llmtap can filter on its pid.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Client {
    fn spawn(port: u16, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new("python3")
            .arg(repo_root().join("tests/clients/fault_client.py"))
            .arg(port.to_string())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting fault_client.py")?;
        let stdin = child.stdin.take();
        let stdout: ChildStdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            lines,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn go(&mut self) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow!("stdin closed"))?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
        Ok(())
    }

    fn output(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn wait_line(&self, prefix: &str) -> anyhow::Result<String> {
        wait_for(&format!("client line {prefix:?}"), || {
            self.output().into_iter().find(|l| l.starts_with(prefix))
        })
    }

    /// Closes stdin (the client exits) and returns its exit status.
    fn finish(mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.stdin = None;
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("client did not exit");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `llmtap run` (the replay harness's [`LlmtapRun`]) with the lookups these tests need.
struct Llmtap(LlmtapRun);

impl Llmtap {
    fn start(args: &[String]) -> anyhow::Result<Self> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Ok(Self(LlmtapRun::start(&args)?))
    }

    fn for_pid(pid: u32, extra: &[&str]) -> anyhow::Result<Self> {
        let mut args = vec!["--pid".to_string(), pid.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::start(&args)
    }

    fn log_text(&self) -> String {
        self.0.log_text()
    }

    fn spans_of(&self, pid: u32) -> Vec<Value> {
        spans_of(&self.0.spans_now(), pid)
            .into_iter()
            .cloned()
            .collect()
    }

    fn wait_spans_of(&self, pid: u32, n: usize) -> anyhow::Result<Vec<Value>> {
        wait_for(&format!("{n} span(s) of pid {pid}"), || {
            let s = self.spans_of(pid);
            (s.len() >= n).then_some(s)
        })
        .with_context(|| format!("llmtap log:\n{}", self.log_text()))
    }

    /// A `VmRSS`/`VmHWM` line of /proc/PID/status, in bytes.
    fn memory(&self, field: &str) -> anyhow::Result<u64> {
        let pid = self.0.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
    }

    /// SIGTERM (flushes) and waits; returns the log.
    fn stop(self) -> String {
        self.0.stop().2
    }

    /// SIGKILL: no flush, no detach by llmtap itself.
    fn kill(self) {
        self.0.kill();
    }
}

fn attr<'a>(span: &'a Value, name: &str) -> &'a Value {
    &span["attributes"][name]
}

fn assert_connection_closed_error(span: &Value) {
    assert_eq!(span["status"]["code"], "ERROR", "{span:#}");
    assert_eq!(attr(span, "error.type"), "connection_closed", "{span:#}");
    assert_eq!(
        attr(span, "gen_ai.request.model"),
        "gpt-4o-mini",
        "{span:#}"
    );
    assert_eq!(attr(span, "http.response.status_code"), 200, "{span:#}");
    // The usage chunk never came: no token counts are made up.
    assert!(
        attr(span, "gen_ai.usage.output_tokens").is_null(),
        "{span:#}"
    );
}

#[test]
fn client_killed_mid_stream_ends_the_span_with_error_type() -> anyhow::Result<()> {
    if !require_ebpf("client_killed_mid_stream_ends_the_span_with_error_type") {
        return Ok(());
    }
    let server = FaultServer::start()?;
    let mut client = Client::spawn(server.port, &["stream", "hang"])?;
    let llmtap = Llmtap::for_pid(client.pid(), &[])?;
    client.go()?;
    client.wait_line("first-event")?;
    let pid = client.pid();
    // SIGKILL: the process dies without freeing its TLS connection.
    client.child.kill()?;
    client.child.wait()?;
    let spans = llmtap.wait_spans_of(pid, 1)?;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_connection_closed_error(&spans[0]);
    llmtap.stop();
    Ok(())
}

#[test]
fn server_closing_mid_stream_ends_the_span_with_error_type() -> anyhow::Result<()> {
    if !require_ebpf("server_closing_mid_stream_ends_the_span_with_error_type") {
        return Ok(());
    }
    let server = FaultServer::start()?;
    let mut client = Client::spawn(server.port, &["stream", "close"])?;
    let llmtap = Llmtap::for_pid(client.pid(), &[])?;
    client.go()?;
    // The client saw the stream cut short (no [DONE]).
    client.wait_line("incomplete")?;
    assert!(
        !client.output().iter().any(|l| l == "complete"),
        "{:?}",
        client.output()
    );
    let pid = client.pid();
    // The client is still running: the span ends because the connection closed, not
    // because the process exited.
    let spans = llmtap.wait_spans_of(pid, 1)?;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_connection_closed_error(&spans[0]);
    assert!(client.finish()?.success());
    llmtap.stop();
    Ok(())
}

#[test]
fn llmtap_killed_and_restarted_leaves_clients_unaffected() -> anyhow::Result<()> {
    if !require_ebpf("llmtap_killed_and_restarted_leaves_clients_unaffected") {
        return Ok(());
    }
    let server = FaultServer::start()?;
    let stop_dir = TempDir::new("restart")?;
    let stop_file = stop_dir.path().join("stop");
    let stop_arg = stop_file.to_string_lossy().into_owned();
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(Client::spawn(server.port, &["loop", &stop_arg])?);
    }
    let pid_args: Vec<String> = clients
        .iter()
        .flat_map(|c| ["--pid".to_string(), c.pid().to_string()])
        .collect();
    let first = Llmtap::start(&pid_args)?;
    for c in &mut clients {
        c.go()?;
    }
    for c in &clients {
        first.wait_spans_of(c.pid(), 2)?;
    }
    // SIGKILL while calls are in flight: no flush, no detach by llmtap itself.
    first.kill();
    let calls_at_kill: Vec<usize> = clients.iter().map(|c| c.output().len()).collect();
    let second = Llmtap::start(&pid_args)?;
    for c in &clients {
        second.wait_spans_of(c.pid(), 2)?;
    }
    // Every span of the new instance is a complete, correct call.
    for c in &clients {
        for span in second.spans_of(c.pid()) {
            if attr(&span, "error.type").is_null() {
                assert_eq!(attr(&span, "gen_ai.usage.output_tokens"), 22, "{span:#}");
                // Five content chunks (the finish and usage chunks carry no content).
                assert_eq!(attr(&span, "llmtap.stream.chunks"), 5, "{span:#}");
            } else {
                // Only a call already running when this instance attached can be partial.
                assert!(!attr(&span, "llmtap.call.incomplete").is_null(), "{span:#}");
            }
        }
    }
    std::fs::write(&stop_file, b"")?;
    for (c, before) in clients.into_iter().zip(calls_at_kill) {
        let status = c.finish_loop()?;
        let out = status.1;
        assert!(status.0.success(), "client failed: {out:?}");
        let calls = out.iter().filter(|l| l.ends_with(" ok")).count();
        assert!(calls > before, "calls continued after the kill: {out:?}");
        assert!(
            out.last().is_some_and(|l| l.starts_with("calls ")),
            "{out:?}"
        );
    }
    second.stop();
    Ok(())
}

impl Client {
    /// For `loop` clients: waits for the exit after the stop file appeared.
    fn finish_loop(self) -> anyhow::Result<(std::process::ExitStatus, Vec<String>)> {
        let lines = self.lines.clone();
        let status = self.finish()?;
        // The stdout reader drains the pipe after the exit.
        let out = wait_for("client output", || {
            let l = lines.lock().ok()?.clone();
            l.last()
                .is_some_and(|x| x.starts_with("calls "))
                .then_some(l)
        })
        .unwrap_or_else(|_| lines.lock().map(|l| l.clone()).unwrap_or_default());
        Ok((status, out))
    }
}

#[test]
fn undersized_ring_buffer_counts_drops_and_flags_calls_incomplete() -> anyhow::Result<()> {
    if !require_ebpf("undersized_ring_buffer_counts_drops_and_flags_calls_incomplete") {
        return Ok(());
    }
    let server = FaultServer::start()?;
    let mut client = Client::spawn(server.port, &["stream", "lossy"])?;
    // 8 KiB: the 20 KB events (read 8 KiB at a time by Python) can never fit; the request,
    // the response head and the small events can.
    let llmtap = Llmtap::for_pid(client.pid(), &["--ring-buffer-size", "8K"])?;
    client.go()?;
    client.wait_line("complete")?;
    let pid = client.pid();
    assert!(client.finish()?.success());
    let spans = llmtap.wait_spans_of(pid, 1)?;
    // The loss warning comes with the next health tick (every second).
    wait_for("the ring-buffer warning", || {
        llmtap
            .log_text()
            .contains("ring buffer full:")
            .then_some(())
    })
    .with_context(|| llmtap.log_text())?;
    let log = llmtap.stop();
    assert_eq!(spans.len(), 1, "{spans:#?}\n{log}");
    let span = &spans[0];
    assert_eq!(attr(span, "llmtap.call.incomplete"), true, "{span:#}");
    // Values that depend on the lost bytes are absent; what is reported is right.
    assert!(attr(span, "llmtap.stream.chunks").is_null(), "{span:#}");
    assert_eq!(
        attr(span, "gen_ai.request.model"),
        "gpt-4o-mini",
        "{span:#}"
    );
    for (name, truth) in [
        ("gen_ai.usage.input_tokens", Value::from(11)),
        ("gen_ai.usage.output_tokens", Value::from(22)),
        (
            "gen_ai.response.model",
            Value::from("gpt-4o-mini-2024-07-18"),
        ),
        ("gen_ai.response.id", Value::from("chatcmpl-fault")),
    ] {
        let v = attr(span, name);
        assert!(v.is_null() || *v == truth, "{name}: {span:#}");
    }
    // Drops are counted and reported: the periodic warning and the exit summary.
    let lost: u64 = log
        .lines()
        .find_map(|l| l.split("lost records: ").nth(1))
        .and_then(|rest| rest.split(',').next()?.trim().parse().ok())
        .ok_or_else(|| anyhow!("no exit summary in the log:\n{log}"))?;
    assert!(lost > 0, "{log}");
    Ok(())
}

/// RSS allowance beyond the caps: the default 16 MiB ring buffer (mapped), runtime and
/// exporter buffers. Buffering either body whole would be far above it.
const RSS_SLACK: u64 = 48 << 20;

#[test]
fn never_ending_stream_keeps_memory_within_the_caps() -> anyhow::Result<()> {
    if !require_ebpf("never_ending_stream_keeps_memory_within_the_caps") {
        return Ok(());
    }
    let server = FaultServer::start()?;
    let mut client = Client::spawn(server.port, &["endless", &(32u64 << 20).to_string()])?;
    let llmtap = Llmtap::for_pid(client.pid(), &["--max-response-body", "1M"])?;
    let base = llmtap.memory("VmRSS")?;
    client.go()?;
    client.wait_line("read ")?;
    let pid = client.pid();
    assert!(client.finish()?.success());
    // The span, unless capture lost a record carrying chunk framing (then the call is
    // dropped, never guessed, and the loss is counted).
    let spans = llmtap.wait_spans_of(pid, 1).unwrap_or_default();
    let peak = llmtap.memory("VmHWM")?;
    let log = llmtap.stop();
    assert!(
        peak <= base + (1 << 20) + RSS_SLACK,
        "peak RSS {peak} over {base} + caps:\n{log}"
    );
    let Some(span) = spans.first() else {
        assert!(
            log.contains("ring buffer full:"),
            "no span and no loss:\n{log}"
        );
        return Ok(());
    };
    // 32 MB of a stream that never ended: the client left, so the call is an error.
    assert_eq!(attr(span, "error.type"), "connection_closed", "{span:#}");
    assert!(
        attr(span, "gen_ai.usage.output_tokens").is_null(),
        "{span:#}"
    );
    Ok(())
}

#[test]
fn hundred_megabyte_response_keeps_memory_within_the_caps() -> anyhow::Result<()> {
    if !require_ebpf("hundred_megabyte_response_keeps_memory_within_the_caps") {
        return Ok(());
    }
    let server = FaultServer::start()?;
    let size = 100u64 << 20;
    let mut client = Client::spawn(server.port, &["big", &size.to_string()])?;
    let llmtap = Llmtap::for_pid(client.pid(), &["--max-response-body", "1M"])?;
    let base = llmtap.memory("VmRSS")?;
    client.go()?;
    client.wait_line("read ")?;
    let pid = client.pid();
    let spans = llmtap.wait_spans_of(pid, 1)?;
    let peak = llmtap.memory("VmHWM")?;
    assert!(client.finish()?.success());
    let log = llmtap.stop();
    assert!(
        peak <= base + (1 << 20) + RSS_SLACK,
        "peak RSS {peak} over {base} + caps:\n{log}"
    );
    let span = &spans[0];
    // Past the 1 MiB cap: truncated (or incomplete where capture itself lost records).
    assert!(
        attr(span, "llmtap.call.truncated") == true || attr(span, "llmtap.call.incomplete") == true,
        "{span:#}"
    );
    // The usage sits past the cap: unknown, so absent; what is there is right.
    assert!(
        attr(span, "gen_ai.usage.output_tokens").is_null(),
        "{span:#}"
    );
    for (name, truth) in [
        (
            "gen_ai.response.model",
            Value::from("gpt-4o-mini-2024-07-18"),
        ),
        ("gen_ai.response.id", Value::from("chatcmpl-big")),
    ] {
        let v = attr(span, name);
        assert!(v.is_null() || *v == truth, "{name}: {span:#}");
    }
    assert!(attr(span, "error.type").is_null(), "{span:#}");
    Ok(())
}
