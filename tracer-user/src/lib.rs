//! llmtap: LLM calls made visible from TLS plaintext captured with eBPF.
//!
//! The data path is one-way, one module per stage:
//! `capture` (kernel records → ordered plaintext per connection) →
//! `connection`/`http` (HTTP exchanges) → `genai` (call records) → `export` (spans, metrics).
//! Everything after `capture`'s kernel interface is plain Rust that runs on recorded events.

pub mod capture;
pub mod export;
pub mod genai;
