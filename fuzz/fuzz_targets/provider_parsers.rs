//! Provider request and response parsers (OpenAI chat/responses/completions/embeddings,
//! Anthropic, Bedrock, Gemini, Ollama, Cohere, Azure): valid HTTP framing around fuzzed JSON,
//! SSE, NDJSON, JSON-array and event-stream bodies, optionally compressed, cut at arbitrary
//! boundaries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtap_fuzz::{Exchange, ProviderInput, run_pipeline, small_config};

fuzz_target!(|data: &[u8]| {
    let input = ProviderInput::parse(data);
    let (request, response) = input.wire();
    let seed = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    }) & !3; // sequential, no gaps: every body byte reaches the parsers
    let records = run_pipeline(
        &Exchange {
            seed,
            request: &request,
            response: &response,
        },
        small_config(),
    );
    // A well-framed exchange to a provider endpoint is always one call (Ollama's endpoints
    // are only calls when a model is named).
    assert!(records.len() <= 1, "{records:?}");
});
