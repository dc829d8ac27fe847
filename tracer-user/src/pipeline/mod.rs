//! The post-capture pipeline: [`StreamEvent`]s in, [`CallRecord`]s out.
//!
//! ```
//! use llmtap::testing::{ReplayOptions, cassette_dir, cassette_events, load_cassette};
//! use llmtap::{Pipeline, PipelineConfig};
//!
//! let cassette = load_cassette(&cassette_dir().join("openai__chat_stream_include_usage.json"))?;
//! let mut pipeline = Pipeline::new(PipelineConfig::default());
//! let mut calls = Vec::new();
//! for event in cassette_events(&cassette, &ReplayOptions::default()) {
//!     pipeline.push(event, &mut calls);
//! }
//! pipeline.tick(u64::MAX, &mut calls); // idle eviction, normally called periodically
//! pipeline.finish(&mut calls); // shutdown flush
//! assert_eq!(calls.len(), 1);
//! assert_eq!(calls[0].usage.input_tokens, Some(23));
//! assert_eq!(pipeline.stats().calls, 1);
//! # Ok::<(), llmtap::testing::CassetteError>(())
//! ```

use std::collections::HashMap;

use crate::budget::MemoryBudget;
use crate::connection::{ConnectionConfig, ConnectionTracker};
use crate::flow::{ConnectionId, MuteSpan, StreamEvent, is_mcp_pipe};
use crate::genai::{
    CallBuilder, CallConfig, CallRecord, FinishedCall, LegacySessions, McpCall, McpEventStream,
    McpExchange, McpStdio, McpStreamEvent, MessagePiece, ProcessRef, WsSession, identify,
    identify_mcp, identify_websocket, is_event_stream_request,
};
use crate::http::{AbortReason, ExchangeKey, HttpEvent};

/// Every knob of the pipeline. Defaults suit a host tracer: content capture and token
/// estimation off, memory bounded per connection and per call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Fill `CallRecord::content` (opt-in: prompts and completions are sensitive).
    pub capture_content: bool,
    /// Estimate tokens with a tokenizer when a response has no usage (`usage.estimated`).
    pub estimate_missing_usage: bool,
    /// Connections (and their calls) idle this long are ended by [`Pipeline::tick`].
    pub idle_timeout_ns: u64,
    /// Largest HTTP head.
    pub header_cap: usize,
    /// Request body bytes kept per call.
    pub request_body_cap: usize,
    /// Non-streamed response body bytes kept per call.
    pub response_body_cap: usize,
    /// Largest single stream event (SSE event, NDJSON line, array element, frame).
    pub stream_event_cap: usize,
    /// Largest decompressed body.
    pub max_decompressed_bytes: u64,
    /// Generated text kept per call (content capture, estimation).
    pub output_text_cap: usize,
    /// Chunk arrival times kept per call.
    pub max_chunk_times: usize,
    pub max_connections: usize,
    pub max_pending_requests: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let conn = ConnectionConfig::default();
        let call = CallConfig::default();
        PipelineConfig {
            capture_content: call.capture_content,
            estimate_missing_usage: call.estimate_missing_usage,
            idle_timeout_ns: conn.idle_timeout_ns,
            header_cap: conn.header_cap,
            request_body_cap: call.request_body_cap,
            response_body_cap: call.response_body_cap,
            stream_event_cap: call.stream_event_cap,
            max_decompressed_bytes: conn.max_decompressed_bytes,
            output_text_cap: call.output_text_cap,
            max_chunk_times: call.max_chunk_times,
            max_connections: conn.max_connections,
            max_pending_requests: conn.max_pending_requests,
        }
    }
}

impl PipelineConfig {
    fn connection(&self) -> ConnectionConfig {
        ConnectionConfig {
            idle_timeout_ns: self.idle_timeout_ns,
            header_cap: self.header_cap,
            max_decompressed_bytes: self.max_decompressed_bytes,
            max_connections: self.max_connections,
            max_pending_requests: self.max_pending_requests,
            ..ConnectionConfig::default()
        }
    }

    fn call(&self, budget: &MemoryBudget) -> CallConfig {
        CallConfig {
            budget: budget.clone(),
            capture_content: self.capture_content,
            estimate_missing_usage: self.estimate_missing_usage,
            request_body_cap: self.request_body_cap,
            response_body_cap: self.response_body_cap,
            stream_event_cap: self.stream_event_cap,
            output_text_cap: self.output_text_cap,
            max_chunk_times: self.max_chunk_times,
        }
    }
}

/// Counters of the whole pipeline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Call records produced.
    pub calls: u64,
    /// Records flagged `truncated` / `incomplete`, and records ending in an error.
    pub truncated_calls: u64,
    pub incomplete_calls: u64,
    pub error_calls: u64,
    /// HTTP requests that are not LLM API calls.
    pub non_llm_requests: u64,
    /// Malformed HTTP framing.
    pub http_parse_errors: u64,
    /// Stream events or bodies of LLM calls that were not valid JSON / frames.
    pub body_parse_errors: u64,
    pub server_connections: u64,
    pub non_http_connections: u64,
    /// Calls dropped because bytes were lost in a head or in body framing.
    pub dropped_by_gap: u64,
    pub unmatched_responses: u64,
    pub evicted_connections: u64,
    pub connections_tracked: u64,
    /// Client connections speaking HTTP/2.
    pub http2_connections: u64,
    /// HTTP/2 streams skipped because their headers could not be decoded reliably
    /// (connection start not captured, bytes lost outside DATA payloads).
    pub http2_streams_skipped: u64,
    /// Idle HTTP/2 connections whose kept HPACK state was forgotten (too many idle ones).
    pub http2_states_dropped: u64,
    /// Client connections upgraded to WebSocket.
    pub websocket_connections: u64,
    /// WebSocket connections given up on invalid frames.
    pub websocket_errors: u64,
    /// WebSocket connections given up because capture lost bytes of them (their calls in
    /// flight are dropped).
    pub websocket_gaps: u64,
    /// WebSocket messages dropped past the size cap (their calls are flagged truncated).
    pub websocket_messages_truncated: u64,
    /// MCP requests and notifications reported, and those dropped because the daemon did not
    /// take them in time.
    pub mcp_calls: u64,
    pub mcp_calls_dropped: u64,
    /// MCP stdio channels (an agent's pipes to a server it spawned) seen, and their JSON-RPC
    /// lines lost (not JSON, or cut by lost bytes or the size cap).
    pub mcp_stdio_channels: u64,
    pub mcp_stdio_lines_lost: u64,
    /// Connections and calls currently held.
    pub open_connections: u64,
    pub calls_in_flight: u64,
    /// Bytes the bodies of calls in flight hold now, and body growths refused because the
    /// memory budget was spent (each cut a body and marked its call truncated).
    pub body_bytes_held: u64,
    pub budget_refusals: u64,
}

/// Connection tracking, HTTP, stream framing and GenAI extraction in one object.
pub struct Pipeline {
    tracker: ConnectionTracker,
    calls: HashMap<ExchangeKey, CallBuilder>,
    /// LLM WebSockets (Responses, Realtime), by their upgrade exchange.
    sockets: HashMap<ExchangeKey, WsSession>,
    /// MCP exchanges (Streamable HTTP) in flight, and the MCP calls they finished since the
    /// last [`Pipeline::take_mcp_calls`] (bounded).
    mcp: HashMap<ExchangeKey, McpExchange>,
    mcp_done: Vec<McpCall>,
    /// Event streams that may be (or are) legacy HTTP+SSE MCP sessions.
    mcp_streams: HashMap<ExchangeKey, McpEventStream>,
    /// Legacy MCP sessions: requests POSTed to an endpoint, waiting for the stream's answers.
    mcp_legacy: LegacySessions,
    /// MCP over stdio: the pipe connections, which are JSON-RPC lines rather than HTTP.
    mcp_stdio: McpStdio,
    call_config: CallConfig,
    idle_timeout_ns: u64,
    stats: PipelineStats,
    scratch: Vec<HttpEvent>,
    /// Plain-HTTP connections whose first request was not an LLM call, for capture to stop
    /// copying (bounded: the rest are copied and parsed as before).
    not_llm: Vec<ConnectionId>,
    /// TLS connections whose latest request was neither an LLM nor an MCP call (bounded):
    /// candidates for a mute until their next request.
    quiet: Vec<ConnectionId>,
}

/// Event streams followed at once as possible legacy MCP sessions (they live long and may be
/// idle: bounded by count, not by an idle timeout).
const MCP_STREAMS_MAX: usize = 256;

/// Most MCP calls held between two [`Pipeline::take_mcp_calls`] (the daemon takes them after
/// every batch; past it they are counted as dropped).
const MCP_DONE_MAX: usize = 4096;

/// Most not-LLM plain connections remembered between two [`Pipeline::take_not_llm_connections`].
const NOT_LLM_MAX: usize = 4096;

impl Pipeline {
    pub fn new(config: PipelineConfig) -> Self {
        Self::with_budget(config, MemoryBudget::unlimited())
    }

    /// A pipeline whose call bodies share `budget` (`--memory-limit`).
    pub fn with_budget(config: PipelineConfig, budget: MemoryBudget) -> Self {
        Pipeline {
            tracker: ConnectionTracker::new(config.connection()),
            calls: HashMap::new(),
            sockets: HashMap::new(),
            mcp: HashMap::new(),
            mcp_done: Vec::new(),
            mcp_streams: HashMap::new(),
            mcp_legacy: LegacySessions::default(),
            mcp_stdio: McpStdio::new(config.capture_content, &budget),
            call_config: config.call(&budget),
            idle_timeout_ns: config.idle_timeout_ns,
            stats: PipelineStats::default(),
            scratch: Vec::new(),
            not_llm: Vec::new(),
            quiet: Vec::new(),
        }
    }

    /// TLS connections capture may stop copying, since the last call: those the connection
    /// stage ignores for good, and HTTP/1 clients whose latest request was not an LLM call
    /// and that have nothing of interest in flight (an LLM, MCP or WebSocket exchange).
    pub fn take_mutable_connections(&mut self) -> Vec<(ConnectionId, MuteSpan)> {
        let mut out: Vec<(ConnectionId, MuteSpan)> = self
            .tracker
            .take_ignored()
            .into_iter()
            .filter(|conn| !conn.is_plain_tcp())
            .map(|conn| (conn, MuteSpan::UntilClose))
            .collect();
        if self.quiet.is_empty() {
            return out;
        }
        let busy: std::collections::HashSet<ConnectionId> = self
            .calls
            .keys()
            .chain(self.mcp.keys())
            .chain(self.sockets.keys())
            .map(|key| key.conn)
            .collect();
        let mut quiet = std::mem::take(&mut self.quiet);
        quiet.sort_unstable();
        quiet.dedup();
        out.extend(
            quiet
                .into_iter()
                .filter(|conn| !busy.contains(conn) && self.tracker.is_http1_client(*conn))
                .map(|conn| (conn, MuteSpan::UntilRequest)),
        );
        out
    }

    /// Plain-HTTP connections whose first request was not an LLM API call since the last
    /// call: capture can stop copying them (see `capture::Tracer::ignore_plain_connection`).
    pub fn take_not_llm_connections(&mut self) -> Vec<ConnectionId> {
        std::mem::take(&mut self.not_llm)
    }

    /// MCP calls finished since the last call (tool calls, initialize, lists...).
    pub fn take_mcp_calls(&mut self) -> Vec<McpCall> {
        std::mem::take(&mut self.mcp_done)
    }

    /// Feeds one captured event; completed calls are appended to `out`.
    pub fn push(&mut self, ev: StreamEvent, out: &mut Vec<CallRecord>) {
        if is_mcp_pipe(ev.conn().conn) {
            let mut done = Vec::new();
            self.mcp_stdio.push(ev, &mut done);
            self.push_mcp(done);
            return;
        }
        let mut events = std::mem::take(&mut self.scratch);
        self.tracker.push(ev, &mut events);
        self.apply(&mut events, out);
        self.scratch = events;
    }

    /// Ends connections and calls idle for longer than `idle_timeout_ns`.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<CallRecord>) {
        let mut events = std::mem::take(&mut self.scratch);
        self.tracker.tick(now_ns, &mut events);
        self.apply(&mut events, out);
        self.scratch = events;
        // Calls whose exchange can no longer complete (their connection state is gone).
        let timeout = self.idle_timeout_ns;
        let stale: Vec<ExchangeKey> = self
            .calls
            .iter()
            .filter(|(_, c)| now_ns.saturating_sub(c.last_ns) > timeout)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            if let Some(call) = self.calls.remove(&key) {
                self.emit(call, Some((AbortReason::IdleTimeout, now_ns)), out);
            }
        }
        let stale: Vec<ExchangeKey> = self
            .mcp
            .iter()
            .filter(|(_, x)| now_ns.saturating_sub(x.last_ns) > timeout)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            if let Some(exchange) = self.mcp.remove(&key) {
                self.end_mcp(exchange, now_ns, Some(AbortReason::IdleTimeout));
            }
        }
        let mut done = Vec::new();
        self.mcp_stdio.tick(now_ns, timeout, &mut done);
        self.push_mcp(done);
    }

    /// Flushes every call in flight (shutdown).
    pub fn finish(&mut self, out: &mut Vec<CallRecord>) {
        let now = self.calls.values().map(|c| c.last_ns).max().unwrap_or(0);
        let mut events = std::mem::take(&mut self.scratch);
        self.tracker.finish(now, &mut events);
        self.apply(&mut events, out);
        self.scratch = events;
        let mut rest: Vec<(ExchangeKey, CallBuilder)> = self.calls.drain().collect();
        rest.sort_by_key(|(k, _)| *k);
        for (_, call) in rest {
            self.emit(call, Some((AbortReason::Shutdown, now)), out);
        }
        let mut rest: Vec<(ExchangeKey, McpExchange)> = self.mcp.drain().collect();
        rest.sort_by_key(|(k, _)| *k);
        for (_, exchange) in rest {
            self.end_mcp(exchange, now, Some(AbortReason::Shutdown));
        }
        self.mcp_streams.clear();
        let mut done = Vec::new();
        self.mcp_legacy.close_all(now, &mut done);
        self.push_mcp(done);
        let mut done = Vec::new();
        self.mcp_stdio.finish(now, &mut done);
        self.push_mcp(done);
    }

    /// Bytes of an event stream: its endpoint opens a legacy MCP session, its messages answer
    /// the session's requests; a stream that is not MCP is dropped.
    fn mcp_stream_body(&mut self, key: ExchangeKey, data: &[u8], ts_ns: u64, cfg: &CallConfig) {
        let Some(stream) = self.mcp_streams.get_mut(&key) else {
            return;
        };
        let mut events = Vec::new();
        if !stream.feed(data, ts_ns, &mut events) {
            self.mcp_streams.remove(&key);
            return;
        }
        let pid = stream.pid;
        let endpoint = stream.endpoint.clone();
        let target = stream.target();
        let mut done = Vec::new();
        for event in events {
            match event {
                McpStreamEvent::Endpoint(endpoint) => self.mcp_legacy.open(
                    pid,
                    endpoint,
                    target.clone(),
                    cfg.capture_content,
                    ts_ns,
                    &mut done,
                ),
                McpStreamEvent::Message(message) => {
                    if let Some(endpoint) = &endpoint {
                        self.mcp_legacy
                            .answer(pid, endpoint, &message, ts_ns, &mut done);
                    }
                }
            }
        }
        self.push_mcp(done);
    }

    /// An event stream ended; a legacy session's requests still waiting end with it.
    fn end_mcp_stream(&mut self, key: ExchangeKey, ts_ns: u64, abort: Option<AbortReason>) {
        let Some(stream) = self.mcp_streams.remove(&key) else {
            return;
        };
        self.stats.body_parse_errors += stream.bad_events;
        if let Some(endpoint) = &stream.endpoint {
            let mut done = Vec::new();
            self.mcp_legacy
                .close(stream.pid, endpoint, ts_ns, abort, &mut done);
            self.push_mcp(done);
        }
    }

    fn end_mcp(&mut self, exchange: McpExchange, ts_ns: u64, abort: Option<AbortReason>) {
        self.stats.body_parse_errors += exchange.bad_messages;
        let mut done = Vec::new();
        exchange.end(ts_ns, abort, &mut done);
        self.push_mcp(done);
    }

    fn push_mcp(&mut self, done: Vec<McpCall>) {
        for call in done {
            if self.mcp_done.len() < MCP_DONE_MAX {
                self.stats.mcp_calls += 1;
                self.mcp_done.push(call);
            } else {
                self.stats.mcp_calls_dropped += 1;
            }
        }
    }

    pub fn stats(&self) -> PipelineStats {
        let t = self.tracker.stats();
        PipelineStats {
            http_parse_errors: t.http_parse_errors,
            server_connections: t.server_connections,
            non_http_connections: t.non_http_connections,
            dropped_by_gap: t.dropped_by_gap,
            unmatched_responses: t.unmatched_responses,
            evicted_connections: t.evicted_connections,
            connections_tracked: t.connections_tracked,
            http2_connections: t.http2_connections,
            http2_streams_skipped: t.http2_streams_skipped,
            http2_states_dropped: t.http2_states_dropped,
            websocket_connections: t.websocket_connections,
            websocket_errors: t.websocket_errors,
            websocket_gaps: t.websocket_gaps,
            websocket_messages_truncated: t.websocket_messages_truncated,
            open_connections: self.tracker.connections() as u64,
            calls_in_flight: (self.calls.len()
                + self
                    .sockets
                    .values()
                    .map(WsSession::calls_in_flight)
                    .sum::<usize>()) as u64,
            body_bytes_held: self.call_config.budget.used() as u64,
            budget_refusals: self.call_config.budget.refusals(),
            mcp_stdio_channels: self.mcp_stdio.stats().channels,
            mcp_stdio_lines_lost: self.mcp_stdio.stats().lines_lost,
            ..self.stats.clone()
        }
    }

    fn emit(
        &mut self,
        call: CallBuilder,
        abort: Option<(AbortReason, u64)>,
        out: &mut Vec<CallRecord>,
    ) {
        self.stats.body_parse_errors += call.bad_events;
        match call.finish(abort, &self.call_config) {
            Some(record) => {
                self.stats.calls += 1;
                self.stats.truncated_calls += u64::from(record.truncated);
                self.stats.incomplete_calls += u64::from(record.incomplete);
                self.stats.error_calls += u64::from(record.error.is_some());
                out.push(record);
            }
            None => self.stats.non_llm_requests += 1,
        }
    }

    /// Calls a WebSocket session finished; those whose socket lost bytes yield no record.
    fn emit_finished(&mut self, done: Vec<FinishedCall>, out: &mut Vec<CallRecord>) {
        for (call, abort) in done {
            if let Some((AbortReason::FramingLost, _)) = abort {
                log::debug!("WebSocket call dropped, capture lost bytes of its socket");
                self.stats.body_parse_errors += call.bad_events;
            } else {
                self.emit(call, abort, out);
            }
        }
    }

    fn apply(&mut self, events: &mut Vec<HttpEvent>, out: &mut Vec<CallRecord>) {
        let cfg = self.call_config.clone();
        for ev in events.drain(..) {
            match ev {
                HttpEvent::Request {
                    key,
                    head,
                    ts_entry_ns,
                    tid,
                    comm,
                } => match identify(&head) {
                    Some(target) => {
                        let call = CallBuilder::new(
                            target,
                            &head,
                            key.conn.conn,
                            ts_entry_ns,
                            ProcessRef {
                                pid: key.conn.pid,
                                tid,
                                comm,
                            },
                            &cfg,
                        );
                        self.calls.insert(key, call);
                    }
                    None if let Some((endpoint, target)) =
                        self.mcp_legacy.target_for(key.conn.pid, &head) =>
                    {
                        let mut exchange = McpExchange::new(
                            target,
                            &head,
                            key.conn.conn,
                            ts_entry_ns,
                            ProcessRef {
                                pid: key.conn.pid,
                                tid,
                                comm,
                            },
                            cfg.capture_content,
                            &cfg.budget,
                        );
                        exchange.set_legacy_endpoint(endpoint);
                        self.mcp.insert(key, exchange);
                    }
                    None if is_event_stream_request(&head) => {
                        if self.mcp_streams.len() >= MCP_STREAMS_MAX
                            && let Some(oldest) = self
                                .mcp_streams
                                .iter()
                                .min_by_key(|(_, s)| s.last_ns)
                                .map(|(k, _)| *k)
                        {
                            self.end_mcp_stream(
                                oldest,
                                ts_entry_ns,
                                Some(AbortReason::IdleTimeout),
                            );
                        }
                        self.mcp_streams
                            .insert(key, McpEventStream::new(&head, key.conn.pid, ts_entry_ns));
                    }
                    None if let Some(target) = identify_mcp(&head) => {
                        let exchange = McpExchange::new(
                            target,
                            &head,
                            key.conn.conn,
                            ts_entry_ns,
                            ProcessRef {
                                pid: key.conn.pid,
                                tid,
                                comm,
                            },
                            cfg.capture_content,
                            &cfg.budget,
                        );
                        self.mcp.insert(key, exchange);
                    }
                    None => {
                        self.stats.non_llm_requests += 1;
                        if key.seq == 0
                            && key.conn.is_plain_tcp()
                            && self.not_llm.len() < NOT_LLM_MAX
                        {
                            self.not_llm.push(key.conn);
                        }
                        // A WebSocket upgrade is judged at its answer (`identify_websocket`).
                        if !key.conn.is_plain_tcp()
                            && head.headers.get("upgrade").is_none()
                            && self.quiet.len() < NOT_LLM_MAX
                        {
                            self.quiet.push(key.conn);
                        }
                    }
                },
                HttpEvent::RequestBody { key, data } => {
                    if let Some(c) = self.calls.get_mut(&key) {
                        c.request_body(&data, &cfg);
                    } else if let Some(x) = self.mcp.get_mut(&key) {
                        x.request_body(&data);
                    }
                }
                HttpEvent::RequestEnd { key, ts_ns } if self.mcp.contains_key(&key) => {
                    if let Some(x) = self.mcp.get_mut(&key) {
                        if !x.request_end(ts_ns) {
                            // Not JSON-RPC after all: an ordinary request.
                            self.mcp.remove(&key);
                            self.stats.non_llm_requests += 1;
                        } else if let Some(endpoint) = x.legacy_endpoint().map(str::to_string) {
                            // Legacy HTTP+SSE: the answers come on the session's stream.
                            let requests = x.take_requests();
                            let mut done = Vec::new();
                            self.mcp_legacy.await_answers(
                                key.conn.pid,
                                &endpoint,
                                requests,
                                &mut done,
                            );
                            self.push_mcp(done);
                        }
                    }
                }
                HttpEvent::RequestEnd { key, ts_ns } => {
                    if let Some(c) = self.calls.get_mut(&key) {
                        c.request_end(ts_ns, &cfg);
                        if c.is_complete()
                            && let Some(c) = self.calls.remove(&key)
                        {
                            self.emit(c, None, out);
                        }
                    }
                }
                HttpEvent::Response { key, head, ts_ns } => {
                    if let Some(c) = self.calls.get_mut(&key) {
                        c.response_head(&head, ts_ns, &cfg);
                    } else if let Some(x) = self.mcp.get_mut(&key) {
                        x.response_head(&head, ts_ns);
                    } else if let Some(s) = self.mcp_streams.get_mut(&key)
                        && !s.response_head(&head)
                    {
                        self.mcp_streams.remove(&key);
                    }
                }
                HttpEvent::ResponseBody { key, data, ts_ns } => {
                    if let Some(c) = self.calls.get_mut(&key) {
                        c.response_body(&data, ts_ns, &cfg);
                    } else if let Some(x) = self.mcp.get_mut(&key) {
                        let mut done = Vec::new();
                        x.response_body(&data, ts_ns, &mut done);
                        self.push_mcp(done);
                    } else if self.mcp_streams.contains_key(&key) {
                        self.mcp_stream_body(key, &data, ts_ns, &cfg);
                    }
                }
                HttpEvent::ResponseEnd { key, ts_ns } if self.mcp_streams.contains_key(&key) => {
                    self.end_mcp_stream(key, ts_ns, None);
                }
                HttpEvent::ResponseEnd { key, ts_ns } if self.mcp.contains_key(&key) => {
                    if let Some(x) = self.mcp.remove(&key) {
                        self.end_mcp(x, ts_ns, None);
                    }
                }
                HttpEvent::ResponseEnd { key, ts_ns } => {
                    if let Some(c) = self.calls.get_mut(&key) {
                        c.response_end(ts_ns);
                        if c.is_complete()
                            && let Some(c) = self.calls.remove(&key)
                        {
                            self.emit(c, None, out);
                        }
                    }
                }
                HttpEvent::Lost { key, direction } => {
                    if let Some(c) = self.calls.get_mut(&key) {
                        c.lost(direction);
                    } else if let Some(x) = self.mcp.get_mut(&key) {
                        x.lost(direction);
                    }
                }
                HttpEvent::Truncated { key, direction } => {
                    if let Some(c) = self.calls.get_mut(&key) {
                        c.truncated(direction);
                    } else if let Some(x) = self.mcp.get_mut(&key) {
                        x.lost(direction);
                    }
                }
                HttpEvent::WebSocketOpen {
                    key,
                    request,
                    response,
                    ts_ns,
                    comm,
                } => {
                    if let Some(target) = identify_websocket(&request) {
                        let session = WsSession::new(
                            target,
                            request,
                            response,
                            key.conn.conn,
                            key.conn.pid,
                            comm,
                            ts_ns,
                        );
                        self.sockets.insert(key, session);
                    }
                }
                HttpEvent::WebSocketMessage {
                    key,
                    direction,
                    text,
                    data,
                    first,
                    last,
                    truncated,
                    ts_entry_ns,
                    ts_ns,
                    tid,
                } => {
                    if let Some(session) = self.sockets.get_mut(&key) {
                        let piece = MessagePiece {
                            direction,
                            text,
                            data: &data,
                            first,
                            last,
                            truncated,
                            ts_entry_ns,
                            ts_ns,
                            tid,
                        };
                        let mut done = Vec::new();
                        session.message(piece, &cfg, &mut done);
                        self.emit_finished(done, out);
                    }
                }
                HttpEvent::WebSocketClosed { key, ts_ns, reason } => {
                    if let Some(session) = self.sockets.remove(&key) {
                        self.stats.body_parse_errors += session.bad_messages;
                        let mut done = Vec::new();
                        session.close(reason, ts_ns, &mut done);
                        self.emit_finished(done, out);
                    }
                }
                HttpEvent::Aborted { key, ts_ns, reason }
                    if self.mcp_streams.contains_key(&key) =>
                {
                    self.end_mcp_stream(key, ts_ns, Some(reason));
                }
                HttpEvent::Aborted { key, ts_ns, reason } if self.mcp.contains_key(&key) => {
                    if let Some(x) = self.mcp.remove(&key) {
                        self.end_mcp(x, ts_ns, Some(reason));
                    }
                }
                HttpEvent::Aborted { key, ts_ns, reason } => {
                    if let Some(c) = self.calls.remove(&key) {
                        if reason == AbortReason::FramingLost {
                            // Never guess: a call whose framing was lost yields no record.
                            log::debug!(
                                "{}#{}: call dropped, capture lost bytes in its framing",
                                key.conn,
                                key.seq
                            );
                            self.stats.body_parse_errors += c.bad_events;
                        } else {
                            self.emit(c, Some((reason, ts_ns)), out);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// WebSocket connections through the whole pipeline (Responses over WebSocket, Realtime).
#[cfg(test)]
mod websocket_tests;

/// HTTP/2 connections through the whole pipeline (many streams, resets, GOAWAY, lost HPACK).
#[cfg(test)]
mod h2_tests;
