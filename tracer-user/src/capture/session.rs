//! A running capture: the tracer plus the policy of what to hook — the default libssl,
//! `--ssl-lib` targets, and OpenSSL (shared or static) found in processes, both at start and
//! as processes start (exec events), with periodic rescans as a safety net.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, Interval};

use tracer_common::hold_state;

use super::event::CaptureEvent;
use super::hold;
use super::targets::{self, Discovery, FileId};
use super::tracer::{AttachOutcome, Tracer, TracerConfig, TracerError};

/// When to look at a process again after its exec: the executable is mapped at once, but
/// libraries loaded later (Python imports `ssl` on demand) appear over the next moments.
const EXEC_RESCANS: &[Duration] = &[
    Duration::from_millis(2),
    Duration::from_millis(10),
    Duration::from_millis(40),
    Duration::from_millis(150),
    Duration::from_millis(600),
    Duration::from_millis(2500),
];

/// Hooked files no process uses are kept hooked while they exist, so that the next run of a
/// program started now and then (a cron job, a CLI called from a script) is traced from its
/// first call instead of racing a new attachment. Past this many unused files, the ones
/// unused longest are unhooked (each costs kernel memory, not time: uprobes cost only when hit).
const MAX_UNUSED_HOOKED_FILES: usize = 256;

/// A file unused and without a handle to tell whether it still exists (it was hooked by a
/// path) is unhooked after this many full rescans.
const UNHOOK_UNKNOWN_AFTER_IDLE_RESCANS: u32 = 5;

/// Upper bound on pending per-process rescans (a fork bomb must not grow memory).
const MAX_PENDING_RESCANS: usize = 65536;

/// What a session loads, what it hooks besides the discovered targets, and how often it looks.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub tracer: TracerConfig,
    /// Libraries or binaries exporting SSL_read/SSL_write that must be hooked (`--ssl-lib`).
    pub ssl_libs: Vec<PathBuf>,
    /// Time between scans of /proc for copies not hooked yet; zero scans once.
    pub rescan_interval: Duration,
}

pub struct CaptureSession {
    pub tracer: Tracer,
    pids: Vec<u32>,
    discovery: Discovery,
    /// (due time, pid, index into EXEC_RESCANS of the next step).
    pending: BinaryHeap<Reverse<(Instant, u32, usize)>>,
    rescan_timer: Option<Interval>,
    skipped_rescans: u64,
    /// Files hooked on purpose (system libssl, `--ssl-lib`, our own loader): kept even when no
    /// process uses them right now.
    pinned: HashSet<FileId>,
    /// Consecutive full rescans in which each hooked file had no user.
    idle: HashMap<FileId, u32>,
    /// An open handle on each discovered hooked file: says whether the file still exists
    /// (its link count) wherever it lives, in a container or not.
    handles: HashMap<FileId, Arc<File>>,
    /// `--hold-new-processes`.
    hold_new_processes: bool,
    /// Files already reported as using rustls without hookable symbols (one log line each).
    unhookable_reported: HashSet<FileId>,
}

impl CaptureSession {
    /// Loads the tracer and hooks every target reachable now. Explicit `--ssl-lib` targets
    /// must attach; discovered ones are best effort (logged). Needs a tokio runtime.
    pub fn start(config: &SessionConfig) -> Result<Self, TracerError> {
        let mut tracer = Tracer::load(&config.tracer)?;
        let mut discovery = Discovery::new();
        let mut pinned = HashSet::new();
        for path in &config.ssl_libs {
            let file = attach_named(&mut tracer, &mut discovery, path, true)?;
            pinned.insert(file);
        }
        match targets::default_libssl() {
            Some(path) => match attach_named(&mut tracer, &mut discovery, &path, false) {
                Ok(file) => {
                    pinned.insert(file);
                }
                Err(err) => log::warn!("default libssl {}: {err}", path.display()),
            },
            None => log::info!("no system libssl found; relying on processes' own copies"),
        }
        let rescan_timer = (!config.rescan_interval.is_zero()).then(|| {
            let period = config.rescan_interval;
            tokio::time::interval_at(Instant::now() + period, period)
        });
        let mut session = Self {
            tracer,
            pids: config.tracer.pids.clone(),
            discovery,
            pending: BinaryHeap::new(),
            rescan_timer,
            skipped_rescans: 0,
            pinned,
            idle: HashMap::new(),
            handles: HashMap::new(),
            hold_new_processes: config.tracer.hold_new_processes,
            unhookable_reported: HashSet::new(),
        };
        // Our own loader is the host's: hooking it covers every host process's dlopen.
        if let Some(report) = session.discovery.scan_process(std::process::id()) {
            session.pinned.extend(report.loaders.iter().map(|l| l.file));
            session.attach_report(report);
        }
        session.rescan();
        Ok(session)
    }

    /// Hooks OpenSSL copies (shared libssl or static) used by running processes and not
    /// hooked yet. Returns how many files were newly hooked.
    /// Files no process uses any more are unhooked.
    pub fn rescan(&mut self) -> usize {
        let reports = self.discovery.scan(&self.pids);
        for report in &reports {
            self.tracer
                .note_process_name(report.pid, &report.comm, false);
        }
        let in_use: HashSet<FileId> = reports
            .iter()
            .flat_map(|r| r.targets.iter().chain(&r.loaders).map(|t| t.file))
            .collect();
        let new = reports.into_iter().map(|r| self.attach_report(r)).sum();
        let unused_files: Vec<FileId> = self
            .tracer
            .attached_files()
            .into_iter()
            .filter(|file| !in_use.contains(file) && !self.pinned.contains(file))
            .collect();
        for file in self.tracer.attached_files() {
            if !unused_files.contains(&file) {
                self.idle.remove(&file);
            }
        }
        // Deleted or replaced (a new build renamed over it): no process can map it again.
        // Asked of the file system on the worker, like every other look at a target file.
        let with_handles: Vec<(FileId, Arc<File>)> = unused_files
            .iter()
            .filter_map(|file| Some((*file, self.handles.get(file)?.clone())))
            .collect();
        let unlinked: HashSet<FileId> = self.discovery.unlinked(with_handles);
        let mut unused = Vec::new();
        for file in unused_files {
            let idle = self.idle.entry(file).or_insert(0);
            *idle = idle.saturating_add(1);
            let gone = if self.handles.contains_key(&file) {
                unlinked.contains(&file)
            } else {
                *idle >= UNHOOK_UNKNOWN_AFTER_IDLE_RESCANS
            };
            if gone {
                self.unhook(file);
            } else {
                unused.push((*idle, file));
            }
        }
        if unused.len() > MAX_UNUSED_HOOKED_FILES {
            unused.sort_unstable_by_key(|(idle, _)| Reverse(*idle));
            let excess = unused.len() - MAX_UNUSED_HOOKED_FILES;
            for (_, file) in unused.into_iter().take(excess) {
                self.unhook(file);
            }
        }
        new
    }

    fn keep_handle(&mut self, target: &targets::ProcessTarget) {
        if let Some(handle) = &target.handle {
            self.handles
                .entry(target.file)
                .or_insert_with(|| handle.clone());
        }
    }

    fn unhook(&mut self, file: FileId) {
        self.idle.remove(&file);
        self.handles.remove(&file);
        self.tracer.detach_file(file);
        self.discovery.forget(file);
    }

    fn scan_pid(&mut self, pid: u32) -> usize {
        match self.discovery.scan_process(pid) {
            Some(report) => self.attach_report(report),
            None => 0,
        }
    }

    fn attach_report(&mut self, report: targets::ProcessReport) -> usize {
        let mut new = 0;
        for loader in &report.loaders {
            let Some(&(_, offset)) = loader.offsets.first() else {
                continue;
            };
            match self
                .tracer
                .attach_loader_at(&loader.io_path(), &loader.attach_path, offset)
            {
                Ok(_) => self.keep_handle(loader),
                Err(err) => log::debug!("loader {} (pid {}): {err}", loader.path, report.pid),
            }
        }
        let unhookable = report
            .rustls_unhookable
            .as_ref()
            .or(report.boringssl_unhookable.as_ref());
        if let Some((file, why)) = unhookable
            && self.unhookable_reported.len() < MAX_PENDING_RESCANS
            && self.unhookable_reported.insert(*file)
        {
            log::warn!(
                "pid {} ({}): {} — {why}; its TLS traffic is not captured",
                report.pid,
                report.comm,
                report.exe.as_deref().unwrap_or("?"),
            );
        }
        for target in report.targets {
            let attached = if target.kind == targets::TargetKind::Rustls {
                let mut functions: Vec<&'static str> =
                    target.offsets.iter().map(|(name, _)| *name).collect();
                functions.dedup();
                self.tracer.attach_offsets(
                    &target.io_path(),
                    &target.attach_path,
                    &super::rustls::probes(&target.offsets),
                    functions,
                )
            } else if target.kind == targets::TargetKind::AwsLcAead {
                self.tracer.attach_offsets(
                    &target.io_path(),
                    &target.attach_path,
                    &target.offsets,
                    super::awslc::functions(&target.offsets),
                )
            } else if target.kind == targets::TargetKind::GoTls {
                self.tracer.attach_offsets(
                    &target.io_path(),
                    &target.attach_path,
                    &target.offsets,
                    super::go_tls::functions(&target.offsets),
                )
            } else {
                self.tracer.attach_openssl_at(
                    &target.io_path(),
                    &target.attach_path,
                    Some(&target.offsets),
                )
            };
            match attached {
                Ok(AttachOutcome::Attached(_)) => {
                    new += 1;
                    self.keep_handle(&target);
                    log::debug!("new target found in pid {} ({})", report.pid, report.comm);
                }
                Ok(AttachOutcome::AlreadyAttached) => self.keep_handle(&target),
                // The process may have exited between the scan and the attach.
                Err(err) => log::debug!(
                    "{} (pid {}, via {}): {err}",
                    target.path,
                    report.pid,
                    target.io_path().display()
                ),
            }
        }
        new
    }

    /// Scans a process that just exec'd or mapped a library. With holds on, the kernel filed
    /// it in `HOLD`: a `connect` during the scan stops it until the hooks are in place.
    fn scan_holding(&mut self, pid: u32) {
        // Read before the scan: the scan hooks what the process runs now, which may be a later
        // exec than this event's; that exec's entry is the one to end.
        let hold = self
            .hold_new_processes
            .then(|| self.tracer.hold_entry(pid))
            .flatten();
        if let Some(entry) = hold
            && entry.state == hold_state::UNDECIDED
            && hold::may_hold(pid)
        {
            self.tracer.allow_hold(pid, entry.generation);
        }
        self.scan_pid(pid);
        if let Some(entry) = hold {
            self.tracer.end_hold(pid, entry.generation);
        }
    }

    /// A new program: inspected at once, then a few more times as it loads libraries. With
    /// holds on, a `connect` while it is being hooked stops it until then (`capture::hold`).
    fn on_exec(&mut self, pid: u32) {
        if self.tracer.hold_guard_pid() == Some(pid) {
            return;
        }
        self.scan_holding(pid);
        if self.pending.len() < MAX_PENDING_RESCANS {
            self.pending
                .push(Reverse((Instant::now() + EXEC_RESCANS[0], pid, 0)));
        } else {
            self.skipped_rescans += 1;
        }
    }

    fn run_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((due, pid, step))) = self.pending.peek().copied() {
            if due > now {
                break;
            }
            self.pending.pop();
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                self.scan_pid(pid);
                if let Some(delay) = EXEC_RESCANS.get(step + 1) {
                    self.pending.push(Reverse((now + *delay, pid, step + 1)));
                }
            }
        }
    }

    /// Files discovery refused or could not read in time.
    pub fn file_counters(&self) -> targets::FileCounters {
        self.discovery.counters()
    }

    /// Per-process rescans not scheduled because too many were pending.
    pub fn skipped_rescans(&self) -> u64 {
        self.skipped_rescans
    }

    /// Waits for capture events (appended to `out`), doing discovery work in between.
    pub async fn next_events(&mut self, out: &mut Vec<CaptureEvent>) -> io::Result<()> {
        loop {
            for report in self.discovery.take_late() {
                log::debug!(
                    "pid {}: scan completed late; hooking its targets",
                    report.pid
                );
                self.attach_report(report);
            }
            let due = self.pending.peek().map(|Reverse((due, _, _))| *due);
            let periodic = async {
                match self.rescan_timer.as_mut() {
                    Some(timer) => {
                        timer.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let wake = async {
                match due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending::<()>().await,
                }
            };
            enum Woke {
                Events(io::Result<()>),
                Due,
                Periodic,
            }
            let woke = tokio::select! {
                r = self.tracer.read_events(out) => Woke::Events(r),
                _ = wake => Woke::Due,
                _ = periodic => Woke::Periodic,
            };
            match woke {
                Woke::Events(result) => {
                    result?;
                    let mut execs = Vec::new();
                    let mut loads = Vec::new();
                    let mut held = Vec::new();
                    for event in out.iter() {
                        match event {
                            CaptureEvent::ProcessExec { pid, comm, .. } => {
                                self.tracer.note_process_name(*pid, &comm.as_str(), true);
                                execs.push(*pid);
                            }
                            CaptureEvent::ProcessExit { pid, .. } => {
                                self.tracer.forget_process(*pid);
                            }
                            CaptureEvent::LibraryLoaded { pid, .. } => loads.push(*pid),
                            CaptureEvent::ProcessHeld { pid, .. } => held.push(*pid),
                            _ => {}
                        }
                    }
                    for pid in execs {
                        self.on_exec(pid);
                    }
                    loads.sort_unstable();
                    loads.dedup();
                    for pid in loads {
                        log::trace!("library load in pid {pid}: rescanning it");
                        self.scan_holding(pid);
                    }
                    // Stopped while its exec or library load (earlier in the ring) was being
                    // handled, which is done now: its hooks are in place.
                    for pid in held {
                        log::debug!("pid {pid} held at connect until hooked: continuing it");
                        self.tracer.resume_held(pid);
                    }
                    // Lifecycle events are for the session; callers get them too (exit frees
                    // state downstream) but an empty batch of traffic is not worth returning.
                    if !out.is_empty() {
                        return Ok(());
                    }
                }
                Woke::Due => self.run_due(),
                Woke::Periodic => {
                    self.rescan();
                }
            }
        }
    }
}

impl Drop for CaptureSession {
    /// Files that could not be read are logged one by one as they happen; the totals close
    /// the run, so that none goes unnoticed.
    fn drop(&mut self) {
        let files = self.discovery.counters();
        if files != targets::FileCounters::default() {
            log::warn!(
                "target files not analysed: {} refused or unreadable, {} reads overran their \
                 timeout, {} skipped while file workers were blocked",
                files.refused,
                files.work.timed_out,
                files.work.refused
            );
        }
    }
}

/// Hooks a file named by the user or the system: opened and analysed on the discovery worker
/// (only a regular file, read within bounds), attached through its open handle.
fn attach_named(
    tracer: &mut Tracer,
    discovery: &mut Discovery,
    path: &std::path::Path,
    full_symtab: bool,
) -> Result<FileId, TracerError> {
    let named = discovery
        .inspect_named(path, full_symtab)
        .map_err(|reason| TracerError::NotOpenSsl {
            path: path.to_path_buf(),
            reason,
        })?;
    tracer.attach_openssl_at(&named.io_path(), path, Some(&named.info.openssl_offsets))?;
    Ok(named.file)
}
