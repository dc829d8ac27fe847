//! Server-Sent Events (WHATWG HTML §9.2.6), incrementally.

use super::lines::{Line, LineSplitter};

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` field, if any.
    pub event: Option<String>,
    /// `data:` lines joined with `\n`, as bytes: the JSON reader validates them anyway.
    pub data: Vec<u8>,
    pub id: Option<String>,
    /// A line or the data exceeded the per-event cap: the data is cut.
    pub truncated: bool,
}

/// Incremental SSE parser with a bounded per-event buffer.
#[derive(Debug)]
pub struct SseParser {
    lines: LineSplitter,
    current: SseEvent,
    has_data: bool,
    event_cap: usize,
    /// Bytes were lost: drop the event in progress up to the next blank line.
    skip_event: bool,
}

impl SseParser {
    pub fn new(event_cap: usize) -> Self {
        SseParser {
            lines: LineSplitter::new(event_cap),
            current: SseEvent::default(),
            has_data: false,
            event_cap,
            skip_event: false,
        }
    }

    /// Bytes of the stream were lost: the event in progress is dropped, parsing resumes at the
    /// next event boundary.
    pub fn lost_bytes(&mut self) {
        self.lines.lost_bytes();
        self.current = SseEvent::default();
        self.has_data = false;
        self.skip_event = true;
    }

    pub fn feed(&mut self, data: &[u8], on_event: &mut dyn FnMut(SseEvent)) {
        let Self {
            lines,
            current,
            has_data,
            event_cap,
            skip_event,
        } = self;
        lines.feed(data, &mut |line| {
            handle_line(line, current, has_data, *event_cap, skip_event, on_event)
        });
    }

    /// End of stream: an event without its final blank line is not dispatched (per spec).
    pub fn finish(&mut self) {
        self.lines.finish(&mut |_| {});
        self.current = SseEvent::default();
        self.has_data = false;
    }
}

fn handle_line(
    line: Line<'_>,
    current: &mut SseEvent,
    has_data: &mut bool,
    event_cap: usize,
    skip_event: &mut bool,
    on_event: &mut dyn FnMut(SseEvent),
) {
    if line.bytes.is_empty() {
        if *skip_event {
            *skip_event = false;
        } else if *has_data {
            on_event(std::mem::take(current));
        }
        *current = SseEvent::default();
        *has_data = false;
        return;
    }
    if *skip_event || line.bytes.first() == Some(&b':') {
        return;
    }
    let (field, value) = match memchr::memchr(b':', line.bytes) {
        Some(i) => {
            let value = line.bytes.get(i + 1..).unwrap_or_default();
            (
                line.bytes.get(..i).unwrap_or_default(),
                value.strip_prefix(b" ").unwrap_or(value),
            )
        }
        None => (line.bytes, &[][..]),
    };
    current.truncated |= line.overlong;
    match field {
        b"data" => {
            if *has_data {
                current.data.push(b'\n');
            }
            let room = event_cap.saturating_sub(current.data.len());
            if value.len() > room {
                current.truncated = true;
                current
                    .data
                    .extend_from_slice(value.get(..room).unwrap_or_default());
            } else {
                current.data.extend_from_slice(value);
            }
            *has_data = true;
        }
        b"event" => current.event = Some(String::from_utf8_lossy(value).into_owned()),
        b"id" if !value.contains(&0) => {
            current.id = Some(String::from_utf8_lossy(value).into_owned())
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(data: &[u8], split: usize) -> Vec<SseEvent> {
        let mut p = SseParser::new(1 << 16);
        let mut out = Vec::new();
        for piece in data.chunks(split) {
            p.feed(piece, &mut |e| out.push(e));
        }
        p.finish();
        out
    }

    #[test]
    fn fields_comments_multiline_and_line_endings() {
        let data = b": comment\r\n\r\nevent: message_start\r\ndata: {\"a\":\r\ndata:1}\r\nid: 7\r\n\r\ndata: x\rdata: y\r\rdata: [DONE]\n\ndata: unterminated";
        for split in 1..data.len() {
            let events = parse(data, split);
            assert_eq!(events.len(), 3, "split {split}");
            assert_eq!(events[0].event.as_deref(), Some("message_start"));
            assert_eq!(events[0].data, b"{\"a\":\n1}");
            assert_eq!(events[0].id.as_deref(), Some("7"));
            assert_eq!(events[1].data, b"x\ny");
            assert_eq!(events[2].data, b"[DONE]");
        }
    }

    #[test]
    fn lost_bytes_drop_the_event_in_progress() {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        p.feed(b"data: {\"partial", &mut |e| out.push(e));
        p.lost_bytes();
        p.feed(b"tail\"}\n\ndata: ok\n\n", &mut |e| out.push(e));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, b"ok");
    }

    #[test]
    fn per_event_cap() {
        let mut p = SseParser::new(8);
        let mut out = Vec::new();
        p.feed(b"data: 0123456789abc\n\n", &mut |e| out.push(e));
        assert_eq!(out.len(), 1);
        assert!(out[0].truncated);
        assert!(out[0].data.len() <= 8);
    }
}
