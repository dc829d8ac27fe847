//! The top-level sampling parameters the OpenAI-style APIs share (`model`, `temperature`,
//! `max_tokens`, ...). An API's request struct is declared with [`sampling_request!`], which
//! adds these fields to its own, so the body is read in one pass.

use serde::Deserialize;

use super::wire::{Count, Field, Flag, Int, Num, Obj, Strings, Text};
use crate::genai::record::RequestParams;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct IdOnly<'a> {
    #[serde(borrow)]
    pub id: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TypeOnly<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Text<'a>,
}

/// Responses' `text: {format: {type}}`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TextConfig<'a> {
    #[serde(borrow)]
    pub format: Obj<TypeOnly<'a>>,
}

/// Declares an API's request struct: the shared sampling fields plus the listed ones.
macro_rules! sampling_request {
    ($(#[$sm:meta])* $name:ident { $($(#[$m:meta])* $f:ident : $t:ty),* $(,)? }) => {
        $(#[$sm])*
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        pub(super) struct $name<'a> {
            #[serde(borrow)]
            pub model: $crate::genai::api::wire::Text<'a>,
            pub temperature: $crate::genai::api::wire::Num,
            pub top_p: $crate::genai::api::wire::Num,
            pub p: $crate::genai::api::wire::Num,
            pub top_k: $crate::genai::api::wire::Num,
            pub k: $crate::genai::api::wire::Num,
            pub max_tokens: $crate::genai::api::wire::Count,
            pub max_completion_tokens: $crate::genai::api::wire::Count,
            pub max_output_tokens: $crate::genai::api::wire::Count,
            pub stop: $crate::genai::api::wire::Strings,
            pub stop_sequences: $crate::genai::api::wire::Strings,
            pub seed: $crate::genai::api::wire::Int,
            pub n: $crate::genai::api::wire::Count,
            pub frequency_penalty: $crate::genai::api::wire::Num,
            pub presence_penalty: $crate::genai::api::wire::Num,
            pub stream: $crate::genai::api::wire::Flag,
            pub encoding_format: $crate::genai::api::wire::Strings,
            #[serde(borrow)]
            pub service_tier: $crate::genai::api::wire::Text<'a>,
            #[serde(borrow)]
            pub conversation:
                $crate::genai::api::wire::Field<$crate::genai::api::sampling::IdOnly<'a>>,
            #[serde(borrow)]
            pub response_format:
                $crate::genai::api::wire::Obj<$crate::genai::api::sampling::TypeOnly<'a>>,
            #[serde(borrow)]
            pub text: $crate::genai::api::wire::Obj<$crate::genai::api::sampling::TextConfig<'a>>,
            #[serde(borrow)]
            pub previous_response_id: $crate::genai::api::wire::Text<'a>,
            $($(#[$m])* pub $f: $t,)*
        }

        impl<'a> $name<'a> {
            fn sampling(&self) -> $crate::genai::api::sampling::Sampling<'_, 'a> {
                $crate::genai::api::sampling::Sampling {
                    model: &self.model,
                    temperature: self.temperature,
                    top_p: self.top_p,
                    p: self.p,
                    top_k: self.top_k,
                    k: self.k,
                    max_tokens: self.max_tokens,
                    max_completion_tokens: self.max_completion_tokens,
                    max_output_tokens: self.max_output_tokens,
                    stop: &self.stop,
                    stop_sequences: &self.stop_sequences,
                    seed: self.seed,
                    n: self.n,
                    frequency_penalty: self.frequency_penalty,
                    presence_penalty: self.presence_penalty,
                    stream: self.stream,
                    encoding_format: &self.encoding_format,
                    service_tier: &self.service_tier,
                    conversation: &self.conversation,
                    response_format: &self.response_format,
                    text: &self.text,
                    previous_response_id: &self.previous_response_id,
                }
            }
        }
    };
}
pub(super) use sampling_request;

/// A view of the shared fields of one request.
pub struct Sampling<'r, 'a> {
    pub model: &'r Text<'a>,
    pub temperature: Num,
    pub top_p: Num,
    pub p: Num,
    pub top_k: Num,
    pub k: Num,
    pub max_tokens: Count,
    pub max_completion_tokens: Count,
    pub max_output_tokens: Count,
    pub stop: &'r Strings,
    pub stop_sequences: &'r Strings,
    pub seed: Int,
    pub n: Count,
    pub frequency_penalty: Num,
    pub presence_penalty: Num,
    pub stream: Flag,
    pub encoding_format: &'r Strings,
    pub service_tier: &'r Text<'a>,
    pub conversation: &'r Field<IdOnly<'a>>,
    pub response_format: &'r Obj<TypeOnly<'a>>,
    pub text: &'r Obj<TextConfig<'a>>,
    pub previous_response_id: &'r Text<'a>,
}

/// Which field holds the stop sequences.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum StopKey {
    /// `stop` (OpenAI and compatible).
    Stop,
    /// `stop_sequences` (Anthropic, Cohere).
    StopSequences,
    /// Either (Bedrock InvokeModel carries each model provider's own body).
    Either,
}

impl Sampling<'_, '_> {
    /// Fills the shared `gen_ai.request.*` parameters.
    pub fn apply(&self, stop_key: StopKey, params: &mut RequestParams) {
        params.model = self.model.owned();
        params.temperature = self.temperature.0;
        params.top_p = self.top_p.0.or(self.p.0);
        params.top_k = self.top_k.0.or(self.k.0);
        params.max_tokens = self
            .max_tokens
            .0
            .or(self.max_completion_tokens.0)
            .or(self.max_output_tokens.0);
        params.stop_sequences = match stop_key {
            StopKey::Stop => self.stop.0.clone(),
            StopKey::StopSequences => self.stop_sequences.0.clone(),
            StopKey::Either if self.stop_sequences.0.is_empty() => self.stop.0.clone(),
            StopKey::Either => self.stop_sequences.0.clone(),
        };
        params.seed = self.seed.0;
        params.choice_count = self.n.0.filter(|&n| n != 1);
        params.frequency_penalty = self.frequency_penalty.0;
        params.presence_penalty = self.presence_penalty.0;
        params.stream = self.stream.0.unwrap_or(false);
        params.encoding_formats = self.encoding_format.0.clone();
        params.service_tier = self.service_tier.owned();
        params.conversation_id = self
            .conversation
            .scalar
            .clone()
            .or_else(|| self.conversation.obj.as_ref().and_then(|c| c.id.owned()));
        let format = self
            .response_format
            .get()
            .and_then(|f| f.kind.get())
            .or_else(|| {
                self.text
                    .get()
                    .and_then(|t| t.format.get())
                    .and_then(|f| f.kind.get())
            });
        params.output_type = match format {
            Some("json_object" | "json_schema") => Some("json".into()),
            Some("text") => Some("text".into()),
            _ => None,
        };
        params.previous_response_id = self.previous_response_id.owned();
    }
}
