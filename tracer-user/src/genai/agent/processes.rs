//! Processes an agent started, for the tool executions they ran in.
//!
//! The daemon reports the `exec` of every process whose parent is an agent process (one with
//! an agent session) or one of its recorded descendants; the log keeps them, bounded, with
//! their exit time once it comes. A tool execution then carries the descendants of its process
//! that started inside its window: "the tool ran `pytest` for 41 s" is visible on its span.

use std::collections::VecDeque;

/// Processes remembered (the oldest go first).
const MAX_LOGGED: usize = 1024;
/// Processes attached to one tool execution (more are counted).
pub const MAX_PROCESSES_PER_TOOL: usize = 16;
/// Generations searched for an ancestor.
const MAX_DEPTH: usize = 16;

/// A process started by an agent (directly or not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolProcess {
    pub pid: u32,
    pub parent_pid: u32,
    /// Executable path (from `/proc/PID/exe` at its exec).
    pub executable: String,
    /// Arguments as started (exported redacted, and only with command-line export on).
    pub args: Vec<String>,
    /// Exec and exit (CLOCK_MONOTONIC ns); no exit while it runs or when unseen.
    pub start_ns: u64,
    pub exit_ns: Option<u64>,
}

#[derive(Default)]
pub struct ProcessLog {
    entries: VecDeque<ToolProcess>,
}

impl ProcessLog {
    /// Whether `pid` is a logged descendant (its children are then logged too).
    pub fn contains(&self, pid: u32) -> bool {
        self.entries.iter().any(|e| e.pid == pid)
    }

    pub fn exec(&mut self, process: ToolProcess) {
        // An exec in place (same pid, new program) replaces the entry.
        self.entries.retain(|e| e.pid != process.pid);
        if self.entries.len() >= MAX_LOGGED {
            self.entries.pop_front();
        }
        self.entries.push_back(process);
    }

    pub fn exit(&mut self, pid: u32, ts_ns: u64) {
        if let Some(e) = self.entries.iter_mut().rev().find(|e| e.pid == pid) {
            e.exit_ns.get_or_insert(ts_ns);
        }
    }

    /// The logged descendants of `ancestor` started in `[start_ns, end_ns]`, at most
    /// [`MAX_PROCESSES_PER_TOOL`], and how many more there were.
    pub fn started_in(&self, ancestor: u32, start_ns: u64, end_ns: u64) -> (Vec<ToolProcess>, u32) {
        let mut found = Vec::new();
        let mut more = 0u32;
        for e in &self.entries {
            if e.start_ns < start_ns || e.start_ns > end_ns || !self.descends(e, ancestor) {
                continue;
            }
            if found.len() < MAX_PROCESSES_PER_TOOL {
                found.push(e.clone());
            } else {
                more += 1;
            }
        }
        (found, more)
    }

    fn descends(&self, e: &ToolProcess, ancestor: u32) -> bool {
        let mut parent = e.parent_pid;
        for _ in 0..MAX_DEPTH {
            if parent == ancestor {
                return true;
            }
            match self.entries.iter().rev().find(|p| p.pid == parent) {
                Some(p) => parent = p.parent_pid,
                None => return false,
            }
        }
        false
    }

    /// Forgets the processes of an agent that exited and of everything it started.
    pub fn forget_descendants(&mut self, ancestor: u32) {
        let keep: Vec<bool> = self
            .entries
            .iter()
            .map(|e| !self.descends(e, ancestor))
            .collect();
        let mut flags = keep.into_iter();
        self.entries.retain(|_| flags.next().unwrap_or(true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, parent_pid: u32, start_ns: u64) -> ToolProcess {
        ToolProcess {
            pid,
            parent_pid,
            executable: format!("/bin/p{pid}"),
            args: vec![format!("p{pid}")],
            start_ns,
            exit_ns: None,
        }
    }

    #[test]
    fn descendants_in_the_window_only() {
        let mut log = ProcessLog::default();
        log.exec(proc(10, 1, 100)); // child of the agent (pid 1)
        log.exec(proc(11, 10, 150)); // grandchild
        log.exec(proc(12, 99, 150)); // another process's child
        log.exec(proc(13, 1, 500)); // after the window
        log.exit(11, 300);
        let (found, more) = log.started_in(1, 100, 400);
        let pids: Vec<u32> = found.iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![10, 11]);
        assert_eq!(more, 0);
        assert_eq!(found[1].exit_ns, Some(300));
        log.forget_descendants(1);
        assert!(!log.contains(10) && !log.contains(11) && log.contains(12));
    }

    #[test]
    fn bounded_per_tool_and_in_all() {
        let mut log = ProcessLog::default();
        for pid in 0..(MAX_LOGGED as u32 + 10) {
            log.exec(proc(1000 + pid, 1, 100));
        }
        assert_eq!(log.entries.len(), MAX_LOGGED);
        let (found, more) = log.started_in(1, 0, 200);
        assert_eq!(found.len(), MAX_PROCESSES_PER_TOOL);
        assert_eq!(more as usize, MAX_LOGGED - MAX_PROCESSES_PER_TOOL);
    }
}
