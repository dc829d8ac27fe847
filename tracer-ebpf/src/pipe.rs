//! MCP over stdio (`--mcp-stdio on`): the pipes between an agent and the MCP server it
//! spawned, from the `raw_syscalls:sys_exit` tracepoint (after every system call; the kernel
//! has no pipe tracepoint, and kprobes/fentry are not required of the host). Attaching it
//! sends every system call on the host through the kernel's tracing path, a cost that
//! `cargo xtask bench` measures: hence opt-in.
//!
//! Nothing is copied from a pipe unless it is in `MCP_PIPES`, keyed by the pipe's inode number:
//! - at `exec`, a process whose standard input and output are both pipes (how every stdio MCP
//!   server is started) is filed in `MCP_PROCS` with their inode numbers: servers may move
//!   them to other descriptors once running (the Python SDK does), so they are taken now;
//! - a write to a pipe that starts a JSON-RPC session (`{`, then `"initialize"` or
//!   `"server/discover"` within its first bytes, as the first message of every MCP client does)
//!   marks that pipe as the request pipe of a new channel, owned by the writing process (the
//!   client, then flagged in `MCP_PROCS`);
//! - a process filed at exec whose standard input is a request pipe (the server) has its
//!   standard output marked as the channel's response pipe at its first read or write from
//!   then on: normally the read of the first request, before it can answer;
//! - the client's writes to the request pipe and its reads from the response pipe are copied
//!   like `SSL_*` calls (same records and stream numbering, `conn_id` from
//!   `tracer_common::pipe::conn_of`); the server's side of the same pipes is not, so nothing
//!   is seen twice. The server's exit ends the channel.
//!
//! Per system call elsewhere: one register read, and for `read`/`write`/`readv`/`writev` one
//! lookup of the calling process in `MCP_PROCS`; a write then costs a one-byte read of its
//! buffer (only a write starting with `{` is looked at further). An exec costs the lookup of
//! its standard input and output.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_current_task, bpf_loop, bpf_probe_read_user},
    },
    macros::{map, raw_tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::RawTracePointContext,
};
use tracer_common::{
    counter, direction,
    pipe::{PipeEntry, conn_of, response, role},
};

use crate::{
    close_connection_of, config, count,
    plain::{emit_plain, read_kernel, read_user},
    wanted,
};

// ---- configuration, patched by the loader ----

/// 1 with `--mcp-stdio on` (the exec hook is shared with the rest of capture).
#[unsafe(no_mangle)]
static MCP_STDIO: u32 = 0;

// From the kernel's BTF:

/// Byte offsets of `task_struct::files`, `files_struct::fdt`, `fdtable::max_fds`,
/// `fdtable::fd`, `file::f_inode`, `inode::i_mode` and `inode::i_ino`: from a file
/// descriptor of the current process to the inode number of its pipe.
#[unsafe(no_mangle)]
static TASK_FILES_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static FILES_FDT_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static FDTABLE_MAX_FDS_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static FDTABLE_FD_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static FILE_INODE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static INODE_MODE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static INODE_INO_OFFSET: u32 = 0;

// x86-64 system call numbers (stable ABI).
const SYS_READ: u64 = 0;
const SYS_WRITE: u64 = 1;
const SYS_READV: u64 = 19;
const SYS_WRITEV: u64 = 20;

const STDIN: u64 = 0;
const STDOUT: u64 = 1;
/// First bytes of a write looked at for a session opening.
const SCAN_BYTES: u64 = 128;
const SCAN_BUF_LEN: usize = 256;
const S_IFMT: u16 = 0o170000;
const S_IFIFO: u16 = 0o010000;
const SESSION_OPENINGS: [&[u8]; 2] = [b"\"initialize\"", b"\"server/discover\""];

/// The marked pipes, by inode number. LRU: a channel whose end was never seen (the program
/// started mid-session) ages out.
#[map]
static MCP_PIPES: LruHashMap<u64, PipeEntry> = LruHashMap::with_max_entries(4096, 0);

/// Processes that take part in MCP stdio channels, or may (started with piped stdio).
#[map]
static MCP_PROCS: LruHashMap<u32, ProcEntry> = LruHashMap::with_max_entries(16384, 0);

// `ProcEntry::flags` bits.
/// Opened a channel: its reads and writes are looked up in `MCP_PIPES`.
const PROC_CLIENT: u8 = 1;
/// Started with its standard input and output on pipes (`stdin_ino`, `stdout_ino`).
const PROC_STDIO_PIPES: u8 = 2;
/// Serves the channel whose request pipe is `stdin_ino`.
const PROC_SERVER: u8 = 4;

#[repr(C)]
#[derive(Clone, Copy)]
struct ProcEntry {
    stdin_ino: u64,
    stdout_ino: u64,
    flags: u8,
}

/// The first bytes of the write being classified on this CPU.
#[map]
static SCAN_BUF: PerCpuArray<[u8; SCAN_BUF_LEN]> = PerCpuArray::with_max_entries(1, 0);

/// State of the `bpf_loop` that looks for a session opening.
#[repr(C)]
struct Scan {
    len: u64,
    found: u64,
}

/// The inode number of the pipe (or FIFO) open as file descriptor `fd` of the current
/// process; 0 when it is not one.
#[inline(never)]
fn fd_pipe_ino(fd: u64) -> u64 {
    // SAFETY: helper without side effects.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read_kernel(task + u64::from(config(&TASK_FILES_OFFSET)));
    if files == 0 {
        return 0;
    }
    let fdt: u64 = read_kernel(files + u64::from(config(&FILES_FDT_OFFSET)));
    if fdt == 0 {
        return 0;
    }
    let max_fds: u32 = read_kernel(fdt + u64::from(config(&FDTABLE_MAX_FDS_OFFSET)));
    if fd >= u64::from(max_fds) {
        return 0;
    }
    let fds: u64 = read_kernel(fdt + u64::from(config(&FDTABLE_FD_OFFSET)));
    if fds == 0 {
        return 0;
    }
    let file: u64 = read_kernel(fds + fd * 8);
    if file == 0 {
        return 0;
    }
    let inode: u64 = read_kernel(file + u64::from(config(&FILE_INODE_OFFSET)));
    if inode == 0 {
        return 0;
    }
    let mode: u16 = read_kernel(inode + u64::from(config(&INODE_MODE_OFFSET)));
    if mode & S_IFMT != S_IFIFO {
        return 0;
    }
    read_kernel(inode + u64::from(config(&INODE_INO_OFFSET)))
}

#[inline(always)]
fn matches_at(buf: &[u8; SCAN_BUF_LEN], at: usize, pattern: &[u8]) -> bool {
    for (k, &b) in pattern.iter().enumerate() {
        if buf[(at + k) & (SCAN_BUF_LEN - 1)] != b {
            return false;
        }
    }
    true
}

#[inline(never)]
extern "C" fn scan_at(index: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Scan` passed to bpf_loop by `opens_session`.
    let scan = unsafe { &mut *(ctx as *mut Scan) };
    let Some(buf) = SCAN_BUF.get_ptr(0) else {
        return 1;
    };
    // SAFETY: this CPU's buffer, filled by `opens_session` before the loop.
    let buf = unsafe { &*buf };
    let at = (index as usize) & (SCAN_BUF_LEN / 2 - 1);
    if buf[at] != b'"' {
        return 0;
    }
    for pattern in SESSION_OPENINGS {
        if at as u64 + pattern.len() as u64 <= scan.len && matches_at(buf, at, pattern) {
            scan.found = 1;
            return 1;
        }
    }
    0
}

/// Whether the `avail` bytes at user address `addr` (a write's first segment) open a
/// JSON-RPC session: a JSON object naming `initialize` or `server/discover` in its first bytes.
#[inline(never)]
fn opens_session(addr: u64, avail: u64) -> bool {
    let Some(buf) = SCAN_BUF.get_ptr_mut(0) else {
        return false;
    };
    let mut n = if avail < SCAN_BYTES {
        avail
    } else {
        SCAN_BYTES
    };
    n &= SCAN_BYTES * 2 - 1;
    if n > SCAN_BYTES {
        return false;
    }
    // SAFETY: `n <= SCAN_BYTES < SCAN_BUF_LEN` bounds the copy into this CPU's buffer.
    if unsafe { bpf_probe_read_user(buf.cast(), n as u32, addr as *const c_void) } != 0 {
        return false;
    }
    let mut scan = Scan { len: n, found: 0 };
    // SAFETY: `scan_at` matches the callback ABI and `scan` outlives the loop.
    unsafe {
        bpf_loop(
            n as u32,
            scan_at as *mut c_void,
            (&mut scan as *mut Scan).cast(),
            0,
        )
    };
    scan.found != 0
}

/// The current process (the server, started with `proc_entry`'s pipes) reads or writes while
/// its standard input is the request pipe of a channel whose answers are not located yet: its
/// standard output becomes the channel's response pipe.
#[inline(never)]
fn mark_response_pipe(pid: u32, proc_entry: &ProcEntry) {
    let request_ino = proc_entry.stdin_ino;
    // SAFETY: value copied out of the map.
    let Some(entry) = (unsafe { MCP_PIPES.get(&request_ino) }).copied() else {
        return;
    };
    if entry.role != role::REQUEST || entry.response != response::UNKNOWN || entry.owner == pid {
        return;
    }
    let ino = proc_entry.stdout_ino;
    let found = if ino == 0 || ino == request_ino {
        count(counter::MCP_PIPE_NO_RESPONSE_PIPE, 1);
        response::NOT_A_PIPE
    } else {
        let answers = PipeEntry {
            conn_id: entry.conn_id,
            partner_ino: request_ino,
            owner: entry.owner,
            server: pid,
            role: role::RESPONSE,
            response: response::UNKNOWN,
            _pad: [0; 6],
        };
        let _ = MCP_PIPES.insert(&ino, &answers, 0);
        response::FOUND
    };
    let mut server = *proc_entry;
    server.flags |= PROC_SERVER;
    let _ = MCP_PROCS.insert(&pid, &server, 0);
    if let Some(request) = MCP_PIPES.get_ptr_mut(&request_ino) {
        // SAFETY: a map value pointer, valid for this program run.
        unsafe {
            (*request).response = found;
            (*request).server = pid;
            (*request).partner_ino = if found == response::FOUND { ino } else { 0 };
        }
    }
}

/// A client's read or write on file descriptor `fd`: copied when it is its channel's.
/// `true` when it was.
#[inline(never)]
fn client_io(pid_tgid: u64, fd: u64, len: u64, dir: u8) -> bool {
    let pid = (pid_tgid >> 32) as u32;
    let ino = fd_pipe_ino(fd);
    if ino == 0 {
        return false;
    }
    // SAFETY: value copied out of the map.
    let Some(entry) = (unsafe { MCP_PIPES.get(&ino) }).copied() else {
        return false;
    };
    let copied = (entry.role, dir) == (role::REQUEST, direction::WRITE)
        || (entry.role, dir) == (role::RESPONSE, direction::READ);
    if !copied || entry.owner != pid || !wanted(pid) {
        return false;
    }
    count(counter::MCP_PIPE_BYTES, len);
    emit_plain(pid_tgid, entry.conn_id, dir, len);
    true
}

/// A write that may open a session: `buf` is the system call's buffer argument.
#[inline(never)]
fn maybe_session_start(pid_tgid: u64, nr: u64, fd: u64, buf: u64, len: u64) {
    let (addr, seg_len) = if nr == SYS_WRITE {
        (buf, len)
    } else {
        (read_user::<u64>(buf), read_user::<u64>(buf + 8))
    };
    let avail = if seg_len < len { seg_len } else { len };
    if avail < 16 || read_user::<u8>(addr) != b'{' {
        return;
    }
    let ino = fd_pipe_ino(fd);
    if ino == 0 {
        return;
    }
    // SAFETY: presence test only.
    if unsafe { MCP_PIPES.get(&ino) }.is_some() {
        return; // a server's answers, or the channel of another process
    }
    let pid = (pid_tgid >> 32) as u32;
    if !opens_session(addr, avail) || !wanted(pid) {
        return;
    }
    let entry = PipeEntry {
        conn_id: conn_of(ino),
        partner_ino: 0,
        owner: pid,
        server: 0,
        role: role::REQUEST,
        response: response::UNKNOWN,
        _pad: [0; 6],
    };
    let _ = MCP_PIPES.insert(&ino, &entry, 0);
    // SAFETY: value copied out of the map.
    let mut client = (unsafe { MCP_PROCS.get(&pid) })
        .copied()
        .unwrap_or(ProcEntry {
            stdin_ino: 0,
            stdout_ino: 0,
            flags: 0,
        });
    client.flags |= PROC_CLIENT;
    let _ = MCP_PROCS.insert(&pid, &client, 0);
    count(counter::MCP_PIPE_CHANNELS, 1);
    count(counter::MCP_PIPE_BYTES, len);
    emit_plain(pid_tgid, entry.conn_id, direction::WRITE, len);
}

/// `raw_syscalls:sys_exit(struct pt_regs *regs, long ret)`: after every system call.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn mcp_sys_exit(ctx: RawTracePointContext) -> i32 {
    let ret = ctx.arg::<u64>(1) as i64;
    if ret <= 0 {
        return 0;
    }
    let regs = ctx.arg::<u64>(0);
    let reg = |offset: usize| -> u64 { read_kernel(regs + offset as u64) };
    let nr = reg(core::mem::offset_of!(pt_regs, orig_rax));
    let dir = match nr {
        SYS_WRITE | SYS_WRITEV => direction::WRITE,
        SYS_READ | SYS_READV => direction::READ,
        _ => return 0,
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let fd = reg(core::mem::offset_of!(pt_regs, rdi));
    // SAFETY: value copied out of the map.
    if let Some(proc_entry) = (unsafe { MCP_PROCS.get(&pid) }).copied() {
        if proc_entry.flags & PROC_CLIENT != 0 && client_io(pid_tgid, fd, ret as u64, dir) {
            return 0;
        }
        if proc_entry.flags & (PROC_STDIO_PIPES | PROC_SERVER) == PROC_STDIO_PIPES {
            mark_response_pipe(pid, &proc_entry);
        }
    }
    if dir == direction::READ {
        return 0;
    }
    let buf = reg(core::mem::offset_of!(pt_regs, rsi));
    maybe_session_start(pid_tgid, nr, fd, buf, ret as u64);
    0
}

/// A process exec'd (`sched_process_exec`): with its standard input and output on pipes it
/// may be a stdio MCP server, whose pipes are noted now, before it can move them.
#[inline(always)]
pub(crate) fn on_exec(pid: u32) {
    if config(&MCP_STDIO) == 0 {
        return;
    }
    let stdin_ino = fd_pipe_ino(STDIN);
    // SAFETY: value copied out of the map.
    let known = unsafe { MCP_PROCS.get(&pid) }.copied();
    if stdin_ino == 0 {
        if known.is_some() {
            let _ = MCP_PROCS.remove(&pid);
        }
        return;
    }
    let stdout_ino = fd_pipe_ino(STDOUT);
    if stdout_ino == 0 {
        return;
    }
    let entry = ProcEntry {
        stdin_ino,
        stdout_ino,
        flags: PROC_STDIO_PIPES | known.map_or(0, |k| k.flags & PROC_CLIENT),
    };
    let _ = MCP_PROCS.insert(&pid, &entry, 0);
}

/// A process exited (main thread): a server's exit ends its channel; a client's channels
/// end with its streams in user space.
#[inline(always)]
pub(crate) fn forget_process(pid: u32) {
    // SAFETY: value copied out of the map.
    let Some(proc_entry) = (unsafe { MCP_PROCS.get(&pid) }).copied() else {
        return;
    };
    let _ = MCP_PROCS.remove(&pid);
    if proc_entry.flags & PROC_SERVER == 0 {
        return;
    }
    let request_ino = proc_entry.stdin_ino;
    // SAFETY: as above.
    let Some(entry) = (unsafe { MCP_PIPES.get(&request_ino) }).copied() else {
        return;
    };
    if entry.server != pid {
        return;
    }
    let _ = MCP_PIPES.remove(&request_ino);
    if entry.partner_ino != 0 {
        let _ = MCP_PIPES.remove(&entry.partner_ino);
    }
    close_connection_of(entry.owner, entry.conn_id);
}
