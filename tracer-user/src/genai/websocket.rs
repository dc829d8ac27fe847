//! LLM calls carried by a WebSocket's messages, one session per socket.
//!
//! - **OpenAI Responses over WebSocket** (the Codex CLI's default transport): each client
//!   `response.create` (the request's fields beside `"type"`) is one call; the server's events
//!   are those of the SSE stream and go to the oldest call in flight, which a terminal event
//!   (`response.completed` / `incomplete` / `failed`) or an `error` ends.
//! - **OpenAI Realtime**: one call per response, from the client's `response.create` (or the
//!   server's `response.created`, when server-side turn detection starts it) to
//!   `response.done` with the usage. The session's configuration (`session.update`) is the
//!   request of each response, the model the server names (`session.created` / `updated`) its
//!   response model. Audio (`input_audio_buffer.append`, audio deltas) is never kept: once a
//!   message's `type` says audio, its bytes are dropped as they arrive.
//!
//! Messages are kept up to the stream event cap while they arrive; a longer one is dropped
//! and the call flagged truncated.

use std::collections::VecDeque;

use serde_json::{Map, Value};

use crate::flow::Direction;
use crate::http::{AbortReason, RequestHead, ResponseHead};

use super::call::{CallBuilder, CallConfig};
use super::json::str_at;
use super::provider::{Api, ApiTarget};
use super::record::ProcessRef;
use super::scan::TopLevelScanner;

/// Calls asked for and not answered yet on one socket; the oldest is given up beyond.
const MAX_CALLS_IN_FLIGHT: usize = 64;

/// Realtime messages whose payload is audio: never buffered.
const AUDIO_MESSAGES: [&str; 3] = [
    "input_audio_buffer.append",
    "response.audio.delta",
    "response.output_audio.delta",
];

/// Realtime session fields that configure each response (`session.update`).
const SESSION_REQUEST_FIELDS: [&str; 7] = [
    "model",
    "temperature",
    "max_response_output_tokens",
    "max_output_tokens",
    "instructions",
    "tools",
    "tool_choice",
];

/// One piece of a message, as the connection stage reports it.
#[derive(Clone, Copy, Debug)]
pub struct MessagePiece<'a> {
    pub direction: Direction,
    pub text: bool,
    pub data: &'a [u8],
    pub first: bool,
    pub last: bool,
    /// The socket layer cut the message at its size cap.
    pub truncated: bool,
    pub ts_entry_ns: u64,
    pub ts_ns: u64,
    pub tid: u32,
}

/// A message of one direction being received.
#[derive(Debug, Default)]
struct MessageBuf {
    data: Vec<u8>,
    scan: TopLevelScanner,
    kind: Option<String>,
    /// Audio or binary: bytes dropped as they arrive.
    skip: bool,
    overlong: bool,
    /// When the first byte was written (request start of a `response.create`).
    start_entry_ns: u64,
    tid: u32,
}

/// A call in flight on the socket.
struct WsCall {
    builder: CallBuilder,
    /// Realtime: the response id the server gave it (`response.created`).
    response_id: Option<String>,
}

/// What a session hands back: finished calls, with how they ended (`None`: complete).
pub type FinishedCall = (CallBuilder, Option<(AbortReason, u64)>);

/// The LLM calls of one WebSocket.
pub struct WsSession {
    target: ApiTarget,
    upgrade: RequestHead,
    upgrade_response: ResponseHead,
    connection_id: u64,
    pid: u32,
    comm: String,
    client_msg: MessageBuf,
    server_msg: MessageBuf,
    calls: VecDeque<WsCall>,
    /// Realtime: the response configuration of `session.update`.
    session_request: Map<String, Value>,
    /// Realtime: the model the server says the session uses.
    session_model: Option<String>,
    pub last_ns: u64,
    /// Messages that were not valid JSON.
    pub bad_messages: u64,
    /// Messages past the size cap (dropped).
    pub truncated_messages: u64,
    /// Server events with no call in flight to belong to.
    pub unmatched_events: u64,
}

impl WsSession {
    pub fn new(
        target: ApiTarget,
        upgrade: RequestHead,
        upgrade_response: ResponseHead,
        connection_id: u64,
        pid: u32,
        comm: String,
        ts_ns: u64,
    ) -> Self {
        WsSession {
            target,
            upgrade,
            upgrade_response,
            connection_id,
            pid,
            comm,
            client_msg: MessageBuf::default(),
            server_msg: MessageBuf::default(),
            calls: VecDeque::new(),
            session_request: Map::new(),
            session_model: None,
            last_ns: ts_ns,
            bad_messages: 0,
            truncated_messages: 0,
            unmatched_events: 0,
        }
    }

    /// Calls asked for and not finished.
    pub fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Feeds a piece of a message; calls that end are appended to `done`.
    pub fn message(&mut self, p: MessagePiece, cfg: &CallConfig, done: &mut Vec<FinishedCall>) {
        self.last_ns = self.last_ns.max(p.ts_ns);
        let realtime = self.target.api == Api::Realtime;
        let buf = match p.direction {
            Direction::Write => &mut self.client_msg,
            Direction::Read => &mut self.server_msg,
        };
        if p.first {
            *buf = MessageBuf {
                skip: !p.text,
                start_entry_ns: p.ts_entry_ns,
                tid: p.tid,
                ..MessageBuf::default()
            };
        }
        if p.text {
            // Realtime audio deltas are routed by their top-level `response_id`: scanned
            // (bounded) while their payload is dropped.
            if buf.kind.is_none() || realtime {
                buf.scan.feed(p.data);
            }
        }
        if !buf.skip {
            if buf.kind.is_none() {
                buf.kind = buf
                    .scan
                    .get("type")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if realtime
                    && buf
                        .kind
                        .as_deref()
                        .is_some_and(|k| AUDIO_MESSAGES.contains(&k))
                {
                    buf.skip = true;
                    buf.data = Vec::new();
                }
            }
            if !buf.skip && !buf.overlong {
                if buf.data.len() + p.data.len() > cfg.stream_event_cap {
                    buf.overlong = true;
                    buf.data = Vec::new();
                } else {
                    buf.data.extend_from_slice(p.data);
                }
            }
        }
        if !p.last {
            return;
        }
        let buf = std::mem::take(buf);
        if buf.overlong || p.truncated {
            self.truncated_messages += 1;
            if let Some(call) = self.calls.front_mut() {
                call.builder.truncated(p.direction);
            }
            return;
        }
        if buf.skip {
            if p.direction == Direction::Read && buf.kind.is_some() {
                // An audio delta: a chunk of the response it belongs to, content unknown.
                let id = buf.scan.get("response_id").and_then(Value::as_str);
                let call = match id {
                    Some(id) => self
                        .calls
                        .iter_mut()
                        .find(|c| c.response_id.as_deref() == Some(id)),
                    None => self.calls.front_mut(),
                };
                match call {
                    Some(call) => call.builder.response_audio_delta(p.ts_ns),
                    None => self.unmatched_events += 1,
                }
            }
            return;
        }
        let kind = buf.kind.clone().unwrap_or_default();
        if !realtime {
            // Responses events are read by the typed Responses reader: here the message is
            // only checked to be JSON (without building it).
            if serde_json::from_slice::<serde::de::IgnoredAny>(&buf.data).is_err() {
                self.bad_messages += 1;
                return;
            }
            match p.direction {
                Direction::Write => self.responses_client(&kind, &buf, p.ts_ns, cfg, done),
                Direction::Read => self.responses_server(&kind, &buf.data, p.ts_ns, done),
            }
            return;
        }
        // Realtime keeps the session's configuration across messages: read as a tree.
        let Ok(v) = serde_json::from_slice::<Value>(&buf.data) else {
            self.bad_messages += 1;
            return;
        };
        match p.direction {
            Direction::Write => self.realtime_client(&kind, &buf, &v, p.ts_ns, cfg, done),
            Direction::Read => self.realtime_server(&kind, &v, &buf.data, p.ts_ns, cfg, done),
        }
    }

    /// The socket ended: calls still in flight end with it (`reason` `None`: a close frame).
    pub fn close(mut self, reason: Option<AbortReason>, ts_ns: u64, done: &mut Vec<FinishedCall>) {
        if self.unmatched_events + self.truncated_messages + self.bad_messages > 0 {
            log::debug!(
                "WebSocket of connection {:#x}: {} events without a call, {} messages over the \
                 size cap, {} not JSON",
                self.connection_id,
                self.unmatched_events,
                self.truncated_messages,
                self.bad_messages
            );
        }
        let reason = reason.unwrap_or(AbortReason::ConnectionClosed);
        for call in self.calls.drain(..) {
            done.push((call.builder, Some((reason, ts_ns))));
        }
    }

    fn new_call(
        &mut self,
        body: &[u8],
        start_ns: u64,
        tid: u32,
        end_ns: u64,
        cfg: &CallConfig,
        done: &mut Vec<FinishedCall>,
    ) {
        let mut builder = CallBuilder::new(
            self.target.clone(),
            &self.upgrade,
            self.connection_id,
            start_ns,
            ProcessRef {
                pid: self.pid,
                tid,
                comm: self.comm.clone(),
            },
            cfg,
        );
        builder.websocket_response(&self.upgrade_response);
        builder.request_body(body, cfg);
        builder.request_end(end_ns, cfg);
        builder.set_response_model(self.session_model.clone());
        if self.calls.len() >= MAX_CALLS_IN_FLIGHT
            && let Some(old) = self.calls.pop_front()
        {
            done.push((old.builder, Some((AbortReason::IdleTimeout, end_ns))));
        }
        self.calls.push_back(WsCall {
            builder,
            response_id: None,
        });
    }

    // ---- Responses over WebSocket ----

    fn responses_client(
        &mut self,
        kind: &str,
        buf: &MessageBuf,
        ts_ns: u64,
        cfg: &CallConfig,
        done: &mut Vec<FinishedCall>,
    ) {
        if kind == "response.create" {
            // The request's fields sit beside `"type"`: the message is the request body.
            self.new_call(&buf.data, buf.start_entry_ns, buf.tid, ts_ns, cfg, done);
        }
    }

    fn responses_server(
        &mut self,
        kind: &str,
        data: &[u8],
        ts_ns: u64,
        done: &mut Vec<FinishedCall>,
    ) {
        let Some(call) = self.calls.front_mut() else {
            self.unmatched_events += 1;
            return;
        };
        call.builder.response_message(data, ts_ns);
        if matches!(
            kind,
            "response.completed" | "response.incomplete" | "response.failed" | "error"
        ) && let Some(mut call) = self.calls.pop_front()
        {
            call.builder.response_end(ts_ns);
            done.push((call.builder, None));
        }
    }

    // ---- Realtime ----

    fn realtime_client(
        &mut self,
        kind: &str,
        buf: &MessageBuf,
        v: &Value,
        ts_ns: u64,
        cfg: &CallConfig,
        done: &mut Vec<FinishedCall>,
    ) {
        match kind {
            "session.update" => {
                if let Some(session) = v.get("session").and_then(Value::as_object) {
                    for key in SESSION_REQUEST_FIELDS {
                        if let Some(value) = session.get(key) {
                            self.session_request.insert(key.to_string(), value.clone());
                        }
                    }
                }
            }
            "response.create" => {
                let mut request = self.session_request.clone();
                if let Some(overrides) = v.get("response").and_then(Value::as_object) {
                    for key in SESSION_REQUEST_FIELDS {
                        if let Some(value) = overrides.get(key) {
                            request.insert(key.to_string(), value.clone());
                        }
                    }
                }
                let body = realtime_request_body(request);
                self.new_call(&body, buf.start_entry_ns, buf.tid, ts_ns, cfg, done);
            }
            _ => {}
        }
    }

    fn realtime_server(
        &mut self,
        kind: &str,
        v: &Value,
        data: &[u8],
        ts_ns: u64,
        cfg: &CallConfig,
        done: &mut Vec<FinishedCall>,
    ) {
        match kind {
            "session.created" | "session.updated" => {
                if let Some(model) = str_at(v, &["session", "model"]) {
                    self.session_model = Some(model);
                }
                return;
            }
            "response.created" => {
                let id = str_at(v, &["response", "id"]);
                if !self.calls.iter().any(|c| c.response_id.is_none()) {
                    // Started by the server (turn detection), not by a `response.create`.
                    let body = realtime_request_body(self.session_request.clone());
                    let tid = self.server_msg.tid;
                    self.new_call(&body, ts_ns, tid, ts_ns, cfg, done);
                }
                if let Some(call) = self.calls.iter_mut().find(|c| c.response_id.is_none()) {
                    call.response_id = id.or_else(|| Some(String::new()));
                    call.builder.response_message(data, ts_ns);
                }
                return;
            }
            _ => {}
        }
        let response_id = str_at(v, &["response_id"]).or_else(|| {
            (kind == "response.done")
                .then(|| str_at(v, &["response", "id"]))
                .flatten()
        });
        let index = match &response_id {
            Some(id) => self
                .calls
                .iter()
                .position(|c| c.response_id.as_deref() == Some(id)),
            // An error is about the oldest response not yet answered, if any.
            None if kind == "error" => self.calls.iter().position(|c| c.response_id.is_none()),
            None => None,
        };
        let Some(index) = index else {
            if kind.starts_with("response.") || kind == "error" {
                self.unmatched_events += 1;
            }
            return;
        };
        let Some(call) = self.calls.get_mut(index) else {
            return;
        };
        call.builder.response_message(data, ts_ns);
        if (kind == "response.done" || kind == "error")
            && let Some(mut call) = self.calls.remove(index)
        {
            call.builder.response_end(ts_ns);
            done.push((call.builder, None));
        }
    }
}

/// A Realtime response's request: the session's configuration with the response's
/// overrides, named as the Responses API names them (`max_output_tokens`).
fn realtime_request_body(mut request: Map<String, Value>) -> Vec<u8> {
    if let Some(v) = request.remove("max_response_output_tokens") {
        // `"inf"` is no limit: not a value of the attribute.
        if v.is_u64() {
            request.insert("max_output_tokens".to_string(), v);
        }
    }
    serde_json::to_vec(&Value::Object(request)).unwrap_or_default()
}
