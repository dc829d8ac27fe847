//! The call record: everything llmtap learned about one LLM API call.
//!
//! Produced by the GenAI stage from HTTP exchanges, consumed by the exporters. Field names follow
//! the GenAI semantic conventions v1.41 (`gen_ai.*`); the exporters map them to attribute keys in
//! one table. Times are CLOCK_MONOTONIC nanoseconds as captured by the kernel; exporters convert
//! them to wall-clock time.

use serde::{Deserialize, Serialize};

/// `gen_ai.operation.name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Chat,
    TextCompletion,
    Embeddings,
    GenerateContent,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::TextCompletion => "text_completion",
            Operation::Embeddings => "embeddings",
            Operation::GenerateContent => "generate_content",
        }
    }
}

/// The traced process that made the call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    pub pid: u32,
    /// Thread that wrote the request.
    pub tid: u32,
    /// Kernel command name (`comm`).
    pub comm: String,
}

/// Request parameters (`gen_ai.request.*`), as sent by the client.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestParams {
    pub model: Option<String>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<f64>,
    pub max_tokens: Option<u64>,
    pub stop_sequences: Vec<String>,
    pub seed: Option<i64>,
    /// `gen_ai.request.choice.count` (only when ≠ 1 on the wire, per the spec's condition).
    pub choice_count: Option<u64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    /// `gen_ai.request.stream`: the request asked for a streamed response.
    pub stream: bool,
    /// `gen_ai.request.encoding_formats` (embeddings).
    pub encoding_formats: Vec<String>,
    /// `gen_ai.output.type` when the request asks for a format (`text`, `json`, ...).
    pub output_type: Option<String>,
    /// `openai.request.service_tier`.
    pub service_tier: Option<String>,
    /// W3C `traceparent` header of the request, for trace stitching.
    pub traceparent: Option<String>,
    /// `gen_ai.conversation.id` when the API carries one.
    pub conversation_id: Option<String>,
    /// The response this request continues (OpenAI Responses `previous_response_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    /// Tool results the request carries (the answers to earlier tool calls), at most
    /// [`MAX_TOOL_REFS`]; `content` only with content capture.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_results: Vec<ToolCallRef>,
    /// Hash of every prefix of the input messages (`hashes[i]` covers messages `0..=i`), at
    /// most [`MAX_MESSAGE_HASHES`]: a later request whose history extends this one continues
    /// the same conversation. Empty when the body was not read or has more messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub message_hashes: Vec<u64>,
}

/// Most tool calls (or tool results) kept per call.
pub const MAX_TOOL_REFS: usize = 256;
/// Most input messages whose prefix hashes are kept per call.
pub const MAX_MESSAGE_HASHES: usize = 4096;

/// One tool call the model asked for, or one tool result sent back: matched by `id` (or, for
/// APIs without ids such as Gemini, by `name`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallRef {
    pub id: Option<String>,
    pub name: Option<String>,
    /// Arguments (tool call) or result (tool result), only with content capture, capped.
    pub content: Option<String>,
}

/// Response values (`gen_ai.response.*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseInfo {
    pub id: Option<String>,
    pub model: Option<String>,
    /// Raw provider values, one per choice in index order.
    pub finish_reasons: Vec<String>,
    /// `openai.response.service_tier`.
    pub service_tier: Option<String>,
    /// `openai.response.system_fingerprint`.
    pub system_fingerprint: Option<String>,
    /// `gen_ai.embeddings.dimension.count`.
    pub embeddings_dimension: Option<u64>,
    /// Names of the tools the model asked to call.
    pub tool_calls: Vec<String>,
    /// The tool calls the model asked for, with their ids (arguments only with content
    /// capture), at most [`MAX_TOOL_REFS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_requests: Vec<ToolCallRef>,
    /// Provider request id from the response headers (`x-request-id`, `request-id`, ...).
    pub request_id: Option<String>,
}

/// Token usage (`gen_ai.usage.*`), with each provider's arithmetic already applied:
/// `input_tokens` includes cached tokens, `output_tokens` includes reasoning tokens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub reasoning_output_tokens: Option<u64>,
    /// The counts were estimated with a tokenizer because the response carried no usage.
    pub estimated: bool,
}

/// Why a call failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallError {
    /// `error.type`: the body's error type/code, else the HTTP status, else a llmtap reason
    /// such as `connection_closed` or `incomplete_capture`.
    pub error_type: String,
    /// HTTP status when it was an HTTP error.
    pub http_status: Option<u16>,
    /// An error event inside an HTTP 200 stream.
    pub mid_stream: bool,
    /// Human-readable message from the body, if any (never contains request headers).
    pub message: Option<String>,
}

/// Kernel timestamps of the call (CLOCK_MONOTONIC ns).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallTiming {
    /// Entry of the write call carrying the first request byte: the span start.
    pub request_start_ns: u64,
    /// Return of the write call carrying the last request byte.
    pub request_end_ns: u64,
    /// Return of the read call that delivered the first response byte.
    pub response_start_ns: Option<u64>,
    /// Time the first chunk carrying generated content reached the client (streams): TTFT.
    pub first_chunk_ns: Option<u64>,
    /// Arrival time of every content chunk, in order (streams); drives time-per-output-chunk.
    pub chunk_times_ns: Vec<u64>,
    /// Return of the read call that delivered the last response byte (or the abort time).
    pub response_end_ns: u64,
}

impl CallTiming {
    /// `gen_ai.response.time_to_first_chunk` in seconds.
    pub fn time_to_first_chunk_s(&self) -> Option<f64> {
        self.first_chunk_ns
            .map(|t| t.saturating_sub(self.request_start_ns) as f64 / 1e9)
    }

    /// Span duration in seconds.
    pub fn duration_s(&self) -> f64 {
        self.response_end_ns.saturating_sub(self.request_start_ns) as f64 / 1e9
    }
}

/// Message content in the semconv JSON structures; present only when content capture is on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallContent {
    /// `gen_ai.input.messages`
    pub input_messages: Option<serde_json::Value>,
    /// `gen_ai.output.messages`
    pub output_messages: Option<serde_json::Value>,
    /// `gen_ai.system_instructions`
    pub system_instructions: Option<serde_json::Value>,
    /// `gen_ai.tool.definitions`
    pub tool_definitions: Option<serde_json::Value>,
}

/// One LLM API call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub process: ProcessRef,
    /// The connection within the process: the TLS connection (`SSL*`, …), or for plain HTTP
    /// the socket (`flow::is_plain_tcp`).
    pub connection_id: u64,
    pub operation: Operation,
    /// `gen_ai.provider.name` (`openai`, `anthropic`, `aws.bedrock`, `ollama`, `vllm`, ...; an
    /// OpenAI-compatible server llmtap cannot tell apart is `openai`, the API shape).
    pub provider: String,
    /// API shape: `chat_completions`, `responses`, `completions`, `embeddings`,
    /// `anthropic_messages`, `gemini_generate_content`, `bedrock_converse`,
    /// `bedrock_invoke_model`, `ollama_chat`, `ollama_generate`, `cohere_chat_v2`,
    /// `llama_cpp_completion`.
    pub api: String,
    pub server_address: Option<String>,
    pub server_port: Option<u16>,
    /// `network.peer.address` / `network.peer.port`: the socket's peer, when capture saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_peer_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_peer_port: Option<u16>,
    pub http_method: String,
    /// Request target without the query string (which may carry keys).
    pub url_path: String,
    pub http_status: Option<u16>,
    /// `network.protocol.version` (`1.1`, `2`).
    pub http_version: String,
    pub request: RequestParams,
    pub response: ResponseInfo,
    pub usage: Usage,
    pub error: Option<CallError>,
    pub timing: CallTiming,
    /// Number of content-carrying chunks in a streamed response.
    pub stream_chunks: Option<u64>,
    /// A body exceeded a configured cap: the call ended with what was known.
    pub truncated: bool,
    /// Bytes of the exchange were lost in capture (ring buffer full, cap, unreadable memory):
    /// values derived from the missing part are absent, never guessed.
    pub incomplete: bool,
    pub content: Option<CallContent>,
    /// The agent session (and turn) the call belongs to, set by [`super::agent::AgentTracker`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentLink>,
}

/// Where a call sits in its process's agent activity. Keys are unique within one run of the
/// tracer; the exporter derives trace and span ids from them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentLink {
    /// The conversation: calls continuing one another share it (and one trace).
    pub session: u64,
    /// The agent turn (an `invoke_agent` span) the call is a child of, when the call is part
    /// of a tool loop.
    pub turn: Option<u64>,
    /// `traceparent` of the session's first call: the session lives in the application's
    /// trace when it sent one (a call's own `traceparent` still wins for that call).
    pub traceparent: Option<String>,
}
