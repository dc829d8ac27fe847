//! Call cost in USD from token usage and a price table.
//!
//! # Built-in prices
//!
//! USD per million tokens, list prices published by OpenAI, Anthropic and Google for their
//! standard (non-batch, non-priority) tiers, as known in 2025. They are indicative: check your
//! contract and override them with `--price-file`. Google's tiered prices use the lowest tier
//! (prompts ≤ 200k tokens).
//!
//! A model name matches the longest table key that is a prefix of it and ends on a boundary
//! (end of name, `-`, `@`, `:` or `/`), so `gpt-4o-mini-2024-07-18` → `gpt-4o-mini` and
//! `claude-3-5-sonnet-20241022` → `claude-3-5-sonnet`, while `gpt-4o` never matches `gpt-4`.
//! A leading `models/` (Gemini) is ignored.
//!
//! # Price file (`--price-file`)
//!
//! JSON (`.json`) or TOML (any other extension); entries replace built-in ones with the same key
//! and add new ones:
//!
//! ```toml
//! [models."gpt-4o"]
//! input = 2.5            # USD per million input tokens (required)
//! output = 10.0          # USD per million output tokens (required)
//! cached_input = 1.25    # cache reads; default: the input price
//! cache_creation_input = 3.75  # cache writes; default: the input price
//! ```
//!
//! ```json
//! {"models": {"my-finetune": {"input": 3.0, "output": 12.0}}}
//! ```
//!
//! # Arithmetic
//!
//! `gen_ai.usage.input_tokens` includes cached tokens, so uncached input = input − cache_read −
//! cache_creation; each part is billed at its price, output tokens (which include reasoning tokens)
//! at the output price. No cost is reported without both input and output counts (embeddings:
//! input only), nor for an unknown model.

use std::{collections::HashMap, path::Path};

use serde::Deserialize;

use crate::genai::Usage;

/// Prices of one model in USD per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
pub struct ModelPrice {
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cached_input: Option<f64>,
    #[serde(default)]
    pub cache_creation_input: Option<f64>,
}

const fn price(input: f64, output: f64, cached: f64, cache_write: f64) -> ModelPrice {
    ModelPrice {
        input,
        output,
        cached_input: Some(cached),
        cache_creation_input: Some(cache_write),
    }
}

const fn simple(input: f64, output: f64) -> ModelPrice {
    ModelPrice {
        input,
        output,
        cached_input: None,
        cache_creation_input: None,
    }
}

/// The built-in table (see the module documentation).
pub const BUILTIN_PRICES: &[(&str, ModelPrice)] = &[
    // OpenAI
    ("gpt-5", price(1.25, 10.0, 0.125, 1.25)),
    ("gpt-5-mini", price(0.25, 2.0, 0.025, 0.25)),
    ("gpt-5-nano", price(0.05, 0.40, 0.005, 0.05)),
    ("gpt-4.1", price(2.0, 8.0, 0.50, 2.0)),
    ("gpt-4.1-mini", price(0.40, 1.60, 0.10, 0.40)),
    ("gpt-4.1-nano", price(0.10, 0.40, 0.025, 0.10)),
    ("gpt-4o", price(2.50, 10.0, 1.25, 2.50)),
    ("gpt-4o-mini", price(0.15, 0.60, 0.075, 0.15)),
    ("gpt-4-turbo", simple(10.0, 30.0)),
    ("gpt-4", simple(30.0, 60.0)),
    ("gpt-3.5-turbo", simple(0.50, 1.50)),
    ("gpt-3.5-turbo-instruct", simple(1.50, 2.0)),
    ("davinci-002", simple(2.0, 2.0)),
    ("babbage-002", simple(0.40, 0.40)),
    ("o1", price(15.0, 60.0, 7.50, 15.0)),
    ("o1-mini", price(1.10, 4.40, 0.55, 1.10)),
    ("o3", price(2.0, 8.0, 0.50, 2.0)),
    ("o3-mini", price(1.10, 4.40, 0.55, 1.10)),
    ("o4-mini", price(1.10, 4.40, 0.275, 1.10)),
    ("text-embedding-3-small", simple(0.02, 0.0)),
    ("text-embedding-3-large", simple(0.13, 0.0)),
    ("text-embedding-ada-002", simple(0.10, 0.0)),
    // Anthropic: cache reads 0.1×, 5-minute cache writes 1.25× the input price.
    ("claude-opus-4", price(15.0, 75.0, 1.50, 18.75)),
    ("claude-opus-4-1", price(15.0, 75.0, 1.50, 18.75)),
    ("claude-sonnet-4", price(3.0, 15.0, 0.30, 3.75)),
    ("claude-sonnet-4-5", price(3.0, 15.0, 0.30, 3.75)),
    ("claude-haiku-4-5", price(1.0, 5.0, 0.10, 1.25)),
    ("claude-3-7-sonnet", price(3.0, 15.0, 0.30, 3.75)),
    ("claude-3-5-sonnet", price(3.0, 15.0, 0.30, 3.75)),
    ("claude-3-5-haiku", price(0.80, 4.0, 0.08, 1.0)),
    ("claude-3-opus", price(15.0, 75.0, 1.50, 18.75)),
    ("claude-3-sonnet", simple(3.0, 15.0)),
    ("claude-3-haiku", price(0.25, 1.25, 0.03, 0.30)),
    // Google Gemini (AI Studio / Vertex list prices, ≤ 200k-token prompts)
    ("gemini-2.5-pro", price(1.25, 10.0, 0.31, 1.25)),
    ("gemini-2.5-flash", price(0.30, 2.50, 0.075, 0.30)),
    ("gemini-2.5-flash-lite", price(0.10, 0.40, 0.025, 0.10)),
    ("gemini-2.0-flash", price(0.10, 0.40, 0.025, 0.10)),
    ("gemini-2.0-flash-lite", simple(0.075, 0.30)),
    ("gemini-1.5-pro", price(1.25, 5.0, 0.3125, 1.25)),
    ("gemini-1.5-flash", price(0.075, 0.30, 0.01875, 0.075)),
    ("gemini-1.5-flash-8b", price(0.0375, 0.15, 0.01, 0.0375)),
];

/// Errors loading a price file.
#[derive(Debug, thiserror::Error)]
pub enum PriceFileError {
    #[error("cannot read price file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid JSON price file {path}: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("invalid TOML price file {path}: {source}")]
    Toml {
        path: String,
        source: toml::de::Error,
    },
    #[error("price file {path}: model {model:?} has a negative or non-finite price")]
    InvalidPrice { path: String, model: String },
}

#[derive(Deserialize)]
struct PriceFile {
    models: HashMap<String, ModelPrice>,
}

/// Model → price lookup.
#[derive(Clone, Debug)]
pub struct PriceTable {
    prices: HashMap<String, ModelPrice>,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self::builtin()
    }
}

fn is_boundary(rest: &str) -> bool {
    rest.is_empty() || rest.starts_with(['-', '@', ':', '/'])
}

impl PriceTable {
    pub fn builtin() -> Self {
        Self {
            prices: BUILTIN_PRICES
                .iter()
                .map(|(model, price)| (model.to_string(), *price))
                .collect(),
        }
    }

    /// The built-in table extended/overridden by a JSON or TOML price file.
    pub fn with_file(path: &Path) -> Result<Self, PriceFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PriceFileError::Read {
            path: shown.clone(),
            source,
        })?;
        let file: PriceFile = if path.extension().is_some_and(|ext| ext == "json") {
            serde_json::from_str(&text).map_err(|source| PriceFileError::Json {
                path: shown.clone(),
                source,
            })?
        } else {
            toml::from_str(&text).map_err(|source| PriceFileError::Toml {
                path: shown.clone(),
                source,
            })?
        };
        let mut table = Self::builtin();
        for (model, price) in file.models {
            let values = [
                Some(price.input),
                Some(price.output),
                price.cached_input,
                price.cache_creation_input,
            ];
            if values.iter().flatten().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(PriceFileError::InvalidPrice { path: shown, model });
            }
            table.prices.insert(model, price);
        }
        Ok(table)
    }

    /// The price of a model name (dated and suffixed names match their base name).
    pub fn lookup(&self, model: &str) -> Option<&ModelPrice> {
        let model = model.strip_prefix("models/").unwrap_or(model);
        if let Some(price) = self.prices.get(model) {
            return Some(price);
        }
        self.prices
            .iter()
            .filter(|(key, _)| model.strip_prefix(key.as_str()).is_some_and(is_boundary))
            .max_by_key(|(key, _)| key.len())
            .map(|(_, price)| price)
    }

    /// Cost in USD, when the model is priced and the needed counts are known.
    pub fn cost_usd(&self, model: &str, usage: &Usage, embeddings: bool) -> Option<f64> {
        let price = self.lookup(model)?;
        let input = usage.input_tokens?;
        let output = match usage.output_tokens {
            Some(n) => n,
            None if embeddings => 0,
            None => return None,
        };
        let cache_read = usage.cache_read_input_tokens.unwrap_or(0).min(input);
        let cache_creation = usage
            .cache_creation_input_tokens
            .unwrap_or(0)
            .min(input - cache_read);
        let uncached = input - cache_read - cache_creation;
        let micro_usd = uncached as f64 * price.input
            + cache_read as f64 * price.cached_input.unwrap_or(price.input)
            + cache_creation as f64 * price.cache_creation_input.unwrap_or(price.input)
            + output as f64 * price.output;
        Some(micro_usd / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: Some(input),
            output_tokens: Some(output),
            ..Usage::default()
        }
    }

    #[test]
    fn dated_names_match_their_base_model() {
        let table = PriceTable::builtin();
        assert_eq!(
            table.lookup("gpt-4o-mini-2024-07-18").map(|p| p.input),
            Some(0.15)
        );
        assert_eq!(
            table.lookup("gpt-4o-2024-08-06").map(|p| p.input),
            Some(2.50)
        );
        assert_eq!(table.lookup("gpt-4-0613").map(|p| p.input), Some(30.0));
        assert_eq!(
            table.lookup("claude-3-5-sonnet-20241022").map(|p| p.output),
            Some(15.0)
        );
        assert_eq!(
            table.lookup("models/gemini-1.5-flash-001").map(|p| p.input),
            Some(0.075)
        );
        assert_eq!(
            table.lookup("gpt-4.1-mini-2025-04-14").map(|p| p.input),
            Some(0.40)
        );
    }

    #[test]
    fn prefixes_stop_at_boundaries() {
        let table = PriceTable::builtin();
        assert!(table.lookup("gpt-4omega").is_none());
        assert!(table.lookup("llama3").is_none());
        // gpt-4.1 must not fall back to gpt-4.
        assert_eq!(table.lookup("gpt-4.1").map(|p| p.input), Some(2.0));
    }

    #[test]
    fn cached_tokens_are_billed_at_the_cached_price() {
        let table = PriceTable::builtin();
        let mut u = usage(1_000_000, 1_000_000);
        u.cache_read_input_tokens = Some(400_000);
        // 600k × 2.50 + 400k × 1.25 + 1M × 10 = 1.5 + 0.5 + 10 USD
        let cost = table.cost_usd("gpt-4o", &u, false).unwrap_or(-1.0);
        assert!((cost - 12.0).abs() < 1e-9, "{cost}");
    }

    #[test]
    fn anthropic_cache_writes_use_their_price() {
        let table = PriceTable::builtin();
        let mut u = usage(2_000_000, 0);
        u.cache_creation_input_tokens = Some(1_000_000);
        // 1M × 3 + 1M × 3.75
        let cost = table
            .cost_usd("claude-3-5-sonnet-latest", &u, false)
            .unwrap_or(-1.0);
        assert!((cost - 6.75).abs() < 1e-9, "{cost}");
    }

    #[test]
    fn no_cost_without_counts_or_price() {
        let table = PriceTable::builtin();
        assert!(
            table
                .cost_usd("unknown-model", &usage(1, 1), false)
                .is_none()
        );
        let no_output = Usage {
            input_tokens: Some(10),
            ..Usage::default()
        };
        assert!(table.cost_usd("gpt-4o", &no_output, false).is_none());
        let embed = table.cost_usd("text-embedding-3-small", &no_output, true);
        assert!(embed.is_some_and(|c| (c - 10.0 * 0.02 / 1e6).abs() < 1e-15));
    }

    fn write_temp(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("llmtap-cost-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let path = dir.join(name);
        std::fs::write(&path, text).ok();
        path
    }

    #[test]
    fn price_files_override_and_extend_in_toml_and_json() {
        let toml_path = write_temp(
            "p.toml",
            "[models.\"gpt-4o\"]\ninput = 1.0\noutput = 2.0\n[models.my-model]\ninput = 5\noutput = 6\n",
        );
        let table = PriceTable::with_file(&toml_path).unwrap_or_default();
        assert_eq!(
            table.lookup("gpt-4o-2024-08-06").map(|p| p.input),
            Some(1.0)
        );
        assert_eq!(table.lookup("my-model-v2").map(|p| p.output), Some(6.0));
        assert_eq!(table.lookup("gpt-4o-mini").map(|p| p.input), Some(0.15));

        let json_path = write_temp(
            "p.json",
            r#"{"models":{"x-1":{"input":1,"output":1,"cached_input":0.5}}}"#,
        );
        let table = PriceTable::with_file(&json_path).unwrap_or_default();
        assert_eq!(table.lookup("x-1").and_then(|p| p.cached_input), Some(0.5));

        let bad = write_temp("bad.json", r#"{"models":{"x":{"input":-1,"output":1}}}"#);
        assert!(matches!(
            PriceTable::with_file(&bad),
            Err(PriceFileError::InvalidPrice { .. })
        ));
        let broken = write_temp("broken.toml", "models = 3");
        assert!(matches!(
            PriceTable::with_file(&broken),
            Err(PriceFileError::Toml { .. })
        ));
    }
}
