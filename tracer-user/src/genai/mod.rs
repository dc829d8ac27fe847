//! Stage 4, GenAI: HTTP exchanges → LLM call records (providers, usage, timings).
//!
//! `provider` recognises the API from the request head; `api/` has one reader per API shape
//! (request parameters and agent evidence, response bodies and stream events, typed and
//! borrowing); `response` accumulates what they read, `request` builds the opt-in input
//! content, `call` assembles one call and
//! `estimate` counts tokens when a response carries none (opt-in); `agent` links finished calls
//! into agent sessions and finds tool executions.

pub mod agent;
pub mod api;
pub mod call;
pub mod estimate;
pub mod json;
pub mod mcp;
pub mod mcp_sse;
pub mod mcp_stdio;
pub mod provider;
pub mod record;
pub mod request;
pub mod response;
pub mod scan;
pub mod websocket;

pub use agent::{AgentConfig, AgentRecord, AgentTracker, AgentTurn, ToolExecution, ToolProcess};
pub use call::{CallBuilder, CallConfig};
pub use mcp::{McpCall, McpExchange, McpTarget, McpTransport, identify_mcp};
pub use mcp_sse::{
    LegacySessions, McpEventStream, StreamEvent as McpStreamEvent, is_event_stream_request,
};
pub use mcp_stdio::McpStdio;
pub use provider::{Api, ApiTarget, identify, identify_websocket, is_known_provider};
pub use record::*;
pub use response::{FINISH_REASON_CLASSES, OTHER_FINISH_REASON, finish_reason_class};
pub use websocket::{FinishedCall, MessagePiece, WsSession};
