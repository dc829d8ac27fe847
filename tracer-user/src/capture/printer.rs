//! `llmtap capture` output: one line per captured record, credentials masked.

use std::collections::HashMap;
use std::io::Write;

use base64::Engine as _;

use super::clock::WallClock;
use super::event::{CaptureEvent, ConnectionId, Direction};
use super::redact::CredentialMasker;

/// Output format of `llmtap capture`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CaptureFormat {
    /// One human-readable line per record with the first bytes escaped.
    Text,
    /// One JSON object per record with the whole (masked) payload in base64.
    Jsonl,
}

/// Prints capture events; keeps one credential masker per stream so secrets split across
/// records are still masked.
pub struct CapturePrinter {
    format: CaptureFormat,
    preview_bytes: usize,
    clock: WallClock,
    maskers: HashMap<(ConnectionId, Direction), CredentialMasker>,
}

impl CapturePrinter {
    pub fn new(format: CaptureFormat, preview_bytes: usize, clock: WallClock) -> Self {
        Self {
            format,
            preview_bytes,
            clock,
            maskers: HashMap::new(),
        }
    }

    pub fn print(&mut self, event: &CaptureEvent, out: &mut impl Write) -> std::io::Result<()> {
        self.clock.refresh();
        match event {
            CaptureEvent::Data(d) => {
                let mut data = d.data.to_vec();
                self.maskers
                    .entry((d.conn, d.direction))
                    .or_default()
                    .mask(&mut data);
                let time = humantime::format_rfc3339_micros(self.clock.system_time(d.ts_return_ns));
                match self.format {
                    CaptureFormat::Text => {
                        let shown = &data[..data.len().min(self.preview_bytes)];
                        let more = if data.len() > shown.len() { "…" } else { "" };
                        let lost = if d.uncaptured_len > 0 && d.last_chunk {
                            format!(" uncaptured={}", d.uncaptured_len)
                        } else {
                            String::new()
                        };
                        writeln!(
                            out,
                            "{time} pid={} comm={} conn={:#x} {:<5} len={} call={}@{}{lost} \"{}\"{more}",
                            d.conn.pid,
                            d.comm,
                            d.conn.conn,
                            d.direction.as_str(),
                            d.data.len(),
                            d.call_len,
                            d.offset,
                            shown.escape_ascii(),
                        )
                    }
                    CaptureFormat::Jsonl => {
                        let line = serde_json::json!({
                            "event": "data",
                            "time_unix_nano": self.clock.unix_ns(d.ts_return_ns),
                            "entry_time_unix_nano": self.clock.unix_ns(d.ts_entry_ns),
                            "pid": d.conn.pid,
                            "tid": d.tid,
                            "comm": d.comm.to_string(),
                            "conn": format!("{:#x}", d.conn.conn),
                            "direction": d.direction.as_str(),
                            "call_len": d.call_len,
                            "offset": d.offset,
                            "stream_pos": d.stream_pos,
                            "uncaptured_len": d.uncaptured_len,
                            "data_b64": base64::engine::general_purpose::STANDARD.encode(&data),
                        });
                        writeln!(out, "{line}")
                    }
                }
            }
            // Lifecycle events are not traffic; `llmtap capture` shows traffic only.
            CaptureEvent::ProcessExec { .. }
            | CaptureEvent::ProcessExit { .. }
            | CaptureEvent::LibraryLoaded { .. }
            | CaptureEvent::ProcessHeld { .. } => Ok(()),
            CaptureEvent::ConnectionInfo {
                conn,
                peer,
                local,
                ts_ns,
            } => match self.format {
                CaptureFormat::Text => writeln!(
                    out,
                    "{} pid={} conn={:#x} socket {local} -> {peer}",
                    humantime::format_rfc3339_micros(self.clock.system_time(*ts_ns)),
                    conn.pid,
                    conn.conn
                ),
                CaptureFormat::Jsonl => writeln!(
                    out,
                    "{}",
                    serde_json::json!({
                        "event": "socket",
                        "time_unix_nano": self.clock.unix_ns(*ts_ns),
                        "pid": conn.pid,
                        "conn": format!("{:#x}", conn.conn),
                        "peer": peer.to_string(),
                        "local": local.to_string(),
                    })
                ),
            },
            CaptureEvent::Closed { conn, comm, ts_ns } => {
                self.maskers.remove(&(*conn, Direction::Write));
                self.maskers.remove(&(*conn, Direction::Read));
                match self.format {
                    CaptureFormat::Text => writeln!(
                        out,
                        "{} pid={} comm={comm} conn={:#x} closed",
                        humantime::format_rfc3339_micros(self.clock.system_time(*ts_ns)),
                        conn.pid,
                        conn.conn
                    ),
                    CaptureFormat::Jsonl => writeln!(
                        out,
                        "{}",
                        serde_json::json!({
                            "event": "close",
                            "time_unix_nano": self.clock.unix_ns(*ts_ns),
                            "pid": conn.pid,
                            "comm": comm.to_string(),
                            "conn": format!("{:#x}", conn.conn),
                        })
                    ),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::event::{Comm, DataEvent};
    use bytes::Bytes;

    fn event(data: &'static [u8]) -> CaptureEvent {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        CaptureEvent::Data(DataEvent {
            conn: ConnectionId {
                pid: 9,
                conn: 0xabc,
            },
            tid: 9,
            comm: Comm(comm),
            direction: Direction::Write,
            ts_entry_ns: 0,
            ts_return_ns: 0,
            call_len: data.len() as u64,
            offset: 0,
            stream_pos: 0,
            uncaptured_len: 0,
            last_chunk: true,
            resumed: false,
            data: Bytes::from_static(data),
        })
    }

    #[test]
    fn text_line_is_escaped_and_masked() {
        let mut p = CapturePrinter::new(CaptureFormat::Text, 200, WallClock::with_offset(0));
        let mut out = Vec::new();
        p.print(
            &event(b"GET / HTTP/1.1\r\nAuthorization: Bearer sk-live-123\r\n\r\n"),
            &mut out,
        )
        .unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.contains("pid=9 comm=curl conn=0xabc write len="),
            "{line}"
        );
        assert!(line.contains("GET / HTTP/1.1\\r\\n"), "{line}");
        assert!(!line.contains("sk-live-123"), "{line}");
    }

    #[test]
    fn jsonl_carries_masked_payload() {
        let mut p = CapturePrinter::new(CaptureFormat::Jsonl, 0, WallClock::with_offset(0));
        let mut out = Vec::new();
        p.print(&event(b"x-api-key: topsecret\r\n"), &mut out)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let data = base64::engine::general_purpose::STANDARD
            .decode(v["data_b64"].as_str().unwrap())
            .unwrap();
        assert_eq!(data.len(), 22);
        assert!(!String::from_utf8_lossy(&data).contains("topsecret"));
        assert_eq!(v["comm"], "curl");
    }
}
