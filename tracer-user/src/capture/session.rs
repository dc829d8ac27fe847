//! A running capture: the tracer plus the policy of what to hook — the default libssl,
//! `--ssl-lib` targets, and OpenSSL (shared or static) found in processes, both at start and
//! as processes start (exec events), with periodic sweeps for processes not seen yet as a
//! safety net. Everything that reads `/proc` or files runs on the discovery thread
//! (`capture::discovery`); this task only sends it requests and hooks what it reports.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, Interval};

use tracer_common::hold_state;

use super::discovery::{DiscoveryThread, Reply, Request};
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
/// path) is unhooked after this many sweeps.
const UNHOOK_UNKNOWN_AFTER_IDLE_RESCANS: u32 = 5;

/// Upper bound on pending per-process rescans, and on scans waiting for the discovery thread
/// (a fork bomb must not grow memory).
const MAX_PENDING_RESCANS: usize = 65536;

/// What a session loads, what it hooks besides the discovered targets, and how often it looks.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub tracer: TracerConfig,
    /// Libraries or binaries exporting SSL_read/SSL_write that must be hooked (`--ssl-lib`).
    pub ssl_libs: Vec<PathBuf>,
    /// Time between sweeps of /proc for processes not seen yet; zero scans once.
    pub rescan_interval: Duration,
    /// Mute connections of no use in the kernel (`--kernel-filter`).
    pub kernel_filter: bool,
}

pub struct CaptureSession {
    pub tracer: Tracer,
    /// `--kernel-filter`: whether connections of no use are muted in the kernel.
    pub kernel_filter: bool,
    discovery: DiscoveryThread,
    /// (due time, pid, index into EXEC_RESCANS of the next step).
    pending: BinaryHeap<Reverse<(Instant, u32, usize)>>,
    rescan_timer: Option<Interval>,
    skipped_rescans: u64,
    /// Files hooked on purpose (system libssl, `--ssl-lib`, our own loader): kept even when no
    /// process uses them right now.
    pinned: HashSet<FileId>,
    /// Consecutive sweeps in which each hooked file had no user.
    idle: HashMap<FileId, u32>,
    /// An open handle on each discovered hooked file: says whether the file still exists
    /// (its link count) wherever it lives, in a container or not.
    handles: HashMap<FileId, Arc<File>>,
    /// `--hold-new-processes`.
    hold_new_processes: bool,
    /// Files already reported as using rustls without hookable symbols (one log line each).
    unhookable_reported: HashSet<FileId>,
    /// The hookable files each process used at its last scan (its pid's entry goes with its
    /// exit): which hooked files are still in use.
    uses: HashMap<u32, Vec<FileId>>,
    /// Scans asked of the discovery thread and not answered yet, per process.
    scanning: HashMap<u32, u32>,
    scans_waiting: usize,
    /// Processes stopped at a `connect` while their scan was under way: continued once it is
    /// answered and their hooks are in place.
    resume_after_scan: HashSet<u32>,
    /// A sweep was asked for and not answered yet; then the unused files waiting for the
    /// check of whether they still exist.
    sweeping: bool,
    unused_to_check: Option<Vec<FileId>>,
    /// Process records the kernel had dropped at the last sweep: more since means exec events
    /// were lost, and the next sweep looks at every process.
    process_drops_seen: u64,
    /// The discovery thread ended (a bug): no more answers to wait for.
    discovery_gone: bool,
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
        // Our own loader is the host's: hooking it covers every host process's dlopen.
        let own = discovery.scan_process(std::process::id());
        // The first look at every process is made before capture starts, here.
        let first = discovery.scan(&config.tracer.pids);
        let scanned: HashSet<u32> = first.iter().map(|r| r.pid).collect();
        let discovery = DiscoveryThread::spawn(discovery, config.tracer.pids.clone(), scanned)?;
        let rescan_timer = (!config.rescan_interval.is_zero()).then(|| {
            let period = config.rescan_interval;
            tokio::time::interval_at(Instant::now() + period, period)
        });
        let process_drops_seen = tracer.counters().ringbuf_dropped_process;
        let mut session = Self {
            tracer,
            kernel_filter: config.kernel_filter,
            discovery,
            pending: BinaryHeap::new(),
            rescan_timer,
            skipped_rescans: 0,
            pinned,
            idle: HashMap::new(),
            handles: HashMap::new(),
            hold_new_processes: config.tracer.hold_new_processes,
            unhookable_reported: HashSet::new(),
            uses: HashMap::new(),
            scanning: HashMap::new(),
            scans_waiting: 0,
            resume_after_scan: HashSet::new(),
            sweeping: false,
            unused_to_check: None,
            process_drops_seen,
            discovery_gone: false,
        };
        if let Some(report) = own {
            session.pinned.extend(report.loaders.iter().map(|l| l.file));
            session.attach_report(report);
        }
        session.swept(first, None);
        Ok(session)
    }

    /// Hooks what a sweep found in processes not seen before, forgets the processes gone
    /// (`alive`, when known), and asks which unused hooked files still exist.
    fn swept(&mut self, reports: Vec<targets::ProcessReport>, alive: Option<HashSet<u32>>) {
        if let Some(alive) = alive {
            self.uses.retain(|pid, _| alive.contains(pid));
        }
        for report in reports {
            self.attach_report(report);
        }
        let in_use: HashSet<FileId> = self.uses.values().flatten().copied().collect();
        let unused_files: Vec<FileId> = self
            .tracer
            .attached_files()
            .into_iter()
            .filter(|file| !in_use.contains(file) && !self.pinned.contains(file))
            .collect();
        self.idle.retain(|file, _| unused_files.contains(file));
        if unused_files.is_empty() {
            return;
        }
        // Deleted or replaced (a new build renamed over it): no process can map it again.
        // Asked of the file system on the discovery thread, like every other look at a file.
        let with_handles: Vec<(FileId, Arc<File>)> = unused_files
            .iter()
            .filter_map(|file| Some((*file, self.handles.get(file)?.clone())))
            .collect();
        self.unused_to_check = Some(unused_files);
        self.discovery.send(Request::Unlinked(with_handles));
    }

    /// The check of the unused files is back: the deleted ones, those without a handle
    /// unused for long, and the oldest past [`MAX_UNUSED_HOOKED_FILES`] are unhooked.
    fn checked_unused(&mut self, unlinked: &HashSet<FileId>) {
        let Some(unused_files) = self.unused_to_check.take() else {
            return;
        };
        let mut unused = Vec::new();
        for file in unused_files {
            if !self.tracer.is_attached(file) {
                continue;
            }
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
    }

    /// Asks for a sweep of the processes not seen yet (of all of them if process events were
    /// lost since the last one); one at a time.
    fn sweep(&mut self) {
        if self.sweeping {
            return;
        }
        let drops = self.tracer.counters().ringbuf_dropped_process;
        let full = drops != self.process_drops_seen;
        self.process_drops_seen = drops;
        self.sweeping = true;
        self.discovery.send(Request::Sweep { full });
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
        self.discovery.send(Request::Forget(file));
    }

    /// Hooks what a scan found in a process. Returns how many files were newly hooked.
    fn attach_report(&mut self, report: targets::ProcessReport) -> usize {
        self.tracer
            .note_process_name(report.pid, &report.comm, false);
        let files: Vec<FileId> = report
            .targets
            .iter()
            .chain(&report.loaders)
            .map(|t| t.file)
            .collect();
        if self.uses.len() < MAX_PENDING_RESCANS || self.uses.contains_key(&report.pid) {
            self.uses.insert(report.pid, files);
        }
        let mut new = 0;
        for loader in &report.loaders {
            let Some(&(_, offset)) = loader.offsets.first() else {
                continue;
            };
            if self.tracer.is_attached(loader.file) {
                self.keep_handle(loader);
                continue;
            }
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
            if self.tracer.is_attached(target.file) {
                self.keep_handle(&target);
                continue;
            }
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

    /// Asks for a scan of a process. After an exec or a library load (`holding`), with holds
    /// on, the kernel filed it in `HOLD`: a `connect` during the scan stops it until the hooks
    /// are in place (the hold ends when the answer is handled).
    fn request_scan(&mut self, pid: u32, holding: bool) {
        // Read before the scan: the scan hooks what the process runs now, which may be a later
        // exec than this event's; that exec's entry is the one to end.
        let hold = (holding && self.hold_new_processes)
            .then(|| self.tracer.hold_entry(pid))
            .flatten();
        if self.scans_waiting >= MAX_PENDING_RESCANS {
            self.skipped_rescans += 1;
            if let Some(entry) = hold {
                self.tracer.end_hold(pid, entry.generation);
            }
            return;
        }
        if let Some(entry) = hold
            && entry.state == hold_state::UNDECIDED
            && hold::may_hold(pid)
        {
            self.tracer.allow_hold(pid, entry.generation);
        }
        *self.scanning.entry(pid).or_insert(0) += 1;
        self.scans_waiting += 1;
        self.discovery.send(Request::Process { pid, hold });
    }

    /// A scan is back: its targets are hooked, then the process's hold ends.
    fn scanned(
        &mut self,
        pid: u32,
        hold: Option<tracer_common::HoldEntry>,
        report: Option<targets::ProcessReport>,
    ) {
        self.scans_waiting = self.scans_waiting.saturating_sub(1);
        if let Some(report) = report {
            self.attach_report(report);
        }
        if let Some(entry) = hold {
            self.tracer.end_hold(pid, entry.generation);
        }
        let done = match self.scanning.get_mut(&pid) {
            Some(waiting) if *waiting > 1 => {
                *waiting -= 1;
                false
            }
            _ => {
                self.scanning.remove(&pid);
                true
            }
        };
        if done && self.resume_after_scan.remove(&pid) {
            log::debug!("pid {pid} held at connect until hooked: continuing it");
            self.tracer.resume_held(pid);
        }
    }

    /// A new program: inspected at once, then a few more times as it loads libraries. With
    /// holds on, a `connect` while it is being hooked stops it until then (`capture::hold`).
    fn on_exec(&mut self, pid: u32) {
        if self.tracer.hold_guard_pid() == Some(pid) {
            return;
        }
        self.request_scan(pid, true);
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
            if self.uses.contains_key(&pid) || self.scanning.contains_key(&pid) || step == 0 {
                self.request_scan(pid, false);
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

    /// An answer of the discovery thread.
    fn discovered(&mut self, reply: Reply) {
        match reply {
            Reply::Process { pid, hold, report } => self.scanned(pid, hold, report),
            Reply::Sweep { reports, alive } => {
                self.sweeping = false;
                self.swept(reports, Some(alive));
            }
            Reply::Unlinked(unlinked) => self.checked_unused(&unlinked),
            Reply::Late(report) => {
                log::debug!(
                    "pid {}: scan completed late; hooking its targets",
                    report.pid
                );
                self.attach_report(report);
            }
        }
    }

    /// Per-process rescans not scheduled because too many were pending.
    pub fn skipped_rescans(&self) -> u64 {
        self.skipped_rescans
    }

    /// Waits for capture events (appended to `out`), handling discovery's answers in between.
    /// Cancel-safe: nothing is awaited once events are read.
    pub async fn next_events(&mut self, out: &mut Vec<CaptureEvent>) -> io::Result<()> {
        loop {
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
                Discovered(Option<Box<Reply>>),
                Due,
                Periodic,
            }
            let woke = tokio::select! {
                r = self.tracer.read_events(out) => Woke::Events(r),
                reply = self.discovery.recv(), if !self.discovery_gone => {
                    Woke::Discovered(reply.map(Box::new))
                }
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
                                self.uses.remove(pid);
                                self.discovery.send(Request::Exited(*pid));
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
                        self.request_scan(pid, true);
                    }
                    // Stopped while its exec or library load (earlier in the ring) was being
                    // handled: continued once that scan is answered and its hooks are in place
                    // (at once if no scan of it is under way).
                    for pid in held {
                        if self.scanning.contains_key(&pid) {
                            self.resume_after_scan.insert(pid);
                        } else {
                            log::debug!("pid {pid} held at connect until hooked: continuing it");
                            self.tracer.resume_held(pid);
                        }
                    }
                    // Lifecycle events are for the session; callers get them too (exit frees
                    // state downstream) but an empty batch of traffic is not worth returning.
                    if !out.is_empty() {
                        return Ok(());
                    }
                }
                Woke::Discovered(Some(reply)) => self.discovered(*reply),
                Woke::Discovered(None) => {
                    // Only a bug ends it (a panic): capture goes on with what is hooked.
                    log::error!("the discovery thread has ended: new processes are not hooked");
                    self.discovery_gone = true;
                }
                Woke::Due => self.run_due(),
                Woke::Periodic => self.sweep(),
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
