//! MCP over stdio: the client's side of the pipes to an MCP server it spawned, one connection
//! per server (see `flow::is_mcp_pipe`): the JSON-RPC lines it writes to the server's standard
//! input (`Write`) and those it reads from the server's standard output (`Read`).
//!
//! The same calls as over HTTP ([`super::mcp`]): one per request or notification the client
//! wrote, from the kernel timestamp of the write holding the line's first byte to the return
//! of the read that completed its answer's line, with the JSON-RPC error or the tool's own
//! `isError`. Messages the server sends on its own (requests, notifications) and the client's
//! answers to them are not calls of the client and are skipped. The protocol version comes
//! from each request's `_meta` (2026-07-28 on) or from the channel's `initialize` exchange.
//!
//! A line cut by the size cap or by lost bytes is dropped up to its newline: a request is then
//! not reported (what it asked is unknown), and calls still waiting when the channel ends are
//! flagged incomplete if an answer may have been lost.

use std::collections::HashMap;

use serde_json::Value;

use crate::budget::{BudgetedBuf, MemoryBudget};
use crate::flow::{ConnectionId, Direction, StreamChunk, StreamEvent};
use crate::http::AbortReason;

use super::mcp::{McpCall, McpTransport, PendingRpc, RpcOrigin, answer, rpc_of};
use super::record::ProcessRef;

/// Longest JSON-RPC line kept (tool results can be large; a longer line is dropped).
const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Requests of one channel awaiting their answers; more are not tracked (counted).
const MAX_PENDING: usize = 256;
/// Channels tracked at once; the least recently active is ended beyond.
const MAX_CHANNELS: usize = 1024;

/// Counters of MCP over stdio.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct McpStdioStats {
    /// Channels (client, server pipes) seen.
    pub channels: u64,
    /// Lines that were not JSON, or were cut by lost bytes or the size cap.
    pub lines_lost: u64,
    /// Requests not tracked because too many of their channel were waiting.
    pub requests_untracked: u64,
    /// Channels ended to stay within `MAX_CHANNELS`.
    pub channels_evicted: u64,
}

/// A line complete in one direction, or what is left of a cut one.
struct Line {
    message: Option<Value>,
    start_ns: u64,
    end_ns: u64,
}

/// Splits one direction's bytes into lines.
struct LineReader {
    buf: BudgetedBuf,
    /// Entry time of the call that held the current line's first byte.
    start_ns: u64,
    /// The current line lost bytes (or outgrew the cap): dropped at its newline.
    cut: bool,
}

impl LineReader {
    fn new(budget: &MemoryBudget) -> Self {
        LineReader {
            buf: BudgetedBuf::new(budget),
            start_ns: 0,
            cut: false,
        }
    }

    fn feed(&mut self, chunk: &StreamChunk, lines: &mut Vec<Line>) {
        let mut rest: &[u8] = &chunk.data;
        while !rest.is_empty() {
            if self.buf.is_empty() && !self.cut {
                self.start_ns = chunk.ts_entry_ns;
            }
            let (piece, ended) = match rest.iter().position(|&b| b == b'\n') {
                Some(at) => (&rest[..at], true),
                None => (rest, false),
            };
            rest = if ended { &rest[piece.len() + 1..] } else { &[] };
            if !self.cut && !self.buf.extend_capped(piece, MAX_LINE_BYTES) {
                self.cut = true;
                self.buf.release();
            }
            if !ended {
                break;
            }
            let message = if self.cut {
                None
            } else if self.buf.as_slice().iter().all(u8::is_ascii_whitespace) {
                self.buf.release();
                continue; // an empty line: nothing was said
            } else {
                serde_json::from_slice::<Value>(self.buf.as_slice()).ok()
            };
            lines.push(Line {
                message,
                start_ns: self.start_ns,
                end_ns: chunk.ts_ns,
            });
            self.buf.release();
            self.cut = false;
        }
    }

    /// Bytes were lost: the line under way (or the next one, if the loss ended a line) cannot
    /// be trusted up to the next newline.
    fn lost(&mut self) {
        self.cut = true;
        self.buf.release();
    }
}

/// One client's pipes to one server.
struct Channel {
    process: ProcessRef,
    requests: LineReader,
    answers: LineReader,
    pending: Vec<PendingRpc>,
    /// Negotiated by `initialize` (before 2026-07-28 requests do not carry it).
    protocol_version: Option<String>,
    /// An answer may have been lost: calls left waiting are incomplete.
    answers_lost: bool,
    last_ns: u64,
}

/// Every MCP stdio channel in flight.
pub struct McpStdio {
    channels: HashMap<ConnectionId, Channel>,
    capture_content: bool,
    budget: MemoryBudget,
    stats: McpStdioStats,
}

impl McpStdio {
    pub fn new(capture_content: bool, budget: &MemoryBudget) -> Self {
        McpStdio {
            channels: HashMap::new(),
            capture_content,
            budget: budget.clone(),
            stats: McpStdioStats::default(),
        }
    }

    pub fn stats(&self) -> &McpStdioStats {
        &self.stats
    }

    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    /// Feeds one captured event of an MCP stdio connection; finished calls go to `done`.
    pub fn push(&mut self, ev: StreamEvent, done: &mut Vec<McpCall>) {
        match ev {
            StreamEvent::Data(chunk) => self.on_data(&chunk, done),
            StreamEvent::Gap {
                conn,
                direction,
                ts_ns,
                ..
            } => {
                if let Some(channel) = self.channels.get_mut(&conn) {
                    channel.last_ns = channel.last_ns.max(ts_ns);
                    match direction {
                        Direction::Write => channel.requests.lost(),
                        Direction::Read => {
                            channel.answers.lost();
                            channel.answers_lost = true;
                        }
                    }
                }
            }
            StreamEvent::Closed { conn, ts_ns } => {
                if let Some(channel) = self.channels.remove(&conn) {
                    end(channel, ts_ns, AbortReason::ConnectionClosed, done);
                }
            }
        }
    }

    fn on_data(&mut self, chunk: &StreamChunk, done: &mut Vec<McpCall>) {
        if !self.channels.contains_key(&chunk.conn) {
            self.make_room(chunk.ts_ns, done);
            self.stats.channels += 1;
            self.channels.insert(
                chunk.conn,
                Channel {
                    process: ProcessRef {
                        pid: chunk.conn.pid,
                        tid: chunk.tid,
                        comm: chunk.comm.as_str().into_owned(),
                    },
                    requests: LineReader::new(&self.budget),
                    answers: LineReader::new(&self.budget),
                    pending: Vec::new(),
                    protocol_version: None,
                    answers_lost: false,
                    last_ns: chunk.ts_ns,
                },
            );
        }
        let Some(channel) = self.channels.get_mut(&chunk.conn) else {
            return;
        };
        channel.last_ns = channel.last_ns.max(chunk.ts_ns);
        let mut lines = Vec::new();
        match chunk.direction {
            Direction::Write => {
                channel.process.tid = chunk.tid;
                channel.requests.feed(chunk, &mut lines);
            }
            Direction::Read => channel.answers.feed(chunk, &mut lines),
        }
        for line in lines {
            let Some(message) = &line.message else {
                self.stats.lines_lost += 1;
                if chunk.direction == Direction::Read {
                    channel.answers_lost = true;
                }
                continue;
            };
            match chunk.direction {
                Direction::Write => {
                    self.stats.requests_untracked +=
                        channel.request(chunk.conn.conn, message, &line, self.capture_content, done)
                }
                Direction::Read => {
                    let before = done.len();
                    answer(
                        &mut channel.pending,
                        message,
                        line.end_ns,
                        self.capture_content,
                        done,
                    );
                    for call in &done[before..] {
                        if call.method == "initialize" && call.protocol_version.is_some() {
                            channel.protocol_version.clone_from(&call.protocol_version);
                        }
                    }
                }
            }
        }
    }

    /// Ends the least recently active channel when the table is full.
    fn make_room(&mut self, now_ns: u64, done: &mut Vec<McpCall>) {
        if self.channels.len() < MAX_CHANNELS {
            return;
        }
        let oldest = self
            .channels
            .iter()
            .min_by_key(|(_, c)| c.last_ns)
            .map(|(id, _)| *id);
        if let Some(channel) = oldest.and_then(|id| self.channels.remove(&id)) {
            self.stats.channels_evicted += 1;
            end(channel, now_ns, AbortReason::IdleTimeout, done);
        }
    }

    /// Calls waiting longer than `timeout_ns` for their answer end as `idle_timeout`; the
    /// channel itself stays (an agent may leave its MCP servers idle for long).
    pub fn tick(&mut self, now_ns: u64, timeout_ns: u64, done: &mut Vec<McpCall>) {
        for channel in self.channels.values_mut() {
            if channel.pending.is_empty() || now_ns.saturating_sub(channel.last_ns) <= timeout_ns {
                continue;
            }
            end_pending(channel, now_ns, AbortReason::IdleTimeout, done);
        }
    }

    /// Ends every channel (shutdown).
    pub fn finish(&mut self, now_ns: u64, done: &mut Vec<McpCall>) {
        let mut all: Vec<(ConnectionId, Channel)> = self.channels.drain().collect();
        all.sort_by_key(|(id, _)| *id);
        for (_, channel) in all {
            end(channel, now_ns, AbortReason::Shutdown, done);
        }
    }
}

impl Channel {
    /// A line the client wrote: its requests wait for their answers, its notifications are
    /// done at once. Returns how many requests could not be tracked.
    fn request(
        &mut self,
        connection_id: u64,
        message: &Value,
        line: &Line,
        capture_content: bool,
        done: &mut Vec<McpCall>,
    ) -> u64 {
        let origin = RpcOrigin {
            process: &self.process,
            connection_id,
            server_address: None,
            server_port: None,
            transport: &McpTransport::Pipe,
            session_id: None,
            protocol_version: self.protocol_version.as_deref(),
            capture_content,
            start_ns: line.start_ns,
        };
        let batch = match message {
            Value::Array(batch) => batch.iter().collect(),
            one => vec![one],
        };
        let mut untracked = 0;
        for m in batch {
            let Some(mut rpc) = rpc_of(m, &origin) else {
                continue; // the client's answer to a server request
            };
            if rpc.id.is_none() {
                rpc.call.end_ns = line.end_ns;
                done.push(rpc.call);
            } else if self.pending.len() < MAX_PENDING {
                self.pending.push(rpc);
            } else {
                untracked += 1;
            }
        }
        untracked
    }
}

/// The channel ended: calls still waiting end with it.
fn end(mut channel: Channel, ts_ns: u64, reason: AbortReason, done: &mut Vec<McpCall>) {
    end_pending(&mut channel, ts_ns, reason, done);
}

fn end_pending(channel: &mut Channel, ts_ns: u64, reason: AbortReason, done: &mut Vec<McpCall>) {
    let mut waiting: Vec<PendingRpc> = channel.pending.drain(..).collect();
    waiting.sort_by_key(|p| p.call.start_ns);
    for mut rpc in waiting {
        rpc.call.end_ns = ts_ns.max(rpc.call.start_ns);
        rpc.call.incomplete = channel.answers_lost;
        rpc.call.error_type = Some(if channel.answers_lost {
            "incomplete".to_string()
        } else {
            reason.as_str().to_string()
        });
        done.push(rpc.call);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Comm;

    const CLIENT: u32 = 100;

    fn conn() -> ConnectionId {
        ConnectionId {
            pid: CLIENT,
            conn: tracer_common::pipe::conn_of(4242),
        }
    }

    fn data(direction: Direction, at: u64, bytes: &str) -> StreamEvent {
        let mut comm = Comm::default();
        comm.0[..5].copy_from_slice(b"agent");
        StreamEvent::Data(StreamChunk {
            conn: conn(),
            direction,
            tid: CLIENT + 1,
            comm,
            ts_entry_ns: at,
            ts_ns: at + 5,
            data: bytes::Bytes::copy_from_slice(bytes.as_bytes()),
        })
    }

    fn run(events: Vec<StreamEvent>, capture_content: bool) -> (Vec<McpCall>, McpStdioStats) {
        let mut stdio = McpStdio::new(capture_content, &MemoryBudget::unlimited());
        let mut done = Vec::new();
        for ev in events {
            stdio.push(ev, &mut done);
        }
        stdio.finish(1_000_000, &mut done);
        (done, stdio.stats().clone())
    }

    /// A session over the legacy handshake: the version negotiated by `initialize` applies
    /// to the later calls; requests split across writes and answers sharing one read are
    /// timed from the first byte written to the read that completed the answer.
    #[test]
    fn requests_are_timed_from_their_write_to_the_read_of_their_answer() {
        let events = vec![
            data(
                Direction::Write,
                100,
                "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\"}}\n",
            ),
            data(
                Direction::Read,
                200,
                "{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"protocolVersion\":\"2025-03-26\"}}\n",
            ),
            data(
                Direction::Write,
                300,
                "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",",
            ),
            data(
                Direction::Write,
                310,
                "\"params\":{\"name\":\"add\",\"arguments\":{\"a\":2}}}\n{\"jsonrpc\":\"2.0\",\"id\":\"b\",\"method\":\"tools/call\",\"params\":{\"name\":\"fail\"}}\n",
            ),
            // The server's own notification, then both answers in one read.
            data(
                Direction::Read,
                400,
                "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n{\"jsonrpc\":\"2.0\",\"id\":\"b\",\"result\":{\"content\":[],\"isError\":true}}\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"42\"}]}}\n",
            ),
        ];
        let (calls, stats) = run(events, true);
        // (method, request id, start, end, error type)
        type Row<'a> = (&'a str, Option<&'a str>, u64, u64, Option<&'a str>);
        let summary: Vec<Row> = calls
            .iter()
            .map(|c| {
                (
                    c.method.as_str(),
                    c.request_id.as_deref(),
                    c.start_ns,
                    c.end_ns,
                    c.error_type.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("initialize", Some("0"), 100, 205, None),
                ("notifications/initialized", None, 300, 305, None),
                ("tools/call", Some("b"), 310, 405, Some("tool_error")),
                ("tools/call", Some("1"), 300, 405, None),
            ]
        );
        assert_eq!(calls[0].protocol_version.as_deref(), Some("2025-03-26"));
        assert_eq!(calls[3].protocol_version.as_deref(), Some("2025-03-26"));
        assert_eq!(calls[3].tool_name.as_deref(), Some("add"));
        assert_eq!(calls[3].arguments.as_deref(), Some("{\"a\":2}"));
        assert_eq!(
            calls[3].result.as_deref(),
            Some("[{\"text\":\"42\",\"type\":\"text\"}]")
        );
        for call in &calls {
            assert_eq!(call.transport, McpTransport::Pipe);
            assert_eq!(call.process.pid, CLIENT);
            assert_eq!(call.process.comm, "agent");
            assert_eq!(call.server_address, None);
            assert!(!call.incomplete);
        }
        assert_eq!(stats.channels, 1);
        assert_eq!(stats.lines_lost, 0);
    }

    /// Content stays out without content capture; a JSON-RPC error gives its code.
    #[test]
    fn errors_and_no_content_without_capture() {
        let events = vec![
            data(
                Direction::Write,
                100,
                "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"x\",\"arguments\":{\"key\":\"secret\"},\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\"}}}\n",
            ),
            data(
                Direction::Read,
                150,
                "{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":-32602,\"message\":\"Unknown tool: x\"}}\n",
            ),
        ];
        let (calls, _) = run(events, false);
        assert_eq!(calls.len(), 1);
        let call = &calls[0];
        assert_eq!(call.error_type.as_deref(), Some("-32602"));
        assert_eq!(call.rpc_status_code.as_deref(), Some("-32602"));
        assert_eq!(call.error_message.as_deref(), Some("Unknown tool: x"));
        assert_eq!(call.protocol_version.as_deref(), Some("2026-07-28"));
        assert_eq!(call.arguments, None);
        assert_eq!(call.result, None);
    }

    /// Lost bytes drop the line they fall in; a lost answer leaves its call incomplete when the
    /// channel ends; lines that are not JSON are counted, never guessed at.
    #[test]
    fn lost_bytes_and_bad_lines() {
        let gap = |direction| StreamEvent::Gap {
            conn: conn(),
            direction,
            len: 10,
            ts_ns: 0,
        };
        let events = vec![
            data(
                Direction::Write,
                100,
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}\n{\"jsonrpc\":\"2.0\",\"id\":2,",
            ),
            gap(Direction::Write),
            data(
                Direction::Write,
                120,
                "\"method\":\"ping\"}\nnot json\n{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}\n",
            ),
            data(Direction::Read, 200, "{\"jsonrpc\":\"2.0\",\"id\":3,\"res"),
            gap(Direction::Read),
            data(Direction::Read, 220, "ult\":{}}\n"),
            StreamEvent::Closed {
                conn: conn(),
                ts_ns: 500,
            },
        ];
        let (calls, stats) = run(events, false);
        let summary: Vec<(Option<&str>, Option<&str>, bool)> = calls
            .iter()
            .map(|c| {
                (
                    c.request_id.as_deref(),
                    c.error_type.as_deref(),
                    c.incomplete,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (Some("1"), Some("incomplete"), true),
                (Some("3"), Some("incomplete"), true),
            ]
        );
        assert_eq!(calls[0].end_ns, 500);
        // The cut request, the line that is not JSON, the cut answer.
        assert_eq!(stats.lines_lost, 3);
    }

    /// A request never answered ends with the channel, saying why.
    #[test]
    fn unanswered_requests_end_with_the_channel() {
        let events = vec![
            data(
                Direction::Write,
                100,
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}\n",
            ),
            StreamEvent::Closed {
                conn: conn(),
                ts_ns: 900,
            },
        ];
        let (calls, _) = run(events, false);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].error_type.as_deref(), Some("connection_closed"));
        assert_eq!((calls[0].start_ns, calls[0].end_ns), (100, 900));
        assert!(!calls[0].incomplete);
    }

    /// A line longer than the cap is dropped whole, and the next line is read normally.
    #[test]
    fn oversized_lines_are_dropped() {
        let huge = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"name\":\"{}\"}}}}\n",
            "x".repeat(MAX_LINE_BYTES)
        );
        let events = vec![
            data(Direction::Write, 100, &huge),
            data(
                Direction::Write,
                200,
                "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}\n",
            ),
            data(
                Direction::Read,
                300,
                "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}\n",
            ),
        ];
        let (calls, stats) = run(events, false);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].method, "ping");
        assert_eq!(calls[0].error_type, None);
        assert_eq!(stats.lines_lost, 1);
    }
}
