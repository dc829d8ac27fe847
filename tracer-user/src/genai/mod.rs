//! Stage 4, GenAI: HTTP exchanges → LLM call records (providers, usage, timings).

pub mod record;

pub use record::*;
