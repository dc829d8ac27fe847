//! The one table of attribute keys llmtap emits, and the attribute value type shared by every
//! output (OTLP, JSONL, console).
//!
//! Keys follow the GenAI semantic conventions v1.41; when the conventions rename something
//! (`semantic-conventions-genai`), the change is made here once.

/// Attribute keys (span, metric and resource).
pub mod keys {
    // Span and metric attributes (GenAI semconv v1.41).
    pub const OPERATION_NAME: &str = "gen_ai.operation.name";
    pub const PROVIDER_NAME: &str = "gen_ai.provider.name";
    pub const REQUEST_MODEL: &str = "gen_ai.request.model";
    pub const REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
    pub const REQUEST_TOP_P: &str = "gen_ai.request.top_p";
    pub const REQUEST_TOP_K: &str = "gen_ai.request.top_k";
    pub const REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
    pub const REQUEST_STOP_SEQUENCES: &str = "gen_ai.request.stop_sequences";
    pub const REQUEST_SEED: &str = "gen_ai.request.seed";
    pub const REQUEST_CHOICE_COUNT: &str = "gen_ai.request.choice.count";
    pub const REQUEST_FREQUENCY_PENALTY: &str = "gen_ai.request.frequency_penalty";
    pub const REQUEST_PRESENCE_PENALTY: &str = "gen_ai.request.presence_penalty";
    pub const REQUEST_STREAM: &str = "gen_ai.request.stream";
    pub const REQUEST_ENCODING_FORMATS: &str = "gen_ai.request.encoding_formats";
    pub const OUTPUT_TYPE: &str = "gen_ai.output.type";
    pub const CONVERSATION_ID: &str = "gen_ai.conversation.id";
    pub const RESPONSE_ID: &str = "gen_ai.response.id";
    pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
    pub const RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
    pub const RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
    pub const USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    pub const USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    pub const USAGE_CACHE_READ_INPUT_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
    pub const USAGE_CACHE_CREATION_INPUT_TOKENS: &str = "gen_ai.usage.cache_creation.input_tokens";
    pub const USAGE_REASONING_OUTPUT_TOKENS: &str = "gen_ai.usage.reasoning.output_tokens";
    pub const EMBEDDINGS_DIMENSION_COUNT: &str = "gen_ai.embeddings.dimension.count";
    pub const TOKEN_TYPE: &str = "gen_ai.token.type";
    pub const INPUT_MESSAGES: &str = "gen_ai.input.messages";
    pub const OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
    pub const SYSTEM_INSTRUCTIONS: &str = "gen_ai.system_instructions";
    pub const TOOL_DEFINITIONS: &str = "gen_ai.tool.definitions";
    pub const OPENAI_API_TYPE: &str = "openai.api.type";
    pub const OPENAI_REQUEST_SERVICE_TIER: &str = "openai.request.service_tier";
    pub const OPENAI_RESPONSE_SERVICE_TIER: &str = "openai.response.service_tier";
    pub const OPENAI_RESPONSE_SYSTEM_FINGERPRINT: &str = "openai.response.system_fingerprint";
    pub const SERVER_ADDRESS: &str = "server.address";
    pub const NETWORK_PEER_ADDRESS: &str = "network.peer.address";
    pub const NETWORK_PEER_PORT: &str = "network.peer.port";
    pub const SERVER_PORT: &str = "server.port";
    pub const ERROR_TYPE: &str = "error.type";
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";

    // llmtap's own span attributes.
    pub const LLMTAP_USAGE_ESTIMATED: &str = "llmtap.usage.estimated";
    pub const LLMTAP_CALL_TRUNCATED: &str = "llmtap.call.truncated";
    pub const LLMTAP_CALL_INCOMPLETE: &str = "llmtap.call.incomplete";
    pub const LLMTAP_STREAM_CHUNKS: &str = "llmtap.stream.chunks";
    pub const LLMTAP_TOOL_CALLS: &str = "llmtap.tool_calls";
    pub const TOOL_NAME: &str = "gen_ai.tool.name";
    pub const TOOL_CALL_ID: &str = "gen_ai.tool.call.id";
    pub const TOOL_TYPE: &str = "gen_ai.tool.type";
    pub const TOOL_CALL_ARGUMENTS: &str = "gen_ai.tool.call.arguments";
    pub const TOOL_CALL_RESULT: &str = "gen_ai.tool.call.result";
    pub const LLMTAP_AGENT_CALLS: &str = "llmtap.agent.calls";
    pub const LLMTAP_AGENT_TOOL_EXECUTIONS: &str = "llmtap.agent.tool_executions";
    pub const LLMTAP_USAGE_COST_USD: &str = "llmtap.usage.cost_usd";
    // Events of processes a tool started (with the process.* resource keys).
    pub const PROCESS_PARENT_PID: &str = "process.parent_pid";
    /// Seconds from a process's exec to its exit.
    pub const LLMTAP_PROCESS_DURATION: &str = "llmtap.process.duration";
    // MCP client spans.
    pub const MCP_METHOD_NAME: &str = "mcp.method.name";
    pub const MCP_SESSION_ID: &str = "mcp.session.id";
    pub const MCP_PROTOCOL_VERSION: &str = "mcp.protocol.version";
    pub const MCP_RESOURCE_URI: &str = "mcp.resource.uri";
    pub const JSONRPC_REQUEST_ID: &str = "jsonrpc.request.id";
    pub const JSONRPC_PROTOCOL_VERSION: &str = "jsonrpc.protocol.version";
    pub const RPC_RESPONSE_STATUS_CODE: &str = "rpc.response.status_code";
    pub const PROMPT_NAME: &str = "gen_ai.prompt.name";
    pub const NETWORK_TRANSPORT: &str = "network.transport";
    pub const NETWORK_PROTOCOL_NAME: &str = "network.protocol.name";
    /// On `llmtap.calls`: the first choice's finish reason as a bounded class.
    pub const LLMTAP_FINISH_REASON: &str = "llmtap.finish_reason";
    /// Content attributes cut to `--max-content-bytes` (whole parts kept, the rest left out).
    pub const LLMTAP_CONTENT_TRUNCATED: &str = "llmtap.content.truncated";

    // Resource attributes.
    pub const SERVICE_NAME: &str = "service.name";
    pub const SERVICE_NAMESPACE: &str = "service.namespace";
    pub const PROCESS_PID: &str = "process.pid";
    pub const PROCESS_EXECUTABLE_NAME: &str = "process.executable.name";
    pub const PROCESS_EXECUTABLE_PATH: &str = "process.executable.path";
    pub const PROCESS_COMMAND_LINE: &str = "process.command_line";
    pub const HOST_NAME: &str = "host.name";
    pub const CONTAINER_ID: &str = "container.id";
    pub const TELEMETRY_SDK_NAME: &str = "telemetry.sdk.name";
    pub const TELEMETRY_SDK_LANGUAGE: &str = "telemetry.sdk.language";
    pub const TELEMETRY_SDK_VERSION: &str = "telemetry.sdk.version";
}

/// An attribute value, in the shapes the conventions use.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    StrArray(Vec<String>),
}

impl AttrValue {
    /// Unsigned counts saturate at `i64::MAX` (OTLP integers are signed).
    pub fn count(n: u64) -> Self {
        AttrValue::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            AttrValue::Str(s) => serde_json::Value::from(s.as_str()),
            AttrValue::Int(n) => serde_json::Value::from(*n),
            AttrValue::Double(x) => serde_json::Value::from(*x),
            AttrValue::Bool(b) => serde_json::Value::from(*b),
            AttrValue::StrArray(v) => serde_json::Value::from(v.clone()),
        }
    }

    pub fn to_otel(&self) -> opentelemetry::Value {
        use opentelemetry::{Array, StringValue, Value};
        match self {
            AttrValue::Str(s) => Value::from(s.clone()),
            AttrValue::Int(n) => Value::I64(*n),
            AttrValue::Double(x) => Value::F64(*x),
            AttrValue::Bool(b) => Value::Bool(*b),
            AttrValue::StrArray(v) => Value::Array(Array::String(
                v.iter().map(|s| StringValue::from(s.clone())).collect(),
            )),
        }
    }
}

/// An ordered list of attributes; keys come from [`keys`].
pub type Attributes = Vec<(&'static str, AttrValue)>;

/// String attributes from a metadata source that has its own key table (Kubernetes).
pub fn from_strings(pairs: Vec<(&'static str, String)>) -> Attributes {
    pairs
        .into_iter()
        .map(|(key, value)| (key, AttrValue::Str(value)))
        .collect()
}

/// The attributes as OpenTelemetry key-values (spans, resources and metric points alike).
pub fn to_key_values(attributes: &Attributes) -> Vec<opentelemetry::KeyValue> {
    attributes
        .iter()
        .map(|(k, v)| opentelemetry::KeyValue::new(*k, v.to_otel()))
        .collect()
}

/// Looks up an attribute by key.
pub fn find<'a>(attributes: &'a Attributes, key: &str) -> Option<&'a AttrValue> {
    attributes.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_saturate_and_values_convert() {
        assert_eq!(AttrValue::count(u64::MAX), AttrValue::Int(i64::MAX));
        assert_eq!(
            AttrValue::StrArray(vec!["stop".into()]).to_json(),
            serde_json::json!(["stop"])
        );
        assert_eq!(AttrValue::Int(3).to_otel(), opentelemetry::Value::I64(3));
        let attrs: Attributes = vec![(keys::SERVER_PORT, AttrValue::Int(443))];
        assert_eq!(find(&attrs, keys::SERVER_PORT), Some(&AttrValue::Int(443)));
        assert_eq!(find(&attrs, keys::SERVER_ADDRESS), None);
    }
}
