//! rustls: uprobes on the plaintext API of unstripped Rust binaries, found by symbol.
//!
//! Hooked functions (rustls 0.21–0.23; user space finds them by demangled name):
//! - `<Writer as io::Write>::write(&mut self, buf: &[u8]) -> io::Result<usize>` and
//!   `write_vectored(&mut self, bufs: &[IoSlice])`: the request side;
//! - `<Reader as io::Read>::read(&mut self, buf: &mut [u8]) -> io::Result<usize>`: sync users
//!   (`rustls::Stream`, ureq);
//! - `Reader::into_first_chunk(self) -> io::Result<&[u8]>` then `<Reader as BufRead>::consume
//!   (&mut self, amt)`: how tokio-rustls (hyper, reqwest) reads — it borrows the first buffered
//!   chunk, copies `amt` bytes out and consumes them, never calling `read`.
//!
//! `io::Result<usize>` comes back in RAX (0 = `Ok`) and RDX (the count). Connection identity is
//! the first word behind `self`: for `Writer` the `&mut dyn PlaintextSink` data pointer (the
//! connection), for `Reader` the `&mut ChunkVecBuffer` inside the connection; the two are
//! tagged (`tracer_common::rustls_conn`) and paired in user space. Records use the same
//! layout, ring buffer and byte positions as the OpenSSL hooks.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_loop},
    macros::{map, uprobe, uretprobe},
    maps::{LruHashMap, PerCpuArray},
    programs::{ProbeContext, RetProbeContext},
};
use tracer_common::{CHUNK_DATA_MAX, EventHeader, counter, direction, event_flags, rustls_conn};

use crate::{
    EVENTS, InflightCall, begin_call, close_connection, count, emit_call, emit_chunk_record, wanted,
};

/// Most `IoSlice`s of one `write_vectored` call that are followed (hyper uses at most 16; a
/// `bpf_loop` takes up to 2^23 steps, two per slice at most besides the chunks). Bytes in
/// slices past them are declared uncaptured: a counted, explicit gap.
const MAX_IOVECS: u64 = 1 << 16;

#[repr(C)]
#[derive(Clone, Copy)]
struct RustlsCall {
    conn_id: u64,
    /// Buffer (write/read) or `IoSlice` array (write_vectored).
    buf: u64,
    /// Buffer length, or number of `IoSlice`s.
    len: u64,
    ts_entry_ns: u64,
    direction: u8,
    vectored: u8,
}

/// A chunk lent by `Reader::into_first_chunk`, waiting for the `consume` that follows.
#[repr(C)]
#[derive(Clone, Copy)]
struct LentChunk {
    ptr: u64,
    len: u64,
    conn: u64,
    ts_ns: u64,
}

/// An `into_first_chunk` call between entry and return.
#[repr(C)]
#[derive(Clone, Copy)]
struct ChunkEntry {
    /// The return slot (first argument).
    slot: u64,
    conn: u64,
    ts_ns: u64,
}

/// rustls calls between entry and return, per thread.
#[map]
static RUSTLS_INFLIGHT: LruHashMap<u64, RustlsCall> = LruHashMap::with_max_entries(16384, 0);

/// `into_first_chunk` calls between entry and return, per thread.
#[map]
static RUSTLS_CHUNK_ENTRY: LruHashMap<u64, ChunkEntry> = LruHashMap::with_max_entries(16384, 0);

/// The last chunk lent on each thread.
#[map]
static RUSTLS_LENT: LruHashMap<u64, LentChunk> = LruHashMap::with_max_entries(16384, 0);

/// A thread ended: its calls in flight and its lent chunk go with it.
#[inline(always)]
pub(crate) fn forget_thread(pid_tgid: u64) {
    let _ = RUSTLS_INFLIGHT.remove(&pid_tgid);
    let _ = RUSTLS_CHUNK_ENTRY.remove(&pid_tgid);
    let _ = RUSTLS_LENT.remove(&pid_tgid);
}

/// First word behind `self` (a `&mut Writer`/`&mut Reader`): the connection-side pointer.
#[inline(always)]
fn identity(this: u64) -> Option<u64> {
    // SAFETY: checked read of user memory.
    let word = unsafe { aya_ebpf::helpers::bpf_probe_read_user(this as *const u64) }.ok()?;
    // Null or kernel-half values mean the layout is not what we expect: trace nothing.
    (word != 0 && word & rustls_conn::TAG_MASK == 0).then_some(word)
}

#[inline(always)]
fn on_entry(ctx: &ProbeContext, dir: u8, tag: u64, vectored: u8) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted((pid_tgid >> 32) as u32) {
        return;
    }
    let (Some(this), Some(buf), Some(len)) =
        (ctx.arg::<u64>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(2))
    else {
        return;
    };
    let Some(conn) = identity(this) else {
        count(counter::READ_USER_FAILED, 1);
        return;
    };
    let call = RustlsCall {
        conn_id: conn | tag,
        buf,
        len,
        // SAFETY: helper without side effects.
        ts_entry_ns: unsafe { bpf_ktime_get_ns() },
        direction: dir,
        vectored,
    };
    if RUSTLS_INFLIGHT.insert(&pid_tgid, &call, 0).is_err() {
        count(counter::INFLIGHT_TABLE_FULL, 1);
    }
}

#[uprobe]
pub fn rustls_write_entry(ctx: ProbeContext) -> u32 {
    on_entry(&ctx, direction::WRITE, rustls_conn::WRITER_TAG, 0);
    0
}

#[uprobe]
pub fn rustls_write_vectored_entry(ctx: ProbeContext) -> u32 {
    on_entry(&ctx, direction::WRITE, rustls_conn::WRITER_TAG, 1);
    0
}

#[uprobe]
pub fn rustls_read_entry(ctx: ProbeContext) -> u32 {
    on_entry(&ctx, direction::READ, rustls_conn::READER_TAG, 0);
    0
}

/// Return of `write`, `write_vectored`, `read`: `io::Result<usize>` in RAX:RDX.
#[uretprobe]
pub fn rustls_io_return(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain value copied out before the entry is removed.
    let Some(call) = (unsafe { RUSTLS_INFLIGHT.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = RUSTLS_INFLIGHT.remove(&pid_tgid);
    let discriminant: u64 = ctx.ret();
    if discriminant != 0 {
        return 0; // Err(_): nothing moved
    }
    // SAFETY: `regs` is the probe's context, readable for the whole program.
    let n = unsafe { (*ctx.regs).rdx };
    if call.vectored != 0 {
        emit_vectored(pid_tgid, &call, n);
    } else if n <= call.len {
        // A count above the buffer length means the ABI is not the expected one: emit nothing.
        let inflight = InflightCall {
            conn_id: call.conn_id,
            buf: call.buf,
            out_len: 0,
            ts_entry_ns: call.ts_entry_ns,
            direction: call.direction,
        };
        emit_call(pid_tgid, &inflight, n);
    }
    0
}

/// `Reader::into_first_chunk(self)`. rustc passes the 16-byte `Reader` by reference (RSI)
/// and returns the 16-byte `io::Result<&[u8]>` through a caller-provided slot (RDI, handed
/// back in RAX); the return probe also accepts a register return (RAX:RDX = pointer, length).
#[uprobe]
pub fn rustls_chunk_entry(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted((pid_tgid >> 32) as u32) {
        return 0;
    }
    let (Some(slot), Some(this)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    let entry = ChunkEntry {
        slot,
        // The reader's buffer pointer, to check that `consume` is on the same connection.
        conn: identity(this).unwrap_or(0),
        // SAFETY: helper without side effects.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    };
    let _ = RUSTLS_CHUNK_ENTRY.insert(&pid_tgid, &entry, 0);
    0
}

/// Return of `Reader::into_first_chunk`: `Ok(&[u8])` is (pointer, length), a null pointer
/// standing for `Err`.
#[uretprobe]
pub fn rustls_chunk_return(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain value copied out before the entry is removed.
    let Some(entry) = (unsafe { RUSTLS_CHUNK_ENTRY.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = RUSTLS_CHUNK_ENTRY.remove(&pid_tgid);
    let rax: u64 = ctx.ret();
    let (ptr, len) = if rax == entry.slot && entry.slot != 0 {
        // SAFETY: checked read of the caller's return slot.
        match unsafe { aya_ebpf::helpers::bpf_probe_read_user(rax as *const [u64; 2]) } {
            Ok(result) => (result[0], result[1]),
            Err(_) => {
                count(counter::READ_USER_FAILED, 1);
                (0, 0)
            }
        }
    } else {
        // SAFETY: `regs` is the probe's context, readable for the whole program.
        (rax, unsafe { (*ctx.regs).rdx })
    };
    if ptr == 0 || len == 0 {
        let _ = RUSTLS_LENT.remove(&pid_tgid);
        return 0;
    }
    let lent = LentChunk {
        ptr,
        len,
        conn: entry.conn,
        ts_ns: entry.ts_ns,
    };
    if RUSTLS_LENT.insert(&pid_tgid, &lent, 0).is_err() {
        count(counter::INFLIGHT_TABLE_FULL, 1);
    }
    0
}

/// `<Reader as BufRead>::consume(&mut self, amt)`: the first `amt` bytes of the chunk lent
/// last on this thread were taken by the application.
#[uprobe]
pub fn rustls_consume_entry(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain value copied out before the entry is removed.
    let Some(lent) = (unsafe { RUSTLS_LENT.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = RUSTLS_LENT.remove(&pid_tgid);
    let (Some(this), Some(amt)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    if amt == 0 || amt > lent.len {
        return 0;
    }
    let Some(conn) = identity(this) else {
        count(counter::READ_USER_FAILED, 1);
        return 0;
    };
    if lent.conn != 0 && lent.conn != conn {
        return 0; // the chunk was lent by another connection: not these bytes
    }
    let inflight = InflightCall {
        conn_id: conn | rustls_conn::READER_TAG,
        buf: lent.ptr,
        out_len: 0,
        ts_entry_ns: lent.ts_ns,
        direction: direction::READ,
    };
    emit_call(pid_tgid, &inflight, amt);
    0
}

/// Drop glue of a rustls connection (`core::ptr::drop_in_place::<ConnectionCommon<_>>` and
/// of `ClientConnection`/`ServerConnection`, which hold one at their start): the connection is
/// gone and the allocator may give its address to the next one. Its argument is the address
/// its `Writer`s named it by.
#[uprobe]
pub fn rustls_conn_drop_entry(ctx: ProbeContext) -> u32 {
    if let Some(conn) = ctx.arg::<u64>(0)
        && conn != 0
        && conn & rustls_conn::TAG_MASK == 0
    {
        close_connection(conn | rustls_conn::WRITER_TAG);
    }
    0
}

/// State of the `bpf_loop` that walks the `IoSlice`s of a vectored write. It lives in a
/// per-CPU map rather than on the stack: the callback mutates it, and the verifier would
/// otherwise track every iteration's exact offsets and never converge.
#[map]
static VECTORED_STATE: PerCpuArray<VectoredEmit> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct VectoredEmit {
    header: EventHeader,
    iov: u64,
    iov_count: u64,
    next_iov: u64,
    base: u64,
    left_in_iov: u64,
    call_offset: u64,
    captured: u64,
}

/// Emits the first `len` bytes spread over the call's `IoSlice`s (`{ptr, len}` pairs, the
/// layout of `struct iovec`).
#[inline(always)]
fn emit_vectored(pid_tgid: u64, call: &RustlsCall, len: u64) {
    let Some((header, captured)) = begin_call(
        pid_tgid,
        call.conn_id,
        call.direction,
        call.ts_entry_ns,
        len,
    ) else {
        return;
    };
    let iov_count = if call.len > MAX_IOVECS {
        MAX_IOVECS
    } else {
        call.len
    };
    let Some(slot) = VECTORED_STATE.get_ptr_mut(0) else {
        return;
    };
    let state = VectoredEmit {
        header,
        iov: call.buf,
        iov_count,
        next_iov: 0,
        base: 0,
        left_in_iov: 0,
        call_offset: 0,
        captured,
    };
    // SAFETY: this CPU's slot; no other program uses it while this one runs.
    unsafe { *slot = state };
    // One step reads an IoSlice or emits one chunk of the current one.
    let steps = (captured.div_ceil(CHUNK_DATA_MAX as u64) + 2 * iov_count + 1) as u32;
    // SAFETY: `vectored_step` matches the callback ABI; it finds its state in the map.
    unsafe {
        bpf_loop(
            steps,
            vectored_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    // SAFETY: this CPU's slot, as left by the loop.
    let state = unsafe { &*slot };
    if state.call_offset < captured {
        // Slices past MAX_IOVECS, or an unreadable slice: the rest of the call is declared
        // uncaptured in a last record without data, so user space sees the gap at once.
        if captured == len {
            count(counter::TRUNCATED_CALLS, 1);
        }
        let mut last = state.header;
        last.offset = state.call_offset;
        last.data_len = 0;
        last.flags |= event_flags::LAST_CHUNK;
        last.uncaptured_len = len - state.call_offset;
        if EVENTS.output::<EventHeader>(&last, 0).is_err() {
            count(counter::RINGBUF_DROPPED_RECORDS, 1);
        }
    }
}

#[inline(never)]
extern "C" fn vectored_step(_index: u32, _ctx: *mut c_void) -> i64 {
    let Some(state) = VECTORED_STATE.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's slot, filled by `emit_vectored` before the loop.
    let state = unsafe { &mut *state };
    if state.call_offset >= state.captured {
        return 1;
    }
    if state.left_in_iov == 0 {
        if state.next_iov >= state.iov_count {
            return 1;
        }
        let at = state.iov + state.next_iov * 16;
        // SAFETY: checked read of user memory.
        let Ok(iov) = (unsafe { aya_ebpf::helpers::bpf_probe_read_user(at as *const [u64; 2]) })
        else {
            count(counter::READ_USER_FAILED, 1);
            return 1;
        };
        state.next_iov += 1;
        state.base = iov[0];
        state.left_in_iov = iov[1];
        return 0;
    }
    let mut n = state.left_in_iov;
    if n > state.captured - state.call_offset {
        n = state.captured - state.call_offset;
    }
    if n > CHUNK_DATA_MAX as u64 {
        n = CHUNK_DATA_MAX as u64;
    }
    let src = state.base;
    let offset = state.call_offset;
    state.base += n;
    state.left_in_iov -= n;
    state.call_offset += n;
    if !emit_chunk_record(&state.header, offset, n, state.captured, src) {
        return 1;
    }
    0
}
