//! OpenAI Realtime (WebSocket): one call per response; the request is the session's
//! configuration with the `response.create` overrides (built by `genai/websocket.rs`).

use serde::Deserialize;

use super::responses::{EventError, OutputItem, output_item_done};
use super::sampling::{StopKey, sampling_request};
use super::wire::{Count, List, Obj, Text, parse};
use super::{ApiShape, ReadError};
use crate::genai::record::RequestParams;
use crate::genai::response::{BodyError, ResponseAcc};

pub struct Realtime;

sampling_request!(RealtimeRequest {});

#[derive(Deserialize, Default)]
#[serde(default)]
struct StatusDetails<'a> {
    #[serde(borrow)]
    reason: Text<'a>,
    #[serde(borrow)]
    error: Obj<EventError<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct InputDetails {
    cached_tokens: Count,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Usage {
    input_tokens: Count,
    output_tokens: Count,
    input_token_details: Obj<InputDetails>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RealtimeResponse<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    status: Text<'a>,
    #[serde(borrow)]
    status_details: Obj<StatusDetails<'a>>,
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
    response: Obj<RealtimeResponse<'a>>,
    #[serde(borrow)]
    item: Obj<OutputItem<'a>>,
    #[serde(borrow)]
    error: Obj<EventError<'a>>,
}

/// The `response` of `response.done`: status, usage, tool calls.
fn read_done(r: &RealtimeResponse<'_>, acc: &mut ResponseAcc) {
    if let Some(id) = r.id.owned() {
        acc.id = Some(id);
    }
    let mut has_function_call = false;
    for item in r.output.iter().filter_map(Obj::get) {
        if item.kind.is("function_call") {
            has_function_call = true;
            acc.tool_name(item.name.owned());
        }
    }
    let details = r.status_details.get();
    let finish = match r.status.get() {
        Some("completed") if has_function_call => Some("tool_call".to_string()),
        Some("completed") => Some("stop".to_string()),
        Some("incomplete") => Some(match details.and_then(|d| d.reason.get()) {
            Some("max_output_tokens") => "length".to_string(),
            Some(x) => x.to_string(),
            None => "incomplete".to_string(),
        }),
        Some("cancelled") => Some("cancelled".to_string()),
        Some("failed") => Some("error".to_string()),
        _ => None,
    };
    if let Some(f) = finish {
        acc.set_finish(0, f);
    }
    if r.status.is("failed") {
        acc.error = Some(
            details
                .and_then(|d| d.error.get())
                .map(EventError::to_error)
                .unwrap_or(BodyError {
                    error_type: None,
                    message: None,
                }),
        );
    }
    if let Some(u) = r.usage.get() {
        acc.usage.input_tokens = u.input_tokens.0;
        acc.usage.output_tokens = u.output_tokens.0;
        acc.usage.cache_read_input_tokens =
            u.input_token_details.get().and_then(|d| d.cached_tokens.0);
    }
}

impl ApiShape for Realtime {
    fn read_request(
        &self,
        body: &[u8],
        _with_content: bool,
        params: &mut RequestParams,
    ) -> Result<(), ReadError> {
        let r: RealtimeRequest = parse(body)?;
        r.sampling().apply(StopKey::Stop, params);
        Ok(())
    }

    /// Realtime responses only come as WebSocket events.
    fn read_body(&self, body: &[u8], acc: &mut ResponseAcc) -> Result<(), ReadError> {
        self.read_event(None, body, 0, acc)
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
        match v.kind.raw() {
            "response.text.delta"
            | "response.output_text.delta"
            | "response.audio_transcript.delta"
            | "response.output_audio_transcript.delta" => {
                if let Some(d) = v.delta.get() {
                    acc.content_chunk(ts_ns);
                    // The transcript of spoken output is the text of the output.
                    acc.push_text(0, d, false);
                }
            }
            "response.function_call_arguments.delta" if v.delta.get().is_some() => {
                acc.content_chunk(ts_ns);
            }
            "response.created" => {
                if let Some(r) = v.response.get() {
                    acc.first_id(&r.id);
                }
            }
            "response.output_item.done" => output_item_done(v.item.get(), acc),
            "response.done" => {
                acc.stream_finished = true;
                if let Some(r) = v.response.get() {
                    read_done(r, acc);
                }
            }
            "error" => {
                acc.error = Some(
                    v.error
                        .get()
                        .map(EventError::to_error)
                        .unwrap_or(BodyError {
                            error_type: None,
                            message: None,
                        }),
                );
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
    fn a_response_from_created_to_done() {
        let mut acc = ResponseAcc::new(true, 1024, 8);
        let ev = |acc: &mut ResponseAcc, j: &str, ts| {
            Realtime.read_event(None, j.as_bytes(), ts, acc).unwrap()
        };
        ev(
            &mut acc,
            r#"{"type":"response.created","response":{"id":"resp_1","status":"in_progress"}}"#,
            1,
        );
        ev(
            &mut acc,
            r#"{"type":"response.output_audio_transcript.delta","response_id":"resp_1","delta":"Hello"}"#,
            2,
        );
        ev(
            &mut acc,
            r#"{"type":"response.function_call_arguments.delta","response_id":"resp_1","delta":"{}"}"#,
            3,
        );
        ev(
            &mut acc,
            r#"{"type":"response.done","response":{"id":"resp_1","status":"incomplete","status_details":{"reason":"max_output_tokens"},"output":[],"usage":{"input_tokens":20,"output_tokens":7,"input_token_details":{"cached_tokens":4}}}}"#,
            4,
        );
        assert_eq!(acc.id.as_deref(), Some("resp_1"));
        assert_eq!((acc.first_chunk_ns, acc.stream_chunks), (Some(2), 2));
        assert_eq!(acc.choices[&0].text, "Hello");
        assert_eq!(acc.finish[&0], "length");
        assert_eq!(acc.usage.cache_read_input_tokens, Some(4));
        assert!(acc.stream_finished);
        ev(
            &mut acc,
            r#"{"type":"error","error":{"type":"invalid_request_error","code":"bad_value","message":"m"}}"#,
            5,
        );
        assert_eq!(acc.error.unwrap().error_type.as_deref(), Some("bad_value"));
    }
}
