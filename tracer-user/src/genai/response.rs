//! Response bodies and stream events → response values, usage, content chunks.
//!
//! One accumulator per call; each API's events are applied in arrival order. Stream rules
//! (which events carry content, which usage wins) follow `tests/data/cassettes/README.md`.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Value, json};

use super::json::{arr_at, at, scalar_string, str_at, u64_at};
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
    native: Option<Api>,
    /// Anthropic stream: content block index → kind (`tool_use`, ...).
    block_kinds: BTreeMap<u64, String>,
    /// Anthropic `input_tokens` before the cache counts are added.
    raw_anthropic_input: Option<u64>,
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

    fn content_chunk(&mut self, ts_ns: u64) {
        self.stream_chunks += 1;
        self.first_chunk_ns.get_or_insert(ts_ns);
        if self.chunk_times_ns.len() < self.max_chunk_times {
            self.chunk_times_ns.push(ts_ns);
        }
    }

    fn set_first(slot: &mut Option<String>, v: Option<String>) {
        if slot.is_none() {
            *slot = v;
        }
    }

    fn choice(&mut self, index: u64) -> &mut ChoiceAcc {
        // Hostile indices cannot grow the map without bound: extra ones share the last slot.
        let index = if self.choices.len() >= MAX_CHOICES && !self.choices.contains_key(&index) {
            self.choices.keys().next_back().copied().unwrap_or(0)
        } else {
            index
        };
        self.choices.entry(index).or_default()
    }

    fn set_finish(&mut self, index: u64, reason: String) {
        if self.finish.len() < MAX_CHOICES || self.finish.contains_key(&index) {
            self.finish.insert(index, reason);
        }
    }

    fn push_text(&mut self, index: u64, text: &str, reasoning: bool) {
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

    fn tool_name(&mut self, name: Option<String>) {
        if let Some(n) = name
            && self.tool_names.len() < 256
        {
            self.tool_names.push(n);
        }
    }

    /// Starts (or continues, when `slot` names an existing one) a tool call of a choice.
    fn tool_call(
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

    fn set_error_from(&mut self, v: &Value) {
        self.error = Some(BodyError {
            error_type: body_error_type(v),
            message: str_at(v, &["error", "message"]).or_else(|| str_at(v, &["message"])),
        });
    }

    // ---- OpenAI-compatible (chat, legacy completions, embeddings) ----

    /// A whole response body, or one stream chunk when `stream_ts` is set.
    pub fn openai(&mut self, v: &Value, stream_ts: Option<u64>) {
        Self::set_first(&mut self.id, str_at(v, &["id"]));
        Self::set_first(&mut self.model, str_at(v, &["model"]));
        Self::set_first(
            &mut self.system_fingerprint,
            str_at(v, &["system_fingerprint"]),
        );
        if let Some(t) = str_at(v, &["service_tier"]) {
            self.service_tier = Some(t);
        }
        if at(v, &["error"]).is_some_and(|e| !e.is_null()) {
            self.set_error_from(v);
        }
        let mut has_content = false;
        for c in arr_at(v, &["choices"]) {
            let index = u64_at(c, &["index"]).unwrap_or(0);
            if let Some(r) = str_at(c, &["finish_reason"]) {
                self.set_finish(index, r);
            }
            // Stream chunks carry `delta`, bodies `message`; legacy completions `text`.
            let msg = at(c, &["delta"]).or_else(|| at(c, &["message"]));
            if let Some(text) = at(c, &["text"]).and_then(Value::as_str)
                && !text.is_empty()
            {
                has_content = true;
                self.push_text(index, text, false);
            }
            let Some(m) = msg else { continue };
            for (key, reasoning) in [
                ("content", false),
                ("refusal", false),
                ("reasoning_content", true),
                ("reasoning", true),
            ] {
                if let Some(text) = at(m, &[key]).and_then(Value::as_str)
                    && !text.is_empty()
                {
                    has_content = true;
                    self.push_text(index, text, reasoning);
                }
            }
            let calls = arr_at(m, &["tool_calls"]);
            if !calls.is_empty() {
                has_content = true;
            }
            for (i, call) in calls.iter().enumerate() {
                let name = str_at(call, &["function", "name"]);
                self.tool_name(name.clone());
                let slot = u64_at(call, &["index"]).map(|x| x as usize).or(Some(i));
                let args = at(call, &["function", "arguments"])
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.tool_call(index, slot, str_at(call, &["id"]), name, args);
            }
            if let Some(fc) = at(m, &["function_call"]).filter(|f| f.is_object()) {
                has_content = true;
                let name = str_at(fc, &["name"]);
                self.tool_name(name.clone());
                let args = at(fc, &["arguments"]).and_then(Value::as_str).unwrap_or("");
                self.tool_call(index, Some(0), None, name, args);
            }
        }
        if let Some(ts) = stream_ts
            && has_content
        {
            self.content_chunk(ts);
        }
        // Embeddings: dimension from the first vector (float array or base64 LE f32).
        if self.embeddings_dimension.is_none()
            && let Some(first) = arr_at(v, &["data"]).first()
        {
            self.embeddings_dimension = match at(first, &["embedding"]) {
                Some(Value::Array(a)) => Some(a.len() as u64),
                Some(Value::String(b64)) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .ok()
                    .map(|b| b.len() as u64 / 4),
                _ => None,
            };
        }
        let usage = at(v, &["usage"])
            .filter(|u| u.is_object())
            .or_else(|| at(v, &["x_groq", "usage"]).filter(|u| u.is_object()));
        if let Some(u) = usage {
            self.usage.input_tokens = u64_at(u, &["prompt_tokens"]).or(self.usage.input_tokens);
            self.usage.output_tokens =
                u64_at(u, &["completion_tokens"]).or(self.usage.output_tokens);
            self.usage.cache_read_input_tokens =
                u64_at(u, &["prompt_tokens_details", "cached_tokens"])
                    .or_else(|| u64_at(u, &["prompt_cache_hit_tokens"]))
                    .or(self.usage.cache_read_input_tokens);
            self.usage.cache_creation_input_tokens =
                u64_at(u, &["prompt_tokens_details", "cache_write_tokens"])
                    .or(self.usage.cache_creation_input_tokens);
            self.usage.reasoning_output_tokens =
                u64_at(u, &["completion_tokens_details", "reasoning_tokens"])
                    .or(self.usage.reasoning_output_tokens);
        }
    }

    // ---- OpenAI Responses ----

    /// The `response` object (non-stream body, or the terminal event's `response`).
    pub fn responses_object(&mut self, r: &Value) {
        if let Some(id) = str_at(r, &["id"]) {
            self.id = Some(id);
        }
        if let Some(m) = str_at(r, &["model"]) {
            self.model = Some(m);
        }
        if let Some(t) = str_at(r, &["service_tier"]) {
            self.service_tier = Some(t);
        }
        let output = arr_at(r, &["output"]);
        let has_function_call = output
            .iter()
            .any(|o| str_at(o, &["type"]).as_deref() == Some("function_call"));
        let reason = match str_at(r, &["status"]).as_deref() {
            Some("completed") if has_function_call => Some("tool_call".to_string()),
            Some("completed") => Some("stop".to_string()),
            Some("incomplete") => Some(match str_at(r, &["incomplete_details", "reason"]) {
                Some(x) if x == "max_output_tokens" => "length".to_string(),
                Some(x) => x,
                None => "incomplete".to_string(),
            }),
            Some("failed") => Some("error".to_string()),
            _ => None,
        };
        if let Some(reason) = reason {
            self.set_finish(0, reason);
        }
        if str_at(r, &["status"]).as_deref() == Some("failed") {
            self.error = Some(BodyError {
                error_type: str_at(r, &["error", "code"]).or_else(|| str_at(r, &["error", "type"])),
                message: str_at(r, &["error", "message"]),
            });
        }
        // Output content: only from the full object when nothing was streamed.
        let streamed = self.stream_chunks > 0;
        for item in output {
            match str_at(item, &["type"]).as_deref() {
                Some("function_call") => {
                    let name = str_at(item, &["name"]);
                    self.tool_name(name.clone());
                    if !streamed {
                        let args = at(item, &["arguments"])
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        self.tool_call(0, None, str_at(item, &["call_id"]), name, args);
                    }
                }
                Some("message") if !streamed => {
                    for part in arr_at(item, &["content"]) {
                        if let Some(t) = at(part, &["text"]).and_then(Value::as_str) {
                            self.push_text(0, t, false);
                        }
                    }
                }
                Some("reasoning") if !streamed => {
                    for s in arr_at(item, &["summary"]) {
                        if let Some(t) = at(s, &["text"]).and_then(Value::as_str) {
                            self.push_text(0, t, true);
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(u) = at(r, &["usage"]).filter(|u| u.is_object()) {
            self.usage.input_tokens = u64_at(u, &["input_tokens"]);
            self.usage.output_tokens = u64_at(u, &["output_tokens"]);
            self.usage.cache_read_input_tokens =
                u64_at(u, &["input_tokens_details", "cached_tokens"]);
            self.usage.reasoning_output_tokens =
                u64_at(u, &["output_tokens_details", "reasoning_tokens"]);
        }
    }

    /// `response.output_item.done` (Responses and Realtime alike): a finished function call.
    fn output_item_done(&mut self, v: &Value) {
        if let Some(item) = at(v, &["item"])
            && str_at(item, &["type"]).as_deref() == Some("function_call")
        {
            let args = at(item, &["arguments"])
                .and_then(Value::as_str)
                .unwrap_or("");
            self.tool_call(
                0,
                None,
                str_at(item, &["call_id"]),
                str_at(item, &["name"]),
                args,
            );
        }
    }

    pub fn responses_event(&mut self, v: &Value, ts_ns: u64) {
        let kind = str_at(v, &["type"]).unwrap_or_default();
        if kind.ends_with(".delta") {
            if let Some(d) = at(v, &["delta"]).and_then(Value::as_str)
                && !d.is_empty()
            {
                self.content_chunk(ts_ns);
                if kind == "response.output_text.delta" || kind == "response.refusal.delta" {
                    self.push_text(0, d, false);
                } else if kind.starts_with("response.reasoning") {
                    self.push_text(0, d, true);
                }
            }
            return;
        }
        match kind.as_str() {
            "response.created" | "response.in_progress" => {
                if let Some(r) = at(v, &["response"]) {
                    Self::set_first(&mut self.id, str_at(r, &["id"]));
                    Self::set_first(&mut self.model, str_at(r, &["model"]));
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.stream_finished = true;
                if let Some(r) = at(v, &["response"]) {
                    self.responses_object(r);
                }
            }
            "response.output_item.done" => self.output_item_done(v),
            "error" => {
                // SSE puts `code` and `message` at the top; the WebSocket form nests them in
                // `error` (beside the HTTP-like `status`).
                self.error = Some(BodyError {
                    error_type: at(v, &["code"])
                        .and_then(scalar_string)
                        .or_else(|| at(v, &["error", "code"]).and_then(scalar_string))
                        .or_else(|| str_at(v, &["error", "type"])),
                    message: str_at(v, &["message"]).or_else(|| str_at(v, &["error", "message"])),
                });
            }
            _ => {}
        }
    }

    // ---- OpenAI Realtime ----

    /// A Realtime server event of this call's response (its audio deltas arrive through
    /// [`ResponseAcc::realtime_audio_delta`], their payload never kept).
    pub fn realtime_event(&mut self, v: &Value, ts_ns: u64) {
        let kind = str_at(v, &["type"]).unwrap_or_default();
        match kind.as_str() {
            "response.text.delta"
            | "response.output_text.delta"
            | "response.audio_transcript.delta"
            | "response.output_audio_transcript.delta" => {
                if let Some(d) = at(v, &["delta"]).and_then(Value::as_str)
                    && !d.is_empty()
                {
                    self.content_chunk(ts_ns);
                    // The transcript of spoken output is the text of the output.
                    self.push_text(0, d, false);
                }
            }
            "response.function_call_arguments.delta"
                if at(v, &["delta"])
                    .and_then(Value::as_str)
                    .is_some_and(|d| !d.is_empty()) =>
            {
                self.content_chunk(ts_ns);
            }
            "response.created" => {
                Self::set_first(&mut self.id, str_at(v, &["response", "id"]));
            }
            "response.output_item.done" => self.output_item_done(v),
            "response.done" => {
                self.stream_finished = true;
                if let Some(r) = at(v, &["response"]) {
                    self.realtime_response(r);
                }
            }
            "error" => {
                self.error = Some(BodyError {
                    error_type: str_at(v, &["error", "code"])
                        .or_else(|| str_at(v, &["error", "type"])),
                    message: str_at(v, &["error", "message"]),
                });
            }
            _ => {}
        }
    }

    /// An audio delta of the response: a content chunk whose payload was skipped.
    pub fn realtime_audio_delta(&mut self, ts_ns: u64) {
        self.content_chunk(ts_ns);
    }

    /// The `response` of `response.done`: status, usage, tool calls.
    fn realtime_response(&mut self, r: &Value) {
        if let Some(id) = str_at(r, &["id"]) {
            self.id = Some(id);
        }
        let output = arr_at(r, &["output"]);
        let mut has_function_call = false;
        for item in output {
            if str_at(item, &["type"]).as_deref() == Some("function_call") {
                has_function_call = true;
                self.tool_name(str_at(item, &["name"]));
            }
        }
        let reason = str_at(r, &["status_details", "reason"]);
        let finish = match str_at(r, &["status"]).as_deref() {
            Some("completed") if has_function_call => Some("tool_call".to_string()),
            Some("completed") => Some("stop".to_string()),
            Some("incomplete") => Some(match reason {
                Some(x) if x == "max_output_tokens" => "length".to_string(),
                Some(x) => x,
                None => "incomplete".to_string(),
            }),
            Some("cancelled") => Some("cancelled".to_string()),
            Some("failed") => Some("error".to_string()),
            _ => None,
        };
        if let Some(f) = finish {
            self.set_finish(0, f);
        }
        if str_at(r, &["status"]).as_deref() == Some("failed") {
            self.error = Some(BodyError {
                error_type: str_at(r, &["status_details", "error", "code"])
                    .or_else(|| str_at(r, &["status_details", "error", "type"])),
                message: str_at(r, &["status_details", "error", "message"]),
            });
        }
        if let Some(u) = at(r, &["usage"]).filter(|u| u.is_object()) {
            self.usage.input_tokens = u64_at(u, &["input_tokens"]);
            self.usage.output_tokens = u64_at(u, &["output_tokens"]);
            self.usage.cache_read_input_tokens =
                u64_at(u, &["input_token_details", "cached_tokens"]);
        }
    }

    // ---- Anthropic Messages ----

    fn anthropic_usage(&mut self, u: &Value, from_start: bool) {
        let input = u64_at(u, &["input_tokens"]);
        let read = u64_at(u, &["cache_read_input_tokens"]);
        let created = u64_at(u, &["cache_creation_input_tokens"]);
        if from_start || input.is_some() {
            // Anthropic's input_tokens excludes cached tokens: the semconv value adds them.
            let base = input.or(self.raw_anthropic_input);
            self.raw_anthropic_input = base;
            if read.is_some() {
                self.usage.cache_read_input_tokens = read;
            }
            if created.is_some() {
                self.usage.cache_creation_input_tokens = created;
            }
            self.usage.input_tokens = base.map(|b| {
                b.saturating_add(self.usage.cache_read_input_tokens.unwrap_or(0))
                    .saturating_add(self.usage.cache_creation_input_tokens.unwrap_or(0))
            });
        }
        // Cumulative in message_delta: the last value is the total.
        if let Some(out) = u64_at(u, &["output_tokens"]) {
            self.usage.output_tokens = Some(out);
        }
        if let Some(r) = u64_at(u, &["output_tokens_details", "thinking_tokens"]) {
            self.usage.reasoning_output_tokens = Some(r);
        }
    }

    pub fn anthropic_body(&mut self, v: &Value) {
        if str_at(v, &["type"]).as_deref() == Some("error") {
            self.set_error_from(v);
            return;
        }
        self.id = str_at(v, &["id"]);
        self.model = str_at(v, &["model"]);
        if let Some(r) = str_at(v, &["stop_reason"]) {
            self.set_finish(0, r);
        }
        for block in arr_at(v, &["content"]) {
            self.anthropic_block(block);
        }
        if let Some(u) = at(v, &["usage"]) {
            self.anthropic_usage(u, true);
        }
    }

    fn anthropic_block(&mut self, block: &Value) {
        match str_at(block, &["type"]).as_deref() {
            Some("text") => {
                let t = at(block, &["text"]).and_then(Value::as_str).unwrap_or("");
                self.push_text(0, t, false);
            }
            Some("thinking") => {
                let t = at(block, &["thinking"])
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.push_text(0, t, true);
            }
            Some("tool_use") => {
                let name = str_at(block, &["name"]);
                self.tool_name(name.clone());
                let args = at(block, &["input"])
                    .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                    .map(Value::to_string)
                    .unwrap_or_default();
                self.tool_call(0, None, str_at(block, &["id"]), name, &args);
            }
            _ => {}
        }
    }

    pub fn anthropic_event(&mut self, v: &Value, ts_ns: u64) {
        match str_at(v, &["type"]).as_deref() {
            Some("message_start") => {
                if let Some(m) = at(v, &["message"]) {
                    Self::set_first(&mut self.id, str_at(m, &["id"]));
                    Self::set_first(&mut self.model, str_at(m, &["model"]));
                    if let Some(u) = at(m, &["usage"]) {
                        self.anthropic_usage(u, true);
                    }
                }
            }
            Some("content_block_start") => {
                let index = u64_at(v, &["index"]).unwrap_or(0);
                if let Some(block) = at(v, &["content_block"]) {
                    let kind = str_at(block, &["type"]).unwrap_or_default();
                    if kind == "tool_use" {
                        let name = str_at(block, &["name"]);
                        self.tool_name(name.clone());
                        self.tool_call(0, None, str_at(block, &["id"]), name, "");
                    }
                    if self.block_kinds.len() < 1024 {
                        self.block_kinds.insert(index, kind);
                    }
                }
            }
            Some("content_block_delta") => {
                let Some(d) = at(v, &["delta"]) else { return };
                let mut content = false;
                if let Some(t) = at(d, &["text"])
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    content = true;
                    self.push_text(0, t, false);
                }
                if let Some(t) = at(d, &["thinking"])
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    content = true;
                    self.push_text(0, t, true);
                }
                if let Some(t) = at(d, &["partial_json"])
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    content = true;
                    if self.keep_output
                        && let Some(call) = self
                            .choices
                            .get_mut(&0)
                            .and_then(|c| c.tool_calls.last_mut())
                        && self.output_len + t.len() <= self.output_cap
                    {
                        self.output_len += t.len();
                        call.arguments.push_str(t);
                    }
                }
                if content {
                    self.content_chunk(ts_ns);
                }
            }
            Some("message_stop") => self.stream_finished = true,
            Some("message_delta") => {
                if let Some(r) = str_at(v, &["delta", "stop_reason"]) {
                    self.set_finish(0, r);
                }
                if let Some(u) = at(v, &["usage"]) {
                    self.anthropic_usage(u, false);
                }
            }
            Some("error") => self.set_error_from(v),
            _ => {}
        }
    }

    // ---- Gemini ----

    /// A whole body or one stream chunk (`stream_ts`); usage is running, the last one wins.
    pub fn gemini(&mut self, v: &Value, stream_ts: Option<u64>) {
        if at(v, &["error"]).is_some_and(Value::is_object) {
            self.set_error_from(v);
            return;
        }
        Self::set_first(&mut self.id, str_at(v, &["responseId"]));
        Self::set_first(&mut self.model, str_at(v, &["modelVersion"]));
        let mut has_content = false;
        for (i, cand) in arr_at(v, &["candidates"]).iter().enumerate() {
            let index = u64_at(cand, &["index"]).unwrap_or(i as u64);
            if let Some(r) = str_at(cand, &["finishReason"]) {
                self.set_finish(index, r);
            }
            for part in arr_at(cand, &["content", "parts"]) {
                if let Some(t) = at(part, &["text"]).and_then(Value::as_str)
                    && !t.is_empty()
                {
                    has_content = true;
                    let thought = at(part, &["thought"]).and_then(Value::as_bool) == Some(true);
                    self.push_text(index, t, thought);
                }
                if let Some(fc) = at(part, &["functionCall"]) {
                    has_content = true;
                    let name = str_at(fc, &["name"]);
                    self.tool_name(name.clone());
                    let args = at(fc, &["args"]).map(Value::to_string).unwrap_or_default();
                    self.tool_call(index, None, str_at(fc, &["id"]), name, &args);
                }
                if ["executableCode", "codeExecutionResult", "inlineData"]
                    .iter()
                    .any(|k| at(part, &[k]).is_some())
                {
                    has_content = true;
                }
            }
        }
        if let Some(ts) = stream_ts
            && has_content
        {
            self.content_chunk(ts);
        }
        if let Some(u) = at(v, &["usageMetadata"]).filter(|u| u.is_object()) {
            let candidates = u64_at(u, &["candidatesTokenCount"]);
            let thoughts = u64_at(u, &["thoughtsTokenCount"]);
            self.usage.input_tokens = u64_at(u, &["promptTokenCount"]);
            self.usage.output_tokens = match (candidates, thoughts) {
                (None, None) => None,
                (c, t) => Some(c.unwrap_or(0).saturating_add(t.unwrap_or(0))),
            };
            self.usage.cache_read_input_tokens = u64_at(u, &["cachedContentTokenCount"]);
            self.usage.reasoning_output_tokens = thoughts;
        }
    }

    // ---- Bedrock ----

    pub fn bedrock_converse_body(&mut self, v: &Value) {
        if let Some(r) = str_at(v, &["stopReason"]) {
            self.set_finish(0, r);
        }
        for block in arr_at(v, &["output", "message", "content"]) {
            if let Some(t) = at(block, &["text"]).and_then(Value::as_str) {
                self.push_text(0, t, false);
            }
            if let Some(t) =
                at(block, &["reasoningContent", "reasoningText", "text"]).and_then(Value::as_str)
            {
                self.push_text(0, t, true);
            }
            if let Some(tu) = at(block, &["toolUse"]) {
                let name = str_at(tu, &["name"]);
                self.tool_name(name.clone());
                let args = at(tu, &["input"]).map(Value::to_string).unwrap_or_default();
                self.tool_call(0, None, str_at(tu, &["toolUseId"]), name, &args);
            }
        }
        if let Some(u) = at(v, &["usage"]) {
            self.bedrock_usage(u);
        }
    }

    /// Converse `usage`. AWS's `inputTokens` counts only the tokens neither read from nor
    /// written to the prompt cache (total input = inputTokens + cacheReadInputTokens +
    /// cacheWriteInputTokens, per the Bedrock prompt-caching guide); the semconv input count
    /// includes the cached parts, so they are added.
    fn bedrock_usage(&mut self, u: &Value) {
        let read = u64_at(u, &["cacheReadInputTokens"]);
        let written = u64_at(u, &["cacheWriteInputTokens"]);
        self.usage.input_tokens = u64_at(u, &["inputTokens"]).map(|uncached| {
            uncached
                .saturating_add(read.unwrap_or(0))
                .saturating_add(written.unwrap_or(0))
        });
        self.usage.output_tokens = u64_at(u, &["outputTokens"]);
        self.usage.cache_read_input_tokens = read;
        self.usage.cache_creation_input_tokens = written;
    }

    /// One ConverseStream event (`event_type` from the frame header, payload JSON).
    pub fn bedrock_converse_event(&mut self, event_type: &str, v: &Value, ts_ns: u64) {
        match event_type {
            "contentBlockStart" => {
                if let Some(tu) = at(v, &["start", "toolUse"]) {
                    let name = str_at(tu, &["name"]);
                    self.tool_name(name.clone());
                    self.tool_call(0, None, str_at(tu, &["toolUseId"]), name, "");
                }
            }
            "contentBlockDelta" => {
                let Some(d) = at(v, &["delta"]) else { return };
                let mut content = false;
                if let Some(t) = at(d, &["text"])
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    content = true;
                    self.push_text(0, t, false);
                }
                if let Some(t) = at(d, &["reasoningContent", "text"])
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    content = true;
                    self.push_text(0, t, true);
                }
                if let Some(t) = at(d, &["toolUse", "input"])
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    content = true;
                    if self.keep_output
                        && let Some(call) = self
                            .choices
                            .get_mut(&0)
                            .and_then(|c| c.tool_calls.last_mut())
                        && self.output_len + t.len() <= self.output_cap
                    {
                        self.output_len += t.len();
                        call.arguments.push_str(t);
                    }
                }
                if content {
                    self.content_chunk(ts_ns);
                }
            }
            "messageStop" => {
                if let Some(r) = str_at(v, &["stopReason"]) {
                    self.set_finish(0, r);
                }
            }
            "metadata" => {
                if let Some(u) = at(v, &["usage"]) {
                    self.bedrock_usage(u);
                }
            }
            _ => {}
        }
    }

    /// InvokeModel bodies are the model provider's own format; Anthropic (Claude) is read,
    /// others only for Bedrock's invocation metrics.
    pub fn bedrock_invoke(&mut self, v: &Value, stream_ts: Option<u64>) {
        let kind = str_at(v, &["type"]).unwrap_or_default();
        let anthropic = kind == "message"
            || kind.starts_with("message_")
            || kind.starts_with("content_block")
            || self.native == Some(Api::AnthropicMessages);
        if anthropic {
            self.native = Some(Api::AnthropicMessages);
            match stream_ts {
                Some(ts) => self.anthropic_event(v, ts),
                None => self.anthropic_body(v),
            }
        }
        if let Some(m) = at(v, &["amazon-bedrock-invocationMetrics"]) {
            self.bedrock_invocation_metrics(m);
        }
    }

    /// Bedrock's own counts on the last InvokeModel stream frame. They exclude prompt-cache
    /// reads and writes (like Converse's `inputTokens`), so they only fill what the model's
    /// native body did not report: an Anthropic body's cache-inclusive count is kept.
    fn bedrock_invocation_metrics(&mut self, m: &Value) {
        if self.usage.input_tokens.is_none() {
            let read = u64_at(m, &["cacheReadInputTokenCount"]);
            let written = u64_at(m, &["cacheWriteInputTokenCount"]);
            self.usage.input_tokens = u64_at(m, &["inputTokenCount"]).map(|uncached| {
                uncached
                    .saturating_add(read.unwrap_or(0))
                    .saturating_add(written.unwrap_or(0))
            });
            if self.usage.input_tokens.is_some() {
                self.usage.cache_read_input_tokens = read;
                self.usage.cache_creation_input_tokens = written;
            }
        }
        if self.usage.output_tokens.is_none() {
            self.usage.output_tokens = u64_at(m, &["outputTokenCount"]);
        }
    }

    // ---- Ollama native ----

    pub fn ollama(&mut self, v: &Value, chat: bool, stream_ts: Option<u64>) {
        if let Some(e) = at(v, &["error"]) {
            self.error = Some(BodyError {
                error_type: None,
                message: scalar_string(e),
            });
            return;
        }
        Self::set_first(&mut self.model, str_at(v, &["model"]));
        let mut content = false;
        if chat {
            for (key, reasoning) in [("content", false), ("thinking", true)] {
                if let Some(t) = at(v, &["message", key])
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    content = true;
                    self.push_text(0, t, reasoning);
                }
            }
            let calls = arr_at(v, &["message", "tool_calls"]);
            content |= !calls.is_empty();
            for call in calls {
                let name = str_at(call, &["function", "name"]);
                self.tool_name(name.clone());
                let args = at(call, &["function", "arguments"])
                    .map(Value::to_string)
                    .unwrap_or_default();
                self.tool_call(0, None, None, name, &args);
            }
        } else {
            for (key, reasoning) in [("response", false), ("thinking", true)] {
                if let Some(t) = at(v, &[key])
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    content = true;
                    self.push_text(0, t, reasoning);
                }
            }
        }
        if let Some(ts) = stream_ts
            && content
        {
            self.content_chunk(ts);
        }
        if let Some(r) = str_at(v, &["done_reason"]) {
            self.set_finish(0, r);
        }
        if let Some(n) = u64_at(v, &["prompt_eval_count"]) {
            self.usage.input_tokens = Some(n);
        }
        if let Some(n) = u64_at(v, &["eval_count"]) {
            self.usage.output_tokens = Some(n);
        }
    }

    // ---- llama.cpp `/completion` ----

    /// A whole response, or one streamed chunk (`content` piece; the last one has `stop: true`
    /// with the token counts and `stop_type`).
    pub fn llama_cpp(&mut self, v: &Value, stream_ts: Option<u64>) {
        if let Some(e) = at(v, &["error"]) {
            self.error = Some(BodyError {
                error_type: str_at(e, &["type"]),
                message: str_at(e, &["message"]).or_else(|| scalar_string(e)),
            });
            return;
        }
        Self::set_first(&mut self.model, str_at(v, &["model"]));
        if let Some(t) = at(v, &["content"])
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            self.push_text(0, t, false);
            if let Some(ts) = stream_ts {
                self.content_chunk(ts);
            }
        }
        if at(v, &["stop"]).and_then(Value::as_bool) == Some(true) {
            // `eos` (end of sequence) and `word` (a stop string) end normally; `limit` is
            // n_predict reached.
            match str_at(v, &["stop_type"]).as_deref() {
                Some("eos" | "word") => self.set_finish(0, "stop".to_string()),
                Some("limit") => self.set_finish(0, "length".to_string()),
                _ => {}
            }
        }
        if let Some(n) =
            u64_at(v, &["tokens_evaluated"]).or_else(|| u64_at(v, &["timings", "prompt_n"]))
        {
            self.usage.input_tokens = Some(n);
        }
        if let Some(n) =
            u64_at(v, &["tokens_predicted"]).or_else(|| u64_at(v, &["timings", "predicted_n"]))
        {
            self.usage.output_tokens = Some(n);
        }
    }

    // ---- Cohere v2 ----

    pub fn cohere_body(&mut self, v: &Value) {
        self.id = str_at(v, &["id"]);
        if let Some(r) = str_at(v, &["finish_reason"]) {
            self.set_finish(0, r);
        }
        for c in arr_at(v, &["message", "content"]) {
            if let Some(t) = at(c, &["text"]).and_then(Value::as_str) {
                self.push_text(0, t, false);
            }
        }
        for call in arr_at(v, &["message", "tool_calls"]) {
            let name = str_at(call, &["function", "name"]);
            self.tool_name(name.clone());
            let args = at(call, &["function", "arguments"])
                .and_then(Value::as_str)
                .unwrap_or("");
            self.tool_call(0, None, str_at(call, &["id"]), name, args);
        }
        if let Some(u) = at(v, &["usage"]) {
            self.cohere_usage(u);
        }
    }

    fn cohere_usage(&mut self, u: &Value) {
        self.usage.input_tokens = u64_at(u, &["tokens", "input_tokens"]);
        self.usage.output_tokens = u64_at(u, &["tokens", "output_tokens"]);
    }

    pub fn cohere_event(&mut self, v: &Value, ts_ns: u64) {
        let kind = str_at(v, &["type"]).unwrap_or_default();
        match kind.as_str() {
            "message-start" => Self::set_first(&mut self.id, str_at(v, &["id"])),
            "content-delta" | "tool-plan-delta" => {
                let t = at(v, &["delta", "message", "content", "text"])
                    .or_else(|| at(v, &["delta", "message", "tool_plan"]))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !t.is_empty() {
                    self.content_chunk(ts_ns);
                    self.push_text(0, t, kind == "tool-plan-delta");
                }
            }
            "tool-call-start" => {
                self.content_chunk(ts_ns);
                let call = at(v, &["delta", "message", "tool_calls"]);
                let name = call.and_then(|c| str_at(c, &["function", "name"]));
                self.tool_name(name.clone());
                let args = call
                    .and_then(|c| at(c, &["function", "arguments"]))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.tool_call(0, None, call.and_then(|c| str_at(c, &["id"])), name, args);
            }
            "tool-call-delta" => {
                let t = at(
                    v,
                    &["delta", "message", "tool_calls", "function", "arguments"],
                )
                .and_then(Value::as_str)
                .unwrap_or("");
                if !t.is_empty() {
                    self.content_chunk(ts_ns);
                    if self.keep_output
                        && let Some(call) = self
                            .choices
                            .get_mut(&0)
                            .and_then(|c| c.tool_calls.last_mut())
                        && self.output_len + t.len() <= self.output_cap
                    {
                        self.output_len += t.len();
                        call.arguments.push_str(t);
                    }
                }
            }
            "message-end" => {
                if let Some(r) = str_at(v, &["delta", "finish_reason"]) {
                    self.set_finish(0, r);
                }
                if let Some(u) = at(v, &["delta", "usage"]) {
                    self.cohere_usage(u);
                }
                if let Some(e) = str_at(v, &["delta", "error"]) {
                    self.error = Some(BodyError {
                        error_type: None,
                        message: Some(e),
                    });
                }
            }
            _ => {}
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

/// The body's error type: `error.type`, else `error.code`, else `error.status` (as strings).
pub fn body_error_type(v: &Value) -> Option<String> {
    let e = at(v, &["error"])?;
    if !e.is_object() {
        return None;
    }
    ["type", "code", "status"]
        .iter()
        .find_map(|k| at(e, &[k]).and_then(scalar_string))
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

    #[test]
    fn openai_stream_rules() {
        let mut acc = ResponseAcc::new(true, 1 << 20, 1000);
        acc.openai(
            &json!({"id": "", "model": "", "choices": [], "prompt_filter_results": []}),
            Some(1),
        );
        acc.openai(&json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}), Some(2));
        acc.openai(
            &json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}),
            Some(3),
        );
        acc.openai(
            &json!({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            Some(4),
        );
        acc.openai(&json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}), Some(5));
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
        acc.anthropic_event(&json!({"type": "message_start", "message": {"id": "m1", "model": "claude", "usage": {"input_tokens": 4, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 10, "output_tokens": 1}}}), 1);
        acc.anthropic_event(&json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}), 2);
        acc.anthropic_event(&json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "abc"}}), 3);
        acc.anthropic_event(&json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 30}}), 4);
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
        let mut body = ResponseAcc::new(false, 0, 0);
        body.bedrock_converse_body(&json!({"stopReason": "end_turn", "usage": usage}));
        let mut stream = ResponseAcc::new(false, 0, 0);
        stream.bedrock_converse_event("metadata", &json!({"usage": usage}), 5);
        for acc in [body, stream] {
            assert_eq!(acc.usage.input_tokens, Some(1512));
            assert_eq!(acc.usage.cache_read_input_tokens, Some(1000));
            assert_eq!(acc.usage.cache_creation_input_tokens, Some(500));
            assert_eq!(acc.usage.output_tokens, Some(40));
        }
        let mut uncached = ResponseAcc::new(false, 0, 0);
        uncached.bedrock_converse_body(
            &json!({"usage": {"inputTokens": 12, "outputTokens": 3, "totalTokens": 15}}),
        );
        assert_eq!(uncached.usage.input_tokens, Some(12));
        assert_eq!(uncached.usage.cache_read_input_tokens, None);
    }

    /// A streamed InvokeModel of Claude: the Anthropic events carry the cache-inclusive count,
    /// and the last frame's `invocationMetrics` (cache excluded) must not overwrite it.
    #[test]
    fn bedrock_invoke_metrics_do_not_overwrite_anthropic_usage() {
        let mut acc = ResponseAcc::new(false, 0, 0);
        acc.bedrock_invoke(&json!({"type": "message_start", "message": {"id": "m", "model": "claude",
            "usage": {"input_tokens": 4, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 10, "output_tokens": 1}}}), Some(1));
        acc.bedrock_invoke(&json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 30}}), Some(2));
        acc.bedrock_invoke(&json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": 4, "outputTokenCount": 30, "invocationLatency": 900, "firstByteLatency": 300,
            "cacheReadInputTokenCount": 100, "cacheWriteInputTokenCount": 10}}), Some(3));
        assert_eq!(acc.usage.input_tokens, Some(114));
        assert_eq!(acc.usage.output_tokens, Some(30));
        assert_eq!(acc.usage.cache_read_input_tokens, Some(100));
    }

    /// A model whose native body has no usage (Llama, Titan): Bedrock's metrics are the
    /// only counts, made cache-inclusive the same way.
    #[test]
    fn bedrock_invoke_metrics_fill_missing_usage() {
        let mut acc = ResponseAcc::new(false, 0, 0);
        acc.bedrock_invoke(
            &json!({"generation": "Hi", "stop_reason": "stop", "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": 7, "outputTokenCount": 2, "cacheReadInputTokenCount": 20}}),
            Some(1),
        );
        assert_eq!(acc.usage.input_tokens, Some(27));
        assert_eq!(acc.usage.cache_read_input_tokens, Some(20));
        assert_eq!(acc.usage.output_tokens, Some(2));
    }

    /// The same outcome reported by different APIs is one class; an unknown value is bounded.
    #[test]
    fn finish_reason_classes_agree_across_apis() {
        let mut responses = ResponseAcc::new(false, 0, 0);
        responses.responses_object(&json!({"id": "r", "status": "completed",
            "output": [{"type": "function_call", "name": "f", "call_id": "c", "arguments": "{}"}]}));
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
        acc.gemini(&json!({"usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 10, "thoughtsTokenCount": 7}}), None);
        assert_eq!(acc.usage.output_tokens, Some(17));
        assert_eq!(acc.usage.reasoning_output_tokens, Some(7));
    }

    #[test]
    fn error_type_order() {
        assert_eq!(
            body_error_type(&json!({"error": {"type": "invalid_request_error", "code": "x"}}))
                .as_deref(),
            Some("invalid_request_error")
        );
        assert_eq!(
            body_error_type(&json!({"error": {"code": 400, "status": "INVALID_ARGUMENT"}}))
                .as_deref(),
            Some("400")
        );
        assert_eq!(
            body_error_type(&json!({"error": {"status": "INVALID_ARGUMENT"}})).as_deref(),
            Some("INVALID_ARGUMENT")
        );
        assert_eq!(body_error_type(&json!({"error": "plain"})), None);
    }
}
