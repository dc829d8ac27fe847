//! Agent sessions and tool executions, from evidence only.
//!
//! Fed the finished calls of every process in completion order, [`AgentTracker`] links each
//! call to a *session* (a conversation: calls that continue one another) and, inside a tool
//! loop, to a *turn* (an `invoke_agent` span), and reports a [`ToolExecution`] for every tool
//! call whose result a later request of the same process carries, timed from the end of the
//! response that asked for it to the start of the request that answers it.
//!
//! Continuation, strongest evidence first: the request names the previous response
//! (`previous_response_id`) or conversation id of a session; it carries results for a pending
//! tool call of a session; its message history extends (hash of the same prefix) the history
//! of the session's last request. Anything else starts a new session.
//!
//! A turn starts with a call whose response asks for tools, continues with the calls that
//! bring back their results, and ends with a call that asks for no more tools (the answer), a
//! call of the session that carries no result (a new user input), the session's idle timeout,
//! or the process's exit. Tool calls never answered get no execution.
//!
//! Memory is bounded: sessions per process, processes, and pending tool calls per session are
//! capped (the least recently active goes first), and idle sessions are dropped by `tick`.

pub mod processes;

use std::collections::{HashMap, VecDeque};

use processes::ProcessLog;
pub use processes::{MAX_PROCESSES_PER_TOOL, ToolProcess};

use super::mcp::McpCall;
use super::record::{AgentLink, CallRecord, MAX_TOOL_REFS, ProcessRef, ToolCallRef};

/// Limits of the agent tracker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// A session without a call for this long ends (its open turn is reported).
    pub idle_timeout_ns: u64,
    /// Processes tracked at once.
    pub max_processes: usize,
    /// Sessions tracked per process.
    pub max_sessions_per_process: usize,
    /// Tool calls awaiting their result, per session.
    pub max_pending_tools: usize,
    /// Response ids remembered per session (a request may continue any of them).
    pub max_response_ids: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            idle_timeout_ns: 600 * 1_000_000_000,
            max_processes: 4096,
            max_sessions_per_process: 64,
            max_pending_tools: MAX_TOOL_REFS,
            max_response_ids: 8,
        }
    }
}

/// One tool execution: the model asked for a tool call and a later request carried its result.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolExecution {
    pub process: ProcessRef,
    /// Session and turn of the call that asked for the tool.
    pub link: AgentLink,
    pub provider: String,
    /// The tool call (arguments in `content` only with content capture).
    pub call: ToolCallRef,
    /// The result (only with content capture).
    pub result: Option<String>,
    /// End of the response that asked for the call (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    /// Start of the request that carried the result.
    pub end_ns: u64,
    /// Processes the agent started during the window (at most [`MAX_PROCESSES_PER_TOOL`]),
    /// and how many more. Parallel tool calls share one window, and so its processes.
    pub processes: Vec<ToolProcess>,
    pub processes_not_listed: u32,
}

/// One agent turn (an `invoke_agent` span), reported when it ends.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentTurn {
    pub process: ProcessRef,
    pub session: u64,
    pub turn: u64,
    /// `traceparent` of the session's first call.
    pub traceparent: Option<String>,
    pub provider: String,
    /// Request model of the turn's first call.
    pub model: Option<String>,
    pub conversation_id: Option<String>,
    /// Start of the turn's first call, end of its last call.
    pub start_ns: u64,
    pub end_ns: u64,
    pub calls: u32,
    pub tool_executions: u32,
    /// The last call of the turn failed.
    pub error_type: Option<String>,
}

/// What the tracker reports besides the links it puts on the calls.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentRecord {
    Tool(ToolExecution),
    Turn(AgentTurn),
    /// An MCP request of the process, linked to its agent session when it has one.
    Mcp(Box<McpCall>),
}

struct Pending {
    call: ToolCallRef,
    asked_end_ns: u64,
    turn: u64,
}

struct Turn {
    key: u64,
    provider: String,
    model: Option<String>,
    start_ns: u64,
    end_ns: u64,
    calls: u32,
    tools: u32,
    error_type: Option<String>,
}

struct Session {
    key: u64,
    traceparent: Option<String>,
    conversation_id: Option<String>,
    response_ids: VecDeque<String>,
    /// Message count and hash of the history of the session's last request.
    history: Option<(usize, u64)>,
    last_ns: u64,
    turn: Option<Turn>,
    pending: VecDeque<Pending>,
}

#[derive(Default)]
struct ProcessState {
    process: ProcessRef,
    sessions: Vec<Session>,
    last_ns: u64,
}

/// Links calls into sessions and turns, and finds tool executions; see the module docs.
pub struct AgentTracker {
    config: AgentConfig,
    processes: HashMap<u32, ProcessState>,
    /// Processes started by agent processes, for the tool executions they ran in.
    started: ProcessLog,
    next_key: u64,
}

impl AgentTracker {
    pub fn new(config: AgentConfig) -> Self {
        AgentTracker {
            config,
            processes: HashMap::new(),
            started: ProcessLog::default(),
            next_key: 1,
        }
    }

    /// Whether a process whose parent is `parent_pid` may run a tool: the parent is an agent
    /// process (it has a session) or a process one started. Only those are worth reading.
    pub fn wants_exec(&self, parent_pid: u32) -> bool {
        self.processes.contains_key(&parent_pid) || self.started.contains(parent_pid)
    }

    /// A process started by an agent (see [`AgentTracker::wants_exec`]).
    pub fn observe_exec(&mut self, process: ToolProcess) {
        self.started.exec(process);
    }

    /// A process ended (any process: those not logged are ignored).
    pub fn observe_exit(&mut self, pid: u32, ts_ns: u64) {
        self.started.exit(pid, ts_ns);
    }

    fn key(&mut self) -> u64 {
        let k = self.next_key;
        self.next_key += 1;
        k
    }

    /// Sessions tracked now (all processes).
    pub fn sessions(&self) -> usize {
        self.processes.values().map(|p| p.sessions.len()).sum()
    }

    /// Links `record` (sets `record.agent`) and appends the tool executions it reveals and the
    /// turns it ends to `out`.
    pub fn observe(&mut self, record: &mut CallRecord, out: &mut Vec<AgentRecord>) {
        let pid = record.process.pid;
        if !self.processes.contains_key(&pid) && self.processes.len() >= self.config.max_processes {
            let oldest = self
                .processes
                .iter()
                .min_by_key(|(_, p)| p.last_ns)
                .map(|(pid, _)| *pid);
            if let Some(oldest) = oldest {
                self.end_process(oldest, out);
            }
        }
        let new_key = self.key();
        let new_turn_key = self.key();
        let config = self.config.clone();
        let state = self.processes.entry(pid).or_default();
        state.process = record.process.clone();
        let end_ns = record
            .timing
            .response_end_ns
            .max(record.timing.request_start_ns);
        state.last_ns = state.last_ns.max(end_ns);

        let index = match find_session(&state.sessions, record) {
            Some(i) => i,
            None => {
                if state.sessions.len() >= config.max_sessions_per_process {
                    let oldest = state
                        .sessions
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| s.last_ns)
                        .map(|(i, _)| i);
                    if let Some(i) = oldest {
                        let s = state.sessions.swap_remove(i);
                        end_session(&state.process, s, out);
                    }
                }
                state.sessions.push(Session {
                    key: new_key,
                    traceparent: record
                        .request
                        .traceparent
                        .as_ref()
                        .filter(|t| t.len() <= 256)
                        .cloned(),
                    conversation_id: None,
                    response_ids: VecDeque::new(),
                    history: None,
                    last_ns: 0,
                    turn: None,
                    pending: VecDeque::new(),
                });
                state.sessions.len() - 1
            }
        };
        let process = state.process.clone();
        let Some(session) = state.sessions.get_mut(index) else {
            return;
        };
        let start_ns = record.timing.request_start_ns;

        // Tool results answering calls of this session.
        let mut answered = 0u32;
        for result in &record.request.tool_results {
            let Some(pos) = session
                .pending
                .iter()
                .position(|p| answers(result, &p.call))
            else {
                continue;
            };
            let Some(p) = session.pending.remove(pos) else {
                continue;
            };
            answered += 1;
            let end_ns = start_ns.max(p.asked_end_ns);
            let (processes, processes_not_listed) =
                self.started.started_in(process.pid, p.asked_end_ns, end_ns);
            out.push(AgentRecord::Tool(ToolExecution {
                process: process.clone(),
                link: AgentLink {
                    session: session.key,
                    turn: Some(p.turn),
                    traceparent: session.traceparent.clone(),
                },
                provider: record.provider.clone(),
                call: p.call,
                result: result.content.clone(),
                start_ns: p.asked_end_ns,
                end_ns,
                processes,
                processes_not_listed,
            }));
            if let Some(turn) = session.turn.as_mut().filter(|t| t.key == p.turn) {
                turn.tools += 1;
            }
        }

        // A call that brings back no result is new input: the open turn is over, and its
        // unanswered calls will never be answered.
        if answered == 0 {
            if let Some(turn) = session.turn.take() {
                out.push(turn_record(&process, session, turn));
            }
            session.pending.clear();
        }
        let asks_tools = !record.response.tool_requests.is_empty();
        if session.turn.is_none() && asks_tools {
            session.turn = Some(Turn {
                key: new_turn_key,
                provider: record.provider.clone(),
                model: record.request.model.clone(),
                start_ns,
                end_ns,
                calls: 0,
                tools: 0,
                error_type: None,
            });
        }
        let turn_key = session.turn.as_ref().map(|t| t.key);
        if let Some(turn) = session.turn.as_mut() {
            turn.calls += 1;
            turn.end_ns = turn.end_ns.max(end_ns);
            turn.error_type = record.error.as_ref().map(|e| e.error_type.clone());
        }
        if let Some(turn_key) = turn_key {
            for call in &record.response.tool_requests {
                if session.pending.len() >= config.max_pending_tools {
                    session.pending.pop_front();
                }
                session.pending.push_back(Pending {
                    call: call.clone(),
                    asked_end_ns: end_ns,
                    turn: turn_key,
                });
            }
        }
        record.agent = Some(AgentLink {
            session: session.key,
            turn: turn_key,
            traceparent: session.traceparent.clone(),
        });
        // The answer (no more tools asked): the turn is complete.
        if !asks_tools && let Some(turn) = session.turn.take() {
            out.push(turn_record(&process, session, turn));
            session.pending.clear();
        }

        if let Some(id) = record.response.id.clone().filter(|id| id.len() <= 256) {
            if session.response_ids.len() >= config.max_response_ids {
                session.response_ids.pop_front();
            }
            session.response_ids.push_back(id);
        }
        if let Some(c) = record.request.conversation_id.clone() {
            session.conversation_id = Some(c);
        }
        if let Some(last) = record.request.message_hashes.last() {
            session.history = Some((record.request.message_hashes.len(), *last));
        }
        session.last_ns = session.last_ns.max(end_ns);
    }

    /// Ends the sessions of a process that exited.
    /// Links an MCP call to the agent session of its process that was active when the call
    /// started (the one with an open turn first, else the most recent), and reports it. A
    /// process without a session keeps the call on its own trace.
    pub fn observe_mcp(&mut self, mut call: McpCall, out: &mut Vec<AgentRecord>) {
        if let Some(state) = self.processes.get(&call.process.pid) {
            let session = state
                .sessions
                .iter()
                .filter(|s| s.turn.is_some())
                .max_by_key(|s| s.last_ns)
                .or_else(|| state.sessions.iter().max_by_key(|s| s.last_ns));
            if let Some(session) = session {
                call.agent = Some(AgentLink {
                    session: session.key,
                    turn: session.turn.as_ref().map(|t| t.key),
                    traceparent: session.traceparent.clone(),
                });
            }
        }
        out.push(AgentRecord::Mcp(Box::new(call)));
    }

    pub fn process_exit(&mut self, pid: u32, out: &mut Vec<AgentRecord>) {
        self.end_process(pid, out);
    }

    fn end_process(&mut self, pid: u32, out: &mut Vec<AgentRecord>) {
        if let Some(state) = self.processes.remove(&pid) {
            // The agent is gone: so are the tool executions its processes could belong to.
            self.started.forget_descendants(pid);
            for s in state.sessions {
                end_session(&state.process, s, out);
            }
        }
    }

    /// Ends sessions idle for longer than the timeout (call periodically with the monotonic
    /// clock the kernel timestamps use).
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<AgentRecord>) {
        let timeout = self.config.idle_timeout_ns;
        for state in self.processes.values_mut() {
            let mut i = 0;
            while i < state.sessions.len() {
                if now_ns.saturating_sub(state.sessions[i].last_ns) > timeout {
                    let s = state.sessions.swap_remove(i);
                    end_session(&state.process, s, out);
                } else {
                    i += 1;
                }
            }
        }
        self.processes.retain(|_, p| !p.sessions.is_empty());
    }

    /// Ends every session (shutdown).
    pub fn finish(&mut self, out: &mut Vec<AgentRecord>) {
        let mut pids: Vec<u32> = self.processes.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            self.end_process(pid, out);
        }
    }
}

/// The session `record` continues, strongest evidence first.
fn find_session(sessions: &[Session], record: &CallRecord) -> Option<usize> {
    let req = &record.request;
    if let Some(prev) = &req.previous_response_id
        && let Some(i) = sessions
            .iter()
            .position(|s| s.response_ids.iter().any(|id| id == prev))
    {
        return Some(i);
    }
    if let Some(conv) = &req.conversation_id
        && let Some(i) = sessions
            .iter()
            .position(|s| s.conversation_id.as_ref() == Some(conv))
    {
        return Some(i);
    }
    // Results answering a session's pending calls; by id first, names only without ids.
    if let Some(i) = sessions.iter().rposition(|s| {
        req.tool_results
            .iter()
            .any(|r| s.pending.iter().any(|p| answers(r, &p.call)))
    }) {
        return Some(i);
    }
    // History extension: the longest matching history is the most specific.
    let hashes = &req.message_hashes;
    sessions
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let (len, hash) = s.history?;
            (len >= 1 && hashes.len() > len && hashes.get(len - 1) == Some(&hash))
                .then_some((i, len))
        })
        .max_by_key(|(i, len)| (*len, *i))
        .map(|(i, _)| i)
}

/// Whether a tool result answers a pending call: same id when the result has one, else the
/// same name (Gemini, Ollama: no ids), first asked first answered.
fn answers(result: &ToolCallRef, call: &ToolCallRef) -> bool {
    match (&result.id, &call.id) {
        (Some(r), Some(c)) => r == c,
        (Some(_), None) => false,
        (None, _) => result.name.is_some() && result.name == call.name,
    }
}

fn end_session(process: &ProcessRef, mut session: Session, out: &mut Vec<AgentRecord>) {
    if let Some(turn) = session.turn.take() {
        out.push(turn_record(process, &session, turn));
    }
}

fn turn_record(process: &ProcessRef, session: &Session, turn: Turn) -> AgentRecord {
    AgentRecord::Turn(AgentTurn {
        process: process.clone(),
        session: session.key,
        turn: turn.key,
        traceparent: session.traceparent.clone(),
        provider: turn.provider,
        model: turn.model,
        conversation_id: session.conversation_id.clone(),
        start_ns: turn.start_ns,
        end_ns: turn.end_ns,
        calls: turn.calls,
        tool_executions: turn.tools,
        error_type: turn.error_type,
    })
}

#[cfg(test)]
mod tests;
