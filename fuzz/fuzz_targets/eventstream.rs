//! AWS event-stream framing (Bedrock streams). With mode bit 0 the fuzzed frames get valid
//! CRCs so the fuzzer reaches header and payload decoding past the checksums. Cut at
//! arbitrary boundaries the decoder must yield what the body in one piece yields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtap::sse::{EventStreamDecoder, EventStreamMessage};
use llmtap_fuzz::{Rng, split, take_u8, take_u64};

/// Rewrites each frame's prelude and message CRC (frames delimited by their length field).
fn repair_crcs(data: &mut [u8]) {
    let mut at = 0usize;
    while let Some(prelude) = data.get(at..at + 12) {
        let total = u32::from_be_bytes([prelude[0], prelude[1], prelude[2], prelude[3]]) as usize;
        if total < 16 || at + total > data.len() {
            return;
        }
        let crc = crc32fast::hash(&data[at..at + 8]);
        data[at + 8..at + 12].copy_from_slice(&crc.to_be_bytes());
        let crc = crc32fast::hash(&data[at..at + total - 4]);
        data[at + total - 4..at + total].copy_from_slice(&crc.to_be_bytes());
        at += total;
    }
}

fn run(cap: usize, pieces: &[&[u8]]) -> (Vec<EventStreamMessage>, bool) {
    let mut d = EventStreamDecoder::new(cap);
    let mut out = Vec::new();
    for piece in pieces {
        d.feed(piece, &mut |m| {
            assert!(m.payload.len() <= cap);
            out.push(m);
        });
    }
    (out, d.error().is_some())
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let mode = take_u8(&mut data);
    let cap = if mode & 2 != 0 { 64 } else { 1 << 20 };
    let mut rng = Rng::new(take_u64(&mut data));
    let mut body = data.to_vec();
    if mode & 1 != 0 {
        repair_crcs(&mut body);
    }
    let whole = run(cap, &[&body]);
    let pieces = split(&body, &mut rng);
    let split_out = run(cap, &pieces);
    assert_eq!(whole, split_out);
    let mut d = EventStreamDecoder::new(cap);
    for (i, piece) in pieces.iter().enumerate() {
        if i % 5 == 3 {
            d.lost_bytes();
        }
        d.feed(piece, &mut |_| {});
    }
});
