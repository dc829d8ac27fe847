//! Amazon Bedrock InvokeModel and InvokeModelWithResponseStream: the body is the model
//! provider's own format (Anthropic's for Claude, read by `anthropic`); Bedrock adds its own
//! token counts on the stream's last frame.

use base64::Engine as _;
use serde::Deserialize;

use super::anthropic;
use super::sampling::StopKey;
use super::wire::{Count, Obj, Text, parse};
use super::{ApiShape, ReadError};
use crate::genai::provider::Api;
use crate::genai::record::RequestParams;
use crate::genai::response::ResponseAcc;

pub struct BedrockInvokeModel;

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct InvocationMetrics {
    input_token_count: Count,
    output_token_count: Count,
    cache_read_input_token_count: Count,
    cache_write_input_token_count: Count,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NativeBody<'a> {
    #[serde(borrow, rename = "type")]
    kind: Text<'a>,
    #[serde(rename = "amazon-bedrock-invocationMetrics")]
    metrics: Obj<InvocationMetrics>,
}

/// An event-stream `chunk` frame: the native event, base64-encoded.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Chunk<'a> {
    #[serde(borrow)]
    bytes: Text<'a>,
}

/// Bedrock's own counts. They exclude prompt-cache reads and writes (like Converse's
/// `inputTokens`), so they only fill what the model's native body did not report: an
/// Anthropic body's cache-inclusive count is kept.
fn apply_metrics(m: &InvocationMetrics, acc: &mut ResponseAcc) {
    if acc.usage.input_tokens.is_none() {
        let read = m.cache_read_input_token_count.0;
        let written = m.cache_write_input_token_count.0;
        acc.usage.input_tokens = m.input_token_count.0.map(|uncached| {
            uncached
                .saturating_add(read.unwrap_or(0))
                .saturating_add(written.unwrap_or(0))
        });
        if acc.usage.input_tokens.is_some() {
            acc.usage.cache_read_input_tokens = read;
            acc.usage.cache_creation_input_tokens = written;
        }
    }
    if acc.usage.output_tokens.is_none() {
        acc.usage.output_tokens = m.output_token_count.0;
    }
}

/// One native body or stream event (`stream_ts`).
fn read_native(
    bytes: &[u8],
    stream_ts: Option<u64>,
    acc: &mut ResponseAcc,
) -> Result<(), ReadError> {
    let Obj(Some(v)) = parse::<Obj<NativeBody>>(bytes)? else {
        return Ok(());
    };
    let kind = v.kind.raw();
    let is_anthropic = kind == "message"
        || kind.starts_with("message_")
        || kind.starts_with("content_block")
        || acc.native == Some(Api::AnthropicMessages);
    if is_anthropic {
        acc.native = Some(Api::AnthropicMessages);
        match stream_ts {
            Some(ts) => anthropic::read_event(bytes, ts, acc)?,
            None => anthropic::read_body(bytes, acc)?,
        }
    }
    if let Some(m) = v.metrics.get() {
        apply_metrics(m, acc);
    }
    Ok(())
}

impl ApiShape for BedrockInvokeModel {
    fn read_request(
        &self,
        body: &[u8],
        with_content: bool,
        params: &mut RequestParams,
    ) -> Result<(), ReadError> {
        anthropic::read_request(body, StopKey::Either, with_content, params)
    }

    fn read_body(&self, body: &[u8], acc: &mut ResponseAcc) -> Result<(), ReadError> {
        read_native(body, None, acc)
    }

    fn read_event(
        &self,
        event_type: Option<&str>,
        payload: &[u8],
        ts_ns: u64,
        acc: &mut ResponseAcc,
    ) -> Result<(), ReadError> {
        match event_type {
            // An event-stream frame: the native event is base64 in `bytes`.
            Some("chunk") => {
                let Obj(Some(chunk)) = parse::<Obj<Chunk>>(payload)? else {
                    return Ok(());
                };
                let inner = base64::engine::general_purpose::STANDARD
                    .decode(chunk.bytes.raw())
                    .map_err(|e| {
                        <ReadError as serde::de::Error>::custom(format!("chunk bytes: {e}"))
                    })?;
                read_native(&inner, Some(ts_ns), acc)
            }
            Some(_) => Ok(()),
            None => read_native(payload, Some(ts_ns), acc),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_do_not_overwrite_anthropic_usage() {
        let mut acc = ResponseAcc::new(false, 0, 0);
        let ev = |acc: &mut ResponseAcc, j: &str, ts| {
            BedrockInvokeModel
                .read_event(None, j.as_bytes(), ts, acc)
                .unwrap()
        };
        ev(
            &mut acc,
            r#"{"type": "message_start", "message": {"id": "m", "model": "claude", "usage": {"input_tokens": 4, "cache_read_input_tokens": 100, "output_tokens": 1}}}"#,
            1,
        );
        ev(
            &mut acc,
            r#"{"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 30}}"#,
            2,
        );
        ev(
            &mut acc,
            r#"{"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 4, "outputTokenCount": 30, "cacheReadInputTokenCount": 100}}"#,
            3,
        );
        assert_eq!(acc.usage.input_tokens, Some(104));
        assert_eq!(acc.usage.output_tokens, Some(30));
    }

    #[test]
    fn metrics_fill_missing_usage() {
        let mut acc = ResponseAcc::new(false, 0, 0);
        let frame = base64::engine::general_purpose::STANDARD.encode(
            br#"{"generation": "hi", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 7, "outputTokenCount": 2, "cacheWriteInputTokenCount": 3}}"#,
        );
        BedrockInvokeModel
            .read_event(
                Some("chunk"),
                format!(r#"{{"bytes": "{frame}"}}"#).as_bytes(),
                1,
                &mut acc,
            )
            .unwrap();
        assert_eq!(acc.usage.input_tokens, Some(10));
        assert_eq!(acc.usage.cache_creation_input_tokens, Some(3));
        assert_eq!(acc.usage.output_tokens, Some(2));
    }
}
