//! One LLM call being assembled from its HTTP exchange, then turned into a [`CallRecord`].

use serde_json::Value;

use crate::flow::Direction;
use crate::http::{AbortReason, RequestHead, ResponseHead};
use crate::sse::{
    EventStreamDecoder, EventStreamMessage, JsonArraySplitter, LineSplitter, SseEvent, SseParser,
};

use super::api::wire::Text;
use super::api::{read_error_body, read_response_body, shape};
use super::estimate::count_tokens;
use super::provider::{Api, ApiTarget, StreamHint};
use super::record::{
    CallContent, CallError, CallRecord, CallTiming, ProcessRef, RequestParams, ResponseInfo,
};
use super::request::{input_text, read_content};
use super::response::ResponseAcc;
use super::scan::TopLevelScanner;
use crate::budget::{BudgetedBuf, MemoryBudget};

/// Limits and switches of the GenAI stage.
#[derive(Clone, Debug)]
pub struct CallConfig {
    /// Fill `CallRecord::content` (messages, instructions, tool definitions).
    pub capture_content: bool,
    /// Estimate tokens with a tokenizer when a response carries no usage (`usage.estimated`).
    pub estimate_missing_usage: bool,
    /// Request body bytes kept for parsing; beyond, the call is `truncated`.
    pub request_body_cap: usize,
    /// Non-streamed response body bytes kept for parsing; beyond, the call is `truncated`.
    pub response_body_cap: usize,
    /// Largest single stream event (SSE event, NDJSON line, JSON-array element, frame).
    pub stream_event_cap: usize,
    /// Generated text kept per call for content capture or estimation.
    pub output_text_cap: usize,
    /// Chunk arrival times kept per call (the count goes on beyond).
    pub max_chunk_times: usize,
    /// Shared by the bodies of every call in flight (`--memory-limit`): a body that cannot
    /// grow within it is cut and its call marked truncated.
    pub budget: MemoryBudget,
}

impl Default for CallConfig {
    fn default() -> Self {
        CallConfig {
            capture_content: false,
            estimate_missing_usage: false,
            request_body_cap: 4 * 1024 * 1024,
            response_body_cap: 8 * 1024 * 1024,
            stream_event_cap: 1024 * 1024,
            output_text_cap: 1024 * 1024,
            max_chunk_times: 65_536,
            budget: MemoryBudget::unlimited(),
        }
    }
}

enum BodyMode {
    /// Before the response head.
    Pending,
    Buffered(BudgetedBuf),
    Sse(SseParser),
    Ndjson(LineSplitter),
    JsonArray(JsonArraySplitter),
    EventStream(EventStreamDecoder),
    /// WebSocket messages, each one whole event (framed and bounded by the socket layer).
    Messages,
}

/// A call in flight.
pub struct CallBuilder {
    target: ApiTarget,
    process: ProcessRef,
    connection_id: u64,
    method: String,
    url_path: String,
    http_version: String,
    traceparent: Option<String>,
    timing: CallTiming,
    request_ended: bool,
    req_body: BudgetedBuf,
    /// Top-level request fields, kept even when the body passes the cap or loses bytes (then
    /// those of the prefix before the first loss).
    req_scan: TopLevelScanner,
    req_lost: bool,
    params: RequestParams,
    content: Option<CallContent>,
    input_text: String,
    status: Option<u16>,
    request_id: Option<String>,
    amzn_error_type: Option<String>,
    header_usage: (Option<u64>, Option<u64>),
    body: BodyMode,
    response_ended: bool,
    resp_lost: bool,
    /// Response bytes were lost before the first content chunk arrived: the first chunk seen
    /// may not be the first one sent, so time to first chunk is unknown.
    first_chunk_unknown: bool,
    req_truncated: bool,
    /// The response body (or a stream event) passed its cap: response values are unknown.
    resp_truncated: bool,
    acc: ResponseAcc,
    /// Last activity (ns), for eviction of calls whose connection vanished.
    pub last_ns: u64,
    /// Stream events that could not be parsed.
    pub bad_events: u64,
}

const REQUEST_ID_HEADERS: [&str; 6] = [
    "x-request-id",
    "request-id",
    "apim-request-id",
    "x-amzn-requestid",
    "mistral-correlation-id",
    "x-generation-id",
];

impl CallBuilder {
    pub fn new(
        target: ApiTarget,
        head: &RequestHead,
        connection_id: u64,
        ts_entry_ns: u64,
        process: ProcessRef,
        cfg: &CallConfig,
    ) -> Self {
        let keep_output = cfg.capture_content || cfg.estimate_missing_usage;
        CallBuilder {
            process,
            connection_id,
            method: head.method.clone(),
            url_path: head.path().to_string(),
            http_version: if head.major_version == 2 {
                "2".to_string()
            } else {
                format!("1.{}", head.minor_version)
            },
            traceparent: head.headers.get("traceparent").map(str::to_string),
            timing: CallTiming {
                request_start_ns: ts_entry_ns,
                ..CallTiming::default()
            },
            request_ended: false,
            req_body: BudgetedBuf::new(&cfg.budget),
            req_scan: TopLevelScanner::default(),
            req_lost: false,
            params: RequestParams::default(),
            content: None,
            input_text: String::new(),
            status: None,
            request_id: None,
            amzn_error_type: None,
            header_usage: (None, None),
            body: BodyMode::Pending,
            response_ended: false,
            resp_lost: false,
            first_chunk_unknown: false,
            req_truncated: false,
            resp_truncated: false,
            acc: ResponseAcc::new(keep_output, cfg.output_text_cap, cfg.max_chunk_times),
            last_ns: ts_entry_ns,
            bad_events: 0,
            target,
        }
    }

    pub fn is_complete(&self) -> bool {
        self.request_ended && self.response_ended
    }

    pub fn request_body(&mut self, data: &[u8], cfg: &CallConfig) {
        if self.req_truncated || self.req_lost {
            // The body will not be parsed: keep nothing more of it, only scan its top-level
            // scalars.
            self.req_scan.feed(data);
            return;
        }
        let kept = self.req_body.as_slice().len();
        if !self.req_body.extend_capped(data, cfg.request_body_cap) {
            // Cut: from here on the scan stands for the parse, so it reads what was kept
            // before this piece, then the piece.
            self.scan_kept(kept);
            self.req_scan.feed(data);
            self.req_truncated = true;
            self.req_body.release();
        }
    }

    /// The scan of top-level scalars runs only once a body will not be parsed whole (a whole
    /// body is parsed instead): it catches up on the first `len` bytes kept so far.
    fn scan_kept(&mut self, len: usize) {
        let kept = self.req_body.as_slice();
        self.req_scan.feed(kept.get(..len).unwrap_or(kept));
    }

    pub fn request_end(&mut self, ts_ns: u64, cfg: &CallConfig) {
        self.request_ended = true;
        self.timing.request_end_ns = ts_ns;
        self.last_ns = self.last_ns.max(ts_ns);
        // A body with lost or cut bytes is not parsed: values are never guessed.
        let reader = shape(self.target.api);
        let complete = !(self.req_lost || self.req_truncated);
        if complete {
            let body = self.req_body.as_slice();
            let read = reader.read_request(body, cfg.capture_content, &mut self.params);
            // Content and token estimation are opt-in: only they build a JSON tree.
            if read.is_ok()
                && (cfg.capture_content || cfg.estimate_missing_usage)
                && let Ok(v) = serde_json::from_slice::<Value>(body)
            {
                if cfg.capture_content {
                    let (input, system, tools) = read_content(self.target.api, &v);
                    self.content = Some(CallContent {
                        input_messages: input,
                        system_instructions: system,
                        tool_definitions: tools,
                        output_messages: None,
                    });
                }
                if cfg.estimate_missing_usage {
                    self.input_text = input_text(&v, cfg.output_text_cap);
                }
            }
        } else {
            // Too large to keep, or past the kernel's per-call capture cap: the top-level
            // scalars seen on the wire (all of them, or the captured prefix's) are still real.
            let fields = serde_json::to_vec(&self.req_scan.fields()).unwrap_or_default();
            // The scan holds only valid scalars: reading them cannot fail but for a bug.
            if let Err(e) = reader.read_request(&fields, false, &mut self.params) {
                log::debug!("top-level fields of a cut request: {e}");
            }
        }
        self.req_body.release();
        if let Some(m) = &self.target.path_model {
            self.params.model = Some(m.clone());
        }
        match self.target.stream {
            StreamHint::GeminiStream { .. } | StreamHint::BedrockStream | StreamHint::WebSocket => {
                self.params.stream = true
            }
            StreamHint::NotStreamed => self.params.stream = false,
            StreamHint::FromBody => {}
        }
        self.params.traceparent = self.traceparent.clone();
    }

    pub fn response_head(&mut self, head: &ResponseHead, ts_ns: u64, cfg: &CallConfig) {
        self.timing.response_start_ns = Some(ts_ns);
        self.last_ns = self.last_ns.max(ts_ns);
        self.read_response_headers(head);
        let ctype = head
            .headers
            .get("content-type")
            .unwrap_or("")
            .to_ascii_lowercase();
        let cap = cfg.stream_event_cap;
        self.body = if head.status >= 400 {
            BodyMode::Buffered(BudgetedBuf::new(&cfg.budget))
        } else if ctype.starts_with("text/event-stream") {
            BodyMode::Sse(SseParser::new(cap))
        } else if ctype.starts_with("application/x-ndjson")
            || ctype.starts_with("application/jsonl")
        {
            BodyMode::Ndjson(LineSplitter::new(cap))
        } else if ctype.starts_with("application/vnd.amazon.eventstream") {
            BodyMode::EventStream(EventStreamDecoder::new(cap))
        } else if matches!(self.target.stream, StreamHint::GeminiStream { sse: false })
            && ctype.contains("json")
        {
            BodyMode::JsonArray(JsonArraySplitter::new(cap))
        } else {
            BodyMode::Buffered(BudgetedBuf::new(&cfg.budget))
        };
    }

    /// A call carried by a WebSocket: `head` is the socket's `101` answer (status and request
    /// id); the response's events come as messages ([`CallBuilder::response_message`]).
    pub fn websocket_response(&mut self, head: &ResponseHead) {
        self.read_response_headers(head);
        self.body = BodyMode::Messages;
    }

    /// One server message of this call (a WebSocket event).
    pub fn response_message(&mut self, payload: &[u8], ts_ns: u64) {
        self.message_arrived(ts_ns);
        self.read_event(None, payload, ts_ns);
    }

    /// A Realtime audio delta of this call, its payload skipped.
    pub fn response_audio_delta(&mut self, ts_ns: u64) {
        self.message_arrived(ts_ns);
        // An audio delta: a content chunk whose payload was skipped.
        self.acc.content_chunk(ts_ns);
    }

    /// The model the server named for the session the call belongs to (Realtime).
    pub fn set_response_model(&mut self, model: Option<String>) {
        if self.acc.model.is_none() {
            self.acc.model = model;
        }
    }

    fn message_arrived(&mut self, ts_ns: u64) {
        self.last_ns = self.last_ns.max(ts_ns);
        self.timing.response_start_ns.get_or_insert(ts_ns);
        self.timing.response_end_ns = ts_ns;
    }

    fn read_response_headers(&mut self, head: &ResponseHead) {
        self.status = Some(head.status);
        self.request_id = REQUEST_ID_HEADERS
            .iter()
            .find_map(|h| head.headers.get(h))
            .map(str::to_string);
        self.amzn_error_type = head
            .headers
            .get("x-amzn-errortype")
            .map(|v| v.split(':').next().unwrap_or(v).to_string());
        let header_num = |name: &str| {
            head.headers
                .get(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        self.header_usage = (
            header_num("x-amzn-bedrock-input-token-count"),
            header_num("x-amzn-bedrock-output-token-count"),
        );
        if self.target.provider_from_shape
            && let Some(provider) = super::provider::provider_from_response_headers(&head.headers)
        {
            self.target.provider = provider.to_string();
            self.target.provider_from_shape = false;
        }
    }

    fn is_stream_body(&self) -> bool {
        !matches!(self.body, BodyMode::Buffered(_) | BodyMode::Pending)
    }

    pub fn response_body(&mut self, data: &[u8], ts_ns: u64, cfg: &CallConfig) {
        self.last_ns = self.last_ns.max(ts_ns);
        self.timing.response_end_ns = ts_ns;
        let mut events: Vec<(Option<String>, Vec<u8>)> = Vec::new();
        let mut oversize = false;
        match &mut self.body {
            // A WebSocket has no HTTP body: its messages come through `response_message`.
            BodyMode::Pending | BodyMode::Messages => {}
            BodyMode::Buffered(buf) => {
                if self.resp_truncated || self.resp_lost {
                    // Not parsed any more: keep nothing.
                    buf.release();
                } else if !buf.extend_capped(data, cfg.response_body_cap) {
                    self.resp_truncated = true;
                    buf.release();
                }
                return;
            }
            BodyMode::Sse(p) => p.feed(data, &mut |e: SseEvent| {
                oversize |= e.truncated;
                if !e.truncated {
                    events.push((e.event, e.data));
                }
            }),
            BodyMode::Ndjson(lines) => lines.feed(data, &mut |l| {
                oversize |= l.overlong;
                if !l.overlong && !l.bytes.iter().all(u8::is_ascii_whitespace) {
                    events.push((None, l.bytes.to_vec()));
                }
            }),
            BodyMode::JsonArray(s) => s.feed(data, &mut |e, overlong| {
                oversize |= overlong;
                if !overlong {
                    events.push((None, e.to_vec()));
                }
            }),
            BodyMode::EventStream(d) => {
                let mut msgs = Vec::new();
                d.feed(data, &mut |m| msgs.push(m));
                if d.error().is_some() {
                    self.bad_events += 1;
                }
                for m in msgs {
                    self.on_eventstream(m, ts_ns);
                }
            }
        }
        if oversize {
            self.resp_truncated = true;
        }
        for (name, payload) in events {
            self.on_stream_event(name.as_deref(), &payload, ts_ns);
        }
    }

    fn on_stream_event(&mut self, _event: Option<&str>, payload: &[u8], ts_ns: u64) {
        if payload == b"[DONE]" {
            self.acc.stream_finished = true;
            return;
        }
        self.read_event(None, payload, ts_ns);
    }

    /// One stream event through the API's reader; one that cannot be read is counted.
    fn read_event(&mut self, event_type: Option<&str>, payload: &[u8], ts_ns: u64) {
        let reader = shape(self.target.api);
        if let Err(e) = reader.read_event(event_type, payload, ts_ns, &mut self.acc) {
            log::trace!("unreadable stream event: {e}");
            self.bad_events += 1;
        }
        self.provider_from_body();
    }

    fn on_eventstream(&mut self, m: EventStreamMessage, ts_ns: u64) {
        match m.message_type.as_deref() {
            Some("exception") | Some("error") => {
                let message = serde_json::from_slice::<ExceptionPayload>(&m.payload)
                    .ok()
                    .and_then(|p| p.message.owned().or_else(|| p.message_upper.owned()));
                self.acc.error = Some(super::response::BodyError {
                    error_type: m.exception_type.or(m.error_code),
                    message,
                });
                return;
            }
            _ => {}
        }
        let event_type = m.event_type.unwrap_or_default();
        self.read_event(Some(&event_type), &m.payload, ts_ns);
    }

    /// Bytes of this exchange were lost (framing intact): what they carried stays unknown.
    pub fn lost(&mut self, direction: Direction) {
        match direction {
            Direction::Write => {
                if !self.req_truncated && !self.req_lost {
                    self.scan_kept(usize::MAX);
                }
                self.req_lost = true;
                // What follows the hole has no known place in the JSON: the scan keeps only
                // what the captured prefix held, and the body is not parsed (nor kept).
                self.req_scan.stop();
                self.req_body.release();
            }
            Direction::Read => {
                self.resp_lost = true;
                if self.acc.first_chunk_ns.is_none() {
                    self.first_chunk_unknown = true;
                }
                match &mut self.body {
                    BodyMode::Sse(p) => p.lost_bytes(),
                    BodyMode::Ndjson(l) => l.lost_bytes(),
                    BodyMode::JsonArray(s) => s.lost_bytes(),
                    BodyMode::EventStream(d) => d.lost_bytes(),
                    BodyMode::Buffered(_) | BodyMode::Pending | BodyMode::Messages => {}
                }
            }
        }
    }

    /// A part of the exchange in `direction` passed a size cap upstream.
    pub fn truncated(&mut self, direction: Direction) {
        match direction {
            Direction::Write => {
                if !self.req_truncated && !self.req_lost {
                    self.scan_kept(usize::MAX);
                    self.req_body.release();
                }
                self.req_truncated = true;
            }
            Direction::Read => self.resp_truncated = true,
        }
    }

    pub fn response_end(&mut self, ts_ns: u64) {
        self.response_ended = true;
        self.timing.response_end_ns = ts_ns;
        self.last_ns = self.last_ns.max(ts_ns);
        let mut tail: Vec<Vec<u8>> = Vec::new();
        match &mut self.body {
            BodyMode::Sse(p) => p.finish(),
            BodyMode::Ndjson(l) => l.finish(&mut |line| {
                if !line.overlong {
                    tail.push(line.bytes.to_vec());
                }
            }),
            BodyMode::Buffered(buf) => {
                let buf = std::mem::take(buf);
                self.apply_buffered(buf.as_slice());
            }
            _ => {}
        }
        for t in tail {
            self.on_stream_event(None, &t, ts_ns);
        }
    }

    /// An OpenAI-compatible server on an unknown host named by its response's shape.
    fn provider_from_body(&mut self) {
        if self.target.provider_from_shape
            && let Some(provider) = self.acc.provider_hint
        {
            self.target.provider = provider.to_string();
            self.target.provider_from_shape = false;
        }
    }

    fn apply_buffered(&mut self, buf: &[u8]) {
        if self.resp_lost || self.resp_truncated || buf.is_empty() {
            return;
        }
        if self.status.is_some_and(|s| s >= 400) {
            match read_error_body(buf) {
                Ok(e) => self.acc.error = Some(e),
                Err(_) => self.bad_events += 1,
            }
            return;
        }
        if let Err(e) = read_response_body(self.target.api, buf, &mut self.acc) {
            log::trace!("unreadable response body: {e}");
            self.bad_events += 1;
        }
        self.provider_from_body();
    }

    /// The finished record; `abort` when the exchange ended without a complete response.
    /// `None` when the exchange turned out not to be an LLM call.
    pub fn finish(
        mut self,
        abort: Option<(AbortReason, u64)>,
        cfg: &CallConfig,
    ) -> Option<CallRecord> {
        if let Some((_, ts)) = abort {
            self.timing.response_end_ns = self.timing.response_end_ns.max(ts);
            if !self.request_ended {
                self.timing.request_end_ns = ts;
            }
        }
        let http_error = self.status.filter(|&s| s >= 400);
        let is_stream = self.is_stream_body();
        if is_stream
            && self.acc.stream_finished
            && matches!(abort, Some((AbortReason::StreamReset, _)))
        {
            // A stream reset after the API's own end marker is the client dropping a
            // response it has read to the end (hyper does when the body is dropped before
            // END_STREAM arrives), not a failed call.
            self.response_ended = true;
        }
        let acc = &self.acc;
        if matches!(self.target.api, Api::OllamaChat | Api::OllamaGenerate)
            && self.params.model.is_none()
            && acc.model.is_none()
        {
            // `/api/chat` on a server that is not Ollama: not an LLM call.
            return None;
        }
        if self.target.api == Api::LlamaCppCompletion
            && acc.model.is_none()
            && acc.usage.output_tokens.is_none()
            && http_error.is_none()
        {
            // `/completion` answered by something other than llama.cpp: not an LLM call.
            return None;
        }
        let error = if let Some(status) = http_error {
            let body_type = acc.error.as_ref().and_then(|e| e.error_type.clone());
            Some(CallError {
                error_type: body_type
                    .or_else(|| self.amzn_error_type.clone())
                    .unwrap_or_else(|| status.to_string()),
                http_status: Some(status),
                mid_stream: false,
                message: acc.error.as_ref().and_then(|e| e.message.clone()),
            })
        } else if let Some(e) = &acc.error {
            Some(CallError {
                error_type: e.error_type.clone().unwrap_or_else(|| "_OTHER".to_string()),
                http_status: self.status,
                mid_stream: is_stream,
                message: e.message.clone(),
            })
        } else if !self.response_ended {
            let reason = abort
                .map(|(r, _)| r)
                .unwrap_or(AbortReason::ConnectionClosed);
            Some(CallError {
                error_type: reason.as_str().to_string(),
                http_status: self.status,
                mid_stream: false,
                message: None,
            })
        } else {
            None
        };
        let ok_response = http_error.is_none();
        let mut usage = if ok_response {
            acc.usage.clone()
        } else {
            Default::default()
        };
        if ok_response && self.target.api == Api::BedrockInvokeModel {
            usage.input_tokens = usage.input_tokens.or(self.header_usage.0);
            usage.output_tokens = usage.output_tokens.or(self.header_usage.1);
        }
        // Estimates from text with holes in it would be wrong, not approximate.
        if cfg.estimate_missing_usage
            && ok_response
            && self.response_ended
            && !self.req_lost
            && !self.resp_lost
            && usage.input_tokens.is_none()
            && usage.output_tokens.is_none()
        {
            let model = self.params.model.as_deref().or(acc.model.as_deref());
            usage.input_tokens = Some(count_tokens(model, &self.input_text));
            if self.target.api != Api::Embeddings {
                usage.output_tokens = Some(count_tokens(model, &acc.output_text()));
            }
            usage.estimated = true;
        }
        let response = if ok_response {
            ResponseInfo {
                id: acc.id.clone(),
                model: acc.model.clone(),
                finish_reasons: acc.finish.values().cloned().collect(),
                service_tier: acc.service_tier.clone(),
                system_fingerprint: acc.system_fingerprint.clone(),
                embeddings_dimension: acc.embeddings_dimension,
                tool_calls: acc.tool_names.clone(),
                tool_requests: acc.tool_requests(cfg.capture_content),
                request_id: self.request_id.clone(),
            }
        } else {
            ResponseInfo {
                request_id: self.request_id.clone(),
                ..ResponseInfo::default()
            }
        };
        let mut timing = self.timing.clone();
        // Lost response bytes hide chunks: counts and inter-chunk times from what was seen
        // would be wrong, so they are left out; time to first chunk only survives when the
        // first chunk arrived before any loss.
        if is_stream && ok_response {
            if !self.first_chunk_unknown {
                timing.first_chunk_ns = acc.first_chunk_ns;
            }
            if !self.resp_lost {
                timing.chunk_times_ns = acc.chunk_times_ns.clone();
            }
        }
        if timing.response_end_ns == 0 {
            timing.response_end_ns = timing.response_start_ns.unwrap_or(timing.request_end_ns);
        }
        let content = if cfg.capture_content {
            let mut c = self.content.take().unwrap_or_default();
            if ok_response && self.response_ended && self.target.api != Api::Embeddings {
                c.output_messages = Some(acc.output_messages());
            }
            Some(c)
        } else {
            None
        };
        let incomplete = self.req_lost
            || self.resp_lost
            || matches!(
                abort,
                Some((AbortReason::FramingLost | AbortReason::ParseError, _))
            );
        Some(CallRecord {
            process: self.process.clone(),
            connection_id: self.connection_id,
            operation: self.target.api.operation(),
            provider: self.target.provider.clone(),
            api: self.target.api.as_str().to_string(),
            server_address: self.target.server_address.clone(),
            // The scheme's default port when the Host header names none.
            server_port: self
                .target
                .server_port
                .or(self.target.server_address.as_ref().map(|_| {
                    if crate::flow::is_plain_tcp(self.connection_id) {
                        80
                    } else {
                        443
                    }
                })),
            network_peer_address: None,
            network_peer_port: None,
            http_method: self.method.clone(),
            url_path: self.url_path.clone(),
            http_status: self.status,
            http_version: self.http_version.clone(),
            request: self.params.clone(),
            response,
            usage,
            error,
            timing,
            stream_chunks: (is_stream && ok_response && !self.resp_lost)
                .then_some(acc.stream_chunks),
            truncated: self.req_truncated || self.resp_truncated,
            incomplete,
            content,
            agent: None,
        })
    }
}

/// An AWS event-stream exception's payload.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ExceptionPayload<'a> {
    #[serde(borrow)]
    message: Text<'a>,
    #[serde(borrow, rename = "Message")]
    message_upper: Text<'a>,
}
