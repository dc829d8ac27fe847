//! What a binary offers to hook: exported OpenSSL functions (shared libssl or OpenSSL linked
//! statically, as in Node), BoringSSL without symbols (Bun), Go's crypto/tls, rustls. The file
//! is read through `capture::file` (bounded `pread`, never mapped: another process may
//! truncate it), and only what the analysers ask for: headers and symbol tables for most
//! files; the read-only data of executables (looking for BoringSSL's source paths), and their
//! code only when BoringSSL or aws-lc is there.

use std::fs::File;
use std::path::Path;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use super::file::{BoundedReader, Follow, MAX_FILE_BYTES_READ, ReadStop, ReadStopProbe};

/// Bytes of one file searched in pieces at most (its read-only data, not kept in memory).
const MAX_FILE_BYTES_STREAMED: u64 = 2 << 30;

/// Symbols whose presence makes a binary an OpenSSL hook target.
pub const OPENSSL_REQUIRED: [&str; 2] = ["SSL_write", "SSL_read"];

/// OpenSSL functions llmtap hooks, whose file offsets discovery records.
pub const OPENSSL_HOOKED: [&str; 5] = [
    "SSL_write",
    "SSL_read",
    "SSL_write_ex",
    "SSL_read_ex",
    "SSL_free",
];

/// What a file contains, as far as llmtap cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElfInfo {
    /// Defines `SSL_write` and `SSL_read` (in `.dynsym`, or `.symtab` when `full_symtab`).
    pub exports_openssl: bool,
    /// Go toolchain version from the build info (`go1.22.1`), for Go binaries.
    pub go_version: Option<String>,
    /// Go binaries: the `crypto/tls` hook points, or why there are none.
    pub go_tls: Option<Result<super::go_tls::GoTlsHooks, String>>,
    /// Contains rustls symbols (needs `.symtab`).
    pub rustls: bool,
    /// Has a `.symtab` (not stripped).
    pub has_symtab: bool,
    /// File offsets of the hooked OpenSSL functions that are defined here, so attaching needs
    /// no second parse of the file (which matters for a 100 MB binary and a process that is
    /// racing to its first TLS write).
    pub openssl_offsets: Vec<(&'static str, u64)>,
    /// File offsets of the hookable rustls functions (see `capture::rustls`), executables only.
    pub rustls_hooks: Vec<(&'static str, u64)>,
    /// Why a binary that uses rustls cannot be hooked (stripped, functions inlined).
    pub rustls_unhookable: Option<String>,
    /// Executables with BoringSSL and no SSL symbols (Bun, Claude Code): where `SSL_write` and
    /// `SSL_read` are (`capture::boringssl`), or why they could not be told apart.
    pub boringssl: Option<Result<super::boringssl::BoringSslHooks, String>>,
    /// rustls binaries without usable symbols: aws-lc's AEAD functions found by content
    /// (`capture::awslc`), or why they could not be; `None` when aws-lc is absent.
    pub aead: Option<Result<super::awslc::AeadHooks, String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("{0}")]
    Open(#[from] super::file::FileError),
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an ELF file we can read: {0}")]
    Parse(#[from] object::Error),
    #[error("reading stopped: {0}")]
    Read(String),
}

/// Inspects `path` (a path a user named, or a system one: a final symbolic link is followed).
/// `full_symtab` also scans `.symtab` (for main executables, where static OpenSSL may not be
/// exported); shared libraries only need `.dynsym`.
pub fn inspect(path: &Path, full_symtab: bool) -> Result<ElfInfo, ElfError> {
    inspect_file(
        super::file::open_regular(path, Follow::Symlinks)?,
        full_symtab,
    )
}

/// As [`inspect`], on an open regular file.
pub fn inspect_file(file: File, full_symtab: bool) -> Result<ElfInfo, ElfError> {
    // Read-only data searched in pieces, not kept: a second reader, with a budget of bytes
    // passed through (segments that overlap in a crafted file must not make it read forever).
    let (mut streamed, streamed_stop) =
        BoundedReader::new(file.try_clone()?, MAX_FILE_BYTES_STREAMED)?;
    let (reader, stop) = BoundedReader::new(file, MAX_FILE_BYTES_READ)?;
    let cache = object::ReadCache::new(reader);
    let mut read_at = |offset: u64, buf: &mut [u8]| streamed.read_exact_at(buf, offset).is_ok();
    let read = Default::default();
    let data = Budgeted {
        cache: &cache,
        probe: &stop,
        read: &read,
    };
    let result = inspect_data(data, full_symtab, &mut read_at);
    match streamed_stop.get() {
        ReadStop::None => {}
        ReadStop::Budget(budget) => {
            return Err(ElfError::Read(format!(
                "the analysis needs to search more than {} MiB of the file",
                budget >> 20
            )));
        }
        ReadStop::Failed(why) => return Err(ElfError::Read(why)),
    }
    // `object` only says a read failed; the reader knows why (truncated, over budget).
    let read_failure = |stop: &ReadStopProbe| match stop.get() {
        ReadStop::None => None,
        ReadStop::Budget(budget) => Some(ElfError::Read(format!(
            "the analysis needs more than {} MiB of the file",
            budget >> 20
        ))),
        ReadStop::Failed(why) => Some(ElfError::Read(why)),
    };
    // A read that failed or stopped at the budget leaves partial answers: none is trusted.
    match (result, read_failure(&stop)) {
        (_, Some(err)) => Err(err),
        (result, None) => result,
    }
}

/// File offset of the symbol `name` (`.dynsym`, then `.symtab`), read as [`inspect_file`]
/// reads: the dynamic loader's hook point.
pub fn symbol_offset(file: File, name: &str) -> Result<Option<u64>, ElfError> {
    let (reader, stop) = BoundedReader::new(file, MAX_FILE_BYTES_READ)?;
    let cache = object::ReadCache::new(reader);
    let read = Default::default();
    let data = Budgeted {
        cache: &cache,
        probe: &stop,
        read: &read,
    };
    let found = (|| {
        let elf = object::File::parse(data)?;
        let offset = elf
            .dynamic_symbols()
            .chain(elf.symbols())
            .find(|sym| sym.is_definition() && sym.name_bytes().is_ok_and(|n| n == name.as_bytes()))
            .and_then(|sym| file_offset(&elf, &sym));
        Ok::<_, object::Error>(offset)
    })();
    match (found, stop.get()) {
        (_, ReadStop::Failed(why)) => Err(ElfError::Read(why)),
        (_, ReadStop::Budget(budget)) => Err(ElfError::Read(format!(
            "looking for {name} needs more than {} MiB of the file",
            budget >> 20
        ))),
        (Err(err), _) => Err(err.into()),
        (Ok(offset), _) => Ok(offset),
    }
}

/// Bytes read at once for name lookups ([`Budgeted`]).
const STRING_BLOCK: u64 = 64 << 10;

/// The cached reader, refusing a request larger than what is left of the budget before
/// `ReadCache` allocates it (a crafted header can name a section as large as the file).
#[derive(Clone, Copy)]
struct Budgeted<'a> {
    cache: &'a object::ReadCache<BoundedReader>,
    probe: &'a ReadStopProbe,
    /// Ranges read already (cached: asking again costs nothing).
    read: &'a std::cell::RefCell<std::collections::HashSet<(u64, u64)>>,
}

impl<'a> object::ReadRef<'a> for Budgeted<'a> {
    fn len(self) -> Result<u64, ()> {
        self.cache.len()
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        let mut read = self.read.borrow_mut();
        if !read.contains(&(offset, size)) {
            if size > self.probe.remaining() {
                self.probe.refuse_for_budget();
                return Err(());
            }
            read.insert((offset, size));
        }
        drop(read);
        self.cache.read_bytes_at(offset, size)
    }

    /// Names (of symbols, sections) come from blocks read once, not from one read per name:
    /// a Go or Node binary has tens of thousands of symbols, and discovery may be holding a
    /// new process while it reads them.
    fn read_bytes_at_until(
        self,
        range: std::ops::Range<u64>,
        delimiter: u8,
    ) -> Result<&'a [u8], ()> {
        let block_start = range.start - range.start % STRING_BLOCK;
        let block_end = block_start
            .saturating_add(STRING_BLOCK)
            .min(self.cache.len()?);
        if range.start < block_end
            && let Ok(block) = self.read_bytes_at(block_start, block_end - block_start)
        {
            let from = usize::try_from(range.start - block_start).map_err(|_| ())?;
            let until = usize::try_from(range.end.min(block_end) - block_start).map_err(|_| ())?;
            let tail = block.get(from..until).ok_or(())?;
            if let Some(n) = memchr::memchr(delimiter, tail) {
                return Ok(&tail[..n]);
            }
            if range.end <= block_end {
                return Err(());
            }
        }
        // A name running past its block (or a refused block): read on its own, at most 4 KiB.
        self.cache.read_bytes_at_until(range, delimiter)
    }
}

fn inspect_data(
    data: Budgeted<'_>,
    full_symtab: bool,
    read_at: &mut dyn FnMut(u64, &mut [u8]) -> bool,
) -> Result<ElfInfo, ElfError> {
    let elf = object::File::parse(data)?;
    let mut info = ElfInfo {
        has_symtab: elf.symbol_table().is_some(),
        ..Default::default()
    };
    let note = |sym: &object::Symbol<'_, '_, _>, info: &mut ElfInfo| {
        let Ok(name) = sym.name_bytes() else { return };
        if sym.is_definition()
            && let Some(hooked) = OPENSSL_HOOKED.iter().find(|h| h.as_bytes() == name)
            && !info.openssl_offsets.iter().any(|(n, _)| n == hooked)
            && let Some(offset) = file_offset(&elf, sym)
        {
            info.openssl_offsets.push((hooked, offset));
        }
        if !info.rustls && contains(name, b"rustls") {
            info.rustls = true;
        }
    };
    let has_required = |info: &ElfInfo| {
        OPENSSL_REQUIRED
            .iter()
            .all(|r| info.openssl_offsets.iter().any(|(n, _)| n == r))
    };
    for sym in elf.dynamic_symbols() {
        note(&sym, &mut info);
    }
    if full_symtab && !has_required(&info) {
        for sym in elf.symbols() {
            note(&sym, &mut info);
        }
    }
    info.exports_openssl = has_required(&info);
    if full_symtab {
        let rustls = super::rustls::scan(&elf, |sym| file_offset(&elf, sym));
        info.rustls |= !rustls.hooks.is_empty() || rustls.unhookable.is_some();
        info.rustls_hooks = rustls.hooks;
        info.rustls_unhookable = rustls.unhookable;
        if info.rustls_hooks.is_empty() && info.rustls_unhookable.is_some() && !info.exports_openssl
        {
            let started = std::time::Instant::now();
            let found = super::awslc::find_hooks(&super::awslc::Image::from_elf(&elf));
            log::debug!("aws-lc AEAD search took {:?}: {found:?}", started.elapsed());
            info.aead = found.transpose();
        }
    }
    let go = elf.section_by_name(".go.buildinfo").is_some();
    if full_symtab && !info.exports_openssl && !go {
        info.boringssl = super::boringssl::locate_in_elf(&elf, read_at);
    }
    if let Some(section) = elf.section_by_name(".go.buildinfo") {
        let data = section.data().ok();
        let version = data
            .and_then(go_version_from_buildinfo)
            .or_else(|| data.and_then(|d| super::go_tls::go_version_from_pointers(&elf, d)))
            .unwrap_or_else(|| "unknown".to_string());
        info.go_tls = Some(super::go_tls::find_hooks(&elf, &version));
        info.go_version = Some(version);
    }
    Ok(info)
}

/// File offset of a defined symbol: its address relative to its section, plus the section's
/// position in the file (what a uprobe is attached at).
fn file_offset<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    sym: &object::Symbol<'data, '_, R>,
) -> Option<u64> {
    let index = sym.section_index()?;
    let section = elf.section_by_index(index).ok()?;
    let (section_offset, _) = section.file_range()?;
    sym.address()
        .checked_sub(section.address())?
        .checked_add(section_offset)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Parses the Go version from a `.go.buildinfo` section (Go ≥ 1.18 inline-string format).
pub fn go_version_from_buildinfo(data: &[u8]) -> Option<String> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    if !data.starts_with(MAGIC) || data.len() < 32 {
        return None;
    }
    let flags = *data.get(15)?;
    if flags & 0x2 == 0 {
        // Pre-1.18 layout stores pointers to the strings; not worth resolving here.
        return None;
    }
    let (len, used) = uvarint(data.get(32..)?)?;
    let start = 32 + used;
    let bytes = data.get(start..start.checked_add(usize::try_from(len).ok()?)?)?;
    let version = std::str::from_utf8(bytes).ok()?;
    version.starts_with("go").then(|| version.to_string())
}

fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in data.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_libssl_exports_openssl() {
        let Some(lib) = crate::capture::targets::default_libssl() else {
            return; // no libssl on this host: nothing to check
        };
        let info = inspect(&lib, false).expect("parse libssl");
        assert!(info.exports_openssl, "{info:?}");
        assert!(info.openssl_offsets.len() >= 4, "{info:?}");
        assert!(info.go_version.is_none());
    }

    #[test]
    fn a_binary_importing_ssl_is_not_a_target() {
        // The test binary itself defines no SSL_* functions.
        let exe = std::env::current_exe().expect("exe");
        let info = inspect(&exe, true).expect("parse self");
        assert!(!info.exports_openssl);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("llmtap-elf-{}", std::process::id()));
        std::fs::write(&dir, b"\x7fELF garbage garbage").expect("write");
        assert!(inspect(&dir, true).is_err());
        let _ = std::fs::remove_file(&dir);
    }

    /// An ELF file whose `.dynsym` is `dynsym_bytes` of zeros (a hole in a sparse file).
    fn write_elf_with_dynsym(path: &Path, dynsym_bytes: u64) {
        use std::os::unix::fs::FileExt as _;
        let names = b"\0.dynsym\0.dynstr\0.shstrtab\0";
        let (dynstr, shstrtab, dynsym) = (0x1000u64, 0x1100u64, 0x10000u64);
        let shoff = dynsym + dynsym_bytes;
        let mut header = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
        header.extend_from_slice(&3u16.to_le_bytes());
        header.extend_from_slice(&0x3eu16.to_le_bytes());
        header.extend_from_slice(&1u32.to_le_bytes());
        for v in [0u64, 0, shoff] {
            header.extend_from_slice(&v.to_le_bytes());
        }
        header.extend_from_slice(&0u32.to_le_bytes());
        for v in [64u16, 56, 0, 64, 4, 3] {
            header.extend_from_slice(&v.to_le_bytes());
        }
        let mut sections = vec![0u8; 64];
        for (name, kind, offset, size, link, entsize) in [
            (1u32, 11u32, dynsym, dynsym_bytes, 2u32, 24u64),
            (9, 3, dynstr, 1, 0, 0),
            (17, 3, shstrtab, names.len() as u64, 0, 0),
        ] {
            for v in [name, kind] {
                sections.extend_from_slice(&v.to_le_bytes());
            }
            for v in [2u64, offset, offset, size] {
                sections.extend_from_slice(&v.to_le_bytes());
            }
            for v in [link, 1] {
                sections.extend_from_slice(&v.to_le_bytes());
            }
            for v in [8u64, entsize] {
                sections.extend_from_slice(&v.to_le_bytes());
            }
        }
        let file = File::create(path).expect("create");
        file.write_all_at(&header, 0).expect("header");
        file.write_all_at(&[0], dynstr).expect("dynstr");
        file.write_all_at(names, shstrtab).expect("names");
        file.write_all_at(&sections, shoff).expect("sections");
    }

    #[test]
    fn a_section_larger_than_the_budget_is_refused_before_it_is_read() {
        let path = std::env::temp_dir().join(format!("llmtap-elf-huge-{}", std::process::id()));
        // 2 GiB of symbols in a sparse file: reading them would need 2 GiB of memory.
        write_elf_with_dynsym(&path, (2 << 30) / 24 * 24);
        let peak_kib = || {
            std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
                    line.split_whitespace().nth(1)?.parse::<u64>().ok()
                })
                .expect("VmHWM")
        };
        let before = peak_kib();
        let err = inspect(&path, false).expect_err("over the budget");
        let grown_mib = (peak_kib() - before) >> 10;
        let _ = std::fs::remove_file(&path);
        assert!(err.to_string().contains("more than 512 MiB"), "{err}");
        assert!(grown_mib < 1024, "the process grew by {grown_mib} MiB");
    }

    #[test]
    fn a_file_cut_short_while_read_is_an_error() {
        let path = std::env::temp_dir().join(format!("llmtap-elf-cut-{}", std::process::id()));
        write_elf_with_dynsym(&path, 24 * 1000);
        assert!(inspect(&path, false).is_ok());
        let file = super::super::file::open_regular(&path, Follow::Symlinks).expect("open");
        // The length is taken when reading starts; the file then shrinks under the reader.
        let (mut reader, stop) = BoundedReader::new(file, MAX_FILE_BYTES_READ).expect("reader");
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(0x2000))
            .expect("truncate");
        let mut buf = vec![0u8; 24 * 1000];
        assert!(reader.read_exact_at(&mut buf, 0x10000).is_err());
        assert!(matches!(stop.get(), ReadStop::Failed(_)));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn go_buildinfo_versions() {
        let mut data = b"\xff Go buildinf:".to_vec();
        data.push(8); // pointer size
        data.push(0x2); // inline strings
        data.resize(32, 0);
        data.push(8);
        data.extend_from_slice(b"go1.22.5");
        assert_eq!(
            go_version_from_buildinfo(&data).as_deref(),
            Some("go1.22.5")
        );
        data[15] = 0;
        assert_eq!(go_version_from_buildinfo(&data), None);
        assert_eq!(go_version_from_buildinfo(b"nope"), None);
        assert_eq!(uvarint(&[0x80, 0x01]), Some((128, 2)));
    }
}
