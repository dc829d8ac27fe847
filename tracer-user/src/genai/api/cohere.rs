//! Cohere Chat v2 (`/v2/chat`).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::chat_completions::tool_messages;
use super::sampling::{StopKey, sampling_request};
use super::wire::{Count, List, Obj, Text, parse};
use super::{ApiShape, ReadError};
use crate::genai::record::RequestParams;
use crate::genai::response::{BodyError, ResponseAcc};

pub struct CohereChat;

sampling_request!(ChatRequest {
    #[serde(borrow)]
    messages: List<&'a RawValue>,
});

#[derive(Deserialize, Default)]
#[serde(default)]
struct TextOnly<'a> {
    #[serde(borrow)]
    text: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Function<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    arguments: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolCall<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    function: Obj<Function<'a>>,
}

impl ToolCall<'_> {
    fn start(&self, acc: &mut ResponseAcc) {
        let f = self.function.get();
        let name = f.and_then(|f| f.name.owned());
        acc.tool_name(name.clone());
        let args = f.map_or("", |f| f.arguments.raw());
        acc.tool_call(0, None, self.id.owned(), name, args);
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Tokens {
    input_tokens: Count,
    output_tokens: Count,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Usage {
    tokens: Obj<Tokens>,
}

impl Usage {
    fn apply(&self, acc: &mut ResponseAcc) {
        let t = self.tokens.get();
        acc.usage.input_tokens = t.and_then(|t| t.input_tokens.0);
        acc.usage.output_tokens = t.and_then(|t| t.output_tokens.0);
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BodyMessage<'a> {
    #[serde(borrow)]
    content: List<Obj<TextOnly<'a>>>,
    #[serde(borrow)]
    tool_calls: List<Obj<ToolCall<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChatResponse<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    finish_reason: Text<'a>,
    #[serde(borrow)]
    message: Obj<BodyMessage<'a>>,
    usage: Obj<Usage>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DeltaMessage<'a> {
    /// `content-delta`: `{text}`.
    #[serde(borrow)]
    content: Obj<TextOnly<'a>>,
    #[serde(borrow)]
    tool_plan: Text<'a>,
    /// `tool-call-start` / `tool-call-delta`: one call.
    #[serde(borrow)]
    tool_calls: Obj<ToolCall<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Delta<'a> {
    #[serde(borrow)]
    message: Obj<DeltaMessage<'a>>,
    #[serde(borrow)]
    finish_reason: Text<'a>,
    usage: Obj<Usage>,
    #[serde(borrow)]
    error: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Event<'a> {
    #[serde(borrow, rename = "type")]
    kind: Text<'a>,
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    delta: Obj<Delta<'a>>,
}

impl ApiShape for CohereChat {
    fn read_request(
        &self,
        body: &[u8],
        with_content: bool,
        params: &mut RequestParams,
    ) -> Result<(), ReadError> {
        let r: ChatRequest = parse(body)?;
        r.sampling().apply(StopKey::StopSequences, params);
        tool_messages(&r.messages, with_content, params);
        Ok(())
    }

    fn read_body(&self, body: &[u8], acc: &mut ResponseAcc) -> Result<(), ReadError> {
        let Obj(Some(v)) = parse::<Obj<ChatResponse>>(body)? else {
            return Ok(());
        };
        acc.id = v.id.owned();
        if let Some(r) = v.finish_reason.owned() {
            acc.set_finish(0, r);
        }
        if let Some(m) = v.message.get() {
            for c in m.content.iter().filter_map(Obj::get) {
                acc.push_text(0, c.text.raw(), false);
            }
            for call in m.tool_calls.iter().filter_map(Obj::get) {
                call.start(acc);
            }
        }
        if let Some(u) = v.usage.get() {
            u.apply(acc);
        }
        Ok(())
    }

    fn read_event(
        &self,
        _event_type: Option<&str>,
        payload: &[u8],
        ts_ns: u64,
        acc: &mut ResponseAcc,
    ) -> Result<(), ReadError> {
        let Obj(Some(v)) = parse::<Obj<Event>>(payload)? else {
            return Ok(());
        };
        let delta = v.delta.get();
        let message = delta.and_then(|d| d.message.get());
        let kind = v.kind.raw();
        match kind {
            "message-start" => acc.first_id(&v.id),
            "content-delta" | "tool-plan-delta" => {
                let t = message
                    .and_then(|m| m.content.get().map(|c| c.text.raw()))
                    .filter(|t| !t.is_empty())
                    .or_else(|| message.map(|m| m.tool_plan.raw()))
                    .unwrap_or("");
                if !t.is_empty() {
                    acc.content_chunk(ts_ns);
                    acc.push_text(0, t, kind == "tool-plan-delta");
                }
            }
            "tool-call-start" => {
                acc.content_chunk(ts_ns);
                match message.and_then(|m| m.tool_calls.get()) {
                    Some(call) => call.start(acc),
                    None => acc.tool_call(0, None, None, None, ""),
                }
            }
            "tool-call-delta" => {
                let t = message
                    .and_then(|m| m.tool_calls.get())
                    .and_then(|c| c.function.get())
                    .map_or("", |f| f.arguments.raw());
                if !t.is_empty() {
                    acc.content_chunk(ts_ns);
                    acc.append_tool_arguments(t);
                }
            }
            "message-end" => {
                if let Some(d) = delta {
                    if let Some(r) = d.finish_reason.owned() {
                        acc.set_finish(0, r);
                    }
                    if let Some(u) = d.usage.get() {
                        u.apply(acc);
                    }
                    if let Some(e) = d.error.owned() {
                        acc.error = Some(BodyError {
                            error_type: None,
                            message: Some(e),
                        });
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_with_a_tool_call() {
        let mut acc = ResponseAcc::new(true, 1024, 8);
        let ev = |acc: &mut ResponseAcc, j: &str, ts| {
            CohereChat.read_event(None, j.as_bytes(), ts, acc).unwrap()
        };
        ev(&mut acc, r#"{"type":"message-start","id":"c-1"}"#, 1);
        ev(
            &mut acc,
            r#"{"type":"tool-plan-delta","delta":{"message":{"tool_plan":"I will look"}}}"#,
            2,
        );
        ev(
            &mut acc,
            r#"{"type":"tool-call-start","delta":{"message":{"tool_calls":{"id":"t1","type":"function","function":{"name":"get_weather","arguments":""}}}}}"#,
            3,
        );
        ev(
            &mut acc,
            r#"{"type":"tool-call-delta","delta":{"message":{"tool_calls":{"function":{"arguments":"{\"a\":1}"}}}}}"#,
            4,
        );
        ev(
            &mut acc,
            r#"{"type":"message-end","delta":{"finish_reason":"TOOL_CALL","usage":{"tokens":{"input_tokens":9,"output_tokens":4}}}}"#,
            5,
        );
        assert_eq!(acc.id.as_deref(), Some("c-1"));
        assert_eq!(acc.stream_chunks, 3);
        assert_eq!(acc.choices[&0].reasoning, "I will look");
        assert_eq!(acc.choices[&0].tool_calls[0].id.as_deref(), Some("t1"));
        assert_eq!(acc.choices[&0].tool_calls[0].arguments, r#"{"a":1}"#);
        assert_eq!(acc.finish[&0], "TOOL_CALL");
        assert_eq!(acc.usage.output_tokens, Some(4));
    }
}
