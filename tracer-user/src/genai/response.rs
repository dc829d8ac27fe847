//! Response bodies and stream events → response values, usage, content chunks.
//!
//! One accumulator per call; each API's events are applied in arrival order. Stream rules
//! (which events carry content, which usage wins) follow `tests/data/cassettes/README.md`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::api::wire::Text;
use super::provider::Api;
use super::record::{MAX_TOOL_REFS, ToolCallRef, Usage};
use super::request::tool_call_part;

/// Most choices (candidates) tracked per call.
const MAX_CHOICES: usize = 128;

/// A tool call the model asked for, assembled from deltas.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolCallAcc {
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

/// Generated output of one choice, kept only when content capture or estimation needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChoiceAcc {
    pub text: String,
    pub reasoning: String,
    pub tool_calls: Vec<ToolCallAcc>,
}

/// An error reported inside the body of a (200) response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyError {
    pub error_type: Option<String>,
    pub message: Option<String>,
}

/// Everything learned from the response so far.
#[derive(Debug, Default)]
pub struct ResponseAcc {
    pub id: Option<String>,
    pub model: Option<String>,
    /// Raw finish reasons by choice index (last non-null value wins).
    pub finish: BTreeMap<u64, String>,
    pub service_tier: Option<String>,
    pub system_fingerprint: Option<String>,
    pub embeddings_dimension: Option<u64>,
    pub tool_names: Vec<String>,
    pub usage: Usage,
    pub stream_chunks: u64,
    pub first_chunk_ns: Option<u64>,
    pub chunk_times_ns: Vec<u64>,
    pub error: Option<BodyError>,
    /// Output per choice index (only when `keep_output`).
    pub choices: BTreeMap<u64, ChoiceAcc>,
    pub keep_output: bool,
    output_cap: usize,
    output_len: usize,
    max_chunk_times: usize,
    /// Bedrock InvokeModel carries a provider-native body (Anthropic for Claude).
    pub(crate) native: Option<Api>,
    /// Anthropic `input_tokens` before the cache counts are added.
    pub(crate) raw_anthropic_input: Option<u64>,
    /// The server an OpenAI-compatible response's own fields name (`fp_ollama`, llama.cpp's
    /// `timings`, vLLM's `prompt_logprobs`).
    pub provider_hint: Option<&'static str>,
    /// Stream events that were not valid JSON.
    pub bad_events: u64,
    /// The stream's own end marker arrived (`[DONE]`, `response.completed`/`incomplete`/
    /// `failed`, `message_stop`): the response is complete whatever happens to the transport
    /// afterwards (an h2 client resets a stream it has read to the end).
    pub stream_finished: bool,
}

impl ResponseAcc {
    pub fn new(keep_output: bool, output_cap: usize, max_chunk_times: usize) -> Self {
        ResponseAcc {
            keep_output,
            output_cap,
            max_chunk_times,
            ..Default::default()
        }
    }

    pub(crate) fn content_chunk(&mut self, ts_ns: u64) {
        self.stream_chunks += 1;
        self.first_chunk_ns.get_or_insert(ts_ns);
        if self.chunk_times_ns.len() < self.max_chunk_times {
            self.chunk_times_ns.push(ts_ns);
        }
    }

    pub(crate) fn choice(&mut self, index: u64) -> &mut ChoiceAcc {
        // Hostile indices cannot grow the map without bound: extra ones share the last slot.
        let index = if self.choices.len() >= MAX_CHOICES && !self.choices.contains_key(&index) {
            self.choices.keys().next_back().copied().unwrap_or(0)
        } else {
            index
        };
        self.choices.entry(index).or_default()
    }

    pub(crate) fn set_finish(&mut self, index: u64, reason: String) {
        if self.finish.len() < MAX_CHOICES || self.finish.contains_key(&index) {
            self.finish.insert(index, reason);
        }
    }

    pub(crate) fn push_text(&mut self, index: u64, text: &str, reasoning: bool) {
        if !self.keep_output || text.is_empty() || self.output_len >= self.output_cap {
            return;
        }
        let room = self.output_cap - self.output_len;
        let mut cut = room.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let piece = text.get(..cut).unwrap_or_default();
        self.output_len += piece.len();
        let c = self.choice(index);
        if reasoning {
            c.reasoning.push_str(piece);
        } else {
            c.text.push_str(piece);
        }
    }

    pub(crate) fn tool_name(&mut self, name: Option<String>) {
        if let Some(n) = name
            && self.tool_names.len() < 256
        {
            self.tool_names.push(n);
        }
    }

    /// Starts (or continues, when `slot` names an existing one) a tool call of a choice.
    pub(crate) fn tool_call(
        &mut self,
        index: u64,
        slot: Option<usize>,
        id: Option<String>,
        name: Option<String>,
        args: &str,
    ) {
        // Ids and names are always kept (tool executions are matched by them); arguments
        // only when output is kept.
        let room = self.output_cap.saturating_sub(self.output_len);
        let args = if self.keep_output && args.len() <= room {
            args
        } else {
            ""
        };
        self.output_len += args.len();
        let calls = &mut self.choice(index).tool_calls;
        if calls.len() >= MAX_TOOL_REFS && slot.is_none_or(|s| s >= calls.len()) {
            return;
        }
        let pos = match slot {
            Some(s) if s < MAX_TOOL_REFS => {
                while calls.len() <= s {
                    calls.push(ToolCallAcc::default());
                }
                s
            }
            _ => {
                calls.push(ToolCallAcc::default());
                calls.len() - 1
            }
        };
        if let Some(call) = calls.get_mut(pos) {
            if id.is_some() {
                call.id = id;
            }
            if name.is_some() {
                call.name = name;
            }
            call.arguments.push_str(args);
        }
    }

    /// The id, unless one is known already.
    pub(crate) fn first_id(&mut self, id: &Text<'_>) {
        if self.id.is_none() {
            self.id = id.owned();
        }
    }

    /// The model, unless one is known already.
    pub(crate) fn first_model(&mut self, model: &Text<'_>) {
        if self.model.is_none() {
            self.model = model.owned();
        }
    }

    /// A streamed piece of the last tool call's arguments (kept only with the output).
    pub(crate) fn append_tool_arguments(&mut self, piece: &str) {
        if self.keep_output
            && self.output_len + piece.len() <= self.output_cap
            && let Some(call) = self
                .choices
                .get_mut(&0)
                .and_then(|c| c.tool_calls.last_mut())
        {
            self.output_len += piece.len();
            call.arguments.push_str(piece);
        }
    }

    /// `gen_ai.output.messages`, one per choice, in the semconv shape.
    pub fn output_messages(&self) -> Value {
        let mut indices: Vec<u64> = self
            .choices
            .keys()
            .chain(self.finish.keys())
            .copied()
            .collect();
        indices.sort_unstable();
        indices.dedup();
        let messages: Vec<Value> = indices
            .iter()
            .map(|i| {
                let mut parts = Vec::new();
                if let Some(c) = self.choices.get(i) {
                    if !c.reasoning.is_empty() {
                        parts.push(json!({"type": "reasoning", "content": c.reasoning}));
                    }
                    if !c.text.is_empty() {
                        parts.push(json!({"type": "text", "content": c.text}));
                    }
                    for call in &c.tool_calls {
                        let args = (!call.arguments.is_empty())
                            .then(|| Value::String(call.arguments.clone()));
                        parts.push(tool_call_part(
                            call.id.clone().map(Value::String),
                            call.name.clone().map(Value::String),
                            args.as_ref(),
                        ));
                    }
                }
                let finish = self
                    .finish
                    .get(i)
                    .map(|r| normalize_finish_reason(r))
                    .unwrap_or("error");
                json!({"role": "assistant", "parts": parts, "finish_reason": finish})
            })
            .collect();
        Value::Array(messages)
    }

    /// The tool calls the model asked for, each id once (a streamed Responses call reports
    /// its calls twice: item done and completed); arguments only when `with_arguments`.
    pub fn tool_requests(&self, with_arguments: bool) -> Vec<ToolCallRef> {
        let mut out: Vec<ToolCallRef> = Vec::new();
        for call in self.choices.values().flat_map(|c| &c.tool_calls) {
            if call.id.is_none() && call.name.is_none() {
                continue;
            }
            if call.id.is_some() && out.iter().any(|o| o.id == call.id) {
                continue;
            }
            if out.len() >= MAX_TOOL_REFS {
                break;
            }
            out.push(ToolCallRef {
                id: call.id.clone(),
                name: call.name.clone(),
                content: (with_arguments && !call.arguments.is_empty())
                    .then(|| call.arguments.clone()),
            });
        }
        out
    }

    /// Concatenated generated text (usage estimation).
    pub fn output_text(&self) -> String {
        let mut s = String::new();
        for c in self.choices.values() {
            s.push_str(&c.reasoning);
            s.push_str(&c.text);
            for t in &c.tool_calls {
                s.push_str(t.name.as_deref().unwrap_or(""));
                s.push_str(&t.arguments);
            }
        }
        s
    }
}

/// `gen_ai.output.messages[].finish_reason` normalisation (semconv §4).
pub fn normalize_finish_reason(raw: &str) -> &str {
    match raw {
        "stop" | "end_turn" | "stop_sequence" | "STOP" | "COMPLETE" | "completed" => "stop",
        "length"
        | "max_tokens"
        | "MAX_TOKENS"
        | "model_context_window_exceeded"
        | "max_output_tokens" => "length",
        "tool_calls" | "function_call" | "tool_use" | "tool_call" | "TOOL_CALL" => "tool_call",
        "content_filter"
        | "refusal"
        | "guardrail_intervened"
        | "content_filtered"
        | "SAFETY"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "RECITATION" => "content_filter",
        "error"
        | "insufficient_system_resource"
        | "MALFORMED_FUNCTION_CALL"
        | "OTHER"
        | "ERROR" => "error",
        other => other,
    }
}

/// The normalised finish reasons, the only values [`finish_reason_class`] returns besides
/// [`OTHER_FINISH_REASON`].
pub const FINISH_REASON_CLASSES: [&str; 5] =
    ["stop", "length", "content_filter", "tool_call", "error"];
/// The class of a finish reason no provider table names.
pub const OTHER_FINISH_REASON: &str = "_OTHER";

/// A finish reason as one of a fixed set of values, whatever the API that reported it: chat
/// completions' `tool_calls`, the Responses API's derived `tool_call`, Anthropic's `tool_use`
/// and Gemini's `TOOL_CALL` are one class. Where calls are compared or counted (the console,
/// metric attributes), this is the value; the span keeps the provider's raw value as the
/// conventions ask.
pub fn finish_reason_class(raw: &str) -> &'static str {
    let normalized = normalize_finish_reason(raw);
    FINISH_REASON_CLASSES
        .iter()
        .find(|class| **class == normalized)
        .copied()
        .unwrap_or(OTHER_FINISH_REASON)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genai::api::{read_error_body, shape};

    fn ev(acc: &mut ResponseAcc, api: Api, v: Value, ts: u64) {
        let bytes = serde_json::to_vec(&v).unwrap();
        shape(api).read_event(None, &bytes, ts, acc).unwrap();
    }

    fn body(acc: &mut ResponseAcc, api: Api, v: Value) {
        let bytes = serde_json::to_vec(&v).unwrap();
        shape(api).read_body(&bytes, acc).unwrap();
    }

    #[test]
    fn openai_stream_rules() {
        let mut acc = ResponseAcc::new(true, 1 << 20, 1000);
        ev(
            &mut acc,
            Api::ChatCompletions,
            json!({"id": "", "model": "", "choices": [], "prompt_filter_results": []}),
            1,
        );
        ev(
            &mut acc,
            Api::ChatCompletions,
            json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
            2,
        );
        ev(
            &mut acc,
            Api::ChatCompletions,
            json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}),
            3,
        );
        ev(
            &mut acc,
            Api::ChatCompletions,
            json!({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            4,
        );
        ev(
            &mut acc,
            Api::ChatCompletions,
            json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}),
            5,
        );
        assert_eq!(acc.id.as_deref(), Some("c1"));
        assert_eq!(acc.model.as_deref(), Some("m"));
        assert_eq!(acc.stream_chunks, 1);
        assert_eq!(acc.first_chunk_ns, Some(3));
        assert_eq!(acc.finish.get(&0).map(String::as_str), Some("stop"));
        assert_eq!(
            (acc.usage.input_tokens, acc.usage.output_tokens),
            (Some(5), Some(1))
        );
        assert_eq!(acc.output_messages()[0]["parts"][0]["content"], "Hi");
    }

    #[test]
    fn anthropic_usage_arithmetic() {
        let mut acc = ResponseAcc::new(false, 0, 0);
        ev(
            &mut acc,
            Api::AnthropicMessages,
            json!({"type": "message_start", "message": {"id": "m1", "model": "claude", "usage": {"input_tokens": 4, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 10, "output_tokens": 1}}}),
            1,
        );
        ev(
            &mut acc,
            Api::AnthropicMessages,
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}),
            2,
        );
        ev(
            &mut acc,
            Api::AnthropicMessages,
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "abc"}}),
            3,
        );
        ev(
            &mut acc,
            Api::AnthropicMessages,
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 30}}),
            4,
        );
        assert_eq!(acc.usage.input_tokens, Some(114));
        assert_eq!(acc.usage.output_tokens, Some(30), "cumulative, not added");
        assert_eq!(acc.stream_chunks, 1);
    }

    /// Bedrock's `inputTokens` excludes prompt-cache reads and writes; the semconv count
    /// includes them, and the cost model bills each part once.
    #[test]
    fn bedrock_converse_input_includes_cache() {
        let usage = json!({"inputTokens": 12, "outputTokens": 40, "totalTokens": 1552,
            "cacheReadInputTokens": 1000, "cacheWriteInputTokens": 500});
        let mut whole = ResponseAcc::new(false, 0, 0);
        body(
            &mut whole,
            Api::BedrockConverse,
            json!({"stopReason": "end_turn", "usage": usage}),
        );
        let mut stream = ResponseAcc::new(false, 0, 0);
        shape(Api::BedrockConverse)
            .read_event(
                Some("metadata"),
                &serde_json::to_vec(&json!({"usage": usage})).unwrap(),
                5,
                &mut stream,
            )
            .unwrap();
        for acc in [whole, stream] {
            assert_eq!(acc.usage.input_tokens, Some(1512));
            assert_eq!(acc.usage.cache_read_input_tokens, Some(1000));
            assert_eq!(acc.usage.cache_creation_input_tokens, Some(500));
            assert_eq!(acc.usage.output_tokens, Some(40));
        }
        let mut uncached = ResponseAcc::new(false, 0, 0);
        body(
            &mut uncached,
            Api::BedrockConverse,
            json!({"usage": {"inputTokens": 12, "outputTokens": 3, "totalTokens": 15}}),
        );
        assert_eq!(uncached.usage.input_tokens, Some(12));
        assert_eq!(uncached.usage.cache_read_input_tokens, None);
    }

    /// A streamed InvokeModel of Claude: the Anthropic events carry the cache-inclusive count,
    /// and the last frame's `invocationMetrics` (cache excluded) must not overwrite it.
    #[test]
    fn bedrock_invoke_metrics_do_not_overwrite_anthropic_usage() {
        let mut acc = ResponseAcc::new(false, 0, 0);
        ev(
            &mut acc,
            Api::BedrockInvokeModel,
            json!({"type": "message_start", "message": {"id": "m", "model": "claude",
            "usage": {"input_tokens": 4, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 10, "output_tokens": 1}}}),
            1,
        );
        ev(
            &mut acc,
            Api::BedrockInvokeModel,
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 30}}),
            2,
        );
        ev(
            &mut acc,
            Api::BedrockInvokeModel,
            json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": 4, "outputTokenCount": 30, "invocationLatency": 900, "firstByteLatency": 300,
            "cacheReadInputTokenCount": 100, "cacheWriteInputTokenCount": 10}}),
            3,
        );
        assert_eq!(acc.usage.input_tokens, Some(114));
        assert_eq!(acc.usage.output_tokens, Some(30));
        assert_eq!(acc.usage.cache_read_input_tokens, Some(100));
    }

    /// A model whose native body has no usage (Llama, Titan): Bedrock's metrics are the
    /// only counts, made cache-inclusive the same way.
    #[test]
    fn bedrock_invoke_metrics_fill_missing_usage() {
        let mut acc = ResponseAcc::new(false, 0, 0);
        ev(
            &mut acc,
            Api::BedrockInvokeModel,
            json!({"generation": "Hi", "stop_reason": "stop", "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": 7, "outputTokenCount": 2, "cacheReadInputTokenCount": 20}}),
            1,
        );
        assert_eq!(acc.usage.input_tokens, Some(27));
        assert_eq!(acc.usage.cache_read_input_tokens, Some(20));
        assert_eq!(acc.usage.output_tokens, Some(2));
    }

    /// The same outcome reported by different APIs is one class; an unknown value is bounded.
    #[test]
    fn finish_reason_classes_agree_across_apis() {
        let mut responses = ResponseAcc::new(false, 0, 0);
        body(
            &mut responses,
            Api::Responses,
            json!({"id": "r", "status": "completed",
            "output": [{"type": "function_call", "name": "f", "call_id": "c", "arguments": "{}"}]}),
        );
        let derived = responses
            .finish
            .get(&0)
            .cloned()
            .expect("derived finish reason");
        for raw in ["tool_calls", "tool_use", "TOOL_CALL", derived.as_str()] {
            assert_eq!(finish_reason_class(raw), "tool_call", "{raw}");
        }
        for raw in ["length", "max_tokens", "MAX_TOKENS", "max_output_tokens"] {
            assert_eq!(finish_reason_class(raw), "length", "{raw}");
        }
        assert_eq!(finish_reason_class("end_turn"), "stop");
        assert_eq!(
            finish_reason_class("a-new-reason-0001"),
            OTHER_FINISH_REASON
        );
    }

    #[test]
    fn gemini_output_adds_thoughts() {
        let mut acc = ResponseAcc::new(false, 0, 0);
        body(
            &mut acc,
            Api::GeminiGenerateContent,
            json!({"usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 10, "thoughtsTokenCount": 7}}),
        );
        assert_eq!(acc.usage.output_tokens, Some(17));
        assert_eq!(acc.usage.reasoning_output_tokens, Some(7));
    }

    #[test]
    fn error_type_order() {
        let error_type = |v: Value| {
            read_error_body(&serde_json::to_vec(&v).unwrap())
                .unwrap()
                .error_type
        };
        assert_eq!(
            error_type(json!({"error": {"type": "invalid_request_error", "code": "x"}})).as_deref(),
            Some("invalid_request_error")
        );
        assert_eq!(
            error_type(json!({"error": {"code": 400, "status": "INVALID_ARGUMENT"}})).as_deref(),
            Some("400")
        );
        assert_eq!(
            error_type(json!({"error": {"status": "INVALID_ARGUMENT"}})).as_deref(),
            Some("INVALID_ARGUMENT")
        );
        assert_eq!(error_type(json!({"error": "plain"})), None);
    }
}
