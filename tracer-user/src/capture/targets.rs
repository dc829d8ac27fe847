//! Finding what to hook: `libssl.so*`, any binary defining `SSL_read`/`SSL_write` (static
//! OpenSSL, as in Node), executables with BoringSSL and no symbols (Bun, Claude Code), rustls
//! and Go (`crypto/tls`) executables mapped by running processes (host and containers alike,
//! through `/proc/PID/root`), the system's default libssl, and binaries the user names with
//! `--ssl-lib`. Attachments are deduplicated by (device, inode) because a uprobe lives on the
//! file, not on a path or a process.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use lru::LruCache;

use super::elf::{ElfError, ElfInfo, inspect_file, symbol_offset};
use super::file::{FileError, Follow, open_regular};
use super::inspect::{FileWorkCounters, FileWorker, JobError, Progress};
use super::tracer::LOADER_HOOK_SYMBOL;

/// Identity of a file on the host: uprobes attach per inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// How a process does TLS, as far as llmtap can hook it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TargetKind {
    /// A shared `libssl.so*`.
    SharedLibssl,
    /// A binary or library that defines `SSL_read`/`SSL_write` itself (static OpenSSL).
    StaticOpenssl,
    /// A Rust binary using rustls, hooked through its symbols (`capture::rustls`).
    Rustls,
    /// A Go binary: `crypto/tls` hooked at the (eBPF program, file offset) pairs in
    /// [`ProcessTarget::offsets`] (`capture::go_tls`).
    GoTls,
    /// An executable with BoringSSL and no SSL symbols (Bun, Claude Code): `SSL_write` and
    /// `SSL_read` located by their error sites (`capture::boringssl`), hooked like OpenSSL's.
    BoringSsl,
    /// A stripped Rust binary whose rustls uses aws-lc: its AEAD seal/open functions, found by
    /// content, hooked at the (eBPF program, file offset) pairs in [`ProcessTarget::offsets`]
    /// (`capture::awslc`).
    AwsLcAead,
}

/// One hookable file used by a process.
#[derive(Clone, Debug)]
pub struct ProcessTarget {
    /// Path inside the process's mount namespace, as shown in its maps.
    pub path: String,
    /// Path reachable from llmtap (`/proc/PID/root/...`).
    pub attach_path: PathBuf,
    pub file: FileId,
    pub kind: TargetKind,
    /// The file, opened during discovery: attaching through `/proc/self/fd/N` still works
    /// when a short-lived process (and with it `/proc/PID/root`) is already gone.
    pub handle: Option<std::sync::Arc<std::fs::File>>,
    /// File offsets of the hooked functions, by name (empty for loaders); for
    /// [`TargetKind::GoTls`], by eBPF program (one per RET site).
    pub offsets: Vec<(&'static str, u64)>,
}

impl ProcessTarget {
    /// The most robust path to attach to: the open handle if any, else `attach_path`.
    pub fn io_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd as _;
        match &self.handle {
            Some(file) => PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
            None => self.attach_path.clone(),
        }
    }
}

/// What discovery found for one process.
#[derive(Clone, Debug, Default)]
pub struct ProcessReport {
    pub pid: u32,
    pub comm: String,
    /// Executable path inside the process's mount namespace.
    pub exe: Option<String>,
    pub targets: Vec<ProcessTarget>,
    /// Dynamic loaders mapped by the process (hooked to learn about dlopen at once).
    pub loaders: Vec<ProcessTarget>,
    /// Go toolchain version when the executable is a Go binary.
    pub go_version: Option<String>,
    /// Why nothing is hooked, when `targets` is empty.
    pub reason: Option<String>,
    /// A file of this process that uses rustls but cannot be hooked, and why.
    pub rustls_unhookable: Option<(FileId, String)>,
    /// An executable of this process with BoringSSL that cannot be hooked, and why.
    pub boringssl_unhookable: Option<(FileId, String)>,
}

/// Finds hook targets in running processes; remembers what each file (by inode) contains so
/// every binary is parsed once. Files are opened and read on a worker (`capture::inspect`):
/// one on a hung file system costs the caller at most the worker's timeout, once.
#[derive(Debug, Default)]
pub struct Discovery {
    cache: Arc<DiscoveryCache>,
    worker: FileWorker,
    /// Scans that overran the worker's timeout and completed since (a large binary analysed
    /// on a busy machine): their targets are hooked late rather than never.
    late: Arc<Mutex<VecDeque<Option<ProcessReport>>>>,
}

/// What discovery learnt about files, shared with the worker (locked only between reads).
/// The least recently used entries make room past [`DISCOVERY_CACHE_MAX`].
#[derive(Debug)]
struct DiscoveryCache {
    files: Mutex<LruCache<FileId, Option<ElfInfo>>>,
    /// The dynamic loader's hook offset per loader file.
    loaders: Mutex<LruCache<FileId, Option<u64>>>,
    /// Files refused or unreadable (not regular, cut short, too large), counted and logged
    /// once each.
    refused: Mutex<HashSet<String>>,
    refused_count: AtomicU64,
}

impl Default for DiscoveryCache {
    fn default() -> Self {
        Self {
            files: Mutex::new(LruCache::new(DISCOVERY_CACHE_CAPACITY)),
            loaders: Mutex::new(LruCache::new(DISCOVERY_CACHE_CAPACITY)),
            refused: Mutex::default(),
            refused_count: AtomicU64::default(),
        }
    }
}

/// Files remembered at most; past this the least recently used are forgotten (and analysed
/// again if a process maps them later).
const DISCOVERY_CACHE_MAX: usize = 8192;
const DISCOVERY_CACHE_CAPACITY: NonZeroUsize = match NonZeroUsize::new(DISCOVERY_CACHE_MAX) {
    Some(n) => n,
    None => panic!("DISCOVERY_CACHE_MAX is not zero"),
};

/// Counts of files discovery could not read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileCounters {
    /// Files refused (not regular files) or unreadable (cut short while read, too large).
    pub refused: u64,
    /// File work that overran its timeout, and work refused while workers were blocked.
    pub work: FileWorkCounters,
}

/// A file llmtap was asked to hook by name, opened and analysed.
#[derive(Debug)]
pub struct NamedFile {
    pub handle: std::sync::Arc<std::fs::File>,
    pub file: FileId,
    pub info: ElfInfo,
}

impl NamedFile {
    /// `/proc/self/fd/N` of the open file: attaching through it reads no path again.
    pub fn io_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd as _;
        PathBuf::from(format!("/proc/self/fd/{}", self.handle.as_raw_fd()))
    }
}

impl Discovery {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waiting up to `timeout` for each job on the worker (tests of slow unoptimised builds,
    /// and `llmtap targets`, which has no ring buffer to read meanwhile).
    pub fn with_timeout(timeout: std::time::Duration) -> Self {
        Self {
            cache: Arc::default(),
            worker: FileWorker::new(timeout),
            late: Arc::default(),
        }
    }

    /// Forgets what a file contained (it was unhooked; its inode number may be reused).
    pub fn forget(&mut self, file: FileId) {
        lock(&self.cache.files).pop(&file);
        lock(&self.cache.loaders).pop(&file);
    }

    pub fn counters(&self) -> FileCounters {
        FileCounters {
            refused: self.cache.refused_count.load(Ordering::Relaxed),
            work: self.worker.counters(),
        }
    }

    /// Scans the given processes (all when `pids` is empty).
    pub fn scan(&mut self, pids: &[u32]) -> Vec<ProcessReport> {
        list_pids(pids)
            .into_iter()
            .filter_map(|pid| self.scan_process(pid))
            .collect()
    }

    /// Scans one process; `None` for kernel threads, processes that vanished, and a scan that
    /// overran the worker's timeout (the file it was on is skipped from then on, until the
    /// read returns).
    pub fn scan_process(&mut self, pid: u32) -> Option<ProcessReport> {
        let cache = self.cache.clone();
        match self.worker.run_keeping_late(
            move |progress| scan_process_files(&cache, progress, pid),
            Some(self.late.clone()),
        ) {
            Ok(report) => report,
            Err(err @ JobError::TimedOut { .. }) => {
                log::warn!("pid {pid}: {err}");
                None
            }
            Err(err) => {
                log::debug!("pid {pid}: {err}");
                None
            }
        }
    }

    /// Reports of scans that completed after [`Discovery::scan_process`] stopped waiting.
    pub fn take_late(&mut self) -> Vec<ProcessReport> {
        lock(&self.late).drain(..).flatten().collect()
    }

    /// Of these open files, those deleted or replaced (no link left), checked on the worker;
    /// none when the check does not complete in time (they stay hooked until a later check).
    pub fn unlinked(&mut self, files: Vec<(FileId, Arc<std::fs::File>)>) -> HashSet<FileId> {
        if files.is_empty() {
            return HashSet::new();
        }
        let checked = self.worker.run(move |progress| {
            files
                .iter()
                .filter(|(file, handle)| {
                    let key = format!("inode {}:{}", file.dev, file.ino);
                    progress
                        .on_file(&key, || handle.metadata().map_or(true, |m| m.nlink() == 0))
                        .unwrap_or(false)
                })
                .map(|(file, _)| *file)
                .collect::<HashSet<FileId>>()
        });
        checked.unwrap_or_else(|err| {
            log::debug!("checking hooked files: {err}");
            HashSet::new()
        })
    }

    /// Opens and analyses a file named by the user or the system (`--ssl-lib`, the default
    /// libssl) on the worker. `full_symtab` also reads `.symtab`.
    pub fn inspect_named(&mut self, path: &Path, full_symtab: bool) -> Result<NamedFile, String> {
        let path = path.to_path_buf();
        let key = path.display().to_string();
        let result = self.worker.run(move |progress| {
            progress.on_file(&key, || -> Result<NamedFile, String> {
                let handle = open_regular(&path, Follow::Symlinks).map_err(|e| e.to_string())?;
                let meta = handle.metadata().map_err(|e| format!("opening: {e}"))?;
                let file = FileId {
                    dev: meta.dev(),
                    ino: meta.ino(),
                };
                let copy = handle.try_clone().map_err(|e| format!("opening: {e}"))?;
                let info = inspect_file(copy, full_symtab).map_err(|e| e.to_string())?;
                Ok(NamedFile {
                    handle: std::sync::Arc::new(handle),
                    file,
                    info,
                })
            })
        });
        match result {
            Ok(Some(named)) => named,
            Ok(None) => Err("an earlier read of it has not returned yet".to_string()),
            Err(err) => Err(err.to_string()),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DiscoveryCache {
    /// Counts and logs (once per file) a file that could not be opened as a regular file or
    /// read to the end of its analysis.
    fn refuse(&self, pid: u32, path: &str, key: &str, why: &dyn std::fmt::Display) {
        let mut refused = lock(&self.refused);
        if refused.len() < DISCOVERY_CACHE_MAX && refused.insert(key.to_string()) {
            self.refused_count.fetch_add(1, Ordering::Relaxed);
            log::warn!("pid {pid}: {path}: {why}; not hooked");
        }
    }
}

/// The body of [`Discovery::scan_process`], on the worker.
fn scan_process_files(
    cache: &DiscoveryCache,
    progress: &Progress,
    pid: u32,
) -> Option<ProcessReport> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    if maps.is_empty() {
        return None; // kernel thread
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        });
    let mut report = ProcessReport {
        pid,
        comm,
        exe: exe.clone(),
        ..Default::default()
    };
    let mut rustls = false;
    let mut go_unhookable: Option<String> = None;
    for (path, key) in executable_mappings(&maps) {
        // Most mapped files (libc, ordinary libraries) hold nothing to hook: once analysed,
        // they are known by the identity the maps line gives, and not even opened again.
        if let Some(mapped) = mapped_file_id(&key)
            && lock(&cache.files)
                .get(&mapped)
                .is_some_and(|info| info.as_ref().is_none_or(nothing_to_hook))
            && !is_dynamic_loader(file_name_of(&path))
        {
            continue;
        }
        let attach_path = PathBuf::from(format!("/proc/{pid}/root{path}"));
        // Open first and work on the handle: a short-lived process may exit (taking
        // /proc/PID/root with it) while we inspect and attach. The path is the kernel's, so
        // a final symbolic link was put there since: not followed.
        let opened = progress.on_file(&key, || {
            let handle = open_regular(&attach_path, Follow::NoFinalSymlink)?;
            let meta = handle.metadata().map_err(FileError::Open)?;
            Ok::<_, FileError>((handle, meta))
        });
        let (handle, meta) = match opened {
            None => continue, // a read of this file is stuck
            Some(Ok(opened)) => opened,
            Some(Err(err @ FileError::NotRegular(_))) => {
                cache.refuse(pid, &path, &key, &err);
                continue;
            }
            Some(Err(_)) => continue, // gone, or not ours to read
        };
        let file = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let is_exe = exe.as_deref() == Some(path.as_str());
        let name = Path::new(&path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if is_dynamic_loader(name) {
            let known = lock(&cache.loaders).get(&file).copied();
            let offset = match known {
                Some(offset) => offset,
                None => {
                    let found = progress.on_file(&key, || {
                        handle
                            .try_clone()
                            .map_err(ElfError::from)
                            .and_then(|h| symbol_offset(h, LOADER_HOOK_SYMBOL))
                    });
                    let offset = match found {
                        None => continue,
                        Some(Ok(offset)) => offset,
                        Some(Err(err)) => {
                            cache.refuse(pid, &path, &key, &err);
                            None
                        }
                    };
                    lock(&cache.loaders).put(file, offset);
                    offset
                }
            };
            if let Some(offset) = offset {
                report.loaders.push(ProcessTarget {
                    path: path.clone(),
                    attach_path,
                    file,
                    kind: TargetKind::SharedLibssl,
                    handle: Some(std::sync::Arc::new(handle)),
                    offsets: vec![(LOADER_HOOK_SYMBOL, offset)],
                });
            }
            continue;
        }
        let known = lock(&cache.files).get(&file).cloned();
        let mapped = mapped_file_id(&key).filter(|mapped| *mapped != file);
        let info = match known {
            Some(info) => info,
            None => {
                let inspected = progress.on_file(&key, || {
                    handle
                        .try_clone()
                        .map_err(ElfError::from)
                        .and_then(|h| inspect_file(h, is_exe))
                });
                let info = match inspected {
                    None => continue,
                    Some(Ok(info)) => Some(info),
                    Some(Err(err @ ElfError::Read(_))) => {
                        cache.refuse(pid, &path, &key, &err);
                        None
                    }
                    // Not ELF (or not one we read): nothing to hook, nothing to report.
                    Some(Err(_)) => None,
                };
                let mut files = lock(&cache.files);
                files.put(file, info.clone());
                // The maps line may name the file by another identity (overlayfs shows the
                // file under it): remembered under both, so the next look needs no open.
                if let Some(mapped) = mapped {
                    files.put(mapped, info.clone());
                }
                info
            }
        };
        let Some(info) = info else { continue };
        if is_exe && info.go_version.is_some() {
            report.go_version = info.go_version.clone();
        }
        rustls |= info.rustls;
        // One attachment per file: a Go binary that also carries OpenSSL (cgo) is hooked
        // through crypto/tls, which is what Go's net/http uses.
        match &info.go_tls {
            Some(Ok(hooks)) => {
                report.targets.push(ProcessTarget {
                    path: path.clone(),
                    attach_path,
                    file,
                    kind: TargetKind::GoTls,
                    handle: Some(std::sync::Arc::new(handle)),
                    offsets: hooks.probes(),
                });
                continue;
            }
            Some(Err(reason)) if is_exe => go_unhookable = Some(reason.clone()),
            _ => {}
        }
        if let Some(Ok(hooks)) = &info.aead {
            report.targets.push(ProcessTarget {
                path: path.clone(),
                attach_path,
                file,
                kind: TargetKind::AwsLcAead,
                handle: Some(std::sync::Arc::new(handle)),
                offsets: hooks.probes(),
            });
            continue;
        }
        if !info.rustls_hooks.is_empty() {
            report.targets.push(ProcessTarget {
                path: path.clone(),
                attach_path: attach_path.clone(),
                file,
                kind: TargetKind::Rustls,
                handle: handle.try_clone().ok().map(std::sync::Arc::new),
                offsets: info.rustls_hooks.clone(),
            });
        } else if let Some(why) = &info.rustls_unhookable
            && !info.exports_openssl
        {
            let why = match &info.aead {
                Some(Err(aead)) => format!("{why}; aws-lc AEAD fallback: {aead}"),
                _ => why.clone(),
            };
            report.rustls_unhookable = Some((file, why));
        }
        match &info.boringssl {
            Some(Ok(hooks)) => {
                report.targets.push(ProcessTarget {
                    path: path.clone(),
                    attach_path,
                    file,
                    kind: TargetKind::BoringSsl,
                    handle: Some(std::sync::Arc::new(handle)),
                    offsets: hooks.offsets(),
                });
                continue;
            }
            Some(Err(why)) => report.boringssl_unhookable = Some((file, why.clone())),
            None => {}
        }
        if info.exports_openssl {
            let kind = if is_libssl(name) {
                TargetKind::SharedLibssl
            } else {
                TargetKind::StaticOpenssl
            };
            report.targets.push(ProcessTarget {
                path: path.clone(),
                attach_path,
                file,
                kind,
                handle: Some(std::sync::Arc::new(handle)),
                offsets: info.openssl_offsets.clone(),
            });
        }
    }
    if report.targets.is_empty() {
        report.reason = Some(if let Some(go) = &report.go_version {
            match &go_unhookable {
                Some(why) => format!("Go program ({go}): {why}"),
                None => format!("Go program ({go}): crypto/tls not hookable"),
            }
        } else if let Some((_, why)) = &report.boringssl_unhookable {
            why.clone()
        } else if let Some((_, why)) = &report.rustls_unhookable {
            why.clone()
        } else if rustls {
            "uses rustls (no OpenSSL functions to hook)".to_string()
        } else {
            "no OpenSSL library mapped (no TLS yet, or a TLS stack llmtap does not hook)"
                .to_string()
        });
    }
    Some(report)
}

/// The given pids, or every process's when empty.
pub(crate) fn list_pids(pids: &[u32]) -> Vec<u32> {
    if !pids.is_empty() {
        return pids.to_vec();
    }
    match std::fs::read_dir("/proc") {
        Ok(dir) => {
            let mut all: Vec<u32> = dir
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            all.sort_unstable();
            all
        }
        Err(err) => {
            log::warn!("cannot list /proc: {err}");
            Vec::new()
        }
    }
}

/// Distinct file paths mapped executable (`x` permission) in `/proc/PID/maps` content, each
/// with the mapped file's identity as the kernel shows it (`device:inode`): a key for the file
/// that needs no access to it, the same in every process that maps it.
pub fn executable_mappings(maps: &str) -> BTreeMap<String, String> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line
                .splitn(6, char::is_whitespace)
                .filter(|f| !f.is_empty());
            let perms = fields.nth(1)?;
            if !perms.contains('x') {
                return None;
            }
            let device = fields.nth(1)?;
            let inode = fields.next()?;
            let path = fields.next()?.trim();
            (path.starts_with('/') && !path.ends_with("(deleted)"))
                .then(|| (path.to_string(), format!("{device}:{inode}")))
        })
        .collect()
}

/// The file identity in a maps key (`major:minor:inode`, hexadecimal device numbers), as
/// `stat` gives it (`st_dev` is `makedev(major, minor)`).
fn mapped_file_id(key: &str) -> Option<FileId> {
    let mut parts = key.split(':');
    let major = u32::from_str_radix(parts.next()?, 16).ok()?;
    let minor = u32::from_str_radix(parts.next()?, 16).ok()?;
    let ino = parts.next()?.parse().ok()?;
    Some(FileId {
        dev: libc::makedev(major, minor),
        ino,
    })
}

/// Whether what a file contains gives a process nothing to hook and nothing to report.
fn nothing_to_hook(info: &ElfInfo) -> bool {
    !info.exports_openssl
        && !info.rustls
        && info.go_version.is_none()
        && info.go_tls.is_none()
        && info.rustls_hooks.is_empty()
        && info.rustls_unhookable.is_none()
        && info.boringssl.is_none()
        && info.aead.is_none()
}

fn file_name_of(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
}

/// Whether a mapped file name is a dynamic loader (glibc or musl).
pub fn is_dynamic_loader(file_name: &str) -> bool {
    file_name.starts_with("ld-linux") || file_name.starts_with("ld-musl") || file_name == "ld.so"
}

/// Whether a mapped file name is OpenSSL's libssl (not NSS's `libssl3.so`).
pub fn is_libssl(file_name: &str) -> bool {
    file_name.starts_with("libssl.so")
}

/// The host's default libssl (what a newly started dynamically linked client will load).
pub fn default_libssl() -> Option<PathBuf> {
    const CANDIDATES: &[&str] = &[
        "/lib/x86_64-linux-gnu/libssl.so.3",
        "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        "/lib/aarch64-linux-gnu/libssl.so.3",
        "/usr/lib/aarch64-linux-gnu/libssl.so.3",
        "/usr/lib64/libssl.so.3",
        "/usr/lib/libssl.so.3",
        "/lib/x86_64-linux-gnu/libssl.so.1.1",
        "/usr/lib/x86_64-linux-gnu/libssl.so.1.1",
        "/usr/lib64/libssl.so.1.1",
        "/usr/lib/libssl.so.1.1",
    ];
    CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_mappings_only() {
        let maps = "\
55-56 r--p 00000000 fd:01 9 /usr/bin/node
56-57 r-xp 00001000 fd:01 9 /usr/bin/node
7f00-7f01 r-xp 00001000 fd:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f02-7f03 r--p 00000000 fd:01 124 /usr/share/locale/data
7f04-7f05 r-xp 00000000 00:00 0 [vdso]
";
        let found: Vec<_> = executable_mappings(maps).into_iter().collect();
        assert_eq!(
            found,
            [
                ("/usr/bin/node".to_string(), "fd:01:9".to_string()),
                (
                    "/usr/lib/x86_64-linux-gnu/libssl.so.3".to_string(),
                    "fd:01:123".to_string()
                )
            ]
        );
    }

    #[test]
    fn discovery_reports_this_process() {
        // This unoptimised test binary takes a while to analyse on a busy machine.
        let mut discovery = Discovery::with_timeout(std::time::Duration::from_secs(600));
        let report = discovery.scan_process(std::process::id()).expect("self");
        assert!(report.exe.is_some());
        // This test binary does not define SSL_* itself (whether it maps libssl varies), but
        // it links rustls (through the OTLP and Kubernetes clients), so it may be a rustls target.
        assert!(
            report
                .targets
                .iter()
                .all(|t| matches!(t.kind, TargetKind::SharedLibssl | TargetKind::Rustls))
        );
        assert!(discovery.scan_process(u32::MAX).is_none());
    }

    #[test]
    fn a_maps_key_names_the_file_as_stat_does() {
        // Linux's encoding: minor's low byte, major's 12 bits above it (bits 8..20).
        assert_eq!(
            mapped_file_id("103:0a:77"),
            Some(FileId {
                dev: 0x1030a,
                ino: 77
            })
        );
        assert_eq!(mapped_file_id("fe:00:326279").map(|f| f.dev), Some(0xfe00));
        assert_eq!(mapped_file_id("zz:00:1"), None);
        assert_eq!(mapped_file_id("fe:00"), None);
    }

    #[test]
    fn nss_is_not_openssl() {
        assert!(is_libssl("libssl.so.3"));
        assert!(!is_libssl("libssl3.so"));
        assert!(!is_libssl("libcrypto.so.3"));
    }
}
