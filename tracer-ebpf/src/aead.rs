//! aws-lc's AEAD entry points (`EVP_AEAD_CTX_seal`, `_seal_scatter`, `_open`, `_open_gather`)
//! in stripped Rust binaries whose rustls uses aws-lc-rs (Codex CLI, Deno); user space finds
//! them by their error sites (`tracer-user/src/capture/awslc.rs`).
//!
//! One call is one TLS record. Only application data (content type 23) is emitted: in TLS 1.3
//! the type is the plaintext's last byte (rustls adds no padding) and the additional data is
//! the 5-byte record header; in TLS 1.2 the type is byte 8 of the 13-byte additional data.
//! Seal copies the plaintext at entry (the record is encrypted in place); open at return.
//!
//! Identity: the AEAD context is per connection *and direction*. A connection is named by its
//! write context; the read side finds it through the socket: the TCP send that follows a seal
//! on the same thread links the socket to that write context, and the TCP receive that
//! precedes an open on the same thread tells which socket the record came from. A client writes
//! its request before reading the response, so reads find their connection; a read on a
//! socket with no known writer keeps its own context as identity.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use tracer_common::{counter, direction};

use crate::{InflightCall, close_connection, count, emit_call, wanted};

/// TLS content type of application data.
const APPLICATION_DATA: u8 = 23;
/// Additional-data lengths: TLS 1.3 record header, TLS 1.2 pseudo header.
const AD_TLS13: u64 = 5;
const AD_TLS12: u64 = 13;
/// Largest TLS record plaintext (+1 for the TLS 1.3 type byte, +256 of slack for padding).
const MAX_RECORD: u64 = 16384 + 256 + 1;

/// Processes that use these hooks: only their threads' TCP activity is tracked.
#[map]
static AEAD_PROCS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(4096, 0);

/// The write context sealed last on each thread, until its bytes are sent.
#[map]
static AEAD_PENDING_SEAL: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// Socket (`struct sock *`) → write context of the connection on it.
#[map]
static AEAD_SOCK_WRITER: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);

/// The socket each thread received from last (threads of [`AEAD_PROCS`] only).
#[map]
static AEAD_LAST_RECV: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// An open between entry and return.
#[repr(C)]
#[derive(Clone, Copy)]
struct OpenCall {
    conn_id: u64,
    out: u64,
    /// `size_t *out_len` (open), or 0 when the length is `in_len` (open_gather).
    out_len_ptr: u64,
    in_len: u64,
    ts_entry_ns: u64,
    /// TLS 1.2 content type from the additional data, 0 for TLS 1.3.
    tls12_type: u8,
}

#[map]
static AEAD_OPEN_INFLIGHT: LruHashMap<u64, OpenCall> = LruHashMap::with_max_entries(16384, 0);

/// The `n`th stack argument (1-based: the 7th C argument is `stack_arg(ctx, 1)`) at entry.
#[inline(always)]
fn stack_arg(ctx: &ProbeContext, n: u64) -> Option<u64> {
    // SAFETY: `regs` is the probe's context; the read of user memory is checked.
    let sp = unsafe { (*ctx.regs).rsp };
    unsafe { bpf_probe_read_user((sp + 8 * n) as *const u64) }.ok()
}

#[inline(always)]
fn read_u8(addr: u64) -> Option<u8> {
    // SAFETY: checked read of user memory.
    unsafe { bpf_probe_read_user(addr as *const u8) }.ok()
}

#[inline(always)]
fn mark_process(pid: u32) {
    // SAFETY: presence test only.
    if unsafe { AEAD_PROCS.get(&pid) }.is_none() {
        let _ = AEAD_PROCS.insert(&pid, &1, 0);
    }
}

/// Emits a sealed record's application data: `input`/`in_len` plaintext, `ad`/`ad_len` the
/// additional data.
#[inline(always)]
fn on_seal(ctx: &ProbeContext, input: u64, in_len: u64, ad: u64, ad_len: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    if !wanted(pid) {
        return;
    }
    let Some(aead_ctx) = ctx.arg::<u64>(0) else {
        return;
    };
    mark_process(pid);
    let _ = AEAD_PENDING_SEAL.insert(&pid_tgid, &aead_ctx, 0);
    if in_len == 0 || in_len > MAX_RECORD {
        return;
    }
    let len = if ad_len == AD_TLS13 {
        match read_u8(input + in_len - 1) {
            Some(APPLICATION_DATA) => in_len - 1,
            Some(_) => return,
            None => {
                count(counter::READ_USER_FAILED, 1);
                return;
            }
        }
    } else if ad_len == AD_TLS12 {
        match read_u8(ad + 8) {
            Some(APPLICATION_DATA) => in_len,
            Some(_) => return,
            None => {
                count(counter::READ_USER_FAILED, 1);
                return;
            }
        }
    } else {
        return; // not a TLS record (another use of the AEAD)
    };
    let call = InflightCall {
        conn_id: aead_ctx,
        buf: input,
        out_len: 0,
        // SAFETY: helper without side effects.
        ts_entry_ns: unsafe { bpf_ktime_get_ns() },
        direction: direction::WRITE,
    };
    emit_call(pid_tgid, &call, len);
}

/// `EVP_AEAD_CTX_seal(ctx, out, *out_len, max_out_len, nonce, nonce_len, in, in_len, ad,
/// ad_len)`.
#[uprobe]
pub fn aead_seal_entry(ctx: ProbeContext) -> u32 {
    if let (Some(input), Some(in_len), Some(ad), Some(ad_len)) = (
        stack_arg(&ctx, 1),
        stack_arg(&ctx, 2),
        stack_arg(&ctx, 3),
        stack_arg(&ctx, 4),
    ) {
        on_seal(&ctx, input, in_len, ad, ad_len);
    }
    0
}

/// `EVP_AEAD_CTX_seal_scatter(ctx, out, out_tag, *out_tag_len, max_out_tag_len, nonce,
/// nonce_len, in, in_len, extra_in, extra_in_len, ad, ad_len)`. Records whose plaintext
/// continues in `extra_in` are not emitted (rustls does not use it).
#[uprobe]
pub fn aead_seal_scatter_entry(ctx: ProbeContext) -> u32 {
    if let (Some(input), Some(in_len), Some(0), Some(ad), Some(ad_len)) = (
        stack_arg(&ctx, 2),
        stack_arg(&ctx, 3),
        stack_arg(&ctx, 5),
        stack_arg(&ctx, 6),
        stack_arg(&ctx, 7),
    ) {
        on_seal(&ctx, input, in_len, ad, ad_len);
    }
    0
}

#[inline(always)]
fn on_open(ctx: &ProbeContext, out: u64, out_len_ptr: u64, in_len: u64, ad: u64, ad_len: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    if !wanted(pid) {
        return;
    }
    let Some(aead_ctx) = ctx.arg::<u64>(0) else {
        return;
    };
    mark_process(pid);
    let tls12_type = if ad_len == AD_TLS12 {
        match read_u8(ad + 8) {
            Some(t) => t,
            None => return,
        }
    } else if ad_len == AD_TLS13 {
        0
    } else {
        return;
    };
    // The connection: the writer of the socket this thread received from last.
    // SAFETY: values copied out of the maps.
    let conn_id = unsafe { AEAD_LAST_RECV.get(&pid_tgid) }
        .copied()
        .and_then(|sk| unsafe { AEAD_SOCK_WRITER.get(&sk) }.copied())
        .unwrap_or(aead_ctx);
    let call = OpenCall {
        conn_id,
        out,
        out_len_ptr,
        in_len,
        // SAFETY: helper without side effects.
        ts_entry_ns: unsafe { bpf_ktime_get_ns() },
        tls12_type,
    };
    if AEAD_OPEN_INFLIGHT.insert(&pid_tgid, &call, 0).is_err() {
        count(counter::INFLIGHT_TABLE_FULL, 1);
    }
}

/// `EVP_AEAD_CTX_open(ctx, out, *out_len, max_out_len, nonce, nonce_len, in, in_len, ad,
/// ad_len)`.
#[uprobe]
pub fn aead_open_entry(ctx: ProbeContext) -> u32 {
    if let (Some(out), Some(out_len_ptr), Some(ad), Some(ad_len)) = (
        ctx.arg::<u64>(1),
        ctx.arg::<u64>(2),
        stack_arg(&ctx, 3),
        stack_arg(&ctx, 4),
    ) {
        on_open(&ctx, out, out_len_ptr, 0, ad, ad_len);
    }
    0
}

/// `EVP_AEAD_CTX_open_gather(ctx, out, nonce, nonce_len, in, in_len, in_tag, in_tag_len, ad,
/// ad_len)`: the plaintext is `in_len` bytes.
#[uprobe]
pub fn aead_open_gather_entry(ctx: ProbeContext) -> u32 {
    if let (Some(out), Some(in_len), Some(ad), Some(ad_len)) = (
        ctx.arg::<u64>(1),
        ctx.arg::<u64>(5),
        stack_arg(&ctx, 3),
        stack_arg(&ctx, 4),
    ) {
        on_open(&ctx, out, 0, in_len, ad, ad_len);
    }
    0
}

/// Return of open / open_gather: 1 on success (the tag verified), the plaintext in `out`.
#[uretprobe]
pub fn aead_open_return(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain value copied out before the entry is removed.
    let Some(call) = (unsafe { AEAD_OPEN_INFLIGHT.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = AEAD_OPEN_INFLIGHT.remove(&pid_tgid);
    let ret: u32 = ctx.ret();
    if ret != 1 {
        return 0;
    }
    let len = if call.out_len_ptr != 0 {
        // SAFETY: checked read of the caller's size_t.
        match unsafe { bpf_probe_read_user(call.out_len_ptr as *const u64) } {
            Ok(len) => len,
            Err(_) => {
                count(counter::READ_USER_FAILED, 1);
                return 0;
            }
        }
    } else {
        call.in_len
    };
    if len == 0 || len > MAX_RECORD {
        return 0;
    }
    let len = if call.tls12_type == 0 {
        match read_u8(call.out + len - 1) {
            Some(APPLICATION_DATA) => len - 1,
            Some(_) => return 0,
            None => {
                count(counter::READ_USER_FAILED, 1);
                return 0;
            }
        }
    } else if call.tls12_type == APPLICATION_DATA {
        len
    } else {
        return 0;
    };
    let inflight = InflightCall {
        conn_id: call.conn_id,
        buf: call.out,
        out_len: 0,
        ts_entry_ns: call.ts_entry_ns,
        direction: direction::READ,
    };
    emit_call(pid_tgid, &inflight, len);
    0
}

/// A TCP send by this thread: after a seal, it carries that record, so the socket belongs
/// to the sealing context's connection.
#[inline(always)]
pub fn on_tcp_send(sk: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: value copied out of the map.
    let Some(writer) = (unsafe { AEAD_PENDING_SEAL.get(&pid_tgid) }).copied() else {
        return;
    };
    let _ = AEAD_PENDING_SEAL.remove(&pid_tgid);
    let _ = AEAD_SOCK_WRITER.insert(&sk, &writer, 0);
}

/// A TCP receive by this thread: remembered for the opens that follow.
#[inline(always)]
pub fn on_tcp_recv(sk: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: presence test only.
    if unsafe { AEAD_PROCS.get(&pid) }.is_some() {
        let _ = AEAD_LAST_RECV.insert(&pid_tgid, &sk, 0);
    }
}

/// A thread ended: its pending seal, last receive and open in flight go with it.
#[inline(always)]
pub(crate) fn forget_thread(pid_tgid: u64) {
    let _ = AEAD_PENDING_SEAL.remove(&pid_tgid);
    let _ = AEAD_LAST_RECV.remove(&pid_tgid);
    let _ = AEAD_OPEN_INFLIGHT.remove(&pid_tgid);
}

/// A process ended: a later process with its pid is not known to use these hooks.
#[inline(always)]
pub(crate) fn forget_process(pid: u32) {
    let _ = AEAD_PROCS.remove(&pid);
}

/// A TCP socket closed: its address may name another socket from now on.
#[inline(always)]
pub(crate) fn forget_socket(sk: u64) {
    let _ = AEAD_SOCK_WRITER.remove(&sk);
}

/// `EVP_AEAD_CTX_init(ctx, …)` / `EVP_AEAD_CTX_init_with_direction(ctx, …)`: a context is
/// (re)initialised, so whatever connection was named by its address has ended; without this a
/// new connection whose context reuses a freed one's address would continue its streams.
#[uprobe]
pub fn aead_init_entry(ctx: ProbeContext) -> u32 {
    if let Some(aead_ctx) = ctx.arg::<u64>(0) {
        close_connection(aead_ctx);
    }
    0
}
