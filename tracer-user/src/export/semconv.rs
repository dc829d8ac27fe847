//! Which GenAI semantic conventions llmtap emits: v1.41 by default, or the newer, still
//! experimental ones of `semantic-conventions-genai` when `OTEL_SEMCONV_STABILITY_OPT_IN` lists
//! `gen_ai_latest_experimental` (OpenTelemetry's own switch for opting into newer conventions).
//!
//! What the newer conventions rename (docs: genai-semconv.md §8, landscape.md "Update,
//! 2026-12"):
//! - span attribute `gen_ai.usage.cache_creation.input_tokens` → `gen_ai.usage.cache_write.input_tokens`;
//! - `gen_ai.request.top_k` becomes an integer;
//! - the call's cost: `gen_ai.usage.cost.amount` with `gen_ai.usage.cost.currency` instead of
//!   llmtap's `llmtap.usage.cost_usd`;
//! - inference metrics (every operation but embeddings): `gen_ai.client.operation.duration` →
//!   `gen_ai.client.inference.duration`, TTFC/TPOC → `gen_ai.client.inference.time_to_first_chunk`
//!   / `…time_per_output_chunk`, and `gen_ai.client.token.usage` → one counter per kind of token
//!   (`gen_ai.client.inference.usage.{input_tokens, output_tokens, cache_read.input_tokens,
//!   cache_write.input_tokens, reasoning.output_tokens}`, with `gen_ai.token.modality`) plus the
//!   per-call histograms `gen_ai.client.inference.operation.{input_tokens, output_tokens}`.

use std::collections::HashMap;

use super::attributes::{AttrValue, Attributes, keys};
use crate::genai::Operation;

/// The variable OpenTelemetry reads for convention opt-ins (comma-separated values).
pub const OPT_IN_VARIABLE: &str = "OTEL_SEMCONV_STABILITY_OPT_IN";
/// Its value for the latest experimental GenAI conventions.
pub const GEN_AI_LATEST_EXPERIMENTAL: &str = "gen_ai_latest_experimental";

/// Names of the newer conventions.
pub mod latest {
    pub const USAGE_CACHE_WRITE_INPUT_TOKENS: &str = "gen_ai.usage.cache_write.input_tokens";
    pub const USAGE_COST_AMOUNT: &str = "gen_ai.usage.cost.amount";
    pub const USAGE_COST_CURRENCY: &str = "gen_ai.usage.cost.currency";
    pub const TOKEN_MODALITY: &str = "gen_ai.token.modality";

    pub const INFERENCE_DURATION: &str = "gen_ai.client.inference.duration";
    pub const INFERENCE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.client.inference.time_to_first_chunk";
    pub const INFERENCE_TIME_PER_OUTPUT_CHUNK: &str =
        "gen_ai.client.inference.time_per_output_chunk";
    pub const USAGE_INPUT_TOKENS: &str = "gen_ai.client.inference.usage.input_tokens";
    pub const USAGE_OUTPUT_TOKENS: &str = "gen_ai.client.inference.usage.output_tokens";
    pub const USAGE_CACHE_READ_INPUT_TOKENS: &str =
        "gen_ai.client.inference.usage.cache_read.input_tokens";
    pub const USAGE_CACHE_WRITE_INPUT_TOKENS_METRIC: &str =
        "gen_ai.client.inference.usage.cache_write.input_tokens";
    pub const USAGE_REASONING_OUTPUT_TOKENS: &str =
        "gen_ai.client.inference.usage.reasoning.output_tokens";
    pub const OPERATION_INPUT_TOKENS: &str = "gen_ai.client.inference.operation.input_tokens";
    pub const OPERATION_OUTPUT_TOKENS: &str = "gen_ai.client.inference.operation.output_tokens";
}

/// The conventions in force.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Semconv {
    /// Semantic conventions v1.41 (the last release with GenAI in the main repository).
    #[default]
    V1_41,
    /// `OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`.
    LatestExperimental,
}

impl Semconv {
    /// From `OTEL_SEMCONV_STABILITY_OPT_IN`: a comma-separated list (blanks around each value
    /// ignored); values for other areas (`http`, `database/dup`, ...) are not llmtap's concern.
    pub fn from_env(env: &HashMap<String, String>) -> Self {
        let listed = env.get(OPT_IN_VARIABLE).is_some_and(|value| {
            value
                .split(',')
                .any(|item| item.trim() == GEN_AI_LATEST_EXPERIMENTAL)
        });
        if listed {
            Semconv::LatestExperimental
        } else {
            Semconv::V1_41
        }
    }

    pub fn is_latest(self) -> bool {
        self == Semconv::LatestExperimental
    }
}

/// The newer conventions' metrics cover inference; embeddings keep the v1.41 ones.
pub fn is_inference(operation: Operation) -> bool {
    operation != Operation::Embeddings
}

/// A call's span attributes (built in v1.41 names) in the conventions in force.
pub fn span_attributes(attributes: Attributes, semconv: Semconv) -> Attributes {
    if !semconv.is_latest() {
        return attributes;
    }
    let mut out = Vec::with_capacity(attributes.len() + 1);
    for (key, value) in attributes {
        match (key, value) {
            (keys::USAGE_CACHE_CREATION_INPUT_TOKENS, v) => {
                out.push((latest::USAGE_CACHE_WRITE_INPUT_TOKENS, v));
            }
            // An integer now; a value with a fraction (not a valid top_k) stays as read.
            (keys::REQUEST_TOP_K, AttrValue::Double(d)) if d.fract() == 0.0 && d.abs() < 9.0e15 => {
                out.push((keys::REQUEST_TOP_K, AttrValue::Int(d as i64)));
            }
            (keys::LLMTAP_USAGE_COST_USD, v) => {
                out.push((latest::USAGE_COST_AMOUNT, v));
                out.push((latest::USAGE_COST_CURRENCY, AttrValue::Str("USD".into())));
            }
            (k, v) => out.push((k, v)),
        }
    }
    out
}

/// The call's cost in US dollars, under either convention's key.
pub fn cost_usd(attributes: &Attributes) -> Option<f64> {
    attributes.iter().find_map(|(k, v)| match (*k, v) {
        (keys::LLMTAP_USAGE_COST_USD | latest::USAGE_COST_AMOUNT, AttrValue::Double(d)) => Some(*d),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::attributes::find;

    fn env(value: &str) -> HashMap<String, String> {
        HashMap::from([(OPT_IN_VARIABLE.to_string(), value.to_string())])
    }

    #[test]
    fn the_switch_is_a_comma_separated_list() {
        assert_eq!(Semconv::from_env(&HashMap::new()), Semconv::V1_41);
        assert_eq!(Semconv::from_env(&env("")), Semconv::V1_41);
        assert_eq!(Semconv::from_env(&env("http")), Semconv::V1_41);
        assert_eq!(
            Semconv::from_env(&env("gen_ai_latest_experimental")),
            Semconv::LatestExperimental
        );
        assert_eq!(
            Semconv::from_env(&env("http/dup, gen_ai_latest_experimental ,database")),
            Semconv::LatestExperimental
        );
        // Values are exact: no prefixes or other spellings.
        assert_eq!(
            Semconv::from_env(&env("gen_ai_latest_experimental_x,gen_ai")),
            Semconv::V1_41
        );
    }

    fn attrs() -> Attributes {
        vec![
            (keys::REQUEST_TOP_K, AttrValue::Double(40.0)),
            (keys::USAGE_CACHE_CREATION_INPUT_TOKENS, AttrValue::Int(12)),
            (keys::LLMTAP_USAGE_COST_USD, AttrValue::Double(0.5)),
        ]
    }

    #[test]
    fn v1_41_is_unchanged() {
        assert_eq!(span_attributes(attrs(), Semconv::V1_41), attrs());
    }

    #[test]
    fn cache_creation_becomes_cache_write() {
        let a = span_attributes(attrs(), Semconv::LatestExperimental);
        assert_eq!(
            find(&a, latest::USAGE_CACHE_WRITE_INPUT_TOKENS),
            Some(&AttrValue::Int(12))
        );
        assert_eq!(find(&a, keys::USAGE_CACHE_CREATION_INPUT_TOKENS), None);
    }

    #[test]
    fn top_k_becomes_an_integer() {
        let a = span_attributes(attrs(), Semconv::LatestExperimental);
        assert_eq!(find(&a, keys::REQUEST_TOP_K), Some(&AttrValue::Int(40)));
        let odd = vec![(keys::REQUEST_TOP_K, AttrValue::Double(2.5))];
        assert_eq!(
            span_attributes(odd.clone(), Semconv::LatestExperimental),
            odd
        );
    }

    #[test]
    fn cost_becomes_gen_ai_usage_cost() {
        let a = span_attributes(attrs(), Semconv::LatestExperimental);
        assert_eq!(
            find(&a, latest::USAGE_COST_AMOUNT),
            Some(&AttrValue::Double(0.5))
        );
        assert_eq!(
            find(&a, latest::USAGE_COST_CURRENCY),
            Some(&AttrValue::Str("USD".into()))
        );
        assert_eq!(find(&a, keys::LLMTAP_USAGE_COST_USD), None);
        assert_eq!(cost_usd(&a), Some(0.5));
        assert_eq!(cost_usd(&attrs()), Some(0.5));
    }
}
