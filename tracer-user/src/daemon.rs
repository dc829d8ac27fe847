//! The running daemon: capture → stream ordering → pipeline → sink, on one task.
//!
//! Kept apart from the CLI so the loop can be driven by a test with any sink.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::budget::{MemoryGuard, resident_bytes};
use crate::capture::clock::monotonic_now_ns;
use crate::capture::stream::StreamsSeen;
use crate::capture::{
    CaptureCounters, CaptureEvent, CaptureSession, ConnectionId, StreamAssembler, StreamEvent,
};
use crate::flow::MuteSpan;
use crate::genai::{AgentConfig, AgentRecord, AgentTracker, CallRecord, ToolProcess};
use crate::pipeline::{Pipeline, PipelineStats};

/// Where finished calls and health snapshots go (the exporters).
pub trait CallSink {
    fn export(&mut self, record: &CallRecord);
    /// An agent turn ended or a tool execution was found (after the calls it links).
    fn export_agent(&mut self, record: &AgentRecord);
    /// Called about once a second with the running totals.
    fn health(&mut self, health: &DaemonHealth);
    /// A process produced its first traffic (a chance to read its details while it lives).
    fn process_seen(&mut self, _pid: u32, _comm: &str) {}
    /// A traced process exited (its pid may come back as another process).
    fn process_exited(&mut self, _pid: u32) {}
    /// A batch of events was handled: what the outputs buffered is written now, once per
    /// batch rather than once per call.
    fn batch_done(&mut self) {}
}

/// Running totals of every stage, for health metrics and the exit summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonHealth {
    pub capture: CaptureCounters,
    pub pipeline: PipelineStats,
    /// Records whose bytes had already been delivered (should stay 0).
    pub duplicate_records: u64,
    /// Calls handed to the sink.
    pub calls_exported: u64,
    /// Calls per `gen_ai.provider.name`.
    pub calls_by_provider: Vec<(String, u64)>,
}

/// Socket addresses of live connections (enrichment; bounded).
#[derive(Debug, Default)]
pub struct PeerTable {
    peers: HashMap<ConnectionId, SocketAddr>,
}

const PEER_TABLE_MAX: usize = 65536;

impl PeerTable {
    pub fn observe(&mut self, event: &CaptureEvent) {
        match event {
            CaptureEvent::ConnectionInfo { conn, peer, .. } => {
                if self.peers.len() >= PEER_TABLE_MAX {
                    // Entries normally leave on close/exit; a flood of unclosed connections
                    // must not grow memory, so start over.
                    self.peers.clear();
                }
                self.peers.insert(*conn, *peer);
            }
            CaptureEvent::Closed { conn, .. } => {
                self.peers.remove(conn);
            }
            CaptureEvent::ProcessExit { pid, .. } => self.peers.retain(|c, _| c.pid != *pid),
            _ => {}
        }
    }

    pub fn peer(&self, conn: ConnectionId) -> Option<SocketAddr> {
        self.peers.get(&conn).copied()
    }

    /// `network.peer.*` from the call's socket, and `server.*` too when the request named no
    /// host (HTTP/1.0, a bare h2c request).
    pub fn enrich(&self, record: &mut CallRecord) {
        let conn = ConnectionId {
            pid: record.process.pid,
            conn: record.connection_id,
        };
        let Some(peer) = self.peer(conn) else {
            return;
        };
        record.network_peer_address = Some(peer.ip().to_string());
        record.network_peer_port = Some(peer.port());
        if record.server_address.as_deref().is_none_or(str::is_empty) {
            record.server_address = Some(peer.ip().to_string());
            record.server_port = Some(peer.port());
        }
    }
}

/// Capture-to-sink state machine, separated from the async loop for testing.
pub struct Daemon {
    assembler: StreamAssembler,
    pipeline: Pipeline,
    peers: PeerTable,
    stream_scratch: Vec<StreamEvent>,
    records: Vec<CallRecord>,
    agent: AgentTracker,
    agent_records: Vec<AgentRecord>,
    calls_exported: u64,
    by_provider: HashMap<String, u64>,
    /// Processes whose traffic was seen (forgotten at exit; bounded).
    seen_pids: std::collections::HashSet<u32>,
    /// Plain-HTTP connections found not to carry LLM calls, for capture to stop copying.
    not_llm: Vec<ConnectionId>,
    /// `--memory-limit`: the process's resident size, checked with every batch (at most
    /// every [`MEMORY_CHECK_INTERVAL`]) and at every tick.
    memory_guard: Option<MemoryGuard>,
    memory_checked_at: std::time::Instant,
}

const MEMORY_CHECK_INTERVAL: Duration = Duration::from_millis(50);

const SEEN_PIDS_MAX: usize = 65536;

impl Daemon {
    pub fn new(pipeline: Pipeline) -> Self {
        Self {
            assembler: StreamAssembler::new(),
            pipeline,
            peers: PeerTable::default(),
            stream_scratch: Vec::new(),
            records: Vec::new(),
            agent: AgentTracker::new(AgentConfig::default()),
            agent_records: Vec::new(),
            calls_exported: 0,
            by_provider: HashMap::new(),
            seen_pids: std::collections::HashSet::new(),
            not_llm: Vec::new(),
            memory_guard: None,
            memory_checked_at: std::time::Instant::now(),
        }
    }

    /// Keeps the process under a memory limit (the guard shares the pipeline's budget).
    pub fn with_memory_guard(mut self, guard: MemoryGuard) -> Self {
        self.memory_guard = Some(guard);
        self
    }

    /// Plain-HTTP connections whose first request was not an LLM call, since the last call.
    pub fn take_not_llm_connections(&mut self) -> Vec<ConnectionId> {
        std::mem::take(&mut self.not_llm)
    }

    /// TLS connections capture may stop copying (see `Pipeline::take_mutable_connections`),
    /// each with where its streams stand now: called after a whole batch, so that the kernel
    /// compares them with everything user space has received.
    pub fn take_mutable_connections(&mut self) -> Vec<(ConnectionId, MuteSpan, StreamsSeen)> {
        self.pipeline
            .take_mutable_connections()
            .into_iter()
            .filter_map(|(conn, span)| Some((conn, span, self.assembler.seen(conn)?)))
            .collect()
    }

    /// Applies `--memory-limit` to the resident size now, at most every 50 ms: a flood can
    /// grow the process within one timer tick.
    fn check_memory(&mut self) {
        let now = std::time::Instant::now();
        if let Some(guard) = &mut self.memory_guard
            && now.duration_since(self.memory_checked_at) >= MEMORY_CHECK_INTERVAL
            && let Some(resident) = resident_bytes()
        {
            self.memory_checked_at = now;
            guard.check(resident);
        }
    }

    /// Feeds capture events; finished calls go to the sink.
    pub fn handle(
        &mut self,
        events: impl IntoIterator<Item = CaptureEvent>,
        sink: &mut impl CallSink,
    ) {
        self.check_memory();
        for event in events {
            // A connection's socket is known before its data; it is forgotten only after its
            // close has ended its calls (which read it when they are flushed).
            let ends = matches!(
                event,
                CaptureEvent::Closed { .. } | CaptureEvent::ProcessExit { .. }
            );
            let ending = ends.then(|| event.clone());
            if !ends {
                self.peers.observe(&event);
            }
            match &event {
                CaptureEvent::Data(d) if !self.seen_pids.contains(&d.conn.pid) => {
                    if self.seen_pids.len() >= SEEN_PIDS_MAX {
                        self.seen_pids.clear();
                    }
                    self.seen_pids.insert(d.conn.pid);
                    sink.process_seen(d.conn.pid, &d.comm.as_str());
                }
                CaptureEvent::ProcessExit { pid, ts_ns, .. } => {
                    self.seen_pids.remove(pid);
                    self.agent.observe_exit(*pid, *ts_ns);
                }
                CaptureEvent::ProcessExec { pid, ts_ns, .. } => {
                    // Only a process an agent started is read (one /proc stat per exec).
                    if let Some(parent) = parent_pid(*pid)
                        && self.agent.wants_exec(parent)
                        && let Some(process) = started_process(*pid, parent, *ts_ns)
                    {
                        self.agent.observe_exec(process);
                    }
                }
                _ => {}
            }
            let exited = match &event {
                CaptureEvent::ProcessExit { pid, .. } => Some(*pid),
                _ => None,
            };
            self.assembler.push(event, &mut self.stream_scratch);
            for stream_event in self.stream_scratch.drain(..) {
                self.pipeline.push(stream_event, &mut self.records);
            }
            self.flush(sink);
            self.flush_mcp(sink);
            if let Some(ending) = &ending {
                self.peers.observe(ending);
            }
            // After the process's last calls: its agent sessions end with it.
            if let Some(pid) = exited {
                self.agent.process_exit(pid, &mut self.agent_records);
                self.flush(sink);
                sink.process_exited(pid);
            }
        }
    }

    /// Ends idle connections (call once a second or so).
    pub fn tick(&mut self, now_ns: u64, sink: &mut impl CallSink) {
        self.check_memory();
        self.release_held(now_ns);
        self.pipeline.tick(now_ns, &mut self.records);
        self.flush(sink);
        self.flush_mcp(sink);
        self.agent.tick(now_ns, &mut self.agent_records);
        self.flush(sink);
    }

    /// Ends everything in flight (shutdown).
    pub fn finish(&mut self, sink: &mut impl CallSink) {
        self.release_held(u64::MAX);
        self.pipeline.finish(&mut self.records);
        self.flush(sink);
        self.flush_mcp(sink);
        self.agent.finish(&mut self.agent_records);
        self.flush(sink);
    }

    /// MCP calls go after the LLM calls of the same batch, so that a tool call made while a
    /// turn is open is linked to it.
    fn flush_mcp(&mut self, sink: &mut impl CallSink) {
        for call in self.pipeline.take_mcp_calls() {
            self.agent.observe_mcp(call, &mut self.agent_records);
        }
        for record in self.agent_records.drain(..) {
            sink.export_agent(&record);
        }
    }

    /// Passes on the records the assembler held for bytes that did not come in time.
    fn release_held(&mut self, now_ns: u64) {
        self.assembler.release_due(now_ns, &mut self.stream_scratch);
        for stream_event in self.stream_scratch.drain(..) {
            self.pipeline.push(stream_event, &mut self.records);
        }
    }

    fn flush(&mut self, sink: &mut impl CallSink) {
        let not_llm = self.pipeline.take_not_llm_connections();
        if self.not_llm.len() < 4096 {
            self.not_llm.extend(not_llm);
        }
        for mut record in self.records.drain(..) {
            self.peers.enrich(&mut record);
            self.calls_exported += 1;
            *self.by_provider.entry(record.provider.clone()).or_default() += 1;
            self.agent.observe(&mut record, &mut self.agent_records);
            sink.export(&record);
        }
        for record in self.agent_records.drain(..) {
            sink.export_agent(&record);
        }
    }

    pub fn health(&self, capture: CaptureCounters) -> DaemonHealth {
        let mut calls_by_provider: Vec<(String, u64)> = self
            .by_provider
            .iter()
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        calls_by_provider.sort();
        DaemonHealth {
            capture,
            pipeline: self.pipeline.stats(),
            duplicate_records: self.assembler.duplicates(),
            calls_exported: self.calls_exported,
            calls_by_provider,
        }
    }

    pub fn peers(&self) -> &PeerTable {
        &self.peers
    }
}

/// The parent pid of a live process, from `/proc/PID/stat` (after the command name, which
/// may hold spaces and parentheses).
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Most argument bytes read of a started process.
const MAX_ARGS_BYTES: usize = 4096;

/// What a process an agent started runs, read at its exec (it may be gone already: a
/// process too short-lived to be read is left out).
fn started_process(pid: u32, parent_pid: u32, ts_ns: u64) -> Option<ToolProcess> {
    let executable = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()?
        .to_string_lossy()
        .into_owned();
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let raw = raw.get(..raw.len().min(MAX_ARGS_BYTES)).unwrap_or_default();
    let args = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(ToolProcess {
        pid,
        parent_pid,
        executable,
        args,
        start_ns: ts_ns,
        exit_ns: None,
    })
}

/// Runs until `shutdown` resolves, then flushes what is in flight. Returns the final health.
pub async fn run(
    mut session: CaptureSession,
    mut daemon: Daemon,
    sink: &mut impl CallSink,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<DaemonHealth> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut events = Vec::new();
    let mut reported = CaptureCounters::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            result = session.next_events(&mut events) => {
                result?;
                daemon.handle(events.drain(..), sink);
                sink.batch_done();
                for conn in daemon.take_not_llm_connections() {
                    session.tracer.ignore_plain_connection(conn);
                }
                let mutable = daemon.take_mutable_connections();
                if session.kernel_filter {
                    for (conn, span, seen) in mutable {
                        session.tracer.mute_connection(conn, span, seen);
                    }
                }
            }
            _ = tick.tick() => {
                daemon.tick(monotonic_now_ns(), sink);
                sink.batch_done();
                let counters = session.tracer.counters();
                reported = warn_about_losses(&counters, reported);
                sink.health(&daemon.health(counters));
            }
            _ = &mut shutdown => break,
        }
    }
    // Whatever the kernel already delivered is still processed before the final flush.
    let drain = tokio::time::timeout(Duration::from_millis(200), session.next_events(&mut events));
    if let Ok(Ok(())) = drain.await {
        daemon.handle(events.drain(..), sink);
    }
    daemon.finish(sink);
    let health = daemon.health(session.tracer.counters());
    sink.health(&health);
    Ok(health)
}

/// Logs losses since the last report; returns the new baseline.
pub fn warn_about_losses(now: &CaptureCounters, before: CaptureCounters) -> CaptureCounters {
    let dropped = now.ringbuf_dropped_records - before.ringbuf_dropped_records;
    if dropped > 0 {
        log::warn!(
            "ring buffer full: {dropped} records ({} bytes) lost; raise --ring-buffer-size",
            now.ringbuf_dropped_bytes - before.ringbuf_dropped_bytes
        );
    }
    let unreadable = now.read_user_failed - before.read_user_failed;
    if unreadable > 0 {
        log::warn!("{unreadable} records lost: application memory not readable at probe time");
    }
    let full = now.inflight_table_full - before.inflight_table_full;
    if full > 0 {
        log::warn!("{full} calls not tracked: in-flight call table full");
    }
    let decode = now.decode_errors - before.decode_errors;
    if decode > 0 {
        log::warn!("{decode} ring-buffer records could not be decoded");
    }
    *now
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Comm;
    use crate::pipeline::PipelineConfig;

    #[derive(Default)]
    struct Collect(Vec<CallRecord>, u32);

    impl CallSink for Collect {
        fn export_agent(&mut self, _: &AgentRecord) {}

        fn export(&mut self, record: &CallRecord) {
            self.0.push(record.clone());
        }
        fn health(&mut self, _: &DaemonHealth) {
            self.1 += 1;
        }
    }

    #[test]
    fn peers_follow_connection_lifetimes() {
        let conn = ConnectionId { pid: 1, conn: 2 };
        let mut peers = PeerTable::default();
        peers.observe(&CaptureEvent::ConnectionInfo {
            conn,
            peer: "1.2.3.4:443".parse().unwrap(),
            local: "10.0.0.1:5000".parse().unwrap(),
            ts_ns: 0,
        });
        assert_eq!(peers.peer(conn), Some("1.2.3.4:443".parse().unwrap()));
        peers.observe(&CaptureEvent::Closed {
            conn,
            comm: Comm::default(),
            ts_ns: 1,
        });
        assert_eq!(peers.peer(conn), None);
    }

    #[test]
    fn calls_carry_their_socket_peer_until_the_close_that_ends_them() {
        use crate::capture::DataEvent;
        let conn = ConnectionId {
            pid: 9,
            conn: 0xffff_8881_0000_1000,
        };
        let data = |direction, stream_pos: u64, ts: u64, bytes: &'static [u8]| {
            CaptureEvent::Data(DataEvent {
                conn,
                tid: 9,
                comm: Comm::default(),
                direction,
                ts_entry_ns: ts,
                ts_return_ns: ts,
                call_len: bytes.len() as u64,
                offset: 0,
                stream_pos,
                uncaptured_len: 0,
                last_chunk: true,
                resumed: false,
                data: bytes::Bytes::from_static(bytes),
            })
        };
        let request: &[u8] = b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}";
        // HTTP/1.0 without a Host header or a length: the close ends the response.
        let response: &[u8] =
            b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"model\":\"m\"}";
        let events = vec![
            CaptureEvent::ConnectionInfo {
                conn,
                peer: "10.1.2.3:8000".parse().unwrap(),
                local: "10.0.0.1:40000".parse().unwrap(),
                ts_ns: 1,
            },
            data(crate::capture::Direction::Write, 0, 2, request),
            data(crate::capture::Direction::Read, 0, 3, response),
            CaptureEvent::Closed {
                conn,
                comm: Comm::default(),
                ts_ns: 4,
            },
        ];
        let mut daemon = Daemon::new(Pipeline::new(PipelineConfig::default()));
        let mut sink = Collect::default();
        daemon.handle(events, &mut sink);
        assert_eq!(sink.0.len(), 1, "{:?}", sink.0);
        let call = &sink.0[0];
        assert_eq!(call.network_peer_address.as_deref(), Some("10.1.2.3"));
        assert_eq!(call.network_peer_port, Some(8000));
        assert_eq!(call.server_address.as_deref(), Some("10.1.2.3"), "no Host");
        assert_eq!(call.server_port, Some(8000));
        assert_eq!(daemon.peers().peer(conn), None, "forgotten after the close");
    }

    #[test]
    fn recorded_exchange_flows_to_the_sink() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/cassettes/openai__chat_stream_include_usage.json");
        let cassette = crate::testing::load_cassette(&path).expect("cassette");
        let stream =
            crate::testing::cassette_events(&cassette, &crate::testing::ReplayOptions::default());
        let events = crate::capture::stream::to_capture_events(&stream);
        let mut daemon = Daemon::new(Pipeline::new(PipelineConfig::default()));
        let mut sink = Collect::default();
        daemon.handle(events, &mut sink);
        daemon.finish(&mut sink);
        assert_eq!(sink.0.len(), 1, "{:?}", sink.0);
        assert_eq!(
            sink.0[0].response.id.as_deref(),
            Some("chatcmpl-ChZNa5AVXUvGOZAleY7FgQlVr6bxn")
        );
        let health = daemon.health(CaptureCounters::default());
        assert_eq!(health.calls_exported, 1);
        assert_eq!(health.calls_by_provider, [("openai".to_string(), 1)]);
    }
}
