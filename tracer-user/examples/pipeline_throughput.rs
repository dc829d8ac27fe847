//! Pipeline throughput without eBPF, on one thread: recorded capture events → finished calls.
//! Run by `cargo xtask bench`; prints one JSON object.
//!
//! Two workloads: every recording (HTTP/1.1, 4 KiB reads, compressed and event-stream bodies
//! included), for MB/s of captured plaintext; and one long OpenAI-style SSE stream of
//! `LONG_STREAM_EVENTS` chunks (1 KiB reads), for SSE events per second.

use std::time::{Duration, Instant};

use llmtap::capture::StreamEvent;
use llmtap::testing::{Cassette, ReplayOptions, cassette_dir, cassette_events, load_all};
use llmtap::{Pipeline, PipelineConfig};
use serde_json::json;

const LONG_STREAM_EVENTS: usize = 20_000;
const MIN_RUN: Duration = Duration::from_secs(3);

fn data_bytes(events: &[StreamEvent]) -> u64 {
    events
        .iter()
        .map(|e| match e {
            StreamEvent::Data(d) => d.data.len() as u64,
            _ => 0,
        })
        .sum()
}

/// Replays `exchanges` through fresh pipelines until `MIN_RUN` has passed; returns
/// (iterations, seconds, calls per iteration).
fn measure(exchanges: &[Vec<StreamEvent>]) -> (u64, f64, usize) {
    let start = Instant::now();
    let mut iterations = 0;
    let mut calls = 0;
    while start.elapsed() < MIN_RUN || iterations == 0 {
        let mut pipeline = Pipeline::new(PipelineConfig::default());
        let mut out = Vec::new();
        for events in exchanges {
            for ev in events.iter().cloned() {
                pipeline.push(ev, &mut out);
            }
        }
        pipeline.finish(&mut out);
        calls = out.len();
        iterations += 1;
    }
    (iterations, start.elapsed().as_secs_f64(), calls)
}

/// An OpenAI chat stream of `n` content chunks built from a recording's own chunk format.
fn long_stream(template: &Cassette, n: usize) -> Cassette {
    let mut c = template.clone();
    let id = template.expected["response_id"]
        .as_str()
        .unwrap_or("chatcmpl-long");
    let mut body = String::new();
    for i in 0..n {
        body.push_str(&format!(
            "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":1764500138,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" token{i}\"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    body.push_str(&format!(
        "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":1764500138,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"length\"}}]}}\n\ndata: [DONE]\n\n"
    ));
    c.response_body = body.into_bytes();
    c
}

fn main() -> anyhow::Result<()> {
    let cassettes = load_all(&cassette_dir())?;
    let opts = ReplayOptions {
        read_size: 4096,
        ..ReplayOptions::default()
    };
    let all: Vec<Vec<StreamEvent>> = cassettes
        .iter()
        .map(|c| cassette_events(c, &opts))
        .collect();
    let all_bytes: u64 = all.iter().map(|e| data_bytes(e)).sum();
    let (iters, secs, calls) = measure(&all);
    if calls != cassettes.len() {
        anyhow::bail!("{calls} calls from {} recordings", cassettes.len());
    }

    let template = cassettes
        .iter()
        .find(|c| c.name == "openai__chat_stream_no_usage")
        .ok_or_else(|| anyhow::anyhow!("template recording missing"))?;
    let long = long_stream(template, LONG_STREAM_EVENTS);
    let long_events = vec![cassette_events(
        &long,
        &ReplayOptions {
            read_size: 1024,
            ..ReplayOptions::default()
        },
    )];
    let long_bytes = data_bytes(&long_events[0]);
    let (long_iters, long_secs, long_calls) = measure(&long_events);
    if long_calls != 1 {
        anyhow::bail!("the long stream gave {long_calls} calls");
    }

    let report = json!({
        "recordings": {
            "calls_per_iteration": calls,
            "bytes_per_iteration": all_bytes,
            "iterations": iters,
            "seconds": secs,
            "mb_per_s": (all_bytes * iters) as f64 / secs / 1e6,
            "calls_per_s": (calls as u64 * iters) as f64 / secs,
        },
        "long_sse_stream": {
            "events": LONG_STREAM_EVENTS,
            "bytes": long_bytes,
            "iterations": long_iters,
            "seconds": long_secs,
            "mb_per_s": (long_bytes * long_iters) as f64 / long_secs / 1e6,
            "sse_events_per_s": (LONG_STREAM_EVENTS as u64 * long_iters) as f64 / long_secs,
        }
    });
    // The report on stdout is this tool's output.
    println!("{report}");
    Ok(())
}
