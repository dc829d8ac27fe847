//! BoringSSL linked into an executable without symbols (Bun, `bun build --compile` programs,
//! Claude Code): finding `SSL_write` and `SSL_read` by what the code does, not by names,
//! per-release offsets or prologue byte patterns.
//!
//! Every BoringSSL error site calls `ERR_put_error(library, 0, reason, __FILE__, __LINE__)`.
//! The functions of `ssl/ssl_lib.cc` therefore reference that file's path string, next to
//! the library code (`ERR_LIB_SSL`), a reason code and a line number loaded as immediates.
//! So, without symbols:
//! 1. find the `…/ssl/ssl_lib.cc` string in the read-only data;
//! 2. find the instructions that load its address (`mov r32, imm32` in a non-PIE executable,
//!    `lea r64, [rip+disp32]` in a PIE) and read the reason and line set up next to each;
//! 3. find the function each error site belongs to: the nearest 16-byte-aligned address below
//!    it that is the target of a direct `call` and follows the end of other code (the
//!    linker's `int3` padding, or a `ret`/`jmp`/`ud2`), from which a linear disassembly
//!    reaches the site without crossing padding;
//! 4. tell the functions apart by their error reasons: `SSL_write` is the function reporting
//!    `SSL_R_UNINITIALIZED`, `SSL_R_SSL_HANDSHAKE_FAILURE` and `SSL_R_BAD_LENGTH`; `SSL_read`
//!    (with `SSL_peek` inlined, or `SSL_peek` itself, which `SSL_read` only wraps) is the other
//!    function reporting `ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED` from the lines just above
//!    `SSL_write` in the source file. Line numbers move between releases; their order does not.
//!
//! Anything ambiguous fails closed with a reason for `llmtap targets`: hooking the wrong
//! function would record garbage as plaintext. Both hooked functions have OpenSSL's
//! signatures (`int f(SSL *, void *, int)`), so the OpenSSL probes serve them as they are.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use iced_x86::{Code, Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use object::{Object as _, ObjectSegment as _};

/// The source file whose error sites identify the functions, as a NUL-terminated C string.
/// Kept in two pieces and joined at run time, so that llmtap's own executable does not
/// contain the string it looks for (and does not look like BoringSSL to itself).
const SSL_LIB_SOURCE: [&[u8]; 2] = [b"/ssl/ssl_lib", b".cc\0"];
/// References to the path below which a file that merely contains it, but whose code never
/// reports an error with it, is not taken for BoringSSL (`ssl_lib.cc` has dozens of sites).
const MIN_REFERENCES: usize = 3;
/// `ERR_LIB_SSL`.
const ERR_LIB_SSL: u32 = 0x10;
/// `ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED` (the QUIC check at the top of `SSL_peek`/`SSL_write`).
const REASON_SHOULD_NOT_HAVE_BEEN_CALLED: u32 = 0x42;
/// `SSL_R_BAD_LENGTH`, `SSL_R_SSL_HANDSHAKE_FAILURE`, `SSL_R_UNINITIALIZED`: `SSL_write`'s own.
const SSL_WRITE_REASONS: [u32; 3] = [0x6f, 0xd7, 0xe2];
/// How far above `SSL_write`'s first error site `SSL_peek`'s may be, in source lines (22 in
/// the releases measured; the two functions are adjacent in `ssl_lib.cc`).
const READ_LINES_BEFORE_WRITE: u32 = 80;
/// Source lines one function's error sites may span (`SSL_write`'s span 26).
const MAX_FUNCTION_LINES: u32 = 120;
/// How far an error site may be from the start of its function.
const MAX_SITE_DISTANCE: u64 = 16 * 1024;
/// Instructions read after the path is loaded, up to the call (or jump to a shared call).
const SITE_INSTRUCTIONS: usize = 12;
/// References to the path considered at most (a real build has a few dozen).
const MAX_REFERENCES: usize = 4096;
/// Linker padding between functions (`int3`).
const PADDING: u8 = 0xcc;

/// One loadable segment of the file.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    pub vaddr: u64,
    pub offset: u64,
    pub data: &'a [u8],
    pub executable: bool,
}

/// The loadable segments of an executable: enough to go between addresses, file offsets and
/// bytes without section headers (which stripped files may lack).
#[derive(Clone, Debug, Default)]
pub struct Image<'a> {
    pub segments: Vec<Segment<'a>>,
}

impl<'a> Image<'a> {
    /// The `PT_LOAD` segments of a parsed ELF file.
    pub fn from_elf<'data: 'a, R: object::ReadRef<'data>>(elf: &object::File<'data, R>) -> Self {
        let segments = elf
            .segments()
            .filter_map(|seg| {
                let (offset, _) = seg.file_range();
                let data = seg.data().ok()?;
                let executable = match seg.flags() {
                    object::SegmentFlags::Elf { p_flags } => p_flags & object::elf::PF_X != 0,
                    _ => false,
                };
                Some(Segment {
                    vaddr: seg.address(),
                    offset,
                    data,
                    executable,
                })
            })
            .collect();
        Self { segments }
    }

    fn segment_of(&self, vaddr: u64) -> Option<&Segment<'a>> {
        self.segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.data.len() as u64)
    }

    /// File offset of a virtual address (through its `PT_LOAD`): a uprobe takes a file
    /// offset; one placed at the virtual address of a PIE or non-PIE file never fires.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        let seg = self.segment_of(vaddr)?;
        seg.offset.checked_add(vaddr - seg.vaddr)
    }

    /// The executable bytes from `vaddr` to the end of its segment.
    fn code_from(&self, vaddr: u64) -> Option<&'a [u8]> {
        let seg = self.segment_of(vaddr)?;
        if !seg.executable {
            return None;
        }
        seg.data.get(usize::try_from(vaddr - seg.vaddr).ok()?..)
    }

    fn byte_at(&self, vaddr: u64) -> Option<u8> {
        let seg = self.segment_of(vaddr)?;
        seg.data
            .get(usize::try_from(vaddr - seg.vaddr).ok()?)
            .copied()
    }
}

/// Where `SSL_write` and `SSL_read` are, as file offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoringSslHooks {
    pub write: u64,
    pub read: u64,
    /// The source path that identified BoringSSL (`../../vendor/boringssl/ssl/ssl_lib.cc`).
    pub source: String,
    /// How long the analysis took (the cache makes repeats free).
    pub analysis: Duration,
}

impl BoringSslHooks {
    /// (function name, file offset) pairs in the form the OpenSSL attach path takes.
    pub fn offsets(&self) -> Vec<(&'static str, u64)> {
        vec![("SSL_write", self.write), ("SSL_read", self.read)]
    }
}

/// One `ERR_put_error` call site of `ssl_lib.cc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorSite {
    /// Address of the instruction loading the source path.
    pub vaddr: u64,
    pub reason: u32,
    pub line: u32,
}

/// Finds BoringSSL's `SSL_write`/`SSL_read` in `image`. `None`: the file has no BoringSSL
/// (no `ssl_lib.cc` path); `Err`: it has, but the functions could not be told apart.
pub fn locate(image: &Image<'_>) -> Option<Result<BoringSslHooks, String>> {
    let started = Instant::now();
    locate_with_strings(image, source_strings(image), started)
}

/// [`locate`] once the source path strings are found.
fn locate_with_strings(
    image: &Image<'_>,
    strings: Vec<(u64, String)>,
    started: Instant,
) -> Option<Result<BoringSslHooks, String>> {
    let (_, source) = strings.first()?;
    let source = source.clone();
    let addrs: Vec<u64> = strings.iter().map(|(a, _)| *a).collect();
    Some(
        locate_from(image, &addrs)?.map(|(write, read)| BoringSslHooks {
            write,
            read,
            source,
            analysis: started.elapsed(),
        }),
    )
}

/// Results remembered per build (build-id and code layout), across files: a `bun build
/// --compile` program carries Bun's code unchanged, and Claude Code's 400 MB executable is
/// installed under two names; each build is analysed once per daemon.
static CACHE: std::sync::Mutex<Vec<(BuildKey, Located)>> = std::sync::Mutex::new(Vec::new());

/// What [`locate`] answers for one file.
type Located = Option<Result<BoringSslHooks, String>>;
/// Builds remembered at most (oldest forgotten first).
const CACHE_MAX: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
struct BuildKey {
    build_id: Vec<u8>,
    /// (virtual address, file offset, size) of each executable segment.
    code: Vec<(u64, u64, usize)>,
}

/// As [`locate`], on a parsed ELF file, through the per-build cache. Files without a
/// build-id are analysed every time (the per-inode cache of discovery still applies).
/// The read-only data is searched piece by piece through `read_at(file offset, buffer)`
/// (false: the read failed) rather than held: most executables have no BoringSSL, and only
/// then is the code read (through `elf`).
pub fn locate_in_elf<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    read_at: &mut dyn FnMut(u64, &mut [u8]) -> bool,
) -> Option<Result<BoringSslHooks, String>> {
    if elf.architecture() != object::Architecture::X86_64 {
        return None;
    }
    // (virtual address, file offset, size in the file, executable)
    let layout: Vec<(u64, u64, u64, bool)> = elf
        .segments()
        .map(|seg| {
            let (offset, size) = seg.file_range();
            let executable = match seg.flags() {
                object::SegmentFlags::Elf { p_flags } => p_flags & object::elf::PF_X != 0,
                _ => false,
            };
            (seg.address(), offset, size, executable)
        })
        .collect();
    let key = elf.build_id().ok().flatten().map(|id| BuildKey {
        build_id: id.to_vec(),
        code: layout
            .iter()
            .filter(|s| s.3)
            .map(|&(vaddr, offset, size, _)| (vaddr, offset, size as usize))
            .collect(),
    });
    if let Some(key) = &key
        && let Ok(cache) = CACHE.lock()
        && let Some((_, hit)) = cache.iter().find(|(k, _)| k == key)
    {
        return hit.clone();
    }
    let started = Instant::now();
    let read_only: Vec<(u64, u64, u64)> = layout
        .iter()
        .filter(|s| !s.3)
        .map(|&(vaddr, offset, size, _)| (vaddr, offset, size))
        .collect();
    let strings = source_strings_streamed(&read_only, read_at);
    let result = if strings.is_empty() {
        None
    } else {
        let mut code = Image::from_elf(elf);
        code.segments.retain(|s| s.executable);
        locate_with_strings(&code, strings, started)
    };
    match &result {
        Some(Ok(hooks)) => log::info!(
            "BoringSSL without symbols ({}): SSL_write at file offset {:#x}, SSL_read at {:#x}, found in {} ms",
            hooks.source,
            hooks.write,
            hooks.read,
            hooks.analysis.as_millis()
        ),
        Some(Err(why)) => log::info!("BoringSSL without symbols: {why}"),
        None => {}
    }
    if let Some(key) = key
        && let Ok(mut cache) = CACHE.lock()
    {
        if cache.len() >= CACHE_MAX {
            cache.remove(0);
        }
        cache.push((key, result.clone()));
    }
    result
}

/// Steps 2 to 4 of the module comment, given the addresses of the path string.
fn locate_from(image: &Image<'_>, path_addrs: &[u64]) -> Option<Result<(u64, u64), String>> {
    let refs = references(image, path_addrs);
    let sites: Vec<ErrorSite> = refs.iter().filter_map(|r| error_site(image, *r)).collect();
    if sites.is_empty() {
        if refs.len() < MIN_REFERENCES {
            return None;
        }
        return Some(Err(
            "BoringSSL found, but none of ssl_lib.cc's error sites could be read".into(),
        ));
    }
    Some(identify(image, &sites))
}

/// Step 3 and 4 of the module comment, given the error sites.
fn identify(image: &Image<'_>, sites: &[ErrorSite]) -> Result<(u64, u64), String> {
    let starts = function_starts(image, sites);
    let mut functions: HashMap<u64, Vec<ErrorSite>> = HashMap::new();
    for (site, start) in sites.iter().zip(&starts) {
        if let Some(start) = start {
            functions.entry(*start).or_default().push(*site);
        }
    }
    let write = single(
        functions
            .iter()
            .filter(|(_, sites)| {
                SSL_WRITE_REASONS
                    .iter()
                    .all(|r| sites.iter().any(|s| s.reason == *r))
            })
            .map(|(start, sites)| (*start, sites)),
        "SSL_write",
    )?;
    let write_first_line = write.1.iter().map(|s| s.line).min().unwrap_or(0);
    let write_last_line = write.1.iter().map(|s| s.line).max().unwrap_or(0);
    if write_last_line - write_first_line > MAX_FUNCTION_LINES {
        // Sites from lines this far apart are not one function: two were taken for one.
        return Err(format!(
            "BoringSSL found, but SSL_write's error sites span lines {write_first_line}-{write_last_line}; not hooking a guess"
        ));
    }
    let read = single(
        functions
            .iter()
            .filter(|(start, _)| **start != write.0)
            .filter(|(_, sites)| {
                sites.iter().any(|s| {
                    s.reason == REASON_SHOULD_NOT_HAVE_BEEN_CALLED
                        && s.line < write_first_line
                        && s.line + READ_LINES_BEFORE_WRITE >= write_first_line
                })
            })
            .map(|(start, sites)| (*start, sites)),
        "SSL_read",
    )?;
    let offset = |name: &str, vaddr: u64| {
        image
            .file_offset(vaddr)
            .ok_or_else(|| format!("{name} at {vaddr:#x} is outside the file's segments"))
    };
    Ok((offset("SSL_write", write.0)?, offset("SSL_read", read.0)?))
}

fn single<'s>(
    mut candidates: impl Iterator<Item = (u64, &'s Vec<ErrorSite>)>,
    name: &str,
) -> Result<(u64, &'s Vec<ErrorSite>), String> {
    let Some(first) = candidates.next() else {
        return Err(format!(
            "BoringSSL found, but no function has {name}'s error sites"
        ));
    };
    let more = candidates.count();
    if more > 0 {
        return Err(format!(
            "BoringSSL found, but {} functions look like {name}; not hooking a guess",
            more + 1
        ));
    }
    Ok(first)
}

/// Virtual addresses (and text) of the `…/ssl/ssl_lib.cc` strings in non-executable segments.
pub fn source_strings(image: &Image<'_>) -> Vec<(u64, String)> {
    let needle = SSL_LIB_SOURCE.concat();
    let finder = memchr::memmem::Finder::new(&needle);
    let mut out = Vec::new();
    for seg in image.segments.iter().filter(|s| !s.executable) {
        for end in finder.find_iter(seg.data) {
            // The path starts after the previous NUL (or non-printable byte), within reason.
            let floor = end.saturating_sub(512);
            let start = seg.data[floor..end]
                .iter()
                .rposition(|b| !(0x20..0x7f).contains(b))
                .map_or(floor, |i| floor + i + 1);
            let text = String::from_utf8_lossy(&seg.data[start..end + needle.len() - 1]);
            out.push((seg.vaddr + start as u64, text.into_owned()));
            if out.len() >= 16 {
                return out;
            }
        }
    }
    out
}

/// As [`source_strings`], over segments given as (virtual address, file offset, size) and
/// read in pieces through `read_at`, keeping one piece (plus a path's length) in memory.
pub fn source_strings_streamed(
    segments: &[(u64, u64, u64)],
    read_at: &mut dyn FnMut(u64, &mut [u8]) -> bool,
) -> Vec<(u64, String)> {
    const PIECE: u64 = 4 << 20;
    let needle = SSL_LIB_SOURCE.concat();
    let finder = memchr::memmem::Finder::new(&needle);
    // Kept from one piece to the next: a path's start (up to 512 bytes) and a split needle.
    let carry = 512 + needle.len();
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    for &(vaddr, offset, size) in segments {
        buf.clear();
        // Segment position of buf[0]; bytes of the segment read; where the search resumes.
        let (mut base, mut done, mut search_from) = (0u64, 0u64, 0usize);
        while done < size {
            let n = PIECE.min(size - done) as usize;
            let old = buf.len();
            buf.resize(old + n, 0);
            let Some(file_offset) = offset.checked_add(done) else {
                return out;
            };
            if !read_at(file_offset, &mut buf[old..]) {
                return out;
            }
            done += n as u64;
            for found in finder.find_iter(&buf[search_from..]) {
                let end = search_from + found;
                let floor = end.saturating_sub(512);
                let start = buf[floor..end]
                    .iter()
                    .rposition(|b| !(0x20..0x7f).contains(b))
                    .map_or(floor, |i| floor + i + 1);
                let text = String::from_utf8_lossy(&buf[start..end + needle.len() - 1]);
                out.push((vaddr + base + start as u64, text.into_owned()));
                if out.len() >= 16 {
                    return out;
                }
            }
            // A match starting in the last needle-length bytes may end in the next piece.
            let drop = buf.len().saturating_sub(carry);
            buf.drain(..drop);
            base += drop as u64;
            search_from = buf.len().saturating_sub(needle.len() - 1);
        }
    }
    out
}

/// Addresses of instructions that load one of `targets` into a register: `mov r32, imm32`
/// (absolute, non-PIE) or `lea r64, [rip+disp32]`.
pub fn references(image: &Image<'_>, targets: &[u64]) -> Vec<u64> {
    let mut out = Vec::new();
    for seg in image.segments.iter().filter(|s| s.executable) {
        let data = seg.data;
        for &target in targets {
            let Ok(imm) = u32::try_from(target) else {
                continue;
            };
            for pos in memchr::memmem::find_iter(data, &imm.to_le_bytes()) {
                if pos >= 1 && (0xb8..=0xbf).contains(&data[pos - 1]) {
                    out.push(seg.vaddr + pos as u64 - 1);
                }
            }
        }
        for pos in memchr::memchr_iter(0x8d, data) {
            // REX.W (0x48, or 0x4c for r8-r15) 8D /r with mod=00 rm=101: [rip+disp32].
            let (Some(&rex), Some(&modrm), Some(disp)) = (
                pos.checked_sub(1).and_then(|p| data.get(p)),
                data.get(pos + 1),
                data.get(pos + 2..pos + 6),
            ) else {
                continue;
            };
            if !matches!(rex, 0x48 | 0x4c) || modrm & 0xc7 != 0x05 {
                continue;
            }
            let disp = i32::from_le_bytes([disp[0], disp[1], disp[2], disp[3]]);
            let insn = seg.vaddr + pos as u64 - 1;
            let target = (insn + 7).wrapping_add_signed(i64::from(disp));
            if targets.contains(&target) {
                out.push(insn);
            }
        }
        if out.len() > MAX_REFERENCES {
            out.truncate(MAX_REFERENCES);
            break;
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Reads the reason and line set up around the path load at `vaddr`: the immediates moved
/// into `edx` (third argument) and `r8d` (fifth) before the next call or jump, with `edi`
/// (first) being `ERR_LIB_SSL` when it is set there.
pub fn error_site(image: &Image<'_>, vaddr: u64) -> Option<ErrorSite> {
    let code = image.code_from(vaddr)?;
    let code = &code[..code.len().min(SITE_INSTRUCTIONS * 15)];
    let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    let (mut reason, mut line, mut library) = (None, None, None);
    for _ in 0..SITE_INSTRUCTIONS {
        if !decoder.can_decode() {
            return None;
        }
        let insn = decoder.decode();
        if insn.is_invalid() {
            return None;
        }
        match insn.mnemonic() {
            Mnemonic::Call | Mnemonic::Jmp => break,
            Mnemonic::Ret | Mnemonic::Int3 | Mnemonic::Ud2 => return None,
            _ => {}
        }
        if insn.code() == Code::Mov_r32_imm32 && insn.op1_kind() == OpKind::Immediate32 {
            let value = insn.immediate32();
            match insn.op0_register() {
                Register::EDX => reason = Some(value),
                Register::R8D => line = Some(value),
                Register::EDI => library = Some(value),
                _ => {}
            }
        }
    }
    if library.is_some_and(|l| l != ERR_LIB_SSL) {
        return None;
    }
    Some(ErrorSite {
        vaddr,
        reason: reason?,
        line: line?,
    })
}

/// The start of the function containing each site (see the module comment, step 3).
pub fn function_starts(image: &Image<'_>, sites: &[ErrorSite]) -> Vec<Option<u64>> {
    let mut windows: Vec<(u64, u64)> = sites
        .iter()
        .map(|s| (s.vaddr.saturating_sub(MAX_SITE_DISTANCE), s.vaddr))
        .collect();
    windows.sort_unstable();
    let entries = entry_references(image, &windows);
    sites
        .iter()
        .map(|site| {
            let mut candidate = site.vaddr & !15;
            let floor = site.vaddr.saturating_sub(MAX_SITE_DISTANCE);
            while candidate >= floor && candidate > 0 {
                // The nearest referenced address where the code before it cannot fall
                // through is the function's start; if the site is not reached from there,
                // the site is not in a function we can delimit.
                if let Some(kind) = entries.get(&candidate)
                    && starts_function(image, candidate, *kind)
                {
                    return decodes_to(image, candidate, site.vaddr).then_some(candidate);
                }
                candidate -= 16;
            }
            None
        })
        .collect()
}

/// How code refers to an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryReference {
    /// `call rel32`: compiled code only calls function entries.
    Call,
    /// `jmp rel32` (tail calls, but also branches inside functions) or the address loaded
    /// into a register (function pointers).
    Other,
}

/// Whether a referenced `vaddr` is where a function starts: after the linker's `int3`
/// padding; or, for a call target only, right after code that cannot fall through (`ret`,
/// `jmp`, `ud2`: a previous function ending flush with this one's alignment). A jump target
/// after a jump may be a loop head inside a function, so it needs the padding.
fn starts_function(image: &Image<'_>, vaddr: u64, reference: EntryReference) -> bool {
    let before = |n: u64| vaddr.checked_sub(n).and_then(|a| image.byte_at(a));
    if before(1) == Some(PADDING) {
        return true;
    }
    reference == EntryReference::Call
        && (before(1) == Some(0xc3)
            || before(5) == Some(0xe9)
            || before(2) == Some(0xeb)
            || (before(2), before(1)) == (Some(0x0f), Some(0x0b)))
}

/// 16-byte-aligned addresses in `windows` that code refers to: targets of `call rel32` and
/// `jmp rel32`, and addresses loaded by `lea r64, [rip+disp32]` or `mov r32, imm32`.
fn entry_references(image: &Image<'_>, windows: &[(u64, u64)]) -> HashMap<u64, EntryReference> {
    let in_window = |t: u64| {
        t.is_multiple_of(16) && {
            let i = windows.partition_point(|(lo, _)| *lo <= t);
            windows[..i]
                .iter()
                .rev()
                .any(|(lo, hi)| *lo <= t && t <= *hi)
        }
    };
    let mut out: HashMap<u64, EntryReference> = HashMap::new();
    let mut note = |target: u64, kind: EntryReference| {
        if in_window(target) {
            let slot = out.entry(target).or_insert(kind);
            if kind == EntryReference::Call {
                *slot = kind;
            }
        }
    };
    for seg in image.segments.iter().filter(|s| s.executable) {
        let data = seg.data;
        let rel32 = |pos: usize| {
            data.get(pos..pos + 4)
                .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        };
        for (pos, &byte) in data.iter().enumerate() {
            let next = seg.vaddr + pos as u64;
            match byte {
                0xe8 | 0xe9 => {
                    if let Some(rel) = rel32(pos + 1) {
                        let kind = if byte == 0xe8 {
                            EntryReference::Call
                        } else {
                            EntryReference::Other
                        };
                        note((next + 5).wrapping_add_signed(rel), kind);
                    }
                }
                0xb8..=0xbf => {
                    if let Some(b) = data.get(pos + 1..pos + 5) {
                        let imm = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        note(u64::from(imm), EntryReference::Other);
                    }
                }
                0x8d if pos >= 1
                    && matches!(data[pos - 1], 0x48 | 0x4c)
                    && data.get(pos + 1).is_some_and(|m| m & 0xc7 == 0x05) =>
                {
                    if let Some(rel) = rel32(pos + 2) {
                        note((next + 6).wrapping_add_signed(rel), EntryReference::Other);
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Whether disassembling from `start` lands exactly on `site` without meeting padding or an
/// invalid instruction (so `start` and `site` are in one run of code).
fn decodes_to(image: &Image<'_>, start: u64, site: u64) -> bool {
    let Some(code) = image.code_from(start) else {
        return false;
    };
    let len = usize::try_from(site - start + 16).unwrap_or(usize::MAX);
    let code = &code[..code.len().min(len)];
    let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    while decoder.can_decode() && decoder.ip() < site {
        let insn = decoder.decode();
        if insn.is_invalid() || insn.code() == Code::Int3 {
            return false;
        }
    }
    decoder.ip() == site
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT_VA: u64 = 0x40_1000;
    const RODATA_VA: u64 = 0x20_0000;
    /// The path as BoringSSL builds embed it (assembled at run time, like the needle).
    fn path() -> Vec<u8> {
        [b"../../vendor/boringssl".as_slice(), b"/ssl/ssl_lib.cc\0"].concat()
    }

    /// A fake non-PIE text segment assembled from functions, each padded to 16 bytes with
    /// `int3`, each called once from a caller at the start.
    struct Text {
        code: Vec<u8>,
        starts: Vec<u64>,
    }

    /// `push rbp; mov rbp, rsp; <filler>` then error sites `mov ecx, path; mov edi, 0x10;
    /// xor esi, esi; mov edx, reason; mov r8d, line; call ERR_put_error`, then `pop rbp; ret`.
    fn function(path_va: u32, sites: &[(u32, u32)], filler: usize, lea: bool, at: u64) -> Vec<u8> {
        let mut f = vec![0x55, 0x48, 0x89, 0xe5];
        f.extend(std::iter::repeat_n(0x90, filler));
        for &(reason, line) in sites {
            if lea {
                let insn = at + f.len() as u64;
                let disp = (i64::from(path_va) - (insn as i64 + 7)) as i32;
                f.extend([0x48, 0x8d, 0x0d]);
                f.extend(disp.to_le_bytes());
            } else {
                f.push(0xb9);
                f.extend(path_va.to_le_bytes());
            }
            f.extend([0xbf, 0x10, 0, 0, 0, 0x31, 0xf6, 0xba]);
            f.extend(reason.to_le_bytes());
            f.extend([0x41, 0xb8]);
            f.extend(line.to_le_bytes());
            f.extend([0xe8, 0, 0, 0, 0]);
        }
        f.extend([0x5d, 0xc3]);
        f
    }

    fn text(functions: &[(&[(u32, u32)], usize)], lea: bool) -> Text {
        // A caller block first: one `call rel32` per function, patched below.
        let callers = functions.len() * 5;
        let mut code = vec![0x90; callers.next_multiple_of(16)];
        code[callers..].fill(PADDING);
        let mut starts = Vec::new();
        for (sites, filler) in functions {
            let at = TEXT_VA + code.len() as u64;
            starts.push(at);
            code.extend(function((RODATA_VA + 8) as u32, sites, *filler, lea, at));
            let padded = code.len().next_multiple_of(16);
            code.resize(padded, PADDING);
        }
        for (i, start) in starts.iter().enumerate() {
            let call_at = TEXT_VA + (i * 5) as u64;
            let rel = (*start as i64 - (call_at as i64 + 5)) as i32;
            code[i * 5] = 0xe8;
            code[i * 5 + 1..i * 5 + 5].copy_from_slice(&rel.to_le_bytes());
        }
        Text { code, starts }
    }

    fn rodata() -> Vec<u8> {
        let mut r = b"garbage\0".to_vec();
        r.extend_from_slice(&path());
        r.extend_from_slice(b"other\0");
        r
    }

    fn image<'a>(text: &'a [u8], rodata: &'a [u8]) -> Image<'a> {
        Image {
            segments: vec![
                Segment {
                    vaddr: RODATA_VA,
                    offset: 0,
                    data: rodata,
                    executable: false,
                },
                Segment {
                    vaddr: TEXT_VA,
                    offset: 0x1000,
                    data: text,
                    executable: true,
                },
            ],
        }
    }

    /// The layout measured in Bun 1.4.5: `SSL_read` (peek's QUIC check at line 931) placed
    /// far after `SSL_write` (lines 953-979), with other ssl_lib.cc functions around.
    fn bun_like() -> Vec<(&'static [(u32, u32)], usize)> {
        vec![
            (&[(0xba, 394)], 30), // some other function
            (&[(0x42, 953), (0xe2, 958), (0xd7, 973), (0x6f, 979)], 40), // SSL_write
            (&[(0xe2, 837), (0xd7, 870)], 8), // ssl_read_impl
            (&[(0x42, 697), (0x12b, 702)], 0), // a QUIC function
            (&[(0x42, 931)], 20), // SSL_read
        ]
    }

    #[test]
    fn finds_write_and_read_by_their_error_sites_non_pie_and_pie() {
        for lea in [false, true] {
            let t = text(&bun_like(), lea);
            let ro = rodata();
            let img = image(&t.code, &ro);
            let hooks = locate(&img).expect("BoringSSL").expect("located");
            assert_eq!(hooks.write, t.starts[1] - TEXT_VA + 0x1000, "lea={lea}");
            assert_eq!(hooks.read, t.starts[4] - TEXT_VA + 0x1000, "lea={lea}");
            assert_eq!(hooks.source, "../../vendor/boringssl/ssl/ssl_lib.cc");
        }
    }

    #[test]
    fn the_streamed_search_finds_what_the_whole_search_finds() {
        // Paths placed across piece boundaries (4 MiB) and at a segment's very start.
        let mut data = vec![b'x'; (9 << 20) + 77];
        let path = b"\0../../vendor/boringssl/ssl/ssl_lib.cc\0";
        for at in [0usize, (4 << 20) - 20, (8 << 20) - 3, (9 << 20) - 60] {
            data[at..at + path.len()].copy_from_slice(path);
        }
        let image = Image {
            segments: vec![Segment {
                vaddr: 0x40_0000,
                offset: 0x1000,
                data: &data,
                executable: false,
            }],
        };
        let whole = source_strings(&image);
        assert_eq!(whole.len(), 4);
        let mut read_at = |offset: u64, buf: &mut [u8]| {
            let at = (offset - 0x1000) as usize;
            buf.copy_from_slice(&data[at..at + buf.len()]);
            true
        };
        let streamed =
            source_strings_streamed(&[(0x40_0000, 0x1000, data.len() as u64)], &mut read_at);
        assert_eq!(streamed, whole);
    }

    #[test]
    fn no_source_path_means_not_boringssl() {
        let t = text(&bun_like(), false);
        let ro = b"nothing to see\0".to_vec();
        assert_eq!(locate(&image(&t.code, &ro)), None);
    }

    #[test]
    fn ambiguity_fails_closed() {
        let mut fns = bun_like();
        // A second function with SSL_write's reasons (say SSL_write inlined into another).
        fns.push((&[(0xe2, 958), (0xd7, 973), (0x6f, 979)], 4));
        let t = text(&fns, false);
        let ro = rodata();
        let err = locate(&image(&t.code, &ro))
            .expect("BoringSSL")
            .unwrap_err();
        assert!(err.contains("2 functions look like SSL_write"), "{err}");
    }

    #[test]
    fn read_must_sit_just_above_write_in_the_source() {
        let mut fns = bun_like();
        fns[4] = (&[(0x42, 500)], 20);
        let t = text(&fns, false);
        let ro = rodata();
        let err = locate(&image(&t.code, &ro))
            .expect("BoringSSL")
            .unwrap_err();
        assert!(err.contains("SSL_read"), "{err}");
    }

    #[test]
    fn functions_ending_flush_with_the_next_one_are_told_apart() {
        // The first function's 64 bytes end exactly where SSL_write starts (no padding).
        let fns = bun_like();
        let t = text(&fns, false);
        assert_ne!(t.code[(t.starts[1] - TEXT_VA - 1) as usize], PADDING);
        let ro = rodata();
        let hooks = locate(&image(&t.code, &ro))
            .expect("BoringSSL")
            .expect("located");
        assert_eq!(hooks.write, t.starts[1] - TEXT_VA + 0x1000);
    }

    #[test]
    fn a_site_not_reached_from_a_referenced_start_is_not_assigned() {
        let mut fns = bun_like();
        fns[0].1 = 40; // padding before SSL_write
        let t = text(&fns, false);
        let mut code = t.code.clone();
        assert_eq!(code[(t.starts[1] - TEXT_VA - 1) as usize], PADDING);
        // Remove the call to SSL_write: nothing proves where its code starts any more.
        code[5..10].copy_from_slice(&[0x90; 5]);
        let ro = rodata();
        let err = locate(&image(&code, &ro)).expect("BoringSSL").unwrap_err();
        assert!(err.contains("SSL_write"), "{err}");
    }

    #[test]
    fn garbage_code_is_an_error_not_a_panic() {
        let ro = rodata();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in [0usize, 1, 7, 64, 4096, 70_000] {
            let mut code = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                code.push(seed as u8);
            }
            // Plant path loads at random places so every step runs.
            for at in (0..len.saturating_sub(8)).step_by(97) {
                code[at] = 0xb9;
                code[at + 1..at + 5].copy_from_slice(&((RODATA_VA + 8) as u32).to_le_bytes());
            }
            let img = image(&code, &ro);
            if let Some(Ok(hooks)) = locate(&img) {
                panic!("located functions in noise: {hooks:?}");
            }
        }
    }

    #[test]
    fn file_offsets_go_through_the_segment() {
        let ro = rodata();
        let code = vec![0x90; 64];
        let img = image(&code, &ro);
        assert_eq!(img.file_offset(TEXT_VA + 0x10), Some(0x1010));
        assert_eq!(img.file_offset(RODATA_VA + 3), Some(3));
        assert_eq!(img.file_offset(TEXT_VA + 64), None);
        assert_eq!(img.file_offset(0), None);
    }
}
