//! CallRecord → span (GenAI semconv v1.41 inference/embeddings client span).
//!
//! The span is built once, output-neutral, and every output (OTLP, JSONL, console) renders the
//! same [`CallSpan`], so they never disagree on a value.

use std::sync::Arc;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

use super::{
    attributes::{AttrValue, Attributes, keys},
    clock::ClockOffset,
    content,
    openinference::{self, FlattenedAttributes},
    redact,
    resource::ProcessResource,
    semconv::{self, Semconv},
};
use crate::genai::{AgentRecord, CallRecord, McpCall, McpTransport, Operation, ToolProcess};

/// Span status (success stays `Unset`, as the conventions ask of instrumentations).
#[derive(Clone, Debug, PartialEq)]
pub enum SpanStatus {
    Unset,
    Error { message: String },
}

/// Span kind: calls go to a server, agent turns and tool executions happen in the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Client,
    Internal,
}

/// One finished call (or agent turn, or tool execution) as a span.
#[derive(Clone, Debug, PartialEq)]
pub struct CallSpan {
    pub name: String,
    pub kind: Kind,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The caller's span when the request carried a valid W3C `traceparent`, else the agent
    /// turn (`invoke_agent`) the call belongs to.
    pub parent_span_id: Option<SpanId>,
    /// The parent comes from the application (`traceparent`), not from llmtap.
    pub parent_is_remote: bool,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub status: SpanStatus,
    pub attributes: Attributes,
    /// Timed events (processes a tool started).
    pub events: Vec<SpanEvent>,
    /// Attributes whose keys carry list indices (OpenInference's flattened messages, with
    /// `--compat openinference`); outputs write them after [`Self::attributes`].
    pub flattened_attributes: FlattenedAttributes,
    pub resource: Arc<ProcessResource>,
}

/// A timed event of a span.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanEvent {
    pub name: &'static str,
    pub time_unix_nanos: u64,
    pub attributes: Attributes,
}

/// The event of a process a tool started.
pub const PROCESS_EVENT: &str = "llmtap.process";

/// Content capture settings (`gen_ai.input.messages` & co.).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentCapture {
    pub enabled: bool,
    /// Each content attribute is fitted to at most this many bytes (valid JSON, cut at
    /// message and part boundaries).
    pub max_bytes: usize,
}

/// Trace and parent span ids from a W3C `traceparent` header value, if valid.
///
/// Version `00` must be exactly `00-<32 hex>-<16 hex>-<2 hex>`; later versions may append
/// `-…` fields; version `ff`, upper-case hex and all-zero ids are invalid.
pub fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId)> {
    let value = value.trim();
    let mut parts = value.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version, 2) || version == "ff" || !lower_hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if !lower_hex(trace, 32) || !lower_hex(parent, 16) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(parent).ok()?;
    (trace_id != TraceId::INVALID && span_id != SpanId::INVALID).then_some((trace_id, span_id))
}

/// APIs whose calls get the `openai.*` attributes.
fn openai_api_type(api: &str) -> Option<&'static str> {
    match api {
        "chat_completions" => Some("chat_completions"),
        "responses" => Some("responses"),
        _ => None,
    }
}

/// The `openai.*` attributes belong to the OpenAI provider refinement of the conventions
/// (OpenAI and Azure OpenAI); OpenAI-compatible servers of other providers do not get them.
pub fn is_openai_provider(provider: &str) -> bool {
    provider == "openai" || provider == "azure.ai.openai"
}

/// Span name: `{operation} {request model}`, or `{operation}` without a model.
pub fn span_name(record: &CallRecord) -> String {
    match record.request.model.as_deref().filter(|m| !m.is_empty()) {
        Some(model) => format!("{} {model}", record.operation.as_str()),
        None => record.operation.as_str().to_string(),
    }
}

/// The model a call is billed for: the response's (the concrete version) else the request's.
pub fn billed_model(record: &CallRecord) -> Option<&str> {
    record
        .response
        .model
        .as_deref()
        .filter(|m| !m.is_empty())
        .or(record.request.model.as_deref().filter(|m| !m.is_empty()))
}

/// Every span attribute of a call record, in a stable order. String values that may echo user
/// input (error messages, content) are scrubbed of credentials.
pub fn call_attributes(
    record: &CallRecord,
    content: ContentCapture,
    cost_usd: Option<f64>,
) -> Attributes {
    let mut a: Attributes = Vec::with_capacity(40);
    let str_ = |s: &str| AttrValue::Str(s.to_string());
    a.push((keys::OPERATION_NAME, str_(record.operation.as_str())));
    a.push((keys::PROVIDER_NAME, str_(&record.provider)));
    let req = &record.request;
    if let Some(model) = req.model.as_deref().filter(|m| !m.is_empty()) {
        a.push((keys::REQUEST_MODEL, str_(model)));
    }
    if let Some(address) = record.server_address.as_deref().filter(|s| !s.is_empty()) {
        a.push((keys::SERVER_ADDRESS, str_(address)));
        if let Some(port) = record.server_port {
            a.push((keys::SERVER_PORT, AttrValue::Int(i64::from(port))));
        }
    }
    if let Some(address) = &record.network_peer_address {
        a.push((keys::NETWORK_PEER_ADDRESS, str_(address)));
        if let Some(port) = record.network_peer_port {
            a.push((keys::NETWORK_PEER_PORT, AttrValue::Int(i64::from(port))));
        }
    }
    if req.stream {
        a.push((keys::REQUEST_STREAM, AttrValue::Bool(true)));
    }
    let doubles = [
        (keys::REQUEST_TEMPERATURE, req.temperature),
        (keys::REQUEST_TOP_P, req.top_p),
        (keys::REQUEST_TOP_K, req.top_k),
        (keys::REQUEST_FREQUENCY_PENALTY, req.frequency_penalty),
        (keys::REQUEST_PRESENCE_PENALTY, req.presence_penalty),
    ];
    for (key, value) in doubles {
        if let Some(v) = value {
            a.push((key, AttrValue::Double(v)));
        }
    }
    if let Some(n) = req.max_tokens {
        a.push((keys::REQUEST_MAX_TOKENS, AttrValue::count(n)));
    }
    if !req.stop_sequences.is_empty() {
        a.push((
            keys::REQUEST_STOP_SEQUENCES,
            AttrValue::StrArray(req.stop_sequences.clone()),
        ));
    }
    if let Some(seed) = req.seed {
        a.push((keys::REQUEST_SEED, AttrValue::Int(seed)));
    }
    if let Some(n) = req.choice_count.filter(|n| *n != 1) {
        a.push((keys::REQUEST_CHOICE_COUNT, AttrValue::count(n)));
    }
    if !req.encoding_formats.is_empty() {
        a.push((
            keys::REQUEST_ENCODING_FORMATS,
            AttrValue::StrArray(req.encoding_formats.clone()),
        ));
    }
    if let Some(t) = &req.output_type {
        a.push((keys::OUTPUT_TYPE, str_(t)));
    }
    if let Some(id) = &req.conversation_id {
        a.push((keys::CONVERSATION_ID, str_(id)));
    }

    let resp = &record.response;
    if let Some(id) = resp.id.as_deref().filter(|s| !s.is_empty()) {
        a.push((keys::RESPONSE_ID, str_(id)));
    }
    if let Some(model) = resp.model.as_deref().filter(|s| !s.is_empty()) {
        a.push((keys::RESPONSE_MODEL, str_(model)));
    }
    if !resp.finish_reasons.is_empty() {
        a.push((
            keys::RESPONSE_FINISH_REASONS,
            AttrValue::StrArray(resp.finish_reasons.clone()),
        ));
    }
    if let Some(ttfc) = record.timing.time_to_first_chunk_s() {
        a.push((keys::RESPONSE_TIME_TO_FIRST_CHUNK, AttrValue::Double(ttfc)));
    }
    if let Some(dim) = resp.embeddings_dimension {
        a.push((keys::EMBEDDINGS_DIMENSION_COUNT, AttrValue::count(dim)));
    }

    let usage = &record.usage;
    let counts = [
        (keys::USAGE_INPUT_TOKENS, usage.input_tokens),
        (keys::USAGE_OUTPUT_TOKENS, usage.output_tokens),
        (
            keys::USAGE_CACHE_READ_INPUT_TOKENS,
            usage.cache_read_input_tokens,
        ),
        (
            keys::USAGE_CACHE_CREATION_INPUT_TOKENS,
            usage.cache_creation_input_tokens,
        ),
        (
            keys::USAGE_REASONING_OUTPUT_TOKENS,
            usage.reasoning_output_tokens,
        ),
    ];
    for (key, value) in counts {
        if let Some(n) = value {
            a.push((key, AttrValue::count(n)));
        }
    }

    if is_openai_provider(&record.provider) {
        if let Some(api_type) = openai_api_type(&record.api) {
            a.push((keys::OPENAI_API_TYPE, str_(api_type)));
        }
        if let Some(tier) = req.service_tier.as_deref().filter(|t| *t != "auto") {
            a.push((keys::OPENAI_REQUEST_SERVICE_TIER, str_(tier)));
        }
        if let Some(tier) = &resp.service_tier {
            a.push((keys::OPENAI_RESPONSE_SERVICE_TIER, str_(tier)));
        }
        if let Some(fp) = &resp.system_fingerprint {
            a.push((keys::OPENAI_RESPONSE_SYSTEM_FINGERPRINT, str_(fp)));
        }
    }

    if let Some(error) = &record.error {
        a.push((
            keys::ERROR_TYPE,
            str_(&redact::scrub_text(&error.error_type)),
        ));
    }
    if let Some(status) = record.http_status {
        a.push((
            keys::HTTP_RESPONSE_STATUS_CODE,
            AttrValue::Int(i64::from(status)),
        ));
    }
    if !record.http_version.is_empty() {
        a.push((keys::NETWORK_PROTOCOL_VERSION, str_(&record.http_version)));
    }

    if usage.estimated {
        a.push((keys::LLMTAP_USAGE_ESTIMATED, AttrValue::Bool(true)));
    }
    if record.truncated {
        a.push((keys::LLMTAP_CALL_TRUNCATED, AttrValue::Bool(true)));
    }
    if record.incomplete {
        a.push((keys::LLMTAP_CALL_INCOMPLETE, AttrValue::Bool(true)));
    }
    if let Some(n) = record.stream_chunks {
        a.push((keys::LLMTAP_STREAM_CHUNKS, AttrValue::count(n)));
    }
    if !resp.tool_calls.is_empty() {
        a.push((
            keys::LLMTAP_TOOL_CALLS,
            AttrValue::StrArray(resp.tool_calls.clone()),
        ));
    }
    if let Some(cost) = cost_usd {
        a.push((keys::LLMTAP_USAGE_COST_USD, AttrValue::Double(cost)));
    }

    if content.enabled
        && let Some(c) = &record.content
    {
        let fields = [
            (keys::INPUT_MESSAGES, &c.input_messages),
            (keys::OUTPUT_MESSAGES, &c.output_messages),
            (keys::SYSTEM_INSTRUCTIONS, &c.system_instructions),
            (keys::TOOL_DEFINITIONS, &c.tool_definitions),
        ];
        let mut cut = Vec::new();
        for (key, value) in fields {
            let Some(value) = value else {
                continue;
            };
            // Scrubbed before fitting, so the limit holds for what is exported.
            match content::fit_json(&content::scrubbed(value), content.max_bytes) {
                Some(fitted) => {
                    if fitted.cut {
                        cut.push(key.to_string());
                    }
                    a.push((key, AttrValue::Str(fitted.json)));
                }
                None => cut.push(key.to_string()),
            }
        }
        if !cut.is_empty() {
            a.push((keys::LLMTAP_CONTENT_TRUNCATED, AttrValue::StrArray(cut)));
        }
    }
    a
}

/// Builds spans; owns the id generator and the clock offset.
#[derive(Debug)]
pub struct SpanBuilder {
    clock: ClockOffset,
    content: ContentCapture,
    ids: RandomIdGenerator,
    /// Random per run: agent trace and turn span ids are derived from session and turn keys.
    salt: u64,
    /// v1.41 or the newer conventions (`OTEL_SEMCONV_STABILITY_OPT_IN`).
    semconv: Semconv,
    /// Command lines of processes tools started go on their events (opt-in, redacted).
    command_line: bool,
    /// Add the OpenInference attributes (`--compat openinference`).
    openinference: bool,
}

impl SpanBuilder {
    pub fn new(clock: ClockOffset, content: ContentCapture) -> Self {
        let ids = RandomIdGenerator::default();
        let salt = u64::from_be_bytes(ids.new_span_id().to_bytes());
        Self {
            clock,
            content,
            ids,
            salt,
            semconv: Semconv::default(),
            command_line: false,
            openinference: false,
        }
    }

    /// Puts the (redacted) command line of each process a tool started on its event.
    pub fn with_command_line(mut self, command_line: bool) -> Self {
        self.command_line = command_line;
        self
    }

    /// Spans also carry the OpenInference attributes (`--compat openinference`).
    pub fn with_openinference(mut self, enabled: bool) -> Self {
        self.openinference = enabled;
        self
    }

    /// Call spans in these conventions' names.
    pub fn with_semconv(mut self, semconv: Semconv) -> Self {
        self.semconv = semconv;
        self
    }

    pub fn build(
        &self,
        record: &CallRecord,
        resource: Arc<ProcessResource>,
        cost_usd: Option<f64>,
    ) -> CallSpan {
        let own = record
            .request
            .traceparent
            .as_deref()
            .and_then(parse_traceparent);
        // The application's traceparent wins; else the agent session's trace and turn.
        let (trace_id, parent_span_id, parent_is_remote) = match (own, &record.agent) {
            (Some((trace, parent)), _) => (trace, Some(parent), true),
            (None, Some(link)) => {
                let (trace, remote_parent) = self.session_trace(link.session, &link.traceparent);
                match link.turn {
                    Some(turn) => (trace, Some(self.turn_span_id(turn)), false),
                    None => (trace, remote_parent, remote_parent.is_some()),
                }
            }
            (None, None) => (self.ids.new_trace_id(), None, false),
        };
        let status = match &record.error {
            Some(error) => SpanStatus::Error {
                message: redact::scrub_text(error.message.as_deref().unwrap_or(&error.error_type)),
            },
            None => SpanStatus::Unset,
        };
        let (start, end) = self.times(
            record.timing.request_start_ns,
            record.timing.response_end_ns,
        );
        let genai_attributes = call_attributes(record, self.content, cost_usd);
        // OpenInference reads the v1.41 names, whatever the conventions in force.
        let (compat, flattened_attributes) = if self.openinference {
            openinference::span_attributes(&genai_attributes, Some(&record.api))
        } else {
            Default::default()
        };
        let mut attributes = semconv::span_attributes(genai_attributes, self.semconv);
        attributes.extend(compat);
        CallSpan {
            name: span_name(record),
            kind: Kind::Client,
            trace_id,
            span_id: self.ids.new_span_id(),
            parent_span_id,
            parent_is_remote,
            start_unix_nanos: start,
            end_unix_nanos: end,
            status,
            attributes,
            flattened_attributes,
            events: Vec::new(),
            resource,
        }
    }

    fn times(&self, start_ns: u64, end_ns: u64) -> (u64, u64) {
        self.clock.span_unix_nanos(start_ns, end_ns)
    }

    /// The trace of an agent session: the application's when its first call carried a
    /// `traceparent` (with that span as the remote parent of the session's roots), else one
    /// derived from the session key.
    fn session_trace(
        &self,
        session: u64,
        traceparent: &Option<String>,
    ) -> (TraceId, Option<SpanId>) {
        match traceparent.as_deref().and_then(parse_traceparent) {
            Some((trace, parent)) => (trace, Some(parent)),
            None => {
                let hi = u128::from(mix(self.salt ^ session));
                let lo = u128::from(mix(self.salt.rotate_left(32) ^ session) | 1);
                (TraceId::from((hi << 64) | lo), None)
            }
        }
    }

    /// The `invoke_agent` span id of a turn: derived from its key, so the calls of the turn
    /// can name their parent before the turn (and its span) ends.
    fn turn_span_id(&self, turn: u64) -> SpanId {
        SpanId::from(mix(self.salt.rotate_left(17) ^ turn) | 1)
    }

    /// An `invoke_agent` or `execute_tool` span (or an MCP client span).
    pub fn build_agent(&self, record: &AgentRecord, resource: Arc<ProcessResource>) -> CallSpan {
        let mut span = self.build_agent_genai(record, resource);
        if self.openinference {
            let (compat, flattened) = openinference::span_attributes(&span.attributes, None);
            span.attributes.extend(compat);
            span.flattened_attributes = flattened;
        }
        span
    }

    fn build_agent_genai(&self, record: &AgentRecord, resource: Arc<ProcessResource>) -> CallSpan {
        let str_ = |s: &str| AttrValue::Str(s.to_string());
        match record {
            AgentRecord::Turn(turn) => {
                let (trace_id, remote_parent) = self.session_trace(turn.session, &turn.traceparent);
                let mut a: Attributes = vec![
                    (keys::OPERATION_NAME, str_("invoke_agent")),
                    (keys::PROVIDER_NAME, str_(&turn.provider)),
                ];
                if let Some(model) = turn.model.as_deref().filter(|m| !m.is_empty()) {
                    a.push((keys::REQUEST_MODEL, str_(model)));
                }
                if let Some(id) = &turn.conversation_id {
                    a.push((keys::CONVERSATION_ID, str_(id)));
                }
                if let Some(e) = &turn.error_type {
                    a.push((keys::ERROR_TYPE, str_(&redact::scrub_text(e))));
                }
                a.push((
                    keys::LLMTAP_AGENT_CALLS,
                    AttrValue::count(u64::from(turn.calls)),
                ));
                a.push((
                    keys::LLMTAP_AGENT_TOOL_EXECUTIONS,
                    AttrValue::count(u64::from(turn.tool_executions)),
                ));
                let (start, end) = self.times(turn.start_ns, turn.end_ns);
                CallSpan {
                    name: "invoke_agent".to_string(),
                    kind: Kind::Internal,
                    trace_id,
                    span_id: self.turn_span_id(turn.turn),
                    parent_span_id: remote_parent,
                    parent_is_remote: remote_parent.is_some(),
                    start_unix_nanos: start,
                    end_unix_nanos: end,
                    status: match &turn.error_type {
                        Some(e) => SpanStatus::Error {
                            message: redact::scrub_text(e),
                        },
                        None => SpanStatus::Unset,
                    },
                    attributes: a,
                    events: Vec::new(),
                    flattened_attributes: Vec::new(),
                    resource,
                }
            }
            AgentRecord::Tool(tool) => {
                let (trace_id, remote_parent) =
                    self.session_trace(tool.link.session, &tool.link.traceparent);
                let (parent_span_id, parent_is_remote) = match tool.link.turn {
                    Some(turn) => (Some(self.turn_span_id(turn)), false),
                    None => (remote_parent, remote_parent.is_some()),
                };
                let name = tool.call.name.as_deref().filter(|n| !n.is_empty());
                let mut a: Attributes = vec![
                    (keys::OPERATION_NAME, str_("execute_tool")),
                    (keys::PROVIDER_NAME, str_(&tool.provider)),
                ];
                if let Some(n) = name {
                    a.push((keys::TOOL_NAME, str_(n)));
                }
                if let Some(id) = &tool.call.id {
                    a.push((keys::TOOL_CALL_ID, str_(id)));
                }
                a.push((keys::TOOL_TYPE, str_("function")));
                if self.content.enabled {
                    let values = [
                        (keys::TOOL_CALL_ARGUMENTS, &tool.call.content),
                        (keys::TOOL_CALL_RESULT, &tool.result),
                    ];
                    let mut cut = Vec::new();
                    for (key, value) in values {
                        if let Some(v) = value {
                            // Scrubbed before fitting, so the limit holds for what is exported.
                            let v = redact::scrub_text(v);
                            let (text, was_cut) = content::fit_text(&v, self.content.max_bytes);
                            if was_cut {
                                cut.push(key.to_string());
                            }
                            a.push((key, str_(text)));
                        }
                    }
                    if !cut.is_empty() {
                        a.push((keys::LLMTAP_CONTENT_TRUNCATED, AttrValue::StrArray(cut)));
                    }
                }
                let (start, end) = self.times(tool.start_ns, tool.end_ns);
                CallSpan {
                    name: match name {
                        Some(n) => format!("execute_tool {n}"),
                        None => "execute_tool".to_string(),
                    },
                    kind: Kind::Internal,
                    trace_id,
                    span_id: self.ids.new_span_id(),
                    parent_span_id,
                    parent_is_remote,
                    start_unix_nanos: start,
                    end_unix_nanos: end,
                    status: SpanStatus::Unset,
                    attributes: a,
                    events: self.process_events(&tool.processes),
                    flattened_attributes: Vec::new(),
                    resource,
                }
            }
            AgentRecord::Mcp(call) => self.build_mcp(call, resource),
        }
    }

    /// One event per process a tool started, at its exec: pid, parent, executable, the
    /// command line only when command lines are exported, and how long it ran when it ended.
    fn process_events(&self, processes: &[ToolProcess]) -> Vec<SpanEvent> {
        let str_ = |s: &str| AttrValue::Str(s.to_string());
        processes
            .iter()
            .map(|p| {
                let mut a: Attributes = vec![
                    (keys::PROCESS_PID, AttrValue::count(u64::from(p.pid))),
                    (
                        keys::PROCESS_PARENT_PID,
                        AttrValue::count(u64::from(p.parent_pid)),
                    ),
                    (keys::PROCESS_EXECUTABLE_PATH, str_(&p.executable)),
                ];
                if let Some(name) = std::path::Path::new(&p.executable).file_name() {
                    a.push((keys::PROCESS_EXECUTABLE_NAME, str_(&name.to_string_lossy())));
                }
                if self.command_line && !p.args.is_empty() {
                    a.push((
                        keys::PROCESS_COMMAND_LINE,
                        str_(&redact::redact_command_line(&p.args)),
                    ));
                }
                if let Some(exit) = p.exit_ns {
                    let seconds = exit.saturating_sub(p.start_ns) as f64 / 1e9;
                    a.push((keys::LLMTAP_PROCESS_DURATION, AttrValue::Double(seconds)));
                }
                SpanEvent {
                    name: PROCESS_EVENT,
                    time_unix_nanos: self.times(p.start_ns, p.start_ns).0,
                    attributes: a,
                }
            })
            .collect()
    }

    /// An MCP client span (semconv `mcp.client`): `execute_tool {tool}` for `tools/call`,
    /// else the method (with the prompt's name for `prompts/get`), in the agent session's
    /// trace under its open turn when the process has one.
    fn build_mcp(&self, call: &McpCall, resource: Arc<ProcessResource>) -> CallSpan {
        let str_ = |s: &str| AttrValue::Str(s.to_string());
        let (trace_id, parent_span_id, parent_is_remote) = match &call.agent {
            Some(link) => {
                let (trace, remote_parent) = self.session_trace(link.session, &link.traceparent);
                match link.turn {
                    Some(turn) => (trace, Some(self.turn_span_id(turn)), false),
                    None => (trace, remote_parent, remote_parent.is_some()),
                }
            }
            None => (self.ids.new_trace_id(), None, false),
        };
        let mut a: Attributes = vec![(keys::MCP_METHOD_NAME, str_(&call.method))];
        if call.method == "tools/call" {
            a.push((keys::OPERATION_NAME, str_("execute_tool")));
        }
        let optional = [
            (keys::TOOL_NAME, &call.tool_name),
            (keys::PROMPT_NAME, &call.prompt_name),
            (keys::JSONRPC_REQUEST_ID, &call.request_id),
            (keys::JSONRPC_PROTOCOL_VERSION, &call.jsonrpc_version),
            (keys::MCP_SESSION_ID, &call.session_id),
            (keys::MCP_PROTOCOL_VERSION, &call.protocol_version),
            (keys::RPC_RESPONSE_STATUS_CODE, &call.rpc_status_code),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                a.push((key, str_(&redact::scrub_text(v))));
            }
        }
        if let Some(uri) = &call.resource_uri {
            a.push((keys::MCP_RESOURCE_URI, str_(&redact::scrub_url(uri))));
        }
        match &call.transport {
            McpTransport::Http { version } => {
                a.push((keys::NETWORK_TRANSPORT, str_("tcp")));
                a.push((keys::NETWORK_PROTOCOL_NAME, str_("http")));
                a.push((keys::NETWORK_PROTOCOL_VERSION, str_(version)));
            }
            // The MCP conventions: `pipe` for stdio.
            McpTransport::Pipe => a.push((keys::NETWORK_TRANSPORT, str_("pipe"))),
        }
        if let Some(host) = &call.server_address {
            a.push((keys::SERVER_ADDRESS, str_(host)));
        }
        if let Some(port) = call.server_port {
            a.push((keys::SERVER_PORT, AttrValue::count(u64::from(port))));
        }
        if let Some(e) = &call.error_type {
            a.push((keys::ERROR_TYPE, str_(&redact::scrub_text(e))));
        }
        if call.incomplete {
            a.push((keys::LLMTAP_CALL_INCOMPLETE, AttrValue::Bool(true)));
        }
        if self.content.enabled {
            let mut cut = Vec::new();
            for (key, value) in [
                (keys::TOOL_CALL_ARGUMENTS, &call.arguments),
                (keys::TOOL_CALL_RESULT, &call.result),
            ] {
                if let Some(v) = value {
                    let v = redact::scrub_text(v);
                    let (text, was_cut) = content::fit_text(&v, self.content.max_bytes);
                    if was_cut {
                        cut.push(key.to_string());
                    }
                    a.push((key, str_(text)));
                }
            }
            if !cut.is_empty() {
                a.push((keys::LLMTAP_CONTENT_TRUNCATED, AttrValue::StrArray(cut)));
            }
        }
        let target = call.tool_name.as_deref().or(call.prompt_name.as_deref());
        let name = match (call.method.as_str(), target) {
            ("tools/call", Some(tool)) => format!("execute_tool {tool}"),
            (method, Some(target)) => format!("{method} {target}"),
            (method, None) => method.to_string(),
        };
        let (start, end) = self.times(call.start_ns, call.end_ns);
        CallSpan {
            name,
            kind: Kind::Client,
            trace_id,
            span_id: self.ids.new_span_id(),
            parent_span_id,
            parent_is_remote,
            start_unix_nanos: start,
            end_unix_nanos: end,
            status: match &call.error_type {
                Some(e) => SpanStatus::Error {
                    message: redact::scrub_text(call.error_message.as_deref().unwrap_or(e)),
                },
                None => SpanStatus::Unset,
            },
            attributes: a,
            events: Vec::new(),
            flattened_attributes: Vec::new(),
            resource,
        }
    }
}

/// splitmix64: spreads keys over the id space.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether an operation has output tokens at all (embeddings do not).
pub fn has_output_tokens(operation: Operation) -> bool {
    operation != Operation::Embeddings
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::export::attributes::find;
    use crate::genai::{
        CallContent, CallError, CallTiming, ProcessRef, RequestParams, ResponseInfo, Usage,
    };

    /// A streamed OpenAI chat call, values as in the cassette
    /// `openai__chat_stream_include_usage.json`.
    pub(crate) fn streamed_chat() -> CallRecord {
        CallRecord {
            process: ProcessRef {
                pid: 4242,
                tid: 4243,
                comm: "python3".into(),
            },
            connection_id: 0xdead,
            operation: Operation::Chat,
            provider: "openai".into(),
            api: "chat_completions".into(),
            server_address: Some("api.openai.com".into()),
            server_port: Some(443),
            network_peer_address: None,
            network_peer_port: None,
            http_method: "POST".into(),
            url_path: "/v1/chat/completions".into(),
            http_status: Some(200),
            http_version: "1.1".into(),
            request: RequestParams {
                model: Some("gpt-4o-mini".into()),
                temperature: Some(0.7),
                max_tokens: Some(256),
                stream: true,
                service_tier: Some("auto".into()),
                ..RequestParams::default()
            },
            response: ResponseInfo {
                id: Some("chatcmpl-AbC123".into()),
                model: Some("gpt-4o-mini-2024-07-18".into()),
                finish_reasons: vec!["stop".into()],
                service_tier: Some("default".into()),
                system_fingerprint: Some("fp_0ba0d124f1".into()),
                ..ResponseInfo::default()
            },
            usage: Usage {
                input_tokens: Some(1130),
                output_tokens: Some(9),
                cache_read_input_tokens: Some(1024),
                reasoning_output_tokens: Some(0),
                ..Usage::default()
            },
            error: None,
            timing: CallTiming {
                request_start_ns: 1_000_000_000,
                request_end_ns: 1_001_000_000,
                response_start_ns: Some(1_300_000_000),
                first_chunk_ns: Some(1_350_000_000),
                chunk_times_ns: vec![1_350_000_000, 1_400_000_000, 1_480_000_000],
                response_end_ns: 1_500_000_000,
            },
            stream_chunks: Some(3),
            truncated: false,
            incomplete: false,
            content: Some(CallContent {
                input_messages: Some(serde_json::json!([
                    {"role": "user", "parts": [{"type": "text", "content": "héllo wörld"}]}
                ])),
                output_messages: None,
                system_instructions: None,
                tool_definitions: None,
            }),
            agent: None,
        }
    }

    fn resource() -> Arc<ProcessResource> {
        Arc::new(ProcessResource {
            service_name: "python3".into(),
            pid: 4242,
            executable_name: "python3".into(),
            executable_path: None,
            command_line: None,
            host_name: None,
            container_id: None,
            kubernetes: None,
            configured_attributes: Default::default(),
            openinference_project: None,
        })
    }

    const OFF: ContentCapture = ContentCapture {
        enabled: false,
        max_bytes: 1024,
    };

    #[test]
    fn traceparent_validation() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (t, s) = parse_traceparent(ok).unwrap_or((TraceId::INVALID, SpanId::INVALID));
        assert_eq!(format!("{t}"), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(format!("{s}"), "00f067aa0ba902b7");
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
                .is_some()
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn span_carries_semconv_attributes_and_times() {
        let clock = ClockOffset::fixed(1_700_000_000_000_000_000);
        let builder = SpanBuilder::new(clock, OFF);
        let span = builder.build(&streamed_chat(), resource(), Some(0.5));
        assert_eq!(span.name, "chat gpt-4o-mini");
        assert_eq!(span.start_unix_nanos, 1_700_000_001_000_000_000);
        assert_eq!(span.end_unix_nanos, 1_700_000_001_500_000_000);
        assert_eq!(span.status, SpanStatus::Unset);
        assert!(span.parent_span_id.is_none());
        assert_ne!(span.trace_id, TraceId::INVALID);
        let a = &span.attributes;
        let s = |v: &str| Some(AttrValue::Str(v.into()));
        assert_eq!(find(a, keys::OPERATION_NAME).cloned(), s("chat"));
        assert_eq!(find(a, keys::PROVIDER_NAME).cloned(), s("openai"));
        assert_eq!(find(a, keys::REQUEST_MODEL).cloned(), s("gpt-4o-mini"));
        assert_eq!(
            find(a, keys::RESPONSE_MODEL).cloned(),
            s("gpt-4o-mini-2024-07-18")
        );
        assert_eq!(find(a, keys::SERVER_PORT), Some(&AttrValue::Int(443)));
        assert_eq!(find(a, keys::REQUEST_STREAM), Some(&AttrValue::Bool(true)));
        assert_eq!(
            find(a, keys::USAGE_INPUT_TOKENS),
            Some(&AttrValue::Int(1130))
        );
        assert_eq!(
            find(a, keys::USAGE_CACHE_READ_INPUT_TOKENS),
            Some(&AttrValue::Int(1024))
        );
        assert_eq!(
            find(a, keys::RESPONSE_TIME_TO_FIRST_CHUNK),
            Some(&AttrValue::Double(0.35))
        );
        assert_eq!(
            find(a, keys::OPENAI_API_TYPE).cloned(),
            s("chat_completions")
        );
        // service tier `auto` is not reported on the request side.
        assert_eq!(find(a, keys::OPENAI_REQUEST_SERVICE_TIER), None);
        assert_eq!(
            find(a, keys::OPENAI_RESPONSE_SERVICE_TIER).cloned(),
            s("default")
        );
        assert_eq!(
            find(a, keys::LLMTAP_STREAM_CHUNKS),
            Some(&AttrValue::Int(3))
        );
        assert_eq!(
            find(a, keys::LLMTAP_USAGE_COST_USD),
            Some(&AttrValue::Double(0.5))
        );
        assert_eq!(find(a, keys::NETWORK_PROTOCOL_VERSION).cloned(), s("1.1"));
        assert_eq!(find(a, keys::ERROR_TYPE), None);
        // Content is off by default.
        assert_eq!(find(a, keys::INPUT_MESSAGES), None);
    }

    #[test]
    fn traceparent_stitches_and_errors_set_status() {
        let mut record = streamed_chat();
        record.request.traceparent =
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        record.request.model = None;
        record.error = Some(CallError {
            error_type: "rate_limit_error".into(),
            http_status: Some(429),
            mid_stream: false,
            message: Some("slow down, key sk-live-123".into()),
        });
        let span = SpanBuilder::new(ClockOffset::fixed(0), OFF).build(&record, resource(), None);
        assert_eq!(span.name, "chat");
        assert_eq!(
            format!("{}", span.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            span.parent_span_id.map(|s| format!("{s}")).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_ne!(
            span.span_id,
            SpanId::from_hex("00f067aa0ba902b7").unwrap_or(SpanId::INVALID)
        );
        assert_eq!(
            span.status,
            SpanStatus::Error {
                message: "slow down, key [REDACTED]".into()
            }
        );
        assert_eq!(
            find(&span.attributes, keys::ERROR_TYPE),
            Some(&AttrValue::Str("rate_limit_error".into()))
        );
    }

    #[test]
    fn content_is_cut_on_char_boundaries() {
        // Budgets that cut "héllo wörld" at every byte, inside é and ö too.
        for max_bytes in 58..70 {
            let on = ContentCapture {
                enabled: true,
                max_bytes,
            };
            let attrs = call_attributes(&streamed_chat(), on, None);
            let Some(AttrValue::Str(json)) = find(&attrs, keys::INPUT_MESSAGES) else {
                panic!("no input messages in {attrs:?}");
            };
            assert!(json.len() <= max_bytes);
            let parsed: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
            let text = parsed[0]["parts"][0]["content"].as_str().unwrap_or("-");
            assert!("héllo wörld".starts_with(text), "{max_bytes}: {json}");
        }
        let full = call_attributes(
            &streamed_chat(),
            ContentCapture {
                enabled: true,
                max_bytes: 1 << 20,
            },
            None,
        );
        let Some(AttrValue::Str(json)) = find(&full, keys::INPUT_MESSAGES) else {
            panic!("no input messages");
        };
        let parsed: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        assert_eq!(parsed[0]["parts"][0]["content"], "héllo wörld");
    }

    /// Every content attribute cut to the size limit is still a JSON document of the semconv
    /// shape: whole messages and parts are kept while they fit, the part that does not fit has
    /// its text cut, later parts are left out, and the cut attributes are named.
    #[test]
    fn content_cut_at_the_limit_stays_valid_json_and_is_marked() {
        let mut record = streamed_chat();
        let long = "ünïcode \"quoted\" text\n".repeat(40);
        let input = serde_json::json!([
            {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
            {"role": "user", "parts": [
                {"type": "text", "content": "first question"},
                {"type": "text", "content": long},
                {"type": "text", "content": "never reached"}
            ]},
            {"role": "user", "parts": [{"type": "text", "content": "last"}]}
        ]);
        let tools = serde_json::json!([{"type": "function", "name": "lookup"}]);
        if let Some(c) = record.content.as_mut() {
            c.input_messages = Some(input.clone());
            c.tool_definitions = Some(tools.clone());
        }
        let full_len = input.to_string().len();
        for max_bytes in [20, 90, 140, 300, 555, full_len - 1] {
            let on = ContentCapture {
                enabled: true,
                max_bytes,
            };
            let attrs = call_attributes(&record, on, None);
            let Some(AttrValue::Str(json)) = find(&attrs, keys::INPUT_MESSAGES) else {
                // Too small for even the outline of the first message: left out.
                assert!(max_bytes < 60, "{max_bytes}: {attrs:?}");
                continue;
            };
            assert!(json.len() <= max_bytes, "{max_bytes}: {json}");
            let parsed: serde_json::Value = match serde_json::from_str(json) {
                Ok(v) => v,
                Err(e) => panic!("{max_bytes}: not JSON ({e}): {json}"),
            };
            assert_eq!(parsed[0]["role"], "system", "{json}");
            if max_bytes >= 140 {
                assert_eq!(parsed[1]["role"], "user", "{json}");
                assert_eq!(parsed[1]["parts"][0]["content"], "first question");
                let cut = parsed[1]["parts"][1]["content"].as_str().unwrap_or("");
                assert!(long.starts_with(cut), "{json}");
            }
            assert_ne!(parsed, input);
            assert_eq!(
                find(&attrs, keys::LLMTAP_CONTENT_TRUNCATED),
                Some(&AttrValue::StrArray(vec![keys::INPUT_MESSAGES.to_string()]))
            );
        }
        let whole = call_attributes(
            &record,
            ContentCapture {
                enabled: true,
                max_bytes: full_len,
            },
            None,
        );
        assert_eq!(find(&whole, keys::LLMTAP_CONTENT_TRUNCATED), None);
    }

    #[test]
    fn openai_attributes_only_for_openai_providers() {
        let mut record = streamed_chat();
        record.provider = "groq".into();
        let attrs = call_attributes(&record, OFF, None);
        assert_eq!(find(&attrs, keys::OPENAI_API_TYPE), None);
        assert_eq!(find(&attrs, keys::OPENAI_RESPONSE_SYSTEM_FINGERPRINT), None);
        record.provider = "azure.ai.openai".into();
        let attrs = call_attributes(&record, OFF, None);
        assert!(find(&attrs, keys::OPENAI_API_TYPE).is_some());
    }

    /// An MCP tool call is an `execute_tool {tool}` CLIENT span with the MCP attributes; an
    /// error sets the status; arguments only with content capture.
    #[test]
    fn mcp_client_spans() {
        use crate::genai::McpCall;
        let call = McpCall {
            process: ProcessRef {
                pid: 1,
                tid: 1,
                comm: "agent".into(),
            },
            connection_id: 1,
            server_address: Some("tools.internal".into()),
            server_port: Some(8443),
            transport: McpTransport::Http {
                version: "1.1".into(),
            },
            method: "tools/call".into(),
            request_id: Some("7".into()),
            jsonrpc_version: None,
            tool_name: Some("add".into()),
            prompt_name: None,
            resource_uri: None,
            session_id: Some("0123abcd".into()),
            protocol_version: Some("2025-06-18".into()),
            start_ns: 1_000,
            end_ns: 5_000,
            error_type: Some("-32602".into()),
            error_message: Some("Unknown tool".into()),
            rpc_status_code: Some("-32602".into()),
            arguments: Some(r#"{"a":1}"#.into()),
            result: None,
            incomplete: false,
            agent: None,
        };
        let builder = SpanBuilder::new(ClockOffset::fixed(0), OFF);
        let span = builder.build_agent(&AgentRecord::Mcp(Box::new(call.clone())), resource());
        assert_eq!(span.name, "execute_tool add");
        assert_eq!(span.kind, Kind::Client);
        let get = |k| find(&span.attributes, k).cloned();
        let s = |v: &str| Some(AttrValue::Str(v.into()));
        assert_eq!(get(keys::MCP_METHOD_NAME), s("tools/call"));
        assert_eq!(get(keys::OPERATION_NAME), s("execute_tool"));
        assert_eq!(get(keys::TOOL_NAME), s("add"));
        assert_eq!(get(keys::JSONRPC_REQUEST_ID), s("7"));
        assert_eq!(get(keys::MCP_SESSION_ID), s("0123abcd"));
        assert_eq!(get(keys::MCP_PROTOCOL_VERSION), s("2025-06-18"));
        assert_eq!(get(keys::ERROR_TYPE), s("-32602"));
        assert_eq!(get(keys::RPC_RESPONSE_STATUS_CODE), s("-32602"));
        assert_eq!(get(keys::NETWORK_TRANSPORT), s("tcp"));
        assert_eq!(
            get(keys::TOOL_CALL_ARGUMENTS),
            None,
            "content capture is off"
        );
        assert!(
            matches!(span.status, SpanStatus::Error { ref message } if message == "Unknown tool")
        );
        let mut list = call;
        list.method = "tools/list".into();
        list.tool_name = None;
        list.error_type = None;
        let span = builder.build_agent(&AgentRecord::Mcp(Box::new(list.clone())), resource());
        assert_eq!(span.name, "tools/list");
        assert_eq!(find(&span.attributes, keys::OPERATION_NAME), None);
        let mut over_stdio = list;
        over_stdio.transport = McpTransport::Pipe;
        over_stdio.server_address = None;
        over_stdio.server_port = None;
        let span = builder.build_agent(&AgentRecord::Mcp(Box::new(over_stdio)), resource());
        let get = |k| find(&span.attributes, k).cloned();
        assert_eq!(get(keys::NETWORK_TRANSPORT), s("pipe"));
        assert_eq!(get(keys::NETWORK_PROTOCOL_NAME), None);
        assert_eq!(get(keys::NETWORK_PROTOCOL_VERSION), None);
        assert_eq!(get(keys::SERVER_ADDRESS), None);
    }

    /// `--compat openinference` adds the OpenInference attributes, derived from the v1.41
    /// ones whatever the conventions in force, in every output.
    #[test]
    fn openinference_attributes_on_request() {
        use super::openinference::keys as oi;
        let on = ContentCapture {
            enabled: true,
            max_bytes: 1 << 20,
        };
        let plain =
            SpanBuilder::new(ClockOffset::fixed(0), on).build(&streamed_chat(), resource(), None);
        assert_eq!(find(&plain.attributes, oi::SPAN_KIND), None);
        assert!(plain.flattened_attributes.is_empty());

        let builder = SpanBuilder::new(ClockOffset::fixed(0), on)
            .with_semconv(Semconv::LatestExperimental)
            .with_openinference(true);
        let span = builder.build(&streamed_chat(), resource(), Some(0.5));
        let get = |k| find(&span.attributes, k).cloned();
        let s = |v: &str| Some(AttrValue::Str(v.into()));
        assert_eq!(get(oi::SPAN_KIND), s("LLM"));
        assert_eq!(get(oi::LLM_MODEL_NAME), s("gpt-4o-mini-2024-07-18"));
        assert_eq!(get(oi::LLM_PROVIDER), s("openai"));
        assert_eq!(get(oi::LLM_SYSTEM), s("openai"));
        assert_eq!(get(oi::LLM_TOKEN_COUNT_PROMPT), Some(AttrValue::Int(1130)));
        assert_eq!(get(oi::LLM_TOKEN_COUNT_TOTAL), Some(AttrValue::Int(1139)));
        assert_eq!(get(oi::LLM_FINISH_REASON), s("stop"));
        // The newer conventions rename the cost; OpenInference's stays.
        assert_eq!(get(oi::LLM_COST_TOTAL), Some(AttrValue::Double(0.5)));
        assert_eq!(get(keys::LLMTAP_USAGE_COST_USD), None);
        assert_eq!(get(oi::INPUT_MIME_TYPE), s("application/json"));
        let role = "llm.input_messages.0.message.role";
        let content = "llm.input_messages.0.message.content";
        let flat = |k: &str| {
            span.flattened_attributes
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(flat(role), s("user"));
        assert_eq!(flat(content), s("héllo wörld"));
        // JSONL and OTLP carry them.
        let json = super::super::jsonl::span_to_json(&span);
        assert_eq!(json["attributes"][content], "héllo wörld");
        assert_eq!(json["attributes"][oi::SPAN_KIND], "LLM");
        let scope = opentelemetry::InstrumentationScope::builder("t").build();
        let data = super::super::otlp::span_data(&span, &scope);
        assert!(data.attributes.iter().any(|kv| kv.key.as_str() == content
            && kv.value == opentelemetry::Value::from("héllo wörld")));

        // Without content capture: no content, no messages.
        let span = SpanBuilder::new(ClockOffset::fixed(0), OFF)
            .with_openinference(true)
            .build(&streamed_chat(), resource(), None);
        assert_eq!(find(&span.attributes, oi::INPUT_VALUE), None);
        assert!(span.flattened_attributes.is_empty());
        assert_eq!(
            find(&span.attributes, oi::SPAN_KIND),
            Some(&AttrValue::Str("LLM".into()))
        );
    }

    #[test]
    fn embeddings_have_no_output_tokens() {
        assert!(!has_output_tokens(Operation::Embeddings));
        assert!(has_output_tokens(Operation::Chat));
    }
}
