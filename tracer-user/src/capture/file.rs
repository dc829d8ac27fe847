//! Reading files that other processes control (their executables and libraries) without
//! letting them hurt the daemon:
//! - only regular files are opened, and without blocking: opening a FIFO for reading waits
//!   for a writer, and a device can be anything;
//! - bytes are copied with `pread` within a budget, never mapped: a file truncated under a
//!   mapping kills the reader with SIGBUS, whereas a short `pread` is just an error;
//! - only the ranges the analysers ask for are read (headers, tables, some sections), each
//!   once, so memory stays proportional to what is looked at, never above the budget.
//!
//! A file whose file system never answers (a hung FUSE daemon) can still block the calling
//! thread in `open` or `pread`: `capture::inspect` runs these on a worker with a timeout.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt as _, FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::rc::Rc;

/// Bytes of one file read at most by its analysis. Claude Code's and Codex's executables
/// (400 and 315 MB) are the largest known targets: their code is scanned whole.
pub const MAX_FILE_BYTES_READ: u64 = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("opening: {0}")]
    Open(#[source] io::Error),
    #[error("not a regular file (a {0})")]
    NotRegular(&'static str),
}

/// Whether the last component of a path may be a symbolic link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// Paths a user named (`--ssl-lib`), system paths, `/proc/self/fd/N` and
    /// `/proc/PID/map_files/…`, which are links by nature.
    Symlinks,
    /// Paths the kernel resolved (`/proc/PID/maps`): a link there was put in later.
    NoFinalSymlink,
}

/// Opens `path` for reading if it is a regular file, without waiting for anything: a FIFO
/// opened with `O_NONBLOCK` returns at once (and is then refused), and `O_NOCTTY` keeps a
/// terminal from becoming ours. The descriptor is close-on-exec (std's default).
pub fn open_regular(path: &Path, follow: Follow) -> Result<File, FileError> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if follow == Follow::NoFinalSymlink {
        flags |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(FileError::Open)?;
    let kind = file.metadata().map_err(FileError::Open)?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    Err(FileError::NotRegular(if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_dir() {
        "directory"
    } else {
        "special file"
    }))
}

/// Why reading stopped, for the caller's error message (`object` reports only "failed").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ReadStop {
    #[default]
    None,
    /// The analysis wanted more than [`BoundedReader`]'s budget.
    Budget(u64),
    /// The file ended early (truncated while being read) or the read failed.
    Failed(String),
}

/// `Read + Seek` over a file through `pread`, at most `budget` bytes in total, with the length
/// fixed when opened (a file that shrinks later gives short reads, which are errors). Meant
/// for `object::ReadCache`, which keeps what was read so the parsed views can borrow it.
#[derive(Debug)]
pub struct BoundedReader {
    file: File,
    len: u64,
    position: u64,
    budget: u64,
    /// Shared with the [`ReadStopProbe`], which checks requests before anything is allocated.
    remaining: Rc<Cell<u64>>,
    stop: Rc<Cell<ReadStopCell>>,
}

/// The first reason reading stopped (kept `Copy` for a `Cell`; [`ReadStopProbe`] words it).
type ReadStopCell = Option<ReadStopKind>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadStopKind {
    Budget(u64),
    ShortRead { offset: u64, wanted: u64 },
    Error(i32),
}

/// Tells why a [`BoundedReader`] stopped, after the reader was handed to `ReadCache`, and
/// what is left of its budget.
#[derive(Clone, Debug)]
pub struct ReadStopProbe {
    stop: Rc<Cell<ReadStopCell>>,
    remaining: Rc<Cell<u64>>,
    budget: u64,
}

impl ReadStopProbe {
    /// Bytes the reader may still read.
    pub fn remaining(&self) -> u64 {
        self.remaining.get()
    }

    /// Records that a request was refused for the budget before reaching the reader.
    pub fn refuse_for_budget(&self) {
        if self.stop.get().is_none() {
            self.stop.set(Some(ReadStopKind::Budget(self.budget)));
        }
    }

    pub fn get(&self) -> ReadStop {
        match self.stop.get() {
            None => ReadStop::None,
            Some(ReadStopKind::Budget(budget)) => ReadStop::Budget(budget),
            Some(ReadStopKind::ShortRead { offset, wanted }) => ReadStop::Failed(format!(
                "the file ended before {wanted} bytes at offset {offset} (truncated while read?)"
            )),
            Some(ReadStopKind::Error(errno)) => {
                ReadStop::Failed(io::Error::from_raw_os_error(errno).to_string())
            }
        }
    }
}

impl BoundedReader {
    pub fn new(file: File, budget: u64) -> io::Result<(Self, ReadStopProbe)> {
        let len = file.metadata()?.len();
        let stop = Rc::new(Cell::new(None));
        let remaining = Rc::new(Cell::new(budget));
        Ok((
            Self {
                file,
                len,
                position: 0,
                budget,
                remaining: remaining.clone(),
                stop: stop.clone(),
            },
            ReadStopProbe {
                stop,
                remaining,
                budget,
            },
        ))
    }

    /// The file's length when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn fail(&self, kind: ReadStopKind) -> io::Error {
        if self.stop.get().is_none() {
            self.stop.set(Some(kind));
        }
        match kind {
            ReadStopKind::Budget(budget) => {
                io::Error::other(format!("reading more than {budget} bytes of one file"))
            }
            ReadStopKind::ShortRead { .. } => io::ErrorKind::UnexpectedEof.into(),
            ReadStopKind::Error(errno) => io::Error::from_raw_os_error(errno),
        }
    }

    /// Reads `buf.len()` bytes at `offset` (not moving the position), within the budget.
    pub fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let wanted = buf.len() as u64;
        let remaining = self.remaining.get();
        if wanted > remaining {
            return Err(self.fail(ReadStopKind::Budget(self.budget)));
        }
        self.remaining.set(remaining - wanted);
        if offset.checked_add(wanted).is_none_or(|end| end > self.len) {
            return Err(self.fail(ReadStopKind::ShortRead { offset, wanted }));
        }
        match self.file.read_exact_at(buf, offset) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                Err(self.fail(ReadStopKind::ShortRead { offset, wanted }))
            }
            Err(err) => Err(self.fail(ReadStopKind::Error(err.raw_os_error().unwrap_or(0)))),
        }
    }
}

impl Read for BoundedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.len.saturating_sub(self.position);
        let n = usize::try_from(available).map_or(buf.len(), |a| a.min(buf.len()));
        if n == 0 {
            return Ok(0);
        }
        let position = self.position;
        self.read_exact_at(&mut buf[..n], position)?;
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for BoundedReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.position.checked_add_signed(d),
        };
        self.position = target.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(self.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("llmtap-file-{}-{name}", std::process::id()))
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let path = temp_path("fifo");
        let _ = std::fs::remove_file(&path);
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        // A blocking open would wait here forever: nothing ever opens the FIFO for writing.
        let err = open_regular(&path, Follow::Symlinks).unwrap_err();
        assert!(matches!(err, FileError::NotRegular("FIFO")), "{err}");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn directories_and_devices_are_refused() {
        assert!(matches!(
            open_regular(Path::new("/proc"), Follow::Symlinks),
            Err(FileError::NotRegular("directory"))
        ));
        assert!(matches!(
            open_regular(Path::new("/dev/null"), Follow::Symlinks),
            Err(FileError::NotRegular("character device"))
        ));
    }

    #[test]
    fn links_are_followed_only_when_asked() {
        let target = temp_path("target");
        let link = temp_path("link");
        std::fs::write(&target, b"data").unwrap();
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_regular(&link, Follow::Symlinks).is_ok());
        assert!(open_regular(&link, Follow::NoFinalSymlink).is_err());
        // The kernel's links to open files stay usable.
        let file = open_regular(&target, Follow::NoFinalSymlink).unwrap();
        use std::os::fd::AsRawFd as _;
        let fd_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        assert!(open_regular(Path::new(&fd_path), Follow::Symlinks).is_ok());
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_file(&target);
    }

    #[test]
    fn reads_stop_at_the_budget_and_at_a_truncation() {
        let path = temp_path("truncated");
        let mut f = File::create(&path).unwrap();
        f.write_all(&[7u8; 8192]).unwrap();
        let (mut reader, stop) =
            BoundedReader::new(open_regular(&path, Follow::Symlinks).unwrap(), 6000).unwrap();
        let mut buf = [0u8; 4096];
        reader.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf[0], 7);
        assert!(reader.read_exact_at(&mut buf, 4096).is_err());
        assert!(matches!(stop.get(), ReadStop::Budget(_)));

        let (mut reader, stop) =
            BoundedReader::new(open_regular(&path, Follow::Symlinks).unwrap(), 1 << 20).unwrap();
        f.set_len(100).unwrap();
        assert!(reader.read_exact_at(&mut buf, 4096).is_err());
        assert!(
            matches!(stop.get(), ReadStop::Failed(_)),
            "{:?}",
            stop.get()
        );
        let _ = std::fs::remove_file(&path);
    }
}
