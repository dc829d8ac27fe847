//! MCP (Model Context Protocol) over Streamable HTTP: a client POSTs JSON-RPC 2.0 messages
//! and the server answers with one JSON body or an SSE stream carrying the responses.
//!
//! One [`McpCall`] per JSON-RPC request or notification the client sent, timed from the
//! request's first byte to the arrival of its response (for a notification, the HTTP answer),
//! with the method, the tool, prompt or resource it names, the session and protocol version,
//! and the JSON-RPC error or the tool's own `isError`. A request whose response never comes
//! ends with the exchange (`error.type` says why). Server-to-client messages on the stream are
//! not calls of the client and are skipped.
//!
//! Recognised from the request head: `Mcp-Session-Id` or `MCP-Protocol-Version` headers, or a
//! POST accepting both `application/json` and `text/event-stream` (which the transport requires
//! of every client POST). The body must then be JSON-RPC 2.0, else nothing is reported.

use serde_json::Value;

use crate::budget::{BudgetedBuf, MemoryBudget};
use crate::flow::Direction;
use crate::http::{AbortReason, RequestHead, ResponseHead};
use crate::sse::parser::{SseEvent, SseParser};

use super::json::str_at;
use super::provider::host_of;
use super::record::{AgentLink, ProcessRef};

/// Largest JSON-RPC body or SSE event kept (tool results can be large; the rest is cut and the
/// call flagged).
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// JSON-RPC messages of one POST tracked at most (a batch).
const MAX_BATCH: usize = 64;
/// Tool arguments and results kept per call, with content capture on.
const MAX_CONTENT_BYTES: usize = 16 * 1024;

/// What the request head says about an MCP exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McpTarget {
    pub server_address: Option<String>,
    pub server_port: Option<u16>,
    pub session_id: Option<String>,
    pub protocol_version: Option<String>,
}

/// Recognises a Streamable HTTP MCP request from its head.
pub fn identify_mcp(head: &RequestHead) -> Option<McpTarget> {
    if !head.method.eq_ignore_ascii_case("POST") {
        return None;
    }
    let session_id = head.headers.get("mcp-session-id").map(session_digest);
    let protocol_version = head.headers.get("mcp-protocol-version").map(str::to_string);
    let accept = head
        .headers
        .get("accept")
        .unwrap_or("")
        .to_ascii_lowercase();
    let streamable_accept =
        accept.contains("application/json") && accept.contains("text/event-stream");
    if session_id.is_none() && protocol_version.is_none() && !streamable_accept {
        return None;
    }
    let (server_address, server_port) = host_of(head);
    Some(McpTarget {
        server_address,
        server_port,
        session_id,
        protocol_version,
    })
}

/// How an MCP client and server exchange their messages (the `network.*` attributes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum McpTransport {
    /// Streamable HTTP (or HTTP+SSE), with the HTTP version (`1.1`, `2`).
    Http { version: String },
    /// stdio: newline-delimited JSON-RPC over the server's standard input and output pipes.
    Pipe,
}

/// One MCP request (or notification) and how it ended.
#[derive(Clone, Debug, PartialEq)]
pub struct McpCall {
    pub process: ProcessRef,
    pub connection_id: u64,
    pub server_address: Option<String>,
    pub server_port: Option<u16>,
    pub transport: McpTransport,
    pub method: String,
    /// `jsonrpc.request.id` (absent for a notification).
    pub request_id: Option<String>,
    /// `jsonrpc` when it is not `2.0`.
    pub jsonrpc_version: Option<String>,
    pub tool_name: Option<String>,
    pub prompt_name: Option<String>,
    pub resource_uri: Option<String>,
    /// Digest of the session id ([`session_digest`]), never the raw id.
    pub session_id: Option<String>,
    pub protocol_version: Option<String>,
    /// Request start and response arrival (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    pub end_ns: u64,
    /// `error.type`: the JSON-RPC error code, `tool_error`, an HTTP status, or why the
    /// exchange ended without an answer.
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    /// `rpc.response.status_code`: the JSON-RPC error code.
    pub rpc_status_code: Option<String>,
    /// Tool arguments and result (content capture only), cut to a bound.
    pub arguments: Option<String>,
    pub result: Option<String>,
    /// Bytes of the exchange were lost or cut: what depended on them is absent.
    pub incomplete: bool,
    /// The agent session and turn of the process when the call was made.
    pub agent: Option<AgentLink>,
}

/// A request waiting for its answer.
pub struct PendingRpc {
    pub(super) id: Option<Value>,
    pub(super) call: McpCall,
}

/// Where a client's JSON-RPC messages come from: what every call made of them shares.
pub(super) struct RpcOrigin<'a> {
    pub(super) process: &'a ProcessRef,
    pub(super) connection_id: u64,
    pub(super) server_address: Option<&'a str>,
    pub(super) server_port: Option<u16>,
    pub(super) transport: &'a McpTransport,
    pub(super) session_id: Option<&'a str>,
    /// Known for the whole exchange or channel (a header, a negotiated version).
    pub(super) protocol_version: Option<&'a str>,
    pub(super) capture_content: bool,
    pub(super) start_ns: u64,
}

enum ResponseBody {
    Pending,
    Json(BudgetedBuf),
    Sse(SseParser),
    /// No body expected (202 Accepted) or not one to read.
    Ignored,
}

/// One HTTP exchange carrying MCP messages.
pub struct McpExchange {
    target: McpTarget,
    process: ProcessRef,
    connection_id: u64,
    transport: McpTransport,
    start_ns: u64,
    capture_content: bool,
    request: BudgetedBuf,
    request_incomplete: bool,
    pending: Vec<PendingRpc>,
    status: Option<u16>,
    response: ResponseBody,
    response_incomplete: bool,
    /// Messages that were not JSON-RPC.
    pub bad_messages: u64,
    /// Last activity (ns), for eviction.
    pub last_ns: u64,
    /// The legacy HTTP+SSE endpoint this POST went to: its answers come on the session's
    /// event stream (`mcp_sse`), not in the response.
    legacy_endpoint: Option<String>,
}

impl McpExchange {
    pub fn new(
        target: McpTarget,
        head: &RequestHead,
        connection_id: u64,
        start_ns: u64,
        process: ProcessRef,
        capture_content: bool,
        budget: &MemoryBudget,
    ) -> Self {
        McpExchange {
            target,
            process,
            connection_id,
            transport: McpTransport::Http {
                version: if head.major_version == 2 {
                    "2".to_string()
                } else {
                    format!("1.{}", head.minor_version)
                },
            },
            start_ns,
            capture_content,
            request: BudgetedBuf::new(budget),
            request_incomplete: false,
            pending: Vec::new(),
            status: None,
            response: ResponseBody::Pending,
            response_incomplete: false,
            bad_messages: 0,
            last_ns: start_ns,
            legacy_endpoint: None,
        }
    }

    /// This POST went to a legacy HTTP+SSE session's endpoint.
    pub fn set_legacy_endpoint(&mut self, endpoint: String) {
        self.legacy_endpoint = Some(endpoint);
    }

    pub fn legacy_endpoint(&self) -> Option<&str> {
        self.legacy_endpoint.as_deref()
    }

    /// The requests (with an id) of a legacy POST, whose answers the event stream carries;
    /// notifications stay with the exchange.
    pub fn take_requests(&mut self) -> Vec<PendingRpc> {
        let (requests, notifications) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.id.is_some());
        self.pending = notifications;
        requests
    }

    pub fn request_body(&mut self, data: &[u8]) {
        if !self.request_incomplete && !self.request.extend_capped(data, MAX_MESSAGE_BYTES) {
            self.request_incomplete = true;
            self.request.release();
        }
    }

    /// The request is complete: its JSON-RPC messages become calls awaiting their answers.
    /// `false` when the body was not JSON-RPC (the exchange is then not MCP after all).
    pub fn request_end(&mut self, ts_ns: u64) -> bool {
        self.last_ns = self.last_ns.max(ts_ns);
        if self.request_incomplete {
            // Cut or lost: which messages it held is unknown; nothing is guessed.
            self.bad_messages += 1;
            return false;
        }
        let parsed = serde_json::from_slice::<Value>(self.request.as_slice());
        self.request.release();
        let messages = match parsed {
            Ok(Value::Array(batch)) => batch,
            Ok(one @ Value::Object(_)) => vec![one],
            _ => return false,
        };
        for message in messages.iter().take(MAX_BATCH) {
            if let Some(rpc) = self.rpc_of(message) {
                self.pending.push(rpc);
            }
        }
        !self.pending.is_empty()
    }

    fn rpc_of(&self, message: &Value) -> Option<PendingRpc> {
        rpc_of(
            message,
            &RpcOrigin {
                process: &self.process,
                connection_id: self.connection_id,
                server_address: self.target.server_address.as_deref(),
                server_port: self.target.server_port,
                transport: &self.transport,
                session_id: self.target.session_id.as_deref(),
                protocol_version: self.target.protocol_version.as_deref(),
                capture_content: self.capture_content,
                start_ns: self.start_ns,
            },
        )
    }

    pub fn response_head(&mut self, head: &ResponseHead, ts_ns: u64) {
        self.last_ns = self.last_ns.max(ts_ns);
        self.status = Some(head.status);
        // The server names the session in its answer to `initialize`.
        if let Some(session) = head.headers.get("mcp-session-id") {
            for rpc in &mut self.pending {
                rpc.call
                    .session_id
                    .get_or_insert_with(|| session_digest(session));
            }
        }
        let content_type = head
            .headers
            .get("content-type")
            .unwrap_or("")
            .to_ascii_lowercase();
        self.response = if content_type.starts_with("text/event-stream") {
            ResponseBody::Sse(SseParser::new(MAX_MESSAGE_BYTES))
        } else if content_type.contains("json") {
            ResponseBody::Json(BudgetedBuf::new(self.request.budget()))
        } else {
            ResponseBody::Ignored
        };
    }

    /// Response bytes; answered calls are appended to `done`.
    pub fn response_body(&mut self, data: &[u8], ts_ns: u64, done: &mut Vec<McpCall>) {
        self.last_ns = self.last_ns.max(ts_ns);
        let mut events: Vec<Vec<u8>> = Vec::new();
        match &mut self.response {
            ResponseBody::Json(buf) => {
                if !self.response_incomplete && !buf.extend_capped(data, MAX_MESSAGE_BYTES) {
                    self.response_incomplete = true;
                    buf.release();
                }
                return;
            }
            ResponseBody::Sse(parser) => parser.feed(data, &mut |e: SseEvent| {
                if e.truncated {
                    events.push(Vec::new());
                } else {
                    events.push(e.data);
                }
            }),
            ResponseBody::Pending | ResponseBody::Ignored => return,
        }
        for data in events {
            if data.is_empty() {
                // A cut event: the answer it held (if any) is lost; its call ends incomplete.
                self.response_incomplete = true;
                continue;
            }
            match serde_json::from_slice::<Value>(&data) {
                Ok(message) => self.answer(&message, ts_ns, done),
                Err(_) => self.bad_messages += 1,
            }
        }
    }

    /// Applies one JSON-RPC message from the server.
    fn answer(&mut self, message: &Value, ts_ns: u64, done: &mut Vec<McpCall>) {
        answer(
            &mut self.pending,
            message,
            ts_ns,
            self.capture_content,
            done,
        );
    }

    /// Bytes of the exchange were lost in capture.
    pub fn lost(&mut self, direction: Direction) {
        match direction {
            Direction::Write => {
                self.request_incomplete = true;
                self.request.release();
            }
            Direction::Read => self.response_incomplete = true,
        }
    }

    /// The exchange ended (`abort`: how, when it did not complete); calls still waiting are
    /// reported with what is known.
    pub fn end(mut self, ts_ns: u64, abort: Option<AbortReason>, done: &mut Vec<McpCall>) {
        if let ResponseBody::Json(buf) = &mut self.response
            && !self.response_incomplete
        {
            let body = std::mem::take(buf);
            match serde_json::from_slice::<Value>(body.as_slice()) {
                Ok(message) => self.answer(&message, ts_ns, done),
                Err(_) if !body.is_empty() => self.bad_messages += 1,
                Err(_) => {}
            }
        }
        let status = self.status;
        for mut rpc in self.pending.drain(..) {
            rpc.call.end_ns = ts_ns;
            rpc.call.incomplete = self.response_incomplete;
            let http_error = status.filter(|s| *s >= 400);
            if let Some(status) = http_error {
                rpc.call.error_type = Some(status.to_string());
            } else if rpc.id.is_some() {
                // A request that got no answer: why the exchange ended, else unknown.
                rpc.call.error_type = Some(match abort {
                    Some(reason) => reason.as_str().to_string(),
                    None if self.response_incomplete => "incomplete".to_string(),
                    None => "no_response".to_string(),
                });
            }
            done.push(rpc.call);
        }
    }
}

/// The call a client's JSON-RPC message starts: `None` for anything but a request or
/// notification (an answer to a server's request, not JSON-RPC).
pub(super) fn rpc_of(message: &Value, origin: &RpcOrigin<'_>) -> Option<PendingRpc> {
    let version = str_at(message, &["jsonrpc"])?;
    let method = str_at(message, &["method"])?;
    let id = message.get("id").filter(|id| !id.is_null()).cloned();
    let params = message.get("params");
    let param = |name: &str| params.and_then(|p| str_at(p, &[name]));
    let (tool_name, prompt_name) = match method.as_str() {
        "tools/call" => (param("name"), None),
        "prompts/get" => (None, param("name")),
        _ => (None, None),
    };
    let resource_uri = match method.as_str() {
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => param("uri"),
        _ => None,
    };
    // The exchange's own (a header, a version negotiated earlier), else the request's:
    // `initialize` (up to 2025-11-25) or, since 2026-07-28 (no initialize), every request's
    // `_meta`.
    let protocol_version = origin
        .protocol_version
        .map(str::to_string)
        .or_else(|| {
            (method == "initialize")
                .then(|| param("protocolVersion"))
                .flatten()
        })
        .or_else(|| {
            params
                .and_then(|p| p.get("_meta"))
                .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    let arguments = (origin.capture_content && method == "tools/call")
        .then(|| params.and_then(|p| p.get("arguments")).map(capped_json))
        .flatten();
    Some(PendingRpc {
        id: id.clone(),
        call: McpCall {
            process: origin.process.clone(),
            connection_id: origin.connection_id,
            server_address: origin.server_address.map(str::to_string),
            server_port: origin.server_port,
            transport: origin.transport.clone(),
            method,
            request_id: id.as_ref().map(id_string),
            jsonrpc_version: (version != "2.0").then_some(version),
            tool_name,
            prompt_name,
            resource_uri,
            session_id: origin.session_id.map(str::to_string),
            protocol_version,
            start_ns: origin.start_ns,
            end_ns: origin.start_ns,
            error_type: None,
            error_message: None,
            rpc_status_code: None,
            arguments,
            result: None,
            incomplete: false,
            agent: None,
        },
    })
}

/// Applies one JSON-RPC message (or batch) from the server: each answer to a `pending`
/// request ends that call, appended to `done`.
pub(super) fn answer(
    pending: &mut Vec<PendingRpc>,
    message: &Value,
    ts_ns: u64,
    capture_content: bool,
    done: &mut Vec<McpCall>,
) {
    let messages = match message {
        Value::Array(batch) => batch.iter().collect(),
        other => vec![other],
    };
    for m in messages {
        // Server requests and notifications (`method`) are not answers to the client.
        if m.get("method").is_some() {
            continue;
        }
        let Some(id) = m.get("id") else { continue };
        let Some(at) = pending.iter().position(|p| p.id.as_ref() == Some(id)) else {
            continue;
        };
        let mut rpc = pending.swap_remove(at);
        apply_answer(&mut rpc.call, m, ts_ns, capture_content);
        done.push(rpc.call);
    }
}

/// Ends `call` with the server's JSON-RPC response `m` (error or result), arrived at `ts_ns`.
pub(super) fn apply_answer(call: &mut McpCall, m: &Value, ts_ns: u64, capture_content: bool) {
    call.end_ns = ts_ns;
    if let Some(error) = m.get("error") {
        let code = error.get("code").map(id_string);
        call.error_type = code.clone().or_else(|| Some("jsonrpc_error".into()));
        call.rpc_status_code = code;
        call.error_message = str_at(error, &["message"]);
    } else if let Some(result) = m.get("result") {
        if call.method == "initialize"
            && let Some(v) = str_at(result, &["protocolVersion"])
        {
            call.protocol_version = Some(v);
        }
        if result.get("isError").and_then(Value::as_bool) == Some(true) {
            call.error_type = Some("tool_error".into());
        }
        if capture_content && call.method == "tools/call" {
            call.result = result.get("content").map(capped_json);
        }
    }
}

/// `mcp.session.id` as exported: a digest of the server's session id (the first 128 bits of
/// its SHA-256, in hex). The raw id lets whoever holds it speak in the session; the digest
/// still tells sessions apart and is the same for every call of one session.
pub fn session_digest(raw: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(raw.as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A JSON-RPC id as `jsonrpc.request.id` writes it: strings as they are, numbers as digits.
fn id_string(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Serialised JSON cut at a bound (on a character boundary), marked when cut.
fn capped_json(v: &Value) -> String {
    let text = v.to_string();
    if text.len() <= MAX_CONTENT_BYTES {
        return text;
    }
    let mut end = MAX_CONTENT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[cut]", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "POST".into(),
            target: "/mcp".into(),
            major_version: 1,
            minor_version: 1,
            headers: headers.iter().copied().collect(),
        }
    }

    #[test]
    fn recognised_by_headers_or_the_streamable_accept() {
        assert!(identify_mcp(&head(&[("host", "tools.example:8443")])).is_none());
        let by_accept = identify_mcp(&head(&[
            ("host", "tools.example:8443"),
            ("accept", "application/json, text/event-stream"),
        ]))
        .expect("accept");
        assert_eq!(by_accept.server_address.as_deref(), Some("tools.example"));
        assert_eq!(by_accept.server_port, Some(8443));
        let by_session = identify_mcp(&head(&[("mcp-session-id", "s1")])).expect("session");
        let digest = by_session.session_id.expect("session id");
        assert_eq!(digest, session_digest("s1"));
        assert_eq!(digest.len(), 32);
        assert!(!digest.contains("s1") || digest != "s1");
        let mut get = head(&[("mcp-session-id", "s1")]);
        get.method = "GET".into();
        assert!(identify_mcp(&get).is_none());
    }
}
