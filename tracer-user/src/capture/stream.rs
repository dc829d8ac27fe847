//! Per-connection, per-direction ordering of captured plaintext.
//!
//! The kernel numbers every byte of each (connection, direction) stream (`stream_pos`), so
//! this stage turns records into contiguous data and explicit gaps: a lost ring-buffer record,
//! an unreadable page or a call past the capture cap all become a [`StreamEvent::Gap`] that the
//! protocol stages use to flag the affected call as incomplete instead of misparsing it.

use std::collections::{BTreeMap, HashMap};

use super::event::{CaptureEvent, Comm, ConnectionId, DataEvent, Direction};
pub use crate::flow::{StreamChunk, StreamEvent};

/// How long (kernel time) a record that arrived ahead of its stream's next byte waits for the
/// bytes before it. Calls on one connection from several threads at once (Go allows concurrent
/// `Write`s) take their byte ranges atomically in the kernel, but their records can reach the
/// ring in the other order; past this wait, the missing bytes are a loss (a gap).
pub const REORDER_WINDOW_NS: u64 = 50_000_000;
/// Records held per stream at most while bytes before them are missing; past it, the missing
/// bytes are declared a gap at once.
const MAX_HELD_PER_STREAM: usize = 32;
/// Record bytes held across all streams at most: past it, a stream's missing bytes are given
/// up as a gap rather than held (memory stays bounded with thousands of streams).
const MAX_HELD_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Default)]
struct Stream {
    /// Position of the next byte to deliver.
    next: u64,
    /// Records ahead of `next`, by position, waiting for the bytes before them.
    held: BTreeMap<u64, DataEvent>,
    /// Kernel time of the first record held since the stream was last contiguous.
    held_since_ns: u64,
    /// The connection started afresh after a mute (`DataEvent::resumed`): this direction's
    /// next record sets the position, its filtered bytes before it being no loss.
    resync: bool,
    /// Latest `ts_return_ns` delivered.
    last_ts_ns: u64,
}

/// What the assembler delivered of a connection: where each direction's stream stands and
/// when its latest record returned (what a mute of it is checked against in the kernel).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamsSeen {
    pub write_end: u64,
    pub read_end: u64,
    pub last_ts_ns: u64,
}

/// Orders records into [`StreamEvent`]s. Memory: a position per live stream, plus at most
/// [`MAX_HELD_PER_STREAM`] records per stream and [`MAX_HELD_BYTES`] in all, for at most
/// [`REORDER_WINDOW_NS`].
#[derive(Debug, Default)]
pub struct StreamAssembler {
    streams: HashMap<(ConnectionId, Direction), Stream>,
    /// Streams holding records, and the bytes of the records they hold.
    holding: usize,
    held_bytes: usize,
    /// No held record is due before this kernel time (a scan of the streams is needed only
    /// from then on).
    next_due_ns: u64,
    duplicates: u64,
}

impl StreamAssembler {
    pub fn new() -> Self {
        Self {
            next_due_ns: u64::MAX,
            ..Self::default()
        }
    }

    /// Records whose bytes had all been delivered already (should stay 0).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Streams currently tracked.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Where a connection's streams stand, if both are settled (nothing held for reordering)
    /// and at least one carried bytes. A direction waiting for its first record since the
    /// connection resumed counts as not seen (0).
    pub fn seen(&self, conn: ConnectionId) -> Option<StreamsSeen> {
        let mut seen = StreamsSeen::default();
        for direction in [Direction::Write, Direction::Read] {
            if let Some(stream) = self.streams.get(&(conn, direction)) {
                if !stream.held.is_empty() {
                    return None;
                }
                if stream.resync {
                    continue;
                }
                match direction {
                    Direction::Write => seen.write_end = stream.next,
                    Direction::Read => seen.read_end = stream.next,
                }
                seen.last_ts_ns = seen.last_ts_ns.max(stream.last_ts_ns);
            }
        }
        (seen.write_end > 0 || seen.read_end > 0).then_some(seen)
    }

    /// Ends a connection: what it holds is delivered (after gaps for what never came), then
    /// its state is dropped.
    fn close(&mut self, conn: ConnectionId, out: &mut Vec<StreamEvent>) {
        for direction in [Direction::Write, Direction::Read] {
            self.release_all((conn, direction), out);
            self.streams.remove(&(conn, direction));
        }
    }

    pub fn push(&mut self, event: CaptureEvent, out: &mut Vec<StreamEvent>) {
        if self.holding > 0
            && let Some(now_ns) = event_time(&event)
        {
            self.release_due(now_ns, out);
        }
        match event {
            CaptureEvent::Data(d) => self.push_data(d, out),
            CaptureEvent::Closed { conn, ts_ns, .. } => {
                self.close(conn, out);
                out.push(StreamEvent::Closed { conn, ts_ns });
            }
            // Process lifecycle is handled by the session (attach) and the daemon (state);
            // an exited process's streams are forgotten here.
            CaptureEvent::ProcessExec { .. }
            | CaptureEvent::LibraryLoaded { .. }
            | CaptureEvent::ProcessHeld { .. }
            | CaptureEvent::ConnectionInfo { .. } => {}
            // A process that exits without freeing its connections (killed, or exiting without
            // cleanup) closes them all: downstream calls in flight end here, not at idle timeout.
            CaptureEvent::ProcessExit { pid, ts_ns, .. } => {
                let mut conns: Vec<ConnectionId> = self
                    .streams
                    .keys()
                    .filter(|(conn, _)| conn.pid == pid)
                    .map(|(conn, _)| *conn)
                    .collect();
                conns.sort_unstable();
                conns.dedup();
                for conn in conns {
                    self.close(conn, out);
                    out.push(StreamEvent::Closed { conn, ts_ns });
                }
            }
        }
    }

    /// Delivers what waited longer than [`REORDER_WINDOW_NS`] at kernel time `now_ns`, the
    /// missing bytes before it becoming gaps. The daemon calls it on its timer too, so that
    /// a stream that goes quiet is not held back.
    pub fn release_due(&mut self, now_ns: u64, out: &mut Vec<StreamEvent>) {
        if self.holding == 0 || now_ns < self.next_due_ns {
            return;
        }
        let mut due = Vec::new();
        let mut next_due_ns = u64::MAX;
        for (key, stream) in &self.streams {
            if stream.held.is_empty() {
                continue;
            }
            let due_ns = stream.held_since_ns.saturating_add(REORDER_WINDOW_NS);
            if due_ns <= now_ns {
                due.push(*key);
            } else {
                next_due_ns = next_due_ns.min(due_ns);
            }
        }
        self.next_due_ns = next_due_ns;
        for key in due {
            self.release_all(key, out);
        }
    }

    /// Delivers everything a stream holds, in order, with gaps for the bytes still missing.
    fn release_all(&mut self, key: (ConnectionId, Direction), out: &mut Vec<StreamEvent>) {
        while let Some(stream) = self.streams.get_mut(&key)
            && let Some((_, first)) = stream.held.pop_first()
        {
            self.held_bytes = self.held_bytes.saturating_sub(first.data.len());
            if stream.held.is_empty() {
                stream.held_since_ns = 0;
                self.holding -= 1;
            }
            self.deliver(first, out);
            self.deliver_contiguous(key, out);
        }
    }

    /// Delivers held records that now continue the stream.
    fn deliver_contiguous(&mut self, key: (ConnectionId, Direction), out: &mut Vec<StreamEvent>) {
        while let Some(stream) = self.streams.get_mut(&key)
            && let Some(entry) = stream.held.first_entry()
            && *entry.key() <= stream.next
        {
            let record = entry.remove();
            self.held_bytes = self.held_bytes.saturating_sub(record.data.len());
            if stream.held.is_empty() {
                stream.held_since_ns = 0;
                self.holding -= 1;
            }
            self.deliver(record, out);
        }
    }

    fn push_data(&mut self, d: DataEvent, out: &mut Vec<StreamEvent>) {
        let key = (d.conn, d.direction);
        let start = d.stream_pos.saturating_add(d.offset);
        if d.resumed && d.direction == Direction::Write && d.offset == 0 {
            // The kernel filtered this connection (user space muted it) until this write,
            // which starts a new request: what came before is over, and the connection is
            // handed on as a new one. Its read side starts at its next record.
            self.close(d.conn, out);
            out.push(StreamEvent::Closed {
                conn: d.conn,
                ts_ns: d.ts_entry_ns,
            });
            self.streams.insert(
                key,
                Stream {
                    next: start,
                    ..Stream::default()
                },
            );
            self.streams.insert(
                (d.conn, Direction::Read),
                Stream {
                    resync: true,
                    ..Stream::default()
                },
            );
        }
        let stream = self.streams.entry(key).or_default();
        if stream.resync {
            stream.resync = false;
            stream.next = stream.next.max(start);
        }
        let restart = d.stream_pos == 0 && d.offset == 0;
        if start > stream.next && !restart {
            if stream.held.len() < MAX_HELD_PER_STREAM
                && self.held_bytes + d.data.len() <= MAX_HELD_BYTES
            {
                // Ahead of the stream: the bytes before it may still be on their way.
                if stream.held.is_empty() {
                    stream.held_since_ns = d.ts_return_ns;
                    self.holding += 1;
                    self.next_due_ns = self
                        .next_due_ns
                        .min(d.ts_return_ns.saturating_add(REORDER_WINDOW_NS));
                }
                self.held_bytes += d.data.len();
                if let Some(replaced) = stream.held.insert(start, d) {
                    self.held_bytes = self.held_bytes.saturating_sub(replaced.data.len());
                }
                return;
            }
            // Too much waiting: what is missing is lost.
            self.release_all(key, out);
        }
        self.deliver(d, out);
        self.deliver_contiguous(key, out);
    }

    /// Delivers one record at the stream's position: a gap before it if bytes are missing, the
    /// new bytes only if it overlaps what was delivered.
    fn deliver(&mut self, d: DataEvent, out: &mut Vec<StreamEvent>) {
        let key = (d.conn, d.direction);
        let start = d.stream_pos.saturating_add(d.offset);
        let end = start.saturating_add(d.data.len() as u64);
        let stream = self.streams.entry(key).or_default();
        let expected = stream.next;
        let gap = |len| StreamEvent::Gap {
            conn: d.conn,
            direction: d.direction,
            len,
            ts_ns: d.ts_return_ns,
        };
        let mut data = d.data.clone();
        if start > expected {
            out.push(gap(start - expected));
        } else if start < expected {
            if end <= expected && !(d.stream_pos == 0 && d.offset == 0) {
                self.duplicates += 1;
                return;
            }
            if d.stream_pos == 0 && d.offset == 0 {
                // The kernel restarted this stream's numbering (its LRU entry was evicted, or
                // the pointer was reused without an observed free): a discontinuity.
                out.push(gap(0));
            } else {
                // Partial overlap: keep only the new bytes.
                data = data.slice((expected - start) as usize..);
            }
        }
        let mut next = end;
        out.push(StreamEvent::Data(StreamChunk {
            conn: d.conn,
            direction: d.direction,
            tid: d.tid,
            comm: d.comm,
            ts_entry_ns: d.ts_entry_ns,
            ts_ns: d.ts_return_ns,
            data,
        }));
        if d.last_chunk && d.uncaptured_len > 0 {
            out.push(gap(d.uncaptured_len));
            next = next.saturating_add(d.uncaptured_len);
        }
        stream.next = next;
        stream.last_ts_ns = stream.last_ts_ns.max(d.ts_return_ns);
    }
}

/// Kernel time of an event, where it has one.
fn event_time(event: &CaptureEvent) -> Option<u64> {
    match event {
        CaptureEvent::Data(d) => Some(d.ts_return_ns),
        CaptureEvent::Closed { ts_ns, .. } | CaptureEvent::ProcessExit { ts_ns, .. } => {
            Some(*ts_ns)
        }
        _ => None,
    }
}

/// The inverse of [`StreamAssembler`], for replays and benchmarks: turns ordered stream events
/// into the kernel's records (one call per data chunk, positions numbered per stream).
pub fn to_capture_events(events: &[StreamEvent]) -> Vec<CaptureEvent> {
    let mut positions: HashMap<(ConnectionId, Direction), u64> = HashMap::new();
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        match event {
            StreamEvent::Data(c) => {
                let pos = positions.entry((c.conn, c.direction)).or_insert(0);
                let len = c.data.len() as u64;
                out.push(CaptureEvent::Data(DataEvent {
                    conn: c.conn,
                    tid: c.tid,
                    comm: c.comm,
                    direction: c.direction,
                    ts_entry_ns: c.ts_entry_ns,
                    ts_return_ns: c.ts_ns,
                    call_len: len,
                    offset: 0,
                    stream_pos: *pos,
                    uncaptured_len: 0,
                    last_chunk: true,
                    resumed: false,
                    data: c.data.clone(),
                }));
                *pos += len;
            }
            StreamEvent::Gap {
                conn,
                direction,
                len,
                ..
            } => {
                *positions.entry((*conn, *direction)).or_insert(0) += len;
            }
            StreamEvent::Closed { conn, ts_ns } => {
                positions.remove(&(*conn, Direction::Write));
                positions.remove(&(*conn, Direction::Read));
                out.push(CaptureEvent::Closed {
                    conn: *conn,
                    comm: Comm::default(),
                    ts_ns: *ts_ns,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const CONN: ConnectionId = ConnectionId {
        pid: 7,
        conn: 0x1000,
    };

    fn data(
        pos: u64,
        offset: u64,
        call_len: u64,
        bytes: &'static [u8],
        uncaptured: u64,
    ) -> CaptureEvent {
        let captured = call_len - uncaptured;
        CaptureEvent::Data(DataEvent {
            conn: CONN,
            tid: 7,
            comm: Comm::default(),
            direction: Direction::Write,
            ts_entry_ns: 1,
            ts_return_ns: 2,
            call_len,
            offset,
            stream_pos: pos,
            uncaptured_len: uncaptured,
            last_chunk: offset + bytes.len() as u64 == captured,
            resumed: false,
            data: Bytes::from_static(bytes),
        })
    }

    fn run(events: Vec<CaptureEvent>) -> Vec<StreamEvent> {
        let mut asm = StreamAssembler::new();
        let mut out = Vec::new();
        for e in events {
            asm.push(e, &mut out);
        }
        // What a quiet stream holds is released by the daemon's timer.
        asm.release_due(u64::MAX, &mut out);
        out
    }

    fn at(pos: u64, bytes: &'static [u8], ts_ns: u64) -> CaptureEvent {
        let mut event = data(pos, 0, bytes.len() as u64, bytes, 0);
        if let CaptureEvent::Data(d) = &mut event {
            d.ts_entry_ns = ts_ns;
            d.ts_return_ns = ts_ns;
        }
        event
    }

    fn other_stream_at(pos: u64, ts_ns: u64) -> CaptureEvent {
        let mut event = at(pos, b"-", ts_ns);
        if let CaptureEvent::Data(d) = &mut event {
            d.direction = Direction::Read;
        }
        event
    }

    #[test]
    fn records_that_reach_the_ring_out_of_order_are_put_back_in_order() {
        // Two threads writing one connection at once: the kernel gave the first 0..3 and the
        // second 3..6, but the second's record came first.
        let mut asm = StreamAssembler::new();
        let mut out = Vec::new();
        asm.push(at(3, b"def", 20), &mut out);
        assert!(out.is_empty(), "held until the bytes before it come");
        asm.push(at(0, b"abc", 10), &mut out);
        asm.push(at(6, b"g", 30), &mut out);
        assert_eq!(summary(&out), ["abc", "def", "g"]);
        assert_eq!(asm.holding, 0);
    }

    #[test]
    fn bytes_that_do_not_come_in_time_are_a_gap() {
        let mut asm = StreamAssembler::new();
        let mut out = Vec::new();
        asm.push(at(0, b"abc", 10), &mut out);
        asm.push(at(6, b"ghi", 20), &mut out);
        asm.push(other_stream_at(0, 20 + REORDER_WINDOW_NS - 1), &mut out);
        assert_eq!(summary(&out), ["abc", "-"], "still within the window");
        asm.push(other_stream_at(1, 20 + REORDER_WINDOW_NS), &mut out);
        assert_eq!(summary(&out), ["abc", "-", "<gap 3>", "ghi", "-"]);
        // A quiet stream is released by the timer.
        asm.push(at(12, b"m", 100), &mut out);
        asm.release_due(100 + REORDER_WINDOW_NS - 1, &mut out);
        assert_eq!(summary(&out).len(), 5);
        asm.release_due(100 + REORDER_WINDOW_NS, &mut out);
        assert_eq!(summary(&out)[5..], ["<gap 3>", "m"]);
    }

    #[test]
    fn records_held_per_stream_are_bounded() {
        let mut asm = StreamAssembler::new();
        let mut out = Vec::new();
        for i in 0..MAX_HELD_PER_STREAM as u64 {
            asm.push(at(10 + i, b"x", 1), &mut out);
        }
        assert!(out.is_empty());
        asm.push(at(100, b"y", 1), &mut out);
        let summary = summary(&out);
        assert_eq!(summary[0], "<gap 10>", "{summary:?}");
        assert_eq!(summary.len(), 1 + MAX_HELD_PER_STREAM + 2);
        assert_eq!(summary[summary.len() - 2..], ["<gap 58>", "y"]);
    }

    /// Held bytes are bounded across streams: past the bound, a stream's missing bytes become
    /// a gap at once instead of its record being held.
    #[test]
    fn bytes_held_across_streams_are_bounded() {
        const CHUNK: usize = 64 * 1024;
        let mut asm = StreamAssembler::new();
        let mut out = Vec::new();
        let streams = MAX_HELD_BYTES / CHUNK;
        let ahead = |n: usize| {
            let mut event = at(10, b"", 1);
            if let CaptureEvent::Data(d) = &mut event {
                d.conn.conn = 0x1000 + n as u64;
                d.data = Bytes::from(vec![b'x'; CHUNK]);
                d.call_len = CHUNK as u64;
                d.last_chunk = true;
            }
            event
        };
        for n in 0..streams {
            asm.push(ahead(n), &mut out);
        }
        assert!(out.is_empty(), "all held: {} bytes", asm.held_bytes);
        assert_eq!(asm.held_bytes, MAX_HELD_BYTES);
        asm.push(ahead(streams), &mut out);
        assert_eq!(out.len(), 2, "a gap, then the record: {}", out.len());
        assert_eq!(asm.held_bytes, MAX_HELD_BYTES);
        asm.release_due(u64::MAX, &mut out);
        assert_eq!(asm.held_bytes, 0);
    }

    #[test]
    fn a_close_delivers_what_was_held_first() {
        let mut asm = StreamAssembler::new();
        let mut out = Vec::new();
        asm.push(at(0, b"ab", 1), &mut out);
        asm.push(at(4, b"ef", 2), &mut out);
        asm.push(
            CaptureEvent::Closed {
                conn: CONN,
                comm: Comm::default(),
                ts_ns: 3,
            },
            &mut out,
        );
        assert_eq!(summary(&out), ["ab", "<gap 2>", "ef", "<closed>"]);
        assert!(asm.is_empty());
        assert_eq!(asm.holding, 0);
    }

    fn summary(out: &[StreamEvent]) -> Vec<String> {
        out.iter()
            .map(|e| match e {
                StreamEvent::Data(c) => String::from_utf8_lossy(&c.data).into_owned(),
                StreamEvent::Gap { len, .. } => format!("<gap {len}>"),
                StreamEvent::Closed { .. } => "<closed>".into(),
            })
            .collect()
    }

    /// A connection muted in the kernel and resumed by a new request: its filtered bytes are
    /// no loss (no gap, nothing held), and it starts afresh at the resuming write.
    #[test]
    fn a_resumed_write_starts_the_connection_afresh() {
        let mut asm = StreamAssembler::new();
        let mut out = Vec::new();
        asm.push(at(0, b"GET /a", 1), &mut out);
        asm.push(other_stream_at(0, 2), &mut out);
        assert_eq!(
            asm.seen(CONN),
            Some(StreamsSeen {
                write_end: 6,
                read_end: 1,
                last_ts_ns: 2
            })
        );
        // Muted: 100 write and 500 read bytes filtered, then a write that starts a request.
        let mut resumed = at(106, b"POST /v1", 3);
        if let CaptureEvent::Data(d) = &mut resumed {
            d.resumed = true;
        }
        asm.push(resumed, &mut out);
        assert_eq!(
            asm.seen(CONN).map(|s| (s.write_end, s.read_end)),
            Some((114, 0)),
            "the read side waits for its next record"
        );
        asm.push(other_stream_at(501, 4), &mut out);
        asm.push(at(114, b"!", 5), &mut out);
        asm.release_due(u64::MAX, &mut out);
        assert_eq!(
            summary(&out),
            ["GET /a", "-", "<closed>", "POST /v1", "-", "!"]
        );
        assert_eq!(asm.holding, 0);
        assert_eq!(
            asm.seen(CONN).map(|s| (s.write_end, s.read_end)),
            Some((115, 502))
        );
        // Without the flag, the same jump is a loss.
        let lost = run(vec![at(0, b"GET /a", 1), at(106, b"POST /v1", 3)]);
        assert_eq!(summary(&lost), ["GET /a", "<gap 100>", "POST /v1"]);
    }

    #[test]
    fn contiguous_calls_and_chunks() {
        let out = run(vec![
            data(0, 0, 6, b"abc", 0),
            data(0, 3, 6, b"def", 0),
            data(6, 0, 2, b"gh", 0),
        ]);
        assert_eq!(summary(&out), ["abc", "def", "gh"]);
    }

    #[test]
    fn lost_record_and_truncation_become_gaps() {
        let out = run(vec![
            data(0, 0, 3, b"abc", 0),
            // call at 3..6 lost in the ring buffer
            data(6, 0, 10, b"ghij", 6),
            data(16, 0, 1, b"z", 0),
        ]);
        assert_eq!(summary(&out), ["abc", "<gap 3>", "ghij", "<gap 6>", "z"]);
    }

    #[test]
    fn started_mid_stream_reports_leading_gap() {
        let out = run(vec![data(100, 0, 2, b"xy", 0)]);
        assert_eq!(summary(&out), ["<gap 100>", "xy"]);
    }

    #[test]
    fn reset_numbering_is_a_discontinuity_and_duplicates_are_dropped() {
        let mut asm = StreamAssembler::new();
        let mut out = Vec::new();
        asm.push(data(0, 0, 3, b"abc", 0), &mut out);
        asm.push(data(1, 0, 2, b"bc", 0), &mut out);
        assert_eq!(asm.duplicates(), 1);
        asm.push(data(0, 0, 2, b"new", 0), &mut out);
        assert_eq!(summary(&out), ["abc", "<gap 0>", "new"]);
    }

    #[test]
    fn replay_conversion_round_trips() {
        let original = vec![
            data(0, 0, 3, b"abc", 0),
            data(3, 0, 2, b"de", 0),
            CaptureEvent::Closed {
                conn: CONN,
                comm: Comm::default(),
                ts_ns: 9,
            },
        ];
        let streams = run(original);
        assert_eq!(run(to_capture_events(&streams)), streams);
    }

    #[test]
    fn process_exit_closes_its_connections() {
        let mut asm = StreamAssembler::new();
        let mut out = Vec::new();
        asm.push(data(0, 0, 3, b"abc", 0), &mut out);
        asm.push(
            CaptureEvent::ProcessExit {
                pid: 8,
                comm: Comm::default(),
                ts_ns: 5,
            },
            &mut out,
        );
        assert_eq!(summary(&out), ["abc"], "another pid's exit changes nothing");
        asm.push(
            CaptureEvent::ProcessExit {
                pid: CONN.pid,
                comm: Comm::default(),
                ts_ns: 6,
            },
            &mut out,
        );
        assert_eq!(summary(&out), ["abc", "<closed>"]);
        assert!(asm.is_empty());
    }

    #[test]
    fn close_forgets_state() {
        let mut asm = StreamAssembler::new();
        let mut out = Vec::new();
        asm.push(data(0, 0, 3, b"abc", 0), &mut out);
        asm.push(
            CaptureEvent::Closed {
                conn: CONN,
                comm: Comm::default(),
                ts_ns: 9,
            },
            &mut out,
        );
        assert!(asm.is_empty());
        asm.push(data(0, 0, 2, b"xy", 0), &mut out);
        assert_eq!(summary(&out), ["abc", "<closed>", "xy"]);
    }
}
