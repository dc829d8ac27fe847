//! Finding the TLS libraries to hook: `libssl.so*` mapped by running processes (host and
//! containers alike, through `/proc/PID/root`), the system's default libssl, and binaries the
//! user names with `--ssl-lib`. Attachments are deduplicated by (device, inode) because a
//! uprobe lives on the file, not on a path or a process.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

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

/// A TLS library or binary to hook, as reachable from llmtap's own mount namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// Path usable for attaching (e.g. `/proc/123/root/usr/lib/libssl.so.3`).
    pub path: PathBuf,
    /// Why it is a target: `default`, `--ssl-lib`, or `pid N maps`.
    pub origin: String,
}

/// Whether a mapped file name is OpenSSL's libssl (not NSS's `libssl3.so`).
pub fn is_libssl(file_name: &str) -> bool {
    file_name.starts_with("libssl.so")
}

/// Paths of libssl files mapped by one process, as listed in `/proc/PID/maps` content.
pub fn libssl_paths_in_maps(maps: &str) -> BTreeSet<String> {
    maps.lines()
        .filter_map(|line| {
            // address perms offset dev inode pathname — the path is the 6th field and may
            // contain spaces, so split at most 5 times.
            let path = line
                .splitn(6, char::is_whitespace)
                .filter(|f| !f.is_empty())
                .nth(5)?;
            let path = path.trim();
            if path.ends_with("(deleted)") || !path.starts_with('/') {
                return None;
            }
            let name = Path::new(path).file_name()?.to_str()?;
            is_libssl(name).then(|| path.to_string())
        })
        .collect()
}

/// Lists libssl files mapped by the given processes (all when `pids` is empty), each reached
/// through the process's root so that container paths resolve.
pub fn scan_processes(pids: &[u32]) -> Vec<Target> {
    let mut out = Vec::new();
    let candidates: Vec<u32> = if pids.is_empty() {
        match std::fs::read_dir("/proc") {
            Ok(dir) => dir
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect(),
            Err(err) => {
                log::warn!("cannot list /proc: {err}");
                return out;
            }
        }
    } else {
        pids.to_vec()
    };
    for pid in candidates {
        // Processes come and go while we scan: unreadable ones are skipped.
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        for path in libssl_paths_in_maps(&maps) {
            out.push(Target {
                path: PathBuf::from(format!("/proc/{pid}/root{path}")),
                origin: format!("pid {pid} maps"),
            });
        }
    }
    out
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
    fn finds_libssl_in_maps() {
        let maps = "\
7f00-7f01 r--p 00000000 fd:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f01-7f02 r-xp 00001000 fd:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f02-7f03 r--p 00000000 fd:01 124 /usr/lib/x86_64-linux-gnu/libssl3.so
7f03-7f04 r--p 00000000 fd:01 125 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7f04-7f05 r--p 00000000 fd:01 126 /opt/my app/lib/libssl.so.1.1
7f05-7f06 r--p 00000000 fd:01 127 /old/libssl.so.3 (deleted)
7f06-7f07 rw-p 00000000 00:00 0 [heap]
";
        let found: Vec<_> = libssl_paths_in_maps(maps).into_iter().collect();
        assert_eq!(
            found,
            [
                "/opt/my app/lib/libssl.so.1.1",
                "/usr/lib/x86_64-linux-gnu/libssl.so.3"
            ]
        );
    }

    #[test]
    fn nss_is_not_openssl() {
        assert!(is_libssl("libssl.so.3"));
        assert!(!is_libssl("libssl3.so"));
        assert!(!is_libssl("libcrypto.so.3"));
    }

    #[test]
    fn scanning_self_does_not_fail() {
        // This test process may or may not map libssl; scanning must simply work.
        let _ = scan_processes(&[std::process::id()]);
        assert!(scan_processes(&[u32::MAX]).is_empty());
    }
}
