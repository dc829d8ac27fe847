//! Stage 2b, HTTP/1.1: message heads (through `httparse`), body framing (Content-Length,
//! chunked with trailers, close-delimited) and content decoding (gzip, deflate, br, zstd).
//!
//! Everything here is incremental: bytes are fed as they were captured, in any split, and
//! nothing is buffered beyond the configured caps.

pub mod body;
pub mod decode;
pub mod exchange;
pub mod head;

pub use body::{BodyFraming, BodyReader};
pub use decode::{ContentDecoder, DecodeOutcome};
pub use exchange::{AbortReason, ExchangeKey, HttpEvent, emit_decoded};
pub use head::{
    HeadAccumulator, HeadError, Headers, RequestHead, ResponseHead, is_credential_header,
};

/// Errors of the HTTP stage: the bytes are not (or no longer) a well-formed HTTP/1.x stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("message head: {0}")]
    Head(#[from] HeadError),
    #[error("invalid chunk size line")]
    ChunkSize,
    #[error("chunk data not followed by CRLF")]
    ChunkTerminator,
    #[error("chunked trailer section larger than {0} bytes")]
    TrailerTooLarge(usize),
}
