//! The hold guard: a process held by `--hold-new-processes` is continued even when llmtap
//! cannot do it.
//!
//! A hold normally ends within milliseconds, when llmtap has hooked the program. Two things
//! could make it last: llmtap busy for long (a huge never-seen binary on a loaded host), or
//! llmtap gone (SIGKILL, OOM kill, a crash) with no one left to send SIGCONT. So llmtap runs a
//! small companion process, its own executable started with [`GUARD_ARG`], which shares the
//! kernel's `HOLD` map (an inherited map fd) and a pipe whose write end only llmtap holds. The
//! guard continues any process held longer than [`MAX_HOLD`], and every held process once
//! the pipe reports llmtap gone; then it exits. It ignores the terminal's and the service
//! manager's stop signals so that it outlives llmtap long enough to do that.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aya::maps::{HashMap, Map, MapData};
use tracer_common::{HoldEntry, hold_state};

use super::clock::monotonic_now_ns;

/// First argument that makes the llmtap executable run as the hold guard
/// ([`run_if_requested`]).
pub const GUARD_ARG: &str = "__llmtap-hold-guard";

/// Longest a process stays stopped: past this, it runs unhooked (its first calls may be
/// missed) rather than wait longer. A never-seen 400 MB executable is hooked in about a second.
pub const MAX_HOLD: Duration = Duration::from_secs(5);

/// How often the guard looks for holds past their bound.
const POLL_INTERVAL_MS: i32 = 100;

/// The guard's fds: the `HOLD` map and the read end of the liveness pipe.
const MAP_FD: RawFd = 3;
const ALIVE_FD: RawFd = 4;

/// The running guard, owned by the tracer. Dropping it tells the guard llmtap is done.
#[derive(Debug)]
pub struct HoldGuard {
    child: Child,
    /// Write end of the liveness pipe: closing it (drop, or llmtap's death) wakes the guard.
    alive: Option<OwnedFd>,
}

impl HoldGuard {
    /// Starts the guard (this executable with [`GUARD_ARG`]) on the `HOLD` map.
    pub fn spawn(hold_map: BorrowedFd<'_>) -> io::Result<Self> {
        let exe = std::env::current_exe()?;
        let map = hold_map.try_clone_to_owned()?;
        let (read_end, write_end) = pipe()?;
        let (map_raw, read_raw) = (map.as_raw_fd(), read_end.as_raw_fd());
        let mut command = Command::new(exe);
        command
            .arg(GUARD_ARG)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: only async-signal-safe calls (fcntl, dup2, close) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Copies above the targets first, so that placing one cannot close the other;
                // dup2 leaves the targets without close-on-exec.
                let map_copy = check(libc::fcntl(map_raw, libc::F_DUPFD, 10))?;
                let read_copy = check(libc::fcntl(read_raw, libc::F_DUPFD, 10))?;
                check(libc::dup2(map_copy, MAP_FD))?;
                check(libc::dup2(read_copy, ALIVE_FD))?;
                libc::close(map_copy);
                libc::close(read_copy);
                Ok(())
            });
        }
        let child = command.spawn()?;
        Ok(Self {
            child,
            alive: Some(write_end),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        // EOF on the pipe: the guard continues what is still held and exits at once.
        self.alive.take();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        log::warn!("the hold guard (pid {}) did not exit", self.child.id());
    }
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the array on success.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just created and are owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Runs the guard when the process was started as one (`args[1] == GUARD_ARG`), never
/// returning then. Call first thing in `main` of an executable whose tracer holds processes.
pub fn run_if_requested() {
    if std::env::args_os()
        .nth(1)
        .is_none_or(|arg| arg != GUARD_ARG)
    {
        return;
    }
    let code = match run_guard() {
        Ok(()) => 0,
        Err(err) => {
            log::error!("hold guard: {err}");
            1
        }
    };
    std::process::exit(code);
}

fn run_guard() -> Result<(), String> {
    // Ctrl-C and a service stop reach the whole process group: outlive llmtap, whose exit
    // (the pipe's EOF) is what ends the guard.
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: setting a signal's disposition to "ignore" runs no handler code.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    // SAFETY: fd 3 was placed by `HoldGuard::spawn` for this process alone.
    let map_fd = unsafe { OwnedFd::from_raw_fd(MAP_FD) };
    let map = MapData::from_fd(map_fd).map_err(|e| format!("the HOLD map (fd {MAP_FD}): {e}"))?;
    let map = Map::from_map_data(map).map_err(|e| format!("the HOLD map: {e}"))?;
    let mut hold: HashMap<MapData, u32, HoldEntry> =
        HashMap::try_from(map).map_err(|e| format!("the HOLD map: {e}"))?;
    loop {
        let llmtap_gone = wait_for_eof(ALIVE_FD, POLL_INTERVAL_MS)?;
        continue_overdue(&mut hold, monotonic_now_ns(), llmtap_gone);
        if llmtap_gone {
            return Ok(());
        }
    }
}

/// Whether the liveness pipe reported its writer gone within `timeout_ms`.
fn wait_for_eof(fd: RawFd, timeout_ms: i32) -> Result<bool, String> {
    let mut poll_fd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut poll_fd, 1, timeout_ms) };
    if ready < 0 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(format!("waiting on llmtap: {err}"))
        };
    }
    // Nothing is ever written: readable means end of file.
    Ok(ready > 0)
}

/// Continues held processes past [`MAX_HOLD`] (all of them when llmtap is gone) and drops
/// their entries.
fn continue_overdue(hold: &mut HashMap<MapData, u32, HoldEntry>, now_ns: u64, all: bool) {
    let held: Vec<(u32, HoldEntry)> = hold
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, entry)| entry.state == hold_state::HELD)
        .collect();
    for (pid, entry) in held {
        if !(all || hold_overdue(entry, now_ns)) {
            continue;
        }
        if all {
            log::info!("hold guard: llmtap is gone; continuing held pid {pid}");
        } else {
            log::warn!(
                "hold guard: pid {pid} held for {} s before its hooks were in place; \
                 continuing it (its first calls may be missed)",
                MAX_HOLD.as_secs()
            );
        }
        super::hold::resume(pid);
        // Only the entry just continued: the process may have exec'd another program since.
        if hold
            .get(&pid, 0)
            .is_ok_and(|now| now.generation == entry.generation)
        {
            let _ = hold.remove(&pid);
        }
    }
}

/// Whether a `HELD` entry has been held longer than [`MAX_HOLD`] at `now_ns`.
fn hold_overdue(entry: HoldEntry, now_ns: u64) -> bool {
    entry.state == hold_state::HELD
        && now_ns.saturating_sub(entry.held_at_ns) >= MAX_HOLD.as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_held_entries_past_the_bound_are_overdue() {
        let second = 1_000_000_000u64;
        let held = HoldEntry {
            state: hold_state::HELD,
            generation: 1,
            held_at_ns: 10 * second,
        };
        assert!(!hold_overdue(
            held,
            10 * second + MAX_HOLD.as_nanos() as u64 - 1
        ));
        assert!(hold_overdue(held, 10 * second + MAX_HOLD.as_nanos() as u64));
        let holdable = HoldEntry {
            state: hold_state::HOLDABLE,
            ..held
        };
        assert!(!hold_overdue(holdable, u64::MAX));
        // A clock read before the kernel's stamp is not overdue.
        assert!(!hold_overdue(held, 0));
    }

    #[test]
    fn the_liveness_pipe_reports_its_writer_gone() {
        let (read_end, write_end) = pipe().expect("pipe");
        assert_eq!(wait_for_eof(read_end.as_raw_fd(), 0), Ok(false));
        drop(write_end);
        assert_eq!(wait_for_eof(read_end.as_raw_fd(), 1000), Ok(true));
    }
}
