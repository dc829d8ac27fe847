//! Types shared by the eBPF programs (`tracer-ebpf`) and the daemon (`tracer-user`).
//!
//! Everything here is `#[repr(C)]` and plain old data: the kernel writes these bytes into the
//! ring buffer and user space reads them back with `ptr::read_unaligned`. Changing a layout
//! requires rebuilding both sides, which the build guarantees (the eBPF object is embedded).
#![no_std]

/// Length of `task_struct::comm`.
pub const COMM_LEN: usize = 16;

/// Payload bytes carried by one ring-buffer record. A TLS record holds at most 16 KiB of
/// plaintext, so every `SSL_read` fits in one record; larger writes are split into several.
/// Must stay below the 32 KiB per-CPU value limit together with the header.
pub const CHUNK_DATA_MAX: usize = 16 * 1024;

/// Default per-call capture cap: bytes of one `SSL_*` call copied out of the process.
pub const DEFAULT_MAX_CAPTURE_BYTES: u32 = 256 * 1024;

/// Largest accepted per-call cap (bounded so `bpf_loop` iterations stay small).
pub const MAX_CAPTURE_BYTES_LIMIT: u32 = 16 * 1024 * 1024;

/// Direction of application data relative to the traced process.
pub mod direction {
    /// The process wrote plaintext (`SSL_write*`): for a client, the request.
    pub const WRITE: u8 = 0;
    /// The process read plaintext (`SSL_read*`): for a client, the response.
    pub const READ: u8 = 1;
}

/// Kinds of ring-buffer record.
pub mod event_kind {
    /// A chunk of plaintext from one successful `SSL_*` call.
    pub const DATA: u8 = 1;
    /// The connection object was freed (`SSL_free`): its pointer may be reused from now on.
    pub const CLOSE: u8 = 2;
    /// A process called execve (pid, new comm): time to look for TLS code in it.
    pub const EXEC: u8 = 3;
    /// A process exited (its main thread): forget its connections.
    pub const EXIT: u8 = 4;
    /// The dynamic loader changed a process's mappings (`_dl_debug_state`, called after each
    /// dlopen): a library such as libssl may have just been mapped.
    pub const LIBRARY_LOADED: u8 = 5;
    /// The socket under a TLS connection, seen when the SSL call itself sent or received on
    /// TCP; the payload is a [`SocketInfo`](crate::SocketInfo).
    pub const CONN_INFO: u8 = 6;
    /// A process was stopped (SIGSTOP) at its first `connect` because user space had not
    /// finished hooking its program: user space continues it once the hooks are in place.
    pub const PROCESS_HELD: u8 = 7;
}

/// A `HOLD` map value: the process's hold state and which of its execs it is about (a pid
/// may exec several programs in a row: `sh -c` then the client), so that user space ends the
/// hold of the program it hooked and not of one exec'd since.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HoldEntry {
    /// One of [`hold_state`].
    pub state: u32,
    /// Counts the process's execs seen by the kernel.
    pub generation: u32,
    /// CLOCK_MONOTONIC ns at which the kernel stopped the process (state `HELD`): the hold
    /// guard continues a process held longer than its bound.
    pub held_at_ns: u64,
}

/// [`HoldEntry::state`] values. The `HOLD` map is keyed by the pid of a process that has just
/// exec'd.
pub mod hold_state {
    /// Just exec'd; whether the process may be held is for user space to say (the kernel
    /// could not tell whether it has a controlling terminal).
    pub const UNDECIDED: u32 = 0;
    /// User space is hooking the program: a `connect` now stops the process.
    pub const HOLDABLE: u32 = 1;
    /// Stopped at a `connect`; user space sends SIGCONT (or the hold guard, past its bound or
    /// when llmtap is gone).
    pub const HELD: u32 = 2;
}

/// Tags in the high bits of [`EventHeader::conn_id`] for rustls records (user-space
/// pointers never use them). rustls has no single connection pointer visible to both
/// directions: writes carry the connection object (`Writer`'s sink), reads the plaintext
/// buffer inside it, so user space pairs a reader with the writer just below it.
pub mod rustls_conn {
    /// `conn_id` is the address of a rustls `ConnectionCommon` (from `Writer`).
    pub const WRITER_TAG: u64 = 1 << 62;
    /// `conn_id` is the address of the `received_plaintext` buffer inside a connection.
    pub const READER_TAG: u64 = 1 << 63;
    /// Both tags.
    pub const TAG_MASK: u64 = WRITER_TAG | READER_TAG;
}

/// Plain (non-TLS) TCP capture: the socket send/receive tracepoints classify each connection on
/// the first bytes it sends and copy only those that speak HTTP to an LLM path.
pub mod plain {
    /// `conn_id` of a plain TCP connection is the address of its `struct sock`: a kernel
    /// address, whose top 16 bits are all ones. User-space pointers (`SSL*`, Go `tls.Conn`)
    /// and the rustls tags (bits 62/63 on a user pointer) never have them.
    pub const fn is_socket_conn(conn_id: u64) -> bool {
        conn_id >> 48 == 0xffff
    }

    /// `PLAIN_MODE` values.
    pub mod mode {
        /// No plain-HTTP capture (TLS socket identity still works).
        pub const OFF: u32 = 0;
        /// Every TCP peer port.
        pub const ALL_PORTS: u32 = 1;
        /// Only peer ports in the `PLAIN_PORTS` map.
        pub const LISTED_PORTS: u32 = 2;
    }

    /// What a socket was classified as (`SOCK_STATE` values, low byte).
    pub mod state {
        /// Plain HTTP client: its sends and receives are copied.
        pub const PLAIN_HTTP: u8 = 1;
        /// Nothing to do (not HTTP, not an LLM path, excluded port, or ignored by user space).
        pub const IGNORED: u8 = 2;
        /// TLS whose connection has not been tied to its socket yet.
        pub const TLS: u8 = 3;
        /// TLS whose connection was tied to its socket (or given up on).
        pub const TLS_DONE: u8 = 4;
    }

    /// Bytes of a request path matched against the LLM path prefixes.
    pub const PATH_PREFIX_LEN: usize = 32;
}

/// MCP over stdio: the pipes between an agent and the MCP server it spawned. The kernel marks
/// a pipe whose writer starts with a JSON-RPC session opening (`initialize`, `server/discover`)
/// as the channel's request pipe, and the server's standard output, found when the server
/// first reads that pipe as its standard input, as its response pipe; only the client's writes
/// to the first and its reads from the second are copied.
pub mod pipe {
    /// Tag of an MCP stdio channel's `conn_id`: bit 61 over the request pipe's inode number
    /// (32 bits). TLS connection ids are user pointers (below bit 47, rustls tags on bits
    /// 62/63) and plain sockets kernel addresses (top 16 bits set): none looks like this.
    pub const CONN_TAG: u64 = 1 << 61;

    /// Whether a `conn_id` names an MCP stdio channel.
    pub const fn is_pipe_conn(conn_id: u64) -> bool {
        conn_id >> 32 == CONN_TAG >> 32
    }

    /// The `conn_id` of the channel whose request pipe has inode number `ino`.
    pub const fn conn_of(ino: u64) -> u64 {
        CONN_TAG | (ino & 0xffff_ffff)
    }

    /// What a marked pipe is to its channel ([`PipeEntry::role`]).
    pub mod role {
        /// The client writes its requests into it (the server's standard input).
        pub const REQUEST: u8 = 1;
        /// The client reads the answers from it (the server's standard output).
        pub const RESPONSE: u8 = 2;
    }

    /// [`PipeEntry::response`] values of a request pipe.
    pub mod response {
        /// No server has read a request yet.
        pub const UNKNOWN: u8 = 0;
        /// The server's standard output was marked as the response pipe.
        pub const FOUND: u8 = 1;
        /// The server's standard output is not a pipe: answers are not seen.
        pub const NOT_A_PIPE: u8 = 2;
    }

    /// An `MCP_PIPES` value, keyed by the pipe's inode number.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct PipeEntry {
        /// The channel's `conn_id` ([`conn_of`] its request pipe).
        pub conn_id: u64,
        /// The other pipe of the channel (0: not known yet).
        pub partner_ino: u64,
        /// The client process: only its side of the pipes is copied.
        pub owner: u32,
        /// The server process, once it read a request (0 before).
        pub server: u32,
        /// One of [`role`].
        pub role: u8,
        /// One of [`response`] (request pipes).
        pub response: u8,
        pub _pad: [u8; 6],
    }
}

/// Bits of [`EventHeader::flags`].
pub mod event_flags {
    /// This record holds the last captured bytes of its call.
    pub const LAST_CHUNK: u8 = 1 << 0;
    /// The connection was muted ([`MuteEntry`]) and this write, which starts like an HTTP
    /// request, ended the mute: the bytes before it in both directions were filtered (counted,
    /// never copied), and user space starts the connection afresh here.
    pub const RESUMED: u8 = 1 << 1;
}

/// Indexes of the per-CPU `COUNTERS` array: events the kernel side could not deliver.
pub mod counter {
    /// Ring buffer full: a data record was dropped.
    pub const RINGBUF_DROPPED_RECORDS: u32 = 0;
    /// Ring buffer full: plaintext bytes lost with dropped records.
    pub const RINGBUF_DROPPED_BYTES: u32 = 1;
    /// `bpf_probe_read_user` failed (page not resident): the record was discarded.
    pub const READ_USER_FAILED: u32 = 2;
    /// Calls larger than the capture cap (their tail was not copied).
    pub const TRUNCATED_CALLS: u32 = 3;
    /// The in-flight call table was full: a call could not be tracked.
    pub const INFLIGHT_TABLE_FULL: u32 = 4;
    /// Close records dropped because the ring buffer was full.
    pub const RINGBUF_DROPPED_CLOSE: u32 = 5;
    /// Successful calls seen by the return probes (captured or not).
    pub const CALLS: u32 = 6;
    /// Exec/exit records dropped because the ring buffer was full.
    pub const RINGBUF_DROPPED_PROCESS: u32 = 7;
    /// TCP connections whose first bytes were an HTTP request to an LLM-looking path (or the
    /// h2 preface): their plaintext is copied.
    pub const PLAIN_HTTP_CONNECTIONS: u32 = 8;
    /// TCP connections whose first bytes were neither TLS nor such a request (or that
    /// `--plain-http` excludes): nothing of them is copied.
    pub const PLAIN_IGNORED_CONNECTIONS: u32 = 9;
    /// TCP connections whose first bytes were a TLS record.
    pub const TLS_CONNECTIONS: u32 = 10;
    /// Calls of muted connections ([`MuteEntry`](crate::MuteEntry)): numbered, not copied.
    pub const FILTERED_CALLS: u32 = 11;
    /// Plaintext bytes of those calls.
    pub const FILTERED_BYTES: u32 = 12;
    /// Mutes the kernel found stale at their first use (the connection wrote since user space
    /// decided, or its identity was reused) and dropped.
    pub const MUTES_STALE: u32 = 13;
    /// Mutes ended by a write that starts like a new HTTP request.
    pub const MUTES_RESUMED: u32 = 14;
    /// MCP stdio channels found (a pipe whose first write opened a JSON-RPC session).
    pub const MCP_PIPE_CHANNELS: u32 = 15;
    /// Bytes of MCP stdio channels copied (the client's requests and the answers it read).
    pub const MCP_PIPE_BYTES: u32 = 16;
    /// MCP stdio servers whose standard output is not a pipe: their answers are not seen.
    pub const MCP_PIPE_NO_RESPONSE_PIPE: u32 = 17;
    /// Number of counters.
    pub const COUNT: u32 = 18;
}

/// Header of every ring-buffer record; `data_len` payload bytes follow it directly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of [`event_kind`].
    pub kind: u8,
    /// One of [`direction`] (DATA records).
    pub direction: u8,
    /// [`event_flags`] bits.
    pub flags: u8,
    pub _reserved: u8,
    /// Payload bytes following the header in this record.
    pub data_len: u32,
    /// Thread group id (the process id user space sees).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The `SSL*`: identity of the TLS connection within its process.
    pub conn_id: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at the call's entry.
    pub ts_entry_ns: u64,
    /// `bpf_ktime_get_ns()` at the call's return.
    pub ts_return_ns: u64,
    /// Total bytes the call transferred (its return value).
    pub call_len: u64,
    /// Offset of this record's payload within the call.
    pub offset: u64,
    /// Byte position of the call's first byte in the (connection, direction) stream, counted by
    /// the kernel across all calls: user space detects lost records as gaps in this sequence.
    pub stream_pos: u64,
    /// Bytes of the call past the capture cap, never copied (0 when the call was captured whole).
    pub uncaptured_len: u64,
    /// `task_struct::comm` of the calling thread, NUL padded.
    pub comm: [u8; COMM_LEN],
}

/// Size of [`EventHeader`] in the ring buffer.
pub const EVENT_HEADER_LEN: usize = core::mem::size_of::<EventHeader>();

// A record must fit in one per-CPU map value (the kernel caps those at 32 KiB).
const _: () = assert!(EVENT_HEADER_LEN + CHUNK_DATA_MAX <= 32 * 1024);

/// A scratch record: header followed by the largest payload. Lives in a per-CPU array in the
/// kernel so that variable-length records can be sent with `bpf_ringbuf_output`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EventBuffer {
    pub header: EventHeader,
    pub data: [u8; CHUNK_DATA_MAX],
}

/// Addresses of the TCP socket under a TLS connection (IPv4 addresses in the first 4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketInfo {
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// Peer port, host byte order.
    pub peer_port: u16,
    /// Local port, host byte order.
    pub local_port: u16,
    pub _pad: u16,
    pub peer_addr: [u8; 16],
    pub local_addr: [u8; 16],
}

/// A header followed by a [`SocketInfo`], as one ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnInfoRecord {
    pub header: EventHeader,
    pub info: SocketInfo,
}

/// Byte offsets in the kernel's `struct sock_common` (the head of every `struct sock`). These
/// have been stable for many years; the IPv6 ones assume CONFIG_IPV6 and CONFIG_NET_NS as in
/// every distribution kernel, and the end-to-end tests check them on the test kernel.
pub mod sock_common {
    pub const SKC_DADDR: u64 = 0;
    pub const SKC_RCV_SADDR: u64 = 4;
    pub const SKC_DPORT: u64 = 12;
    pub const SKC_NUM: u64 = 14;
    pub const SKC_FAMILY: u64 = 16;
    pub const SKC_V6_DADDR: u64 = 56;
    pub const SKC_V6_RCV_SADDR: u64 = 72;
}

/// `StreamKey::direction` of a connection's [`MuteEntry`] in the `MUTED` map.
pub const MUTE_KEY_DIRECTION: u32 = 3;

/// A connection user space classified as not worth copying (a server's side, not HTTP, or an
/// HTTP/1 client whose last request was not an LLM call): its calls keep their place in the
/// stream numbering but nothing of them is copied. Written by user space in state `PENDING`
/// with what it had seen of the connection; the kernel checks at the first call after that
/// the connection is still the one user space judged, and drops the entry otherwise.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MuteEntry {
    /// One of [`mute_state`].
    pub state: u32,
    /// One of [`mute_kind`].
    pub kind: u32,
    /// End of the write and read bytes user space had received (stream positions).
    pub write_seen: u64,
    pub read_seen: u64,
    /// `ts_return_ns` of the latest record user space had received of the connection: every
    /// stream of that connection was created no later than this.
    pub seen_ts_ns: u64,
}

/// [`MuteEntry::state`] values.
pub mod mute_state {
    /// Written by user space, not checked yet.
    pub const PENDING: u32 = 0;
    /// Checked: the connection's calls are filtered.
    pub const ACTIVE: u32 = 1;
}

/// [`MuteEntry::kind`] values.
pub mod mute_kind {
    /// Until the connection closes (a server's side, or not HTTP: nothing of it is ever used).
    /// A write that starts like a request still ends it (a client under a reused identity
    /// whose free went unseen; a server only writes responses).
    pub const UNTIL_CLOSE: u32 = 0;
    /// Until the process writes something that starts like an HTTP request (an HTTP/1 client
    /// whose requests so far were not LLM calls): that request and everything after it are
    /// copied again.
    pub const UNTIL_REQUEST: u32 = 1;
}

/// Key of the per-stream byte position map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub conn_id: u64,
    pub pid: u32,
    pub direction: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers and arrays, no padding-dependent invariants.
    unsafe impl aya::Pod for super::StreamKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HoldEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::pipe::PipeEntry {}
    unsafe impl aya::Pod for super::MuteEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_stable() {
        // Both sides read this layout; a change must be deliberate.
        assert_eq!(EVENT_HEADER_LEN, 88);
        assert_eq!(core::mem::align_of::<EventHeader>(), 8);
    }
}
