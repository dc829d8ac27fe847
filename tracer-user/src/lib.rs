//! llmtap: LLM calls made visible from TLS plaintext captured with eBPF.
//!
//! The data path is one-way, one module per stage:
//! `capture` (kernel records → ordered plaintext per connection) →
//! `connection`/`http`/`http2`/`websocket` (HTTP exchanges, WebSocket messages) → `sse`
//! (stream framings) → `genai` (call records) →
//! `export` (spans, metrics). [`pipeline::Pipeline`] runs the stages after capture.
//! Everything after `capture`'s kernel interface is plain Rust that runs on recorded events.

pub mod budget;
pub mod capture;
pub mod cli;
pub mod config;
pub mod connection;
pub mod credentials;
pub mod doctor;
pub mod export;
pub mod flow;
pub mod genai;
pub mod host;
pub mod http;
pub mod http2;
pub mod k8s;
pub mod pipeline;
pub mod sse;
/// Test support (cassettes replayed as capture output): compiled only for tests, or for the
/// crates that replay recordings (the end-to-end tests' replay server, fuzz seeds) through
/// the `test-support` feature.
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod websocket;

pub use pipeline::{Pipeline, PipelineConfig, PipelineStats};

/// Default per-call capture cap in bytes (`--max-capture-bytes`).
pub fn cli_default_max_capture_bytes() -> u32 {
    tracer_common::DEFAULT_MAX_CAPTURE_BYTES
}
pub mod daemon;
