//! MCP's legacy HTTP+SSE transport (protocol 2024-11-05, still served by many servers): the
//! client holds a `GET` event stream whose first event, `endpoint`, names the URL it then
//! POSTs its JSON-RPC messages to; each POST is answered `202 Accepted` and the responses come
//! as `message` events on the stream, on another connection.
//!
//! [`McpEventStream`] reads one such stream; [`LegacySessions`] joins the two sides per
//! process and endpoint: a request POSTed to a session's endpoint waits there for the stream
//! event answering its id, and its span runs from the POST to that event.

use std::collections::HashMap;

use serde_json::Value;

use crate::http::{AbortReason, RequestHead, ResponseHead};
use crate::sse::parser::{SseEvent, SseParser};

use super::mcp::{McpCall, McpTarget, PendingRpc, apply_answer, session_digest};
use super::provider::host_of;

/// Largest stream event kept (tool results can be large; a longer one is skipped).
const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Sessions followed at once; past it the least recently active one is dropped.
const MAX_SESSIONS: usize = 256;
/// Requests of one session waiting for their answers; past it the oldest ends unanswered.
const MAX_WAITING: usize = 256;
/// Answers that arrived before their request was seen (events of two connections can reach
/// llmtap slightly out of order), per session.
const MAX_EARLY: usize = 32;

/// A `GET` that may open a legacy session: it accepts an event stream.
pub fn is_event_stream_request(head: &RequestHead) -> bool {
    head.method.eq_ignore_ascii_case("GET")
        && head
            .headers
            .get("accept")
            .is_some_and(|a| a.to_ascii_lowercase().contains("text/event-stream"))
}

/// What one event of a legacy stream says.
#[derive(Debug, PartialEq)]
pub enum StreamEvent {
    /// The session's endpoint (path and query, the origin removed).
    Endpoint(String),
    /// A JSON-RPC message from the server.
    Message(Value),
}

/// The server's side of one event stream.
pub struct McpEventStream {
    parser: Option<SseParser>,
    /// The stream's first event was `endpoint`: it is an MCP session.
    pub endpoint: Option<String>,
    target: McpTarget,
    pub pid: u32,
    /// Last activity (ns).
    pub last_ns: u64,
    /// Events that were not JSON-RPC, or cut.
    pub bad_events: u64,
}

impl McpEventStream {
    pub fn new(head: &RequestHead, pid: u32, ts_ns: u64) -> Self {
        let (server_address, server_port) = host_of(head);
        McpEventStream {
            parser: None,
            endpoint: None,
            target: McpTarget {
                server_address,
                server_port,
                session_id: None,
                protocol_version: None,
            },
            pid,
            last_ns: ts_ns,
            bad_events: 0,
        }
    }

    /// The answer's head: `false` when it is not an event stream (nothing more to read).
    pub fn response_head(&mut self, head: &ResponseHead) -> bool {
        let content_type = head
            .headers
            .get("content-type")
            .unwrap_or("")
            .to_ascii_lowercase();
        let is_stream = head.status == 200 && content_type.starts_with("text/event-stream");
        if is_stream {
            self.parser = Some(SseParser::new(MAX_EVENT_BYTES));
        }
        is_stream
    }

    /// Stream bytes. `false` once the stream turned out not to be an MCP session (its first
    /// event is not `endpoint`): the caller stops feeding it.
    pub fn feed(&mut self, data: &[u8], ts_ns: u64, out: &mut Vec<StreamEvent>) -> bool {
        self.last_ns = self.last_ns.max(ts_ns);
        let Some(parser) = &mut self.parser else {
            return false;
        };
        let mut events: Vec<SseEvent> = Vec::new();
        parser.feed(data, &mut |e| events.push(e));
        for e in events {
            if e.truncated {
                self.bad_events += 1;
                continue;
            }
            match (&self.endpoint, e.event.as_deref()) {
                (None, Some("endpoint")) => {
                    let endpoint = endpoint_target(String::from_utf8_lossy(&e.data).trim());
                    self.target.session_id = session_of(&endpoint).map(session_digest);
                    self.endpoint = Some(endpoint.clone());
                    out.push(StreamEvent::Endpoint(endpoint));
                }
                // Any other first event: an event stream of something else.
                (None, _) => return false,
                (Some(_), None | Some("message")) => match serde_json::from_slice(&e.data) {
                    Ok(v) => out.push(StreamEvent::Message(v)),
                    Err(_) => self.bad_events += 1,
                },
                (Some(_), Some(_)) => {}
            }
        }
        true
    }

    /// The target the session's POSTs report: this stream's server and session.
    pub fn target(&self) -> McpTarget {
        self.target.clone()
    }
}

/// `/messages/?session_id=…` from a relative or absolute endpoint URL.
fn endpoint_target(data: &str) -> String {
    let without_scheme = data
        .strip_prefix("https://")
        .or_else(|| data.strip_prefix("http://"));
    match without_scheme {
        Some(rest) => match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        },
        None if data.starts_with('/') => data.to_string(),
        None => format!("/{data}"),
    }
}

/// The session id in an endpoint's query (`session_id`, or `sessionId` as some servers name
/// it).
fn session_of(endpoint: &str) -> Option<&str> {
    let query = endpoint.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        matches!(key, "session_id" | "sessionId")
            .then_some(value)
            .filter(|v| !v.is_empty())
    })
}

struct Session {
    target: McpTarget,
    capture_content: bool,
    waiting: Vec<PendingRpc>,
    /// Answers whose request was not seen yet: (id, message, arrival).
    early: Vec<(Value, Value, u64)>,
    last_ns: u64,
}

/// The legacy sessions of all processes: (pid, endpoint) → requests awaiting their answers.
#[derive(Default)]
pub struct LegacySessions {
    sessions: HashMap<(u32, String), Session>,
    /// Requests that ended without an answer because a bound was reached.
    pub dropped: u64,
}

impl LegacySessions {
    /// A stream named its endpoint: POSTs there are this session's.
    pub fn open(
        &mut self,
        pid: u32,
        endpoint: String,
        target: McpTarget,
        capture_content: bool,
        ts_ns: u64,
        done: &mut Vec<McpCall>,
    ) {
        if !self.sessions.contains_key(&(pid, endpoint.clone()))
            && self.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_ns)
                .map(|(k, _)| k.clone())
        {
            self.close(
                oldest.0,
                &oldest.1,
                ts_ns,
                Some(AbortReason::IdleTimeout),
                done,
            );
        }
        self.sessions.insert(
            (pid, endpoint),
            Session {
                target,
                capture_content,
                waiting: Vec::new(),
                early: Vec::new(),
                last_ns: ts_ns,
            },
        );
    }

    /// The session a POST of `pid` goes to, if its target is a known endpoint.
    pub fn target_for(&self, pid: u32, head: &RequestHead) -> Option<(String, McpTarget)> {
        if !head.method.eq_ignore_ascii_case("POST") {
            return None;
        }
        let key = (pid, head.target.clone());
        self.sessions
            .get(&key)
            .map(|s| (head.target.clone(), s.target.clone()))
    }

    /// Requests POSTed to a session's endpoint: they wait for the stream's answers (or take
    /// one that came first).
    pub fn await_answers(
        &mut self,
        pid: u32,
        endpoint: &str,
        requests: Vec<PendingRpc>,
        done: &mut Vec<McpCall>,
    ) {
        let Some(session) = self.sessions.get_mut(&(pid, endpoint.to_string())) else {
            return;
        };
        for mut rpc in requests {
            session.last_ns = session.last_ns.max(rpc.call.start_ns);
            if let Some(at) = session
                .early
                .iter()
                .position(|(id, _, _)| Some(id) == rpc.id.as_ref())
            {
                let (_, answer, ts) = session.early.swap_remove(at);
                apply_answer(&mut rpc.call, &answer, ts, session.capture_content);
                done.push(rpc.call);
                continue;
            }
            if session.waiting.len() >= MAX_WAITING {
                let mut oldest = session.waiting.remove(0);
                oldest.call.error_type = Some("untracked".into());
                oldest.call.end_ns = rpc.call.start_ns;
                self.dropped += 1;
                done.push(oldest.call);
            }
            session.waiting.push(rpc);
        }
    }

    /// A JSON-RPC message on a session's stream: an answer ends the request it names.
    pub fn answer(
        &mut self,
        pid: u32,
        endpoint: &str,
        message: &Value,
        ts_ns: u64,
        done: &mut Vec<McpCall>,
    ) {
        let Some(session) = self.sessions.get_mut(&(pid, endpoint.to_string())) else {
            return;
        };
        session.last_ns = session.last_ns.max(ts_ns);
        let messages: Vec<&Value> = match message {
            Value::Array(batch) => batch.iter().collect(),
            one => vec![one],
        };
        for m in messages {
            // Server requests and notifications are not answers to the client.
            if m.get("method").is_some() {
                continue;
            }
            let Some(id) = m.get("id") else { continue };
            match session
                .waiting
                .iter()
                .position(|p| p.id.as_ref() == Some(id))
            {
                Some(at) => {
                    let mut rpc = session.waiting.remove(at);
                    apply_answer(&mut rpc.call, m, ts_ns, session.capture_content);
                    done.push(rpc.call);
                }
                None => {
                    if session.early.len() >= MAX_EARLY {
                        session.early.remove(0);
                    }
                    session.early.push((id.clone(), m.clone(), ts_ns));
                }
            }
        }
    }

    /// The session's stream ended: its waiting requests end unanswered, saying why.
    pub fn close(
        &mut self,
        pid: u32,
        endpoint: &str,
        ts_ns: u64,
        abort: Option<AbortReason>,
        done: &mut Vec<McpCall>,
    ) {
        let Some(session) = self.sessions.remove(&(pid, endpoint.to_string())) else {
            return;
        };
        for mut rpc in session.waiting {
            rpc.call.end_ns = ts_ns.max(rpc.call.start_ns);
            rpc.call.error_type = Some(
                abort
                    .map(|r| r.as_str().to_string())
                    .unwrap_or_else(|| "no_response".to_string()),
            );
            done.push(rpc.call);
        }
    }

    /// Every session ends (shutdown).
    pub fn close_all(&mut self, ts_ns: u64, done: &mut Vec<McpCall>) {
        let keys: Vec<(u32, String)> = self.sessions.keys().cloned().collect();
        for (pid, endpoint) in keys {
            self.close(pid, &endpoint, ts_ns, Some(AbortReason::Shutdown), done);
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_sessions() {
        assert_eq!(
            endpoint_target("/messages/?session_id=ab12"),
            "/messages/?session_id=ab12"
        );
        assert_eq!(
            endpoint_target("https://example.com:8443/messages/?session_id=ab12"),
            "/messages/?session_id=ab12"
        );
        assert_eq!(session_of("/messages/?x=1&session_id=ab12"), Some("ab12"));
        assert_eq!(session_of("/messages/"), None);
    }

    #[test]
    fn a_stream_is_mcp_only_when_it_opens_with_its_endpoint() {
        let head = RequestHead {
            method: "GET".into(),
            target: "/sse".into(),
            major_version: 1,
            minor_version: 1,
            headers: Default::default(),
        };
        let ok = ResponseHead {
            status: 200,
            major_version: 1,
            minor_version: 1,
            headers: [("content-type", "text/event-stream")]
                .into_iter()
                .collect(),
        };
        let mut stream = McpEventStream::new(&head, 7, 1);
        assert!(stream.response_head(&ok));
        let mut out = Vec::new();
        assert!(stream.feed(
            b"event: endpoint\r\ndata: /messages/?session_id=s1\r\n\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\r\n\r\n",
            2,
            &mut out
        ));
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0],
            StreamEvent::Endpoint("/messages/?session_id=s1".into())
        );
        assert_eq!(stream.target().session_id, Some(session_digest("s1")));
        let mut other = McpEventStream::new(&head, 7, 1);
        other.response_head(&ok);
        assert!(!other.feed(b"data: {\"ticker\": 1}\n\n", 2, &mut Vec::new()));
    }
}
