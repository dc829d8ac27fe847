//! The plaintext streams the stages share: which TLS connection, which way, and the ordered
//! bytes with their gaps. `capture` produces these; `connection` and the protocol parsers
//! consume them without knowing how they were captured (so they run on recorded data alone).

use bytes::Bytes;
use tracer_common::COMM_LEN;

/// Which way application data moved, seen from the traced process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// The process wrote plaintext into TLS (`SSL_write*`): a client's request.
    Write,
    /// The process read plaintext out of TLS (`SSL_read*`): a client's response.
    Read,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Write => "write",
            Direction::Read => "read",
        }
    }
}

/// A connection: the TLS library's connection object (`SSL*`, …), unique within its process
/// while the connection lives, or a plain TCP socket (see [`is_plain_tcp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId {
    pub pid: u32,
    pub conn: u64,
}

impl ConnectionId {
    /// A plain (non-TLS) TCP connection, whose id is its socket's kernel address.
    pub fn is_plain_tcp(&self) -> bool {
        is_plain_tcp(self.conn)
    }
}

/// Whether a connection id names a plain (non-TLS) TCP socket rather than a TLS connection.
pub fn is_plain_tcp(conn: u64) -> bool {
    tracer_common::plain::is_socket_conn(conn)
}

/// Whether a connection id names the stdio pipes of an MCP client to a server it spawned
/// (newline-delimited JSON-RPC, not HTTP): `Write` its requests, `Read` the answers.
pub fn is_mcp_pipe(conn: u64) -> bool {
    tracer_common::pipe::is_pipe_conn(conn)
}

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{:#x}", self.pid, self.conn)
    }
}

/// How long capture may stop copying a connection that later stages found of no use: its
/// calls keep their place in the stream numbering, their bytes are counted, not copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MuteSpan {
    /// Until it closes: nothing of it is used (a server's side, or not HTTP).
    UntilClose,
    /// Until the process writes a new request on it (an HTTP/1 client whose requests so far
    /// were not LLM calls): from that request on it is copied again.
    UntilRequest,
}

/// A task's command name (`comm`), at most 15 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm(pub [u8; COMM_LEN]);

impl Comm {
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        String::from_utf8_lossy(&self.0[..end])
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl std::fmt::Display for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// Contiguous plaintext of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamChunk {
    pub conn: ConnectionId,
    pub direction: Direction,
    pub tid: u32,
    pub comm: Comm,
    /// CLOCK_MONOTONIC ns when the application called into TLS with these bytes.
    pub ts_entry_ns: u64,
    /// CLOCK_MONOTONIC ns when the call returned: for reads, when the bytes reached the app.
    pub ts_ns: u64,
    pub data: Bytes,
}

/// What the protocol stages consume, in capture order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    Data(StreamChunk),
    /// `len` bytes of the stream were not captured just before the next `Data`; `len == 0`
    /// means a discontinuity of unknown size (e.g. the kernel's position table was reset).
    Gap {
        conn: ConnectionId,
        direction: Direction,
        len: u64,
        ts_ns: u64,
    },
    /// The TLS connection was freed: forget it (its `SSL*` may be reused).
    Closed {
        conn: ConnectionId,
        ts_ns: u64,
    },
}

impl StreamEvent {
    pub fn conn(&self) -> ConnectionId {
        match self {
            StreamEvent::Data(c) => c.conn,
            StreamEvent::Gap { conn, .. } | StreamEvent::Closed { conn, .. } => *conn,
        }
    }
}
