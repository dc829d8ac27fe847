//! Every recorded exchange replayed over HTTP/2 must yield the same call record as over
//! HTTP/1.1 (timestamps aside, and `network.protocol.version` = `2`), however the bytes are
//! cut into TLS reads and writes, and with padding, PRIORITY and CONTINUATION frames.

use llmtap::capture::StreamEvent;
use llmtap::genai::CallRecord;
use llmtap::testing::h2::{H2Session, cassette_events_h2};
use llmtap::testing::{Cassette, ReplayOptions, cassette_events, check_every_cassette};
use llmtap::{Pipeline, PipelineConfig, PipelineStats};
use serde_json::Value;

fn run(events: Vec<StreamEvent>) -> (Vec<CallRecord>, PipelineStats) {
    let mut pipeline = Pipeline::new(PipelineConfig {
        capture_content: true,
        ..PipelineConfig::default()
    });
    let mut out = Vec::new();
    for ev in events {
        pipeline.push(ev, &mut out);
    }
    pipeline.finish(&mut out);
    (out, pipeline.stats())
}

/// The record as JSON without what legitimately differs between the two protocols.
fn comparable(r: &CallRecord) -> Value {
    let mut v = serde_json::to_value(r).expect("serialize");
    if let Some(o) = v.as_object_mut() {
        o.remove("timing");
        o.remove("http_version");
    }
    v
}

fn compare(
    c: &Cassette,
    h1: &ReplayOptions,
    h2_events: Vec<StreamEvent>,
    label: &str,
) -> Result<(), String> {
    let (want, _) = run(cassette_events(c, h1));
    let (got, stats) = run(h2_events);
    if want.len() != 1 || got.len() != 1 {
        return Err(format!(
            "{} [{label}]: {} HTTP/1.1 records, {} HTTP/2 records ({stats:?})",
            c.name,
            want.len(),
            got.len()
        ));
    }
    if got[0].http_version != "2" {
        return Err(format!(
            "{} [{label}]: http_version {}",
            c.name, got[0].http_version
        ));
    }
    let (a, b) = (comparable(&want[0]), comparable(&got[0]));
    if a != b {
        return Err(format!("{} [{label}]:\n  h1 {a}\n  h2 {b}", c.name));
    }
    Ok(())
}

fn every(label: &str, opts: ReplayOptions, mut session: impl FnMut(&mut H2Session)) {
    check_every_cassette(|c| {
        let mut s = H2Session::new(opts.clone());
        session(&mut s);
        s.exchange(c);
        compare(c, &opts, s.events, label)
    });
}

#[test]
fn every_cassette_over_h2_matches_http1() {
    let opts = ReplayOptions::default();
    check_every_cassette(|c| compare(c, &opts, cassette_events_h2(c, &opts), "realistic"));
}

#[test]
fn every_cassette_over_h2_one_byte_at_a_time() {
    every("1-byte", ReplayOptions::one_byte_at_a_time(), |_| {});
}

#[test]
fn every_cassette_over_h2_with_padding_priority_and_continuation() {
    let opts = ReplayOptions {
        write_size: 333,
        read_size: 97,
        ..ReplayOptions::default()
    };
    every("padded", opts, |s| {
        for w in [&mut s.client, &mut s.server] {
            w.pad = 17;
            w.priority = true;
            // Small frames: every header block spans HEADERS + CONTINUATION frames.
            w.max_frame = 40;
        }
    });
}

#[test]
fn every_cassette_over_h2_after_header_table_size_changes() {
    every("table-size", ReplayOptions::default(), |s| {
        s.client_header_table_size(256);
        s.client_header_table_size(16_384);
    });
}
