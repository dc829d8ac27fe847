use bytes::Bytes;

use super::*;
use crate::testing::comm;

const CONN: ConnectionId = ConnectionId { pid: 1, conn: 0x10 };

fn data(direction: Direction, ts: u64, bytes: &[u8]) -> StreamEvent {
    StreamEvent::Data(StreamChunk {
        conn: CONN,
        direction,
        tid: 2,
        comm: comm("curl"),
        ts_entry_ns: ts,
        ts_ns: ts + 1,
        data: Bytes::copy_from_slice(bytes),
    })
}

fn run(events: Vec<StreamEvent>) -> (Vec<HttpEvent>, ConnectionStats) {
    let mut t = ConnectionTracker::new(ConnectionConfig::default());
    let mut out = Vec::new();
    for ev in events {
        t.push(ev, &mut out);
    }
    (out, t.stats().clone())
}

fn ends(events: &[HttpEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            HttpEvent::ResponseEnd { key, .. } => Some(key.seq),
            _ => None,
        })
        .collect()
}

fn bodies(events: &[HttpEvent], seq: u64) -> Vec<u8> {
    events
        .iter()
        .filter_map(|e| match e {
            HttpEvent::ResponseBody { key, data, .. } if key.seq == seq => Some(data.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn keep_alive_and_pipelining() {
    let (out, _) = run(vec![
        data(Direction::Write, 10, b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}GET /b HTTP/1.1\r\nHost: x\r\n\r\n"),
        data(Direction::Read, 20, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n"),
        data(Direction::Write, 30, b"HEAD /c HTTP/1.1\r\nHost: x\r\n\r\n"),
        data(Direction::Read, 40, b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n"),
        data(Direction::Write, 50, b"POST /d HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"),
        data(Direction::Read, 60, b"HTTP/1.1 100 Continue\r\n\r\n"),
        data(Direction::Write, 70, b"z"),
        data(Direction::Read, 80, b"HTTP/1.1 204 No Content\r\n\r\n"),
    ]);
    assert_eq!(ends(&out), vec![0, 1, 2, 3]);
    assert_eq!(bodies(&out, 0), b"abc");
    assert_eq!(bodies(&out, 1), b"de");
    assert!(bodies(&out, 2).is_empty(), "HEAD response has no body");
}

#[test]
fn close_delimited_and_closed_connections() {
    let (out, _) = run(vec![
        data(
            Direction::Write,
            10,
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        ),
        data(
            Direction::Read,
            20,
            b"HTTP/1.1 200 OK\r\n\r\nstream until close",
        ),
        StreamEvent::Closed {
            conn: CONN,
            ts_ns: 30,
        },
    ]);
    assert_eq!(ends(&out), vec![0]);
    assert_eq!(bodies(&out, 0), b"stream until close");

    let (out, _) = run(vec![
        data(
            Direction::Write,
            10,
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        ),
        data(
            Direction::Read,
            20,
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
        ),
        StreamEvent::Closed {
            conn: CONN,
            ts_ns: 30,
        },
    ]);
    assert!(out.iter().any(|e| matches!(
        e,
        HttpEvent::Aborted {
            reason: AbortReason::ConnectionClosed,
            ..
        }
    )));
}

#[test]
fn servers_and_non_http_are_ignored() {
    let (out, stats) = run(vec![data(
        Direction::Read,
        1,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n",
    )]);
    assert!(out.is_empty());
    assert_eq!(stats.server_connections, 1);
    let (out, stats) = run(vec![data(
        Direction::Write,
        1,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    )]);
    assert!(out.is_empty());
    assert_eq!(stats.http2_connections, 1, "HTTP/2 goes to the http2 stage");
    let (out, stats) = run(vec![data(
        Direction::Read,
        1,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    )]);
    assert!(out.is_empty());
    assert_eq!(stats.server_connections, 1, "reading the preface: a server");
    // Binary traffic: looked through for a message start, then given up on (bounded).
    let noise = vec![0x17u8; 300 * 1024];
    let (out, stats) = run(vec![data(Direction::Write, 1, &noise)]);
    assert!(out.is_empty());
    assert_eq!(stats.non_http_connections, 1);
}

#[test]
fn tracing_that_starts_mid_connection_syncs_on_the_next_exchange() {
    let (out, stats) = run(vec![
        // The tail of a request body and of a response body written before tracing began.
        data(Direction::Write, 1, b"lo world\"}]}"),
        data(
            Direction::Read,
            2,
            b"ta: {\"x\":1}\n\ndata: [DONE]\n\n\r\n0\r\n\r\n",
        ),
        data(
            Direction::Write,
            10,
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        ),
        data(
            Direction::Read,
            20,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ),
    ]);
    assert_eq!(ends(&out), vec![0]);
    assert_eq!(bodies(&out, 0), b"ok");
    assert_eq!(stats.non_http_connections, 0);
}

#[test]
fn gap_in_body_keeps_the_exchange_gap_in_head_drops_it() {
    let (out, stats) = run(vec![
        data(
            Direction::Write,
            10,
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        ),
        data(
            Direction::Read,
            20,
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        ),
        StreamEvent::Gap {
            conn: CONN,
            direction: Direction::Read,
            len: 4,
            ts_ns: 25,
        },
        data(Direction::Read, 30, b"hij"),
    ]);
    assert_eq!(ends(&out), vec![0]);
    assert!(out.iter().any(|e| matches!(e, HttpEvent::Lost { .. })));
    assert_eq!(stats.dropped_by_gap, 0);

    let (out, stats) = run(vec![
        data(
            Direction::Write,
            10,
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        ),
        data(Direction::Read, 20, b"HTTP/1.1 200 OK\r\nContent-Le"),
        StreamEvent::Gap {
            conn: CONN,
            direction: Direction::Read,
            len: 0,
            ts_ns: 25,
        },
        data(Direction::Read, 30, b"garbage\r\n\r\nmore"),
        data(
            Direction::Write,
            40,
            b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        ),
        data(
            Direction::Read,
            50,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ),
    ]);
    assert!(out.iter().any(|e| matches!(e, HttpEvent::Aborted { key, reason: AbortReason::FramingLost, .. } if key.seq == 0)));
    assert_eq!(
        ends(&out),
        vec![1],
        "resynchronised on the next status line"
    );
    assert_eq!(bodies(&out, 1), b"ok");
    assert_eq!(stats.dropped_by_gap, 1);
}

#[test]
fn idle_connections_are_evicted() {
    let mut t = ConnectionTracker::new(ConnectionConfig {
        idle_timeout_ns: 100,
        ..ConnectionConfig::default()
    });
    let mut out = Vec::new();
    t.push(
        data(
            Direction::Write,
            10,
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        ),
        &mut out,
    );
    t.tick(50, &mut out);
    assert_eq!(t.connections(), 1);
    t.tick(500, &mut out);
    assert_eq!(t.connections(), 0);
    assert!(out.iter().any(|e| matches!(
        e,
        HttpEvent::Aborted {
            reason: AbortReason::IdleTimeout,
            ..
        }
    )));
}

#[test]
fn gzip_response_is_decoded() {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b"{\"ok\":true}").unwrap();
    let gz = e.finish().unwrap();
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        gz.len()
    )
    .into_bytes();
    resp.extend_from_slice(&gz);
    let mut events = vec![data(
        Direction::Write,
        10,
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )];
    for (i, b) in resp.chunks(5).enumerate() {
        events.push(data(Direction::Read, 20 + i as u64, b));
    }
    let (out, _) = run(events);
    assert_eq!(bodies(&out, 0), b"{\"ok\":true}");
}

#[test]
fn repeated_request_gaps_stay_bounded() {
    let mut t = ConnectionTracker::new(ConnectionConfig {
        max_pending_requests: 4,
        ..ConnectionConfig::default()
    });
    let mut out = Vec::new();
    t.push(
        data(
            Direction::Write,
            1,
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        ),
        &mut out,
    );
    for i in 0..1000 {
        t.push(
            StreamEvent::Gap {
                conn: CONN,
                direction: Direction::Write,
                len: 10,
                ts_ns: 10 + i,
            },
            &mut out,
        );
        t.push(
            data(
                Direction::Write,
                10 + i,
                b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            ),
            &mut out,
        );
    }
    let pending = t.conns.get(&CONN).map(|c| c.pending.len()).unwrap_or(0);
    assert!(pending <= 4, "{pending}");
}

/// Fuzz regression (http1_pipeline target, a timeout): a head over the cap in one piece made
/// resync find the same head again at the same byte, forever. Both directions.
#[test]
fn oversized_head_in_one_write_resyncs_past_it() {
    let config = ConnectionConfig {
        header_cap: 1024,
        ..ConnectionConfig::default()
    };
    let big = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nX-Big: {}\r\n\r\n",
        "a".repeat(4000)
    );
    let ok =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 0\r\n\r\n";
    let big_resp = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
        "b".repeat(4000)
    );
    let ok_resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    let mut t = ConnectionTracker::new(config);
    let mut out = Vec::new();
    t.push(
        data(Direction::Write, 1, format!("{big}{ok}").as_bytes()),
        &mut out,
    );
    t.push(
        data(
            Direction::Read,
            2,
            format!("{big_resp}{ok_resp}").as_bytes(),
        ),
        &mut out,
    );
    let requests = out
        .iter()
        .filter(|e| matches!(e, HttpEvent::Request { .. }))
        .count();
    assert_eq!(requests, 1, "{out:?}");
    assert!(t.stats().http_parse_errors >= 2, "{:?}", t.stats());
}

/// The fuzzer's input itself, through the whole pipeline with the fuzz target's caps.
#[test]
fn fuzz_input_with_oversized_head_terminates() {
    let input = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/regressions/http1_pipeline/oversized-head-loop.bin"
    ));
    // `[u64 seed][u32 request length][request][response]`, as the fuzz target reads it.
    let len = u32::from_le_bytes([input[8], input[9], input[10], input[11]]) as usize;
    let rest = &input[12..];
    let (request, response) = rest.split_at(len.min(rest.len()));
    let mut t = ConnectionTracker::new(ConnectionConfig {
        header_cap: 4096,
        ..ConnectionConfig::default()
    });
    let mut out = Vec::new();
    for (i, piece) in request.chunks(97).enumerate() {
        t.push(data(Direction::Write, i as u64, piece), &mut out);
    }
    t.push(data(Direction::Write, 1000, request), &mut out);
    t.push(data(Direction::Read, 1001, response), &mut out);
    t.tick(u64::MAX, &mut out);
    assert_eq!(t.connections(), 0);
}
