//! OpenAI Responses (`/v1/responses`, also over WebSocket): `input` items in, a `response`
//! object or its stream events out.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::evidence::{ToolResults, each, prefix_hashes};
use super::sampling::{StopKey, sampling_request};
use super::wire::{Count, List, Obj, Raw, Scalar, Text, parse};
use super::{ApiShape, ReadError};
use crate::genai::record::RequestParams;
use crate::genai::response::{BodyError, ResponseAcc};

pub struct Responses;

sampling_request!(ResponsesRequest {
    #[serde(borrow)]
    input: Raw<'a>,
});

#[derive(Deserialize, Default)]
#[serde(default)]
struct InputItem<'a> {
    #[serde(borrow, rename = "type")]
    kind: Text<'a>,
    #[serde(borrow)]
    call_id: Text<'a>,
    #[serde(borrow)]
    output: Raw<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TextPart<'a> {
    #[serde(borrow)]
    text: Text<'a>,
}

/// One item of a response's `output` (also `response.output_item.done`'s `item`).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct OutputItem<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Text<'a>,
    #[serde(borrow)]
    pub name: Text<'a>,
    #[serde(borrow)]
    call_id: Text<'a>,
    #[serde(borrow)]
    arguments: Text<'a>,
    #[serde(borrow)]
    content: List<Obj<TextPart<'a>>>,
    #[serde(borrow)]
    summary: List<Obj<TextPart<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Reason<'a> {
    #[serde(borrow)]
    reason: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct EventError<'a> {
    code: Scalar,
    #[serde(borrow, rename = "type")]
    kind: Text<'a>,
    #[serde(borrow)]
    message: Text<'a>,
}

impl EventError<'_> {
    pub(super) fn to_error(&self) -> BodyError {
        BodyError {
            error_type: self.code.0.clone().or_else(|| self.kind.owned()),
            message: self.message.owned(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct InputDetails {
    cached_tokens: Count,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OutputDetails {
    reasoning_tokens: Count,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Usage {
    input_tokens: Count,
    output_tokens: Count,
    input_tokens_details: Obj<InputDetails>,
    output_tokens_details: Obj<OutputDetails>,
}

/// The `response` object (a non-streamed body, or the terminal event's `response`).
#[derive(Deserialize, Default)]
#[serde(default)]
struct ResponseObject<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow)]
    service_tier: Text<'a>,
    #[serde(borrow)]
    status: Text<'a>,
    #[serde(borrow)]
    incomplete_details: Obj<Reason<'a>>,
    #[serde(borrow)]
    error: Obj<EventError<'a>>,
    #[serde(borrow)]
    output: List<Obj<OutputItem<'a>>>,
    usage: Obj<Usage>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Event<'a> {
    #[serde(borrow, rename = "type")]
    kind: Text<'a>,
    #[serde(borrow)]
    delta: Text<'a>,
    #[serde(borrow)]
    response: Obj<ResponseObject<'a>>,
    #[serde(borrow)]
    item: Obj<OutputItem<'a>>,
    code: Scalar,
    #[serde(borrow)]
    message: Text<'a>,
    #[serde(borrow)]
    error: Obj<EventError<'a>>,
}

/// A finished function call (`response.output_item.done`, Responses and Realtime alike).
pub(super) fn output_item_done(item: Option<&OutputItem<'_>>, acc: &mut ResponseAcc) {
    if let Some(item) = item
        && item.kind.is("function_call")
    {
        acc.tool_call(
            0,
            None,
            item.call_id.owned(),
            item.name.owned(),
            item.arguments.raw(),
        );
    }
}

fn read_response_object(r: &ResponseObject<'_>, acc: &mut ResponseAcc) {
    if let Some(id) = r.id.owned() {
        acc.id = Some(id);
    }
    if let Some(m) = r.model.owned() {
        acc.model = Some(m);
    }
    if let Some(t) = r.service_tier.owned() {
        acc.service_tier = Some(t);
    }
    let output: Vec<&OutputItem> = r.output.iter().filter_map(Obj::get).collect();
    let has_function_call = output.iter().any(|o| o.kind.is("function_call"));
    let reason = match r.status.get() {
        Some("completed") if has_function_call => Some("tool_call".to_string()),
        Some("completed") => Some("stop".to_string()),
        Some("incomplete") => Some(
            match r.incomplete_details.get().and_then(|d| d.reason.get()) {
                Some("max_output_tokens") => "length".to_string(),
                Some(x) => x.to_string(),
                None => "incomplete".to_string(),
            },
        ),
        Some("failed") => Some("error".to_string()),
        _ => None,
    };
    if let Some(reason) = reason {
        acc.set_finish(0, reason);
    }
    if r.status.is("failed") {
        let e = r.error.get();
        acc.error = Some(BodyError {
            error_type: e.and_then(|e| e.code.0.clone().or_else(|| e.kind.owned())),
            message: e.and_then(|e| e.message.owned()),
        });
    }
    // Output content: only from the full object when nothing was streamed.
    let streamed = acc.stream_chunks > 0;
    for item in output {
        match item.kind.get() {
            Some("function_call") => {
                let name = item.name.owned();
                acc.tool_name(name.clone());
                if !streamed {
                    acc.tool_call(0, None, item.call_id.owned(), name, item.arguments.raw());
                }
            }
            Some("message") if !streamed => {
                for part in item.content.iter().filter_map(Obj::get) {
                    acc.push_text(0, part.text.raw(), false);
                }
            }
            Some("reasoning") if !streamed => {
                for s in item.summary.iter().filter_map(Obj::get) {
                    acc.push_text(0, s.text.raw(), true);
                }
            }
            _ => {}
        }
    }
    if let Some(u) = r.usage.get() {
        acc.usage.input_tokens = u.input_tokens.0;
        acc.usage.output_tokens = u.output_tokens.0;
        acc.usage.cache_read_input_tokens =
            u.input_tokens_details.get().and_then(|d| d.cached_tokens.0);
        acc.usage.reasoning_output_tokens = u
            .output_tokens_details
            .get()
            .and_then(|d| d.reasoning_tokens.0);
    }
}

impl ApiShape for Responses {
    fn read_request(
        &self,
        body: &[u8],
        with_content: bool,
        params: &mut RequestParams,
    ) -> Result<(), ReadError> {
        let r: ResponsesRequest = parse(body)?;
        r.sampling().apply(StopKey::Stop, params);
        // `input` is a string (one user message) or a list of items.
        let items: Vec<&RawValue> = match r.input {
            Some(raw) if raw.get().starts_with('[') => serde_json::from_str(raw.get())?,
            Some(raw) if raw.get() != "null" => vec![raw],
            _ => Vec::new(),
        };
        params.message_hashes = prefix_hashes(&items);
        let mut results = ToolResults::new(with_content);
        for item in each::<InputItem>(&items) {
            if item.kind.is("function_call_output") {
                results.push(item.call_id.owned(), None, item.output);
            }
        }
        results.store(params);
        Ok(())
    }

    fn read_body(&self, body: &[u8], acc: &mut ResponseAcc) -> Result<(), ReadError> {
        if let Obj(Some(r)) = parse::<Obj<ResponseObject>>(body)? {
            read_response_object(&r, acc);
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
        let kind = v.kind.raw();
        if kind.ends_with(".delta") {
            if let Some(d) = v.delta.get() {
                acc.content_chunk(ts_ns);
                if kind == "response.output_text.delta" || kind == "response.refusal.delta" {
                    acc.push_text(0, d, false);
                } else if kind.starts_with("response.reasoning") {
                    acc.push_text(0, d, true);
                }
            }
            return Ok(());
        }
        match kind {
            "response.created" | "response.in_progress" => {
                if let Some(r) = v.response.get() {
                    acc.first_id(&r.id);
                    acc.first_model(&r.model);
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                acc.stream_finished = true;
                if let Some(r) = v.response.get() {
                    read_response_object(r, acc);
                }
            }
            "response.output_item.done" => output_item_done(v.item.get(), acc),
            "error" => {
                // SSE puts `code` and `message` at the top; the WebSocket form nests them in
                // `error` (beside the HTTP-like `status`).
                let nested = v.error.get();
                acc.error = Some(BodyError {
                    error_type: v
                        .code
                        .0
                        .clone()
                        .or_else(|| nested.and_then(|e| e.code.0.clone()))
                        .or_else(|| nested.and_then(|e| e.kind.owned())),
                    message: v
                        .message
                        .owned()
                        .or_else(|| nested.and_then(|e| e.message.owned())),
                });
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
    fn request_evidence() {
        let mut p = RequestParams::default();
        Responses
            .read_request(
                br#"{"model":"gpt-5","previous_response_id":"resp_1","max_output_tokens":9,"text":{"format":{"type":"json_schema"}},
                    "input":[{"type":"function_call_output","call_id":"fc_1","output":{"t":1}}]}"#,
                false,
                &mut p,
            )
            .unwrap();
        assert_eq!(p.previous_response_id.as_deref(), Some("resp_1"));
        assert_eq!(p.max_tokens, Some(9));
        assert_eq!(p.output_type.as_deref(), Some("json"));
        assert_eq!(p.tool_results[0].id.as_deref(), Some("fc_1"));
        assert_eq!(
            p.tool_results[0].content, None,
            "content only when captured"
        );
        let mut p = RequestParams::default();
        Responses
            .read_request(br#"{"input":"hello"}"#, false, &mut p)
            .unwrap();
        assert_eq!(p.message_hashes.len(), 1);
    }

    #[test]
    fn stream_events() {
        let mut acc = ResponseAcc::new(true, 1024, 8);
        let ev = |acc: &mut ResponseAcc, j: &str, ts| {
            Responses.read_event(None, j.as_bytes(), ts, acc).unwrap()
        };
        ev(
            &mut acc,
            r#"{"type":"response.created","response":{"id":"resp_1","model":"gpt-5"}}"#,
            1,
        );
        ev(
            &mut acc,
            r#"{"type":"response.output_text.delta","delta":"Hi"}"#,
            2,
        );
        ev(
            &mut acc,
            r#"{"type":"response.output_item.done","item":{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"}}"#,
            3,
        );
        ev(
            &mut acc,
            r#"{"type":"response.completed","response":{"id":"resp_1","status":"completed","output":[{"type":"function_call","name":"f","call_id":"c1"}],"usage":{"input_tokens":5,"output_tokens":2,"input_tokens_details":{"cached_tokens":1}}}}"#,
            4,
        );
        assert_eq!(acc.id.as_deref(), Some("resp_1"));
        assert_eq!(acc.first_chunk_ns, Some(2));
        assert_eq!(acc.finish[&0], "tool_call");
        assert_eq!(
            acc.choices[&0].tool_calls.len(),
            1,
            "streamed calls are not added twice"
        );
        assert_eq!(acc.usage.cache_read_input_tokens, Some(1));
        assert!(acc.stream_finished);
        ev(
            &mut acc,
            r#"{"type":"error","code":429,"message":"slow down"}"#,
            5,
        );
        assert_eq!(
            acc.error.as_ref().unwrap().error_type.as_deref(),
            Some("429")
        );
    }
}
