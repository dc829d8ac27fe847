//! Per-connection, per-direction ordering of captured plaintext.
//!
//! The kernel numbers every byte of each (connection, direction) stream (`stream_pos`), so
//! this stage turns records into contiguous data and explicit gaps: a lost ring-buffer record,
//! an unreadable page or a call past the capture cap all become a [`StreamEvent::Gap`] that the
//! protocol stages use to flag the affected call as incomplete instead of misparsing it.

use std::collections::HashMap;

use super::event::{CaptureEvent, Comm, ConnectionId, DataEvent, Direction};
pub use crate::flow::{StreamChunk, StreamEvent};

/// Orders records into [`StreamEvent`]s. Memory: one `u64` per live stream.
#[derive(Debug, Default)]
pub struct StreamAssembler {
    next_pos: HashMap<(ConnectionId, Direction), u64>,
    duplicates: u64,
}

impl StreamAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records whose bytes had all been delivered already (should stay 0).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Streams currently tracked.
    pub fn len(&self) -> usize {
        self.next_pos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.next_pos.is_empty()
    }

    /// Drops the state of a connection (idle eviction, process exit).
    pub fn forget(&mut self, conn: ConnectionId) {
        self.next_pos.remove(&(conn, Direction::Write));
        self.next_pos.remove(&(conn, Direction::Read));
    }

    /// Drops every connection of a process.
    pub fn forget_process(&mut self, pid: u32) {
        self.next_pos.retain(|(conn, _), _| conn.pid != pid);
    }

    pub fn push(&mut self, event: CaptureEvent, out: &mut Vec<StreamEvent>) {
        match event {
            CaptureEvent::Data(d) => self.push_data(d, out),
            CaptureEvent::Closed { conn, ts_ns, .. } => {
                self.forget(conn);
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
                    .next_pos
                    .keys()
                    .filter(|(conn, _)| conn.pid == pid)
                    .map(|(conn, _)| *conn)
                    .collect();
                conns.sort_unstable();
                conns.dedup();
                self.forget_process(pid);
                out.extend(
                    conns
                        .into_iter()
                        .map(|conn| StreamEvent::Closed { conn, ts_ns }),
                );
            }
        }
    }

    fn push_data(&mut self, d: DataEvent, out: &mut Vec<StreamEvent>) {
        let key = (d.conn, d.direction);
        let start = d.stream_pos.saturating_add(d.offset);
        let end = start.saturating_add(d.data.len() as u64);
        let expected = *self.next_pos.get(&key).unwrap_or(&0);
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
        self.next_pos.insert(key, next);
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
            data: Bytes::from_static(bytes),
        })
    }

    fn run(events: Vec<CaptureEvent>) -> Vec<StreamEvent> {
        let mut asm = StreamAssembler::new();
        let mut out = Vec::new();
        for e in events {
            asm.push(e, &mut out);
        }
        out
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
