use super::*;
use crate::http::Headers;
use crate::testing::websocket::{
    BINARY, CLIENT_MASK, CLOSE, CONTINUE, MessageDeflater, PING, PONG, TEXT, frame,
};

const CAP: u64 = 1024 * 1024;

fn negotiated(extensions: Option<&str>) -> Negotiated {
    let mut headers = Headers::default();
    headers.push("Upgrade", "websocket");
    if let Some(e) = extensions {
        headers.push("Sec-WebSocket-Extensions", e);
    }
    Negotiated::from_response(&ResponseHead {
        status: 101,
        major_version: 1,
        minor_version: 1,
        headers,
    })
}

/// Whole messages (text flag, bytes, truncated), close codes and the last error read from
/// `bytes` fed in pieces of `split`.
type Read = (
    Vec<(bool, Vec<u8>, bool)>,
    Vec<Option<u16>>,
    Result<(), WsError>,
);

fn read(reader: &mut FrameReader, bytes: &[u8], split: usize) -> Read {
    let mut messages = Vec::new();
    let mut closes = Vec::new();
    let mut current: Option<(bool, Vec<u8>)> = None;
    let mut result = Ok(());
    for piece in bytes.chunks(split.max(1)) {
        let r = reader.feed(piece, &mut |p| match p {
            WsPiece::Data {
                text,
                data,
                first,
                last,
                truncated,
            } => {
                assert_eq!(first, current.is_none(), "first piece flag");
                let msg = current.get_or_insert((text, Vec::new()));
                msg.1.extend_from_slice(&data);
                if last {
                    let (text, bytes) = current.take().expect("open message");
                    messages.push((text, bytes, truncated));
                }
            }
            WsPiece::Close { code } => closes.push(code),
        });
        if r.is_err() {
            result = r;
        }
    }
    (messages, closes, result)
}

fn client(n: &Negotiated) -> FrameReader {
    FrameReader::new(true, n, CAP)
}

fn server(n: &Negotiated) -> FrameReader {
    FrameReader::new(false, n, CAP)
}

#[test]
fn masked_client_text_in_any_split() {
    let text = br#"{"type":"response.create","model":"gpt-5"}"#;
    let bytes = frame(TEXT, true, false, Some(CLIENT_MASK), text);
    for split in [1, 2, 3, 7, bytes.len()] {
        let (messages, closes, r) = read(&mut client(&negotiated(None)), &bytes, split);
        assert_eq!(r, Ok(()));
        assert_eq!(
            messages,
            vec![(true, text.to_vec(), false)],
            "split {split}"
        );
        assert!(closes.is_empty());
    }
}

#[test]
fn long_lengths_use_extended_headers() {
    for len in [125usize, 126, 65_535, 65_536, 200_000] {
        let text = vec![b'x'; len];
        let bytes = frame(TEXT, true, false, None, &text);
        let (messages, _, r) = read(&mut server(&negotiated(None)), &bytes, 4096);
        assert_eq!(r, Ok(()));
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].1.len(), len);
    }
}

#[test]
fn fragments_with_control_frames_interleaved() {
    let mut bytes = frame(TEXT, false, false, None, b"{\"type\":");
    bytes.extend(frame(PING, true, false, None, b"hi"));
    bytes.extend(frame(CONTINUE, false, false, None, b"\"response."));
    bytes.extend(frame(PONG, true, false, None, b""));
    bytes.extend(frame(CONTINUE, true, false, None, b"created\"}"));
    bytes.extend(frame(BINARY, true, false, None, &[0, 1, 2]));
    bytes.extend(frame(CLOSE, true, false, None, &1000u16.to_be_bytes()));
    bytes.extend(frame(TEXT, true, false, None, b"after close"));
    for split in [1, 5, bytes.len()] {
        let mut reader = server(&negotiated(None));
        let (messages, closes, r) = read(&mut reader, &bytes, split);
        assert_eq!(r, Ok(()));
        assert_eq!(
            messages,
            vec![
                (true, br#"{"type":"response.created"}"#.to_vec(), false),
                (false, vec![0, 1, 2], false)
            ]
        );
        assert_eq!(closes, vec![Some(1000)]);
        assert_eq!(reader.control_frames, 2);
        assert!(reader.is_closed());
    }
}

#[test]
fn empty_messages_are_messages() {
    let mut bytes = frame(TEXT, true, false, None, b"");
    bytes.extend(frame(TEXT, false, false, None, b""));
    bytes.extend(frame(CONTINUE, true, false, None, b""));
    let (messages, _, r) = read(&mut server(&negotiated(None)), &bytes, 1);
    assert_eq!(r, Ok(()));
    assert_eq!(messages, vec![(true, vec![], false), (true, vec![], false)]);
}

#[test]
fn negotiation_reads_the_deflate_parameters() {
    assert_eq!(negotiated(None).deflate, None);
    assert_eq!(
        negotiated(Some("permessage-deflate")).deflate,
        Some(DeflateParams::default())
    );
    assert_eq!(
        negotiated(Some(
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=12; \
             client_no_context_takeover"
        ))
        .deflate,
        Some(DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
        })
    );
    assert_eq!(negotiated(Some("x-webkit-deflate-frame")).deflate, None);
}

fn deflate_messages(
    context_takeover: bool,
    from_client: bool,
    texts: &[&[u8]],
    max_frame: usize,
) -> Vec<u8> {
    let mut d = MessageDeflater::new(context_takeover);
    let mask = from_client.then_some(CLIENT_MASK);
    let mut out = Vec::new();
    for text in texts {
        let payload = d.message(text);
        let pieces: Vec<&[u8]> = payload.chunks(max_frame).collect();
        let last = pieces.len() - 1;
        for (i, p) in pieces.into_iter().enumerate() {
            let op = if i == 0 { TEXT } else { CONTINUE };
            out.extend(frame(op, i == last, i == 0, mask, p));
        }
    }
    // An uncompressed message in between is allowed (RSV1 clear).
    out.extend(frame(TEXT, true, false, mask, b"plain"));
    out
}

#[test]
fn deflate_with_and_without_context_takeover() {
    let texts: [&[u8]; 3] = [
        br#"{"type":"response.output_text.delta","delta":"Hel"}"#,
        br#"{"type":"response.output_text.delta","delta":"lo"}"#,
        br#"{"type":"response.completed","response":{"status":"completed"}}"#,
    ];
    for (takeover, extensions) in [
        (true, "permessage-deflate"),
        (
            false,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
    ] {
        for from_client in [true, false] {
            for max_frame in [3, 10_000] {
                let bytes = deflate_messages(takeover, from_client, &texts, max_frame);
                for split in [1, 4, bytes.len()] {
                    let n = negotiated(Some(extensions));
                    let mut reader = FrameReader::new(from_client, &n, CAP);
                    let (messages, _, r) = read(&mut reader, &bytes, split);
                    assert_eq!(r, Ok(()), "{extensions} client {from_client}");
                    let got: Vec<Vec<u8>> = messages.into_iter().map(|m| m.1).collect();
                    let mut want: Vec<Vec<u8>> = texts.iter().map(|t| t.to_vec()).collect();
                    want.push(b"plain".to_vec());
                    assert_eq!(got, want, "{extensions} client {from_client} split {split}");
                }
            }
        }
    }
}

#[test]
fn messages_past_the_cap_are_cut_and_flagged() {
    let text = vec![b'a'; 5000];
    let n = negotiated(Some("permessage-deflate"));
    let mut bytes = deflate_messages(true, false, &[&text], 100);
    bytes.extend(frame(TEXT, true, false, None, b"next"));
    let mut reader = FrameReader::new(false, &n, 1000);
    let (messages, _, r) = read(&mut reader, &bytes, 64);
    assert_eq!(r, Ok(()));
    assert_eq!(messages[0].1.len(), 1000);
    assert!(messages[0].2, "flagged truncated");
    // The next messages are whole: the cap is per message.
    assert_eq!(messages[2], (true, b"next".to_vec(), false));
}

#[test]
fn protocol_violations_are_errors_not_panics() {
    let cases: Vec<(&str, bool, Option<&str>, Vec<u8>)> = vec![
        (
            "unmasked client frame",
            true,
            None,
            frame(TEXT, true, false, None, b"x"),
        ),
        (
            "masked server frame",
            false,
            None,
            frame(TEXT, true, false, Some(CLIENT_MASK), b"x"),
        ),
        (
            "rsv1 without deflate",
            false,
            None,
            frame(TEXT, true, true, None, b"x"),
        ),
        (
            "stray continuation",
            false,
            None,
            frame(CONTINUE, true, false, None, b"x"),
        ),
        (
            "long control frame",
            false,
            None,
            frame(PING, true, false, None, &[0; 126]),
        ),
        (
            "fragmented control frame",
            false,
            None,
            frame(PING, false, false, None, b""),
        ),
        ("reserved opcode", false, None, vec![0x83, 0x00]),
        ("reserved control opcode", false, None, vec![0x8b, 0x00]),
        ("rsv2", false, None, vec![0xa1, 0x00]),
        (
            "interleaved message",
            false,
            None,
            [
                frame(TEXT, false, false, None, b"a"),
                frame(TEXT, true, false, None, b"b"),
            ]
            .concat(),
        ),
        (
            "garbage deflate",
            false,
            Some("permessage-deflate"),
            frame(TEXT, true, true, None, &[0xff; 40]),
        ),
        (
            "http text",
            false,
            None,
            b"HTTP/1.1 200 OK\r\n\r\n".to_vec(),
        ),
    ];
    for (what, from_client, ext, bytes) in cases {
        let n = negotiated(ext);
        let mut reader = FrameReader::new(from_client, &n, CAP);
        let (_, _, r) = read(&mut reader, &bytes, bytes.len());
        assert!(r.is_err(), "{what}: {r:?}");
        assert!(reader.error().is_some(), "{what}");
        // Once failed, later bytes are ignored.
        assert_eq!(
            reader.feed(b"\x81\x01a", &mut |_| panic!("{what}: read after error")),
            Ok(())
        );
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..2000 {
        let mut bytes = Vec::new();
        for _ in 0..(round % 64) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.push(seed as u8);
        }
        for ext in [None, Some("permessage-deflate")] {
            for from_client in [true, false] {
                let n = negotiated(ext);
                let mut reader = FrameReader::new(from_client, &n, 4096);
                let _ = read(&mut reader, &bytes, 1 + round % 5);
            }
        }
    }
}
