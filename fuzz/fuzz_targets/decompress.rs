//! Content-Encoding decoders (gzip, deflate zlib/raw, br, zstd, identity): arbitrary input cut
//! at arbitrary boundaries never panics, never yields more than the cap, and yields the same
//! bytes (and the same capped/failed verdict, below the cap) as feeding the body in one piece.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtap::http::{ContentDecoder, DecodeOutcome};
use llmtap_fuzz::{ENCODINGS, Rng, split, take_u8, take_u64};

fn decode(encoding: Option<&str>, cap: u64, pieces: &[&[u8]]) -> DecodeOutcome {
    let Some(mut dec) = ContentDecoder::new(encoding, cap) else {
        return DecodeOutcome::default();
    };
    let mut out = DecodeOutcome::default();
    for piece in pieces.iter().copied().chain(std::iter::once(&[][..])) {
        let o = if piece.is_empty() {
            dec.finish()
        } else {
            dec.feed(piece)
        };
        out.data.extend(o.data);
        out.capped |= o.capped;
        out.failed |= o.failed;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let encoding = ENCODINGS[take_u8(&mut data) as usize % ENCODINGS.len()];
    let cap = match take_u8(&mut data) % 4 {
        0 => 1,
        1 => 100,
        2 => 4096,
        _ => 1 << 20,
    };
    let mut rng = Rng::new(take_u64(&mut data));
    let whole = decode(encoding, cap, &[data]);
    let pieces = split(data, &mut rng);
    let split_out = decode(encoding, cap, &pieces);
    assert!(whole.data.len() as u64 <= cap);
    assert!(split_out.data.len() as u64 <= cap);
    // Once the cap is reached decoding stops, so corruption past it may go unseen by one
    // split and not the other; below the cap the verdict must agree.
    if !whole.capped && !split_out.capped {
        assert_eq!(whole.failed, split_out.failed, "{encoding:?}");
    }
    if !whole.failed && !split_out.failed {
        assert_eq!(whole.data, split_out.data, "{encoding:?}");
        assert_eq!(whole.capped, split_out.capped, "{encoding:?}");
    }
});
