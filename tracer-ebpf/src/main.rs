//! llmtap's kernel side: uprobes on OpenSSL's `SSL_read`/`SSL_write` (and `_ex`) that copy the
//! plaintext of every successful call into a ring buffer.
//!
//! Entry probes remember the call's arguments per thread; return probes emit reads only when
//! the call succeeded. Writes are emitted at entry, before their bytes can reach the peer, so
//! a request always precedes its response in the ring; the repeats of a write that could not
//! complete (Node returns -1 twice during the handshake) emit nothing twice (`WRITE_RETRY`).
//! Each call is sent as one or more records
//! of at most `CHUNK_DATA_MAX` bytes, built in a per-CPU scratch buffer so each record takes
//! only its real size in the ring. Nothing is ever dropped silently: every failure increments
//! a per-CPU counter that the daemon reports.
#![no_std]
#![no_main]
// The BPF target has no compare-and-swap, so core's atomics offer no `fetch_add`, and the
// build (aya-build, cpu "generic") rejects LLVM's fetching atomics: the stream position is
// reserved with the instruction itself (BPF_ATOMIC | BPF_FETCH, Linux >= 5.12).
#![feature(asm_experimental_arch)]

use core::{arch::asm, ffi::c_void};

mod aead;
mod go_tls;
mod pipe;
mod plain;
mod rustls;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{
            bpf_get_current_comm, bpf_get_current_task, bpf_loop, bpf_probe_read_user,
            bpf_send_signal,
        },
    },
    macros::{map, raw_tracepoint, uprobe, uretprobe},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext},
};
use plain::read_kernel;
use tracer_common::{
    CHUNK_DATA_MAX, COMM_LEN, DEFAULT_MAX_CAPTURE_BYTES, EVENT_HEADER_LEN, EventBuffer,
    EventHeader, HoldEntry, MUTE_KEY_DIRECTION, MuteEntry, StreamKey, counter, direction,
    event_flags, event_kind, hold_state, mute_kind, mute_state, pipe::is_pipe_conn,
    plain::is_socket_conn,
};

// ---- configuration, written by the loader before the program is loaded ----

/// Per-call capture cap in bytes.
#[unsafe(no_mangle)]
static MAX_CAPTURE_BYTES: u32 = DEFAULT_MAX_CAPTURE_BYTES;
/// Bit 0: only trace pids in `PID_FILTER`; bit 1: only trace comms in `COMM_FILTER`.
#[unsafe(no_mangle)]
static FILTER_FLAGS: u32 = 0;
/// The daemon's own pid: never traced (its OTLP export may itself use TLS).
#[unsafe(no_mangle)]
static SELF_PID: u32 = 0;
/// Wake the reader only once this many bytes wait in the ring; below that it polls on a
/// timer. A wakeup per record (the default) costs more than the rest of the probe.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u32 = 1 << 20;

/// 1: stop a just-exec'd process at its first `connect` while user space hooks its program
/// (`--hold-new-processes`).
#[unsafe(no_mangle)]
static HOLD_NEW_PROCESSES: u32 = 0;

/// Byte offsets of `task_struct::signal` and `signal_struct::tty` in the running kernel
/// (from its BTF; 0 = unknown): whether a new process has a controlling terminal.
#[unsafe(no_mangle)]
static TASK_SIGNAL_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SIGNAL_TTY_OFFSET: u32 = 0;

/// Byte offsets of `task_struct::group_leader` and `task_struct::start_time` (from BTF; 0 =
/// unknown): when the current process started, so that state left by an earlier process with
/// the same pid is never taken for its own.
#[unsafe(no_mangle)]
static TASK_GROUP_LEADER_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_START_TIME_OFFSET: u32 = 0;

const FILTER_PID: u32 = 1;
const FILTER_COMM: u32 = 2;

// ---- maps ----

/// Records for user space. Its size is set by the loader (`--ring-buffer-size`).
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Calls between entry and return, keyed by `pid_tgid` (one call in flight per thread). LRU so
/// that entries of threads killed mid-call age out instead of filling the table.
#[map]
pub(crate) static INFLIGHT: LruHashMap<u64, SslCall> = LruHashMap::with_max_entries(16384, 0);

/// Byte position reached by each (process, connection, direction) stream.
#[map]
static STREAM_POS: LruHashMap<StreamKey, StreamPos> = LruHashMap::with_max_entries(65536, 0);

/// Connections whose socket was already reported: when (`bpf_ktime_get_ns`), so that a report
/// made for an earlier process with the same pid does not count.
#[map]
pub(crate) static PEER_REPORTED: LruHashMap<StreamKey, u64> =
    LruHashMap::with_max_entries(65536, 0);

/// OpenSSL writes are emitted at entry; a write that returned without sending all its bytes
/// (a non-blocking retry, a partial write) leaves here how many of its unsent bytes were
/// emitted, so that the call that sends them (from the same byte, per OpenSSL's retry rule)
/// does not emit them a second time. Keyed like `STREAM_POS` (direction `WRITE`).
#[map]
static WRITE_RETRY: LruHashMap<StreamKey, PendingWrite> = LruHashMap::with_max_entries(16384, 0);

/// Connections user space told the kernel not to copy (`tracer_common::MuteEntry`), keyed by
/// (connection, process, `MUTE_KEY_DIRECTION`). One lookup per call; LRU so that entries of
/// connections never freed age out.
#[map]
static MUTED: LruHashMap<StreamKey, MuteEntry> = LruHashMap::with_max_entries(16384, 0);

/// Scratch space to assemble one variable-length record per CPU.
#[map]
static SCRATCH: PerCpuArray<EventBuffer> = PerCpuArray::with_max_entries(1, 0);

/// Failure and activity counters, indexed by `tracer_common::counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Process ids to trace when the pid filter is on.
#[map]
static PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// Command names to trace when the comm filter is on.
#[map]
static COMM_FILTER: HashMap<[u8; COMM_LEN], u8> = HashMap::with_max_entries(1024, 0);

/// Processes whose own name (their main thread's, at exec) is in `COMM_FILTER`: their other
/// threads are traced whatever their names (tokio's `tokio-runtime-w`, Bun's `HTTP Client`).
/// Filled by user space from exec events and /proc.
#[map]
static COMM_PIDS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);

/// Processes exec'd and not yet hooked by user space, by pid: a [`hold_state`] value.
/// Written here at exec and at a hold, by user space while it hooks the program.
#[map]
static HOLD: LruHashMap<u32, HoldEntry> = LruHashMap::with_max_entries(16384, 0);

/// A `STREAM_POS` value.
#[repr(C)]
#[derive(Clone, Copy)]
struct StreamPos {
    /// Position of the stream's next byte; reserved with an atomic add, since threads may
    /// call into one connection at once (Go allows concurrent `Write`s).
    next: u64,
    /// When the stream was created: older than the process means another process's stream.
    born_ns: u64,
}

/// Unsent bytes of an OpenSSL write already emitted (see `WRITE_RETRY`).
#[repr(C)]
#[derive(Clone, Copy)]
struct PendingWrite {
    /// Address of the first unsent byte: where the repeat starts.
    buf: u64,
    /// The first 8 bytes from there, for a repeat from a moved buffer.
    head: u64,
    /// Bytes from the first unsent one that were emitted.
    len: u64,
    born_ns: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct InflightCall {
    conn_id: u64,
    buf: u64,
    /// `size_t *` out-parameter of the `_ex` variants (4th argument).
    out_len: u64,
    ts_entry_ns: u64,
    direction: u8,
}

/// An OpenSSL call between entry and return (an `INFLIGHT` value).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SslCall {
    pub(crate) call: InflightCall,
    /// Bytes a write asked to send (`num`): what is left unsent at its return is pending.
    len: u64,
    /// A `WRITE_RETRY` entry covered the start of this write: removed once it is all sent.
    had_pending: u64,
}

/// State handed to the `bpf_loop` callback that emits one chunk per iteration.
#[repr(C)]
struct EmitLoop {
    header: EventHeader,
    buf: u64,
    captured: u64,
}

#[inline(always)]
pub(crate) fn count(index: u32, by: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *slot += by };
    }
}

#[inline(always)]
pub(crate) fn config(value: &'static u32) -> u32 {
    // SAFETY: a global in .rodata patched by the loader; volatile so it is not constant-folded.
    unsafe { core::ptr::read_volatile(value) }
}

/// When the current process started (CLOCK_MONOTONIC ns, the clock of `bpf_ktime_get_ns`);
/// 0 when the kernel's offsets are unknown, which makes every entry current.
#[inline(always)]
pub(crate) fn process_start_ns() -> u64 {
    let (leader_at, start_at) = (
        config(&TASK_GROUP_LEADER_OFFSET),
        config(&TASK_START_TIME_OFFSET),
    );
    if leader_at == 0 || start_at == 0 {
        return 0;
    }
    // SAFETY: helper without side effects.
    let task = unsafe { bpf_get_current_task() };
    let leader: u64 = read_kernel(task + u64::from(leader_at));
    if leader == 0 {
        return 0;
    }
    read_kernel(leader + u64::from(start_at))
}

/// Whether an entry made at `born_ns` for the current pid is this process's, not one left by
/// an earlier process with the same pid.
#[inline(always)]
pub(crate) fn made_by_this_process(born_ns: u64) -> bool {
    born_ns >= process_start_ns()
}

/// Whether this process already reported the socket under connection `key`.
#[inline(always)]
pub(crate) fn peer_reported(key: &StreamKey) -> bool {
    // SAFETY: a plain copy of the value.
    match unsafe { PEER_REPORTED.get(key) } {
        Some(born_ns) => made_by_this_process(*born_ns),
        None => false,
    }
}

/// Ring-buffer output flags: wake the reader only when enough data is waiting.
#[inline(always)]
fn wakeup_flag() -> u64 {
    use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= config(&WAKEUP_BYTES) as u64 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
pub(crate) fn current_comm() -> [u8; COMM_LEN] {
    let mut comm = [0u8; COMM_LEN];
    // SAFETY: the helper writes at most COMM_LEN bytes into `comm`.
    unsafe { bpf_get_current_comm(comm.as_mut_ptr().cast(), COMM_LEN as u32) };
    comm
}

/// Whether this process is one the user asked to trace.
#[inline(always)]
fn wanted(pid: u32) -> bool {
    if pid == config(&SELF_PID) {
        return false;
    }
    let flags = config(&FILTER_FLAGS);
    if flags & FILTER_PID != 0 {
        // SAFETY: the value is a plain u8 we only test for presence.
        if unsafe { PID_FILTER.get(&pid) }.is_none() {
            return false;
        }
    }
    if flags & FILTER_COMM != 0 {
        // SAFETY: as above.
        if unsafe { COMM_PIDS.get(&pid) }.is_none() {
            let comm = current_comm();
            // SAFETY: as above.
            if unsafe { COMM_FILTER.get(&comm) }.is_none() {
                return false;
            }
        }
    }
    true
}

/// The call an OpenSSL entry probe sees, if the process is traced.
#[inline(always)]
fn on_entry(ctx: &ProbeContext, dir: u8) -> Option<(u64, InflightCall)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted((pid_tgid >> 32) as u32) {
        return None;
    }
    let (Some(conn_id), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return None;
    };
    let call = InflightCall {
        conn_id,
        buf,
        out_len: ctx.arg::<u64>(3).unwrap_or(0),
        // SAFETY: helper without side effects.
        ts_entry_ns: unsafe { bpf_ktime_get_ns() },
        direction: dir,
    };
    Some((pid_tgid, call))
}

/// Remembers a call until its return.
#[inline(always)]
fn track(pid_tgid: u64, call: InflightCall, len: u64, had_pending: bool) {
    let entry = SslCall {
        call,
        len,
        had_pending: u64::from(had_pending),
    };
    if INFLIGHT.insert(&pid_tgid, &entry, 0).is_err() {
        count(counter::INFLIGHT_TABLE_FULL, 1);
    }
}

/// Entry of `SSL_write(ssl, buf, num)` / `SSL_write_ex(ssl, buf, num, *written)`: the bytes
/// are emitted now, before any of them reaches the socket, so they come before the response
/// in the ring whatever thread reads it and however late this call returns. OpenSSL makes a
/// caller repeat a write that could not complete, from the same first unsent byte (same
/// address, or a moved buffer with the same bytes) and with at least its unsent length
/// (non-blocking retries, the rest of a partial write): `WRITE_RETRY` remembers where that is
/// and how many bytes from there were emitted already, so a repeat emits only what goes beyond
/// them. The cost: a write that fails for
/// good still shows its bytes.
#[inline(always)]
fn on_write_entry(ctx: &ProbeContext, num: u64) {
    let Some((pid_tgid, mut call)) = on_entry(ctx, direction::WRITE) else {
        return;
    };
    if num == 0 {
        track(pid_tgid, call, 0, false);
        return;
    }
    let key = StreamKey {
        conn_id: call.conn_id,
        pid: (pid_tgid >> 32) as u32,
        direction: direction::WRITE as u32,
    };
    // Almost every write finds no entry: one lookup, and the entry is written only by a write
    // that returns with bytes unsent (`on_write_return`).
    // SAFETY: a plain copy of the value.
    let pending = unsafe { WRITE_RETRY.get(&key) }.copied();
    let emitted = match pending {
        Some(pending)
            if pending.len <= num
                && made_by_this_process(pending.born_ns)
                && (pending.buf == call.buf || pending.head == head_bytes(call.buf)) =>
        {
            pending.len
        }
        _ => 0,
    };
    track(pid_tgid, call, num, pending.is_some());
    if emitted < num {
        call.buf += emitted;
        emit_call(pid_tgid, &call, num - emitted);
    }
}

/// The first 8 bytes at user address `buf` (0 if unreadable): recognises a repeated write whose
/// caller moved its buffer (`SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER`: Node copies pending data
/// into a new buffer), which must hold the same bytes.
#[inline(always)]
fn head_bytes(buf: u64) -> u64 {
    // SAFETY: checked read of user memory.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(buf as *const u64) }.unwrap_or(0)
}

/// Return of an OpenSSL write that moved `sent` bytes: what is left unsent stays pending (all
/// of it was emitted at entry), for the repeat that must follow.
#[inline(always)]
fn on_write_return(pid_tgid: u64, ssl: &SslCall, sent: u64) {
    let key = StreamKey {
        conn_id: ssl.call.conn_id,
        pid: (pid_tgid >> 32) as u32,
        direction: direction::WRITE as u32,
    };
    if sent >= ssl.len {
        if ssl.had_pending != 0 {
            let _ = WRITE_RETRY.remove(&key);
        }
        return;
    }
    let buf = ssl.call.buf + sent;
    let pending = PendingWrite {
        buf,
        head: head_bytes(buf),
        len: ssl.len - sent,
        born_ns: ssl.call.ts_entry_ns,
    };
    let _ = WRITE_RETRY.insert(&key, &pending, 0);
}

/// Emits the plaintext of a finished call of `len` bytes.
#[inline(always)]
fn emit_call(pid_tgid: u64, call: &InflightCall, len: u64) {
    let Some((header, captured)) = begin_call_at(
        pid_tgid,
        call.conn_id,
        call.direction,
        call.ts_entry_ns,
        len,
        call.buf,
    ) else {
        return;
    };
    if captured <= CHUNK_DATA_MAX as u64 {
        // One record (almost every call: a TLS record holds at most 16 KiB): no loop.
        emit_chunk_record(&header, 0, captured, captured, call.buf);
        return;
    }
    let mut state = EmitLoop {
        header,
        buf: call.buf,
        captured,
    };
    let chunks = captured.div_ceil(CHUNK_DATA_MAX as u64) as u32;
    // SAFETY: `emit_chunk` matches the callback ABI and `state` outlives the loop.
    unsafe {
        bpf_loop(
            chunks,
            emit_chunk as *mut c_void,
            (&mut state as *mut EmitLoop).cast(),
            0,
        )
    };
}

/// Starts the records of a finished call of `len` bytes, whatever the TLS library: counts the
/// call, takes its place in the stream and caps what is copied. Returns the header every
/// chunk shares and the bytes to copy; `None` for an empty call or a muted connection's.
#[inline(always)]
pub(crate) fn begin_call(
    pid_tgid: u64,
    conn_id: u64,
    dir: u8,
    ts_entry_ns: u64,
    len: u64,
) -> Option<(EventHeader, u64)> {
    begin_call_at(pid_tgid, conn_id, dir, ts_entry_ns, len, 0)
}

/// As [`begin_call`], with the user address of the call's first byte (0 if not one buffer):
/// a write to a connection muted until its next request is looked at there.
#[inline(always)]
pub(crate) fn begin_call_at(
    pid_tgid: u64,
    conn_id: u64,
    dir: u8,
    ts_entry_ns: u64,
    len: u64,
    first_byte: u64,
) -> Option<(EventHeader, u64)> {
    count(counter::CALLS, 1);
    if len == 0 {
        return None;
    }
    let pid = (pid_tgid >> 32) as u32;
    let key = StreamKey {
        conn_id,
        pid,
        direction: dir as u32,
    };
    let mut flags = 0u8;
    match muted(pid, conn_id, dir, first_byte, len) {
        Muted::No => {}
        Muted::Filtered => {
            // Numbered like any call, so that positions stay exact if the mute ends.
            reserve(&key, len);
            count(counter::FILTERED_CALLS, 1);
            count(counter::FILTERED_BYTES, len);
            return None;
        }
        Muted::Resumed => flags = event_flags::RESUMED,
    }
    let stream_pos = reserve(&key, len);

    if dir == direction::WRITE && !is_socket_conn(conn_id) && !is_pipe_conn(conn_id) {
        // A TLS write: its ciphertext goes out on this thread next, which ties the connection
        // to its socket (plain::tie_tls_socket), until the connection's socket is known.
        let peer_key = StreamKey {
            conn_id,
            pid,
            direction: PEER_KEY_DIRECTION,
        };
        if !peer_reported(&peer_key) {
            let _ = plain::LAST_TLS_WRITE.insert(&pid_tgid, &conn_id, 0);
        }
    }
    let cap = config(&MAX_CAPTURE_BYTES) as u64;
    let captured = if len > cap { cap } else { len };
    if captured < len {
        count(counter::TRUNCATED_CALLS, 1);
    }
    let header = EventHeader {
        kind: event_kind::DATA,
        direction: dir,
        flags,
        _reserved: 0,
        data_len: 0,
        pid,
        tid: pid_tgid as u32,
        conn_id,
        ts_entry_ns,
        // SAFETY: helper without side effects.
        ts_return_ns: unsafe { bpf_ktime_get_ns() },
        call_len: len,
        offset: 0,
        stream_pos,
        uncaptured_len: len - captured,
        comm: current_comm(),
    };
    Some((header, captured))
}

/// What a mute says about one call.
enum Muted {
    /// Not muted: copied.
    No,
    /// Muted: numbered, counted, not copied.
    Filtered,
    /// This write ended the mute: copied, flagged `RESUMED`.
    Resumed,
}

/// Whether the connection is muted for this call (see `tracer_common::MuteEntry`). A pending
/// mute is checked first: user space judged the connection on what it had received, and if
/// the process wrote since (a new request may be on its way) or the connection's identity
/// now names another connection (its streams are newer than what user space saw, or shorter),
/// the judgement is stale and the entry is dropped.
#[inline(always)]
fn muted(pid: u32, conn_id: u64, dir: u8, first_byte: u64, len: u64) -> Muted {
    let key = StreamKey {
        conn_id,
        pid,
        direction: MUTE_KEY_DIRECTION,
    };
    let Some(entry) = MUTED.get_ptr_mut(&key) else {
        return Muted::No;
    };
    // SAFETY: a map value pointer, valid for this program run; racing updates of `state`
    // by two CPUs write the same value.
    let mute = unsafe { *entry };
    if mute.state == mute_state::PENDING {
        if !made_by_this_process(mute.seen_ts_ns) || !mute_still_applies(pid, conn_id, &mute) {
            let _ = MUTED.remove(&key);
            count(counter::MUTES_STALE, 1);
            return Muted::No;
        }
        // SAFETY: as above.
        unsafe { (*entry).state = mute_state::ACTIVE };
    }
    // Any mute ends at a write that starts like a request: the next request of a client, or
    // a new client connection under a reused identity whose free went unseen (a server only
    // writes responses).
    if dir == direction::WRITE {
        if first_byte == 0 {
            return Muted::No; // cannot look: never filter what may be a request
        }
        if starts_like_request(first_byte, len) {
            let _ = MUTED.remove(&key);
            count(counter::MUTES_RESUMED, 1);
            return Muted::Resumed;
        }
    }
    Muted::Filtered
}

/// Whether the connection's streams are still those user space saw: each direction it saw
/// bytes of exists, was created no later than its latest record, and has not gone backwards;
/// and, for a mute until the next request, nothing was written since.
#[inline(always)]
fn mute_still_applies(pid: u32, conn_id: u64, mute: &MuteEntry) -> bool {
    let mut key = StreamKey {
        conn_id,
        pid,
        direction: direction::WRITE as u32,
    };
    // SAFETY: a plain copy of the value.
    let write = unsafe { STREAM_POS.get(&key) }.copied();
    key.direction = direction::READ as u32;
    // SAFETY: as above.
    let read = unsafe { STREAM_POS.get(&key) }.copied();
    let seen_ok = |stream: Option<StreamPos>, seen: u64| match stream {
        Some(pos) => seen == 0 || (pos.born_ns <= mute.seen_ts_ns && pos.next >= seen),
        None => seen == 0,
    };
    if !seen_ok(write, mute.write_seen) || !seen_ok(read, mute.read_seen) {
        return false;
    }
    if mute.kind == mute_kind::UNTIL_REQUEST {
        let written = write.map_or(0, |pos| pos.next);
        return written == mute.write_seen;
    }
    true
}

/// Whether the `len` bytes at user address `buf` start like an HTTP/1 request line: a method
/// of 3 to 7 upper-case letters and a space. Unreadable bytes count as a request, and so does
/// a write of upper-case letters only that ends before the space (a request line written in
/// pieces): a mute must never swallow one.
#[inline(always)]
fn starts_like_request(buf: u64, len: u64) -> bool {
    // SAFETY: checked read of user memory.
    let Ok(head) = (unsafe { aya_ebpf::helpers::bpf_probe_read_user(buf as *const u64) }) else {
        return true;
    };
    let head = head.to_le_bytes();
    let mut i = 0;
    while i < 8 {
        if i as u64 >= len {
            // The bytes past the write are not the caller's: judge only what it wrote.
            return true;
        }
        let b = head[i];
        if b == b' ' {
            return i >= 3;
        }
        if !b.is_ascii_uppercase() {
            return false;
        }
        i += 1;
    }
    false
}

/// Takes the next `len` bytes of stream `key`: returns the position of the first. The add is
/// atomic, so concurrent calls on one connection get distinct ranges in the order they reserve.
#[inline(always)]
fn reserve(key: &StreamKey, len: u64) -> u64 {
    if let Some(pos) = STREAM_POS.get_ptr_mut(key) {
        // SAFETY: a valid map value pointer; `next` is only ever changed by atomic adds.
        let born_ns = unsafe { (*pos).born_ns };
        if made_by_this_process(born_ns) {
            return fetch_add(pos, len);
        }
        // Left by an earlier process with this pid: this process's stream starts now.
        let _ = STREAM_POS.remove(key);
    }
    let fresh = StreamPos {
        next: len,
        // SAFETY: helper without side effects.
        born_ns: unsafe { bpf_ktime_get_ns() },
    };
    if STREAM_POS.insert(key, &fresh, BPF_NOEXIST as u64).is_ok() {
        return 0;
    }
    // Another thread created the stream in between: take a range after its bytes.
    match STREAM_POS.get_ptr_mut(key) {
        Some(pos) => fetch_add(pos, len),
        None => 0,
    }
}

/// Adds `len` to a stream's `next` atomically; returns the value before.
#[inline(always)]
fn fetch_add(pos: *mut StreamPos, len: u64) -> u64 {
    let mut value = len;
    // SAFETY: `pos` is a valid map value pointer; `next` is its first field, 8-byte aligned,
    // and only ever changed by atomic adds. The instruction reads and writes only that word.
    unsafe {
        asm!(
            "{value} = atomic_fetch_add((u64 *)({next} + 0), {value})",
            value = inout(reg) value,
            next = in(reg) &raw mut (*pos).next,
            options(nostack),
        );
    }
    value
}

#[inline(never)]
extern "C" fn emit_chunk(index: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `EmitLoop` passed to bpf_loop by `emit_call`.
    let state = unsafe { &*(ctx as *const EmitLoop) };
    let offset = index as u64 * CHUNK_DATA_MAX as u64;
    if offset >= state.captured {
        return 1;
    }
    let mut n = state.captured - offset;
    if n > CHUNK_DATA_MAX as u64 {
        n = CHUNK_DATA_MAX as u64;
    }
    if !emit_chunk_record(&state.header, offset, n, state.captured, state.buf + offset) {
        return 1;
    }
    0
}

/// Copies `n <= CHUNK_DATA_MAX` bytes from user address `src`, the call's bytes at `offset`
/// of `captured`, into one record and outputs it (a failed copy or a full ring buffer is
/// counted). `false` when there is no scratch buffer: stop emitting.
#[inline(always)]
pub(crate) fn emit_chunk_record(
    call: &EventHeader,
    offset: u64,
    n: u64,
    captured: u64,
    src: u64,
) -> bool {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: `scratch` points to this CPU's EventBuffer; `n <= CHUNK_DATA_MAX` bounds the copy
    // into `data` and the record length passed to the ring buffer.
    unsafe {
        let mut header = *call;
        header.offset = offset;
        header.data_len = n as u32;
        if offset + n == captured {
            header.flags |= event_flags::LAST_CHUNK;
        }
        (*scratch).header = header;
        let data: *mut [u8; CHUNK_DATA_MAX] = &raw mut (*scratch).data;
        if bpf_probe_read_user(data.cast(), n as u32, src as *const c_void) != 0 {
            count(counter::READ_USER_FAILED, 1);
            return true;
        }
        let record =
            core::slice::from_raw_parts(scratch as *const u8, EVENT_HEADER_LEN + n as usize);
        // A connection resumed after a mute is judged again by user space at once: until
        // then its bytes are copied, whatever they turn out to be.
        let wakeup = if header.flags & event_flags::RESUMED != 0 {
            aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP as u64
        } else {
            wakeup_flag()
        };
        if EVENTS.output::<[u8]>(record, wakeup).is_err() {
            count(counter::RINGBUF_DROPPED_RECORDS, 1);
            count(counter::RINGBUF_DROPPED_BYTES, n);
        }
    }
    true
}

/// Return of `SSL_read` / `SSL_write`: `int` bytes transferred, ≤ 0 on failure or retry.
#[inline(always)]
fn on_return(ctx: &RetProbeContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain value copied out before the entry is removed.
    let Some(ssl) = (unsafe { INFLIGHT.get(&pid_tgid) }).copied() else {
        return;
    };
    let _ = INFLIGHT.remove(&pid_tgid);
    let ret: i32 = ctx.ret();
    let moved = if ret > 0 { ret as u64 } else { 0 };
    if ssl.call.direction == direction::WRITE {
        on_write_return(pid_tgid, &ssl, moved);
    } else if moved > 0 {
        emit_call(pid_tgid, &ssl.call, moved);
    }
}

/// Return of `SSL_read_ex` / `SSL_write_ex`: 1 on success, byte count in `*out_len`.
#[inline(always)]
fn on_return_ex(ctx: &RetProbeContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: as in `on_return`.
    let Some(ssl) = (unsafe { INFLIGHT.get(&pid_tgid) }).copied() else {
        return;
    };
    let _ = INFLIGHT.remove(&pid_tgid);
    let call = ssl.call;
    let ret: i32 = ctx.ret();
    let moved = if ret != 1 || call.out_len == 0 {
        0
    } else {
        // SAFETY: reads the caller's size_t through the checked helper.
        match unsafe { aya_ebpf::helpers::bpf_probe_read_user(call.out_len as *const u64) } {
            Ok(len) => len,
            Err(_) => {
                count(counter::READ_USER_FAILED, 1);
                return;
            }
        }
    };
    if call.direction == direction::WRITE {
        on_write_return(pid_tgid, &ssl, moved);
    } else if moved > 0 {
        emit_call(pid_tgid, &call, moved);
    }
}

/// `SSL_write(SSL *s, const void *buf, int num)`.
#[uprobe]
pub fn ssl_write_entry(ctx: ProbeContext) -> u32 {
    let num = ctx.arg::<u64>(2).unwrap_or(0) as u32 as i32;
    on_write_entry(&ctx, if num > 0 { num as u64 } else { 0 });
    0
}

/// `SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)`.
#[uprobe]
pub fn ssl_write_ex_entry(ctx: ProbeContext) -> u32 {
    on_write_entry(&ctx, ctx.arg::<u64>(2).unwrap_or(0));
    0
}

#[uprobe]
pub fn ssl_read_entry(ctx: ProbeContext) -> u32 {
    if let Some((pid_tgid, call)) = on_entry(&ctx, direction::READ) {
        track(pid_tgid, call, 0, false);
    }
    0
}

#[uretprobe]
pub fn ssl_rw_return(ctx: RetProbeContext) -> u32 {
    on_return(&ctx);
    0
}

#[uretprobe]
pub fn ssl_rw_ex_return(ctx: RetProbeContext) -> u32 {
    on_return_ex(&ctx);
    0
}

/// `SSL_free(SSL *s)`: the connection is gone and its pointer may be reused.
#[uprobe]
pub fn ssl_free_entry(ctx: ProbeContext) -> u32 {
    if let Some(conn_id) = ctx.arg::<u64>(0) {
        close_connection(conn_id);
    }
    0
}

/// Forgets a connection's stream positions and tells user space it is gone (its identity may
/// be reused from now on). Shared by every TLS stack's close hook.
#[inline(always)]
pub(crate) fn close_connection(conn_id: u64) {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !wanted(pid) {
        return;
    }
    close_connection_of(pid, conn_id);
}

/// As [`close_connection`], for a connection of process `pid` (not necessarily the caller).
#[inline(always)]
pub(crate) fn close_connection_of(pid: u32, conn_id: u64) {
    let mut key = StreamKey {
        conn_id,
        pid,
        direction: direction::WRITE as u32,
    };
    let had_write = STREAM_POS.remove(&key).is_ok();
    key.direction = direction::READ as u32;
    let had_read = STREAM_POS.remove(&key).is_ok();
    key.direction = PEER_KEY_DIRECTION;
    let _ = PEER_REPORTED.remove(&key);
    key.direction = MUTE_KEY_DIRECTION;
    let _ = MUTED.remove(&key);
    key.direction = direction::WRITE as u32;
    let _ = WRITE_RETRY.remove(&key);
    if !had_write && !had_read {
        // Never carried data (or was filtered out): nothing for user space to forget.
        return;
    }
    let header = EventHeader {
        kind: event_kind::CLOSE,
        pid,
        tid: pid,
        conn_id,
        // SAFETY: helper without side effects.
        ts_entry_ns: unsafe { bpf_ktime_get_ns() },
        ts_return_ns: 0,
        comm: current_comm(),
        ..EventHeader::default()
    };
    if EVENTS.output::<EventHeader>(&header, 0).is_err() {
        count(counter::RINGBUF_DROPPED_CLOSE, 1);
    }
}

/// Sends a process lifecycle record (exec or exit) with only the header.
#[inline(always)]
fn emit_process_event(kind: u8) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    if kind == event_kind::EXIT && pid != pid_tgid as u32 {
        // Only the main thread's exit ends the process as far as user space cares.
        return;
    }
    if kind == event_kind::EXEC && config(&FILTER_FLAGS) & FILTER_PID != 0 {
        // With a pid filter, a new process is never one of the wanted pids.
        return;
    }
    if !wanted(pid) {
        return;
    }
    let header = EventHeader {
        kind,
        pid,
        tid: pid_tgid as u32,
        // SAFETY: helper without side effects.
        ts_entry_ns: unsafe { bpf_ktime_get_ns() },
        comm: current_comm(),
        ..EventHeader::default()
    };
    // A new program or library is inspected and hooked by user space, racing the program's
    // first TLS write: wake the reader now rather than at its next poll.
    let flags = if kind == event_kind::EXIT {
        0
    } else {
        aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP as u64
    };
    if EVENTS.output::<EventHeader>(&header, flags).is_err() {
        count(counter::RINGBUF_DROPPED_PROCESS, 1);
    }
}

/// `sched_process_exec`: a new program image, possibly a static TLS binary or one that will
/// load its own libssl; user space inspects it right away.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn process_exec(_ctx: RawTracePointContext) -> i32 {
    pipe::on_exec((bpf_get_current_pid_tgid() >> 32) as u32);
    if config(&HOLD_NEW_PROCESSES) != 0 {
        file_for_hold((bpf_get_current_pid_tgid() >> 32) as u32);
    }
    emit_process_event(event_kind::EXEC);
    0
}

/// Files a process that just exec'd or mapped a library in `HOLD`. A process with a
/// controlling terminal is never held:
/// a job-control shell waiting for it would see it stop.
#[inline(always)]
fn file_for_hold(pid: u32) {
    if !wanted(pid) {
        return;
    }
    // SAFETY: a plain copy of the value.
    let generation = unsafe { HOLD.get(&pid) }.map_or(1, |e| e.generation.wrapping_add(1));
    let state = match has_controlling_tty() {
        Some(true) => {
            let _ = HOLD.remove(&pid);
            return;
        }
        Some(false) => hold_state::HOLDABLE,
        None => hold_state::UNDECIDED,
    };
    // A failed insert (cannot happen in an LRU map) only means no hold.
    let entry = HoldEntry {
        state,
        generation,
        held_at_ns: 0,
    };
    let _ = HOLD.insert(&pid, &entry, 0);
}

/// Whether the current process has a controlling terminal, if the offsets are known.
#[inline(always)]
fn has_controlling_tty() -> Option<bool> {
    let (signal_at, tty_at) = (config(&TASK_SIGNAL_OFFSET), config(&SIGNAL_TTY_OFFSET));
    if signal_at == 0 || tty_at == 0 {
        return None;
    }
    // SAFETY: helper without side effects.
    let task = unsafe { bpf_get_current_task() };
    let signal: u64 = read_kernel(task + u64::from(signal_at));
    if signal == 0 {
        return None;
    }
    let tty: u64 = read_kernel(signal + u64::from(tty_at));
    Some(tty != 0)
}

/// `sched_process_exit` (every exiting thread): drop the thread's calls in flight and, with
/// the main thread, the process's own entries. State keyed by connection (`STREAM_POS`,
/// `PEER_REPORTED`, `WRITE_RETRY`, Go reads) cannot be found by pid here: it carries its birth
/// time instead, and a later process with the same pid ignores what is older than itself.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn process_exit(_ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let _ = INFLIGHT.remove(&pid_tgid);
    let _ = plain::LAST_TLS_WRITE.remove(&pid_tgid);
    rustls::forget_thread(pid_tgid);
    aead::forget_thread(pid_tgid);
    if pid == pid_tgid as u32 {
        aead::forget_process(pid);
        pipe::forget_process(pid);
        if config(&HOLD_NEW_PROCESSES) != 0 {
            let _ = HOLD.remove(&pid);
        }
    }
    emit_process_event(event_kind::EXIT);
    0
}

/// `inet_sock_set_state` (attached with `--hold-new-processes` only). A TCP socket entering
/// SYN_SENT is a `connect` by the current process: if user space is still hooking it, it is
/// about to talk to a server, possibly over TLS llmtap would not see yet. Stop it (SIGSTOP
/// takes effect on the way back to user space; a blocking connect is restarted transparently)
/// and tell user space, which continues it once its hooks are in place.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn tcp_connect_hold(ctx: RawTracePointContext) -> i32 {
    // (const struct sock *sk, int oldstate, int newstate)
    let new_state: u64 = ctx.arg(2);
    if new_state as i32 != TCP_SYN_SENT {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let Some(state) = HOLD.get_ptr_mut(&pid) else {
        return 0;
    };
    // SAFETY: a map value pointer, valid for this program run.
    unsafe {
        if (*state).state != hold_state::HOLDABLE {
            return 0;
        }
        (*state).state = hold_state::HELD;
        (*state).held_at_ns = bpf_ktime_get_ns();
        bpf_send_signal(SIGSTOP);
    }
    let header = EventHeader {
        kind: event_kind::PROCESS_HELD,
        pid,
        tid: pid_tgid as u32,
        // SAFETY: helper without side effects.
        ts_entry_ns: unsafe { bpf_ktime_get_ns() },
        comm: current_comm(),
        ..EventHeader::default()
    };
    let flags = aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP as u64;
    if EVENTS.output::<EventHeader>(&header, flags).is_err() {
        // Nobody would continue it: SIGCONT discards the pending stop.
        count(counter::RINGBUF_DROPPED_PROCESS, 1);
        // SAFETY: signals the current process only.
        unsafe { bpf_send_signal(SIGCONT) };
        if let Some(state) = HOLD.get_ptr_mut(&pid) {
            // SAFETY: as above.
            unsafe { (*state).state = hold_state::UNDECIDED };
        }
    }
    0
}

const SIGCONT: u32 = 18;
const SIGSTOP: u32 = 19;
const TCP_SYN_SENT: i32 = 2;

/// `StreamKey::direction` value marking a connection's socket report.
pub(crate) const PEER_KEY_DIRECTION: u32 = 2;

/// `_dl_debug_state` in the dynamic loader: glibc calls it after every change to the link
/// map (dlopen/dlclose) so debuggers can look; llmtap looks for newly mapped TLS libraries.
#[uprobe]
pub fn dl_debug_state(_ctx: ProbeContext) -> u32 {
    // A TLS library mapped now is hooked once user space has looked at it: like a new
    // program, the process is held if it connects before then.
    if config(&HOLD_NEW_PROCESSES) != 0 {
        file_for_hold((bpf_get_current_pid_tgid() >> 32) as u32);
    }
    emit_process_event(event_kind::LIBRARY_LOADED);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
