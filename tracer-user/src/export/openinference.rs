//! OpenInference compatibility (`--compat openinference`): the attributes Arize Phoenix and
//! Arize AX read, added to the GenAI ones on every span.
//!
//! Phoenix maps `gen_ai.*` spans to LLM spans by itself, but its lists and its chat view read
//! OpenInference's names only (`input.value`/`output.value`, the flattened
//! `llm.input_messages.{i}.message.*`), and it files spans under the project named by the
//! resource attribute `openinference.project.name`. The OpenInference attributes are derived
//! from the span's finished GenAI attributes, so they say the same thing: the content ones
//! come from the content attributes already scrubbed of credentials and fitted to
//! `--max-content-bytes`, and are there only with content capture.
//!
//! Names are those of the Python package `openinference-semantic-conventions` (checked against
//! it by `tests/tests/openinference.rs`).

use std::sync::Arc;

use serde_json::{Map, Value};

use super::attributes::{AttrValue, Attributes, find, keys as genai};

/// OpenInference attribute names.
pub mod keys {
    pub const SPAN_KIND: &str = "openinference.span.kind";
    pub const LLM_MODEL_NAME: &str = "llm.model_name";
    pub const LLM_REQUEST_MODEL_NAME: &str = "llm.request.model_name";
    pub const LLM_RESPONSE_MODEL_NAME: &str = "llm.response.model_name";
    pub const LLM_PROVIDER: &str = "llm.provider";
    pub const LLM_SYSTEM: &str = "llm.system";
    pub const LLM_INVOCATION_PARAMETERS: &str = "llm.invocation_parameters";
    pub const LLM_TOKEN_COUNT_PROMPT: &str = "llm.token_count.prompt";
    pub const LLM_TOKEN_COUNT_COMPLETION: &str = "llm.token_count.completion";
    pub const LLM_TOKEN_COUNT_TOTAL: &str = "llm.token_count.total";
    pub const LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ: &str =
        "llm.token_count.prompt_details.cache_read";
    pub const LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_WRITE: &str =
        "llm.token_count.prompt_details.cache_write";
    pub const LLM_TOKEN_COUNT_COMPLETION_DETAILS_REASONING: &str =
        "llm.token_count.completion_details.reasoning";
    pub const LLM_FINISH_REASON: &str = "llm.finish_reason";
    pub const LLM_COST_TOTAL: &str = "llm.cost.total";
    pub const EMBEDDING_MODEL_NAME: &str = "embedding.model_name";
    pub const EMBEDDING_INVOCATION_PARAMETERS: &str = "embedding.invocation_parameters";
    pub const INPUT_VALUE: &str = "input.value";
    pub const INPUT_MIME_TYPE: &str = "input.mime_type";
    pub const OUTPUT_VALUE: &str = "output.value";
    pub const OUTPUT_MIME_TYPE: &str = "output.mime_type";
    pub const SESSION_ID: &str = "session.id";
    pub const TOOL_NAME: &str = "tool.name";
    pub const TOOL_ID: &str = "tool.id";

    // Flattened lists: `{list}.{i}.{element key}`.
    pub const LLM_INPUT_MESSAGES: &str = "llm.input_messages";
    pub const LLM_OUTPUT_MESSAGES: &str = "llm.output_messages";
    pub const LLM_TOOLS: &str = "llm.tools";
    // Keys of a message.
    pub const MESSAGE_ROLE: &str = "message.role";
    pub const MESSAGE_NAME: &str = "message.name";
    pub const MESSAGE_CONTENT: &str = "message.content";
    pub const MESSAGE_TOOL_CALL_ID: &str = "message.tool_call_id";
    /// A list: `message.contents.{j}.message_content.*`.
    pub const MESSAGE_CONTENTS: &str = "message.contents";
    /// A list: `message.tool_calls.{j}.tool_call.*`.
    pub const MESSAGE_TOOL_CALLS: &str = "message.tool_calls";
    // Keys of a message's content item.
    pub const MESSAGE_CONTENT_TYPE: &str = "message_content.type";
    pub const MESSAGE_CONTENT_TEXT: &str = "message_content.text";
    /// An image: `message_content.image.image.url`.
    pub const MESSAGE_CONTENT_IMAGE: &str = "message_content.image";
    pub const IMAGE_URL: &str = "image.url";
    // Keys of a tool call.
    pub const TOOL_CALL_ID: &str = "tool_call.id";
    pub const TOOL_CALL_FUNCTION_NAME: &str = "tool_call.function.name";
    pub const TOOL_CALL_FUNCTION_ARGUMENTS: &str = "tool_call.function.arguments";
    // Keys of a tool definition (`llm.tools.{i}.tool.json_schema`).
    pub const TOOL_JSON_SCHEMA: &str = "tool.json_schema";

    /// Resource attribute: the Phoenix project the spans go to.
    pub const PROJECT_NAME: &str = "openinference.project.name";

    /// Every name above, for the check against the conventions' package.
    pub const ALL: &[&str] = &[
        SPAN_KIND,
        LLM_MODEL_NAME,
        LLM_REQUEST_MODEL_NAME,
        LLM_RESPONSE_MODEL_NAME,
        LLM_PROVIDER,
        LLM_SYSTEM,
        LLM_INVOCATION_PARAMETERS,
        LLM_TOKEN_COUNT_PROMPT,
        LLM_TOKEN_COUNT_COMPLETION,
        LLM_TOKEN_COUNT_TOTAL,
        LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ,
        LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_WRITE,
        LLM_TOKEN_COUNT_COMPLETION_DETAILS_REASONING,
        LLM_FINISH_REASON,
        LLM_COST_TOTAL,
        EMBEDDING_MODEL_NAME,
        EMBEDDING_INVOCATION_PARAMETERS,
        INPUT_VALUE,
        INPUT_MIME_TYPE,
        OUTPUT_VALUE,
        OUTPUT_MIME_TYPE,
        SESSION_ID,
        TOOL_NAME,
        TOOL_ID,
        LLM_INPUT_MESSAGES,
        LLM_OUTPUT_MESSAGES,
        LLM_TOOLS,
        MESSAGE_ROLE,
        MESSAGE_NAME,
        MESSAGE_CONTENT,
        MESSAGE_TOOL_CALL_ID,
        MESSAGE_CONTENTS,
        MESSAGE_TOOL_CALLS,
        MESSAGE_CONTENT_TYPE,
        MESSAGE_CONTENT_TEXT,
        MESSAGE_CONTENT_IMAGE,
        IMAGE_URL,
        TOOL_CALL_ID,
        TOOL_CALL_FUNCTION_NAME,
        TOOL_CALL_FUNCTION_ARGUMENTS,
        TOOL_JSON_SCHEMA,
        PROJECT_NAME,
    ];
}

/// `openinference.span.kind` values.
pub mod span_kind {
    pub const LLM: &str = "LLM";
    pub const EMBEDDING: &str = "EMBEDDING";
    pub const TOOL: &str = "TOOL";
    pub const AGENT: &str = "AGENT";
    pub const ALL: &[&str] = &[LLM, EMBEDDING, TOOL, AGENT];
}

/// `input.mime_type` / `output.mime_type` values.
pub mod mime_type {
    pub const JSON: &str = "application/json";
    pub const TEXT: &str = "text/plain";
    pub const ALL: &[&str] = &[JSON, TEXT];
}

/// `gen_ai.provider.name` → `llm.provider` where the names differ (OpenInference's
/// well-known provider values); other providers keep their GenAI name.
pub const PROVIDERS: &[(&str, &str)] = &[
    ("aws.bedrock", "aws"),
    ("azure.ai.openai", "azure"),
    ("azure.ai.inference", "azure"),
    ("gcp.gemini", "google"),
    ("gcp.vertex_ai", "google"),
    ("gcp.gen_ai", "google"),
    ("mistral_ai", "mistralai"),
    ("x_ai", "xai"),
    ("together_ai", "together"),
    ("moonshot_ai", "moonshot"),
    ("openai", "openai"),
    ("anthropic", "anthropic"),
    ("cohere", "cohere"),
    ("deepseek", "deepseek"),
    ("groq", "groq"),
    ("perplexity", "perplexity"),
    ("ollama", "ollama"),
];

/// `CallRecord::api` → `llm.system` (the API shape the client speaks), for the shapes
/// OpenInference names; other shapes get no `llm.system`.
pub const SYSTEMS: &[(&str, &str)] = &[
    ("chat_completions", "openai"),
    ("responses", "openai"),
    ("completions", "openai"),
    ("embeddings", "openai"),
    ("realtime", "openai"),
    ("anthropic_messages", "anthropic"),
    ("cohere_chat_v2", "cohere"),
];

/// Compatibility conventions emitted besides the GenAI ones (`--compat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compat {
    /// OpenInference (Arize Phoenix, Arize AX).
    #[value(name = "openinference")]
    OpenInference,
}

/// The value of `openinference.project.name` on a traced process's resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProjectName {
    /// The process's `service.name`.
    ServiceName,
    /// `--openinference-project`.
    Named(Arc<str>),
}

/// Attributes whose keys carry list indices (`llm.input_messages.0.message.role`).
pub type FlattenedAttributes = Vec<(String, AttrValue)>;

/// The OpenInference attributes of a span, from its GenAI attributes (v1.41 names); `api` is
/// the call's API shape (`None` for agent and tool spans).
pub fn span_attributes(
    genai_attrs: &Attributes,
    api: Option<&str>,
) -> (Attributes, FlattenedAttributes) {
    let mut a: Attributes = Vec::new();
    let mut flat: FlattenedAttributes = Vec::new();
    let text = |key: &str| match find(genai_attrs, key) {
        Some(AttrValue::Str(s)) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    };
    let Some(operation) = text(genai::OPERATION_NAME) else {
        return (a, flat);
    };
    let str_ = |s: &str| AttrValue::Str(s.to_string());
    match operation {
        "execute_tool" => {
            a.push((keys::SPAN_KIND, str_(span_kind::TOOL)));
            if let Some(name) = text(genai::TOOL_NAME) {
                a.push((keys::TOOL_NAME, str_(name)));
            }
            if let Some(id) = text(genai::TOOL_CALL_ID) {
                a.push((keys::TOOL_ID, str_(id)));
            }
            if let Some(arguments) = text(genai::TOOL_CALL_ARGUMENTS) {
                push_value(&mut a, keys::INPUT_VALUE, keys::INPUT_MIME_TYPE, arguments);
            }
            if let Some(result) = text(genai::TOOL_CALL_RESULT) {
                push_value(&mut a, keys::OUTPUT_VALUE, keys::OUTPUT_MIME_TYPE, result);
            }
        }
        "invoke_agent" | "create_agent" => {
            a.push((keys::SPAN_KIND, str_(span_kind::AGENT)));
            if let Some(id) = text(genai::CONVERSATION_ID) {
                a.push((keys::SESSION_ID, str_(id)));
            }
        }
        operation => {
            let embeddings = operation == "embeddings";
            model_call(genai_attrs, api, embeddings, &mut a, &mut flat);
        }
    }
    (a, flat)
}

/// An inference or embeddings call: an LLM (or EMBEDDING) span.
fn model_call(
    genai_attrs: &Attributes,
    api: Option<&str>,
    embeddings: bool,
    a: &mut Attributes,
    flat: &mut FlattenedAttributes,
) {
    let str_ = |s: &str| AttrValue::Str(s.to_string());
    let text = |key: &str| match find(genai_attrs, key) {
        Some(AttrValue::Str(s)) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    };
    let count = |key: &str| match find(genai_attrs, key) {
        Some(AttrValue::Int(n)) => Some(*n),
        _ => None,
    };
    let kind = if embeddings {
        span_kind::EMBEDDING
    } else {
        span_kind::LLM
    };
    a.push((keys::SPAN_KIND, str_(kind)));
    let request_model = text(genai::REQUEST_MODEL);
    let response_model = text(genai::RESPONSE_MODEL);
    // The concrete model that answered, else the one asked for (as for prices).
    if let Some(model) = response_model.or(request_model) {
        let key = if embeddings {
            keys::EMBEDDING_MODEL_NAME
        } else {
            keys::LLM_MODEL_NAME
        };
        a.push((key, str_(model)));
    }
    if !embeddings {
        if let Some(model) = request_model {
            a.push((keys::LLM_REQUEST_MODEL_NAME, str_(model)));
        }
        if let Some(model) = response_model {
            a.push((keys::LLM_RESPONSE_MODEL_NAME, str_(model)));
        }
    }
    if let Some(provider) = text(genai::PROVIDER_NAME) {
        a.push((keys::LLM_PROVIDER, str_(provider_value(provider))));
    }
    if let Some(system) = api.and_then(|api| SYSTEMS.iter().find(|(k, _)| *k == api)) {
        a.push((keys::LLM_SYSTEM, str_(system.1)));
    }
    if let Some(parameters) = invocation_parameters(genai_attrs) {
        let key = if embeddings {
            keys::EMBEDDING_INVOCATION_PARAMETERS
        } else {
            keys::LLM_INVOCATION_PARAMETERS
        };
        a.push((key, AttrValue::Str(parameters)));
    }
    let input = count(genai::USAGE_INPUT_TOKENS);
    let output = count(genai::USAGE_OUTPUT_TOKENS);
    let counts = [
        (keys::LLM_TOKEN_COUNT_PROMPT, input),
        (keys::LLM_TOKEN_COUNT_COMPLETION, output),
        (
            keys::LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ,
            count(genai::USAGE_CACHE_READ_INPUT_TOKENS),
        ),
        (
            keys::LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_WRITE,
            count(genai::USAGE_CACHE_CREATION_INPUT_TOKENS),
        ),
        (
            keys::LLM_TOKEN_COUNT_COMPLETION_DETAILS_REASONING,
            count(genai::USAGE_REASONING_OUTPUT_TOKENS),
        ),
    ];
    for (key, value) in counts {
        if let Some(n) = value {
            a.push((key, AttrValue::Int(n)));
        }
    }
    // A total only from counts that are all known (embeddings have no output tokens).
    let total = match (input, output) {
        (Some(i), Some(o)) => Some(i.saturating_add(o)),
        (Some(i), None) if embeddings => Some(i),
        _ => None,
    };
    if let Some(total) = total {
        a.push((keys::LLM_TOKEN_COUNT_TOTAL, AttrValue::Int(total)));
    }
    if let Some(AttrValue::StrArray(reasons)) = find(genai_attrs, genai::RESPONSE_FINISH_REASONS)
        && let Some(first) = reasons.first()
    {
        a.push((keys::LLM_FINISH_REASON, str_(first)));
    }
    if let Some(AttrValue::Double(cost)) = find(genai_attrs, genai::LLMTAP_USAGE_COST_USD) {
        a.push((keys::LLM_COST_TOTAL, AttrValue::Double(*cost)));
    }
    if let Some(id) = text(genai::CONVERSATION_ID) {
        a.push((keys::SESSION_ID, str_(id)));
    }

    // Content (present only with content capture).
    let parse = |key: &str| text(key).and_then(|s| serde_json::from_str::<Value>(s).ok());
    if let Some(json) = text(genai::INPUT_MESSAGES) {
        a.push((keys::INPUT_VALUE, str_(json)));
        a.push((keys::INPUT_MIME_TYPE, str_(mime_type::JSON)));
    }
    if let Some(json) = text(genai::OUTPUT_MESSAGES) {
        a.push((keys::OUTPUT_VALUE, str_(json)));
        a.push((keys::OUTPUT_MIME_TYPE, str_(mime_type::JSON)));
    }
    let mut input_messages = Vec::new();
    // OpenInference keeps the system prompt as the first input message.
    if let Some(Value::Array(parts)) = parse(genai::SYSTEM_INSTRUCTIONS) {
        input_messages.extend(messages_of("system", None, &parts));
    }
    if let Some(Value::Array(messages)) = parse(genai::INPUT_MESSAGES) {
        input_messages.extend(messages.iter().flat_map(message));
    }
    flatten_messages(keys::LLM_INPUT_MESSAGES, &input_messages, flat);
    if let Some(Value::Array(messages)) = parse(genai::OUTPUT_MESSAGES) {
        let output: Vec<Message> = messages.iter().flat_map(message).collect();
        flatten_messages(keys::LLM_OUTPUT_MESSAGES, &output, flat);
    }
    if let Some(Value::Array(tools)) = parse(genai::TOOL_DEFINITIONS) {
        for (i, tool) in tools.iter().enumerate() {
            flat.push((
                format!("{}.{i}.{}", keys::LLM_TOOLS, keys::TOOL_JSON_SCHEMA),
                AttrValue::Str(tool.to_string()),
            ));
        }
    }
}

/// OpenInference's name of a GenAI provider.
pub fn provider_value(genai_provider: &str) -> &str {
    PROVIDERS
        .iter()
        .find(|(genai, _)| *genai == genai_provider)
        .map_or(genai_provider, |(_, oi)| oi)
}

/// `input.value`/`output.value` of a tool: JSON when it parses as JSON, else text.
fn push_value(a: &mut Attributes, key: &'static str, mime_key: &'static str, value: &str) {
    let mime = if serde_json::from_str::<Value>(value).is_ok() {
        mime_type::JSON
    } else {
        mime_type::TEXT
    };
    a.push((key, AttrValue::Str(value.to_string())));
    a.push((mime_key, AttrValue::Str(mime.to_string())));
}

/// The request parameters as one JSON object, keyed by their GenAI names without the
/// `gen_ai.request.` prefix (`model`, `temperature`, `max_tokens`, ...).
fn invocation_parameters(genai_attrs: &Attributes) -> Option<String> {
    const PARAMETERS: &[&str] = &[
        genai::REQUEST_MODEL,
        genai::REQUEST_TEMPERATURE,
        genai::REQUEST_TOP_P,
        genai::REQUEST_TOP_K,
        genai::REQUEST_MAX_TOKENS,
        genai::REQUEST_STOP_SEQUENCES,
        genai::REQUEST_SEED,
        genai::REQUEST_CHOICE_COUNT,
        genai::REQUEST_FREQUENCY_PENALTY,
        genai::REQUEST_PRESENCE_PENALTY,
        genai::REQUEST_STREAM,
        genai::REQUEST_ENCODING_FORMATS,
    ];
    let mut map = Map::new();
    for key in PARAMETERS {
        if let Some(value) = find(genai_attrs, key) {
            let name = key.strip_prefix("gen_ai.request.").unwrap_or(key);
            map.insert(name.to_string(), value.to_json());
        }
    }
    if let Some(tier) = find(genai_attrs, genai::OPENAI_REQUEST_SERVICE_TIER) {
        map.insert("service_tier".into(), tier.to_json());
    }
    (!map.is_empty()).then(|| Value::Object(map).to_string())
}

/// One OpenInference message.
#[derive(Debug, Default, PartialEq)]
struct Message {
    role: String,
    name: Option<String>,
    /// Text, reasoning and image parts, in order.
    contents: Vec<Content>,
    tool_calls: Vec<ToolCall>,
    /// A tool's answer: the call it answers, and the answer as `message.content`.
    tool_call_id: Option<String>,
    tool_response: Option<String>,
}

#[derive(Debug, PartialEq)]
enum Content {
    Text(String),
    Reasoning(String),
    ImageUrl(String),
}

#[derive(Debug, Default, PartialEq)]
struct ToolCall {
    id: Option<String>,
    name: Option<String>,
    arguments: Option<String>,
}

/// A JSON value as text: strings as they are, anything else serialized.
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The OpenInference messages of one GenAI message (`{"role", "parts", "name"?}`).
fn message(value: &Value) -> Vec<Message> {
    let role = value.get("role").and_then(Value::as_str).unwrap_or("");
    let name = value.get("name").and_then(Value::as_str);
    let parts = value
        .get("parts")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    messages_of(role, name, parts)
}

/// GenAI parts as OpenInference messages: one message for the text, reasoning, images and
/// tool calls, and one per tool answer (a message answers one tool call in OpenInference).
fn messages_of(role: &str, name: Option<&str>, parts: &[Value]) -> Vec<Message> {
    let mut main = Message {
        role: role.to_string(),
        name: name.map(str::to_string),
        ..Message::default()
    };
    let mut answers = Vec::new();
    for part in parts {
        let field = |k: &str| part.get(k).and_then(as_text);
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(text) = field("content") {
                    main.contents.push(Content::Text(text));
                }
            }
            Some("reasoning") => {
                if let Some(text) = field("content") {
                    main.contents.push(Content::Reasoning(text));
                }
            }
            Some("uri") if part.get("modality").and_then(Value::as_str) == Some("image") => {
                if let Some(uri) = field("uri") {
                    main.contents.push(Content::ImageUrl(uri));
                }
            }
            Some("tool_call") => main.tool_calls.push(ToolCall {
                id: field("id"),
                name: field("name"),
                arguments: field("arguments"),
            }),
            Some("tool_call_response") => answers.push(Message {
                role: role.to_string(),
                name: name.map(str::to_string),
                tool_call_id: field("id"),
                tool_response: field("response"),
                ..Message::default()
            }),
            // Inline data (blobs, files) is left to input.value/output.value.
            _ => {}
        }
    }
    let main_has_content = !main.contents.is_empty() || !main.tool_calls.is_empty();
    let mut out = Vec::with_capacity(answers.len() + 1);
    if main_has_content || answers.is_empty() {
        out.push(main);
    }
    out.extend(answers);
    out
}

/// `{list}.{i}.message.*` for each message.
fn flatten_messages(list: &str, messages: &[Message], flat: &mut FlattenedAttributes) {
    let str_ = |s: &str| AttrValue::Str(s.to_string());
    for (i, m) in messages.iter().enumerate() {
        let prefix = format!("{list}.{i}");
        flat.push((format!("{prefix}.{}", keys::MESSAGE_ROLE), str_(&m.role)));
        if let Some(name) = &m.name {
            flat.push((format!("{prefix}.{}", keys::MESSAGE_NAME), str_(name)));
        }
        if let Some(id) = &m.tool_call_id {
            flat.push((format!("{prefix}.{}", keys::MESSAGE_TOOL_CALL_ID), str_(id)));
        }
        match (&m.tool_response, m.contents.as_slice()) {
            (Some(response), _) => {
                flat.push((
                    format!("{prefix}.{}", keys::MESSAGE_CONTENT),
                    str_(response),
                ));
            }
            // One text: the message's content, as OpenInference's instrumentations write it.
            (None, [Content::Text(text)]) => {
                flat.push((format!("{prefix}.{}", keys::MESSAGE_CONTENT), str_(text)));
            }
            (None, contents) => {
                for (j, content) in contents.iter().enumerate() {
                    let item = format!("{prefix}.{}.{j}", keys::MESSAGE_CONTENTS);
                    let (kind, key, value) = match content {
                        Content::Text(t) => ("text", keys::MESSAGE_CONTENT_TEXT.to_string(), t),
                        Content::Reasoning(t) => {
                            ("reasoning", keys::MESSAGE_CONTENT_TEXT.to_string(), t)
                        }
                        Content::ImageUrl(u) => (
                            "image",
                            format!("{}.{}", keys::MESSAGE_CONTENT_IMAGE, keys::IMAGE_URL),
                            u,
                        ),
                    };
                    flat.push((format!("{item}.{}", keys::MESSAGE_CONTENT_TYPE), str_(kind)));
                    flat.push((format!("{item}.{key}"), str_(value)));
                }
            }
        }
        for (j, call) in m.tool_calls.iter().enumerate() {
            let item = format!("{prefix}.{}.{j}", keys::MESSAGE_TOOL_CALLS);
            let fields = [
                (keys::TOOL_CALL_ID, &call.id),
                (keys::TOOL_CALL_FUNCTION_NAME, &call.name),
                (keys::TOOL_CALL_FUNCTION_ARGUMENTS, &call.arguments),
            ];
            for (key, value) in fields {
                if let Some(v) = value {
                    flat.push((format!("{item}.{key}"), str_(v)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &str) -> AttrValue {
        AttrValue::Str(v.into())
    }

    fn get<'a>(flat: &'a FlattenedAttributes, key: &str) -> Option<&'a AttrValue> {
        flat.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn chat_attrs() -> Attributes {
        vec![
            (genai::OPERATION_NAME, s("chat")),
            (genai::PROVIDER_NAME, s("anthropic")),
            (genai::REQUEST_MODEL, s("claude-sonnet-4-5")),
            (genai::REQUEST_TEMPERATURE, AttrValue::Double(0.2)),
            (genai::REQUEST_MAX_TOKENS, AttrValue::Int(256)),
            (genai::REQUEST_STREAM, AttrValue::Bool(true)),
            (genai::RESPONSE_MODEL, s("claude-sonnet-4-5-20250929")),
            (
                genai::RESPONSE_FINISH_REASONS,
                AttrValue::StrArray(vec!["tool_use".into()]),
            ),
            (genai::USAGE_INPUT_TOKENS, AttrValue::Int(120)),
            (genai::USAGE_OUTPUT_TOKENS, AttrValue::Int(30)),
            (genai::USAGE_CACHE_READ_INPUT_TOKENS, AttrValue::Int(100)),
            (genai::LLMTAP_USAGE_COST_USD, AttrValue::Double(0.25)),
            (genai::CONVERSATION_ID, s("conv-1")),
        ]
    }

    #[test]
    fn llm_span_without_content() {
        let (a, flat) = span_attributes(&chat_attrs(), Some("anthropic_messages"));
        assert!(flat.is_empty());
        let f = |k| find(&a, k).cloned();
        assert_eq!(f(keys::SPAN_KIND), Some(s("LLM")));
        assert_eq!(
            f(keys::LLM_MODEL_NAME),
            Some(s("claude-sonnet-4-5-20250929"))
        );
        assert_eq!(
            f(keys::LLM_REQUEST_MODEL_NAME),
            Some(s("claude-sonnet-4-5"))
        );
        assert_eq!(f(keys::LLM_PROVIDER), Some(s("anthropic")));
        assert_eq!(f(keys::LLM_SYSTEM), Some(s("anthropic")));
        assert_eq!(f(keys::LLM_TOKEN_COUNT_PROMPT), Some(AttrValue::Int(120)));
        assert_eq!(
            f(keys::LLM_TOKEN_COUNT_COMPLETION),
            Some(AttrValue::Int(30))
        );
        assert_eq!(f(keys::LLM_TOKEN_COUNT_TOTAL), Some(AttrValue::Int(150)));
        assert_eq!(
            f(keys::LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ),
            Some(AttrValue::Int(100))
        );
        assert_eq!(f(keys::LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_WRITE), None);
        assert_eq!(f(keys::LLM_FINISH_REASON), Some(s("tool_use")));
        assert_eq!(f(keys::LLM_COST_TOTAL), Some(AttrValue::Double(0.25)));
        assert_eq!(f(keys::SESSION_ID), Some(s("conv-1")));
        let Some(AttrValue::Str(params)) = f(keys::LLM_INVOCATION_PARAMETERS) else {
            panic!("no invocation parameters in {a:?}");
        };
        assert_eq!(
            serde_json::from_str::<Value>(&params).unwrap_or_default(),
            json!({"model": "claude-sonnet-4-5", "temperature": 0.2, "max_tokens": 256, "stream": true})
        );
        // Content attributes only come with content capture.
        assert_eq!(f(keys::INPUT_VALUE), None);
        assert_eq!(f(keys::OUTPUT_VALUE), None);
    }

    #[test]
    fn totals_are_never_guessed() {
        let mut attrs = chat_attrs();
        attrs.retain(|(k, _)| *k != genai::USAGE_OUTPUT_TOKENS);
        let (a, _) = span_attributes(&attrs, None);
        assert_eq!(find(&a, keys::LLM_TOKEN_COUNT_TOTAL), None);
        assert_eq!(find(&a, keys::LLM_SYSTEM), None, "no API shape, no system");
        let embeddings: Attributes = vec![
            (genai::OPERATION_NAME, s("embeddings")),
            (genai::PROVIDER_NAME, s("gcp.gemini")),
            (genai::REQUEST_MODEL, s("text-embedding-004")),
            (genai::USAGE_INPUT_TOKENS, AttrValue::Int(8)),
        ];
        let (a, _) = span_attributes(&embeddings, Some("embeddings"));
        assert_eq!(find(&a, keys::SPAN_KIND), Some(&s("EMBEDDING")));
        assert_eq!(
            find(&a, keys::EMBEDDING_MODEL_NAME),
            Some(&s("text-embedding-004"))
        );
        assert_eq!(find(&a, keys::LLM_MODEL_NAME), None);
        assert_eq!(find(&a, keys::LLM_PROVIDER), Some(&s("google")));
        assert_eq!(
            find(&a, keys::LLM_TOKEN_COUNT_TOTAL),
            Some(&AttrValue::Int(8))
        );
    }

    #[test]
    fn content_is_flattened_into_messages() {
        let mut attrs = chat_attrs();
        let input = json!([
            {"role": "user", "parts": [{"type": "text", "content": "weather in Paris?"}]},
            {"role": "assistant", "parts": [
                {"type": "text", "content": "checking"},
                {"type": "tool_call", "id": "t1", "name": "weather", "arguments": {"city": "Paris"}}
            ]},
            {"role": "user", "parts": [
                {"type": "tool_call_response", "id": "t1", "response": "sunny"},
                {"type": "tool_call_response", "id": "t2", "response": {"temp": 21}}
            ]},
            {"role": "user", "parts": [
                {"type": "text", "content": "and this?"},
                {"type": "uri", "modality": "image", "uri": "https://example.test/a.png"}
            ]}
        ]);
        let output = json!([{"role": "assistant", "parts": [
            {"type": "reasoning", "content": "think"},
            {"type": "text", "content": "Sunny, 21°C."}
        ], "finish_reason": "stop"}]);
        let system = json!([{"type": "text", "content": "be brief"}]);
        let tools = json!([{"type": "function", "name": "weather"}]);
        attrs.push((genai::INPUT_MESSAGES, s(&input.to_string())));
        attrs.push((genai::OUTPUT_MESSAGES, s(&output.to_string())));
        attrs.push((genai::SYSTEM_INSTRUCTIONS, s(&system.to_string())));
        attrs.push((genai::TOOL_DEFINITIONS, s(&tools.to_string())));
        let (a, flat) = span_attributes(&attrs, Some("anthropic_messages"));
        assert_eq!(find(&a, keys::INPUT_VALUE), Some(&s(&input.to_string())));
        assert_eq!(
            find(&a, keys::INPUT_MIME_TYPE),
            Some(&s("application/json"))
        );
        assert_eq!(find(&a, keys::OUTPUT_VALUE), Some(&s(&output.to_string())));
        assert_eq!(
            find(&a, keys::OUTPUT_MIME_TYPE),
            Some(&s("application/json"))
        );
        let expected: Vec<(&str, &str)> = vec![
            ("llm.input_messages.0.message.role", "system"),
            ("llm.input_messages.0.message.content", "be brief"),
            ("llm.input_messages.1.message.role", "user"),
            ("llm.input_messages.1.message.content", "weather in Paris?"),
            ("llm.input_messages.2.message.role", "assistant"),
            ("llm.input_messages.2.message.content", "checking"),
            (
                "llm.input_messages.2.message.tool_calls.0.tool_call.id",
                "t1",
            ),
            (
                "llm.input_messages.2.message.tool_calls.0.tool_call.function.name",
                "weather",
            ),
            (
                "llm.input_messages.2.message.tool_calls.0.tool_call.function.arguments",
                r#"{"city":"Paris"}"#,
            ),
            ("llm.input_messages.3.message.role", "user"),
            ("llm.input_messages.3.message.tool_call_id", "t1"),
            ("llm.input_messages.3.message.content", "sunny"),
            ("llm.input_messages.4.message.role", "user"),
            ("llm.input_messages.4.message.tool_call_id", "t2"),
            ("llm.input_messages.4.message.content", r#"{"temp":21}"#),
            ("llm.input_messages.5.message.role", "user"),
            (
                "llm.input_messages.5.message.contents.0.message_content.type",
                "text",
            ),
            (
                "llm.input_messages.5.message.contents.0.message_content.text",
                "and this?",
            ),
            (
                "llm.input_messages.5.message.contents.1.message_content.type",
                "image",
            ),
            (
                "llm.input_messages.5.message.contents.1.message_content.image.image.url",
                "https://example.test/a.png",
            ),
            ("llm.output_messages.0.message.role", "assistant"),
            (
                "llm.output_messages.0.message.contents.0.message_content.type",
                "reasoning",
            ),
            (
                "llm.output_messages.0.message.contents.0.message_content.text",
                "think",
            ),
            (
                "llm.output_messages.0.message.contents.1.message_content.type",
                "text",
            ),
            (
                "llm.output_messages.0.message.contents.1.message_content.text",
                "Sunny, 21°C.",
            ),
            (
                "llm.tools.0.tool.json_schema",
                r#"{"name":"weather","type":"function"}"#,
            ),
        ];
        let got: Vec<(&str, &str)> = flat
            .iter()
            .map(|(k, v)| match v {
                AttrValue::Str(v) => (k.as_str(), v.as_str()),
                _ => (k.as_str(), "<not a string>"),
            })
            .collect();
        assert_eq!(got, expected);
        assert_eq!(get(&flat, "llm.input_messages.6.message.role"), None);
    }

    #[test]
    fn tool_and_agent_spans() {
        let tool: Attributes = vec![
            (genai::OPERATION_NAME, s("execute_tool")),
            (genai::TOOL_NAME, s("add")),
            (genai::TOOL_CALL_ID, s("call_1")),
            (genai::TOOL_CALL_ARGUMENTS, s(r#"{"a":1}"#)),
            (genai::TOOL_CALL_RESULT, s("2 apples")),
        ];
        let (a, flat) = span_attributes(&tool, None);
        assert!(flat.is_empty());
        assert_eq!(find(&a, keys::SPAN_KIND), Some(&s("TOOL")));
        assert_eq!(find(&a, keys::TOOL_NAME), Some(&s("add")));
        assert_eq!(find(&a, keys::TOOL_ID), Some(&s("call_1")));
        assert_eq!(find(&a, keys::INPUT_VALUE), Some(&s(r#"{"a":1}"#)));
        assert_eq!(
            find(&a, keys::INPUT_MIME_TYPE),
            Some(&s("application/json"))
        );
        assert_eq!(find(&a, keys::OUTPUT_VALUE), Some(&s("2 apples")));
        assert_eq!(find(&a, keys::OUTPUT_MIME_TYPE), Some(&s("text/plain")));
        let agent: Attributes = vec![
            (genai::OPERATION_NAME, s("invoke_agent")),
            (genai::CONVERSATION_ID, s("sess")),
        ];
        let (a, _) = span_attributes(&agent, None);
        assert_eq!(
            a,
            vec![(keys::SPAN_KIND, s("AGENT")), (keys::SESSION_ID, s("sess"))]
        );
        // A span without an operation (an MCP `tools/list`) gets no OpenInference kind.
        let (a, flat) = span_attributes(&vec![(genai::MCP_METHOD_NAME, s("tools/list"))], None);
        assert!(a.is_empty() && flat.is_empty());
    }

    #[test]
    fn providers_map_to_openinference_names() {
        assert_eq!(provider_value("aws.bedrock"), "aws");
        assert_eq!(provider_value("azure.ai.openai"), "azure");
        assert_eq!(provider_value("openai"), "openai");
        // Providers OpenInference does not list keep their GenAI name.
        assert_eq!(provider_value("openrouter"), "openrouter");
    }
}
