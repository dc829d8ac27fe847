//! Plain (non-TLS) TCP, and the socket identity of TLS connections, from the
//! `sock_send_length`/`sock_recv_length` tracepoints (after every socket send and receive,
//! with the socket and the byte count; no kprobe or ftrace support needed).
//!
//! Each socket is classified once, on the first bytes it sends, and remembered in
//! `SOCK_STATE`:
//! - a TLS record header: TLS. Its ciphertext is never copied; the first application-data send
//!   made inside (or right after) a TLS library call ties that call's connection to the
//!   socket's addresses (one `CONN_INFO` record), after which the socket costs one lookup.
//! - an HTTP/1 request line whose path starts with one of the `LLM_PATHS` prefixes (filled by
//!   user space), or the h2 preface: plain HTTP. Its sends and receives are copied like
//!   `SSL_*` calls (same records, same stream numbering), keyed by the `struct sock` address.
//! - anything else (a server's response, a database protocol, a non-LLM path, an excluded
//!   port, a non-IP socket): ignored. User space may also ignore a plain socket later.
//! A socket that receives before it ever sends is left alone: HTTP clients speak first.
//!
//! The bytes are found through the system call the thread is in (x86-64 ABI, user registers):
//! `read`/`write`/`sendto`/`recvfrom` name one buffer, `readv`/`writev`/`sendmsg`/`recvmsg` an
//! iovec array. Anything else (sendfile, splice, io_uring, `*mmsg`) is numbered but not copied,
//! which user space sees as a gap.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{bpf_get_current_task_btf, bpf_loop, bpf_probe_read_user, bpf_task_pt_regs},
    },
    macros::{map, raw_tracepoint},
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::RawTracePointContext,
};
use tracer_common::{
    CHUNK_DATA_MAX, ConnInfoRecord, EventHeader, SocketInfo, StreamKey, counter, direction,
    event_flags, event_kind,
    plain::{PATH_PREFIX_LEN, mode, state},
    sock_common,
};

use crate::{
    EVENTS, INFLIGHT, PEER_KEY_DIRECTION, PEER_REPORTED, aead, begin_call, close_connection_of,
    config, count, current_comm, emit_chunk_record, peer_reported, wanted,
};

/// One of `tracer_common::plain::mode`, patched by the loader.
#[unsafe(no_mangle)]
static PLAIN_MODE: u32 = mode::OFF;

const MSG_PEEK: u64 = 2;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const TCP_CLOSE: u64 = 7;
/// Request-line bytes read to classify: a method of up to 7 letters, a space, the path prefix.
const CLASSIFY_BYTES: usize = 8 + PATH_PREFIX_LEN;
/// iovec segments followed per call; bytes past them are reported as uncaptured.
const MAX_SEGMENTS: u64 = 64;
/// TLS sends without a TLS call to tie them to, after which a socket is given up on.
const TLS_IDENTITY_TRIES: u64 = 8;

// x86-64 system call numbers (stable ABI).
const SYS_READ: u64 = 0;
const SYS_WRITE: u64 = 1;
const SYS_READV: u64 = 19;
const SYS_WRITEV: u64 = 20;
const SYS_SENDTO: u64 = 44;
const SYS_RECVFROM: u64 = 45;
const SYS_SENDMSG: u64 = 46;
const SYS_RECVMSG: u64 = 47;

// ---- maps ----

/// Classification of each socket: `struct sock *` → state (low byte), TLS identity tries
/// (next byte), owning process (high 32 bits).
#[map]
static SOCK_STATE: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);

/// Request-path prefixes that make a plain connection worth copying (`/v1/`, `/api/`, …).
#[map]
static LLM_PATHS: LpmTrie<[u8; PATH_PREFIX_LEN], u8> = LpmTrie::with_max_entries(256, 0);

/// Peer ports to capture in `LISTED_PORTS` mode.
#[map]
static PLAIN_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(256, 0);

/// The TLS connection a thread wrote last, for TLS stacks whose socket write follows the
/// plaintext call instead of happening inside it (Go, rustls, aws-lc, Node's memory BIOs).
#[map]
pub(crate) static LAST_TLS_WRITE: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// The segment walk of the call being emitted on this CPU. In a map rather than on the stack:
/// the verifier then treats its fields as unknown, so the loop callback is verified once
/// instead of once per distinct value.
#[map]
static SEGMENT_LOOP: PerCpuArray<SegmentLoop> = PerCpuArray::with_max_entries(1, 0);

/// How the bytes of a call are reached.
const SEGMENTS_ONE: u8 = 0;
/// An iovec array in user memory.
const SEGMENTS_IOVEC: u8 = 1;
/// Not reachable (kernel pages, another system call): counted as uncaptured.
const SEGMENTS_NONE: u8 = 2;

/// Where the bytes of the current system call are.
#[derive(Clone, Copy)]
struct Buffers {
    kind: u8,
    /// The buffer (ONE) or the iovec array (IOVEC).
    ptr: u64,
    /// Buffer length (ONE) or iovec count (IOVEC).
    len: u64,
}

/// State of the `bpf_loop` that walks a call's segments, one record per iteration.
#[repr(C)]
struct SegmentLoop {
    header: EventHeader,
    iov: u64,
    nr_segs: u64,
    next_seg: u64,
    seg_addr: u64,
    seg_left: u64,
    done: u64,
    captured: u64,
    iovec: u8,
}

#[inline(always)]
pub(crate) fn read_kernel<T: Copy + Default>(addr: u64) -> T {
    // SAFETY: the helper checks the address; a failed read yields the default value.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(addr as *const T) }.unwrap_or_default()
}

#[inline(always)]
pub(crate) fn read_user<T: Copy + Default>(addr: u64) -> T {
    // SAFETY: the helper checks the address; a failed read yields the default value.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(addr as *const T) }.unwrap_or_default()
}

/// The buffers of the socket system call this thread is in, from its saved user registers.
#[inline(always)]
fn syscall_buffers(dir: u8) -> Buffers {
    let none = Buffers {
        kind: SEGMENTS_NONE,
        ptr: 0,
        len: 0,
    };
    // SAFETY: BTF helpers on the current task; the register block is read with a checked copy.
    let regs_addr = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    if regs_addr == 0 {
        return none;
    }
    let reg = |offset: usize| -> u64 { read_kernel(regs_addr + offset as u64) };
    let nr = reg(core::mem::offset_of!(pt_regs, orig_rax));
    let (one, vec, msg) = if dir == direction::WRITE {
        (
            nr == SYS_WRITE || nr == SYS_SENDTO,
            nr == SYS_WRITEV,
            nr == SYS_SENDMSG,
        )
    } else {
        (
            nr == SYS_READ || nr == SYS_RECVFROM,
            nr == SYS_READV,
            nr == SYS_RECVMSG,
        )
    };
    let rsi = reg(core::mem::offset_of!(pt_regs, rsi));
    if one {
        Buffers {
            kind: SEGMENTS_ONE,
            ptr: rsi,
            len: reg(core::mem::offset_of!(pt_regs, rdx)),
        }
    } else if vec {
        Buffers {
            kind: SEGMENTS_IOVEC,
            ptr: rsi,
            len: reg(core::mem::offset_of!(pt_regs, rdx)),
        }
    } else if msg {
        // struct user_msghdr: msg_iov at 16, msg_iovlen at 24.
        Buffers {
            kind: SEGMENTS_IOVEC,
            ptr: read_user(rsi + 16),
            len: read_user(rsi + 24),
        }
    } else {
        none
    }
}

/// The first segment of a call: its address and length.
#[inline(always)]
fn first_segment(buffers: &Buffers) -> Option<(u64, u64)> {
    match buffers.kind {
        SEGMENTS_ONE => Some((buffers.ptr, buffers.len)),
        SEGMENTS_IOVEC if buffers.len > 0 => {
            Some((read_user(buffers.ptr), read_user(buffers.ptr + 8)))
        }
        _ => None,
    }
}

#[inline(always)]
fn is_tls_record_start(b: &[u8; CLASSIFY_BYTES]) -> bool {
    // Content type change_cipher_spec..application_data, then protocol version 3.x.
    (20..=23).contains(&b[0]) && b[1] == 3 && b[2] <= 4
}

const H2_PREFACE: &[u8; 14] = b"PRI * HTTP/2.0";

/// Classifies a socket on the first `sent` bytes it sent.
#[inline(never)]
fn classify(sk: u64, buffers: &Buffers, sent: u64) -> u8 {
    let Some((addr, seg_len)) = first_segment(buffers) else {
        return state::IGNORED;
    };
    let avail = if seg_len < sent { seg_len } else { sent };
    let mut n = if avail < CLASSIFY_BYTES as u64 {
        avail
    } else {
        CLASSIFY_BYTES as u64
    };
    n &= 63;
    if n < 3 || n > CLASSIFY_BYTES as u64 {
        return state::IGNORED;
    }
    let mut buf = [0u8; CLASSIFY_BYTES];
    // SAFETY: `n <= CLASSIFY_BYTES` bounds the copy into `buf`; the helper checks `addr`.
    if unsafe { bpf_probe_read_user(buf.as_mut_ptr().cast(), n as u32, addr as *const c_void) } != 0
    {
        return state::IGNORED;
    }
    if is_tls_record_start(&buf) {
        return state::TLS;
    }
    let plain_mode = config(&PLAIN_MODE);
    if plain_mode == mode::OFF {
        return state::IGNORED;
    }
    if plain_mode == mode::LISTED_PORTS {
        let port = u16::from_be(read_kernel(sk + sock_common::SKC_DPORT));
        // SAFETY: presence test only.
        if unsafe { PLAIN_PORTS.get(&port) }.is_none() {
            return state::IGNORED;
        }
    }
    if n >= H2_PREFACE.len() as u64 && buf[..H2_PREFACE.len()] == H2_PREFACE[..] {
        return state::PLAIN_HTTP;
    }
    // `METHOD SP /path`: 3 to 7 upper-case letters, a space, a slash.
    let mut method_len = 0u64;
    for (i, &b) in buf.iter().take(8).enumerate() {
        if b == b' ' {
            method_len = i as u64;
            break;
        }
        if !b.is_ascii_uppercase() {
            return state::IGNORED;
        }
    }
    if !(3..=7).contains(&method_len) {
        return state::IGNORED;
    }
    let path_start = method_len + 1;
    if avail <= path_start {
        return state::IGNORED;
    }
    let mut path_len = avail - path_start;
    if path_len > PATH_PREFIX_LEN as u64 {
        path_len = PATH_PREFIX_LEN as u64;
    }
    path_len &= 63;
    if path_len == 0 || path_len > PATH_PREFIX_LEN as u64 {
        return state::IGNORED;
    }
    let mut key = Key::new((path_len * 8) as u32, [0u8; PATH_PREFIX_LEN]);
    let data: *mut [u8; PATH_PREFIX_LEN] = &raw mut key.data;
    // SAFETY: `path_len <= PATH_PREFIX_LEN` bounds the copy into the key's data.
    if unsafe {
        bpf_probe_read_user(
            data.cast(),
            path_len as u32,
            (addr + path_start) as *const c_void,
        )
    } != 0
    {
        return state::IGNORED;
    }
    let path = key.data;
    if path[0] != b'/' {
        return state::IGNORED;
    }
    if LLM_PATHS.get(&key).is_some() {
        state::PLAIN_HTTP
    } else {
        state::IGNORED
    }
}

/// Reads the socket's addresses into a `CONN_INFO` record for connection `conn_id`.
///
/// The record is built in place, one copy on the stack: this function is called two frames
/// deep (`sock_send_length` → `tie_tls_socket`), and the verifier of recent kernels (6.18)
/// rejects chains whose frames add up past 512 bytes.
#[inline(never)]
fn report_socket(pid_tgid: u64, conn_id: u64, sk: u64) {
    let family: u16 = read_kernel(sk + sock_common::SKC_FAMILY);
    if family != AF_INET && family != AF_INET6 {
        return;
    }
    let pid = (pid_tgid >> 32) as u32;
    let key = StreamKey {
        conn_id,
        pid,
        direction: PEER_KEY_DIRECTION,
    };
    // SAFETY: helper without side effects.
    let _ = PEER_REPORTED.insert(&key, &unsafe { bpf_ktime_get_ns() }, 0);
    let mut record = ConnInfoRecord {
        header: EventHeader {
            kind: event_kind::CONN_INFO,
            pid,
            tid: pid_tgid as u32,
            conn_id,
            // SAFETY: helper without side effects.
            ts_entry_ns: unsafe { bpf_ktime_get_ns() },
            data_len: core::mem::size_of::<SocketInfo>() as u32,
            ..EventHeader::default()
        },
        info: SocketInfo::default(),
    };
    record.header.comm = current_comm();
    record.info.family = family;
    record.info.peer_port = u16::from_be(read_kernel(sk + sock_common::SKC_DPORT));
    record.info.local_port = read_kernel(sk + sock_common::SKC_NUM);
    if family == AF_INET {
        record.info.peer_addr[..4]
            .copy_from_slice(&read_kernel::<[u8; 4]>(sk + sock_common::SKC_DADDR));
        record.info.local_addr[..4]
            .copy_from_slice(&read_kernel::<[u8; 4]>(sk + sock_common::SKC_RCV_SADDR));
    } else {
        record.info.peer_addr = read_kernel(sk + sock_common::SKC_V6_DADDR);
        record.info.local_addr = read_kernel(sk + sock_common::SKC_V6_RCV_SADDR);
    }
    if EVENTS.output::<ConnInfoRecord>(&record, 0).is_err() {
        count(counter::RINGBUF_DROPPED_PROCESS, 1);
    }
}

/// A send on a TLS socket not tied to its connection yet: an application-data record sent
/// inside an `SSL_*` call, or right after another stack's plaintext write on this thread,
/// belongs to that connection.
#[inline(never)]
fn tie_tls_socket(pid_tgid: u64, sk: u64, sock_state: u64) {
    let Some((addr, avail)) = first_segment(&syscall_buffers(direction::WRITE)) else {
        return;
    };
    if avail == 0 || read_user::<u8>(addr) != 23 {
        return; // a handshake record: the connection's plaintext has not started
    }
    // SAFETY: values copied out of the maps.
    let conn_id = match unsafe { INFLIGHT.get(&pid_tgid) } {
        Some(ssl_call) => Some(ssl_call.call.conn_id),
        None => {
            let last = unsafe { LAST_TLS_WRITE.get(&pid_tgid) }.copied();
            if last.is_some() {
                let _ = LAST_TLS_WRITE.remove(&pid_tgid);
            }
            last
        }
    };
    let owner = sock_state & !0xffff;
    match conn_id {
        Some(conn_id) => {
            let key = StreamKey {
                conn_id,
                pid: (pid_tgid >> 32) as u32,
                direction: PEER_KEY_DIRECTION,
            };
            if !peer_reported(&key) {
                report_socket(pid_tgid, conn_id, sk);
            }
            let _ = SOCK_STATE.insert(&sk, &(owner | state::TLS_DONE as u64), 0);
        }
        None => {
            let tries = ((sock_state >> 8) & 0xff) + 1;
            let next = if tries >= TLS_IDENTITY_TRIES {
                owner | state::TLS_DONE as u64
            } else {
                owner | state::TLS as u64 | tries << 8
            };
            let _ = SOCK_STATE.insert(&sk, &next, 0);
        }
    }
}

#[inline(never)]
extern "C" fn emit_segment_chunk(_index: u32, _ctx: *mut c_void) -> i64 {
    let Some(st) = SEGMENT_LOOP.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's slot, filled by `emit_plain` before the loop; programs on one CPU
    // do not run concurrently.
    let st = unsafe { &mut *st };
    if st.done >= st.captured {
        return 1;
    }
    if st.seg_left == 0 {
        if st.iovec == 0 || st.next_seg >= st.nr_segs || st.next_seg >= MAX_SEGMENTS {
            return 1;
        }
        let entry = st.iov + st.next_seg * 16;
        st.seg_addr = read_user(entry);
        st.seg_left = read_user(entry + 8);
        st.next_seg += 1;
        return 0;
    }
    let mut n = st.captured - st.done;
    if n > st.seg_left {
        n = st.seg_left;
    }
    if n > CHUNK_DATA_MAX as u64 {
        n = CHUNK_DATA_MAX as u64;
    }
    if !emit_chunk_record(&st.header, st.done, n, st.captured, st.seg_addr) {
        return 1;
    }
    st.done += n;
    st.seg_addr += n;
    st.seg_left -= n;
    0
}

/// Emits the `len` bytes a plain-HTTP socket (or an MCP stdio pipe, `pipe.rs`) just sent or
/// received, as connection `sk`.
#[inline(never)]
pub(crate) fn emit_plain(pid_tgid: u64, sk: u64, dir: u8, len: u64) {
    // SAFETY: helper without side effects.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some((mut header, captured)) = begin_call(pid_tgid, sk, dir, now, len) else {
        return;
    };
    let buffers = syscall_buffers(dir);
    if buffers.kind == SEGMENTS_NONE || (buffers.kind == SEGMENTS_ONE && buffers.len < len) {
        // Not reachable: the bytes are numbered but not copied (a gap for user space).
        header.flags |= event_flags::LAST_CHUNK;
        header.uncaptured_len = len;
        if EVENTS.output::<EventHeader>(&header, 0).is_err() {
            count(counter::RINGBUF_DROPPED_RECORDS, 1);
        }
        return;
    }
    let iovec = buffers.kind == SEGMENTS_IOVEC;
    let Some(slot) = SEGMENT_LOOP.get_ptr_mut(0) else {
        return;
    };
    let state = SegmentLoop {
        header,
        iov: buffers.ptr,
        nr_segs: buffers.len,
        next_seg: 0,
        seg_addr: if iovec { 0 } else { buffers.ptr },
        seg_left: if iovec { 0 } else { captured },
        done: 0,
        captured,
        iovec: iovec as u8,
    };
    let segments = if !iovec {
        0
    } else if buffers.len < MAX_SEGMENTS {
        buffers.len
    } else {
        MAX_SEGMENTS
    };
    let iterations = captured.div_ceil(CHUNK_DATA_MAX as u64) + 2 * segments + 1;
    // SAFETY: `slot` is this CPU's map value; `emit_segment_chunk` matches the callback ABI.
    unsafe {
        *slot = state;
        bpf_loop(
            iterations as u32,
            emit_segment_chunk as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
}

/// After a socket send or receive of `ret` bytes (negative: an error).
#[inline(always)]
fn on_socket_io(sk: u64, ret: i64, flags: u64, dir: u8) {
    // SAFETY: value copied out of the map.
    let known = unsafe { SOCK_STATE.get(&sk) }.copied();
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let sock_state = match known {
        Some(s) => s,
        None => {
            if dir == direction::READ || ret <= 0 {
                return; // a socket that receives first is not an HTTP client
            }
            if !wanted(pid) {
                // Not classified yet: a process becomes wanted when user space learns its name
                // (`--comm`), and its sockets must then be classified like any other.
                return;
            }
            let owner = (pid as u64) << 32;
            let family: u16 = read_kernel(sk + sock_common::SKC_FAMILY);
            let class = if family != AF_INET && family != AF_INET6 {
                state::IGNORED
            } else {
                let class = classify(sk, &syscall_buffers(dir), ret as u64);
                match class {
                    state::PLAIN_HTTP => {
                        count(counter::PLAIN_HTTP_CONNECTIONS, 1);
                        report_socket(pid_tgid, sk, sk);
                    }
                    state::TLS => count(counter::TLS_CONNECTIONS, 1),
                    _ => count(counter::PLAIN_IGNORED_CONNECTIONS, 1),
                }
                class
            };
            let value = owner | class as u64;
            let _ = SOCK_STATE.insert(&sk, &value, 0);
            value
        }
    };
    match (sock_state & 0xff) as u8 {
        state::PLAIN_HTTP => {
            if ret <= 0 || (dir == direction::READ && flags & MSG_PEEK != 0) || !wanted(pid) {
                return; // peeked bytes stay queued and are read again
            }
            emit_plain(pid_tgid, sk, dir, ret as u64);
        }
        state::TLS => {
            if dir == direction::WRITE {
                if ret > 0 {
                    tie_tls_socket(pid_tgid, sk, sock_state);
                }
                aead::on_tcp_send(sk);
            } else {
                aead::on_tcp_recv(sk);
            }
        }
        state::TLS_DONE => {
            if dir == direction::WRITE {
                aead::on_tcp_send(sk);
            } else {
                aead::on_tcp_recv(sk);
            }
        }
        _ => {}
    }
}

// `sock:sock_send_length` / `sock:sock_recv_length` (Linux >= 6.3): after every socket send
// and receive, in the calling thread, with the socket, the result and the flags.
#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send_length(ctx: RawTracePointContext) -> i32 {
    on_socket_io(
        ctx.arg::<u64>(0),
        ctx.arg::<u64>(1) as i32 as i64,
        ctx.arg::<u64>(2),
        direction::WRITE,
    );
    0
}

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv_length(ctx: RawTracePointContext) -> i32 {
    on_socket_io(
        ctx.arg::<u64>(0),
        ctx.arg::<u64>(1) as i32 as i64,
        ctx.arg::<u64>(2),
        direction::READ,
    );
    0
}

/// `sock:inet_sock_set_state`: a TCP socket reaching CLOSE ends its classification (its
/// address will be reused) and, for plain HTTP, its streams. This may run in softirq context,
/// so the owning process comes from the socket's state.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> i32 {
    if ctx.arg::<u64>(2) as u32 as u64 != TCP_CLOSE {
        return 0;
    }
    let sk = ctx.arg::<u64>(0);
    aead::forget_socket(sk);
    // SAFETY: value copied out of the map.
    let Some(sock_state) = (unsafe { SOCK_STATE.get(&sk) }).copied() else {
        return 0;
    };
    let _ = SOCK_STATE.remove(&sk);
    if (sock_state & 0xff) as u8 == state::PLAIN_HTTP {
        close_connection_of((sock_state >> 32) as u32, sk);
    }
    0
}
