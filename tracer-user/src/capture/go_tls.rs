//! Go's `crypto/tls`: where to hook `(*Conn).Write`, `(*Conn).Read` and `(*Conn).Close` in a
//! Go binary, and attaching the probes.
//!
//! Functions are found in the ELF symbol table (`.symtab`), or in the Go runtime's own function
//! table (`.gopclntab`, kept by `go build -ldflags=-s`) when the binary is stripped. `Write` is
//! captured at entry; `Read`'s return probes go on every `RET` instruction of the function,
//! found by disassembling it (uretprobes corrupt Go's movable goroutine stacks); see
//! `tracer-ebpf/src/go_tls.rs`.
//! Only Go ≥ 1.17 on x86-64 is hooked: earlier versions pass arguments on the stack.

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

pub const WRITE_SYMBOL: &str = "crypto/tls.(*Conn).Write";
pub const READ_SYMBOL: &str = "crypto/tls.(*Conn).Read";
pub const CLOSE_SYMBOL: &str = "crypto/tls.(*Conn).Close";

/// eBPF programs of the Go path (loaded with the others at start).
pub const PROGRAMS: &[&str] = &[
    "go_tls_write_entry",
    "go_tls_read_entry",
    "go_tls_read_return",
    "go_tls_close_entry",
];

/// Oldest Go release with the register-based calling convention on amd64.
const MIN_GO_MINOR: u32 = 17;

/// Where the functions were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolSource {
    Symtab,
    Pclntab,
}

/// One function to hook: file offsets of its entry and of each `RET`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoFunction {
    pub entry: u64,
    pub returns: Vec<u64>,
}

/// File offsets of the `crypto/tls` hook points in one Go binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoTlsHooks {
    /// Entry of `(*Conn).Write` (captured at entry, so its returns are not needed).
    pub write: u64,
    pub read: GoFunction,
    /// Entry of `(*Conn).Close` (absent if the linker dropped it as unused).
    pub close: Option<u64>,
    pub source: SymbolSource,
}

impl GoTlsHooks {
    /// (program, file offset) pairs, return probes first: a return with no recorded entry is
    /// ignored, whereas an entry whose returns are not hooked yet would leave a stale slot.
    pub fn probes(&self) -> Vec<(&'static str, u64)> {
        let mut probes = Vec::new();
        probes.extend(self.read.returns.iter().map(|&o| ("go_tls_read_return", o)));
        probes.push(("go_tls_write_entry", self.write));
        probes.push(("go_tls_read_entry", self.read.entry));
        probes.extend(self.close.map(|o| ("go_tls_close_entry", o)));
        probes
    }
}

/// Names of the functions that `probes` (from [`GoTlsHooks::probes`]) hook, for logs.
pub fn functions(probes: &[(&'static str, u64)]) -> Vec<&'static str> {
    let mut names = vec![WRITE_SYMBOL, READ_SYMBOL];
    if probes
        .iter()
        .any(|(program, _)| *program == "go_tls_close_entry")
    {
        names.push(CLOSE_SYMBOL);
    }
    names
}

/// Parses `go1.21.3` (also `go1.22rc1`, `go1.23.0 X:boringcrypto`) into (major, minor).
pub fn parse_go_version(version: &str) -> Option<(u32, u32)> {
    let rest = version.strip_prefix("go")?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Finds the hook points in a Go binary whose toolchain version is `go_version` (from the
/// build info). `Err` says why the binary cannot be hooked, for `llmtap targets`.
pub fn find_hooks<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    go_version: &str,
) -> Result<GoTlsHooks, String> {
    if elf.architecture() != object::Architecture::X86_64 {
        return Err(format!(
            "crypto/tls hooks support x86-64 only, not {:?}",
            elf.architecture()
        ));
    }
    match parse_go_version(go_version) {
        Some((1, minor)) if minor < MIN_GO_MINOR => {
            return Err(format!(
                "{go_version} passes arguments on the stack; crypto/tls hooks need Go >= 1.{MIN_GO_MINOR}"
            ));
        }
        // Without a version the calling convention is unknown: refuse rather than read
        // registers that may not hold the arguments.
        None => return Err(format!("unknown Go version {go_version:?}")),
        Some(_) => {}
    }
    let (ranges, source) = match symtab_ranges(elf) {
        Some(ranges) => (ranges, SymbolSource::Symtab),
        None => match pclntab_ranges(elf) {
            Some(ranges) => (ranges, SymbolSource::Pclntab),
            None => {
                return Err(if elf.symbol_table().is_some() || pclntab_readable(elf) {
                    "no crypto/tls.(*Conn).Write/Read (the program does no TLS, or they were inlined away)".to_string()
                } else if elf.section_by_name(".gopclntab").is_some() {
                    "stripped, and its .gopclntab predates Go 1.18 (not read)".to_string()
                } else {
                    "stripped, and no .gopclntab to find crypto/tls in".to_string()
                });
            }
        },
    };
    let function = |name: &str, (start, end): (u64, u64)| -> Result<GoFunction, String> {
        let (code, entry) = code_at(elf, start, end)
            .ok_or_else(|| format!("{name}: address {start:#x} is not in the file"))?;
        let returns = ret_offsets(code, start)
            .into_iter()
            .map(|rel| entry + rel)
            .collect::<Vec<_>>();
        if returns.is_empty() {
            return Err(format!("{name}: no RET instruction found"));
        }
        Ok(GoFunction { entry, returns })
    };
    let (write_start, write_end) = ranges.write;
    let (_, write) = code_at(elf, write_start, write_end)
        .ok_or_else(|| format!("{WRITE_SYMBOL}: address {write_start:#x} is not in the file"))?;
    let read = function(READ_SYMBOL, ranges.read)?;
    let close = ranges
        .close
        .and_then(|(start, end)| code_at(elf, start, end))
        .map(|(_, entry)| entry);
    Ok(GoTlsHooks {
        write,
        read,
        close,
        source,
    })
}

/// Virtual address ranges `[start, end)` of the functions.
struct Ranges {
    write: (u64, u64),
    read: (u64, u64),
    close: Option<(u64, u64)>,
}

fn symtab_ranges<'data, R: object::ReadRef<'data>>(elf: &object::File<'data, R>) -> Option<Ranges> {
    let (mut write, mut read, mut close) = (None, None, None);
    for sym in elf.symbols() {
        if !sym.is_definition() || sym.size() == 0 {
            continue;
        }
        let slot = match sym.name_bytes() {
            Ok(name) if name == WRITE_SYMBOL.as_bytes() => &mut write,
            Ok(name) if name == READ_SYMBOL.as_bytes() => &mut read,
            Ok(name) if name == CLOSE_SYMBOL.as_bytes() => &mut close,
            _ => continue,
        };
        let start = sym.address();
        *slot = Some((start, start.checked_add(sym.size())?));
    }
    Some(Ranges {
        write: write?,
        read: read?,
        close,
    })
}

/// Whether the binary has a `.gopclntab` in a layout [`pclntab_ranges`] reads.
fn pclntab_readable<'data, R: object::ReadRef<'data>>(elf: &object::File<'data, R>) -> bool {
    elf.section_by_name(".gopclntab")
        .and_then(|s| s.data().ok())
        .and_then(|d| d.get(..4))
        .is_some_and(|m| {
            matches!(
                u32::from_le_bytes([m[0], m[1], m[2], m[3]]),
                0xffff_fff0 | 0xffff_fff1
            )
        })
}

/// Looks the functions up in `.gopclntab` (Go ≥ 1.18 layout, magic 0xfffffff0 / 0xfffffff1).
/// A function ends where the next one in the (sorted) table starts.
fn pclntab_ranges<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
) -> Option<Ranges> {
    let data = elf.section_by_name(".gopclntab")?.data().ok()?;
    let u32_at = |off: usize| -> Option<u32> {
        Some(u32::from_le_bytes(data.get(off..off + 4)?.try_into().ok()?))
    };
    let word_at = |off: usize| -> Option<u64> {
        Some(u64::from_le_bytes(data.get(off..off + 8)?.try_into().ok()?))
    };
    let magic = u32_at(0)?;
    if !matches!(magic, 0xffff_fff0 | 0xffff_fff1) || data.get(7) != Some(&8) {
        return None;
    }
    let nfunc = usize::try_from(word_at(8)?).ok()?;
    let mut text_start = word_at(24)?;
    if text_start == 0 {
        // Position-independent builds leave it to a relocation: Go's text starts .text.
        text_start = elf.section_by_name(".text")?.address();
    }
    let funcnames = usize::try_from(word_at(32)?).ok()?;
    let pcln = usize::try_from(word_at(64)?).ok()?;
    // functab: nfunc + 1 entries of (entry offset, _func offset), both u32.
    if nfunc.checked_add(1)?.checked_mul(8)?.checked_add(pcln)? > data.len() {
        return None;
    }
    let name_of = |index: usize| -> Option<&[u8]> {
        let func = pcln.checked_add(usize::try_from(u32_at(pcln + index * 8 + 4)?).ok()?)?;
        // _func { entryOff uint32; nameOff int32; ... }
        let name_off = usize::try_from(u32_at(func + 4)?).ok()?;
        let start = funcnames.checked_add(name_off)?;
        let bytes = data.get(start..)?;
        let len = memchr::memchr(0, bytes)?;
        Some(&bytes[..len])
    };
    let (mut write, mut read, mut close) = (None, None, None);
    for index in 0..nfunc {
        let slot = match name_of(index) {
            Some(name) if name == WRITE_SYMBOL.as_bytes() => &mut write,
            Some(name) if name == READ_SYMBOL.as_bytes() => &mut read,
            Some(name) if name == CLOSE_SYMBOL.as_bytes() => &mut close,
            _ => continue,
        };
        let start = text_start.checked_add(u64::from(u32_at(pcln + index * 8)?))?;
        let end = text_start.checked_add(u64::from(u32_at(pcln + (index + 1) * 8)?))?;
        if end > start {
            *slot = Some((start, end));
        }
    }
    Some(Ranges {
        write: write?,
        read: read?,
        close,
    })
}

/// The bytes of `[start, end)` and the file offset of `start`.
fn code_at<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    start: u64,
    end: u64,
) -> Option<(&'data [u8], u64)> {
    let section = elf.sections().find(|s| {
        s.address() <= start && end <= s.address().saturating_add(s.size()) && s.size() > 0
    })?;
    let (file_offset, _) = section.file_range()?;
    let data = section.data().ok()?;
    let rel = usize::try_from(start - section.address()).ok()?;
    let len = usize::try_from(end - start).ok()?;
    let code = data.get(rel..rel.checked_add(len)?)?;
    Some((code, file_offset + rel as u64))
}

/// Offsets (from the function start) of every `RET` in `code`, decoded linearly: Go places no
/// data inside functions, only `INT3` padding after them.
pub fn ret_offsets(code: &[u8], address: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut rets = Vec::new();
    while decoder.can_decode() {
        let instruction = decoder.decode();
        if instruction.mnemonic() == Mnemonic::Ret {
            rets.push(instruction.ip() - address);
        }
    }
    rets
}

/// Go version from a pre-1.18 `.go.buildinfo` (pointer format): the header holds the address
/// of a Go string header (pointer, length) naming the version.
pub fn go_version_from_pointers<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    buildinfo: &[u8],
) -> Option<String> {
    let ptr_size = usize::from(*buildinfo.get(14)?);
    let big_endian = buildinfo.get(15)? & 1 != 0;
    if ptr_size != 8 || big_endian {
        return None;
    }
    let word = |bytes: &[u8]| Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?));
    let header_addr = word(buildinfo.get(16..)?)?;
    let header = bytes_at(elf, header_addr, 16)?;
    let (ptr, len) = (word(header)?, word(header.get(8..)?)?);
    if len == 0 || len > 64 {
        return None;
    }
    let version = std::str::from_utf8(bytes_at(elf, ptr, len)?).ok()?;
    version.starts_with("go").then(|| version.to_string())
}

fn bytes_at<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    address: u64,
    len: u64,
) -> Option<&'data [u8]> {
    let end = address.checked_add(len)?;
    code_at(elf, address, end).map(|(bytes, _)| bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_go_version("go1.19.8"), Some((1, 19)));
        assert_eq!(parse_go_version("go1.22rc1"), Some((1, 22)));
        assert_eq!(parse_go_version("go1.23.0 X:boringcrypto"), Some((1, 23)));
        assert_eq!(parse_go_version("devel +abc"), None);
        assert_eq!(parse_go_version("unknown"), None);
    }

    #[test]
    fn finds_every_ret() {
        // mov eax,1; ret; cmp rax,0; je -; ret 8 (imm16); int3 padding.
        let code = [
            0xb8, 1, 0, 0, 0,    // mov eax, 1
            0xc3, // ret
            0x48, 0x83, 0xf8, 0x00, // cmp rax, 0
            0xc2, 0x08, 0x00, // ret 8
            0xcc, 0xcc, // int3 padding
        ];
        assert_eq!(ret_offsets(&code, 0x401000), vec![5, 10]);
        // A 0xc3 byte inside an immediate is not a RET.
        let code = [0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3];
        assert_eq!(ret_offsets(&code, 0), vec![5]);
        // Truncated garbage decodes as invalid instructions, never panics.
        assert!(ret_offsets(&[0x0f], 0).is_empty());
    }

    #[test]
    fn a_non_go_binary_has_no_hooks() {
        let exe = std::env::current_exe().expect("exe");
        let data = std::fs::read(exe).expect("read self");
        let elf = object::File::parse(&*data).expect("parse self");
        assert!(find_hooks(&elf, "go1.19.8").is_err());
        assert!(
            find_hooks(&elf, "go1.16.3")
                .unwrap_err()
                .contains(">= 1.17")
        );
    }
}
