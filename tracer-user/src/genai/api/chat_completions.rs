//! OpenAI Chat Completions (`/v1/chat/completions`) and the many servers that speak it.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::evidence::{ToolResults, each, prefix_hashes};
use super::sampling::{StopKey, sampling_request};
use super::wire::{Count, Field, List, Obj, Present, Raw, Text, parse};
use super::{ApiShape, ErrorDetail, ReadError, body_error};
use crate::genai::record::RequestParams;
use crate::genai::response::ResponseAcc;

pub struct ChatCompletions;

sampling_request!(ChatRequest {
    #[serde(borrow)]
    messages: List<&'a RawValue>,
});

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChatMessage<'a> {
    #[serde(borrow)]
    role: Text<'a>,
    #[serde(borrow)]
    tool_call_id: Text<'a>,
    #[serde(borrow)]
    name: Text<'a>,
    /// Ollama's name for a tool result's tool.
    #[serde(borrow)]
    tool_name: Text<'a>,
    #[serde(borrow)]
    content: Raw<'a>,
}

/// Tool results of an OpenAI-style history: `tool` messages (chat, Ollama, Cohere).
pub(super) fn tool_messages(
    messages: &[&RawValue],
    with_content: bool,
    params: &mut RequestParams,
) {
    params.message_hashes = prefix_hashes(messages);
    let mut results = ToolResults::new(with_content);
    for m in each::<ChatMessage>(messages) {
        if m.role.is("tool") {
            results.push(
                m.tool_call_id.owned(),
                m.name.owned().or_else(|| m.tool_name.owned()),
                m.content,
            );
        }
    }
    results.store(params);
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FunctionCall<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    arguments: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolCall<'a> {
    index: Count,
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    function: Obj<FunctionCall<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Message<'a> {
    #[serde(borrow)]
    content: Text<'a>,
    #[serde(borrow)]
    refusal: Text<'a>,
    #[serde(borrow)]
    reasoning_content: Text<'a>,
    #[serde(borrow)]
    reasoning: Text<'a>,
    #[serde(borrow)]
    tool_calls: List<Obj<ToolCall<'a>>>,
    /// The pre-tools form; rare, so boxed to keep the per-chunk struct small.
    #[serde(borrow)]
    function_call: Obj<Box<FunctionCall<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Choice<'a> {
    index: Count,
    #[serde(borrow)]
    finish_reason: Text<'a>,
    /// Stream chunks carry `delta`, bodies `message` (never both); legacy completions `text`.
    #[serde(borrow, alias = "message")]
    delta: Obj<Message<'a>>,
    #[serde(borrow)]
    text: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PromptDetails {
    cached_tokens: Count,
    cache_write_tokens: Count,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CompletionDetails {
    reasoning_tokens: Count,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Usage {
    prompt_tokens: Count,
    completion_tokens: Count,
    prompt_tokens_details: Obj<PromptDetails>,
    prompt_cache_hit_tokens: Count,
    completion_tokens_details: Obj<CompletionDetails>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Groq {
    usage: Obj<Usage>,
}

/// A chat completion (or legacy completion) object, or one stream chunk of it.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Chunk<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow)]
    system_fingerprint: Text<'a>,
    #[serde(borrow)]
    service_tier: Text<'a>,
    // Fields present once per response are boxed: a small struct is cheap to move for every
    // chunk.
    #[serde(borrow)]
    error: Field<Box<ErrorDetail<'a>>>,
    #[serde(borrow)]
    message: Text<'a>,
    #[serde(borrow)]
    choices: List<Obj<Choice<'a>>>,
    usage: Obj<Box<Usage>>,
    x_groq: Obj<Box<Groq>>,
    // What names an OpenAI-compatible server on an unknown host.
    timings: Present,
    prompt_logprobs: Present,
    kv_transfer_params: Present,
}

impl Usage {
    /// Fills the counts this usage carries, keeping earlier ones it lacks.
    pub(super) fn apply(&self, acc: &mut ResponseAcc) {
        let u = &mut acc.usage;
        u.input_tokens = self.prompt_tokens.0.or(u.input_tokens);
        u.output_tokens = self.completion_tokens.0.or(u.output_tokens);
        let details = self.prompt_tokens_details.get();
        u.cache_read_input_tokens = details
            .and_then(|d| d.cached_tokens.0)
            .or(self.prompt_cache_hit_tokens.0)
            .or(u.cache_read_input_tokens);
        u.cache_creation_input_tokens = details
            .and_then(|d| d.cache_write_tokens.0)
            .or(u.cache_creation_input_tokens);
        u.reasoning_output_tokens = self
            .completion_tokens_details
            .get()
            .and_then(|d| d.reasoning_tokens.0)
            .or(u.reasoning_output_tokens);
    }
}

/// The server an OpenAI-compatible response's own fields name.
fn provider_hint(chunk: &Chunk<'_>) -> Option<&'static str> {
    if chunk.system_fingerprint.is("fp_ollama") {
        Some("ollama")
    } else if chunk.timings.0 {
        Some("llama_cpp")
    } else if chunk.prompt_logprobs.0 || chunk.kv_transfer_params.0 {
        Some("vllm")
    } else {
        None
    }
}

/// A whole response body, or one stream chunk when `stream_ts` is set (shared with the legacy
/// completions, whose choices carry `text`).
pub(super) fn read_chunk(
    bytes: &[u8],
    stream_ts: Option<u64>,
    acc: &mut ResponseAcc,
) -> Result<(), ReadError> {
    let Obj(Some(v)) = parse::<Obj<Chunk>>(bytes)? else {
        return Ok(());
    };
    if acc.provider_hint.is_none() {
        acc.provider_hint = provider_hint(&v);
    }
    acc.first_id(&v.id);
    acc.first_model(&v.model);
    if acc.system_fingerprint.is_none() {
        acc.system_fingerprint = v.system_fingerprint.owned();
    }
    if let Some(t) = v.service_tier.owned() {
        acc.service_tier = Some(t);
    }
    if v.error.present {
        acc.error = Some(body_error(v.error.obj.as_deref(), &v.message));
    }
    let mut has_content = false;
    for c in v.choices.iter().filter_map(Obj::get) {
        let index = c.index.0.unwrap_or(0);
        if let Some(r) = c.finish_reason.owned() {
            acc.set_finish(index, r);
        }
        if let Some(text) = c.text.get() {
            has_content = true;
            acc.push_text(index, text, false);
        }
        let Some(m) = c.delta.get() else {
            continue;
        };
        for (text, reasoning) in [
            (&m.content, false),
            (&m.refusal, false),
            (&m.reasoning_content, true),
            (&m.reasoning, true),
        ] {
            if let Some(text) = text.get() {
                has_content = true;
                acc.push_text(index, text, reasoning);
            }
        }
        if !m.tool_calls.is_empty() {
            has_content = true;
        }
        for (i, call) in m.tool_calls.iter().enumerate() {
            let Some(call) = call.get() else { continue };
            let f = call.function.get();
            let name = f.and_then(|f| f.name.owned());
            acc.tool_name(name.clone());
            let slot = call.index.0.map(|x| x as usize).or(Some(i));
            let args = f.map_or("", |f| f.arguments.raw());
            acc.tool_call(index, slot, call.id.owned(), name, args);
        }
        if let Some(fc) = m.function_call.get() {
            has_content = true;
            let name = fc.name.owned();
            acc.tool_name(name.clone());
            acc.tool_call(index, Some(0), None, name, fc.arguments.raw());
        }
    }
    if let Some(ts) = stream_ts
        && has_content
    {
        acc.content_chunk(ts);
    }
    if let Some(u) = v
        .usage
        .get()
        .map(|u| &**u)
        .or_else(|| v.x_groq.get().and_then(|g| g.usage.get()))
    {
        u.apply(acc);
    }
    Ok(())
}

impl ApiShape for ChatCompletions {
    fn read_request(
        &self,
        body: &[u8],
        with_content: bool,
        params: &mut RequestParams,
    ) -> Result<(), ReadError> {
        let r: ChatRequest = parse(body)?;
        r.sampling().apply(StopKey::Stop, params);
        tool_messages(&r.messages, with_content, params);
        Ok(())
    }

    fn read_body(&self, body: &[u8], acc: &mut ResponseAcc) -> Result<(), ReadError> {
        read_chunk(body, None, acc)
    }

    fn read_event(
        &self,
        _event_type: Option<&str>,
        payload: &[u8],
        ts_ns: u64,
        acc: &mut ResponseAcc,
    ) -> Result<(), ReadError> {
        read_chunk(payload, Some(ts_ns), acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_rules() {
        let mut acc = ResponseAcc::new(true, 1 << 20, 64);
        let ev = |acc: &mut ResponseAcc, j: &str, ts| {
            ChatCompletions
                .read_event(None, j.as_bytes(), ts, acc)
                .unwrap()
        };
        ev(
            &mut acc,
            r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            1,
        );
        ev(
            &mut acc,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            2,
        );
        ev(
            &mut acc,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":"{\"a\""}}]}}]}"#,
            3,
        );
        ev(
            &mut acc,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},"finish_reason":"tool_calls"}]}"#,
            4,
        );
        ev(
            &mut acc,
            r#"{"id":"c1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":2}}}"#,
            5,
        );
        assert_eq!(acc.first_chunk_ns, Some(2), "an empty delta is not content");
        assert_eq!(acc.stream_chunks, 3);
        assert_eq!(acc.choices[&0].text, "Hel");
        assert_eq!(acc.choices[&0].tool_calls[0].arguments, r#"{"a":1}"#);
        assert_eq!(acc.finish[&0], "tool_calls");
        assert_eq!(
            (acc.usage.input_tokens, acc.usage.output_tokens),
            (Some(5), Some(1))
        );
        assert_eq!(acc.usage.cache_read_input_tokens, Some(2));
        // Garbage types never fail the chunk, garbage JSON does.
        ev(&mut acc, r#"{"choices":"x","usage":7,"id":{"a":[1]}}"#, 6);
        assert!(
            ChatCompletions
                .read_event(None, b"{nope", 7, &mut acc)
                .is_err()
        );
    }

    #[test]
    fn request_params_and_tool_results() {
        let body =
            br#"{"model": "gpt-4o", "temperature": 0.2, "top_p": 0.9, "max_completion_tokens": 50,
            "stop": "END", "seed": 7, "n": 2, "frequency_penalty": 0.5, "presence_penalty": -0.5,
            "stream": true, "service_tier": "flex", "response_format": {"type": "json_object"},
            "messages": [{"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function"}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "22C"}]}"#;
        let mut p = RequestParams::default();
        ChatCompletions.read_request(body, true, &mut p).unwrap();
        assert_eq!(p.model.as_deref(), Some("gpt-4o"));
        assert_eq!(
            (p.temperature, p.top_p, p.max_tokens),
            (Some(0.2), Some(0.9), Some(50))
        );
        assert_eq!(p.stop_sequences, vec!["END"]);
        assert_eq!((p.seed, p.choice_count), (Some(7), Some(2)));
        assert_eq!(
            (p.frequency_penalty, p.presence_penalty),
            (Some(0.5), Some(-0.5))
        );
        assert!(p.stream);
        assert_eq!(p.service_tier.as_deref(), Some("flex"));
        assert_eq!(p.output_type.as_deref(), Some("json"));
        assert_eq!(p.tool_results.len(), 1);
        assert_eq!(p.tool_results[0].id.as_deref(), Some("call_1"));
        assert_eq!(p.tool_results[0].content.as_deref(), Some("22C"));
        assert_eq!(p.message_hashes.len(), 3);
        let mut p = RequestParams::default();
        ChatCompletions
            .read_request(br#"{"n": 1}"#, false, &mut p)
            .unwrap();
        assert_eq!(p.choice_count, None, "n = 1 is not reported");
    }

    #[test]
    fn prefix_hashes_extend_and_differ() {
        let read = |j: &str| {
            let mut p = RequestParams::default();
            ChatCompletions
                .read_request(j.as_bytes(), false, &mut p)
                .unwrap();
            p.message_hashes
        };
        let one = read(r#"{"messages": [{"role": "user", "content": "a"}]}"#);
        let two = read(
            r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#,
        );
        let other = read(r#"{"messages": [{"role": "user", "content": "z"}]}"#);
        assert_eq!(two[0], one[0]);
        assert_ne!(two[1], two[0]);
        assert_ne!(other[0], one[0]);
        assert!(read(r#"{"messages": 7}"#).is_empty());
    }

    #[test]
    fn provider_from_the_body() {
        let hint = |j: &str| {
            let mut acc = ResponseAcc::new(false, 0, 0);
            ChatCompletions.read_body(j.as_bytes(), &mut acc).unwrap();
            acc.provider_hint
        };
        assert_eq!(
            hint(r#"{"system_fingerprint":"fp_ollama"}"#),
            Some("ollama")
        );
        assert_eq!(hint(r#"{"timings":{"predicted_n":3}}"#), Some("llama_cpp"));
        assert_eq!(hint(r#"{"id":"x","prompt_logprobs":null}"#), Some("vllm"));
        assert_eq!(hint(r#"{"id":"x","kv_transfer_params":{}}"#), Some("vllm"));
        assert_eq!(hint(r#"{"system_fingerprint":"fp_1"}"#), None);
    }
}
