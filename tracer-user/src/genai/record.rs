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
    /// The TLS connection (`SSL*`) within the process.
    pub connection_id: u64,
    pub operation: Operation,
    /// `gen_ai.provider.name` (`openai`, `anthropic`, `aws.bedrock`, ... or the host for an
    /// unknown OpenAI-compatible server).
    pub provider: String,
    /// API shape: `chat_completions`, `responses`, `completions`, `embeddings`,
    /// `anthropic_messages`, `gemini_generate_content`, `bedrock_converse`,
    /// `bedrock_invoke_model`, `ollama_chat`, `ollama_generate`, `cohere_chat_v2`.
    pub api: String,
    pub server_address: Option<String>,
    pub server_port: Option<u16>,
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
}
