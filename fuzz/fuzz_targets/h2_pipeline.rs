//! HTTP/2 through the whole pipeline: frames, HPACK (per-direction dynamic tables), streams,
//! then the same body stages as HTTP/1.1. The request direction always starts with the client
//! preface so the fuzzer stays in the HTTP/2 stage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtap::http2::frame::PREFACE;
use llmtap_fuzz::{Exchange, run_pipeline, small_config};

fuzz_target!(|data: &[u8]| {
    let ex = Exchange::parse(data);
    let request = if ex.request.starts_with(PREFACE) {
        ex.request.to_vec()
    } else {
        [PREFACE, ex.request].concat()
    };
    let ex = Exchange {
        seed: ex.seed,
        request: &request,
        response: ex.response,
    };
    run_pipeline(&ex, small_config());
});
