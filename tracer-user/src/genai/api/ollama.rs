//! Ollama's native API: `/api/chat` and `/api/generate` (NDJSON streams by default).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::chat_completions::tool_messages;
use super::wire::{Count, Field, Flag, Int, List, Num, Obj, Raw, Strings, Text, parse};
use super::{ApiShape, ReadError};
use crate::genai::record::RequestParams;
use crate::genai::response::{BodyError, ResponseAcc};

pub struct OllamaChat;
pub struct OllamaGenerate;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Options {
    temperature: Num,
    top_p: Num,
    top_k: Num,
    num_predict: Count,
    stop: Strings,
    seed: Int,
    frequency_penalty: Num,
    presence_penalty: Num,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OllamaRequest<'a> {
    #[serde(borrow)]
    model: Text<'a>,
    options: Obj<Options>,
    stream: Flag,
    /// `"json"` or a JSON schema object.
    format: Field<serde::de::IgnoredAny>,
    #[serde(borrow)]
    messages: List<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Function<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    arguments: Raw<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolCall<'a> {
    #[serde(borrow)]
    function: Obj<Function<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Message<'a> {
    #[serde(borrow)]
    content: Text<'a>,
    #[serde(borrow)]
    thinking: Text<'a>,
    #[serde(borrow)]
    tool_calls: List<Obj<ToolCall<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OllamaResponse<'a> {
    error: Field<serde::de::IgnoredAny>,
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow)]
    message: Obj<Message<'a>>,
    #[serde(borrow)]
    response: Text<'a>,
    #[serde(borrow)]
    thinking: Text<'a>,
    #[serde(borrow)]
    done_reason: Text<'a>,
    prompt_eval_count: Count,
    eval_count: Count,
}

fn read_request(
    body: &[u8],
    chat: bool,
    with_content: bool,
    params: &mut RequestParams,
) -> Result<(), ReadError> {
    let r: OllamaRequest = parse(body)?;
    params.model = r.model.owned();
    if let Some(o) = r.options.get() {
        params.temperature = o.temperature.0;
        params.top_p = o.top_p.0;
        params.top_k = o.top_k.0;
        params.max_tokens = o.num_predict.0;
        params.stop_sequences = o.stop.0.clone();
        params.seed = o.seed.0;
        params.frequency_penalty = o.frequency_penalty.0;
        params.presence_penalty = o.presence_penalty.0;
    }
    // Ollama streams unless told not to.
    params.stream = r.stream.0.unwrap_or(true);
    if r.format.obj.is_some() || r.format.scalar.as_deref() == Some("json") {
        params.output_type = Some("json".into());
    }
    if chat {
        tool_messages(&r.messages, with_content, params);
    }
    Ok(())
}

fn read(
    bytes: &[u8],
    chat: bool,
    stream_ts: Option<u64>,
    acc: &mut ResponseAcc,
) -> Result<(), ReadError> {
    let Obj(Some(v)) = parse::<Obj<OllamaResponse>>(bytes)? else {
        return Ok(());
    };
    if v.error.present {
        acc.error = Some(BodyError {
            error_type: None,
            message: v.error.scalar.clone(),
        });
        return Ok(());
    }
    acc.first_model(&v.model);
    let mut content = false;
    if chat {
        if let Some(m) = v.message.get() {
            for (text, reasoning) in [(&m.content, false), (&m.thinking, true)] {
                if let Some(t) = text.get() {
                    content = true;
                    acc.push_text(0, t, reasoning);
                }
            }
            content |= !m.tool_calls.is_empty();
            for call in m.tool_calls.iter().filter_map(Obj::get) {
                let f = call.function.get();
                let name = f.and_then(|f| f.name.owned());
                acc.tool_name(name.clone());
                let args = f.and_then(|f| f.arguments).map_or("", RawValue::get);
                acc.tool_call(0, None, None, name, args);
            }
        }
    } else {
        for (text, reasoning) in [(&v.response, false), (&v.thinking, true)] {
            if let Some(t) = text.get() {
                content = true;
                acc.push_text(0, t, reasoning);
            }
        }
    }
    if let Some(ts) = stream_ts
        && content
    {
        acc.content_chunk(ts);
    }
    if let Some(r) = v.done_reason.owned() {
        acc.set_finish(0, r);
    }
    if let Some(n) = v.prompt_eval_count.0 {
        acc.usage.input_tokens = Some(n);
    }
    if let Some(n) = v.eval_count.0 {
        acc.usage.output_tokens = Some(n);
    }
    Ok(())
}

impl ApiShape for OllamaChat {
    fn read_request(
        &self,
        body: &[u8],
        with_content: bool,
        params: &mut RequestParams,
    ) -> Result<(), ReadError> {
        read_request(body, true, with_content, params)
    }

    fn read_body(&self, body: &[u8], acc: &mut ResponseAcc) -> Result<(), ReadError> {
        read(body, true, None, acc)
    }

    fn read_event(
        &self,
        _event_type: Option<&str>,
        payload: &[u8],
        ts_ns: u64,
        acc: &mut ResponseAcc,
    ) -> Result<(), ReadError> {
        read(payload, true, Some(ts_ns), acc)
    }
}

impl ApiShape for OllamaGenerate {
    fn read_request(
        &self,
        body: &[u8],
        with_content: bool,
        params: &mut RequestParams,
    ) -> Result<(), ReadError> {
        read_request(body, false, with_content, params)
    }

    fn read_body(&self, body: &[u8], acc: &mut ResponseAcc) -> Result<(), ReadError> {
        read(body, false, None, acc)
    }

    fn read_event(
        &self,
        _event_type: Option<&str>,
        payload: &[u8],
        ts_ns: u64,
        acc: &mut ResponseAcc,
    ) -> Result<(), ReadError> {
        read(payload, false, Some(ts_ns), acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_defaults_to_streaming() {
        let mut p = RequestParams::default();
        OllamaChat
            .read_request(
                br#"{"model":"llama3","options":{"num_predict":5,"stop":["x"]},"format":{"type":"object"},
                "messages":[{"role":"tool","tool_name":"f","content":"1"}]}"#,
                false,
                &mut p,
            )
            .unwrap();
        assert!(p.stream);
        assert_eq!(
            (p.max_tokens, p.output_type.as_deref()),
            (Some(5), Some("json"))
        );
        assert_eq!(p.tool_results[0].name.as_deref(), Some("f"));
        let mut acc = ResponseAcc::new(true, 64, 4);
        OllamaGenerate
            .read_event(None, br#"{"model":"llama3","response":"hi","done":true,"done_reason":"stop","prompt_eval_count":3,"eval_count":1}"#, 1, &mut acc)
            .unwrap();
        assert_eq!((acc.stream_chunks, acc.usage.input_tokens), (1, Some(3)));
        OllamaGenerate
            .read_body(br#"{"error":"model not found"}"#, &mut acc)
            .unwrap();
        assert_eq!(
            acc.error.unwrap().message.as_deref(),
            Some("model not found")
        );
    }
}
