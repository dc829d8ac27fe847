//! Stripped Rust binaries whose rustls encrypts with aws-lc (through aws-lc-rs, rustls's default
//! crypto provider): the Codex CLI, Deno. With no symbols, rustls's plaintext functions cannot
//! be named, but every TLS record still goes through aws-lc's AEAD entry points
//! (`EVP_AEAD_CTX_seal`, `_seal_scatter`, `_open`, `_open_gather`), and those can be found by
//! content.
//!
//! aws-lc (a BoringSSL fork) reports errors as `OPENSSL_PUT_ERROR(CIPHER, reason)`, which
//! compiles to a call passing the library code (CIPHER = 30), a reason code, the source path
//! (`__FILE__`, `…/crypto/fipsmodule/cipher/aead.c`) and the line. Every function of `aead.c`
//! therefore loads the address of that path string with a RIP-relative `lea` next to a reason
//! constant. The reason codes are part of aws-lc's public API (`openssl/cipher.h`) and tell the
//! functions apart without symbols, byte signatures or per-release offsets:
//!
//! | function | reasons at its error sites |
//! |---|---|
//! | `EVP_AEAD_CTX_seal` | `TOO_LARGE`, `BUFFER_TOO_SMALL`, `OUTPUT_ALIASES_INPUT` |
//! | `EVP_AEAD_CTX_seal_scatter` | `OUTPUT_ALIASES_INPUT`, `INVALID_OPERATION` |
//! | `EVP_AEAD_CTX_open` | `OUTPUT_ALIASES_INPUT`, `BAD_DECRYPT`, `BUFFER_TOO_SMALL`, … |
//! | `EVP_AEAD_CTX_open_gather` | `OUTPUT_ALIASES_INPUT`, `CTRL_NOT_IMPLEMENTED` |
//! | `EVP_AEAD_CTX_init` / `_init_with_direction` | `UNSUPPORTED_KEY_SIZE` (`NO_DIRECTION_SET`) |
//!
//! The context initialisers matter for identity: a connection is named by its AEAD context's
//! address, and a new connection's context is often allocated where a closed one's was. A
//! context being initialised ends whatever connection had that address before.
//!
//! A site belongs to the function whose entry is the nearest one at or below it: entries come
//! from `.eh_frame_hdr`'s sorted table when the binary has one (Codex), else from the targets
//! of direct calls near the sites (Deno is built without unwind tables). Everything is read
//! from the mapped file in bounded windows; a malformed file yields an error, never a panic.
//!
//! The probes (`tracer-ebpf/src/aead.rs`) see one TLS record per call, with the record's
//! content type (TLS 1.3: the plaintext's last byte; TLS 1.2: the additional data), so only
//! application data is emitted.

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use object::{Object as _, ObjectSection as _, ObjectSegment as _};

/// eBPF programs of this method, loaded with the others.
pub const PROGRAMS: &[&str] = &[
    "aead_seal_entry",
    "aead_seal_scatter_entry",
    "aead_open_entry",
    "aead_open_gather_entry",
    "aead_open_return",
    "aead_init_entry",
];

/// The source path aws-lc's AEAD functions pass to the error function (a suffix: the prefix
/// depends on the build directory).
const AEAD_SOURCE: &[u8] = b"crypto/fipsmodule/cipher/aead.c";
/// Longest source path accepted before the suffix.
const MAX_PATH_LEN: usize = 512;
/// `ERR_LIB_CIPHER`.
const LIB_CIPHER: u32 = 30;

/// Reason codes from aws-lc's `include/openssl/cipher.h` (stable: they are API).
mod reason {
    pub const BAD_DECRYPT: u32 = 101;
    pub const CTRL_NOT_IMPLEMENTED: u32 = 104;
    pub const INVALID_OPERATION: u32 = 112;
    pub const OUTPUT_ALIASES_INPUT: u32 = 115;
    pub const TOO_LARGE: u32 = 117;
    pub const UNSUPPORTED_KEY_SIZE: u32 = 120;
}

/// Bytes decoded after a `lea` to find the constants passed with it.
const SITE_WINDOW: usize = 64;
/// Instructions decoded per error site (including one followed jump).
const SITE_INSTRUCTIONS: usize = 16;
/// How far below the first error site a function entry may be, when entries come from calls.
const CALL_WINDOW: u64 = 64 * 1024;
/// Error sites considered at most (aead.c has about twenty).
const MAX_SITES: usize = 256;

/// One of aws-lc's AEAD entry points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AeadFn {
    Seal,
    SealScatter,
    Open,
    OpenGather,
    /// `EVP_AEAD_CTX_init` or `EVP_AEAD_CTX_init_with_direction` (both are hooked).
    Init,
}

impl AeadFn {
    pub fn label(self) -> &'static str {
        match self {
            Self::Seal => "EVP_AEAD_CTX_seal",
            Self::SealScatter => "EVP_AEAD_CTX_seal_scatter",
            Self::Open => "EVP_AEAD_CTX_open",
            Self::OpenGather => "EVP_AEAD_CTX_open_gather",
            Self::Init => "EVP_AEAD_CTX_init",
        }
    }

    /// eBPF programs at the function's entry, return probes first.
    fn programs(self) -> &'static [&'static str] {
        match self {
            Self::Seal => &["aead_seal_entry"],
            Self::SealScatter => &["aead_seal_scatter_entry"],
            Self::Open => &["aead_open_return", "aead_open_entry"],
            Self::OpenGather => &["aead_open_return", "aead_open_gather_entry"],
            Self::Init => &["aead_init_entry"],
        }
    }

    /// The function whose error sites carry these reasons, if any.
    fn classify(reasons: &[u32]) -> Option<Self> {
        let has = |r| reasons.contains(&r);
        if !has(reason::OUTPUT_ALIASES_INPUT) {
            return has(reason::UNSUPPORTED_KEY_SIZE).then_some(Self::Init);
        }
        if has(reason::TOO_LARGE) {
            Some(Self::Seal)
        } else if has(reason::BAD_DECRYPT) {
            // `open` inlines `open_gather`'s sites; BAD_DECRYPT is its own.
            Some(Self::Open)
        } else if has(reason::INVALID_OPERATION) {
            Some(Self::SealScatter)
        } else if has(reason::CTRL_NOT_IMPLEMENTED) {
            Some(Self::OpenGather)
        } else {
            None
        }
    }
}

/// Where aws-lc's AEAD functions are, as file offsets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AeadHooks {
    pub functions: Vec<(AeadFn, u64)>,
    /// How the function entries were found (for `llmtap targets`).
    pub entries_from: EntrySource,
}

/// Where function entries came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EntrySource {
    /// The `.eh_frame_hdr` search table.
    #[default]
    EhFrameHdr,
    /// Targets of direct calls.
    Calls,
}

impl AeadHooks {
    /// (eBPF program, file offset) pairs, return probes first.
    pub fn probes(&self) -> Vec<(&'static str, u64)> {
        let mut out = Vec::new();
        for &(function, offset) in &self.functions {
            out.extend(function.programs().iter().map(|p| (*p, offset)));
        }
        out
    }

    /// Names of the hooked functions (deduplicated), for logs.
    pub fn labels(&self) -> Vec<&'static str> {
        let mut labels: Vec<_> = self.functions.iter().map(|(f, _)| f.label()).collect();
        labels.dedup();
        labels
    }
}

/// The hooked function names behind (program, offset) pairs built by [`AeadHooks::probes`].
pub fn functions(probes: &[(&'static str, u64)]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for (program, _) in probes {
        let label = match *program {
            "aead_seal_entry" => AeadFn::Seal.label(),
            "aead_seal_scatter_entry" => AeadFn::SealScatter.label(),
            "aead_open_entry" => AeadFn::Open.label(),
            "aead_open_gather_entry" => AeadFn::OpenGather.label(),
            "aead_init_entry" => AeadFn::Init.label(),
            _ => continue,
        };
        if !out.contains(&label) {
            out.push(label);
        }
    }
    out
}

/// A loadable part of the file: virtual address, bytes, executable or not.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    pub address: u64,
    pub file_offset: u64,
    pub data: &'a [u8],
    pub executable: bool,
}

/// What the locator needs from a binary (a view built from an ELF file or, in tests, by hand).
#[derive(Clone, Debug, Default)]
pub struct Image<'a> {
    pub segments: Vec<Segment<'a>>,
    /// `.eh_frame_hdr`: its address and bytes.
    pub eh_frame_hdr: Option<(u64, &'a [u8])>,
}

impl<'a> Image<'a> {
    /// The view of a parsed ELF file: its PT_LOAD segments and `.eh_frame_hdr`.
    pub fn from_elf<R: object::ReadRef<'a>>(elf: &object::File<'a, R>) -> Self {
        let segments = elf
            .segments()
            .filter_map(|seg| {
                let data = seg.data().ok()?;
                let (file_offset, _) = seg.file_range();
                let executable = match seg.flags() {
                    object::SegmentFlags::Elf { p_flags } => p_flags & object::elf::PF_X != 0,
                    _ => false,
                };
                Some(Segment {
                    address: seg.address(),
                    file_offset,
                    data,
                    executable,
                })
            })
            .collect();
        let eh_frame_hdr = elf
            .section_by_name(".eh_frame_hdr")
            .and_then(|s| Some((s.address(), s.data().ok()?)));
        Self {
            segments,
            eh_frame_hdr,
        }
    }

    fn segment_at(&self, address: u64) -> Option<&Segment<'a>> {
        self.segments
            .iter()
            .find(|s| address >= s.address && address - s.address < s.data.len() as u64)
    }

    /// Bytes from `address` to the end of its segment.
    fn bytes_at(&self, address: u64) -> Option<&'a [u8]> {
        let seg = self.segment_at(address)?;
        seg.data.get(usize::try_from(address - seg.address).ok()?..)
    }

    /// File offset of a virtual address (what a uprobe is attached at).
    pub fn file_offset(&self, address: u64) -> Option<u64> {
        let seg = self.segment_at(address)?;
        seg.file_offset.checked_add(address - seg.address)
    }
}

/// One `OPENSSL_PUT_ERROR` in `aead.c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ErrorSite {
    /// Address of the `lea` of the source path.
    address: u64,
    reason: u32,
}

/// Finds aws-lc's AEAD functions in `image`. `Ok(None)`: the binary has no aws-lc `aead.c`
/// (not this method's business); `Err`: it has, but the functions cannot be told apart.
pub fn find_hooks(image: &Image<'_>) -> Result<Option<AeadHooks>, String> {
    let paths = source_path_ranges(image);
    if paths.is_empty() {
        return Ok(None);
    }
    let sites = error_sites(image, &paths)?;
    if sites.is_empty() {
        return Err("aws-lc found, but no code refers to its AEAD source path".to_string());
    }
    let (entries, entries_from) = match image.eh_frame_hdr.and_then(EhFrameTable::parse) {
        Some(table) => (
            sites
                .iter()
                .map(|s| table.entry_for(s.address))
                .collect::<Vec<_>>(),
            EntrySource::EhFrameHdr,
        ),
        None => {
            let calls = call_targets_near(image, &sites);
            (
                sites
                    .iter()
                    .map(|s| {
                        let i = calls.partition_point(|&c| c <= s.address);
                        i.checked_sub(1).map(|i| calls[i])
                    })
                    .collect(),
                EntrySource::Calls,
            )
        }
    };
    // Reasons per function entry.
    let mut by_entry: Vec<(u64, Vec<u32>)> = Vec::new();
    for (site, entry) in sites.iter().zip(entries) {
        let Some(entry) = entry else { continue };
        match by_entry.iter_mut().find(|(e, _)| *e == entry) {
            Some((_, reasons)) => reasons.push(site.reason),
            None => by_entry.push((entry, vec![site.reason])),
        }
    }
    let mut functions = Vec::new();
    for (entry, reasons) in &by_entry {
        if let Some(function) = AeadFn::classify(reasons) {
            // A probe must sit on an instruction boundary: decoding from the entry has to
            // land on the function's error sites.
            let first_site = sites
                .iter()
                .map(|s| s.address)
                .filter(|&a| a >= *entry)
                .min()
                .unwrap_or(*entry);
            if !decodes_to(image, *entry, first_site) {
                return Err(format!(
                    "{} candidate at {entry:#x} does not decode up to its error sites",
                    function.label()
                ));
            }
            let offset = image
                .file_offset(*entry)
                .ok_or_else(|| format!("{} at {entry:#x} is outside the file", function.label()))?;
            functions.push((function, offset));
        }
    }
    functions.sort();
    for f in [
        AeadFn::Seal,
        AeadFn::SealScatter,
        AeadFn::Open,
        AeadFn::OpenGather,
    ] {
        if functions.iter().filter(|(g, _)| *g == f).count() > 1 {
            return Err(format!(
                "aws-lc found, but {} is ambiguous (several functions match its error sites)",
                f.label()
            ));
        }
    }
    let has = |f| functions.iter().any(|(g, _)| *g == f);
    let seals = has(AeadFn::Seal) || has(AeadFn::SealScatter);
    let opens = has(AeadFn::Open) || has(AeadFn::OpenGather);
    if !seals || !opens {
        return Err(format!(
            "aws-lc found, but its AEAD {} function could not be identified from its error sites",
            if seals { "open" } else { "seal" }
        ));
    }
    Ok(Some(AeadHooks {
        functions,
        entries_from,
    }))
}

/// Address ranges where a pointer to a string ending in [`AEAD_SOURCE`] may point: from the
/// start of the path to the start of the suffix (linkers merge a string into a longer one
/// ending with it).
fn source_path_ranges(image: &Image<'_>) -> Vec<(u64, u64)> {
    let mut needle = AEAD_SOURCE.to_vec();
    needle.push(0);
    let finder = memchr::memmem::Finder::new(&needle);
    let mut out = Vec::new();
    for seg in image.segments.iter().filter(|s| !s.executable) {
        for at in finder.find_iter(seg.data) {
            let floor = at.saturating_sub(MAX_PATH_LEN);
            let start = seg.data[floor..at]
                .iter()
                .rposition(|&b| b == 0 || !b.is_ascii_graphic())
                .map_or(floor, |p| floor + p + 1);
            out.push((seg.address + start as u64, seg.address + at as u64));
            if out.len() >= 16 {
                return out;
            }
        }
    }
    out
}

/// Every `lea reg, [rip + disp32]` whose target lies in `paths`, with the reason code passed
/// next to it (sites that are not CIPHER errors, such as assertions, are left out).
fn error_sites(image: &Image<'_>, paths: &[(u64, u64)]) -> Result<Vec<ErrorSite>, String> {
    let mut sites = Vec::new();
    for seg in image.segments.iter().filter(|s| s.executable) {
        let code = seg.data;
        for p in memchr::memchr_iter(0x8d, code) {
            // REX.W (+R) 8D, ModRM mod=00 rm=101: lea r64, [rip + disp32].
            let (Some(&rex), Some(&modrm), Some(disp)) = (
                p.checked_sub(1).and_then(|i| code.get(i)),
                code.get(p + 1),
                code.get(p + 2..p + 6),
            ) else {
                continue;
            };
            if (rex != 0x48 && rex != 0x4c) || modrm & 0xc7 != 0x05 {
                continue;
            }
            let disp = i32::from_le_bytes([disp[0], disp[1], disp[2], disp[3]]);
            let end = seg.address + p as u64 + 6;
            let target = end.wrapping_add_signed(i64::from(disp));
            if !paths.iter().any(|&(lo, hi)| (lo..=hi).contains(&target)) {
                continue;
            }
            let address = end - 7;
            if let Some((lib, reason)) = site_constants(image, address)
                && lib == LIB_CIPHER
            {
                sites.push(ErrorSite { address, reason });
                if sites.len() > MAX_SITES {
                    return Err("aws-lc found, but too many references to aead.c".to_string());
                }
            }
        }
    }
    Ok(sites)
}

/// The library and reason constants loaded into EDI and EDX between the `lea` at `address`
/// and the call that follows (`mov r32, imm` or `push imm; pop r64`), following at most one
/// unconditional jump (compilers share the call between sites).
fn site_constants(image: &Image<'_>, address: u64) -> Option<(u32, u32)> {
    let mut lib = None;
    let mut reason = None;
    let mut pushed: Option<u64> = None;
    let mut ip = address;
    let mut jumped = false;
    let mut decoded = 0;
    'outer: loop {
        let bytes = image.bytes_at(ip)?;
        let bytes = &bytes[..bytes.len().min(SITE_WINDOW)];
        let mut decoder = Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE);
        while decoder.can_decode() {
            let insn = decoder.decode();
            decoded += 1;
            if insn.is_invalid() || decoded > SITE_INSTRUCTIONS {
                break 'outer;
            }
            let immediate = |op: u32| match insn.op_kind(op) {
                OpKind::Immediate8
                | OpKind::Immediate16
                | OpKind::Immediate32
                | OpKind::Immediate8to32
                | OpKind::Immediate8to64
                | OpKind::Immediate32to64
                | OpKind::Immediate64 => Some(insn.immediate(op)),
                _ => None,
            };
            let target_reg = |insn: &iced_x86::Instruction| match insn.op0_register() {
                Register::EDI | Register::RDI => Some(0),
                Register::EDX | Register::RDX => Some(1),
                _ => None,
            };
            match insn.mnemonic() {
                Mnemonic::Mov if insn.op_count() == 2 && insn.op0_kind() == OpKind::Register => {
                    if let (Some(which), Some(value)) = (target_reg(&insn), immediate(1)) {
                        let value = u32::try_from(value).ok()?;
                        if which == 0 {
                            lib = Some(value)
                        } else {
                            reason = Some(value)
                        }
                    }
                }
                Mnemonic::Xor
                    if insn.op_count() == 2
                        && insn.op0_kind() == OpKind::Register
                        && insn.op1_kind() == OpKind::Register
                        && insn.op0_register() == insn.op1_register() =>
                {
                    if let Some(which) = target_reg(&insn) {
                        if which == 0 {
                            lib = Some(0)
                        } else {
                            reason = Some(0)
                        }
                    }
                }
                Mnemonic::Push => pushed = immediate(0),
                Mnemonic::Pop => {
                    if let (Some(which), Some(value)) = (target_reg(&insn), pushed.take()) {
                        let value = u32::try_from(value).ok()?;
                        if which == 0 {
                            lib = Some(value)
                        } else {
                            reason = Some(value)
                        }
                    }
                }
                Mnemonic::Call => break 'outer,
                Mnemonic::Jmp
                    if !jumped
                        && insn.op0_kind() != OpKind::Register
                        && insn.op0_kind() != OpKind::Memory =>
                {
                    jumped = true;
                    ip = insn.near_branch_target();
                    continue 'outer;
                }
                Mnemonic::Jmp | Mnemonic::Ret => break 'outer,
                _ => {}
            }
            if lib.is_some() && reason.is_some() {
                break 'outer;
            }
        }
        break;
    }
    Some((lib?, reason?))
}

/// Whether linear decoding from `entry` reaches `site` exactly (within 64 KiB).
fn decodes_to(image: &Image<'_>, entry: u64, site: u64) -> bool {
    let Some(bytes) = image.bytes_at(entry) else {
        return false;
    };
    let Ok(span) = usize::try_from(site - entry) else {
        return false;
    };
    if span > 64 * 1024 {
        return false;
    }
    let bytes = &bytes[..bytes.len().min(span + 16)];
    let mut decoder = Decoder::with_ip(64, bytes, entry, DecoderOptions::NONE);
    while decoder.can_decode() {
        let insn = decoder.decode();
        if insn.is_invalid() {
            return false;
        }
        if insn.ip() == site {
            return true;
        }
        if insn.ip() > site {
            return false;
        }
    }
    false
}

/// `.eh_frame_hdr`'s binary search table (the usual encodings: `datarel|sdata4` entries).
struct EhFrameTable<'a> {
    base: u64,
    table: &'a [u8],
    count: usize,
}

impl<'a> EhFrameTable<'a> {
    fn parse((address, data): (u64, &'a [u8])) -> Option<Self> {
        let &[version, ptr_enc, count_enc, table_enc, ..] = data else {
            return None;
        };
        // eh_frame_ptr as (s|u)data4, count as udata4, table as datarel sdata4.
        if version != 1 || !matches!(ptr_enc & 0x0f, 0x03 | 0x0b) || count_enc != 0x03 {
            return None;
        }
        if table_enc != 0x3b {
            return None;
        }
        let count = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?) as usize;
        let table = data.get(12..)?;
        let count = count.min(table.len() / 8);
        Some(Self {
            base: address,
            table,
            count,
        })
    }

    fn start(&self, i: usize) -> u64 {
        let at = i * 8;
        let rel = i32::from_le_bytes([
            self.table[at],
            self.table[at + 1],
            self.table[at + 2],
            self.table[at + 3],
        ]);
        self.base.wrapping_add_signed(i64::from(rel))
    }

    /// Start of the function containing `address` (greatest start at or below it).
    fn entry_for(&self, address: u64) -> Option<u64> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.start(mid) <= address {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.start(i))
    }
}

/// Targets of `call rel32` in the executable segment holding the sites, within
/// [`CALL_WINDOW`] below the first site and up to the last, sorted and deduplicated.
fn call_targets_near(image: &Image<'_>, sites: &[ErrorSite]) -> Vec<u64> {
    let (Some(first), Some(last)) = (
        sites.iter().map(|s| s.address).min(),
        sites.iter().map(|s| s.address).max(),
    ) else {
        return Vec::new();
    };
    let low = first.saturating_sub(CALL_WINDOW);
    let mut out = Vec::new();
    for seg in image.segments.iter().filter(|s| s.executable) {
        let code = seg.data;
        for p in memchr::memchr_iter(0xe8, code) {
            let Some(rel) = code.get(p + 1..p + 5) else {
                continue;
            };
            let rel = i32::from_le_bytes([rel[0], rel[1], rel[2], rel[3]]);
            let target = (seg.address + p as u64 + 5).wrapping_add_signed(i64::from(rel));
            if (low..=last).contains(&target) {
                out.push(target);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RODATA: u64 = 0x1000;
    const TEXT: u64 = 0x10_000;

    /// Code for one error site at `at`: `lea rcx, [rip+path]`, `mov edi, 30`, `mov edx,
    /// reason`, `mov r8d, line`, `call err`.
    fn site(code: &mut Vec<u8>, path: u64, reason: u32, push_pop: bool) {
        let at = TEXT + code.len() as u64;
        let disp = (path as i64 - (at as i64 + 7)) as i32;
        code.extend_from_slice(&[0x48, 0x8d, 0x0d]);
        code.extend_from_slice(&disp.to_le_bytes());
        if push_pop {
            code.extend_from_slice(&[0x6a, 30, 0x5f]); // push 30; pop rdi
            code.extend_from_slice(&[0x6a, reason as u8, 0x5a]); // push reason; pop rdx
        } else {
            code.push(0xbf);
            code.extend_from_slice(&LIB_CIPHER.to_le_bytes());
            code.push(0xba);
            code.extend_from_slice(&reason.to_le_bytes());
        }
        code.extend_from_slice(&[0x41, 0xb8, 0x2a, 0, 0, 0]); // mov r8d, 42
        code.extend_from_slice(&[0xe8, 0, 0, 0x10, 0]); // call err (far above)
    }

    fn function(code: &mut Vec<u8>, path: u64, reasons: &[u32], push_pop: bool) -> u64 {
        while !code.len().is_multiple_of(16) {
            code.push(0xcc);
        }
        let entry = TEXT + code.len() as u64;
        code.extend_from_slice(&[0x55, 0x48, 0x89, 0xe5]); // push rbp; mov rbp, rsp
        for &r in reasons {
            site(code, path, r, push_pop);
        }
        code.extend_from_slice(&[0x5d, 0xc3]); // pop rbp; ret
        entry
    }

    fn rodata() -> Vec<u8> {
        let mut ro = vec![0u8; 0x40];
        ro.extend_from_slice(b"/aws-lc/crypto/fipsmodule/cipher/aead.c\0");
        ro.extend_from_slice(b"other\0");
        ro
    }

    /// `.eh_frame_hdr` listing `entries`.
    fn eh_frame_hdr(address: u64, entries: &[u64]) -> Vec<u8> {
        let mut hdr = vec![1, 0x1b, 0x03, 0x3b, 0, 0, 0, 0];
        hdr.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for &e in entries {
            hdr.extend_from_slice(&((e as i64 - address as i64) as i32).to_le_bytes());
            hdr.extend_from_slice(&0i32.to_le_bytes());
        }
        hdr
    }

    struct Built {
        ro: Vec<u8>,
        code: Vec<u8>,
        entries: Vec<u64>,
        path: u64,
    }

    fn build(push_pop: bool) -> Built {
        let ro = rodata();
        let path = RODATA + 0x40;
        let mut code = Vec::new();
        // init, seal, seal_scatter, open (with open_gather's sites inlined), open_gather.
        let entries = vec![
            function(&mut code, path, &[120, 124], push_pop),
            function(&mut code, path, &[117, 103, 115], push_pop),
            function(&mut code, path, &[112, 115], push_pop),
            function(&mut code, path, &[115, 101, 103, 115, 104], push_pop),
            function(&mut code, path, &[115, 104], push_pop),
        ];
        Built {
            ro,
            code,
            entries,
            path,
        }
    }

    fn image<'a>(b: &'a Built, hdr: Option<(u64, &'a [u8])>) -> Image<'a> {
        Image {
            segments: vec![
                Segment {
                    address: RODATA,
                    file_offset: RODATA,
                    data: &b.ro,
                    executable: false,
                },
                Segment {
                    address: TEXT,
                    // PIE layouts where virtual address and file offset differ.
                    file_offset: TEXT - 0x3000,
                    data: &b.code,
                    executable: true,
                },
            ],
            eh_frame_hdr: hdr,
        }
    }

    #[test]
    fn finds_functions_through_eh_frame_hdr() {
        let b = build(false);
        let hdr = eh_frame_hdr(0x8000, &b.entries);
        let hooks = find_hooks(&image(&b, Some((0x8000, &hdr))))
            .expect("ok")
            .expect("found");
        assert_eq!(hooks.entries_from, EntrySource::EhFrameHdr);
        let off = |i: usize| b.entries[i] - 0x3000;
        assert_eq!(
            hooks.functions,
            vec![
                (AeadFn::Seal, off(1)),
                (AeadFn::SealScatter, off(2)),
                (AeadFn::Open, off(3)),
                (AeadFn::OpenGather, off(4)),
                (AeadFn::Init, off(0)),
            ]
        );
        assert_eq!(
            hooks.probes()[..3],
            [
                ("aead_seal_entry", off(1)),
                ("aead_seal_scatter_entry", off(2)),
                ("aead_open_return", off(3)),
            ]
        );
        assert_eq!(
            functions(&hooks.probes()),
            [
                "EVP_AEAD_CTX_seal",
                "EVP_AEAD_CTX_seal_scatter",
                "EVP_AEAD_CTX_open",
                "EVP_AEAD_CTX_open_gather",
                "EVP_AEAD_CTX_init"
            ]
        );
        let _ = b.path;
    }

    #[test]
    fn finds_functions_through_calls_without_unwind_tables() {
        let mut b = build(true);
        // Callers of seal and open (direct calls), after the functions.
        for &target in &[b.entries[1], b.entries[3]] {
            let at = TEXT + b.code.len() as u64;
            b.code.push(0xe8);
            b.code
                .extend_from_slice(&((target as i64 - (at as i64 + 5)) as i32).to_le_bytes());
        }
        let hooks = find_hooks(&image(&b, None)).expect("ok").expect("found");
        assert_eq!(hooks.entries_from, EntrySource::Calls);
        let found: Vec<_> = hooks.functions.iter().map(|(f, _)| *f).collect();
        // Only seal and open are called directly; the others' sites fall to them and do not
        // change their classification.
        assert!(found.contains(&AeadFn::Seal), "{found:?}");
        assert!(found.contains(&AeadFn::Open), "{found:?}");
        let seal = hooks.functions.iter().find(|(f, _)| *f == AeadFn::Seal);
        assert_eq!(seal.map(|s| s.1), Some(b.entries[1] - 0x3000));
    }

    #[test]
    fn binaries_without_aws_lc_are_not_this_method() {
        let code = vec![0x90u8; 64];
        let ro = b"nothing here\0".to_vec();
        let img = Image {
            segments: vec![
                Segment {
                    address: RODATA,
                    file_offset: RODATA,
                    data: &ro,
                    executable: false,
                },
                Segment {
                    address: TEXT,
                    file_offset: TEXT,
                    data: &code,
                    executable: true,
                },
            ],
            eh_frame_hdr: None,
        };
        assert_eq!(find_hooks(&img), Ok(None));
    }

    #[test]
    fn unidentifiable_functions_are_an_error_with_a_reason() {
        // The path is there but only the init function refers to it.
        let ro = rodata();
        let mut code = Vec::new();
        let entry = function(&mut code, RODATA + 0x40, &[120], false);
        let b = Built {
            ro,
            code,
            entries: vec![entry],
            path: RODATA + 0x40,
        };
        let hdr = eh_frame_hdr(0x8000, &b.entries);
        let err = find_hooks(&image(&b, Some((0x8000, &hdr)))).expect_err("unidentified");
        assert!(err.contains("seal"), "{err}");
        // No reference at all.
        let b = Built {
            ro: rodata(),
            code: vec![0xc3; 32],
            entries: vec![TEXT],
            path: 0,
        };
        let err = find_hooks(&image(&b, None)).expect_err("no refs");
        assert!(err.contains("no code refers"), "{err}");
    }

    #[test]
    fn two_seal_candidates_are_ambiguous() {
        let mut b = build(false);
        b.entries
            .push(function(&mut b.code, b.path, &[117, 115], false));
        let hdr = eh_frame_hdr(0x8000, &b.entries);
        let err = find_hooks(&image(&b, Some((0x8000, &hdr)))).expect_err("ambiguous");
        assert!(err.contains("ambiguous"), "{err}");
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        // Truncated instructions at the end of the code, references past the segment,
        // malformed eh_frame_hdr.
        let ro = rodata();
        let mut code = Vec::new();
        let path = RODATA + 0x40;
        let at = TEXT;
        let disp = (path as i64 - (at as i64 + 7)) as i32;
        code.extend_from_slice(&[0x48, 0x8d, 0x0d]);
        code.extend_from_slice(&disp.to_le_bytes());
        code.extend_from_slice(&[0xba, 0x75]); // truncated mov edx
        let b = Built {
            ro,
            code,
            entries: vec![],
            path,
        };
        for hdr in [
            vec![],
            vec![1, 0x1b, 0x03, 0x3b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
            vec![9, 9, 9, 9],
        ] {
            let result = find_hooks(&image(&b, Some((0x8000, &hdr))));
            assert!(result.is_err(), "{result:?}");
        }
        let code = [0x4c, 0x8d];
        let img = Image {
            segments: vec![Segment {
                address: 0,
                file_offset: 0,
                data: &code,
                executable: true,
            }],
            eh_frame_hdr: None,
        };
        assert_eq!(find_hooks(&img), Ok(None));
    }

    /// Against a real binary: `LLMTAP_CODEX_BIN` (Codex CLI, `.eh_frame_hdr`) or
    /// `LLMTAP_DENO_BIN` (Deno, no unwind tables).
    #[test]
    fn real_binaries_when_given() {
        for var in ["LLMTAP_CODEX_BIN", "LLMTAP_DENO_BIN"] {
            let Some(path) = std::env::var_os(var) else {
                continue;
            };
            let file = std::fs::File::open(&path).expect("open");
            // SAFETY: read-only private mapping of a file nobody truncates during the test.
            let map = unsafe { memmap2::Mmap::map(&file) }.expect("map");
            let elf = object::File::parse(&*map).expect("parse");
            let started = std::time::Instant::now();
            let hooks = find_hooks(&Image::from_elf(&elf))
                .expect("identified")
                .expect("aws-lc present");
            eprintln!("{var}: {hooks:?} in {:?}", started.elapsed());
            let has = |f| hooks.functions.iter().any(|(g, _)| *g == f);
            assert!(has(AeadFn::Seal) && has(AeadFn::Open), "{hooks:?}");
        }
    }
}
