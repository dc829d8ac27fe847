//! What a request body says about the conversation it belongs to: the response it continues,
//! the tool results it carries, and a hash of every prefix of its message history.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::Value;

use super::super::json::{arr_at, at, str_at};
use super::super::provider::Api;
use super::super::record::{MAX_MESSAGE_HASHES, MAX_TOOL_REFS, RequestParams, ToolCallRef};

/// Bytes of one tool result kept in a record (content capture only; the exporter cuts
/// further to its content limit).
pub const TOOL_CONTENT_CAP: usize = 64 * 1024;

/// Fills `previous_response_id`, `tool_results` and `message_hashes` from a request body.
/// Tool result content is read only when `with_content`.
pub fn read_agent_evidence(api: Api, body: &Value, with_content: bool, params: &mut RequestParams) {
    params.previous_response_id = str_at(body, &["previous_response_id"]);
    let messages: Vec<&Value> = match api {
        Api::Responses => match at(body, &["input"]) {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(other) => vec![other],
            None => Vec::new(),
        },
        Api::GeminiGenerateContent => arr_at(body, &["contents"]).iter().collect(),
        _ => arr_at(body, &["messages"]).iter().collect(),
    };
    params.message_hashes = prefix_hashes(&messages);
    let mut results = Vec::new();
    let mut push = |id: Option<String>, name: Option<String>, content: Option<&Value>| {
        if results.len() < MAX_TOOL_REFS && (id.is_some() || name.is_some()) {
            results.push(ToolCallRef {
                id,
                name,
                content: if with_content {
                    content.map(content_text)
                } else {
                    None
                },
            });
        }
    };
    match api {
        Api::Responses => {
            for item in &messages {
                if str_at(item, &["type"]).as_deref() == Some("function_call_output") {
                    push(str_at(item, &["call_id"]), None, at(item, &["output"]));
                }
            }
        }
        Api::GeminiGenerateContent => {
            // Gemini has no call ids (newer models may send one): results are matched by
            // name, so only the parts after the model's last turn count, not the results of
            // earlier rounds that the history repeats.
            let last_model = messages
                .iter()
                .rposition(|c| str_at(c, &["role"]).as_deref() == Some("model"));
            let fresh = last_model.map_or(0, |i| i + 1);
            for content in messages.iter().skip(fresh) {
                for part in arr_at(content, &["parts"]) {
                    if let Some(fr) = at(part, &["functionResponse"]) {
                        push(
                            str_at(fr, &["id"]),
                            str_at(fr, &["name"]),
                            at(fr, &["response"]),
                        );
                    }
                }
            }
        }
        _ => {
            for m in &messages {
                // OpenAI chat (and compatible servers), Ollama, Cohere: `tool` messages.
                if str_at(m, &["role"]).as_deref() == Some("tool") {
                    push(
                        str_at(m, &["tool_call_id"]),
                        str_at(m, &["name"]).or_else(|| str_at(m, &["tool_name"])),
                        at(m, &["content"]),
                    );
                    continue;
                }
                for block in arr_at(m, &["content"]) {
                    // Anthropic `tool_result` blocks.
                    if str_at(block, &["type"]).as_deref() == Some("tool_result") {
                        push(
                            str_at(block, &["tool_use_id"]),
                            None,
                            at(block, &["content"]),
                        );
                    }
                    // Bedrock Converse `toolResult` blocks.
                    if let Some(tr) = at(block, &["toolResult"]) {
                        push(str_at(tr, &["toolUseId"]), None, at(tr, &["content"]));
                    }
                }
            }
        }
    }
    params.tool_results = results;
}

/// A string stays itself; anything else is its JSON text. Cut to [`TOOL_CONTENT_CAP`].
fn content_text(v: &Value) -> String {
    let mut text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.len() > TOOL_CONTENT_CAP {
        let mut end = TOOL_CONTENT_CAP;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// `out[i]` hashes messages `0..=i`; empty beyond [`MAX_MESSAGE_HASHES`] messages.
fn prefix_hashes(messages: &[&Value]) -> Vec<u64> {
    if messages.len() > MAX_MESSAGE_HASHES {
        return Vec::new();
    }
    let mut hasher = DefaultHasher::new();
    messages
        .iter()
        .map(|m| {
            m.to_string().hash(&mut hasher);
            hasher.finish()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(api: Api, body: Value, content: bool) -> RequestParams {
        let mut p = RequestParams::default();
        read_agent_evidence(api, &body, content, &mut p);
        p
    }

    #[test]
    fn tool_results_of_each_api() {
        let chat = read(
            Api::ChatCompletions,
            json!({"messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function"}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "22C"}
            ]}),
            true,
        );
        assert_eq!(chat.tool_results.len(), 1);
        assert_eq!(chat.tool_results[0].id.as_deref(), Some("call_1"));
        assert_eq!(chat.tool_results[0].content.as_deref(), Some("22C"));
        assert_eq!(chat.message_hashes.len(), 3);

        let responses = read(
            Api::Responses,
            json!({"previous_response_id": "resp_1", "input": [
                {"type": "function_call_output", "call_id": "fc_1", "output": {"t": 1}}
            ]}),
            false,
        );
        assert_eq!(responses.previous_response_id.as_deref(), Some("resp_1"));
        assert_eq!(responses.tool_results[0].id.as_deref(), Some("fc_1"));
        assert_eq!(
            responses.tool_results[0].content, None,
            "content only when captured"
        );

        let anthropic = read(
            Api::AnthropicMessages,
            json!({"messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "ok"}]}
            ]}]}),
            true,
        );
        assert_eq!(anthropic.tool_results[0].id.as_deref(), Some("toolu_1"));
        assert_eq!(
            anthropic.tool_results[0].content.as_deref(),
            Some(r#"[{"text":"ok","type":"text"}]"#)
        );

        let bedrock = read(
            Api::BedrockConverse,
            json!({"messages": [{"role": "user", "content": [
                {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "ok"}]}}
            ]}]}),
            false,
        );
        assert_eq!(bedrock.tool_results[0].id.as_deref(), Some("tooluse_1"));
    }

    #[test]
    fn gemini_results_count_only_after_the_last_model_turn() {
        let p = read(
            Api::GeminiGenerateContent,
            json!({"contents": [
                {"role": "user", "parts": [{"text": "weather?"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 1}}}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 2}}}]}
            ]}),
            true,
        );
        assert_eq!(p.tool_results.len(), 1);
        assert_eq!(p.tool_results[0].name.as_deref(), Some("get_weather"));
        assert_eq!(p.tool_results[0].content.as_deref(), Some(r#"{"t":2}"#));
    }

    #[test]
    fn prefix_hashes_extend_and_differ() {
        let one = read(
            Api::ChatCompletions,
            json!({"messages": [{"role": "user", "content": "a"}]}),
            false,
        );
        let two = read(
            Api::ChatCompletions,
            json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
            false,
        );
        let other = read(
            Api::ChatCompletions,
            json!({"messages": [{"role": "user", "content": "z"}]}),
            false,
        );
        assert_eq!(two.message_hashes[0], one.message_hashes[0]);
        assert_ne!(two.message_hashes[1], two.message_hashes[0]);
        assert_ne!(other.message_hashes[0], one.message_hashes[0]);
        // Junk bodies give nothing, never a panic.
        let junk = read(Api::AnthropicMessages, json!({"messages": 7}), true);
        assert!(junk.tool_results.is_empty() && junk.message_hashes.is_empty());
    }
}
