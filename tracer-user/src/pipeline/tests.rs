use std::io::Write as _;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::flow::{ConnectionId, Direction, StreamChunk};
use crate::sse::eventstream::encode_message;
use crate::testing::{
    Cassette, ReplayOptions, cassette_dir, cassette_events, chunk_events, comm, load_cassette,
};

fn cassette(name: &str) -> Cassette {
    load_cassette(&cassette_dir().join(format!("{name}.json"))).expect("cassette")
}

fn run_with(config: PipelineConfig, events: Vec<StreamEvent>) -> (Vec<CallRecord>, PipelineStats) {
    let mut p = Pipeline::new(config);
    let mut out = Vec::new();
    for ev in events {
        p.push(ev, &mut out);
    }
    p.finish(&mut out);
    (out, p.stats())
}

fn run(events: Vec<StreamEvent>) -> (Vec<CallRecord>, PipelineStats) {
    run_with(PipelineConfig::default(), events)
}

fn raw_exchange(request: &[u8], response: &[u8], opts: &ReplayOptions) -> Vec<StreamEvent> {
    let mut out = Vec::new();
    let mut now = opts.start_ns;
    chunk_events(
        request,
        Direction::Write,
        opts.write_size,
        &mut now,
        opts,
        &mut out,
    );
    chunk_events(
        response,
        Direction::Read,
        opts.read_size,
        &mut now,
        opts,
        &mut out,
    );
    out
}

#[test]
fn keep_alive_connection_with_several_calls_and_other_requests() {
    let a = cassette("openai__chat_vision_then_400_1");
    let b = cassette("openai__chat_vision_then_400_2");
    let opts = ReplayOptions::default();
    let mut events = cassette_events(&a, &opts);
    let mut now = 9_000_000_000;
    chunk_events(
        b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n",
        Direction::Write,
        100,
        &mut now,
        &opts,
        &mut events,
    );
    chunk_events(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        Direction::Read,
        100,
        &mut now,
        &opts,
        &mut events,
    );
    events.extend(cassette_events(
        &b,
        &ReplayOptions {
            start_ns: 10_000_000_000,
            ..opts.clone()
        },
    ));
    let (records, stats) = run(events);
    let ids: Vec<_> = records
        .iter()
        .map(|r| r.response.id.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        ids,
        vec![
            "chatcmpl-8wq4EsSXTQC0JbGzob3SBHg6pS7Tt",
            "chatcmpl-8wq4H5YA9sq7tPJaCMTmPEAfP9Ex0"
        ]
    );
    assert_eq!(stats.non_llm_requests, 1);
    assert_eq!(stats.calls, 2);
}

#[test]
fn stream_timings_follow_capture_times() {
    let c = cassette("openai__chat_stream_include_usage");
    let opts = ReplayOptions {
        read_size: 64,
        ..ReplayOptions::default()
    };
    let events = cassette_events(&c, &opts);
    let last_read = events.iter().rev().find_map(|e| match e {
        StreamEvent::Data(d) if d.direction == Direction::Read => Some(d.ts_ns),
        _ => None,
    });
    let first_read = events.iter().find_map(|e| match e {
        StreamEvent::Data(d) if d.direction == Direction::Read => Some(d.ts_ns),
        _ => None,
    });
    let (records, _) = run(events);
    let t = &records[0].timing;
    assert_eq!(t.request_start_ns, opts.start_ns);
    assert!(t.request_end_ns > t.request_start_ns);
    assert_eq!(t.response_start_ns, first_read);
    assert_eq!(Some(t.response_end_ns), last_read);
    let first = t.first_chunk_ns.expect("ttft");
    assert!(first >= t.response_start_ns.unwrap_or(0) && first <= t.response_end_ns);
    assert_eq!(
        t.chunk_times_ns.len() as u64,
        records[0].stream_chunks.unwrap_or(0)
    );
    assert!(t.chunk_times_ns.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(records[0].process.comm, "python3");
    assert_eq!(records[0].server_address.as_deref(), Some("api.openai.com"));
    assert_eq!(records[0].server_port, Some(443));
    assert_eq!(records[0].http_version, "1.1");
}

#[test]
fn gap_inside_a_stream_body_marks_incomplete() {
    let c = cassette("anthropic__messages_stream");
    let mut events = cassette_events(
        &c,
        &ReplayOptions {
            read_size: 300,
            ..ReplayOptions::default()
        },
    );
    // Drop one read in the middle of the body and report its bytes as lost.
    let reads: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, StreamEvent::Data(d) if d.direction == Direction::Read))
        .map(|(i, _)| i)
        .collect();
    let victim = reads[reads.len() / 2];
    let StreamEvent::Data(lost) = events[victim].clone() else {
        unreachable!()
    };
    events[victim] = StreamEvent::Gap {
        conn: lost.conn,
        direction: Direction::Read,
        len: lost.data.len() as u64,
        ts_ns: lost.ts_ns,
    };
    let (records, _) = run(events);
    assert_eq!(records.len(), 1);
    let r = &records[0];
    // Lost bytes inside chunked data keep framing: the call completes, flagged.
    // (When the gap hits chunk framing, the call is dropped instead: never guessed.)
    assert!(r.incomplete);
    // Counts and inter-chunk times from a stream with a hole would be wrong: left out. The
    // first chunk came before the loss, so time to first chunk stays.
    assert_eq!(r.stream_chunks, None);
    assert!(r.timing.chunk_times_ns.is_empty());
    assert!(r.timing.first_chunk_ns.is_some());
}

#[test]
fn loss_before_the_first_chunk_leaves_ttft_unknown_and_keeps_captured_usage() {
    let c = cassette("openai__chat_stream_include_usage");
    let opts = ReplayOptions::default();
    let mut events: Vec<StreamEvent> = cassette_events(&c, &opts)
        .into_iter()
        .filter(|e| matches!(e, StreamEvent::Data(d) if d.direction == Direction::Write))
        .collect();
    let mut now = 5_000_000_000;
    // Read until close, one read per event: the first content event is lost.
    let body = String::from_utf8(c.response_body.clone()).expect("utf-8 stream");
    let mut reads = vec![
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n".to_vec(),
    ];
    reads.extend(body.split_inclusive("\n\n").map(|e| e.as_bytes().to_vec()));
    for (i, read) in reads.iter().enumerate() {
        if i == 2 {
            events.push(StreamEvent::Gap {
                conn: opts.conn,
                direction: Direction::Read,
                len: read.len() as u64,
                ts_ns: now,
            });
        } else {
            chunk_events(
                read,
                Direction::Read,
                read.len(),
                &mut now,
                &opts,
                &mut events,
            );
        }
    }
    events.push(StreamEvent::Closed {
        conn: opts.conn,
        ts_ns: now,
    });
    let (records, _) = run(events);
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert!(r.incomplete);
    assert_eq!(r.stream_chunks, None);
    assert_eq!(r.timing.first_chunk_ns, None);
    assert!(r.timing.chunk_times_ns.is_empty());
    // The usage event itself was captured: its values are exact, so they stay.
    assert_eq!(r.usage.input_tokens, Some(23));
    assert_eq!(r.usage.output_tokens, Some(8));
}

#[test]
fn gap_in_response_head_drops_the_call_and_resyncs() {
    let a = cassette("openai__chat_vision_then_400_1");
    let b = cassette("openai__chat_vision_then_400_2");
    let opts = ReplayOptions::default();
    let mut events: Vec<StreamEvent> = cassette_events(&a, &opts)
        .into_iter()
        .filter(|e| matches!(e, StreamEvent::Data(d) if d.direction == Direction::Write))
        .collect();
    let resp = a.response_bytes(512);
    let mut now = 2_000_000_000;
    chunk_events(
        &resp[..20],
        Direction::Read,
        100,
        &mut now,
        &opts,
        &mut events,
    );
    events.push(StreamEvent::Gap {
        conn: opts.conn,
        direction: Direction::Read,
        len: 0,
        ts_ns: now,
    });
    chunk_events(
        &resp[resp.len() - 50..],
        Direction::Read,
        100,
        &mut now,
        &opts,
        &mut events,
    );
    events.extend(cassette_events(
        &b,
        &ReplayOptions {
            start_ns: 10_000_000_000,
            ..opts.clone()
        },
    ));
    let (records, stats) = run(events);
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].response.id.as_deref(),
        Some("chatcmpl-8wq4H5YA9sq7tPJaCMTmPEAfP9Ex0")
    );
    assert_eq!(stats.dropped_by_gap, 1);
}

#[test]
fn connection_closed_mid_stream_is_an_error_and_close_delimited_completes() {
    let c = cassette("openai__chat_stream_no_usage");
    let opts = ReplayOptions::default();
    let mut events = cassette_events(&c, &opts);
    let keep = events.len() * 2 / 3;
    events.truncate(keep);
    events.push(StreamEvent::Closed {
        conn: opts.conn,
        ts_ns: 99_000_000_000,
    });
    let (records, _) = run(events);
    let r = &records[0];
    assert_eq!(
        r.error.as_ref().map(|e| e.error_type.as_str()),
        Some("connection_closed")
    );
    assert!(
        r.response.finish_reasons.is_empty(),
        "finish reason never arrived"
    );
    assert_eq!(r.timing.response_end_ns, 99_000_000_000);

    // The same stream without framing headers: it ends when the connection closes.
    let sse = String::from_utf8_lossy(&c.response_body).into_owned();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n{sse}"
    );
    let mut events = raw_exchange(&c.request_bytes(), response.as_bytes(), &opts);
    events.push(StreamEvent::Closed {
        conn: opts.conn,
        ts_ns: 99_000_000_000,
    });
    let (records, _) = run(events);
    assert_eq!(records[0].error, None);
    assert_eq!(records[0].response.finish_reasons, vec!["stop"]);
    assert_eq!(records[0].stream_chunks, Some(25));
}

#[test]
fn content_capture_builds_semconv_messages() {
    let config = PipelineConfig {
        capture_content: true,
        ..PipelineConfig::default()
    };
    let c = cassette("openai__chat_parallel_tool_calls");
    let (records, _) = run_with(
        config.clone(),
        cassette_events(&c, &ReplayOptions::default()),
    );
    let content = records[0].content.clone().expect("content");
    let out = content.output_messages.expect("output");
    assert_eq!(out[0]["finish_reason"], "tool_call");
    assert_eq!(out[0]["parts"][0]["type"], "tool_call");
    assert!(content.input_messages.expect("input")[0]["parts"][0]["content"].is_string());
    assert!(content.tool_definitions.is_some());

    let c = cassette("anthropic__messages_stream_tool_use");
    let (records, _) = run_with(
        config.clone(),
        cassette_events(&c, &ReplayOptions::default()),
    );
    let out = records[0]
        .content
        .clone()
        .and_then(|c| c.output_messages)
        .expect("output");
    let parts = out[0]["parts"].as_array().expect("parts");
    assert!(parts.iter().any(|p| p["type"] == "text"));
    let call = parts
        .iter()
        .find(|p| p["type"] == "tool_call")
        .expect("tool call");
    assert!(
        call["arguments"].is_object(),
        "streamed partial_json is reassembled: {call}"
    );
    let calls = parts.iter().filter(|p| p["type"] == "tool_call").count();
    assert!(
        records[0]
            .response
            .tool_calls
            .contains(&"get_weather".to_string())
    );
    assert_eq!(records[0].response.tool_calls.len(), calls);

    let c = cassette("gcp.gemini__stream_generate_content_sse");
    let (records, _) = run_with(
        config.clone(),
        cassette_events(&c, &ReplayOptions::default()),
    );
    let content = records[0].content.clone().expect("content");
    assert_eq!(
        content.system_instructions.expect("system")[0]["content"],
        "You are a helpful chatbot."
    );
    assert_eq!(
        content.output_messages.expect("out")[0]["parts"][0]["content"],
        "The capital of France is Paris.\n"
    );

    let c = cassette("openai__responses_stream_1");
    let (records, _) = run_with(config, cassette_events(&c, &ReplayOptions::default()));
    let content = records[0].content.clone().expect("content");
    assert!(
        content
            .input_messages
            .expect("input")
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    assert_eq!(
        content.output_messages.expect("out")[0]["finish_reason"],
        "stop"
    );

    let (records, _) = run(cassette_events(&c, &ReplayOptions::default()));
    assert_eq!(records[0].content, None, "off by default");
}

#[test]
fn missing_usage_is_estimated_only_when_asked() {
    let c = cassette("openai__chat_stream_no_usage");
    let (records, _) = run(cassette_events(&c, &ReplayOptions::default()));
    assert_eq!(records[0].usage.output_tokens, None);
    let config = PipelineConfig {
        estimate_missing_usage: true,
        ..PipelineConfig::default()
    };
    let (records, _) = run_with(
        config.clone(),
        cassette_events(&c, &ReplayOptions::default()),
    );
    let u = &records[0].usage;
    assert!(u.estimated);
    // 25 content chunks are about 25 tokens.
    assert!(
        u.output_tokens.is_some_and(|n| (15..=40).contains(&n)),
        "{u:?}"
    );
    assert!(u.input_tokens.is_some_and(|n| n > 0));
    // Reported usage is never replaced by an estimate.
    let c = cassette("openai__chat_stream_include_usage");
    let (records, _) = run_with(config, cassette_events(&c, &ReplayOptions::default()));
    assert!(!records[0].usage.estimated);
    assert_eq!(records[0].usage.input_tokens, Some(23));
}

#[test]
fn caps_truncate_but_complete_the_call() {
    let c = cassette("openai__chat_prompt_cache_read");
    let config = PipelineConfig {
        response_body_cap: 100,
        request_body_cap: 50,
        ..PipelineConfig::default()
    };
    let (records, stats) = run_with(config, cassette_events(&c, &ReplayOptions::default()));
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert!(r.truncated);
    // The body is not parsed, but its top-level fields were all seen on the wire.
    assert_eq!(r.request.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(r.response.id, None);
    assert_eq!(r.http_status, Some(200));
    assert_eq!(stats.truncated_calls, 1);
}

#[test]
fn other_content_encodings_give_the_same_record() {
    let c = cassette("openai__chat_prompt_cache_read");
    let (base, _) = run(cassette_events(&c, &ReplayOptions::default()));
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(c.response_body.as_slice()).read_to_end_compat(&mut plain);
    let encodings: Vec<(&str, Vec<u8>)> = vec![
        (
            "zstd",
            zstd::stream::encode_all(plain.as_slice(), 3).expect("zstd"),
        ),
        ("deflate", {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&plain).expect("zlib");
            e.finish().expect("zlib")
        }),
        ("deflate", {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&plain).expect("raw");
            e.finish().expect("raw")
        }),
        ("identity", plain.clone()),
    ];
    for (enc, body) in encodings {
        let mut re = c.clone();
        re.response_body = body;
        for (k, v) in re.response_headers.iter_mut() {
            if k.eq_ignore_ascii_case("content-encoding") {
                *v = enc.to_string();
            }
        }
        let (records, _) = run(cassette_events(
            &re,
            &ReplayOptions {
                read_size: 33,
                ..ReplayOptions::default()
            },
        ));
        assert_eq!(records[0].usage, base[0].usage, "{enc}");
        assert_eq!(records[0].response, base[0].response, "{enc}");
    }
}

trait ReadToEndCompat {
    fn read_to_end_compat(self, out: &mut Vec<u8>);
}

impl<R: std::io::Read> ReadToEndCompat for R {
    fn read_to_end_compat(mut self, out: &mut Vec<u8>) {
        self.read_to_end(out).expect("gunzip");
    }
}

#[test]
fn bedrock_invoke_model_with_response_stream() {
    let events = [
        json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-3-haiku", "usage": {"input_tokens": 12, "output_tokens": 1}}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " there"}}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}),
        json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 12, "outputTokenCount": 3}}),
    ];
    let mut body = Vec::new();
    for e in &events {
        let b64 = base64::engine::general_purpose::STANDARD.encode(e.to_string());
        let payload = json!({"bytes": b64}).to_string();
        body.extend(encode_message(
            &[
                (":event-type", "chunk"),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        ));
    }
    let req_body = br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut request = format!("POST /model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream HTTP/1.1\r\nHost: bedrock-runtime.us-east-1.amazonaws.com\r\nContent-Length: {}\r\n\r\n", req_body.len()).into_bytes();
    request.extend_from_slice(req_body);
    let mut response = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.amazon.eventstream\r\nTransfer-Encoding: chunked\r\nx-amzn-RequestId: req-1\r\n\r\n".to_vec();
    response.extend(crate::http::body::encode_chunked(&body, 100));
    let (records, _) = run(raw_exchange(
        &request,
        &response,
        &ReplayOptions {
            read_size: 17,
            ..ReplayOptions::default()
        },
    ));
    let r = &records[0];
    assert_eq!(r.api, "bedrock_invoke_model");
    assert_eq!(r.provider, "aws.bedrock");
    assert_eq!(
        r.request.model.as_deref(),
        Some("anthropic.claude-3-haiku-20240307-v1:0")
    );
    assert_eq!(r.request.max_tokens, Some(100));
    assert!(r.request.stream);
    assert_eq!(r.response.finish_reasons, vec!["end_turn"]);
    assert_eq!(
        (r.usage.input_tokens, r.usage.output_tokens),
        (Some(12), Some(3))
    );
    assert_eq!(r.stream_chunks, Some(2));
    assert_eq!(r.response.request_id.as_deref(), Some("req-1"));
}

#[test]
fn gemini_json_array_stream_matches_the_sse_stream() {
    let c = cassette("gcp.gemini__stream_generate_content_sse");
    let (sse, _) = run(cassette_events(&c, &ReplayOptions::default()));
    let text = String::from_utf8_lossy(&c.response_body).into_owned();
    let items: Vec<&str> = text
        .split("\r\n\r\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    let array = format!("[{}]", items.join(",\r\n"));
    let mut arr = c.clone();
    arr.url = arr.url.replace("?alt=sse", "");
    arr.response_body = array.into_bytes();
    for (k, v) in arr.response_headers.iter_mut() {
        if k.eq_ignore_ascii_case("content-type") {
            *v = "application/json; charset=UTF-8".into();
        }
    }
    let (records, _) = run(cassette_events(
        &arr,
        &ReplayOptions {
            read_size: 5,
            ..ReplayOptions::default()
        },
    ));
    assert_eq!(records[0].response, sse[0].response);
    assert_eq!(records[0].usage, sse[0].usage);
    assert_eq!(records[0].stream_chunks, Some(3));
}

#[test]
fn mid_stream_and_http_errors() {
    let opts = ReplayOptions::default();
    let body = br#"{"model":"claude-3-5-sonnet","max_tokens":10,"stream":true,"messages":[]}"#;
    let mut request = format!("POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nanthropic-version: 2023-06-01\r\nx-api-key: sk-ant-SECRET\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    request.extend_from_slice(body);
    let sse = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_9\",\"model\":\"claude-3-5-sonnet\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n{sse}",
        sse.len()
    );
    let (records, _) = run(raw_exchange(&request, response.as_bytes(), &opts));
    let e = records[0].error.clone().expect("error");
    assert_eq!(e.error_type, "overloaded_error");
    assert!(e.mid_stream);
    assert_eq!(e.http_status, Some(200));
    assert_eq!(records[0].stream_chunks, Some(0));
    assert_eq!(
        records[0].timing.first_chunk_ns, None,
        "ping is not a content chunk"
    );
    assert!(
        !serde_json::to_string(&records)
            .unwrap_or_default()
            .contains("SECRET")
    );

    let req_body = br#"{"messages":[]}"#;
    let mut request = format!("POST /model/amazon.nova-lite-v1%3A0/converse HTTP/1.1\r\nHost: bedrock-runtime.us-east-1.amazonaws.com\r\nContent-Length: {}\r\n\r\n", req_body.len()).into_bytes();
    request.extend_from_slice(req_body);
    let err = br#"{"message":"Too many requests"}"#;
    let mut response = format!("HTTP/1.1 429 Too Many Requests\r\nx-amzn-ErrorType: ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/\r\nContent-Length: {}\r\n\r\n", err.len()).into_bytes();
    response.extend_from_slice(err);
    let (records, _) = run(raw_exchange(&request, &response, &opts));
    let e = records[0].error.clone().expect("error");
    assert_eq!(
        (e.error_type.as_str(), e.http_status, e.mid_stream),
        ("ThrottlingException", Some(429), false)
    );
    assert_eq!(e.message.as_deref(), Some("Too many requests"));
    assert_eq!(records[0].usage, Default::default());
}

#[test]
fn servers_non_http_and_non_llm_produce_no_calls() {
    let c = cassette("openai__chat_vision_then_400_1");
    // A server reads the request and writes the response: directions swapped.
    let events: Vec<StreamEvent> = cassette_events(&c, &ReplayOptions::default())
        .into_iter()
        .map(|e| match e {
            StreamEvent::Data(mut d) => {
                d.direction = if d.direction == Direction::Write {
                    Direction::Read
                } else {
                    Direction::Write
                };
                StreamEvent::Data(d)
            }
            other => other,
        })
        .collect();
    let (records, stats) = run(events);
    assert!(records.is_empty());
    assert_eq!(stats.server_connections, 1);

    let h2 = StreamEvent::Data(StreamChunk {
        conn: ConnectionId { pid: 1, conn: 2 },
        direction: Direction::Write,
        tid: 1,
        comm: comm("go"),
        ts_entry_ns: 1,
        ts_ns: 2,
        data: Bytes::from_static(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04"),
    });
    let (records, stats) = run(vec![h2]);
    assert!(records.is_empty());
    assert_eq!(stats.http2_connections, 1);

    let request = b"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\n\r\n{}";
    let (records, stats) = run(raw_exchange(
        request,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        &ReplayOptions::default(),
    ));
    assert!(records.is_empty());
    assert_eq!(stats.non_llm_requests, 1);
}

#[test]
fn idle_calls_are_flushed_by_tick() {
    let c = cassette("openai__chat_stream_no_usage");
    let mut events = cassette_events(&c, &ReplayOptions::default());
    events.truncate(events.len() / 2);
    let mut p = Pipeline::new(PipelineConfig {
        idle_timeout_ns: 1_000_000_000,
        ..PipelineConfig::default()
    });
    let mut out = Vec::new();
    for ev in events {
        p.push(ev, &mut out);
    }
    assert!(out.is_empty());
    p.tick(1_000_000_000_000, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].error.as_ref().map(|e| e.error_type.as_str()),
        Some("idle_timeout")
    );
    assert_eq!(p.stats().open_connections, 0);
    assert_eq!(p.stats().calls_in_flight, 0);
}

#[test]
fn compressed_sse_events_are_timed_by_the_read_that_completed_them() {
    let c = cassette("openai__chat_stream_include_usage");
    let sse = String::from_utf8_lossy(&c.response_body).into_owned();
    let events: Vec<String> = sse.split_inclusive("\n\n").map(str::to_string).collect();
    // One gzip sync-flush per SSE event and one read per event: each event must carry the
    // time of its own read, not of the next one.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let mut last = 0;
    for e in &events {
        enc.write_all(e.as_bytes()).expect("gzip");
        enc.flush().expect("flush");
        let now = enc.get_ref().len();
        pieces.push(enc.get_ref()[last..now].to_vec());
        last = now;
    }
    let tail = enc.finish().expect("gzip");
    pieces.push(tail[last..].to_vec());
    let opts = ReplayOptions::default();
    let mut out = Vec::new();
    let mut now = opts.start_ns;
    chunk_events(
        &c.request_bytes(),
        Direction::Write,
        1 << 20,
        &mut now,
        &opts,
        &mut out,
    );
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
    chunk_events(head, Direction::Read, 1 << 20, &mut now, &opts, &mut out);
    let mut read_times = Vec::new();
    for p in &pieces {
        let framed = format!("{:x}\r\n", p.len())
            .into_bytes()
            .into_iter()
            .chain(p.iter().copied())
            .chain(*b"\r\n")
            .collect::<Vec<u8>>();
        read_times.push(now + opts.step_ns / 2);
        chunk_events(&framed, Direction::Read, 1 << 20, &mut now, &opts, &mut out);
    }
    chunk_events(
        b"0\r\n\r\n",
        Direction::Read,
        1 << 20,
        &mut now,
        &opts,
        &mut out,
    );
    let (records, _) = run(out);
    let r = &records[0];
    assert_eq!(r.stream_chunks, Some(8));
    // Content events are the 2nd..9th SSE events (the 1st is role-only).
    let expected: Vec<u64> = events
        .iter()
        .zip(&read_times)
        .filter(|(e, _)| e.contains("\"content\":\"") && !e.contains("\"content\":\"\""))
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(r.timing.chunk_times_ns, expected);
    assert_eq!(r.timing.first_chunk_ns, expected.first().copied());
}

#[test]
fn pipelined_requests_and_interleaved_connections() {
    let a = cassette("openai__chat_vision_then_400_1");
    let b = cassette("anthropic__messages_stream");
    // Pipelined on one connection: both requests, then both responses.
    let opts = ReplayOptions::default();
    let mut events = Vec::new();
    let mut now = opts.start_ns;
    chunk_events(
        &a.request_bytes(),
        Direction::Write,
        1000,
        &mut now,
        &opts,
        &mut events,
    );
    chunk_events(
        &b.request_bytes(),
        Direction::Write,
        1000,
        &mut now,
        &opts,
        &mut events,
    );
    chunk_events(
        &a.response_bytes(100),
        Direction::Read,
        333,
        &mut now,
        &opts,
        &mut events,
    );
    chunk_events(
        &b.response_bytes(100),
        Direction::Read,
        333,
        &mut now,
        &opts,
        &mut events,
    );
    let (records, _) = run(events);
    let ids: Vec<_> = records
        .iter()
        .map(|r| r.response.id.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        ids,
        vec![
            "chatcmpl-8wq4EsSXTQC0JbGzob3SBHg6pS7Tt",
            "msg_01MXWxhWoPSgrYhjTuMDM6F1"
        ]
    );
    assert_eq!(records[1].stream_chunks, Some(70));

    // Two connections of two processes, events interleaved one by one.
    let opts_b = ReplayOptions {
        conn: ConnectionId {
            pid: 99,
            conn: 0x77,
        },
        comm: "node".into(),
        read_size: 50,
        ..ReplayOptions::default()
    };
    let ea = cassette_events(
        &a,
        &ReplayOptions {
            read_size: 50,
            ..ReplayOptions::default()
        },
    );
    let eb = cassette_events(&b, &opts_b);
    let mut mixed = Vec::new();
    let (mut ia, mut ib) = (ea.into_iter(), eb.into_iter());
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => break,
            (x, y) => mixed.extend(x.into_iter().chain(y)),
        }
    }
    let (records, _) = run(mixed);
    assert_eq!(records.len(), 2);
    let b_rec = records.iter().find(|r| r.process.pid == 99).expect("b");
    assert_eq!(b_rec.process.comm, "node");
    assert_eq!(
        b_rec.response.id.as_deref(),
        Some("msg_01MXWxhWoPSgrYhjTuMDM6F1")
    );
    let a_rec = records.iter().find(|r| r.process.pid == 4242).expect("a");
    assert_eq!(a_rec.usage.input_tokens, Some(438));
}

#[test]
fn long_streams_are_unbounded_in_length_but_not_in_memory() {
    let req_body =
        br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"go"}]}"#;
    let mut request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: {}\r\n\r\n",
        req_body.len()
    )
    .into_bytes();
    request.extend_from_slice(req_body);
    let event = "data: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n";
    let n = 50_000;
    let mut body = event.repeat(n);
    // One oversized event: cut by the per-event cap, flagged, not parsed.
    body.push_str(&format!(
        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
        "y".repeat(5000)
    ));
    body.push_str("data: [DONE]\n\n");
    let mut response =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    response.extend(crate::http::body::encode_chunked(body.as_bytes(), 8192));
    let config = PipelineConfig {
        max_chunk_times: 1000,
        stream_event_cap: 4096,
        ..PipelineConfig::default()
    };
    let (records, _) = run_with(
        config,
        raw_exchange(
            &request,
            &response,
            &ReplayOptions {
                read_size: 16 * 1024,
                ..ReplayOptions::default()
            },
        ),
    );
    let r = &records[0];
    assert_eq!(r.stream_chunks, Some(n as u64));
    assert_eq!(r.timing.chunk_times_ns.len(), 1000);
    assert!(r.truncated, "the oversized event is flagged");
}

#[test]
fn replay_helper_frames_requests_like_a_client() {
    let c = cassette("aws.bedrock__converse_stream_tool_use");
    let req = String::from_utf8_lossy(&c.request_bytes()).into_owned();
    assert!(req.starts_with(
        "POST /model/anthropic.claude-3-sonnet-20240229-v1%3A0/converse-stream HTTP/1.1\r\n"
    ));
    assert!(
        req.contains("Host: bedrock-runtime.us-east-1.amazonaws.com\r\n"),
        "Host added"
    );
    assert!(req.contains(&format!("Content-Length: {}\r\n", c.request_body.len())));
    let resp = c.response_bytes(64);
    assert!(
        resp.windows(28)
            .any(|w| w == b"Transfer-Encoding: chunked\r\n")
    );
    assert!(resp.ends_with(b"0\r\n\r\n"));
}

#[test]
fn compressed_request_bodies_are_decoded() {
    let c = cassette("openai__chat_parallel_tool_calls");
    let (base, _) = run(cassette_events(&c, &ReplayOptions::default()));
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&c.request_body).expect("gzip");
    let mut gz = c.clone();
    gz.request_body = e.finish().expect("gzip");
    gz.request_headers
        .push(("Content-Encoding".into(), "gzip".into()));
    let (records, _) = run(cassette_events(
        &gz,
        &ReplayOptions {
            write_size: 10,
            ..ReplayOptions::default()
        },
    ));
    assert_eq!(records[0].request, base[0].request);
    assert_eq!(records[0].request.model.as_deref(), Some("gpt-4.1-nano"));
}

#[test]
fn ollama_generate_ndjson_stream() {
    let req_body = br#"{"model":"llama3","prompt":"Why is the sky blue?","options":{"temperature":0.2,"num_predict":64}}"#;
    let mut request = format!(
        "POST /api/generate HTTP/1.1\r\nHost: localhost:11434\r\nContent-Length: {}\r\n\r\n",
        req_body.len()
    )
    .into_bytes();
    request.extend_from_slice(req_body);
    let lines = [
        r#"{"model":"llama3","response":"Ray","done":false}"#,
        r#"{"model":"llama3","response":"","done":false}"#,
        r#"{"model":"llama3","response":"leigh","done":false}"#,
        r#"{"model":"llama3","response":"","done":true,"done_reason":"stop","prompt_eval_count":9,"eval_count":2}"#,
    ];
    let body = lines.join("\n") + "\n";
    let mut response = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    response.extend(crate::http::body::encode_chunked(body.as_bytes(), 20));
    let config = PipelineConfig {
        capture_content: true,
        ..PipelineConfig::default()
    };
    let (records, _) = run_with(
        config,
        raw_exchange(
            &request,
            &response,
            &ReplayOptions {
                read_size: 9,
                ..ReplayOptions::default()
            },
        ),
    );
    let r = &records[0];
    assert_eq!(
        (r.provider.as_str(), r.api.as_str(), r.operation.as_str()),
        ("ollama", "ollama_generate", "text_completion")
    );
    assert_eq!(r.server_port, Some(11434));
    assert!(r.request.stream, "Ollama streams by default");
    assert_eq!(
        (r.request.temperature, r.request.max_tokens),
        (Some(0.2), Some(64))
    );
    assert_eq!(r.stream_chunks, Some(2));
    assert_eq!(r.response.finish_reasons, vec!["stop"]);
    assert_eq!(
        (r.usage.input_tokens, r.usage.output_tokens),
        (Some(9), Some(2))
    );
    let out = r
        .content
        .clone()
        .and_then(|c| c.output_messages)
        .expect("output");
    assert_eq!(out[0]["parts"][0]["content"], "Rayleigh");
}

#[test]
fn pipeline_can_move_to_another_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Pipeline>();
    assert_send::<CallRecord>();
}

/// A prompt larger than the kernel's per-call capture cap: one `SSL_write` whose tail was not
/// copied (a gap), then a later write (of the same body) captured whole. The parameters the
/// captured prefix holds are real bytes of the wire and are reported; bytes after the gap
/// (mid-JSON, their context unknown) are never scanned for parameters.
#[test]
fn long_prompt_over_the_capture_cap_keeps_the_parameters_of_its_prefix() {
    let mut c = cassette("anthropic__messages_stream");
    let filler = "lorem ipsum ".repeat(40_000);
    // Text after the gap that looks like top-level fields to a scanner that lost its place.
    let decoy = r#"x", "model": "decoy-model", "temperature": 9.9, "y": "#;
    let body = json!({
        "model": "claude-3-haiku-20240307",
        "max_tokens": 1024,
        "stream": true,
        "temperature": 0.3,
        "messages": [
            {"role": "user", "content": format!("{filler}{decoy}{filler}")}
        ],
    });
    // Keys in the order the client wrote them (serde_json sorts maps).
    let body = format!(
        r#"{{"model": {}, "max_tokens": 1024, "stream": true, "temperature": 0.3, "messages": {}}}"#,
        body["model"], body["messages"]
    );
    c.request_body = body.into_bytes();
    let request = c.request_bytes();
    let cap = 256 * 1024;
    let decoy_at = request
        .windows(12)
        .position(|w| w == br#""decoy-model"#)
        .unwrap_or(0);
    assert!(decoy_at > cap, "the decoy sits after the gap");
    let opts = ReplayOptions::default();
    let mut events = Vec::new();
    let mut now = opts.start_ns;
    // First write: the head and body up to the cap copied, the rest of the call lost.
    let first_call = cap + 100_000;
    chunk_events(
        &request[..cap],
        Direction::Write,
        cap,
        &mut now,
        &opts,
        &mut events,
    );
    events.push(StreamEvent::Gap {
        conn: opts.conn,
        direction: Direction::Write,
        len: (first_call - cap) as u64,
        ts_ns: now,
    });
    // The rest of the body in later writes, captured whole (the decoy among them).
    chunk_events(
        &request[first_call..],
        Direction::Write,
        16 * 1024,
        &mut now,
        &opts,
        &mut events,
    );
    now += opts.server_latency_ns;
    chunk_events(
        &c.response_bytes(opts.transfer_chunk_size),
        Direction::Read,
        opts.read_size,
        &mut now,
        &opts,
        &mut events,
    );
    let (records, stats) = run(events);
    assert_eq!(records.len(), 1, "{stats:?}");
    let r = &records[0];
    assert!(r.incomplete, "bytes were lost: the call says so");
    assert_eq!(r.request.model.as_deref(), Some("claude-3-haiku-20240307"));
    assert!(r.request.stream);
    assert_eq!(r.request.temperature, Some(0.3));
    assert_eq!(r.request.max_tokens, Some(1024));
    assert_eq!(r.usage.output_tokens, c.expected["output_tokens"].as_u64());
}

/// A plain-TCP connection id (a socket's kernel address).
const PLAIN_CONN: ConnectionId = ConnectionId {
    pid: 77,
    conn: 0xffff_8881_2345_6780,
};

#[test]
fn plain_http_calls_default_to_port_80_and_non_llm_connections_are_reported() {
    let llm = raw_exchange(
        b"POST /api/chat HTTP/1.1\r\nHost: 10.0.0.5\r\nContent-Length: 47\r\n\r\n{\"model\":\"llama3\",\"messages\":[],\"stream\":false}",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 45\r\n\r\n{\"model\":\"llama3\",\"done\":true,\"eval_count\":1}",
        &ReplayOptions {
            conn: PLAIN_CONN,
            ..ReplayOptions::default()
        },
    );
    let other = ConnectionId {
        conn: PLAIN_CONN.conn + 0x100,
        ..PLAIN_CONN
    };
    let page = raw_exchange(
        b"GET /api/users HTTP/1.1\r\nHost: 10.0.0.5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]",
        &ReplayOptions {
            conn: other,
            ..ReplayOptions::default()
        },
    );
    let tls_page = raw_exchange(
        b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]",
        &ReplayOptions::default(),
    );
    let mut p = Pipeline::new(PipelineConfig::default());
    let mut out = Vec::new();
    for ev in llm.into_iter().chain(page).chain(tls_page) {
        p.push(ev, &mut out);
    }
    p.finish(&mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].provider, "ollama");
    assert_eq!(out[0].server_address.as_deref(), Some("10.0.0.5"));
    assert_eq!(out[0].server_port, Some(80), "plain HTTP's default port");
    assert_eq!(
        p.take_not_llm_connections(),
        [other],
        "only the plain connection whose first request is not an LLM call"
    );
    assert!(p.take_not_llm_connections().is_empty());
}

/// llama.cpp server's native `/completion` (response shapes of its server README), whole and
/// streamed (SSE: `content` pieces, then a last chunk with `stop`, `stop_type` and the counts).
#[test]
fn llama_cpp_completion_whole_and_streamed() {
    fn exchange(body: &str, response_head: &str, response: &str, at: u64) -> Vec<StreamEvent> {
        raw_exchange(
            format!(
                "POST /completion HTTP/1.1\r\nHost: 10.0.0.9:8080\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
            format!("{response_head}{response}").as_bytes(),
            &ReplayOptions {
                conn: ConnectionId {
                    conn: PLAIN_CONN.conn + at,
                    ..PLAIN_CONN
                },
                start_ns: at * 1_000_000_000,
                ..ReplayOptions::default()
            },
        )
    }
    let whole = r#"{"content":" Paris.","id_slot":0,"stop":true,"model":"qwen2.5-0.5b","tokens_predicted":3,"tokens_evaluated":6,"stop_type":"eos","stopping_word":"","timings":{"prompt_n":6,"predicted_n":3}}"#;
    let mut events = exchange(
        r#"{"prompt":"The capital of France is","n_predict":16,"temperature":0.2}"#,
        &format!(
            "HTTP/1.1 200 OK\r\nServer: llama.cpp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            whole.len()
        ),
        whole,
        1,
    );
    let stream = concat!(
        "data: {\"index\":0,\"content\":\" Paris\",\"stop\":false,\"tokens_predicted\":1,\"tokens_evaluated\":6}\n\n",
        "data: {\"index\":0,\"content\":\".\",\"stop\":false,\"tokens_predicted\":2,\"tokens_evaluated\":6}\n\n",
        "data: {\"index\":0,\"content\":\"\",\"stop\":true,\"model\":\"qwen2.5-0.5b\",\"tokens_predicted\":2,\"tokens_evaluated\":6,\"stop_type\":\"limit\",\"timings\":{\"prompt_n\":6,\"predicted_n\":2}}\n\n",
    );
    events.extend(exchange(
        r#"{"prompt":"The capital of France is","n_predict":2,"stream":true}"#,
        &format!(
            "HTTP/1.1 200 OK\r\nServer: llama.cpp\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n",
            stream.len()
        ),
        stream,
        2,
    ));
    let (records, _) = run(events);
    assert_eq!(records.len(), 2, "{records:#?}");
    for r in &records {
        assert_eq!(r.provider, "llama_cpp");
        assert_eq!(r.api, "llama_cpp_completion");
        assert_eq!(r.operation.as_str(), "text_completion");
        assert_eq!(r.response.model.as_deref(), Some("qwen2.5-0.5b"));
        assert_eq!(r.usage.input_tokens, Some(6));
        assert_eq!(r.server_port, Some(8080));
    }
    let (whole, streamed) = (&records[0], &records[1]);
    assert_eq!(whole.usage.output_tokens, Some(3));
    assert_eq!(whole.response.finish_reasons, ["stop"]);
    assert_eq!(whole.request.max_tokens, Some(16));
    assert_eq!(whole.request.temperature, Some(0.2));
    assert!(streamed.request.stream);
    assert_eq!(streamed.usage.output_tokens, Some(2));
    assert_eq!(streamed.response.finish_reasons, ["length"]);
    assert_eq!(streamed.stream_chunks, Some(2), "two content pieces");
}

/// `--memory-limit`: many concurrent calls with long prompts share one body budget. Past it,
/// bodies are cut and calls marked truncated, but every call still gives a record with the
/// model seen on the wire and the response's values, and the budget is given back.
#[test]
fn memory_budget_bounds_concurrent_bodies_and_every_call_completes() {
    const CLIENTS: u64 = 100;
    const LIMIT: usize = 1024 * 1024;
    let c = cassette("openai__chat_prompt_cache_read");
    let prompt = "x".repeat(64 * 1024);
    let body = format!(
        r#"{{"model":"gpt-4o-mini","temperature":0.5,"messages":[{{"role":"user","content":"{prompt}"}}]}}"#
    );
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let opts_of = |i: u64| ReplayOptions {
        conn: ConnectionId {
            pid: 4242,
            conn: 0x7000_0000 + i * 0x100,
        },
        ..ReplayOptions::default()
    };
    // The clients write their requests side by side, 16 KiB at a time, before any response
    // arrives: all bodies are in flight at once.
    let mut events = Vec::new();
    let mut now = 1_000_000_000;
    for piece in request.as_bytes().chunks(16 * 1024) {
        for i in 0..CLIENTS {
            let opts = opts_of(i);
            chunk_events(
                piece,
                Direction::Write,
                piece.len(),
                &mut now,
                &opts,
                &mut events,
            );
        }
    }
    for i in 0..CLIENTS {
        let opts = opts_of(i);
        chunk_events(
            &c.response_bytes(1000),
            Direction::Read,
            4096,
            &mut now,
            &opts,
            &mut events,
        );
    }
    let budget = MemoryBudget::new(LIMIT);
    let mut pipeline = Pipeline::with_budget(PipelineConfig::default(), budget.clone());
    let mut records = Vec::new();
    for ev in events {
        pipeline.push(ev, &mut records);
    }
    pipeline.finish(&mut records);
    assert_eq!(records.len() as u64, CLIENTS);
    assert!(budget.peak() <= LIMIT, "peak {} > {LIMIT}", budget.peak());
    assert_eq!(budget.used(), 0, "every body gave its budget back");
    let stats = pipeline.stats();
    assert!(stats.budget_refusals > 0, "the budget was reached");
    assert!(stats.truncated_calls > 0 && stats.truncated_calls < CLIENTS);
    for r in &records {
        assert_eq!(r.request.model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(r.request.temperature, Some(0.5));
        assert_eq!(
            r.response.id.as_deref(),
            c.expected["response_id"].as_str(),
            "response values survive a cut request"
        );
        assert_eq!(r.usage.input_tokens, c.expected["input_tokens"].as_u64());
    }
}

/// MCP over Streamable HTTP: an `initialize` answered by SSE (the server names the session),
/// the `initialized` notification answered 202, tool calls answered by JSON: a result, a
/// JSON-RPC error, and a tool error.
#[test]
fn mcp_streamable_http_calls() {
    fn post(body: &str, session: Option<&str>) -> String {
        let session = session
            .map(|s| format!("Mcp-Session-Id: {s}\r\nMCP-Protocol-Version: 2025-06-18\r\n"))
            .unwrap_or_default();
        format!(
            "POST /mcp HTTP/1.1\r\nHost: tools.internal:8443\r\nAuthorization: Bearer secret-token\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\n{session}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
    fn answer(status: &str, content_type: &str, extra: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let init_answer = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"serverInfo\":{\"name\":\"s\",\"version\":\"1\"}}}\n\n";
    let exchanges: Vec<(String, String)> = vec![
        (
            post(init, None),
            answer(
                "200 OK",
                "text/event-stream",
                "Mcp-Session-Id: sess-raw-1\r\n",
                init_answer,
            ),
        ),
        (
            post(
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                Some("sess-raw-1"),
            ),
            answer("202 Accepted", "text/plain", "", ""),
        ),
        (
            post(
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":40}}}"#,
                Some("sess-raw-1"),
            ),
            answer(
                "200 OK",
                "application/json",
                "",
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"42"}],"isError":false}}"#,
            ),
        ),
        (
            post(
                r#"{"jsonrpc":"2.0","id":"r-2","method":"tools/call","params":{"name":"nope"}}"#,
                Some("sess-raw-1"),
            ),
            answer(
                "200 OK",
                "application/json",
                "",
                r#"{"jsonrpc":"2.0","id":"r-2","error":{"code":-32602,"message":"Unknown tool: nope"}}"#,
            ),
        ),
        (
            post(
                r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"fail"}}"#,
                Some("sess-raw-1"),
            ),
            answer(
                "200 OK",
                "text/event-stream",
                "",
                "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"content\":[],\"isError\":true}}\n\n",
            ),
        ),
    ];
    let mut events = Vec::new();
    let mut now = 1_000_000_000;
    let opts = ReplayOptions::default();
    for (request, response) in &exchanges {
        chunk_events(
            request.as_bytes(),
            Direction::Write,
            1000,
            &mut now,
            &opts,
            &mut events,
        );
        chunk_events(
            response.as_bytes(),
            Direction::Read,
            1000,
            &mut now,
            &opts,
            &mut events,
        );
    }
    let mut pipeline = Pipeline::new(PipelineConfig {
        capture_content: true,
        ..PipelineConfig::default()
    });
    let mut records = Vec::new();
    for ev in events {
        pipeline.push(ev, &mut records);
    }
    pipeline.finish(&mut records);
    assert!(records.is_empty(), "MCP exchanges are not LLM calls");
    let calls = pipeline.take_mcp_calls();
    type Summary = (String, Option<String>, Option<String>, Option<String>);
    let summary: Vec<Summary> = calls
        .iter()
        .map(|c| {
            (
                c.method.clone(),
                c.request_id.clone(),
                c.tool_name.clone(),
                c.error_type.clone(),
            )
        })
        .collect();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        summary,
        vec![
            ("initialize".to_string(), s("0"), None, None),
            ("notifications/initialized".to_string(), None, None, None),
            ("tools/call".to_string(), s("1"), s("add"), None),
            ("tools/call".to_string(), s("r-2"), s("nope"), s("-32602")),
            ("tools/call".to_string(), s("3"), s("fail"), s("tool_error")),
        ]
    );
    let digest = crate::genai::mcp::session_digest("sess-raw-1");
    for c in &calls {
        assert_eq!(c.session_id.as_deref(), Some(digest.as_str()), "{c:?}");
        assert_eq!(c.protocol_version.as_deref(), Some("2025-06-18"), "{c:?}");
        assert_eq!(c.server_address.as_deref(), Some("tools.internal"));
        assert_eq!(c.server_port, Some(8443));
        assert!(c.end_ns > c.start_ns, "{c:?}");
    }
    assert_eq!(calls[2].arguments.as_deref(), Some(r#"{"a":2,"b":40}"#));
    assert_eq!(
        calls[2].result.as_deref(),
        Some(r#"[{"text":"42","type":"text"}]"#)
    );
    assert_eq!(calls[3].rpc_status_code.as_deref(), Some("-32602"));
    assert_eq!(
        calls[3].error_message.as_deref(),
        Some("Unknown tool: nope")
    );
    assert_eq!(pipeline.stats().mcp_calls, 5);
}

/// A POST that looks like MCP but whose body is not JSON-RPC is an ordinary request; a
/// request whose answer never comes ends with why.
#[test]
fn mcp_lookalikes_and_unanswered_requests() {
    let body = r#"{"query":"not json-rpc"}"#;
    let request = format!(
        "POST /search HTTP/1.1\r\nHost: x\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let rpc = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#;
    let unanswered = format!(
        "POST /mcp HTTP/1.1\r\nHost: x\r\nMcp-Session-Id: s\r\nContent-Length: {}\r\n\r\n{rpc}",
        rpc.len()
    );
    let mut events = Vec::new();
    let mut now = 1_000_000_000;
    let opts = ReplayOptions {
        close: true,
        ..ReplayOptions::default()
    };
    chunk_events(
        request.as_bytes(),
        Direction::Write,
        1000,
        &mut now,
        &opts,
        &mut events,
    );
    chunk_events(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        Direction::Read,
        1000,
        &mut now,
        &opts,
        &mut events,
    );
    chunk_events(
        unanswered.as_bytes(),
        Direction::Write,
        1000,
        &mut now,
        &opts,
        &mut events,
    );
    chunk_events(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n: keep-alive\n\n",
        Direction::Read,
        1000,
        &mut now,
        &opts,
        &mut events,
    );
    let mut pipeline = Pipeline::new(PipelineConfig::default());
    let mut records = Vec::new();
    for ev in events {
        pipeline.push(ev, &mut records);
    }
    pipeline.finish(&mut records);
    let calls = pipeline.take_mcp_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].method, "tools/list");
    assert!(calls[0].error_type.is_some(), "{calls:?}");
    assert_eq!(pipeline.stats().non_llm_requests, 1);
}

/// MCP over stdio: a pipe channel's JSON-RPC lines become MCP calls, never HTTP (the
/// connection stage does not see them); a TLS connection of the same process beside it is
/// parsed as before.
#[test]
fn mcp_stdio_channels_bypass_http() {
    let pipe = ConnectionId {
        pid: 77,
        conn: tracer_common::pipe::conn_of(1234),
    };
    let chunk = |direction, at: u64, data: &str| {
        StreamEvent::Data(StreamChunk {
            conn: pipe,
            direction,
            tid: 77,
            comm: comm("agent"),
            ts_entry_ns: at,
            ts_ns: at + 1,
            data: Bytes::copy_from_slice(data.as_bytes()),
        })
    };
    let mut events = vec![
        chunk(
            Direction::Write,
            1_000,
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"add\"}}\n",
        ),
        chunk(
            Direction::Read,
            2_000,
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[]}}\n",
        ),
    ];
    events.extend(cassette_events(
        &cassette("openai__chat_stream_include_usage"),
        &ReplayOptions::default(),
    ));
    let mut p = Pipeline::new(PipelineConfig::default());
    let mut out = Vec::new();
    for ev in events {
        p.push(ev, &mut out);
    }
    p.finish(&mut out);
    assert_eq!(out.len(), 1, "the LLM call beside the MCP channel");
    let calls = p.take_mcp_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "tools/call");
    assert_eq!(calls[0].tool_name.as_deref(), Some("add"));
    assert_eq!(calls[0].transport, crate::genai::McpTransport::Pipe);
    assert_eq!((calls[0].start_ns, calls[0].end_ns), (1_000, 2_001));
    let stats = p.stats();
    assert_eq!(stats.mcp_stdio_channels, 1);
    assert_eq!(stats.mcp_calls, 1);
    assert_eq!(stats.non_http_connections, 0);
    assert_eq!(stats.http_parse_errors, 0);
}

/// What capture may stop copying: a server's side for good, an HTTP/1 client after a request
/// that is not an LLM call until its next request; never bytes still searched for a request
/// line, a connection with an LLM call in flight, nor HTTP/2 (its header state needs every
/// byte).
#[test]
fn connections_of_no_use_are_offered_for_muting() {
    let conn = |n: u64| ConnectionId { pid: 1, conn: n };
    let opts = |n: u64| ReplayOptions {
        conn: conn(n),
        ..ReplayOptions::default()
    };
    let mut p = Pipeline::new(PipelineConfig::default());
    let mut out = Vec::new();
    // 1: a download, 2: a server's side, 3: not HTTP (yet), 4: HTTP/2.
    let download = raw_exchange(
        b"GET /file HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfile",
        &opts(1),
    );
    let served: Vec<StreamEvent> = raw_exchange(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n",
        &opts(2),
    )
    .into_iter()
    .rev()
    .collect();
    let raw = raw_exchange(b"\x00\x01binary", b"\x02", &opts(3));
    let h2 = raw_exchange(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"", &opts(4));
    for ev in download.into_iter().chain(served).chain(raw).chain(h2) {
        p.push(ev, &mut out);
    }
    let mut offered = p.take_mutable_connections();
    offered.sort_by_key(|(c, _)| *c);
    assert_eq!(
        offered,
        [
            (conn(1), MuteSpan::UntilRequest),
            (conn(2), MuteSpan::UntilClose),
        ]
    );
    assert!(p.take_mutable_connections().is_empty(), "offered once");

    // A request that is not an LLM call, then an LLM call whose answer has not come yet.
    let c = cassette("openai__chat_stream_include_usage");
    let mut events = raw_exchange(
        b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        &opts(5),
    );
    let llm: Vec<StreamEvent> = cassette_events(&c, &opts(5))
        .into_iter()
        .filter(|e| matches!(e, StreamEvent::Data(d) if d.direction == Direction::Write))
        .collect();
    assert!(!llm.is_empty());
    events.extend(llm);
    for ev in events {
        p.push(ev, &mut out);
    }
    assert!(
        p.take_mutable_connections().is_empty(),
        "an LLM call is in flight on it"
    );
}
