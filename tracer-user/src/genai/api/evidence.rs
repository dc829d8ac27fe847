//! Agent evidence shared by the request readers: tool results and message-history hashes.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::value::RawValue;

use super::wire::{Raw, value_text};
use crate::genai::record::{MAX_MESSAGE_HASHES, MAX_TOOL_REFS, RequestParams, ToolCallRef};

/// Bytes of one tool result kept in a record (content capture only; the exporter cuts
/// further to its content limit).
pub const TOOL_CONTENT_CAP: usize = 64 * 1024;

/// Tool results found in one request, at most [`MAX_TOOL_REFS`].
pub struct ToolResults {
    results: Vec<ToolCallRef>,
    with_content: bool,
}

impl ToolResults {
    pub fn new(with_content: bool) -> Self {
        ToolResults {
            results: Vec::new(),
            with_content,
        }
    }

    /// One result; kept when it names a call (by id or by tool name).
    pub fn push(&mut self, id: Option<String>, name: Option<String>, content: Raw<'_>) {
        if self.results.len() >= MAX_TOOL_REFS || (id.is_none() && name.is_none()) {
            return;
        }
        let content = if self.with_content {
            value_text(content).map(cap)
        } else {
            None
        };
        self.results.push(ToolCallRef { id, name, content });
    }

    pub fn store(self, params: &mut RequestParams) {
        params.tool_results = self.results;
    }
}

/// A string stays itself, anything else is its JSON text; cut to [`TOOL_CONTENT_CAP`].
fn cap(mut text: String) -> String {
    if text.len() > TOOL_CONTENT_CAP {
        let mut end = TOOL_CONTENT_CAP;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// `out[i]` hashes messages `0..=i` (their JSON text as sent: one client serialises its
/// history the same way from request to request); empty beyond [`MAX_MESSAGE_HASHES`].
pub fn prefix_hashes(messages: &[&RawValue]) -> Vec<u64> {
    if messages.len() > MAX_MESSAGE_HASHES {
        return Vec::new();
    }
    let mut hasher = DefaultHasher::new();
    messages
        .iter()
        .map(|m| {
            m.get().hash(&mut hasher);
            hasher.finish()
        })
        .collect()
}

/// Reads each raw message as `T` (a message that is not an object reads as `T::default()`).
pub fn each<'a, T: serde::Deserialize<'a> + Default>(messages: &[&'a RawValue]) -> Vec<T> {
    messages
        .iter()
        .map(|m| serde_json::from_str::<T>(m.get()).unwrap_or_default())
        .collect()
}
