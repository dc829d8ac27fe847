//! Anthropic Messages (`/v1/messages`; also Claude on Bedrock InvokeModel and Vertex).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::evidence::{ToolResults, each, prefix_hashes};
use super::sampling::{StopKey, sampling_request};
use super::wire::{Count, Field, List, Obj, Raw, Text, object_text, parse};
use super::{ApiShape, ErrorDetail, ReadError, body_error};
use crate::genai::record::RequestParams;
use crate::genai::response::ResponseAcc;

pub struct AnthropicMessages;

sampling_request!(MessagesRequest {
    #[serde(borrow)]
    messages: List<&'a RawValue>,
});

#[derive(Deserialize, Default)]
#[serde(default)]
struct RequestBlock<'a> {
    #[serde(borrow, rename = "type")]
    kind: Text<'a>,
    #[serde(borrow)]
    tool_use_id: Text<'a>,
    #[serde(borrow)]
    content: Raw<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RequestMessage<'a> {
    /// A string, or content blocks.
    #[serde(borrow)]
    content: List<Obj<RequestBlock<'a>>>,
}

/// Message history hashes and `tool_result` blocks of a Messages request.
pub(super) fn read_request(
    body: &[u8],
    stop_key: StopKey,
    with_content: bool,
    params: &mut RequestParams,
) -> Result<(), ReadError> {
    let r: MessagesRequest = parse(body)?;
    r.sampling().apply(stop_key, params);
    params.message_hashes = prefix_hashes(&r.messages);
    let mut results = ToolResults::new(with_content);
    for m in each::<RequestMessage>(&r.messages) {
        for block in m.content.iter().filter_map(Obj::get) {
            if block.kind.is("tool_result") {
                results.push(block.tool_use_id.owned(), None, block.content);
            }
        }
    }
    results.store(params);
    Ok(())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OutputDetails {
    thinking_tokens: Count,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Usage {
    input_tokens: Count,
    cache_read_input_tokens: Count,
    cache_creation_input_tokens: Count,
    output_tokens: Count,
    output_tokens_details: Obj<OutputDetails>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Block<'a> {
    #[serde(borrow, rename = "type")]
    kind: Text<'a>,
    #[serde(borrow)]
    text: Text<'a>,
    #[serde(borrow)]
    thinking: Text<'a>,
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    input: Raw<'a>,
}

/// A message (a non-streamed body, or `message_start`'s `message`).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Message<'a> {
    #[serde(borrow, rename = "type")]
    kind: Text<'a>,
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow)]
    stop_reason: Text<'a>,
    #[serde(borrow)]
    content: List<Obj<Block<'a>>>,
    usage: Obj<Usage>,
    #[serde(borrow)]
    error: Field<ErrorDetail<'a>>,
    #[serde(borrow)]
    message: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Delta<'a> {
    #[serde(borrow)]
    text: Text<'a>,
    #[serde(borrow)]
    thinking: Text<'a>,
    #[serde(borrow)]
    partial_json: Text<'a>,
    #[serde(borrow)]
    stop_reason: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Event<'a> {
    #[serde(borrow, rename = "type")]
    kind: Text<'a>,
    #[serde(borrow)]
    message: Field<Message<'a>>,
    #[serde(borrow)]
    content_block: Obj<Block<'a>>,
    #[serde(borrow)]
    delta: Obj<Delta<'a>>,
    usage: Obj<Usage>,
    #[serde(borrow)]
    error: Field<ErrorDetail<'a>>,
}

fn apply_usage(acc: &mut ResponseAcc, u: &Usage, from_start: bool) {
    let input = u.input_tokens.0;
    if from_start || input.is_some() {
        // Anthropic's input_tokens excludes cached tokens: the semconv value adds them.
        let base = input.or(acc.raw_anthropic_input);
        acc.raw_anthropic_input = base;
        if let Some(read) = u.cache_read_input_tokens.0 {
            acc.usage.cache_read_input_tokens = Some(read);
        }
        if let Some(created) = u.cache_creation_input_tokens.0 {
            acc.usage.cache_creation_input_tokens = Some(created);
        }
        acc.usage.input_tokens = base.map(|b| {
            b.saturating_add(acc.usage.cache_read_input_tokens.unwrap_or(0))
                .saturating_add(acc.usage.cache_creation_input_tokens.unwrap_or(0))
        });
    }
    // Cumulative in message_delta: the last value is the total.
    if let Some(out) = u.output_tokens.0 {
        acc.usage.output_tokens = Some(out);
    }
    if let Some(r) = u
        .output_tokens_details
        .get()
        .and_then(|d| d.thinking_tokens.0)
    {
        acc.usage.reasoning_output_tokens = Some(r);
    }
}

fn apply_block(acc: &mut ResponseAcc, block: &Block<'_>) {
    match block.kind.get() {
        Some("text") => acc.push_text(0, block.text.raw(), false),
        Some("thinking") => acc.push_text(0, block.thinking.raw(), true),
        Some("tool_use") => {
            let name = block.name.owned();
            acc.tool_name(name.clone());
            let args = object_text(block.input).unwrap_or("");
            acc.tool_call(0, None, block.id.owned(), name, args);
        }
        _ => {}
    }
}

/// A whole Messages response.
pub(super) fn read_body(bytes: &[u8], acc: &mut ResponseAcc) -> Result<(), ReadError> {
    let Obj(Some(v)) = parse::<Obj<Message>>(bytes)? else {
        return Ok(());
    };
    if v.kind.is("error") {
        acc.error = Some(body_error(v.error.obj.as_ref(), &v.message));
        return Ok(());
    }
    acc.id = v.id.owned();
    acc.model = v.model.owned();
    if let Some(r) = v.stop_reason.owned() {
        acc.set_finish(0, r);
    }
    for block in v.content.iter().filter_map(Obj::get) {
        apply_block(acc, block);
    }
    if let Some(u) = v.usage.get() {
        apply_usage(acc, u, true);
    }
    Ok(())
}

/// One Messages stream event.
pub(super) fn read_event(bytes: &[u8], ts_ns: u64, acc: &mut ResponseAcc) -> Result<(), ReadError> {
    let Obj(Some(v)) = parse::<Obj<Event>>(bytes)? else {
        return Ok(());
    };
    match v.kind.get() {
        Some("message_start") => {
            if let Some(m) = &v.message.obj {
                acc.first_id(&m.id);
                acc.first_model(&m.model);
                if let Some(u) = m.usage.get() {
                    apply_usage(acc, u, true);
                }
            }
        }
        Some("content_block_start") => {
            if let Some(block) = v.content_block.get()
                && block.kind.is("tool_use")
            {
                let name = block.name.owned();
                acc.tool_name(name.clone());
                acc.tool_call(0, None, block.id.owned(), name, "");
            }
        }
        Some("content_block_delta") => {
            let Some(d) = v.delta.get() else {
                return Ok(());
            };
            let mut content = false;
            if let Some(t) = d.text.get() {
                content = true;
                acc.push_text(0, t, false);
            }
            if let Some(t) = d.thinking.get() {
                content = true;
                acc.push_text(0, t, true);
            }
            if let Some(t) = d.partial_json.get() {
                content = true;
                acc.append_tool_arguments(t);
            }
            if content {
                acc.content_chunk(ts_ns);
            }
        }
        Some("message_stop") => acc.stream_finished = true,
        Some("message_delta") => {
            if let Some(r) = v.delta.get().and_then(|d| d.stop_reason.owned()) {
                acc.set_finish(0, r);
            }
            if let Some(u) = v.usage.get() {
                apply_usage(acc, u, false);
            }
        }
        Some("error") => {
            let top = Text(v.message.scalar.as_deref().map(std::borrow::Cow::Borrowed));
            acc.error = Some(body_error(v.error.obj.as_ref(), &top));
        }
        _ => {}
    }
    Ok(())
}

impl ApiShape for AnthropicMessages {
    fn read_request(
        &self,
        body: &[u8],
        with_content: bool,
        params: &mut RequestParams,
    ) -> Result<(), ReadError> {
        read_request(body, StopKey::StopSequences, with_content, params)
    }

    fn read_body(&self, body: &[u8], acc: &mut ResponseAcc) -> Result<(), ReadError> {
        read_body(body, acc)
    }

    fn read_event(
        &self,
        _event_type: Option<&str>,
        payload: &[u8],
        ts_ns: u64,
        acc: &mut ResponseAcc,
    ) -> Result<(), ReadError> {
        read_event(payload, ts_ns, acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_arithmetic() {
        let mut acc = ResponseAcc::new(true, 1024, 8);
        let ev = |acc: &mut ResponseAcc, j: &str, ts| read_event(j.as_bytes(), ts, acc).unwrap();
        ev(
            &mut acc,
            r#"{"type": "message_start", "message": {"id": "m1", "model": "claude", "usage": {"input_tokens": 4, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 10, "output_tokens": 1}}}"#,
            1,
        );
        ev(
            &mut acc,
            r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}"#,
            2,
        );
        ev(
            &mut acc,
            r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "abc"}}"#,
            3,
        );
        ev(
            &mut acc,
            r#"{"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 30}}"#,
            4,
        );
        assert_eq!(acc.usage.input_tokens, Some(114));
        assert_eq!(acc.usage.cache_read_input_tokens, Some(100));
        assert_eq!(acc.usage.cache_creation_input_tokens, Some(10));
        assert_eq!(acc.usage.output_tokens, Some(30));
        assert_eq!(acc.stream_chunks, 1, "a signature delta is not content");
        assert_eq!(acc.finish[&0], "end_turn");
    }

    #[test]
    fn tool_use_and_results() {
        let mut acc = ResponseAcc::new(true, 1024, 8);
        read_body(
            br#"{"type":"message","id":"msg_1","content":[{"type":"tool_use","id":"toolu_1","name":"f","input":{"a":1}},{"type":"tool_use","id":"toolu_2","name":"g","input":{}}],"stop_reason":"tool_use"}"#,
            &mut acc,
        )
        .unwrap();
        let calls = &acc.choices[&0].tool_calls;
        assert_eq!(calls[0].arguments, r#"{"a":1}"#);
        assert_eq!(calls[1].arguments, "", "{{}} means no arguments");
        let mut p = RequestParams::default();
        read_request(
            br#"{"stop_sequences":["x"],"messages":[{"role":"user","content":"q"},{"role":"user","content":[
                {"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"ok"}]}]}]}"#,
            StopKey::StopSequences,
            true,
            &mut p,
        )
        .unwrap();
        assert_eq!(p.stop_sequences, vec!["x"]);
        assert_eq!(p.tool_results[0].id.as_deref(), Some("toolu_1"));
        assert_eq!(
            p.tool_results[0].content.as_deref(),
            Some(r#"[{"type":"text","text":"ok"}]"#)
        );
        assert_eq!(p.message_hashes.len(), 2);
        let mut acc = ResponseAcc::new(false, 0, 0);
        read_body(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#,
            &mut acc,
        )
        .unwrap();
        assert_eq!(
            acc.error.unwrap().error_type.as_deref(),
            Some("overloaded_error")
        );
    }
}
