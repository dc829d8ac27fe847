//! Google Gemini `generateContent` / `streamGenerateContent` (AI Studio and Vertex AI).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::evidence::{ToolResults, each, prefix_hashes};
use super::wire::{Count, Field, Flag, Int, List, Num, Obj, Present, Raw, Strings, Text, parse};
use super::{ApiShape, ErrorDetail, ReadError, body_error};
use crate::genai::record::RequestParams;
use crate::genai::response::ResponseAcc;

pub struct Gemini;

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct GenerationConfig<'a> {
    temperature: Num,
    top_p: Num,
    top_k: Num,
    max_output_tokens: Count,
    stop_sequences: Strings,
    seed: Int,
    candidate_count: Count,
    frequency_penalty: Num,
    presence_penalty: Num,
    #[serde(borrow)]
    response_mime_type: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct GenerateRequest<'a> {
    #[serde(borrow)]
    generation_config: Obj<GenerationConfig<'a>>,
    #[serde(borrow)]
    contents: List<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FunctionResponse<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    response: Raw<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RequestPart<'a> {
    #[serde(borrow)]
    function_response: Obj<FunctionResponse<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Content<'a> {
    #[serde(borrow)]
    role: Text<'a>,
    #[serde(borrow)]
    parts: List<Obj<RequestPart<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FunctionCall<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    args: Raw<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Part<'a> {
    #[serde(borrow)]
    text: Text<'a>,
    thought: Flag,
    #[serde(borrow)]
    function_call: Obj<FunctionCall<'a>>,
    executable_code: Present,
    code_execution_result: Present,
    inline_data: Present,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CandidateContent<'a> {
    #[serde(borrow)]
    parts: List<Obj<Part<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Candidate<'a> {
    index: Count,
    #[serde(borrow)]
    finish_reason: Text<'a>,
    #[serde(borrow)]
    content: Obj<CandidateContent<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: Count,
    candidates_token_count: Count,
    thoughts_token_count: Count,
    cached_content_token_count: Count,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct GenerateResponse<'a> {
    #[serde(borrow)]
    error: Field<ErrorDetail<'a>>,
    #[serde(borrow)]
    message: Text<'a>,
    #[serde(borrow)]
    response_id: Text<'a>,
    #[serde(borrow)]
    model_version: Text<'a>,
    #[serde(borrow)]
    candidates: List<Obj<Candidate<'a>>>,
    usage_metadata: Obj<UsageMetadata>,
}

/// A whole body or one stream chunk (`stream_ts`); usage is running, the last one wins.
fn read(bytes: &[u8], stream_ts: Option<u64>, acc: &mut ResponseAcc) -> Result<(), ReadError> {
    let Obj(Some(v)) = parse::<Obj<GenerateResponse>>(bytes)? else {
        return Ok(());
    };
    if v.error.obj.is_some() {
        acc.error = Some(body_error(v.error.obj.as_ref(), &v.message));
        return Ok(());
    }
    acc.first_id(&v.response_id);
    acc.first_model(&v.model_version);
    let mut has_content = false;
    for (i, cand) in v.candidates.iter().enumerate() {
        let Some(cand) = cand.get() else { continue };
        let index = cand.index.0.unwrap_or(i as u64);
        if let Some(r) = cand.finish_reason.owned() {
            acc.set_finish(index, r);
        }
        let parts = cand.content.get().map(|c| &c.parts[..]).unwrap_or_default();
        for part in parts.iter().filter_map(Obj::get) {
            if let Some(t) = part.text.get() {
                has_content = true;
                acc.push_text(index, t, part.thought.0 == Some(true));
            }
            if let Some(fc) = part.function_call.get() {
                has_content = true;
                let name = fc.name.owned();
                acc.tool_name(name.clone());
                let args = fc.args.map(RawValue::get).unwrap_or("");
                acc.tool_call(index, None, fc.id.owned(), name, args);
            }
            if part.executable_code.0 || part.code_execution_result.0 || part.inline_data.0 {
                has_content = true;
            }
        }
    }
    if let Some(ts) = stream_ts
        && has_content
    {
        acc.content_chunk(ts);
    }
    if let Some(u) = v.usage_metadata.get() {
        let candidates = u.candidates_token_count.0;
        let thoughts = u.thoughts_token_count.0;
        acc.usage.input_tokens = u.prompt_token_count.0;
        acc.usage.output_tokens = match (candidates, thoughts) {
            (None, None) => None,
            (c, t) => Some(c.unwrap_or(0).saturating_add(t.unwrap_or(0))),
        };
        acc.usage.cache_read_input_tokens = u.cached_content_token_count.0;
        acc.usage.reasoning_output_tokens = thoughts;
    }
    Ok(())
}

impl ApiShape for Gemini {
    fn read_request(
        &self,
        body: &[u8],
        with_content: bool,
        params: &mut RequestParams,
    ) -> Result<(), ReadError> {
        let r: GenerateRequest = parse(body)?;
        if let Some(g) = r.generation_config.get() {
            params.temperature = g.temperature.0;
            params.top_p = g.top_p.0;
            params.top_k = g.top_k.0;
            params.max_tokens = g.max_output_tokens.0;
            params.stop_sequences = g.stop_sequences.0.clone();
            params.seed = g.seed.0;
            params.choice_count = g.candidate_count.0.filter(|&n| n != 1);
            params.frequency_penalty = g.frequency_penalty.0;
            params.presence_penalty = g.presence_penalty.0;
            params.output_type = match g.response_mime_type.get() {
                Some("application/json") => Some("json".into()),
                Some("text/plain") => Some("text".into()),
                _ => None,
            };
        }
        params.message_hashes = prefix_hashes(&r.contents);
        // Gemini has no call ids (newer models may send one): results are matched by name,
        // so only the parts after the model's last turn count, not the results of earlier
        // rounds that the history repeats.
        let contents = each::<Content>(&r.contents);
        let fresh = contents
            .iter()
            .rposition(|c| c.role.is("model"))
            .map_or(0, |i| i + 1);
        let mut results = ToolResults::new(with_content);
        for content in contents.iter().skip(fresh) {
            for part in content.parts.iter().filter_map(Obj::get) {
                if let Some(fr) = part.function_response.get() {
                    results.push(fr.id.owned(), fr.name.owned(), fr.response);
                }
            }
        }
        results.store(params);
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
    fn params_and_results_after_the_last_model_turn() {
        let mut p = RequestParams::default();
        Gemini
            .read_request(
                br#"{"generationConfig": {"temperature": 0.1, "topK": 40, "maxOutputTokens": 100, "stopSequences": ["x"], "candidateCount": 3},
                "contents": [
                {"role": "user", "parts": [{"text": "weather?"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 1}}}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t":2}}}]}
            ]}"#,
                true,
                &mut p,
            )
            .unwrap();
        assert_eq!(
            (p.temperature, p.top_k, p.max_tokens, p.choice_count),
            (Some(0.1), Some(40.0), Some(100), Some(3))
        );
        assert_eq!(p.stop_sequences, vec!["x"]);
        assert_eq!(p.tool_results.len(), 1);
        assert_eq!(p.tool_results[0].name.as_deref(), Some("get_weather"));
        assert_eq!(p.tool_results[0].content.as_deref(), Some(r#"{"t":2}"#));
    }

    #[test]
    fn output_adds_thoughts() {
        let mut acc = ResponseAcc::new(false, 0, 0);
        Gemini
            .read_body(
                br#"{"usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 10, "thoughtsTokenCount": 7}}"#,
                &mut acc,
            )
            .unwrap();
        assert_eq!(acc.usage.output_tokens, Some(17));
        assert_eq!(acc.usage.reasoning_output_tokens, Some(7));
    }
}
