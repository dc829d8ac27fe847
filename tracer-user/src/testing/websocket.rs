//! Recorded Responses streams replayed over WebSocket (test-only encoder): the upgrade, the
//! client's `response.create` (the recorded request body) and each recorded SSE event's data
//! as one server text message, framed by `tungstenite`'s header writer, compressed with
//! `permessage-deflate` when asked.

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};
use serde_json::Value;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::{Cassette, ReplayOptions, chunk_events, comm};
use crate::flow::{Direction, StreamChunk, StreamEvent};
use crate::sse::SseParser;

/// The mask the test client puts on its frames.
pub const CLIENT_MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One frame: `mask` for client frames, `rsv1` marks a compressed message's first frame.
pub fn frame(
    opcode: OpCode,
    fin: bool,
    rsv1: bool,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) -> Vec<u8> {
    let header = FrameHeader {
        is_final: fin,
        rsv1,
        rsv2: false,
        rsv3: false,
        opcode,
        mask,
    };
    let mut out = Vec::with_capacity(payload.len() + 14);
    header
        .format(payload.len() as u64, &mut out)
        .expect("writing to a Vec");
    out.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask.map_or(0, |m| m[i % 4])),
    );
    out
}

pub const TEXT: OpCode = OpCode::Data(Data::Text);
pub const BINARY: OpCode = OpCode::Data(Data::Binary);
pub const CONTINUE: OpCode = OpCode::Data(Data::Continue);
pub const CLOSE: OpCode = OpCode::Control(Control::Close);
pub const PING: OpCode = OpCode::Control(Control::Ping);
pub const PONG: OpCode = OpCode::Control(Control::Pong);

/// `permessage-deflate` as a sender applies it: one compressor, kept across messages with
/// context takeover, new for each message without.
pub struct MessageDeflater {
    compress: Compress,
    context_takeover: bool,
}

impl MessageDeflater {
    pub fn new(context_takeover: bool) -> Self {
        MessageDeflater {
            compress: Compress::new(Compression::default(), false),
            context_takeover,
        }
    }

    /// The compressed payload of one message (sync flush, the 4-byte tail stripped).
    pub fn message(&mut self, text: &[u8]) -> Vec<u8> {
        if !self.context_takeover {
            self.compress.reset();
        }
        let mut out = Vec::with_capacity(text.len() + 64);
        let mut rest = text;
        loop {
            let before = self.compress.total_in();
            self.compress
                .compress_vec(rest, &mut out, FlushCompress::Sync)
                .expect("deflate");
            let used = (self.compress.total_in() - before) as usize;
            rest = &rest[used..];
            if rest.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(256));
        }
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]), "sync flush tail");
        out.truncate(out.len() - 4);
        out
    }
}

/// How the replayed WebSocket is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsCompression {
    None,
    /// `permessage-deflate` with context takeover both ways.
    Deflate,
    /// `permessage-deflate; server_no_context_takeover; client_no_context_takeover`.
    DeflateNoContextTakeover,
}

/// The data of each SSE event of a recorded stream, in order.
pub fn sse_payloads(body: &[u8]) -> Vec<Vec<u8>> {
    let mut parser = SseParser::new(usize::MAX);
    let mut out = Vec::new();
    parser.feed(body, &mut |e| out.push(e.data));
    parser.feed(b"\n\n", &mut |e| out.push(e.data));
    out
}

/// The client's `response.create` for a recorded `POST /v1/responses` body: its fields at the
/// top level beside `"type"`, as the Codex CLI sends them.
pub fn response_create(request_body: &[u8]) -> Vec<u8> {
    let mut fields = match serde_json::from_slice::<Value>(request_body) {
        Ok(Value::Object(o)) => o,
        _ => serde_json::Map::new(),
    };
    fields.insert("type".into(), Value::from("response.create"));
    // Over WebSocket the events always stream.
    fields.remove("stream");
    serde_json::to_vec(&Value::Object(fields)).expect("json")
}

/// The upgrade request and its `101` answer for `target` on `host`.
pub fn handshake(host: &str, target: &str, compression: WsCompression) -> (Vec<u8>, Vec<u8>) {
    let offer = match compression {
        WsCompression::None => "",
        _ => "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    };
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer sk-test-0000\r\n{offer}\r\n"
    );
    let accept = match compression {
        WsCompression::None => "",
        WsCompression::Deflate => "Sec-WebSocket-Extensions: permessage-deflate\r\n",
        WsCompression::DeflateNoContextTakeover => {
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             client_no_context_takeover\r\n"
        }
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nx-request-id: req_ws_1\r\n{accept}\r\n"
    );
    (request.into_bytes(), response.into_bytes())
}

/// Frames text messages of one side (masked for the client), compressed if asked.
pub struct MessageWriter {
    from_client: bool,
    deflater: Option<MessageDeflater>,
    /// Largest frame payload: longer messages are fragmented.
    pub max_frame: usize,
}

impl MessageWriter {
    pub fn new(from_client: bool, compression: WsCompression) -> Self {
        let deflater = match compression {
            WsCompression::None => None,
            WsCompression::Deflate => Some(MessageDeflater::new(true)),
            WsCompression::DeflateNoContextTakeover => Some(MessageDeflater::new(false)),
        };
        MessageWriter {
            from_client,
            deflater,
            max_frame: usize::MAX,
        }
    }

    pub fn text(&mut self, text: &[u8]) -> Vec<u8> {
        let (payload, compressed) = match &mut self.deflater {
            Some(d) => (d.message(text), true),
            None => (text.to_vec(), false),
        };
        let mask = self.from_client.then_some(CLIENT_MASK);
        let pieces: Vec<&[u8]> = if payload.is_empty() {
            vec![&[]]
        } else {
            payload.chunks(self.max_frame.max(1)).collect()
        };
        let last = pieces.len() - 1;
        let mut out = Vec::new();
        for (i, piece) in pieces.into_iter().enumerate() {
            let opcode = if i == 0 { TEXT } else { CONTINUE };
            out.extend(frame(opcode, i == last, i == 0 && compressed, mask, piece));
        }
        out
    }
}

/// A recorded Responses stream as one WebSocket: the upgrade, `response.create`, one server
/// text message per recorded event (each its own read, `opts.step_ns` apart), reads cut at
/// `opts.read_size`; then a close frame from the client (and `Closed` if `opts.close`).
pub fn cassette_events_websocket(
    c: &Cassette,
    opts: &ReplayOptions,
    compression: WsCompression,
) -> Vec<StreamEvent> {
    let (host, target) = c.host_and_target();
    let (request, response) = handshake(&host, &target, compression);
    let mut out = Vec::new();
    let mut now = opts.start_ns;
    chunk_events(
        &request,
        Direction::Write,
        opts.write_size,
        &mut now,
        opts,
        &mut out,
    );
    chunk_events(
        &response,
        Direction::Read,
        opts.read_size,
        &mut now,
        opts,
        &mut out,
    );
    let mut client = MessageWriter::new(true, compression);
    let mut server = MessageWriter::new(false, compression);
    let create = client.text(&response_create(&c.request_body));
    chunk_events(
        &create,
        Direction::Write,
        opts.write_size,
        &mut now,
        opts,
        &mut out,
    );
    now += opts.server_latency_ns;
    for payload in sse_payloads(&c.response_body) {
        let frames = server.text(&payload);
        chunk_events(
            &frames,
            Direction::Read,
            opts.read_size,
            &mut now,
            opts,
            &mut out,
        );
    }
    let close = frame(
        CLOSE,
        true,
        false,
        Some(CLIENT_MASK),
        &1000u16.to_be_bytes(),
    );
    chunk_events(
        &close,
        Direction::Write,
        opts.write_size,
        &mut now,
        opts,
        &mut out,
    );
    if opts.close {
        out.push(StreamEvent::Closed {
            conn: opts.conn,
            ts_ns: now,
        });
    }
    out
}

/// One capture event of `direction` carrying `bytes` at `ts_ns`.
pub fn data_event(
    opts: &ReplayOptions,
    direction: Direction,
    ts_ns: u64,
    bytes: &[u8],
) -> StreamEvent {
    StreamEvent::Data(StreamChunk {
        conn: opts.conn,
        direction,
        tid: opts.tid,
        comm: comm(&opts.comm),
        ts_entry_ns: ts_ns,
        ts_ns: ts_ns + opts.step_ns / 2,
        data: Bytes::copy_from_slice(bytes),
    })
}
