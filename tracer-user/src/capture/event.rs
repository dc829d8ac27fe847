//! Decoding of the kernel's ring-buffer records into owned events.
//!
//! Pure code: it runs on recorded bytes without privileges, so it is unit-tested and fuzzed.

use bytes::Bytes;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use crate::flow::{Comm, ConnectionId, Direction};
use tracer_common::{
    EVENT_HEADER_LEN, EventHeader, SocketInfo, direction, event_flags, event_kind,
};

/// One record of plaintext: all or part of one successful `SSL_read`/`SSL_write` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataEvent {
    pub conn: ConnectionId,
    pub tid: u32,
    pub comm: Comm,
    pub direction: Direction,
    /// CLOCK_MONOTONIC ns at the call's entry.
    pub ts_entry_ns: u64,
    /// CLOCK_MONOTONIC ns at the call's return.
    pub ts_return_ns: u64,
    /// Bytes the whole call transferred.
    pub call_len: u64,
    /// Offset of `data` within the call.
    pub offset: u64,
    /// Position of the call's first byte in its (connection, direction) stream.
    pub stream_pos: u64,
    /// Bytes of the call past the capture cap, never copied.
    pub uncaptured_len: u64,
    /// This record holds the call's last captured bytes.
    pub last_chunk: bool,
    /// The connection was muted (not copied) before this write, which starts a new request:
    /// the connection starts afresh here (`tracer_common::event_flags::RESUMED`).
    pub resumed: bool,
    pub data: Bytes,
}

/// What the kernel side reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaptureEvent {
    Data(DataEvent),
    /// `SSL_free` on a connection that carried data: its pointer may be reused from now on.
    Closed {
        conn: ConnectionId,
        comm: Comm,
        ts_ns: u64,
    },
    /// A process called execve; `comm` is the new program's name.
    ProcessExec {
        pid: u32,
        comm: Comm,
        ts_ns: u64,
    },
    /// A process's main thread exited.
    ProcessExit {
        pid: u32,
        comm: Comm,
        ts_ns: u64,
    },
    /// The dynamic loader mapped or unmapped libraries in a process (after dlopen).
    LibraryLoaded {
        pid: u32,
        comm: Comm,
        ts_ns: u64,
    },
    /// The kernel stopped a just-exec'd process at its first `connect` while its program was
    /// being hooked (`--hold-new-processes`): the session continues it.
    ProcessHeld {
        pid: u32,
        comm: Comm,
        ts_ns: u64,
    },
    /// The TCP socket under a TLS connection (reported once per connection).
    ConnectionInfo {
        conn: ConnectionId,
        peer: SocketAddr,
        local: SocketAddr,
        ts_ns: u64,
    },
}

impl CaptureEvent {
    /// The connection concerned; for process events, the process with connection 0.
    pub fn conn(&self) -> ConnectionId {
        match self {
            CaptureEvent::Data(d) => d.conn,
            CaptureEvent::Closed { conn, .. } | CaptureEvent::ConnectionInfo { conn, .. } => *conn,
            CaptureEvent::ProcessExec { pid, .. }
            | CaptureEvent::ProcessExit { pid, .. }
            | CaptureEvent::LibraryLoaded { pid, .. }
            | CaptureEvent::ProcessHeld { pid, .. } => ConnectionId { pid: *pid, conn: 0 },
        }
    }
}

/// A ring-buffer record that does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than the {EVENT_HEADER_LEN}-byte header")]
    Short(usize),
    #[error("record announces {announced} payload bytes but carries {carried}")]
    LengthMismatch { announced: usize, carried: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("unknown direction {0}")]
    UnknownDirection(u8),
    #[error("unknown socket family {0}")]
    UnknownFamily(u16),
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

fn socket_addrs(info: &SocketInfo) -> Option<(SocketAddr, SocketAddr)> {
    let ip = |bytes: &[u8; 16]| -> Option<IpAddr> {
        match info.family {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
                bytes[0], bytes[1], bytes[2], bytes[3],
            ))),
            AF_INET6 => {
                let v6 = Ipv6Addr::from(*bytes);
                // IPv4 peers of a dual-stack socket: report the IPv4 address.
                Some(
                    v6.to_ipv4_mapped()
                        .map(IpAddr::V4)
                        .unwrap_or(IpAddr::V6(v6)),
                )
            }
            _ => None,
        }
    };
    Some((
        SocketAddr::new(ip(&info.peer_addr)?, info.peer_port),
        SocketAddr::new(ip(&info.local_addr)?, info.local_port),
    ))
}

fn socket_info(peer: &SocketAddr, local: &SocketAddr) -> SocketInfo {
    let bytes = |ip: IpAddr| -> [u8; 16] {
        match ip {
            IpAddr::V4(v4) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&v4.octets());
                b
            }
            IpAddr::V6(v6) => v6.octets(),
        }
    };
    SocketInfo {
        family: if peer.is_ipv4() { AF_INET } else { AF_INET6 },
        peer_port: peer.port(),
        local_port: local.port(),
        _pad: 0,
        peer_addr: bytes(peer.ip()),
        local_addr: bytes(local.ip()),
    }
}

/// Decodes one ring-buffer record.
pub fn decode_record(record: &[u8]) -> Result<CaptureEvent, DecodeError> {
    if record.len() < EVENT_HEADER_LEN {
        return Err(DecodeError::Short(record.len()));
    }
    // SAFETY: length checked above; EventHeader is plain integers (any bit pattern is valid);
    // read_unaligned because ring records are only 8-byte aligned by convention.
    let header: EventHeader = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let payload = &record[EVENT_HEADER_LEN..];
    let conn = ConnectionId {
        pid: header.pid,
        conn: header.conn_id,
    };
    match header.kind {
        event_kind::DATA => {
            let announced = header.data_len as usize;
            if announced > payload.len() {
                return Err(DecodeError::LengthMismatch {
                    announced,
                    carried: payload.len(),
                });
            }
            let direction = match header.direction {
                direction::WRITE => Direction::Write,
                direction::READ => Direction::Read,
                other => return Err(DecodeError::UnknownDirection(other)),
            };
            Ok(CaptureEvent::Data(DataEvent {
                conn,
                tid: header.tid,
                comm: Comm(header.comm),
                direction,
                ts_entry_ns: header.ts_entry_ns,
                ts_return_ns: header.ts_return_ns,
                call_len: header.call_len,
                offset: header.offset,
                stream_pos: header.stream_pos,
                uncaptured_len: header.uncaptured_len,
                last_chunk: header.flags & event_flags::LAST_CHUNK != 0,
                resumed: header.flags & event_flags::RESUMED != 0,
                data: Bytes::copy_from_slice(&payload[..announced]),
            }))
        }
        event_kind::CLOSE => Ok(CaptureEvent::Closed {
            conn,
            comm: Comm(header.comm),
            ts_ns: header.ts_entry_ns,
        }),
        event_kind::EXEC => Ok(CaptureEvent::ProcessExec {
            pid: header.pid,
            comm: Comm(header.comm),
            ts_ns: header.ts_entry_ns,
        }),
        event_kind::EXIT => Ok(CaptureEvent::ProcessExit {
            pid: header.pid,
            comm: Comm(header.comm),
            ts_ns: header.ts_entry_ns,
        }),
        event_kind::CONN_INFO => {
            let size = std::mem::size_of::<SocketInfo>();
            if payload.len() < size {
                return Err(DecodeError::LengthMismatch {
                    announced: size,
                    carried: payload.len(),
                });
            }
            // SAFETY: length checked; SocketInfo is plain integers.
            let info: SocketInfo = unsafe { std::ptr::read_unaligned(payload.as_ptr().cast()) };
            let (peer, local) =
                socket_addrs(&info).ok_or(DecodeError::UnknownFamily(info.family))?;
            Ok(CaptureEvent::ConnectionInfo {
                conn,
                peer,
                local,
                ts_ns: header.ts_entry_ns,
            })
        }
        event_kind::LIBRARY_LOADED => Ok(CaptureEvent::LibraryLoaded {
            pid: header.pid,
            comm: Comm(header.comm),
            ts_ns: header.ts_entry_ns,
        }),
        event_kind::PROCESS_HELD => Ok(CaptureEvent::ProcessHeld {
            pid: header.pid,
            comm: Comm(header.comm),
            ts_ns: header.ts_entry_ns,
        }),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// Encodes an event in the kernel's record format: used by tests and recorded-event replays.
pub fn encode_record(event: &CaptureEvent) -> Vec<u8> {
    let (header, data): (EventHeader, &[u8]) = match event {
        CaptureEvent::Data(d) => (
            EventHeader {
                kind: event_kind::DATA,
                direction: match d.direction {
                    Direction::Write => direction::WRITE,
                    Direction::Read => direction::READ,
                },
                flags: if d.last_chunk {
                    event_flags::LAST_CHUNK
                } else {
                    0
                } | if d.resumed { event_flags::RESUMED } else { 0 },
                _reserved: 0,
                data_len: d.data.len() as u32,
                pid: d.conn.pid,
                tid: d.tid,
                conn_id: d.conn.conn,
                ts_entry_ns: d.ts_entry_ns,
                ts_return_ns: d.ts_return_ns,
                call_len: d.call_len,
                offset: d.offset,
                stream_pos: d.stream_pos,
                uncaptured_len: d.uncaptured_len,
                comm: d.comm.0,
            },
            &d.data,
        ),
        CaptureEvent::Closed { conn, comm, ts_ns } => (
            EventHeader {
                kind: event_kind::CLOSE,
                pid: conn.pid,
                conn_id: conn.conn,
                ts_entry_ns: *ts_ns,
                comm: comm.0,
                ..EventHeader::default()
            },
            &[],
        ),
        // Filled in below: it carries a payload.
        CaptureEvent::ConnectionInfo { .. } => (EventHeader::default(), &[][..]),
        CaptureEvent::ProcessExec { pid, comm, ts_ns }
        | CaptureEvent::ProcessExit { pid, comm, ts_ns }
        | CaptureEvent::LibraryLoaded { pid, comm, ts_ns }
        | CaptureEvent::ProcessHeld { pid, comm, ts_ns } => (
            EventHeader {
                kind: match event {
                    CaptureEvent::ProcessExec { .. } => event_kind::EXEC,
                    CaptureEvent::ProcessExit { .. } => event_kind::EXIT,
                    CaptureEvent::ProcessHeld { .. } => event_kind::PROCESS_HELD,
                    _ => event_kind::LIBRARY_LOADED,
                },
                pid: *pid,
                tid: *pid,
                ts_entry_ns: *ts_ns,
                comm: comm.0,
                ..EventHeader::default()
            },
            &[],
        ),
    };
    let info_bytes;
    let (header, data) = match event {
        CaptureEvent::ConnectionInfo {
            conn,
            peer,
            local,
            ts_ns,
        } => {
            let info = socket_info(peer, local);
            // SAFETY: SocketInfo is #[repr(C)] plain data.
            info_bytes = unsafe {
                std::slice::from_raw_parts(
                    (&info as *const SocketInfo).cast::<u8>(),
                    std::mem::size_of::<SocketInfo>(),
                )
            }
            .to_vec();
            (
                EventHeader {
                    kind: event_kind::CONN_INFO,
                    pid: conn.pid,
                    conn_id: conn.conn,
                    ts_entry_ns: *ts_ns,
                    data_len: info_bytes.len() as u32,
                    ..EventHeader::default()
                },
                info_bytes.as_slice(),
            )
        }
        _ => (header, data),
    };
    let mut out = Vec::with_capacity(EVENT_HEADER_LEN + data.len());
    // SAFETY: EventHeader is #[repr(C)] plain data; viewing it as bytes is sound.
    out.extend_from_slice(unsafe {
        std::slice::from_raw_parts(
            (&header as *const EventHeader).cast::<u8>(),
            EVENT_HEADER_LEN,
        )
    });
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::COMM_LEN;

    fn sample() -> CaptureEvent {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"curl");
        CaptureEvent::Data(DataEvent {
            conn: ConnectionId {
                pid: 42,
                conn: 0xdead_beef,
            },
            tid: 43,
            comm: Comm(comm),
            direction: Direction::Read,
            ts_entry_ns: 10,
            ts_return_ns: 20,
            call_len: 5,
            offset: 0,
            stream_pos: 100,
            uncaptured_len: 0,
            last_chunk: true,
            resumed: false,
            data: Bytes::from_static(b"hello"),
        })
    }

    #[test]
    fn round_trips() {
        let ev = sample();
        assert_eq!(decode_record(&encode_record(&ev)).unwrap(), ev);
        let close = CaptureEvent::Closed {
            conn: ConnectionId { pid: 1, conn: 2 },
            comm: Comm::default(),
            ts_ns: 3,
        };
        assert_eq!(decode_record(&encode_record(&close)).unwrap(), close);
        for ev in [
            CaptureEvent::ProcessExec {
                pid: 5,
                comm: Comm::default(),
                ts_ns: 6,
            },
            CaptureEvent::ProcessExit {
                pid: 5,
                comm: Comm::default(),
                ts_ns: 7,
            },
            CaptureEvent::LibraryLoaded {
                pid: 5,
                comm: Comm::default(),
                ts_ns: 8,
            },
        ] {
            assert_eq!(decode_record(&encode_record(&ev)).unwrap(), ev);
        }
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(decode_record(&[0u8; 10]), Err(DecodeError::Short(10)));
        let mut rec = encode_record(&sample());
        rec.truncate(rec.len() - 1);
        assert!(matches!(
            decode_record(&rec),
            Err(DecodeError::LengthMismatch { .. })
        ));
        let mut rec = encode_record(&sample());
        rec[0] = 9;
        assert_eq!(decode_record(&rec), Err(DecodeError::UnknownKind(9)));
        let mut rec = encode_record(&sample());
        rec[1] = 7;
        assert_eq!(decode_record(&rec), Err(DecodeError::UnknownDirection(7)));
    }

    #[test]
    fn comm_display_stops_at_nul() {
        if let CaptureEvent::Data(d) = sample() {
            assert_eq!(d.comm.to_string(), "curl");
        }
    }
}
