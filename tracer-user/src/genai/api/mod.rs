//! One reader per API shape: request parameters and agent evidence, whole response bodies and
//! stream events, each with its own typed, borrowing `serde` structs that name only the fields
//! llmtap reads (everything else is skipped without allocating; see `wire`).
//!
//! Adding an API is one new file here implementing [`ApiShape`] and one line in [`shape`].

use serde::Deserialize;
use serde_json::value::RawValue;

use super::provider::Api;
use super::record::RequestParams;
use super::response::{BodyError, ResponseAcc};

mod anthropic;
mod bedrock_converse;
mod bedrock_invoke;
mod chat_completions;
mod cohere;
mod completions;
mod embeddings;
mod evidence;
mod gemini;
mod llama_cpp;
mod ollama;
mod realtime;
mod responses;
mod sampling;
pub mod wire;

use wire::{Field, Scalar, Text};

/// Why a body or an event could not be read.
pub type ReadError = serde_json::Error;

/// How one API's JSON is read.
pub trait ApiShape: Sync {
    /// A complete request body: `gen_ai.request.*` parameters, and the agent evidence
    /// (continued response, tool results, history hashes; tool result text when
    /// `with_content`).
    fn read_request(
        &self,
        body: &[u8],
        with_content: bool,
        params: &mut RequestParams,
    ) -> Result<(), ReadError>;

    /// One complete (non-streamed) response object.
    fn read_body(&self, body: &[u8], acc: &mut ResponseAcc) -> Result<(), ReadError>;

    /// One stream event: an SSE `data`, an NDJSON line, a JSON-array element, an AWS
    /// event-stream payload (`event_type` from its frame) or a WebSocket message.
    fn read_event(
        &self,
        event_type: Option<&str>,
        payload: &[u8],
        ts_ns: u64,
        acc: &mut ResponseAcc,
    ) -> Result<(), ReadError>;
}

/// The reader of `api`.
pub fn shape(api: Api) -> &'static dyn ApiShape {
    match api {
        Api::ChatCompletions => &chat_completions::ChatCompletions,
        Api::Completions => &completions::Completions,
        Api::Embeddings => &embeddings::Embeddings,
        Api::Responses => &responses::Responses,
        Api::Realtime => &realtime::Realtime,
        Api::AnthropicMessages => &anthropic::AnthropicMessages,
        Api::GeminiGenerateContent => &gemini::Gemini,
        Api::BedrockConverse => &bedrock_converse::BedrockConverse,
        Api::BedrockInvokeModel => &bedrock_invoke::BedrockInvokeModel,
        Api::OllamaChat => &ollama::OllamaChat,
        Api::OllamaGenerate => &ollama::OllamaGenerate,
        Api::CohereChatV2 => &cohere::CohereChat,
        Api::LlamaCppCompletion => &llama_cpp::LlamaCpp,
    }
}

/// A whole response body: one object, or (Gemini's non-SSE stream) an array of them.
pub fn read_response_body(api: Api, body: &[u8], acc: &mut ResponseAcc) -> Result<(), ReadError> {
    let reader = shape(api);
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let items: Vec<&RawValue> = serde_json::from_slice(body)?;
        for item in items {
            reader.read_body(item.get().as_bytes(), acc)?;
        }
        Ok(())
    } else {
        reader.read_body(body, acc)
    }
}

/// An `error` object: `{"type"|"code"|"status", "message"}`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ErrorDetail<'a> {
    #[serde(rename = "type")]
    kind: Scalar,
    code: Scalar,
    status: Scalar,
    #[serde(borrow)]
    message: Text<'a>,
}

/// The error fields most APIs share: `{"error": {"type"|"code"|"status", "message"}}` or a
/// top-level `message`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ErrorFields<'a> {
    #[serde(borrow)]
    error: Field<ErrorDetail<'a>>,
    #[serde(borrow)]
    message: Text<'a>,
}

impl ErrorFields<'_> {
    /// A non-null `error` was present.
    pub fn failed(&self) -> bool {
        self.error.present
    }

    pub fn to_error(&self) -> BodyError {
        body_error(self.error.obj.as_ref(), &self.message)
    }
}

/// The error's type (`error.type`, else `error.code`, else `error.status`) and message
/// (`error.message`, else the top-level `message`).
pub fn body_error(detail: Option<&ErrorDetail<'_>>, message: &Text<'_>) -> BodyError {
    {
        BodyError {
            error_type: detail.and_then(|d| {
                d.kind
                    .0
                    .clone()
                    .or_else(|| d.code.0.clone())
                    .or_else(|| d.status.0.clone())
            }),
            message: detail
                .and_then(|d| d.message.owned())
                .or_else(|| message.owned()),
        }
    }
}

/// The error of a failed (status ≥ 400) response body, whatever the API.
pub fn read_error_body(body: &[u8]) -> Result<BodyError, ReadError> {
    let fields: wire::Obj<ErrorFields> = serde_json::from_slice(body)?;
    Ok(fields.0.map(|f| f.to_error()).unwrap_or(BodyError {
        error_type: None,
        message: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_type_order() {
        let e = read_error_body(br#"{"error": {"code": 400, "status": "x", "message": "bad"}}"#)
            .unwrap();
        assert_eq!(e.error_type.as_deref(), Some("400"));
        assert_eq!(e.message.as_deref(), Some("bad"));
        let e = read_error_body(br#"{"error": "boom", "message": "m"}"#).unwrap();
        assert_eq!((e.error_type, e.message.as_deref()), (None, Some("m")));
        assert!(read_error_body(b"<html>").is_err());
    }
}
