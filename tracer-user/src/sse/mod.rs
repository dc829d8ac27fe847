//! Stage 3, stream framings of LLM responses, parsed incrementally as bytes arrive:
//! Server-Sent Events, NDJSON (Ollama), JSON-array streams (Gemini without `alt=sse`) and
//! AWS event-stream (Bedrock). Each framer yields whole messages; per-message buffers are
//! bounded, the stream length is not.

pub mod eventstream;
pub mod json_array;
pub mod lines;
pub mod parser;

pub use eventstream::{EventStreamDecoder, EventStreamMessage};
pub use json_array::JsonArraySplitter;
pub use lines::LineSplitter;
pub use parser::{SseEvent, SseParser};
