//! Request bodies → the opt-in input content (`gen_ai.input.messages`, system instructions,
//! tool definitions) and the text a tokenizer would count. Parameters are read by `api/`.

use serde_json::{Value, json};

use super::json::{arr_at, at, str_at, strings_at};
use super::provider::Api;

/// Input side of the opt-in content: (input messages, system instructions, tool definitions).
pub fn read_content(api: Api, body: &Value) -> (Option<Value>, Option<Value>, Option<Value>) {
    match api {
        Api::ChatCompletions | Api::OllamaChat | Api::CohereChatV2 => (
            Some(Value::Array(
                arr_at(body, &["messages"])
                    .iter()
                    .map(openai_message)
                    .collect(),
            )),
            None,
            openai_tools(arr_at(body, &["tools"])),
        ),
        Api::Completions | Api::OllamaGenerate | Api::LlamaCppCompletion => {
            let prompt = strings_at(body, &["prompt"]).join("\n");
            (
                Some(json!([{"role": "user", "parts": [{"type": "text", "content": prompt}]}])),
                str_at(body, &["system"]).map(|s| json!([{"type": "text", "content": s}])),
                None,
            )
        }
        Api::Embeddings => (None, None, None),
        // The conversation lives on the server; a response's request is the session's
        // configuration and the `response.create` overrides.
        Api::Realtime => (
            None,
            str_at(body, &["instructions"]).map(|s| json!([{"type": "text", "content": s}])),
            openai_tools(arr_at(body, &["tools"])),
        ),
        Api::Responses => {
            let input = match at(body, &["input"]) {
                Some(Value::String(s)) => {
                    json!([{"role": "user", "parts": [{"type": "text", "content": s}]}])
                }
                Some(Value::Array(items)) => {
                    Value::Array(items.iter().filter_map(responses_item).collect())
                }
                _ => Value::Array(Vec::new()),
            };
            (
                Some(input),
                str_at(body, &["instructions"]).map(|s| json!([{"type": "text", "content": s}])),
                openai_tools(arr_at(body, &["tools"])),
            )
        }
        Api::AnthropicMessages | Api::BedrockInvokeModel => {
            let system = match at(body, &["system"]) {
                Some(Value::String(s)) => Some(json!([{"type": "text", "content": s}])),
                Some(Value::Array(blocks)) => Some(Value::Array(
                    blocks.iter().filter_map(anthropic_part).collect(),
                )),
                _ => None,
            };
            let messages = arr_at(body, &["messages"])
                .iter()
                .map(|m| {
                    let parts = match at(m, &["content"]) {
                        Some(Value::String(s)) => vec![json!({"type": "text", "content": s})],
                        Some(Value::Array(blocks)) => {
                            blocks.iter().filter_map(anthropic_part).collect()
                        }
                        _ => Vec::new(),
                    };
                    json!({"role": str_at(m, &["role"]).unwrap_or_default(), "parts": parts})
                })
                .collect();
            let tools: Vec<Value> = arr_at(body, &["tools"])
                .iter()
                .filter_map(|t| {
                    Some(json!({
                        "type": "function",
                        "name": str_at(t, &["name"])?,
                        "description": at(t, &["description"]).cloned().unwrap_or(Value::Null),
                        "parameters": at(t, &["input_schema"]).cloned().unwrap_or(Value::Null),
                    }))
                })
                .collect();
            (
                Some(Value::Array(messages)),
                system,
                (!tools.is_empty()).then_some(Value::Array(tools)),
            )
        }
        Api::GeminiGenerateContent => {
            let messages = arr_at(body, &["contents"])
                .iter()
                .map(|c| {
                    let role = match str_at(c, &["role"]).as_deref() {
                        Some("model") => "assistant".to_string(),
                        Some(r) => r.to_string(),
                        None => "user".to_string(),
                    };
                    json!({"role": role, "parts": gemini_parts(arr_at(c, &["parts"]))})
                })
                .collect();
            let system = at(body, &["systemInstruction"])
                .map(|s| Value::Array(gemini_parts(arr_at(s, &["parts"]))));
            let tools: Vec<Value> = arr_at(body, &["tools"])
                .iter()
                .flat_map(|t| arr_at(t, &["functionDeclarations"]).iter())
                .filter_map(|f| {
                    Some(json!({
                        "type": "function",
                        "name": str_at(f, &["name"])?,
                        "description": at(f, &["description"]).cloned().unwrap_or(Value::Null),
                        "parameters": at(f, &["parameters"]).cloned().unwrap_or(Value::Null),
                    }))
                })
                .collect();
            (
                Some(Value::Array(messages)),
                system,
                (!tools.is_empty()).then_some(Value::Array(tools)),
            )
        }
        Api::BedrockConverse => {
            let messages = arr_at(body, &["messages"])
                .iter()
                .map(|m| {
                    let parts: Vec<Value> = arr_at(m, &["content"])
                        .iter()
                        .filter_map(|b| {
                            if let Some(t) = str_at(b, &["text"]) {
                                Some(json!({"type": "text", "content": t}))
                            } else if let Some(tu) = at(b, &["toolUse"]) {
                                Some(json!({"type": "tool_call", "id": at(tu, &["toolUseId"]), "name": at(tu, &["name"]), "arguments": at(tu, &["input"])}))
                            } else {
                                at(b, &["toolResult"]).map(|tr| json!({"type": "tool_call_response", "id": at(tr, &["toolUseId"]), "response": at(tr, &["content"])}))
                            }
                        })
                        .collect();
                    json!({"role": str_at(m, &["role"]).unwrap_or_default(), "parts": parts})
                })
                .collect();
            let system: Vec<Value> = arr_at(body, &["system"])
                .iter()
                .filter_map(|s| str_at(s, &["text"]).map(|t| json!({"type": "text", "content": t})))
                .collect();
            let tools: Vec<Value> = arr_at(body, &["toolConfig", "tools"])
                .iter()
                .filter_map(|t| {
                    let spec = at(t, &["toolSpec"])?;
                    Some(json!({
                        "type": "function",
                        "name": str_at(spec, &["name"])?,
                        "description": at(spec, &["description"]).cloned().unwrap_or(Value::Null),
                        "parameters": at(spec, &["inputSchema", "json"]).cloned().unwrap_or(Value::Null),
                    }))
                })
                .collect();
            (
                Some(Value::Array(messages)),
                (!system.is_empty()).then_some(Value::Array(system)),
                (!tools.is_empty()).then_some(Value::Array(tools)),
            )
        }
    }
}

fn openai_message(m: &Value) -> Value {
    let role = str_at(m, &["role"]).unwrap_or_default();
    let mut parts = Vec::new();
    match at(m, &["content"]) {
        Some(Value::String(s)) if role == "tool" => parts.push(
            json!({"type": "tool_call_response", "id": at(m, &["tool_call_id"]), "response": s}),
        ),
        Some(Value::String(s)) => parts.push(json!({"type": "text", "content": s})),
        Some(Value::Array(items)) => {
            for item in items {
                match str_at(item, &["type"]).as_deref() {
                    Some("text") => parts.push(json!({"type": "text", "content": at(item, &["text"])})),
                    Some("image_url") => parts.push(json!({"type": "uri", "modality": "image", "uri": at(item, &["image_url", "url"])})),
                    Some(other) => parts.push(json!({"type": other})),
                    None => {}
                }
            }
        }
        _ => {}
    }
    for call in arr_at(m, &["tool_calls"]) {
        parts.push(tool_call_part(
            at(call, &["id"]).cloned(),
            at(call, &["function", "name"]).cloned(),
            at(call, &["function", "arguments"]),
        ));
    }
    let mut msg = json!({"role": role, "parts": parts});
    if let (Some(name), Some(obj)) = (str_at(m, &["name"]), msg.as_object_mut()) {
        obj.insert("name".into(), Value::String(name));
    }
    msg
}

/// A `tool_call` part; string arguments are parsed when they are JSON.
pub fn tool_call_part(id: Option<Value>, name: Option<Value>, arguments: Option<&Value>) -> Value {
    let args = match arguments {
        Some(Value::String(s)) => {
            serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
        }
        Some(v) => v.clone(),
        None => Value::Null,
    };
    json!({"type": "tool_call", "id": id, "name": name, "arguments": args})
}

fn openai_tools(tools: &[Value]) -> Option<Value> {
    let defs: Vec<Value> = tools
        .iter()
        .filter_map(|t| {
            // Chat: {type, function: {...}}; Responses: {type, name, ...}.
            let f = at(t, &["function"]).unwrap_or(t);
            Some(json!({
                "type": str_at(t, &["type"]).unwrap_or_else(|| "function".into()),
                "name": str_at(f, &["name"])?,
                "description": at(f, &["description"]).cloned().unwrap_or(Value::Null),
                "parameters": at(f, &["parameters"]).cloned().unwrap_or(Value::Null),
            }))
        })
        .collect();
    (!defs.is_empty()).then_some(Value::Array(defs))
}

fn responses_item(item: &Value) -> Option<Value> {
    match str_at(item, &["type"]).as_deref() {
        Some("function_call") => Some(
            json!({"role": "assistant", "parts": [tool_call_part(at(item, &["call_id"]).cloned(), at(item, &["name"]).cloned(), at(item, &["arguments"]))]}),
        ),
        Some("function_call_output") => Some(
            json!({"role": "tool", "parts": [{"type": "tool_call_response", "id": at(item, &["call_id"]), "response": at(item, &["output"])}]}),
        ),
        Some("message") | None => {
            let role = str_at(item, &["role"])?;
            let parts: Vec<Value> = match at(item, &["content"]) {
                Some(Value::String(s)) => vec![json!({"type": "text", "content": s})],
                Some(Value::Array(c)) => c
                    .iter()
                    .filter_map(|p| match str_at(p, &["type"]).as_deref() {
                        Some("input_text" | "output_text" | "text") => Some(json!({"type": "text", "content": at(p, &["text"])})),
                        Some("input_image") => Some(json!({"type": "uri", "modality": "image", "uri": at(p, &["image_url"])})),
                        Some(other) => Some(json!({"type": other})),
                        None => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Some(json!({"role": role, "parts": parts}))
        }
        Some(other) => Some(json!({"role": "assistant", "parts": [{"type": other}]})),
    }
}

fn anthropic_part(b: &Value) -> Option<Value> {
    Some(match str_at(b, &["type"])?.as_str() {
        "text" => json!({"type": "text", "content": at(b, &["text"])}),
        "thinking" => json!({"type": "reasoning", "content": at(b, &["thinking"])}),
        "tool_use" => tool_call_part(
            at(b, &["id"]).cloned(),
            at(b, &["name"]).cloned(),
            at(b, &["input"]),
        ),
        "tool_result" => {
            json!({"type": "tool_call_response", "id": at(b, &["tool_use_id"]), "response": at(b, &["content"])})
        }
        "image" => match str_at(b, &["source", "type"]).as_deref() {
            Some("base64") => {
                json!({"type": "blob", "modality": "image", "mime_type": at(b, &["source", "media_type"]), "content": at(b, &["source", "data"])})
            }
            _ => json!({"type": "uri", "modality": "image", "uri": at(b, &["source", "url"])}),
        },
        other => json!({"type": other}),
    })
}

pub fn gemini_parts(parts: &[Value]) -> Vec<Value> {
    parts
        .iter()
        .filter_map(|p| {
            if let Some(t) = at(p, &["text"]).and_then(Value::as_str) {
                let kind = if at(p, &["thought"]).and_then(Value::as_bool) == Some(true) {
                    "reasoning"
                } else {
                    "text"
                };
                Some(json!({"type": kind, "content": t}))
            } else if let Some(fc) = at(p, &["functionCall"]) {
                Some(tool_call_part(at(fc, &["id"]).cloned(), at(fc, &["name"]).cloned(), at(fc, &["args"])))
            } else if let Some(fr) = at(p, &["functionResponse"]) {
                Some(json!({"type": "tool_call_response", "id": at(fr, &["id"]), "response": at(fr, &["response"])}))
            } else if let Some(d) = at(p, &["inlineData"]) {
                Some(json!({"type": "blob", "modality": str_at(d, &["mimeType"]).and_then(|m| m.split('/').next().map(str::to_string)), "mime_type": at(d, &["mimeType"]), "content": at(d, &["data"])}))
            } else {
                at(p, &["fileData"]).map(|d| json!({"type": "uri", "modality": str_at(d, &["mimeType"]).and_then(|m| m.split('/').next().map(str::to_string)), "mime_type": at(d, &["mimeType"]), "uri": at(d, &["fileUri"])}))
            }
        })
        .collect()
}

/// Text of the request a tokenizer would count (usage estimation), bounded by `cap` bytes.
pub fn input_text(body: &Value, cap: usize) -> String {
    fn walk(v: &Value, key: Option<&str>, out: &mut String, cap: usize) {
        if out.len() >= cap {
            return;
        }
        match v {
            Value::String(s)
                if matches!(
                    key,
                    Some("content" | "text" | "prompt" | "input" | "instructions" | "system")
                ) =>
            {
                let room = cap - out.len();
                let mut cut = room.min(s.len());
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.push_str(s.get(..cut).unwrap_or_default());
                out.push('\n');
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, key, out, cap)),
            Value::Object(map) => map
                .iter()
                .for_each(|(k, v)| walk(v, Some(k.as_str()), out, cap)),
            _ => {}
        }
    }
    let mut out = String::new();
    for key in [
        "messages",
        "contents",
        "input",
        "prompt",
        "instructions",
        "system",
        "systemInstruction",
    ] {
        if let Some(v) = at(body, &[key]) {
            walk(v, Some(key), &mut out, cap);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_content() {
        let body = json!({"system": "be brief", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "tools": [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}]});
        let (input, system, tools) = read_content(Api::AnthropicMessages, &body);
        assert_eq!(
            input.unwrap(),
            json!([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}])
        );
        assert_eq!(
            system.unwrap(),
            json!([{"type": "text", "content": "be brief"}])
        );
        assert_eq!(tools.unwrap()[0]["name"], "get_weather");
    }
}
