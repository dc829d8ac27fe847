//! WebSocket connections through the whole pipeline: recorded Responses streams replayed as
//! `response.create` + server events (with and without permessage-deflate), several calls on
//! one socket, errors, lost bytes, garbage, and the Realtime API.

use serde_json::{Value, json};

use super::*;
use crate::flow::Direction;
use crate::testing::websocket::{
    CLIENT_MASK, CLOSE, MessageWriter, PING, WsCompression, cassette_events_websocket, data_event,
    frame, handshake, response_create, sse_payloads,
};
use crate::testing::{Cassette, ReplayOptions, cassette_dir, cassette_events, load_cassette};

const STREAMS: [&str; 2] = ["openai__responses_stream_1", "openai__responses_stream_2"];
const MODES: [WsCompression; 3] = [
    WsCompression::None,
    WsCompression::Deflate,
    WsCompression::DeflateNoContextTakeover,
];

/// Messages the client sends, then the messages the server answers with.
type Round = (Vec<Vec<u8>>, Vec<Vec<u8>>);

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

/// What a call over WebSocket has of its own: the upgrade's method and status, the socket's
/// request id, its timings.
fn transport_neutral(mut r: CallRecord) -> CallRecord {
    r.http_method = String::new();
    r.http_status = None;
    r.response.request_id = None;
    r.timing = Default::default();
    if let Some(e) = &mut r.error {
        e.http_status = None;
    }
    r
}

#[test]
fn every_recorded_stream_gives_the_same_record_as_over_sse() {
    for name in STREAMS {
        let c = cassette(name);
        let (sse, _) = run(cassette_events(&c, &ReplayOptions::default()));
        assert_eq!(sse.len(), 1, "{name} over SSE");
        for mode in MODES {
            for opts in [
                ReplayOptions::default(),
                ReplayOptions::one_byte_at_a_time(),
            ] {
                let (ws, stats) = run(cassette_events_websocket(&c, &opts, mode));
                assert_eq!(ws.len(), 1, "{name} {mode:?}: {stats:?}");
                let record = ws[0].clone();
                assert_eq!(record.http_method, "GET");
                assert_eq!(record.http_status, Some(101));
                assert_eq!(record.response.request_id.as_deref(), Some("req_ws_1"));
                assert!(record.request.stream);
                let t = &record.timing;
                // Time to first chunk: from the response.create write to the first delta.
                let first = t.first_chunk_ns.expect("first chunk time");
                assert!(t.request_start_ns < t.request_end_ns, "{t:?}");
                assert!(t.request_end_ns < t.response_start_ns.unwrap_or(0), "{t:?}");
                assert!(t.response_start_ns.unwrap_or(0) < first && first < t.response_end_ns);
                assert_eq!(
                    transport_neutral(record),
                    transport_neutral(sse[0].clone()),
                    "{name} {mode:?}"
                );
                assert_eq!(stats.websocket_connections, 1);
                assert_eq!(stats.body_parse_errors, 0);
                assert_eq!(stats.error_calls, 0);
            }
        }
    }
}

/// The upgrade, then each `(client messages, server messages)` round in order, all in one
/// socket; frames of `max_frame` bytes at most, reads of 100 bytes.
fn socket_events(
    target: &str,
    mode: WsCompression,
    rounds: &[Round],
    max_frame: usize,
    close: bool,
) -> Vec<StreamEvent> {
    let opts = ReplayOptions::default();
    let (request, response) = handshake("api.openai.com", target, mode);
    let mut now = opts.start_ns;
    let mut out = vec![data_event(&opts, Direction::Write, now, &request)];
    now += 1_000_000;
    out.push(data_event(&opts, Direction::Read, now, &response));
    let mut client = MessageWriter::new(true, mode);
    let mut server = MessageWriter::new(false, mode);
    client.max_frame = max_frame;
    server.max_frame = max_frame;
    for (from_client, from_server) in rounds {
        for m in from_client {
            now += 1_000_000;
            out.push(data_event(&opts, Direction::Write, now, &client.text(m)));
        }
        for m in from_server {
            let bytes = server.text(m);
            for piece in bytes.chunks(100) {
                now += 1_000_000;
                out.push(data_event(&opts, Direction::Read, now, piece));
            }
        }
    }
    if close {
        now += 1_000_000;
        let f = frame(
            CLOSE,
            true,
            false,
            Some(CLIENT_MASK),
            &1000u16.to_be_bytes(),
        );
        out.push(data_event(&opts, Direction::Write, now, &f));
    }
    out
}

fn recorded_round(name: &str) -> Round {
    let c = cassette(name);
    (
        vec![response_create(&c.request_body)],
        sse_payloads(&c.response_body),
    )
}

#[test]
fn several_calls_on_one_socket_are_several_records_in_order() {
    let rounds = [
        recorded_round("openai__responses_stream_1"),
        recorded_round("openai__responses_stream_2"),
        recorded_round("openai__responses_stream_1"),
    ];
    for mode in MODES {
        let (records, stats) = run(socket_events("/v1/responses", mode, &rounds, 7, true));
        let ids: Vec<_> = records.iter().map(|r| r.response.id.clone()).collect();
        let want: Vec<_> = [STREAMS[0], STREAMS[1], STREAMS[0]]
            .iter()
            .map(|n| {
                cassette(n).expected["response_id"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(ids, want, "{mode:?}");
        assert!(records.iter().all(|r| r.error.is_none()), "{records:#?}");
        assert_eq!(stats.calls, 3);
    }
}

#[test]
fn error_event_and_close_mid_response_are_error_records() {
    let create = br#"{"type":"response.create","model":"gpt-5","input":"hi"}"#.to_vec();
    let error = json!({"type": "error", "status": 429, "error": {"type": "rate_limit_exceeded", "code": "rate_limit_exceeded", "message": "slow down"}});
    let created =
        json!({"type": "response.created", "response": {"id": "resp_2", "model": "gpt-5"}});
    let delta = json!({"type": "response.output_text.delta", "delta": "Hel"});
    let rounds = [
        (
            vec![create.clone()],
            vec![serde_json::to_vec(&error).expect("json")],
        ),
        (
            vec![create],
            vec![
                serde_json::to_vec(&created).expect("json"),
                serde_json::to_vec(&delta).expect("json"),
            ],
        ),
    ];
    let (records, stats) = run(socket_events(
        "/v1/responses",
        WsCompression::Deflate,
        &rounds,
        usize::MAX,
        true,
    ));
    assert_eq!(records.len(), 2, "{records:#?}");
    let first = records[0].error.as_ref().expect("error record");
    assert_eq!(first.error_type, "rate_limit_exceeded");
    assert_eq!(first.message.as_deref(), Some("slow down"));
    let second = records[1].error.as_ref().expect("closed mid-response");
    assert_eq!(second.error_type, "connection_closed");
    // What arrived before the close is real, as for a cut SSE stream.
    assert_eq!(records[1].response.id.as_deref(), Some("resp_2"));
    assert_eq!(records[1].stream_chunks, Some(1));
    assert_eq!(stats.error_calls, 2);
}

#[test]
fn lost_bytes_drop_the_socket_loudly() {
    let c = cassette(STREAMS[0]);
    let mut events =
        cassette_events_websocket(&c, &ReplayOptions::default(), WsCompression::Deflate);
    // A loss in the middle of the server's events.
    let at = events.len() - 4;
    events.insert(
        at,
        StreamEvent::Gap {
            conn: ReplayOptions::default().conn,
            direction: Direction::Read,
            len: 37,
            ts_ns: 5_000_000_000,
        },
    );
    let (records, stats) = run(events);
    assert!(records.is_empty(), "{records:#?}");
    assert_eq!(stats.websocket_gaps, 1);
}

#[test]
fn garbage_frames_end_the_socket_with_an_error() {
    let c = cassette(STREAMS[0]);
    let opts = ReplayOptions::default();
    let mut events = cassette_events_websocket(&c, &opts, WsCompression::None);
    // A masked frame from the server: not WebSocket as a server writes it.
    let at = events.len() - 4;
    let bad = frame(
        crate::testing::websocket::TEXT,
        true,
        false,
        Some(CLIENT_MASK),
        b"{}",
    );
    events.insert(at, data_event(&opts, Direction::Read, 4_000_000_000, &bad));
    let (records, stats) = run(events);
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].error.as_ref().map(|e| e.error_type.as_str()),
        Some("http_parse_error")
    );
    assert_eq!(stats.websocket_errors, 1);
}

#[test]
fn pings_between_events_change_nothing() {
    let c = cassette(STREAMS[1]);
    let opts = ReplayOptions::default();
    let mut events = Vec::new();
    for (i, ev) in cassette_events_websocket(&c, &opts, WsCompression::None)
        .into_iter()
        .enumerate()
    {
        events.push(ev);
        if i > 3 && i % 3 == 0 {
            let ping = frame(PING, true, false, None, b"keepalive");
            events.push(data_event(
                &opts,
                Direction::Read,
                3_000_000_000 + i as u64,
                &ping,
            ));
        }
    }
    let (records, _) = run(events);
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].usage.output_tokens,
        c.expected["output_tokens"].as_u64()
    );
}

#[test]
fn an_upgrade_that_fails_is_plain_http() {
    // Codex falls back to SSE when the server answers the upgrade with an error.
    let opts = ReplayOptions::default();
    let (request, _) = handshake("api.openai.com", "/v1/responses", WsCompression::None);
    let response = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}";
    let events = vec![
        data_event(&opts, Direction::Write, 1_000, &request),
        data_event(&opts, Direction::Read, 2_000, response),
    ];
    let (records, stats) = run(events);
    assert!(records.is_empty());
    assert_eq!(stats.websocket_connections, 0);
    assert_eq!(stats.non_llm_requests, 1);
}

fn realtime_rounds() -> Vec<Round> {
    let j = |v: Value| serde_json::to_vec(&v).expect("json");
    let audio = "QUJD".repeat(20_000);
    vec![
        (
            vec![],
            vec![j(
                json!({"type": "session.created", "session": {"id": "sess_1", "model": "gpt-realtime-2025-08-28"}}),
            )],
        ),
        (
            vec![
                j(
                    json!({"type": "session.update", "session": {"type": "realtime", "model": "gpt-realtime", "instructions": "Be brief.", "max_response_output_tokens": 200, "temperature": 0.7}}),
                ),
                j(json!({"type": "input_audio_buffer.append", "audio": audio})),
                j(json!({"type": "response.create", "response": {"temperature": 0.6}})),
            ],
            vec![
                j(
                    json!({"type": "session.updated", "session": {"model": "gpt-realtime-2025-08-28"}}),
                ),
                j(
                    json!({"type": "response.created", "response": {"id": "resp_rt_1", "status": "in_progress"}}),
                ),
                j(
                    json!({"type": "response.output_audio.delta", "response_id": "resp_rt_1", "delta": audio}),
                ),
                j(
                    json!({"type": "response.output_audio_transcript.delta", "response_id": "resp_rt_1", "delta": "Hi"}),
                ),
                j(
                    json!({"type": "response.output_audio.delta", "response_id": "resp_rt_1", "delta": audio}),
                ),
                j(
                    json!({"type": "response.done", "response": {"id": "resp_rt_1", "status": "completed", "output": [], "usage": {"total_tokens": 50, "input_tokens": 30, "output_tokens": 20, "input_token_details": {"cached_tokens": 4}}}}),
                ),
            ],
        ),
        (
            // Server-side turn detection starts the next response by itself.
            vec![],
            vec![
                j(json!({"type": "response.created", "response": {"id": "resp_rt_2"}})),
                j(
                    json!({"type": "response.output_text.delta", "response_id": "resp_rt_2", "delta": "Yes"}),
                ),
                j(
                    json!({"type": "response.done", "response": {"id": "resp_rt_2", "status": "incomplete", "status_details": {"type": "incomplete", "reason": "max_output_tokens"}, "usage": {"input_tokens": 40, "output_tokens": 200}}}),
                ),
            ],
        ),
        (
            vec![j(json!({"type": "response.create"}))],
            vec![j(
                json!({"type": "response.created", "response": {"id": "resp_rt_3"}}),
            )],
        ),
    ]
}

#[test]
fn realtime_gives_one_record_per_response() {
    for mode in MODES {
        let (records, stats) = run(socket_events(
            "/v1/realtime?model=gpt-realtime",
            mode,
            &realtime_rounds(),
            50_000,
            false,
        ));
        assert_eq!(records.len(), 3, "{mode:?} {records:#?}");
        let r = &records[0];
        assert_eq!(r.api, "realtime");
        assert_eq!(r.request.model.as_deref(), Some("gpt-realtime"));
        assert_eq!(r.request.temperature, Some(0.6));
        assert_eq!(r.request.max_tokens, Some(200));
        assert_eq!(r.response.model.as_deref(), Some("gpt-realtime-2025-08-28"));
        assert_eq!(r.response.id.as_deref(), Some("resp_rt_1"));
        assert_eq!(r.response.finish_reasons, vec!["stop".to_string()]);
        assert_eq!(
            (
                r.usage.input_tokens,
                r.usage.output_tokens,
                r.usage.cache_read_input_tokens
            ),
            (Some(30), Some(20), Some(4))
        );
        // Two audio deltas and a transcript delta: three chunks, audio never kept.
        assert_eq!(r.stream_chunks, Some(3));
        assert!(r.error.is_none() && !r.truncated);
        let r = &records[1];
        assert_eq!(r.response.id.as_deref(), Some("resp_rt_2"));
        assert_eq!(r.response.finish_reasons, vec!["length".to_string()]);
        assert_eq!(r.request.temperature, Some(0.7));
        // The third response was still running when the capture ended.
        assert_eq!(
            records[2].error.as_ref().map(|e| e.error_type.as_str()),
            Some("shutdown")
        );
        assert_eq!(stats.body_parse_errors, 0);
    }
}

#[test]
fn frames_in_the_same_read_as_the_101_answer_are_read() {
    // A Realtime server greets with `session.created` at once: often in the same read as
    // the `101` head.
    let opts = ReplayOptions::default();
    let mode = WsCompression::Deflate;
    let (request, response) = handshake("api.openai.com", "/v1/realtime?model=gpt-realtime", mode);
    let mut client = MessageWriter::new(true, mode);
    let mut server = MessageWriter::new(false, mode);
    let j = |v: Value| serde_json::to_vec(&v).expect("json");
    let mut read = response;
    read.extend(server.text(&j(
        json!({"type": "session.created", "session": {"model": "gpt-realtime-2025-08-28"}}),
    )));
    let events = vec![
        data_event(&opts, Direction::Write, 1_000_000, &request),
        data_event(&opts, Direction::Read, 2_000_000, &read),
        data_event(
            &opts,
            Direction::Write,
            3_000_000,
            &client.text(&j(json!({"type": "response.create"}))),
        ),
        data_event(
            &opts,
            Direction::Read,
            4_000_000,
            &[
                server.text(&j(json!({"type": "response.created", "response": {"id": "resp_1"}}))),
                server.text(&j(json!({"type": "response.done", "response": {"id": "resp_1", "status": "completed", "usage": {"input_tokens": 3, "output_tokens": 4}}}))),
            ]
            .concat(),
        ),
    ];
    let (records, stats) = run(events);
    assert_eq!(records.len(), 1, "{stats:?}");
    let r = &records[0];
    assert_eq!(r.response.model.as_deref(), Some("gpt-realtime-2025-08-28"));
    assert_eq!(
        r.request.model.as_deref(),
        Some("gpt-realtime"),
        "from the URL"
    );
    assert_eq!(
        (r.usage.input_tokens, r.usage.output_tokens),
        (Some(3), Some(4))
    );
    assert!(r.error.is_none());
}

#[test]
fn a_101_without_a_websocket_request_is_not_read_as_websocket() {
    let opts = ReplayOptions::default();
    let request = b"GET /v1/responses HTTP/1.1\r\nHost: api.openai.com\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n";
    let response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02{}";
    let events = vec![
        data_event(&opts, Direction::Write, 1_000, request),
        data_event(&opts, Direction::Read, 2_000, response),
    ];
    let (records, stats) = run(events);
    assert!(records.is_empty());
    assert_eq!(stats.websocket_connections, 0);
}
