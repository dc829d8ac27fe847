//! Discovery on its own thread: the capture task sends requests (scan this process, sweep
//! `/proc` for processes not seen yet, check hooked files) and picks the answers up between
//! two ring-buffer reads, never waiting for them. Reading `/proc`, opening and analysing
//! executables (up to a second for a 400 MB one, up to the file worker's timeout for a hung
//! file system) then never delays the reader, whose ring buffer fills meanwhile.
//!
//! The thread remembers which processes it has scanned: a periodic sweep scans only the
//! processes it has not seen (exec and library-load events bring the rest), so its work is
//! proportional to what changed, not to the number of processes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use tracer_common::HoldEntry;

use super::targets::{Discovery, FileCounters, FileId, ProcessReport, list_pids};

/// What the capture task asks of the discovery thread.
pub enum Request {
    /// Scan one process (after its exec or a library load, or a scheduled look); `hold` is
    /// its hold entry, handed back with the answer so the hold ends once it is hooked.
    Process { pid: u32, hold: Option<HoldEntry> },
    /// Scan the processes not scanned yet (all of them when `full`: events were lost).
    Sweep { full: bool },
    /// A process exited: forget it (its pid may be reused).
    Exited(u32),
    /// Which of these hooked files were deleted or replaced.
    Unlinked(Vec<(FileId, Arc<std::fs::File>)>),
    /// A file was unhooked: forget what it contained (its inode may be reused).
    Forget(FileId),
}

/// The discovery thread's answers.
pub enum Reply {
    Process {
        pid: u32,
        hold: Option<HoldEntry>,
        report: Option<ProcessReport>,
    },
    /// The new processes' reports, and every process alive at the sweep.
    Sweep {
        reports: Vec<ProcessReport>,
        alive: HashSet<u32>,
    },
    Unlinked(HashSet<FileId>),
    /// A scan that overran the file worker's timeout and completed since.
    Late(ProcessReport),
}

/// The capture task's end of the discovery thread.
pub struct DiscoveryThread {
    requests: mpsc::Sender<Request>,
    replies: tokio::sync::mpsc::UnboundedReceiver<Reply>,
    counters: Arc<Mutex<FileCounters>>,
}

impl DiscoveryThread {
    /// Starts the thread with `discovery` (its cache filled by the session's first scan) and
    /// the processes that scan covered. `pids` limits every sweep (all processes when empty).
    pub fn spawn(
        discovery: Discovery,
        pids: Vec<u32>,
        scanned: HashSet<u32>,
    ) -> std::io::Result<Self> {
        let (requests, inbox) = mpsc::channel();
        let (outbox, replies) = tokio::sync::mpsc::unbounded_channel();
        let counters = Arc::new(Mutex::new(discovery.counters()));
        let shared = counters.clone();
        std::thread::Builder::new()
            .name("llmtap-discovery".into())
            .spawn(move || serve(discovery, pids, scanned, &inbox, &outbox, &shared))?;
        Ok(Self {
            requests,
            replies,
            counters,
        })
    }

    /// Queues a request (a thread that ended, which only a panic causes, drops it: logged).
    pub fn send(&self, request: Request) {
        if self.requests.send(request).is_err() {
            log::warn!("the discovery thread has ended: new processes are not hooked");
        }
    }

    /// The next answer; cancel-safe (for `tokio::select!`).
    pub async fn recv(&mut self) -> Option<Reply> {
        self.replies.recv().await
    }

    pub fn counters(&self) -> FileCounters {
        *self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn serve(
    mut discovery: Discovery,
    pids: Vec<u32>,
    mut scanned: HashSet<u32>,
    inbox: &mpsc::Receiver<Request>,
    outbox: &tokio::sync::mpsc::UnboundedSender<Reply>,
    counters: &Mutex<FileCounters>,
) {
    while let Ok(request) = inbox.recv() {
        let reply = match request {
            Request::Process { pid, hold } => {
                scanned.insert(pid);
                Some(Reply::Process {
                    pid,
                    hold,
                    report: discovery.scan_process(pid),
                })
            }
            Request::Sweep { full } => {
                let alive: HashSet<u32> = list_pids(&pids).into_iter().collect();
                scanned.retain(|pid| alive.contains(pid));
                let mut new: Vec<u32> = alive
                    .iter()
                    .copied()
                    .filter(|pid| full || !scanned.contains(pid))
                    .collect();
                new.sort_unstable();
                scanned.extend(new.iter().copied());
                let reports = new
                    .into_iter()
                    .filter_map(|pid| discovery.scan_process(pid))
                    .collect();
                Some(Reply::Sweep { reports, alive })
            }
            Request::Exited(pid) => {
                scanned.remove(&pid);
                None
            }
            Request::Unlinked(files) => Some(Reply::Unlinked(discovery.unlinked(files))),
            Request::Forget(file) => {
                discovery.forget(file);
                None
            }
        };
        let late = discovery.take_late().into_iter().map(Reply::Late);
        for reply in reply.into_iter().chain(late) {
            if outbox.send(reply).is_err() {
                return; // the session is gone
            }
        }
        *counters.lock().unwrap_or_else(PoisonError::into_inner) = discovery.counters();
    }
}
