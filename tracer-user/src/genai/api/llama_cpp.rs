//! llama.cpp server's native `/completion`.

use serde::Deserialize;

use super::wire::{Count, Field, Flag, Int, Num, Obj, Strings, Text, parse};
use super::{ApiShape, ReadError};
use crate::genai::record::RequestParams;
use crate::genai::response::{BodyError, ResponseAcc};

pub struct LlamaCpp;

#[derive(Deserialize, Default)]
#[serde(default)]
struct CompletionRequest<'a> {
    #[serde(borrow)]
    model: Text<'a>,
    temperature: Num,
    top_p: Num,
    top_k: Num,
    n_predict: Count,
    stop: Strings,
    seed: Int,
    frequency_penalty: Num,
    presence_penalty: Num,
    stream: Flag,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorObject<'a> {
    #[serde(borrow, rename = "type")]
    kind: Text<'a>,
    #[serde(borrow)]
    message: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Timings {
    prompt_n: Count,
    predicted_n: Count,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CompletionResponse<'a> {
    #[serde(borrow)]
    error: Field<ErrorObject<'a>>,
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow)]
    content: Text<'a>,
    stop: Flag,
    #[serde(borrow)]
    stop_type: Text<'a>,
    tokens_evaluated: Count,
    tokens_predicted: Count,
    timings: Obj<Timings>,
}

/// A whole response, or one streamed chunk (`content` piece; the last one has `stop: true`
/// with the token counts and `stop_type`).
fn read(bytes: &[u8], stream_ts: Option<u64>, acc: &mut ResponseAcc) -> Result<(), ReadError> {
    let Obj(Some(v)) = parse::<Obj<CompletionResponse>>(bytes)? else {
        return Ok(());
    };
    if v.error.present {
        let e = v.error.obj.as_ref();
        acc.error = Some(BodyError {
            error_type: e.and_then(|e| e.kind.owned()),
            message: e
                .and_then(|e| e.message.owned())
                .or_else(|| v.error.scalar.clone()),
        });
        return Ok(());
    }
    acc.first_model(&v.model);
    if let Some(t) = v.content.get() {
        acc.push_text(0, t, false);
        if let Some(ts) = stream_ts {
            acc.content_chunk(ts);
        }
    }
    if v.stop.0 == Some(true) {
        // `eos` (end of sequence) and `word` (a stop string) end normally; `limit` is
        // n_predict reached.
        match v.stop_type.get() {
            Some("eos" | "word") => acc.set_finish(0, "stop".to_string()),
            Some("limit") => acc.set_finish(0, "length".to_string()),
            _ => {}
        }
    }
    let timings = v.timings.get();
    if let Some(n) = v
        .tokens_evaluated
        .0
        .or_else(|| timings.and_then(|t| t.prompt_n.0))
    {
        acc.usage.input_tokens = Some(n);
    }
    if let Some(n) = v
        .tokens_predicted
        .0
        .or_else(|| timings.and_then(|t| t.predicted_n.0))
    {
        acc.usage.output_tokens = Some(n);
    }
    Ok(())
}

impl ApiShape for LlamaCpp {
    fn read_request(
        &self,
        body: &[u8],
        _with_content: bool,
        params: &mut RequestParams,
    ) -> Result<(), ReadError> {
        let r: CompletionRequest = parse(body)?;
        params.model = r.model.owned();
        params.temperature = r.temperature.0;
        params.top_p = r.top_p.0;
        params.top_k = r.top_k.0;
        // -1 (the default) means no limit.
        params.max_tokens = r.n_predict.0;
        params.stop_sequences = r.stop.0;
        params.seed = r.seed.0.filter(|&s| s >= 0);
        params.frequency_penalty = r.frequency_penalty.0;
        params.presence_penalty = r.presence_penalty.0;
        params.stream = r.stream.0.unwrap_or(false);
        Ok(())
    }

    fn read_body(&self, body: &[u8], acc: &mut ResponseAcc) -> Result<(), ReadError> {
        read(body, None, acc)
    }

    fn read_event(
        &self,
        _event_type: Option<&str>,
        payload: &[u8],
        ts_ns: u64,
        acc: &mut ResponseAcc,
    ) -> Result<(), ReadError> {
        read(payload, Some(ts_ns), acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_end_carries_counts_and_stop_type() {
        let mut p = RequestParams::default();
        LlamaCpp
            .read_request(
                br#"{"n_predict": 64, "seed": -1, "stream": true, "stop": ["</s>"]}"#,
                false,
                &mut p,
            )
            .unwrap();
        assert_eq!((p.max_tokens, p.seed, p.stream), (Some(64), None, true));
        let mut acc = ResponseAcc::new(true, 64, 4);
        LlamaCpp
            .read_event(None, br#"{"content":"Hi","stop":false}"#, 1, &mut acc)
            .unwrap();
        LlamaCpp
            .read_event(
                None,
                br#"{"content":"","stop":true,"stop_type":"limit","model":"m.gguf","timings":{"prompt_n":5,"predicted_n":64}}"#,
                2,
                &mut acc,
            )
            .unwrap();
        assert_eq!(acc.stream_chunks, 1);
        assert_eq!(acc.finish[&0], "length");
        assert_eq!(
            (acc.usage.input_tokens, acc.usage.output_tokens),
            (Some(5), Some(64))
        );
        LlamaCpp
            .read_body(
                br#"{"error":{"type":"invalid_request_error","message":"bad"}}"#,
                &mut acc,
            )
            .unwrap();
        assert_eq!(
            acc.error.unwrap().error_type.as_deref(),
            Some("invalid_request_error")
        );
    }
}
