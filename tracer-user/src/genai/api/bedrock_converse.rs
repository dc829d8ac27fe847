//! Amazon Bedrock Converse and ConverseStream (`/model/{id}/converse[-stream]`); the stream
//! comes as AWS event-stream frames whose type names the event.

use serde::Deserialize;
use serde::de::Error as _;
use serde_json::value::RawValue;

use super::evidence::{ToolResults, each, prefix_hashes};
use super::wire::{Count, List, Num, Obj, Raw, Strings, Text, parse};
use super::{ApiShape, ReadError};
use crate::genai::record::RequestParams;
use crate::genai::response::ResponseAcc;

pub struct BedrockConverse;

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct InferenceConfig {
    temperature: Num,
    top_p: Num,
    max_tokens: Count,
    stop_sequences: Strings,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AdditionalFields {
    top_k: Num,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ConverseRequest<'a> {
    inference_config: Obj<InferenceConfig>,
    additional_model_request_fields: Obj<AdditionalFields>,
    #[serde(borrow)]
    messages: List<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ToolResult<'a> {
    #[serde(borrow)]
    tool_use_id: Text<'a>,
    #[serde(borrow)]
    content: Raw<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RequestBlock<'a> {
    #[serde(borrow)]
    tool_result: Obj<ToolResult<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RequestMessage<'a> {
    #[serde(borrow)]
    content: List<Obj<RequestBlock<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ToolUse<'a> {
    #[serde(borrow)]
    tool_use_id: Text<'a>,
    #[serde(borrow)]
    name: Text<'a>,
    /// A JSON object in a body; a string piece of it in a stream delta.
    #[serde(borrow)]
    input: Raw<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TextOnly<'a> {
    #[serde(borrow)]
    text: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Reasoning<'a> {
    #[serde(borrow)]
    reasoning_text: Obj<TextOnly<'a>>,
    /// The stream delta's form.
    #[serde(borrow)]
    text: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Block<'a> {
    #[serde(borrow)]
    text: Text<'a>,
    #[serde(borrow)]
    reasoning_content: Obj<Reasoning<'a>>,
    #[serde(borrow)]
    tool_use: Obj<ToolUse<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OutputMessage<'a> {
    #[serde(borrow)]
    content: List<Obj<Block<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Output<'a> {
    #[serde(borrow)]
    message: Obj<OutputMessage<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Usage {
    input_tokens: Count,
    output_tokens: Count,
    cache_read_input_tokens: Count,
    cache_write_input_tokens: Count,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ConverseResponse<'a> {
    #[serde(borrow)]
    stop_reason: Text<'a>,
    #[serde(borrow)]
    output: Obj<Output<'a>>,
    usage: Obj<Usage>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Start<'a> {
    #[serde(borrow)]
    tool_use: Obj<ToolUse<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct StreamEvent<'a> {
    #[serde(borrow)]
    start: Obj<Start<'a>>,
    #[serde(borrow)]
    delta: Obj<Block<'a>>,
    #[serde(borrow)]
    stop_reason: Text<'a>,
    usage: Obj<Usage>,
}

/// Converse `usage`. AWS's `inputTokens` counts only the tokens neither read from nor written
/// to the prompt cache (total input = inputTokens + cacheReadInputTokens +
/// cacheWriteInputTokens, per the Bedrock prompt-caching guide); the semconv input count
/// includes the cached parts, so they are added.
fn apply_usage(u: &Usage, acc: &mut ResponseAcc) {
    let read = u.cache_read_input_tokens.0;
    let written = u.cache_write_input_tokens.0;
    acc.usage.input_tokens = u.input_tokens.0.map(|uncached| {
        uncached
            .saturating_add(read.unwrap_or(0))
            .saturating_add(written.unwrap_or(0))
    });
    acc.usage.output_tokens = u.output_tokens.0;
    acc.usage.cache_read_input_tokens = read;
    acc.usage.cache_creation_input_tokens = written;
}

impl ApiShape for BedrockConverse {
    fn read_request(
        &self,
        body: &[u8],
        with_content: bool,
        params: &mut RequestParams,
    ) -> Result<(), ReadError> {
        let r: ConverseRequest = parse(body)?;
        if let Some(c) = r.inference_config.get() {
            params.temperature = c.temperature.0;
            params.top_p = c.top_p.0;
            params.max_tokens = c.max_tokens.0;
            params.stop_sequences = c.stop_sequences.0.clone();
        }
        params.top_k = r
            .additional_model_request_fields
            .get()
            .and_then(|f| f.top_k.0);
        params.message_hashes = prefix_hashes(&r.messages);
        let mut results = ToolResults::new(with_content);
        for m in each::<RequestMessage>(&r.messages) {
            for block in m.content.iter().filter_map(Obj::get) {
                if let Some(tr) = block.tool_result.get() {
                    results.push(tr.tool_use_id.owned(), None, tr.content);
                }
            }
        }
        results.store(params);
        Ok(())
    }

    fn read_body(&self, body: &[u8], acc: &mut ResponseAcc) -> Result<(), ReadError> {
        let Obj(Some(v)) = parse::<Obj<ConverseResponse>>(body)? else {
            return Ok(());
        };
        if let Some(r) = v.stop_reason.owned() {
            acc.set_finish(0, r);
        }
        let blocks = v
            .output
            .get()
            .and_then(|o| o.message.get())
            .map(|m| &m.content[..])
            .unwrap_or_default();
        for block in blocks.iter().filter_map(Obj::get) {
            acc.push_text(0, block.text.raw(), false);
            if let Some(t) = block
                .reasoning_content
                .get()
                .and_then(|r| r.reasoning_text.get())
            {
                acc.push_text(0, t.text.raw(), true);
            }
            if let Some(tu) = block.tool_use.get() {
                let name = tu.name.owned();
                acc.tool_name(name.clone());
                let args = tu.input.map(RawValue::get).unwrap_or("");
                acc.tool_call(0, None, tu.tool_use_id.owned(), name, args);
            }
        }
        if let Some(u) = v.usage.get() {
            apply_usage(u, acc);
        }
        Ok(())
    }

    fn read_event(
        &self,
        event_type: Option<&str>,
        payload: &[u8],
        ts_ns: u64,
        acc: &mut ResponseAcc,
    ) -> Result<(), ReadError> {
        let Some(event_type) = event_type else {
            // ConverseStream comes as event-stream frames; anything else is unexpected.
            return Err(ReadError::custom(
                "a Converse stream event without a frame type",
            ));
        };
        let Obj(Some(v)) = parse::<Obj<StreamEvent>>(payload)? else {
            return Ok(());
        };
        match event_type {
            "contentBlockStart" => {
                if let Some(tu) = v.start.get().and_then(|s| s.tool_use.get()) {
                    let name = tu.name.owned();
                    acc.tool_name(name.clone());
                    acc.tool_call(0, None, tu.tool_use_id.owned(), name, "");
                }
            }
            "contentBlockDelta" => {
                let Some(d) = v.delta.get() else {
                    return Ok(());
                };
                let mut content = false;
                if let Some(t) = d.text.get() {
                    content = true;
                    acc.push_text(0, t, false);
                }
                if let Some(t) = d.reasoning_content.get().and_then(|r| r.text.get()) {
                    content = true;
                    acc.push_text(0, t, true);
                }
                let piece = d
                    .tool_use
                    .get()
                    .and_then(|tu| tu.input)
                    .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
                    .filter(|t| !t.is_empty());
                if let Some(t) = piece {
                    content = true;
                    acc.append_tool_arguments(&t);
                }
                if content {
                    acc.content_chunk(ts_ns);
                }
            }
            "messageStop" => {
                if let Some(r) = v.stop_reason.owned() {
                    acc.set_finish(0, r);
                }
            }
            "metadata" => {
                if let Some(u) = v.usage.get() {
                    apply_usage(u, acc);
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
    fn input_includes_cache() {
        let mut acc = ResponseAcc::new(false, 0, 0);
        BedrockConverse
            .read_event(
                Some("metadata"),
                br#"{"usage": {"inputTokens": 3, "outputTokens": 5, "cacheReadInputTokens": 100, "cacheWriteInputTokens": 20}}"#,
                1,
                &mut acc,
            )
            .unwrap();
        assert_eq!(acc.usage.input_tokens, Some(123));
        assert_eq!(acc.usage.cache_read_input_tokens, Some(100));
        assert_eq!(acc.usage.cache_creation_input_tokens, Some(20));
        assert!(
            BedrockConverse
                .read_event(None, b"{}", 2, &mut acc)
                .is_err()
        );
    }

    #[test]
    fn params_and_tool_results() {
        let mut p = RequestParams::default();
        BedrockConverse
            .read_request(
                br#"{"inferenceConfig": {"maxTokens": 10, "topP": 0.5, "stopSequences": ["a", "b"]},
                "messages": [{"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "ok"}]}}]}]}"#,
                false,
                &mut p,
            )
            .unwrap();
        assert_eq!((p.max_tokens, p.top_p), (Some(10), Some(0.5)));
        assert_eq!(p.stop_sequences.len(), 2);
        assert_eq!(p.tool_results[0].id.as_deref(), Some("tooluse_1"));
    }
}
