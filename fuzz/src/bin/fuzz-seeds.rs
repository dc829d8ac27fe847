//! Writes the seed corpora of every fuzz target from the recorded exchanges:
//! `fuzz-seeds <cassette dir> <corpus dir>` (one sub-directory per target).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use llmtap::capture::{Direction, StreamEvent};
use llmtap::http::ContentDecoder;
use llmtap::testing::websocket::{WsCompression, cassette_events_websocket};
use llmtap::testing::{Cassette, ReplayOptions, cassette_events, h2::cassette_events_h2, load_all};
use llmtap_fuzz::{CONTENT_TYPES, ENCODINGS, ENDPOINTS, Exchange, ProviderInput};

fn header<'a>(c: &'a Cassette, name: &str) -> Option<&'a str> {
    c.response_headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn directions(events: &[StreamEvent]) -> (Vec<u8>, Vec<u8>) {
    let (mut w, mut r) = (Vec::new(), Vec::new());
    for ev in events {
        if let StreamEvent::Data(d) = ev {
            match d.direction {
                Direction::Write => w.extend_from_slice(&d.data),
                Direction::Read => r.extend_from_slice(&d.data),
            }
        }
    }
    (w, r)
}

/// The response body without its content encoding.
fn decoded_body(c: &Cassette) -> Vec<u8> {
    let Some(mut d) = ContentDecoder::new(header(c, "content-encoding"), 64 << 20) else {
        return c.response_body.clone();
    };
    let mut out = d.feed(&c.response_body).data;
    out.extend(d.finish().data);
    out
}

fn compress(encoding: &str, data: &[u8]) -> Vec<u8> {
    match encoding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            let _ = e.write_all(data);
            e.finish().unwrap_or_default()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            let _ = e.write_all(data);
            e.finish().unwrap_or_default()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                let _ = w.write_all(data);
            }
            out
        }
        "zstd" => zstd::encode_all(data, 3).unwrap_or_default(),
        _ => data.to_vec(),
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let (Some(cassettes), Some(corpus)) = (args.next(), args.next()) else {
        return Err("usage: fuzz-seeds <cassette dir> <corpus dir>".into());
    };
    let corpus = PathBuf::from(corpus);
    let all = load_all(Path::new(&cassettes))?;
    for c in &all {
        let n = &c.name;
        let opts = ReplayOptions::default();
        // Whole pipeline: HTTP/1.1 and HTTP/2, sequential, interleaved, with gaps.
        let (w, r) = directions(&cassette_events(c, &opts));
        for seed in [0u64, 1, 2, 0x9e37_79b9_7f4a_7c15] {
            write(
                &corpus.join("http1_pipeline"),
                &format!("{n}-{seed:x}"),
                &Exchange::encode(seed, &w, &r),
            )?;
        }
        // Responses streams over WebSocket (upgrade, frames, permessage-deflate) go through
        // the same HTTP/1.1 pipeline target.
        if c.api == "responses" && c.streaming {
            for (mode, tag) in [
                (WsCompression::None, "ws"),
                (WsCompression::Deflate, "ws-deflate"),
                (WsCompression::DeflateNoContextTakeover, "ws-deflate-nct"),
            ] {
                let (w, r) = directions(&cassette_events_websocket(c, &opts, mode));
                for seed in [0u64, 3] {
                    write(
                        &corpus.join("http1_pipeline"),
                        &format!("{n}-{tag}-{seed:x}"),
                        &Exchange::encode(seed, &w, &r),
                    )?;
                }
            }
        }
        let (w, r) = directions(&cassette_events_h2(c, &opts));
        for seed in [0u64, 5, 0x9e37_79b9_7f4a_7c15] {
            write(
                &corpus.join("h2_pipeline"),
                &format!("{n}-{seed:x}"),
                &Exchange::encode(seed, &w, &r),
            )?;
        }
        // Provider parsers: the endpoint, content type, encoding and framing of the recording.
        let (host, target) = c.host_and_target();
        let path = target.split(['?', '#']).next().unwrap_or("");
        let endpoint = ENDPOINTS
            .iter()
            .position(|(h, t)| *h == host && t.split('?').next() == Some(path))
            .or_else(|| ENDPOINTS.iter().position(|(_, t)| t.ends_with(path)))
            .unwrap_or(0);
        let ctype = header(c, "content-type").unwrap_or("application/json");
        let ct = if ctype.contains("event-stream") && !ctype.contains("amazon") {
            1
        } else if ctype.contains("ndjson") {
            2
        } else if ctype.contains("amazon.eventstream") {
            3
        } else {
            0
        };
        let enc = header(c, "content-encoding")
            .and_then(|e| ENCODINGS.iter().position(|x| *x == Some(e.trim())))
            .unwrap_or(0) as u8;
        let chunked = if c.response_chunked() { 4 } else { 0 };
        let status = if c.status != 200 { 0x40 } else { 0 };
        let _ = CONTENT_TYPES;
        let mut input = ProviderInput::encode(
            endpoint,
            ct | chunked | (enc << 3) | status,
            &c.request_body,
            &c.response_body,
        );
        if c.status != 200 {
            input[2] = ((c.status.saturating_sub(100) / 2) % 250) as u8;
        }
        write(&corpus.join("provider_parsers"), n, &input)?;
        // Stream framings and event-stream, on the decoded body.
        let body = decoded_body(c);
        let mode = match ct {
            1 => 0u8,
            2 => 1,
            _ => 2,
        };
        let seed = 0x1234_5678u64.to_le_bytes();
        if ct == 3 {
            write(
                &corpus.join("eventstream"),
                n,
                &[&[1u8][..], &seed, &body].concat(),
            )?;
        } else {
            write(
                &corpus.join("stream_framing"),
                n,
                &[&[mode, 3][..], &seed, &body].concat(),
            )?;
        }
        // Decompression: the body in every encoding.
        for (i, e) in ENCODINGS.iter().enumerate() {
            let data = compress(e.unwrap_or(""), &body);
            write(
                &corpus.join("decompress"),
                &format!("{n}-{}", e.unwrap_or("identity")),
                &[&[i as u8, 3][..], &seed, &data].concat(),
            )?;
        }
    }
    Ok(())
}
