//! Command-line options shared by the subcommands that load the tracer.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::capture::tracer::DEFAULT_RING_BUFFER_BYTES;
use crate::capture::{PlainHttp, SessionConfig, TracerConfig};
use tracer_common::DEFAULT_MAX_CAPTURE_BYTES;

/// What to hook and how much to copy.
#[derive(Args, Clone, Debug)]
pub struct CaptureArgs {
    /// Only trace this process id (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Only trace processes with this command name, as in /proc/PID/comm (repeatable).
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,

    /// Also hook this library or binary exporting SSL_read/SSL_write, e.g. /usr/bin/node
    /// with statically linked OpenSSL (repeatable).
    #[arg(long = "ssl-lib", value_name = "PATH")]
    pub ssl_libs: Vec<PathBuf>,

    /// Ring buffer size shared by all CPUs (power of two; K/M/G suffixes).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_RING_BUFFER_BYTES, value_parser = parse_size_u32)]
    pub ring_buffer_size: u32,

    /// Bytes copied at most from one SSL_read/SSL_write call; the rest is reported as lost
    /// (K/M suffixes, at most 16M).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_CAPTURE_BYTES, value_parser = parse_size_u32)]
    pub max_capture_bytes: u32,

    /// Seconds between scans of /proc for libssl copies not hooked yet (0 = scan once).
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    pub rescan_interval: u64,

    /// Stop a program llmtap is still hooking at its first connect, until its hooks are in
    /// place (milliseconds; a never-seen large binary: about a second), so that its first call
    /// is not missed. Processes with a terminal are never held.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub hold_new_processes: bool,

    /// Capture LLM calls over plain HTTP (no TLS: local model servers, in-cluster gateways):
    /// `on` (any port), `off`, or a comma-separated list of server ports (e.g. 11434,8000).
    /// Only TCP connections whose first request goes to an LLM API path are copied.
    #[arg(long, value_name = "on|off|PORTS", default_value = "on")]
    pub plain_http: PlainHttp,

    /// Capture MCP over stdio: the pipes between an agent and the MCP servers it spawns
    /// (found by the client's first JSON-RPC message; no other pipe is copied). Off by
    /// default: its kernel hook runs after every system call on the host (see the README's
    /// bench table for the cost).
    #[arg(long, value_name = "on|off", default_value = "off", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub mcp_stdio: bool,
    /// Stop copying TLS connections llmtap has no use for, in the kernel, once classified:
    /// a server's side, a protocol other than HTTP, an HTTP/1 client between requests that
    /// are not LLM calls (copied again from its next request). Their bytes are counted in the
    /// exit summary and metrics. `off` copies everything (for measurements and debugging).
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub kernel_filter: bool,
}

impl CaptureArgs {
    pub fn session_config(&self) -> SessionConfig {
        SessionConfig {
            tracer: TracerConfig {
                ring_buffer_bytes: self.ring_buffer_size,
                max_capture_bytes: self.max_capture_bytes,
                pids: self.pids.clone(),
                comms: self.comms.clone(),
                hold_new_processes: self.hold_new_processes,
                plain_http: self.plain_http.clone(),
                mcp_stdio: self.mcp_stdio,
            },
            ssl_libs: self.ssl_libs.clone(),
            rescan_interval: Duration::from_secs(self.rescan_interval),
            kernel_filter: self.kernel_filter,
        }
    }
}

/// How the pipeline parses traffic into calls, and how much memory it may hold.
#[derive(Args, Clone, Debug)]
pub struct PipelineArgs {
    /// Seconds without traffic after which a connection's calls in flight are ended.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub idle_timeout: u64,

    /// Request body bytes kept per call (past it the call is flagged truncated).
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = parse_size_usize)]
    pub max_request_body: usize,

    /// Non-streamed response body bytes kept per call (past it: truncated).
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_size_usize)]
    pub max_response_body: usize,

    /// Memory llmtap may hold in all (resident size; K/M/G suffixes; 0 = no limit). Call
    /// bodies share what it leaves after llmtap's own footprint and a third of headroom;
    /// past it, bodies are cut and their calls flagged truncated, never an out-of-memory kill.
    #[arg(long, value_name = "BYTES", default_value = "256M", value_parser = parse_size_usize)]
    pub memory_limit: usize,

    /// Connections tracked at most (least recently active ones are evicted).
    #[arg(long, value_name = "N", default_value_t = 16 * 1024)]
    pub max_connections: usize,

    /// Estimate token counts with a tokenizer when a response carries no usage; estimates are
    /// flagged with `llmtap.usage.estimated = true`.
    #[arg(long)]
    pub estimate_tokens: bool,
}

impl PipelineArgs {
    pub fn pipeline_config(&self, capture_content: bool) -> crate::pipeline::PipelineConfig {
        crate::pipeline::PipelineConfig {
            capture_content,
            estimate_missing_usage: self.estimate_tokens,
            idle_timeout_ns: self.idle_timeout.saturating_mul(1_000_000_000),
            request_body_cap: self.max_request_body,
            response_body_cap: self.max_response_body,
            max_connections: self.max_connections,
            ..Default::default()
        }
    }
}

fn parse_size_usize(text: &str) -> Result<usize, String> {
    usize::try_from(parse_size(text)?).map_err(|_| format!("{text:?} is too large"))
}

/// Parses `4096`, `64K`, `16M`, `1G` (binary multiples; optional `iB`/`B`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let upper = t.to_ascii_uppercase();
    let stripped = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, shift) = match stripped.chars().last() {
        Some('K') => (&stripped[..stripped.len() - 1], 10),
        Some('M') => (&stripped[..stripped.len() - 1], 20),
        Some('G') => (&stripped[..stripped.len() - 1], 30),
        _ => (stripped, 0),
    };
    let value: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a size (examples: 4096, 256K, 16M)"))?;
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn parse_size_u32(text: &str) -> Result<u32, String> {
    u32::try_from(parse_size(text)?).map_err(|_| format!("{text:?} is too large (max 4G-1)"))
}

fn parse_on_off(value: &str) -> Result<bool, String> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("expected on or off, got {other:?}")),
    }
}

#[cfg(test)]
mod tests {

    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct CaptureCli {
        #[command(flatten)]
        capture: CaptureArgs,
    }

    #[test]
    fn hold_new_processes_takes_on_or_off() {
        let parse = |args: &[&str]| {
            CaptureCli::try_parse_from(std::iter::once("llmtap").chain(args.iter().copied()))
                .map(|cli| cli.capture.hold_new_processes)
        };
        assert!(parse(&[]).expect("default"));
        assert!(!parse(&["--hold-new-processes", "off"]).expect("off"));
        assert!(parse(&["--hold-new-processes", "on"]).expect("on"));
        assert!(parse(&["--hold-new-processes"]).is_err());
        assert!(parse(&["--hold-new-processes", "maybe"]).is_err());
    }
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256K"), Ok(256 * 1024));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2mb"), Ok(2 << 20));
        assert!(parse_size("lots").is_err());
        assert!(parse_size_u32("8G").is_err());
    }
}
