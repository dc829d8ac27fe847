//! Stage 1, capture: eBPF uprobes on TLS libraries → ordered plaintext per connection.
//!
//! `event` decodes kernel records, `stream` orders them per (connection, direction) and turns
//! losses into explicit gaps. Everything that needs privileges (loading, attaching, reading the
//! ring buffer) lives in the submodules behind `Tracer`.

pub mod awslc;
pub mod boringssl;
pub mod discovery;
pub mod elf;
pub mod event;
pub mod file;
pub mod go_tls;
pub mod hold;
pub mod hold_guard;
pub mod inspect;
pub mod kernel_btf;
pub mod stream;

pub use event::{
    CaptureEvent, Comm, ConnectionId, DataEvent, DecodeError, Direction, decode_record,
    encode_record,
};
pub use stream::{StreamAssembler, StreamChunk, StreamEvent};
pub mod clock;
pub mod pipe;
pub mod plain;
pub mod printer;
pub mod redact;
pub mod rustls;
pub mod session;
pub mod targets;
pub mod tracer;

pub use plain::PlainHttp;
pub use session::{CaptureSession, SessionConfig};
pub use tracer::{AttachOutcome, CaptureCounters, Tracer, TracerConfig, TracerError};
