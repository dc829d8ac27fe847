//! Property tests: the record does not depend on how bytes were split into reads/writes,
//! and no input, however malformed, makes the pipeline panic.

use bytes::Bytes;
use llmtap::capture::{ConnectionId, Direction, StreamChunk, StreamEvent};
use llmtap::genai::CallRecord;
use llmtap::testing::{Cassette, ReplayOptions, cassette_dir, cassette_events, comm, load_all};
use llmtap::{Pipeline, PipelineConfig};
use proptest::prelude::*;
use std::sync::OnceLock;

fn cassettes() -> &'static [Cassette] {
    static ALL: OnceLock<Vec<Cassette>> = OnceLock::new();
    ALL.get_or_init(|| load_all(&cassette_dir()).expect("cassettes load"))
}

const CONN: ConnectionId = ConnectionId {
    pid: 7,
    conn: 0xabc,
};

fn config() -> PipelineConfig {
    PipelineConfig {
        capture_content: true,
        ..PipelineConfig::default()
    }
}

fn run(events: Vec<StreamEvent>) -> Vec<CallRecord> {
    let mut p = Pipeline::new(config());
    let mut out = Vec::new();
    for ev in events {
        p.push(ev, &mut out);
    }
    p.finish(&mut out);
    out
}

/// Cuts `bytes` at the given fractions of its length.
fn split_at_cuts(
    bytes: &[u8],
    cuts: &[f64],
    direction: Direction,
    t0: u64,
    out: &mut Vec<StreamEvent>,
) {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|f| (f * bytes.len() as f64) as usize)
        .collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    for (i, w) in points.windows(2).enumerate() {
        let ts = t0 + i as u64 * 1000;
        out.push(StreamEvent::Data(StreamChunk {
            conn: CONN,
            direction,
            tid: 8,
            comm: comm("node"),
            ts_entry_ns: ts,
            ts_ns: ts + 1,
            data: Bytes::copy_from_slice(&bytes[w[0]..w[1]]),
        }));
    }
}

/// A record without its timestamps (they follow the split by construction).
fn timeless(mut r: CallRecord) -> CallRecord {
    r.timing = Default::default();
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn record_does_not_depend_on_split(
        index in 0usize..1000,
        req_cuts in prop::collection::vec(0.0f64..1.0, 0..12),
        resp_cuts in prop::collection::vec(0.0f64..1.0, 0..40),
        transfer_chunk in 1usize..600,
    ) {
        let c = &cassettes()[index % cassettes().len()];
        let req = c.request_bytes();
        let resp = c.response_bytes(transfer_chunk);
        let mut whole = Vec::new();
        split_at_cuts(&req, &[], Direction::Write, 1_000, &mut whole);
        split_at_cuts(&resp, &[], Direction::Read, 1_000_000, &mut whole);
        let mut pieces = Vec::new();
        split_at_cuts(&req, &req_cuts, Direction::Write, 1_000, &mut pieces);
        split_at_cuts(&resp, &resp_cuts, Direction::Read, 1_000_000, &mut pieces);
        let a: Vec<CallRecord> = run(whole).into_iter().map(timeless).collect();
        let b: Vec<CallRecord> = run(pieces).into_iter().map(timeless).collect();
        prop_assert_eq!(a.len(), 1);
        prop_assert_eq!(a, b, "{}", c.name);
    }

    #[test]
    fn random_events_never_panic(
        ops in prop::collection::vec(
            (0u8..6, prop::collection::vec(any::<u8>(), 0..200), 0u64..50),
            0..60,
        ),
    ) {
        let mut p = Pipeline::new(config());
        let mut out = Vec::new();
        let mut ts = 0u64;
        for (kind, bytes, len) in ops {
            ts += 10;
            let direction = if kind % 2 == 0 { Direction::Write } else { Direction::Read };
            let ev = match kind {
                0 | 1 => StreamEvent::Data(StreamChunk { conn: CONN, direction, tid: 1, comm: comm("x"), ts_entry_ns: ts, ts_ns: ts, data: Bytes::from(bytes) }),
                2 | 3 => {
                    // Plausible HTTP prefixes followed by noise reach deeper states.
                    let mut data = if kind == 2 { b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 20\r\n\r\n".to_vec() } else { b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec() };
                    data.extend(bytes);
                    StreamEvent::Data(StreamChunk { conn: CONN, direction, tid: 1, comm: comm("x"), ts_entry_ns: ts, ts_ns: ts, data: Bytes::from(data) })
                }
                4 => StreamEvent::Gap { conn: CONN, direction, len, ts_ns: ts },
                _ => StreamEvent::Closed { conn: CONN, ts_ns: ts },
            };
            p.push(ev, &mut out);
            p.tick(ts, &mut out);
        }
        p.finish(&mut out);
        prop_assert!(p.stats().calls_in_flight == 0);
    }

    #[test]
    fn mutated_cassettes_never_panic(
        index in 0usize..1000,
        flips in prop::collection::vec((0.0f64..1.0, any::<u8>()), 1..20),
        cut in 0.0f64..1.0,
        gap_at in prop::option::of((0usize..200, 0u64..300)),
        one_byte in any::<bool>(),
        request_flips in prop::collection::vec((0.0f64..1.0, any::<u8>()), 0..6),
    ) {
        let c = &cassettes()[index % cassettes().len()];
        let mut c = c.clone();
        for (pos, byte) in request_flips {
            let i = (pos * c.request_body.len() as f64) as usize;
            if let Some(b) = c.request_body.get_mut(i) {
                *b = byte;
            }
        }
        let c = &c;
        let mut resp = c.response_bytes(256);
        for (pos, byte) in flips {
            let i = (pos * resp.len() as f64) as usize;
            if let Some(b) = resp.get_mut(i) {
                *b = byte;
            }
        }
        resp.truncate(((cut * 1.2).min(1.0) * resp.len() as f64) as usize);
        let mut mutated = c.clone();
        mutated.response_body = Vec::new();
        let opts = ReplayOptions { read_size: if one_byte { 1 } else { 97 }, ..ReplayOptions::default() };
        let mut events: Vec<StreamEvent> = cassette_events(&mutated, &opts)
            .into_iter()
            .filter(|e| matches!(e, StreamEvent::Data(d) if d.direction == Direction::Write))
            .collect();
        let mut now = 5_000_000_000;
        llmtap::testing::chunk_events(&resp, Direction::Read, opts.read_size, &mut now, &opts, &mut events);
        if let Some((at, len)) = gap_at {
            let at = at.min(events.len());
            events.insert(at, StreamEvent::Gap { conn: opts.conn, direction: Direction::Read, len, ts_ns: now });
        }
        let mut p = Pipeline::new(config());
        let mut out = Vec::new();
        for ev in events {
            p.push(ev, &mut out);
        }
        p.finish(&mut out);
        prop_assert!(out.len() <= 1);
    }
}
