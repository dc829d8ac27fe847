//! OpenAI legacy Completions (`/v1/completions`): a `prompt` in, chat-style objects out
//! whose choices carry `text` (read by the chat completions reader).

use super::chat_completions::read_chunk;
use super::sampling::{StopKey, sampling_request};
use super::wire::parse;
use super::{ApiShape, ReadError};
use crate::genai::record::RequestParams;
use crate::genai::response::ResponseAcc;

pub struct Completions;

sampling_request!(CompletionsRequest {});

impl ApiShape for Completions {
    fn read_request(
        &self,
        body: &[u8],
        _with_content: bool,
        params: &mut RequestParams,
    ) -> Result<(), ReadError> {
        let r: CompletionsRequest = parse(body)?;
        r.sampling().apply(StopKey::Stop, params);
        Ok(())
    }

    fn read_body(&self, body: &[u8], acc: &mut ResponseAcc) -> Result<(), ReadError> {
        read_chunk(body, None, acc)
    }

    fn read_event(
        &self,
        _event_type: Option<&str>,
        payload: &[u8],
        ts_ns: u64,
        acc: &mut ResponseAcc,
    ) -> Result<(), ReadError> {
        read_chunk(payload, Some(ts_ns), acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_choices() {
        let mut acc = ResponseAcc::new(true, 1024, 8);
        Completions
            .read_body(
                br#"{"id":"cmpl-1","model":"m","choices":[{"index":0,"text":"hi","finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#,
                &mut acc,
            )
            .unwrap();
        assert_eq!(acc.choices[&0].text, "hi");
        assert_eq!(acc.finish[&0], "length");
        assert_eq!(acc.usage.input_tokens, Some(3));
    }
}
