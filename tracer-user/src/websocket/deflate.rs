//! `permessage-deflate` (RFC 7692): one raw-deflate inflater per direction. With context
//! takeover the window carries over from message to message; with `no_context_takeover` (or
//! when the sender ended a message with a final block) it starts afresh at each message.

use flate2::{Decompress, FlushDecompress, Status};

use super::WsError;

/// Output is produced in pieces of this size: one compressed frame may inflate to much more.
const OUT_PIECE: usize = 16 * 1024;

/// The four bytes a sender strips from the end of each compressed message (RFC 7692 7.2.1).
const MESSAGE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The `permessage-deflate` parameters that matter to a reader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor at each message (reads of the client).
    pub server_no_context_takeover: bool,
    /// The client resets its compressor at each message (writes of the client).
    pub client_no_context_takeover: bool,
}

/// Inflates the compressed messages of one direction.
pub struct Inflater {
    inner: Decompress,
    no_context_takeover: bool,
    /// The sender ended its deflate stream (a block with BFINAL): the next message starts a
    /// new one.
    stream_ended: bool,
    out: Vec<u8>,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("no_context_takeover", &self.no_context_takeover)
            .field("stream_ended", &self.stream_ended)
            .finish()
    }
}

impl Inflater {
    pub fn new(no_context_takeover: bool) -> Self {
        Inflater {
            inner: Decompress::new(false),
            no_context_takeover,
            stream_ended: false,
            out: vec![0; OUT_PIECE],
        }
    }

    /// Inflates compressed payload bytes of the current message; `emit` gets the output in
    /// pieces of at most 16 KiB.
    pub fn feed(&mut self, input: &[u8], emit: &mut dyn FnMut(&[u8])) -> Result<(), WsError> {
        let mut rest = input;
        loop {
            if self.stream_ended {
                // Bytes after the final block belong to no deflate stream: the tail the
                // sender may still append is harmless, anything else is not deflate.
                return if rest.iter().all(|&b| b == 0) || MESSAGE_TAIL.ends_with(rest) {
                    Ok(())
                } else {
                    Err(WsError::Inflate(
                        "data after the final deflate block".into(),
                    ))
                };
            }
            let before_in = self.inner.total_in();
            let before_out = self.inner.total_out();
            let status = self
                .inner
                .decompress(rest, &mut self.out, FlushDecompress::Sync)
                .map_err(|e| WsError::Inflate(e.to_string()))?;
            let used = (self.inner.total_in() - before_in) as usize;
            let produced = (self.inner.total_out() - before_out) as usize;
            if let Some(piece) = self.out.get(..produced)
                && !piece.is_empty()
            {
                emit(piece);
            }
            rest = rest.get(used..).unwrap_or_default();
            if status == Status::StreamEnd {
                self.stream_ended = true;
                continue;
            }
            if used == 0 && produced == 0 {
                // Input left that the inflater cannot take: never dropped silently.
                return if rest.is_empty() {
                    Ok(())
                } else {
                    Err(WsError::Inflate("inflater made no progress".into()))
                };
            }
            // More output may be pending only when the buffer was filled.
            if rest.is_empty() && produced < self.out.len() {
                return Ok(());
            }
        }
    }

    /// The message's last frame ended: flushes what the stripped tail still holds back and
    /// prepares the next message.
    pub fn end_message(&mut self, emit: &mut dyn FnMut(&[u8])) -> Result<(), WsError> {
        let result = self.feed(&MESSAGE_TAIL, emit);
        if self.no_context_takeover || self.stream_ended || result.is_err() {
            self.inner.reset(false);
            self.stream_ended = false;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    /// A sender's compressed message: deflate with a sync flush, tail stripped.
    pub(crate) fn compress_message(c: &mut Compress, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 64);
        c.compress_vec(text, &mut out, FlushCompress::Sync)
            .expect("compress");
        while out.capacity() == out.len() {
            out.reserve(256);
            c.compress_vec(&[], &mut out, FlushCompress::Sync)
                .expect("compress");
        }
        assert!(out.ends_with(&MESSAGE_TAIL));
        out.truncate(out.len() - 4);
        out
    }

    fn inflate_all(inf: &mut Inflater, msg: &[u8], split: usize) -> Vec<u8> {
        let mut got = Vec::new();
        for piece in msg.chunks(split.max(1)) {
            inf.feed(piece, &mut |b| got.extend_from_slice(b))
                .expect("inflate");
        }
        inf.end_message(&mut |b| got.extend_from_slice(b))
            .expect("end");
        got
    }

    #[test]
    fn context_takeover_carries_the_window_across_messages() {
        let mut c = Compress::new(Compression::default(), false);
        let mut inf = Inflater::new(false);
        let text = br#"{"type":"response.output_text.delta","delta":"Hello"}"#;
        let first = compress_message(&mut c, text);
        let second = compress_message(&mut c, text);
        // The second message refers back to the first one's bytes.
        assert!(second.len() < first.len());
        for split in [1, 5, 1000] {
            let mut inf2 = Inflater::new(false);
            let mut c2 = Compress::new(Compression::default(), false);
            let a = compress_message(&mut c2, text);
            let b = compress_message(&mut c2, text);
            assert_eq!(inflate_all(&mut inf2, &a, split), text);
            assert_eq!(inflate_all(&mut inf2, &b, split), text);
        }
        assert_eq!(inflate_all(&mut inf, &first, 3), text);
        assert_eq!(inflate_all(&mut inf, &second, 3), text);
    }

    #[test]
    fn no_context_takeover_resets_per_message() {
        let text = b"the same text, twice over: the same text";
        let mut inf = Inflater::new(true);
        for _ in 0..3 {
            let mut c = Compress::new(Compression::default(), false);
            let msg = compress_message(&mut c, text);
            assert_eq!(inflate_all(&mut inf, &msg, 7), text);
        }
    }

    #[test]
    fn a_large_message_comes_out_in_bounded_pieces() {
        let text = vec![b'a'; 200_000];
        let mut c = Compress::new(Compression::default(), false);
        let msg = compress_message(&mut c, &text);
        let mut inf = Inflater::new(false);
        let mut sizes = Vec::new();
        inf.feed(&msg, &mut |b| sizes.push(b.len()))
            .expect("inflate");
        inf.end_message(&mut |b| sizes.push(b.len())).expect("end");
        assert_eq!(sizes.iter().sum::<usize>(), text.len());
        assert!(sizes.iter().all(|&n| n <= OUT_PIECE), "{sizes:?}");
    }

    #[test]
    fn garbage_is_an_error() {
        let mut inf = Inflater::new(false);
        let r = inf.feed(&[0xff; 64], &mut |_| {});
        assert!(matches!(r, Err(WsError::Inflate(_))), "{r:?}");
    }
}
