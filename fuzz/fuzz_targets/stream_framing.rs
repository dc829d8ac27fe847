//! Stream framings of LLM responses: SSE (events, fields, CR/LF/CRLF terminators), NDJSON
//! lines and streamed JSON arrays. Cut at arbitrary boundaries they must give exactly what
//! the body in one piece gives; with lost bytes injected, no panic and bounded buffers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtap::sse::{JsonArraySplitter, LineSplitter, SseEvent, SseParser};
use llmtap_fuzz::{Rng, split, take_u8, take_u64};

#[derive(Debug, PartialEq)]
enum Item {
    Event(SseEvent),
    Line(Vec<u8>, bool),
    Element(Vec<u8>, bool),
}

fn run(mode: u8, cap: usize, pieces: &[&[u8]], lose: &mut dyn FnMut() -> bool) -> Vec<Item> {
    let mut out = Vec::new();
    match mode % 3 {
        0 => {
            let mut p = SseParser::new(cap);
            for piece in pieces {
                if lose() {
                    p.lost_bytes();
                    continue;
                }
                p.feed(piece, &mut |e| {
                    assert!(e.data.len() <= cap, "event over cap");
                    out.push(Item::Event(e));
                });
            }
            p.finish();
        }
        1 => {
            let mut s = LineSplitter::new(cap);
            for piece in pieces {
                if lose() {
                    s.lost_bytes();
                    continue;
                }
                s.feed(piece, &mut |l| {
                    assert!(l.bytes.len() <= cap, "line over cap");
                    out.push(Item::Line(l.bytes.to_vec(), l.overlong));
                });
            }
            s.finish(&mut |l| out.push(Item::Line(l.bytes.to_vec(), l.overlong)));
        }
        _ => {
            let mut s = JsonArraySplitter::new(cap);
            for piece in pieces {
                if lose() {
                    s.lost_bytes();
                    continue;
                }
                s.feed(piece, &mut |e, overlong| {
                    assert!(e.len() <= cap, "element over cap");
                    out.push(Item::Element(e.to_vec(), overlong));
                });
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let mode = take_u8(&mut data);
    let cap = match take_u8(&mut data) % 4 {
        0 => 1,
        1 => 16,
        2 => 256,
        _ => 64 * 1024,
    };
    let mut rng = Rng::new(take_u64(&mut data));
    let whole = run(mode, cap, &[data], &mut || false);
    let pieces = split(data, &mut rng);
    let split_out = run(mode, cap, &pieces, &mut || false);
    assert_eq!(whole, split_out);
    let mut lose_rng = Rng::new(rng.next());
    run(mode, cap, &pieces, &mut || lose_rng.one_in(8));
});
