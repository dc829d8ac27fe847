//! Runs file work (opening targets, reading and analysing them) on a worker thread that the
//! capture task waits for only so long: a file on a hung file system (a FUSE daemon that
//! never answers) blocks its `open` or `pread` forever, and the ring buffer must still be
//! read. A job that overruns is left to finish on its own; the file it was on is marked and
//! skipped until then (never retried in a loop), and the next job gets a fresh thread. Only
//! a few threads may be stuck at once: past that, file work is refused, not queued.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long the capture task waits for one job (one process's files, or one named file).
/// Analysing the largest known executable (Claude Code, 400 MB) takes well under a second; a
/// job that overruns still completes in the background and its result is used at the next
/// scan of the process. A hung file costs the capture task this once.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(5);

/// Worker threads left blocked at most; past this, file work waits until one returns.
pub const MAX_STUCK_WORKERS: usize = 4;

/// Results of overrun jobs kept at most until the caller takes them.
pub const MAX_LATE_RESULTS: usize = 256;

/// What a job can tell the worker: the file it is on (by a key naming the file itself, not a
/// path that changes from process to process) and whether that file is known to hang.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    state: Arc<Mutex<ProgressState>>,
}

#[derive(Debug, Default)]
struct ProgressState {
    current: Option<String>,
    stuck: HashSet<String>,
}

/// Files marked stuck at most (their keys are small; a file system serving endless hung
/// files can only fill this, and a full set refuses nothing it does not hold).
const MAX_STUCK_FILES: usize = 4096;

impl Progress {
    /// Runs `work` on the file `key` unless a job is stuck on it now; `None` when skipped.
    pub fn on_file<T>(&self, key: &str, work: impl FnOnce() -> T) -> Option<T> {
        {
            let mut state = self.lock();
            if state.stuck.contains(key) {
                return None;
            }
            state.current = Some(key.to_string());
        }
        let result = work();
        let mut state = self.lock();
        state.current = None;
        // Done, late or not: the file may be tried again.
        state.stuck.remove(key);
        Some(result)
    }

    /// Marks the file the job is on as stuck; its key, if any.
    fn mark_current_stuck(&self) -> Option<String> {
        let mut state = self.lock();
        let key = state.current.clone()?;
        if state.stuck.len() < MAX_STUCK_FILES {
            state.stuck.insert(key.clone());
        }
        Some(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a job gave no result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("file work took longer than {timeout:?} (on {file}); left to finish in the background")]
    TimedOut { timeout: Duration, file: String },
    #[error("{0} file workers are blocked; file work skipped until one returns")]
    Busy(usize),
    #[error("the file worker failed")]
    WorkerFailed,
}

/// Counts of file work that did not complete in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileWorkCounters {
    /// Jobs that overran [`JOB_TIMEOUT`] (each names one file, logged once).
    pub timed_out: u64,
    /// Jobs refused because [`MAX_STUCK_WORKERS`] threads were blocked.
    pub refused: u64,
}

type Job = Box<dyn FnOnce() + Send>;

/// The worker the capture task hands file work to.
#[derive(Debug)]
pub struct FileWorker {
    jobs: Option<mpsc::Sender<Job>>,
    progress: Progress,
    /// Worker threads alive (the current one and any stuck ones).
    threads: Arc<AtomicUsize>,
    timeout: Duration,
    counters: FileWorkCounters,
}

impl Default for FileWorker {
    fn default() -> Self {
        Self::new(JOB_TIMEOUT)
    }
}

impl FileWorker {
    pub fn new(timeout: Duration) -> Self {
        Self {
            jobs: None,
            progress: Progress::default(),
            threads: Arc::new(AtomicUsize::new(0)),
            timeout,
            counters: FileWorkCounters::default(),
        }
    }

    pub fn counters(&self) -> FileWorkCounters {
        self.counters
    }

    /// Runs `job` on the worker and waits for it at most the timeout. The job gets the
    /// [`Progress`] to announce each file it touches (see [`Progress::on_file`]).
    pub fn run<T: Send + 'static>(
        &mut self,
        job: impl FnOnce(&Progress) -> T + Send + 'static,
    ) -> Result<T, JobError> {
        self.run_keeping_late(job, None)
    }

    /// As [`FileWorker::run`]; the result of a job that overran the timeout is pushed to
    /// `late` when it completes (the oldest dropped past [`MAX_LATE_RESULTS`]), so that a
    /// slow file's analysis is not lost.
    pub fn run_keeping_late<T: Send + 'static>(
        &mut self,
        job: impl FnOnce(&Progress) -> T + Send + 'static,
        late: Option<Arc<Mutex<VecDeque<T>>>>,
    ) -> Result<T, JobError> {
        let stuck = self.threads.load(Ordering::SeqCst) - usize::from(self.jobs.is_some());
        if stuck >= MAX_STUCK_WORKERS {
            self.counters.refused += 1;
            return Err(JobError::Busy(stuck));
        }
        let (result_tx, result_rx) = mpsc::sync_channel(1);
        let progress = self.progress.clone();
        // Set by the waiter when it stops waiting; under this lock, the job either sees it
        // (and keeps its result as late) or has sent it already (and the waiter finds it).
        let abandoned = Arc::new(Mutex::new(false));
        let job_abandoned = abandoned.clone();
        let job: Job = Box::new(move || {
            let result = job(&progress);
            let abandoned = job_abandoned.lock().unwrap_or_else(PoisonError::into_inner);
            match (&late, *abandoned) {
                (Some(late), true) => {
                    let mut late = late.lock().unwrap_or_else(PoisonError::into_inner);
                    if late.len() >= MAX_LATE_RESULTS {
                        late.pop_front();
                    }
                    late.push_back(result);
                }
                _ => {
                    let _ = result_tx.send(result);
                }
            }
        });
        let job = match &self.jobs {
            Some(jobs) => jobs.send(job).err().map(|mpsc::SendError(job)| job),
            None => Some(job),
        };
        if let Some(job) = job {
            // No worker yet, or the last one ended (a job panicked): start one.
            let jobs = self.spawn().ok_or(JobError::WorkerFailed)?;
            jobs.send(job).map_err(|_| JobError::WorkerFailed)?;
            self.jobs = Some(jobs);
        }
        let waited = result_rx.recv_timeout(self.timeout);
        let waited = match waited {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                *abandoned.lock().unwrap_or_else(PoisonError::into_inner) = true;
                result_rx
                    .try_recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Timeout)
            }
            other => other,
        };
        match waited {
            Ok(result) => Ok(result),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // This thread is left to its job; closing its queue ends it afterwards.
                self.jobs = None;
                self.counters.timed_out += 1;
                let file = self
                    .progress
                    .mark_current_stuck()
                    .unwrap_or_else(|| "no file".to_string());
                Err(JobError::TimedOut {
                    timeout: self.timeout,
                    file,
                })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.jobs = None;
                Err(JobError::WorkerFailed)
            }
        }
    }

    fn spawn(&mut self) -> Option<mpsc::Sender<Job>> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let threads = self.threads.clone();
        threads.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name("llmtap-files".into())
            .spawn(move || {
                struct Alive(Arc<AtomicUsize>);
                impl Drop for Alive {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                let _alive = Alive(threads);
                while let Ok(job) = jobs_rx.recv() {
                    job();
                }
            });
        match spawned {
            Ok(_) => Some(jobs_tx),
            Err(err) => {
                self.threads.fetch_sub(1, Ordering::SeqCst);
                log::warn!("cannot start a file worker thread: {err}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job that blocks until released, as a read on a hung file system does.
    fn blocking_job(
        release: mpsc::Receiver<()>,
        key: &'static str,
    ) -> impl FnOnce(&Progress) -> u32 + Send + 'static {
        move |progress: &Progress| {
            progress
                .on_file(key, || {
                    let _ = release.recv();
                    1
                })
                .unwrap_or(0)
        }
    }

    #[test]
    fn a_stuck_job_does_not_hold_up_the_next_and_its_file_is_skipped_until_it_returns() {
        // The wait is the timeout: short here, so the test waits no real time for nothing.
        let mut worker = FileWorker::new(Duration::from_millis(50));
        let (release, released) = mpsc::channel();
        let err = worker
            .run(blocking_job(released, "fifo-or-fuse"))
            .unwrap_err();
        assert!(matches!(err, JobError::TimedOut { ref file, .. } if file == "fifo-or-fuse"));
        assert_eq!(worker.counters().timed_out, 1);

        // The next job runs on a fresh thread; the stuck file is skipped, others are not.
        let skipped = worker
            .run(|p: &Progress| p.on_file("fifo-or-fuse", || 1).is_none())
            .unwrap();
        assert!(skipped);
        worker.timeout = Duration::from_secs(60);
        let other = worker.run(|p: &Progress| p.on_file("other", || 7)).unwrap();
        assert_eq!(other, Some(7));

        // Once the stuck read returns, the file may be tried again.
        release.send(()).unwrap();
        let mut retried = None;
        for _ in 0..10_000 {
            retried = worker
                .run(|p: &Progress| p.on_file("fifo-or-fuse", || 2))
                .unwrap();
            if retried.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(retried, Some(2));
    }

    #[test]
    fn a_late_result_is_kept_for_the_caller() {
        let mut worker = FileWorker::new(Duration::from_millis(20));
        let late = Arc::new(Mutex::new(VecDeque::new()));
        let (release, released) = mpsc::channel();
        let job = blocking_job(released, "slow file");
        assert!(worker.run_keeping_late(job, Some(late.clone())).is_err());
        release.send(()).unwrap();
        for _ in 0..10_000 {
            if !late.lock().unwrap().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(late.lock().unwrap().pop_front(), Some(1));
    }

    #[test]
    fn too_many_stuck_workers_refuse_work_instead_of_waiting() {
        let mut worker = FileWorker::new(Duration::from_millis(20));
        let mut releases = Vec::new();
        for key in ["a", "b", "c", "d"] {
            let (release, released) = mpsc::channel();
            releases.push(release);
            assert!(worker.run(blocking_job(released, key)).is_err());
        }
        assert_eq!(
            worker.run(|_: &Progress| 1),
            Err(JobError::Busy(MAX_STUCK_WORKERS))
        );
        assert_eq!(worker.counters().refused, 1);
        for release in releases {
            release.send(()).unwrap();
        }
        worker.timeout = Duration::from_secs(60);
        let mut result = Err(JobError::WorkerFailed);
        for _ in 0..10_000 {
            result = worker.run(|_: &Progress| 1);
            if result.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(result, Ok(1));
    }

    #[test]
    fn a_panicking_job_is_an_error_and_the_worker_recovers() {
        let mut worker = FileWorker::new(Duration::from_secs(60));
        assert_eq!(
            worker.run(|_: &Progress| -> u32 { panic!("analyser bug") }),
            Err(JobError::WorkerFailed)
        );
        assert_eq!(worker.run(|_: &Progress| 3), Ok(3));
    }
}
