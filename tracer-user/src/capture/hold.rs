//! Holding a new program until it is hooked (`--hold-new-processes`).
//!
//! A program llmtap has never seen is hooked a few milliseconds after its exec (its ELF is
//! analysed first); a client on a fast network can open its connection and write its request
//! before that. So at exec the kernel files the process in its `HOLD` map; user space marks it
//! holdable while it hooks the program, and a `connect` in that window stops the process
//! (SIGSTOP). Once the hooks are in place user space clears the entry, and on the kernel's
//! `PROCESS_HELD` record it sends SIGCONT. The hold lasts as long as the analysis (a cached
//! file: microseconds; a new 400 MB executable: about a second) and only happens before the
//! process's first connection.
//!
//! A stopped child is visible to a parent that waits with `WUNTRACED`: job-control shells do,
//! and would report the program as stopped. Processes with a controlling terminal are therefore
//! never held: only daemons, services, cron jobs, containers and scripts without a terminal.

use super::kernel_btf::member_offset;

/// Where the kernel finds whether the current task has a controlling terminal:
/// `current->signal->tty` (zero: unknown, user space decides from /proc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TtyOffsets {
    /// Byte offset of `task_struct::signal`.
    pub task_signal: u32,
    /// Byte offset of `signal_struct::tty`.
    pub signal_tty: u32,
}

impl TtyOffsets {
    /// Read from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
    pub fn from_kernel_btf() -> Result<Self, String> {
        let btf = btf_rs::Btf::from_file("/sys/kernel/btf/vmlinux")
            .map_err(|e| format!("kernel BTF unreadable: {e}"))?;
        Ok(Self {
            task_signal: member_offset(&btf, "task_struct", "signal")?,
            signal_tty: member_offset(&btf, "signal_struct", "tty")?,
        })
    }
}

/// Whether this process may be stopped while it is hooked: it has no controlling terminal
/// (so no job-control shell is watching it). Unknown (the process is gone): no.
pub fn may_hold(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| controlling_tty(&stat))
        .is_some_and(|tty| tty == 0)
}

/// `tty_nr` (field 7) of a `/proc/PID/stat` line; the command name (field 2) may hold spaces
/// and parentheses, so fields are counted after its last `)`.
fn controlling_tty(stat: &str) -> Option<i64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(4)?.parse().ok()
}

/// Continues a process the kernel stopped. A process that exited meanwhile is not an error.
pub fn resume(pid: u32) {
    let Ok(pid_i32) = i32::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a valid signal number; no memory is passed.
    if unsafe { libc::kill(pid_i32, libc::SIGCONT) } != 0 {
        log::debug!(
            "continuing held pid {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tty_after_the_command_name() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 34816 4242 4194304 120 0 0 0";
        assert_eq!(controlling_tty(stat), Some(34816));
        let daemon = "17 (cron) S 1 17 17 0 -1 4194560 2 0 0 0";
        assert_eq!(controlling_tty(daemon), Some(0));
        assert_eq!(controlling_tty("garbage"), None);
        assert_eq!(controlling_tty("1 (x) S 1"), None);
    }

    #[test]
    fn offsets_come_from_the_running_kernel() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            return;
        }
        let offsets = TtyOffsets::from_kernel_btf().expect("offsets");
        // Both are pointers deep inside their structs, never at the start.
        assert!(offsets.task_signal > 0 && offsets.task_signal.is_multiple_of(8));
        assert!(offsets.signal_tty > 0 && offsets.signal_tty.is_multiple_of(8));
    }

    #[test]
    fn this_test_process_is_judged_from_its_own_stat() {
        let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
        let tty = controlling_tty(&stat).expect("tty field");
        assert_eq!(may_hold(std::process::id()), tty == 0);
        assert!(!may_hold(u32::MAX), "a missing process is never held");
    }
}
