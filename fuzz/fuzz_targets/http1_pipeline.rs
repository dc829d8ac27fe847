//! HTTP/1.1 through the whole pipeline (heads, body framing, content decoding, stream framings,
//! provider parsers), both directions cut at arbitrary boundaries, with capture gaps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtap_fuzz::{Exchange, run_pipeline, small_config};

fuzz_target!(|data: &[u8]| {
    let ex = Exchange::parse(data);
    run_pipeline(&ex, small_config());
});
