//! Go's `crypto/tls`: uprobes on `(*Conn).Write` and `(*Conn).Read` in Go binaries (Go ≥ 1.17,
//! register ABI on x86-64).
//!
//! Go functions are never hooked with uretprobes: a uretprobe rewrites the return address on
//! the stack, and the Go runtime copies goroutine stacks when they grow (and walks them for
//! tracebacks and GC), which breaks on a foreign return address. Instead user space
//! disassembles `Read` and attaches a plain uprobe at every `RET` instruction; `Write` is
//! captured at entry (see `go_tls_write_entry`).
//!
//! Goroutines move between threads while blocked in a call (a `Read` parks until data
//! arrives), so a `Read` entry is paired with its return by goroutine, not by thread: the key
//! is (process, the goroutine's `g` pointer, which Go keeps in R14). The data itself goes
//! through the OpenSSL path's `emit_call`, so records are identical for user space:
//! connection id = the `*tls.Conn`.
//!
//! Register ABI (Go internal ABI, amd64): arguments in RAX, RBX, RCX, RDI, ...; results in
//! RAX, RBX, ...; R14 = current g. `func (c *Conn) Read(b []byte) (int, error)`: entry RAX = c,
//! RBX = b.ptr, RCX = b.len, RDI = b.cap; at RET RAX = n, RBX:RCX = error interface.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use tracer_common::{counter, direction};

use crate::{InflightCall, close_connection, count, emit_call, made_by_this_process, wanted};

/// A Go `Read` in flight: (goroutine, process).
#[repr(C)]
#[derive(Clone, Copy)]
struct GoCallKey {
    /// The `runtime.g` of the calling goroutine (R14).
    goroutine: u64,
    pid: u32,
    _pad: u32,
}

/// A `Read` call between entry and return.
#[repr(C)]
#[derive(Clone, Copy)]
struct GoCall {
    conn_id: u64,
    buf: u64,
    /// `len(b)`: a result above it means the registers are not what we expect.
    len: u64,
    ts_entry_ns: u64,
}

/// Go `Read` calls between entry and return. LRU: a goroutine that panics out of a call never
/// reaches a `RET`, and its entry must age out rather than fill the table (a reused `g` simply
/// overwrites it).
#[map]
static GO_INFLIGHT: LruHashMap<GoCallKey, GoCall> = LruHashMap::with_max_entries(16384, 0);

/// The registers llmtap reads at a Go function's entry or `RET`.
#[derive(Clone, Copy)]
struct GoRegs {
    rax: u64,
    rbx: u64,
    rcx: u64,
    r14: u64,
}

#[inline(always)]
fn registers(ctx: &ProbeContext) -> GoRegs {
    let regs: *const pt_regs = ctx.regs;
    // SAFETY: `regs` is the context pointer the kernel hands to the program; each field read
    // is a plain context access the verifier checks.
    unsafe {
        GoRegs {
            rax: (*regs).rax as u64,
            rbx: (*regs).rbx as u64,
            rcx: (*regs).rcx as u64,
            r14: (*regs).r14 as u64,
        }
    }
}

/// `(*Conn).Write` entry: the bytes are emitted now, not at return. A `Write` blocks until
/// all of `b` is sent or the connection failed, and the goroutine may stay descheduled after
/// its last socket write long enough for the whole response to be read (and the connection
/// closed) first: emitted at return, the request would come after its own response (seen in
/// tests, about one call in a hundred). The cost: a `Write` that fails (dead connection, failed
/// handshake) still shows its bytes.
#[uprobe]
pub fn go_tls_write_entry(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted((pid_tgid >> 32) as u32) {
        return 0;
    }
    let regs = registers(&ctx);
    if regs.rax == 0 || regs.rcx == 0 {
        // A nil receiver (which panics) or nothing to send.
        return 0;
    }
    let call = InflightCall {
        conn_id: regs.rax,
        buf: regs.rbx,
        out_len: 0,
        // SAFETY: helper without side effects.
        ts_entry_ns: unsafe { bpf_ktime_get_ns() },
        direction: direction::WRITE,
    };
    emit_call(pid_tgid, &call, regs.rcx);
    0
}

#[uprobe]
pub fn go_tls_read_entry(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    if !wanted(pid) {
        return 0;
    }
    let regs = registers(&ctx);
    if regs.r14 == 0 || regs.rax == 0 || regs.rcx == 0 {
        // Not on a goroutine's register ABI, a nil receiver, or an empty buffer.
        return 0;
    }
    let key = GoCallKey {
        goroutine: regs.r14,
        pid,
        _pad: 0,
    };
    let call = GoCall {
        conn_id: regs.rax,
        buf: regs.rbx,
        len: regs.rcx,
        // SAFETY: helper without side effects.
        ts_entry_ns: unsafe { bpf_ktime_get_ns() },
    };
    // A stack growth restarts the function from its first instruction: the second entry
    // simply overwrites the first with the same arguments.
    if GO_INFLIGHT.insert(&key, &call, 0).is_err() {
        count(counter::INFLIGHT_TABLE_FULL, 1);
    }
    0
}

/// Attached at every `RET` of `crypto/tls.(*Conn).Read`: RAX = n. Data is emitted only when
/// bytes moved (`0 < n <= len(b)`); a `Read` may return data together with an error (`io.EOF`).
#[uprobe]
pub fn go_tls_read_return(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let regs = registers(&ctx);
    let key = GoCallKey {
        goroutine: regs.r14,
        pid: (pid_tgid >> 32) as u32,
        _pad: 0,
    };
    // SAFETY: plain value copied out before the entry is removed.
    let Some(call) = (unsafe { GO_INFLIGHT.get(&key) }).copied() else {
        return 0;
    };
    let _ = GO_INFLIGHT.remove(&key);
    if !made_by_this_process(call.ts_entry_ns) {
        return 0; // an entry left by an earlier process with this pid and goroutine address
    }
    let n = regs.rax as i64;
    if n > 0 && n as u64 <= call.len {
        let inflight = InflightCall {
            conn_id: call.conn_id,
            buf: call.buf,
            out_len: 0,
            ts_entry_ns: call.ts_entry_ns,
            direction: direction::READ,
        };
        emit_call(pid_tgid, &inflight, n as u64);
    }
    0
}

/// `crypto/tls.(*Conn).Close` entry (receiver in RAX): the connection ends; once collected, its
/// address may be reused by a new `*tls.Conn`.
#[uprobe]
pub fn go_tls_close_entry(ctx: ProbeContext) -> u32 {
    let conn_id = registers(&ctx).rax;
    if conn_id != 0 {
        close_connection(conn_id);
    }
    0
}
