use super::{Pipeline, PipelineConfig, PipelineStats};
use crate::flow::{Direction, StreamEvent};
use crate::genai::CallRecord;
use crate::testing::h2::{H2Session, goaway, ping, rst_stream};
use crate::testing::{Cassette, ReplayOptions, cassette_dir, load_cassette};

fn cassette(name: &str) -> Cassette {
    load_cassette(&cassette_dir().join(format!("{name}.json"))).expect("cassette")
}

fn run(events: Vec<StreamEvent>) -> (Vec<CallRecord>, PipelineStats) {
    let mut p = Pipeline::new(PipelineConfig::default());
    let mut out = Vec::new();
    for ev in events {
        p.push(ev, &mut out);
    }
    p.finish(&mut out);
    (out, p.stats())
}

#[test]
fn twenty_concurrent_streams_stay_separate() {
    let names = [
        "openai__chat_stream_include_usage",
        "anthropic__messages_stream",
        "openai__chat_parallel_tool_calls",
        "gcp.gemini__stream_generate_content_sse",
    ];
    let cs: Vec<Cassette> = names.iter().map(|n| cassette(n)).collect();
    let mut s = H2Session::new(ReplayOptions::default());
    let mut streams = Vec::new();
    for i in 0..20 {
        let c = &cs[i % cs.len()];
        let id = s.open_stream();
        let req = s.request_bytes(id, c);
        s.write(&req);
        streams.push((id, c));
    }
    // Responses interleaved frame by frame across all 20 streams (header blocks in the order
    // the server's encoder produced them, as HPACK requires).
    let mut pending: Vec<std::collections::VecDeque<Vec<u8>>> = streams
        .iter()
        .map(|(id, c)| s.response_pieces(*id, c).into())
        .collect();
    while pending.iter().any(|p| !p.is_empty()) {
        for p in pending.iter_mut() {
            if let Some(piece) = p.pop_front() {
                s.read(&piece);
            }
        }
    }
    let (calls, stats) = run(s.events);
    assert_eq!(calls.len(), 20, "{stats:?}");
    // Calls complete in response-length order: match each to its cassette by response id.
    for c in &cs {
        let id = c.expected["response_id"].as_str().map(str::to_string);
        let mine: Vec<&CallRecord> = calls.iter().filter(|r| r.response.id == id).collect();
        assert_eq!(mine.len(), 5, "{}", c.name);
        for r in mine {
            assert_eq!(r.http_version, "2");
            assert_eq!(r.provider, c.provider);
            assert_eq!(r.usage.output_tokens, c.expected["output_tokens"].as_u64());
            assert!(
                r.error.is_none() && !r.incomplete,
                "{}: {:?}",
                c.name,
                r.error
            );
        }
    }
}

#[test]
fn hpack_table_stays_in_sync_over_a_thousand_requests() {
    let a = cassette("openai__chat_prompt_cache_read");
    let b = cassette("anthropic__messages_tool_use");
    let mut s = H2Session::new(ReplayOptions {
        server_latency_ns: 1_000,
        ..ReplayOptions::default()
    });
    for i in 0..1000 {
        if i == 500 {
            s.client_header_table_size(1024);
        }
        s.exchange(if i % 3 == 0 { &b } else { &a });
    }
    let (calls, stats) = run(s.events);
    assert_eq!(calls.len(), 1000, "{stats:?}");
    assert_eq!(stats.http2_streams_skipped, 0);
    for (i, r) in calls.iter().enumerate() {
        let c = if i % 3 == 0 { &b } else { &a };
        assert_eq!(r.provider, c.provider, "call {i}");
        assert_eq!(
            r.server_address.as_deref(),
            Some(c.host_and_target().0.as_str())
        );
        assert_eq!(
            r.url_path,
            c.host_and_target().1.split('?').next().unwrap_or("")
        );
        assert_eq!(r.response.id.as_deref(), c.expected["response_id"].as_str());
    }
}

#[test]
fn mid_connection_start_is_skipped_and_counted() {
    let c = cassette("openai__chat_stream_include_usage");
    let mut s = H2Session::new(ReplayOptions::default());
    for _ in 0..3 {
        s.exchange(&c);
    }
    // Capture starts after the preface and the first exchange.
    let first_exchange_end = s.events.len();
    s.exchange(&c);
    s.exchange(&c);
    let late: Vec<StreamEvent> = s.events.split_off(first_exchange_end);
    let (calls, stats) = run(late);
    assert!(calls.is_empty(), "{calls:?}");
    assert_eq!(stats.http2_streams_skipped, 2);
    assert_eq!(stats.http2_connections, 1);
}

#[test]
fn gap_outside_data_skips_later_streams() {
    let c = cassette("openai__chat_prompt_cache_read");
    let mut s = H2Session::new(ReplayOptions::default());
    s.exchange(&c);
    s.events.push(StreamEvent::Gap {
        conn: s.opts.conn,
        direction: Direction::Write,
        len: 40,
        ts_ns: s.now,
    });
    s.exchange(&c);
    let (calls, stats) = run(s.events);
    assert_eq!(calls.len(), 1, "the call before the gap");
    assert_eq!(stats.http2_streams_skipped, 1);
}

#[test]
fn rst_stream_and_goaway_end_calls_with_error_type() {
    let c = cassette("openai__chat_stream_include_usage");
    let mut s = H2Session::new(ReplayOptions::default());
    // Stream 1: reset by the client mid-response.
    let one = s.open_stream();
    let req = s.request_bytes(one, &c);
    s.write(&req);
    let pieces = s.response_pieces(one, &c);
    s.read(&pieces[0]);
    s.read(&pieces[1]);
    s.write(&rst_stream(one, 8));
    // Streams 3 and 5: the server processes only 3, then goes away.
    let three = s.open_stream();
    let req3 = s.request_bytes(three, &c);
    s.write(&req3);
    let five = s.open_stream();
    let req5 = s.request_bytes(five, &c);
    s.write(&req5);
    s.read(&ping(false));
    s.read(&goaway(three, 0));
    let p3 = s.response_pieces(three, &c).concat();
    s.read(&p3);
    s.close();
    let (calls, _) = run(s.events);
    let errors: Vec<Option<&str>> = calls
        .iter()
        .map(|r| r.error.as_ref().map(|e| e.error_type.as_str()))
        .collect();
    assert_eq!(calls.len(), 3);
    // Stream 5 is refused at the GOAWAY, before stream 3 completes.
    assert_eq!(
        errors,
        vec![Some("http2_stream_reset"), Some("http2_goaway"), None]
    );
}

#[test]
fn server_reading_the_preface_yields_no_calls() {
    let c = cassette("openai__chat_prompt_cache_read");
    let mut s = H2Session::new(ReplayOptions::default());
    s.exchange(&c);
    // The same bytes seen from the server: it reads what the client wrote.
    let flipped: Vec<StreamEvent> = s
        .events
        .into_iter()
        .map(|ev| match ev {
            StreamEvent::Data(mut d) => {
                d.direction = match d.direction {
                    Direction::Write => Direction::Read,
                    Direction::Read => Direction::Write,
                };
                StreamEvent::Data(d)
            }
            other => other,
        })
        .collect();
    let (calls, stats) = run(flipped);
    assert!(calls.is_empty());
    assert_eq!(stats.server_connections, 1);
}

/// The response head of a `Content-Length` body, the body in DATA frames without END_STREAM:
/// the way Python h2 servers answer (END_STREAM follows on a separate empty DATA frame).
fn content_length_response_without_end_stream(s: &mut H2Session, stream: u32, c: &Cassette) {
    let fields = c.h2_response_fields();
    assert!(
        fields.iter().any(|(k, _)| k == "content-length"),
        "{} must have a Content-Length body",
        c.name
    );
    let head = s.server.headers(stream, &fields, false);
    s.read(&head);
    let body = s.server.data(stream, &c.response_body, false);
    s.read(&body);
}

fn assert_complete(r: &CallRecord, c: &Cassette) {
    assert!(r.error.is_none() && !r.incomplete, "{:?}", r.error);
    assert_eq!(r.response.id.as_deref(), c.expected["response_id"].as_str());
    assert_eq!(r.usage.output_tokens, c.expected["output_tokens"].as_u64());
}

#[test]
fn end_stream_on_a_separate_empty_data_frame_completes_the_call() {
    let c = cassette("cohere__chat_v2");
    let mut s = H2Session::new(ReplayOptions::default());
    let stream = s.open_stream();
    let req = s.request_bytes(stream, &c);
    s.write(&req);
    content_length_response_without_end_stream(&mut s, stream, &c);
    let end = s.server.data(stream, &[], true);
    s.read(&end);
    s.close();
    let (calls, stats) = run(s.events);
    assert_eq!(calls.len(), 1, "{stats:?}");
    assert_complete(&calls[0], &c);
}

/// A client that stops reading once `Content-Length` bytes arrived (curl) never reads the
/// empty END_STREAM frame: the call is complete all the same, whether the client then closes
/// the connection or cancels the stream.
#[test]
fn content_length_body_completes_without_its_end_stream_frame() {
    let c = cassette("cohere__chat_v2");
    for cancel in [false, true] {
        let mut s = H2Session::new(ReplayOptions::default());
        let stream = s.open_stream();
        let req = s.request_bytes(stream, &c);
        s.write(&req);
        content_length_response_without_end_stream(&mut s, stream, &c);
        if cancel {
            s.write(&rst_stream(stream, 8));
        }
        s.close();
        let (calls, stats) = run(s.events);
        assert_eq!(calls.len(), 1, "{stats:?}");
        assert_complete(&calls[0], &c);
    }
}

/// A streaming client that has read the API's end marker (`response.completed`,
/// `message_stop`, `[DONE]`) and then drops the response before the server's END_STREAM
/// arrives resets the stream (hyper does: the Codex CLI): the call is complete. A reset
/// before the end marker stays an error (`rst_stream_and_goaway_end_calls_with_error_type`).
#[test]
fn stream_reset_after_the_end_marker_completes_the_call() {
    for name in [
        "openai__responses_stream_1",
        "anthropic__messages_stream",
        "openai__chat_stream_include_usage",
    ] {
        let c = cassette(name);
        let mut s = H2Session::new(ReplayOptions::default());
        let stream = s.open_stream();
        let req = s.request_bytes(stream, &c);
        s.write(&req);
        // The whole stream, but END_STREAM (an empty DATA frame after it) is never read.
        let head = s.server.headers(stream, &c.h2_response_fields(), false);
        s.read(&head);
        let body = s.server.data(stream, &c.response_body, false);
        s.read(&body);
        s.write(&rst_stream(stream, 8));
        s.close();
        let (calls, stats) = run(s.events);
        assert_eq!(calls.len(), 1, "{name}: {stats:?}");
        assert_complete(&calls[0], &c);
        assert_eq!(
            calls[0].response.finish_reasons.len(),
            1,
            "{name}: {:?}",
            calls[0].response
        );
    }
}

/// An HTTP/2 connection idle past the timeout is evicted, and its client keeps using it later
/// (pooled connections of long-lived agents): the HPACK state survives the eviction, so the
/// later streams are decoded, not skipped.
#[test]
fn streams_after_an_idle_eviction_are_still_decoded() {
    let a = cassette("openai__chat_prompt_cache_read");
    let b = cassette("anthropic__messages_tool_use");
    let mut s = H2Session::new(ReplayOptions::default());
    s.exchange(&a);
    s.exchange(&b);
    let before_idle = std::mem::take(&mut s.events);
    let idle_ns = PipelineConfig::default().idle_timeout_ns;
    s.wait(idle_ns * 2);
    let evicted_at = s.now;
    s.exchange(&a);
    s.exchange(&b);
    let mut p = Pipeline::new(PipelineConfig::default());
    let mut calls = Vec::new();
    for ev in before_idle {
        p.push(ev, &mut calls);
    }
    p.tick(evicted_at, &mut calls);
    assert_eq!(p.stats().evicted_connections, 1, "{:?}", p.stats());
    for ev in std::mem::take(&mut s.events) {
        p.push(ev, &mut calls);
    }
    p.finish(&mut calls);
    let stats = p.stats();
    assert_eq!(stats.http2_streams_skipped, 0, "{stats:?}");
    assert_eq!(calls.len(), 4, "{stats:?}");
    for (r, c) in calls.iter().zip([&a, &b, &a, &b]) {
        assert_eq!(r.provider, c.provider);
        assert_eq!(r.response.id.as_deref(), c.expected["response_id"].as_str());
        assert!(r.error.is_none(), "{:?}", r.error);
    }
}

mod malformed {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Corrupted h2 byte streams (flipped bytes, garbage frames) never panic and never
        /// produce more calls than streams.
        #[test]
        fn corrupted_h2_never_panics(
            flips in proptest::collection::vec((0usize..100_000, any::<u8>()), 1..8),
            garbage in proptest::collection::vec(any::<u8>(), 0..300),
            at in 0usize..100,
        ) {
            let c = cassette("anthropic__messages_stream");
            let mut s = H2Session::new(ReplayOptions { read_size: 211, write_size: 97, ..ReplayOptions::default() });
            s.exchange(&c);
            s.exchange(&c);
            let n = s.events.len();
            let mut events = s.events;
            for (pos, b) in &flips {
                let i = pos % n;
                if let StreamEvent::Data(d) = &mut events[i] {
                    let mut v = d.data.to_vec();
                    if !v.is_empty() {
                        let j = pos % v.len();
                        v[j] = *b;
                    }
                    d.data = Bytes::from(v);
                }
            }
            let idx = at % n;
            if let StreamEvent::Data(d) = events[idx].clone() {
                let mut g = d;
                g.data = Bytes::from(garbage.clone());
                events.insert(idx, StreamEvent::Data(g));
            }
            let (calls, _) = run(events);
            prop_assert!(calls.len() <= 2);
        }
    }
}
