//! rustls: finding the plaintext functions of Rust binaries by their (demangled) symbols, the
//! probes that go on them, and giving both directions of one connection the same identity.
//!
//! rustls has no C ABI; llmtap hooks (see `tracer-ebpf/src/rustls.rs`):
//! `<Writer as io::Write>::write` / `write_vectored` (requests), `<Reader as io::Read>::read`
//! (sync readers) and `Reader::into_first_chunk` + `<Reader as io::BufRead>::consume` (how
//! tokio-rustls, hence hyper and reqwest, reads), and the drop glue of the connection (its end:
//! the allocator may give its address to the next connection). They are found in `.symtab` after demangling
//! (legacy and v0 mangling), so a stripped binary cannot be hooked: discovery says so instead
//! of guessing. Functions the optimizer inlined into every caller leave nothing to hook
//! either; discovery then reports the binary as not hookable.

use std::collections::{BTreeMap, HashMap};

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};
use tracer_common::rustls_conn;

use super::event::CaptureEvent;

/// A hooked rustls function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RustlsFn {
    Write,
    WriteVectored,
    Read,
    IntoFirstChunk,
    Consume,
    /// `core::ptr::drop_in_place` of `ConnectionCommon<_>`, `ClientConnection` or
    /// `ServerConnection`.
    Drop,
}

impl RustlsFn {
    /// Name shown in logs and listings.
    pub fn label(self) -> &'static str {
        match self {
            RustlsFn::Write => "rustls Writer::write",
            RustlsFn::WriteVectored => "rustls Writer::write_vectored",
            RustlsFn::Read => "rustls Reader::read",
            RustlsFn::IntoFirstChunk => "rustls Reader::into_first_chunk",
            RustlsFn::Consume => "rustls Reader::consume",
            RustlsFn::Drop => "rustls connection drop",
        }
    }

    fn from_label(label: &str) -> Option<Self> {
        [
            RustlsFn::Write,
            RustlsFn::WriteVectored,
            RustlsFn::Read,
            RustlsFn::IntoFirstChunk,
            RustlsFn::Consume,
            RustlsFn::Drop,
        ]
        .into_iter()
        .find(|f| f.label() == label)
    }

    /// eBPF programs for this function, return probe first (a return without a recorded
    /// entry is ignored; an entry without its return would leave a stale in-flight slot).
    fn programs(self) -> &'static [&'static str] {
        match self {
            RustlsFn::Write => &["rustls_io_return", "rustls_write_entry"],
            RustlsFn::WriteVectored => &["rustls_io_return", "rustls_write_vectored_entry"],
            RustlsFn::Read => &["rustls_io_return", "rustls_read_entry"],
            RustlsFn::IntoFirstChunk => &["rustls_chunk_return", "rustls_chunk_entry"],
            RustlsFn::Consume => &["rustls_consume_entry"],
            RustlsFn::Drop => &["rustls_conn_drop_entry"],
        }
    }
}

/// The eBPF programs of the rustls hooks (loaded with the others at start).
pub const PROGRAMS: &[&str] = &[
    "rustls_write_entry",
    "rustls_write_vectored_entry",
    "rustls_read_entry",
    "rustls_io_return",
    "rustls_chunk_entry",
    "rustls_chunk_return",
    "rustls_consume_entry",
    "rustls_conn_drop_entry",
];

/// What a binary offers for rustls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RustlsScan {
    /// File offsets of the hookable functions found (labels of [`RustlsFn`]); empty unless
    /// both directions can be hooked.
    pub hooks: Vec<(&'static str, u64)>,
    /// Why the binary uses rustls but cannot be hooked, if so.
    pub unhookable: Option<String>,
}

/// Classifies a demangled symbol (without hash) as one of the hooked functions.
pub fn classify(demangled: &str) -> Option<RustlsFn> {
    let name = strip_lifetime_args(demangled);
    if let Some(dropped) = name.strip_prefix("core::ptr::drop_in_place") {
        return is_connection_type(dropped).then_some(RustlsFn::Drop);
    }
    if let Some(rest) = name.strip_prefix('<') {
        // `<rustls::…::Writer as std::io::Write>::write`, or v0's `<rustls::…::Reader>::m`.
        let (ty, method) = rest.split_once(">::")?;
        let (ty, trait_) = match ty.split_once(" as ") {
            Some((ty, trait_)) => (ty, Some(trait_)),
            None => (ty, None),
        };
        if !ty.starts_with("rustls::") {
            return None;
        }
        let ty = ty.rsplit("::").next()?;
        return match (ty, trait_, method) {
            ("Writer", Some("std::io::Write"), "write") => Some(RustlsFn::Write),
            ("Writer", Some("std::io::Write"), "write_vectored") => Some(RustlsFn::WriteVectored),
            ("Reader", Some("std::io::Read"), "read") => Some(RustlsFn::Read),
            ("Reader", Some("std::io::BufRead"), "consume") => Some(RustlsFn::Consume),
            ("Reader", None, "into_first_chunk") => Some(RustlsFn::IntoFirstChunk),
            _ => None,
        };
    }
    // Legacy mangling of an inherent method: `rustls::conn::connection::Reader::into_first_chunk`.
    let path = name.strip_prefix("rustls::")?;
    path.ends_with("::Reader::into_first_chunk")
        .then_some(RustlsFn::IntoFirstChunk)
}

/// Whether `<T>` (legacy demangling) or `::<T>` (v0) names a whole rustls connection, whose
/// address is the one its `Writer`s carry: `ConnectionCommon<_>`, or `ClientConnection` /
/// `ServerConnection` (a `ConnectionCommon` and nothing else).
fn is_connection_type(generic: &str) -> bool {
    let generic = generic.strip_prefix("::").unwrap_or(generic);
    let Some(ty) = generic.strip_prefix('<').and_then(|t| t.strip_suffix('>')) else {
        return false;
    };
    if !ty.starts_with("rustls::") {
        return false;
    }
    let path = ty.split_once('<').map_or(ty, |(path, _)| path);
    matches!(
        path.rsplit("::").next(),
        Some("ConnectionCommon" | "ClientConnection" | "ServerConnection")
    )
}

/// Drops generic argument lists that hold only lifetimes (`Reader<'_>` → `Reader`).
fn strip_lifetime_args(name: &str) -> std::borrow::Cow<'_, str> {
    if !name.contains("<'") {
        return name.into();
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find("<'") {
        let after = &rest[at + 1..];
        match after.find('>') {
            Some(end)
                if after[..end].chars().all(|c| {
                    c == '\'' || c == '_' || c == ',' || c == ' ' || c.is_alphanumeric()
                }) =>
            {
                out.push_str(&rest[..at]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str(&rest[..at + 2]);
                rest = &rest[at + 2..];
            }
        }
    }
    out.push_str(rest);
    out.into()
}

/// Scans an executable's symbols (and, when it has none, its read-only data) for rustls.
pub fn scan<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    file_offset: impl Fn(&object::Symbol<'data, '_, R>) -> Option<u64>,
) -> RustlsScan {
    let mut found: BTreeMap<RustlsFn, Vec<u64>> = BTreeMap::new();
    let mut mentions_rustls = false;
    for sym in elf.symbols() {
        let Ok(raw) = sym.name_bytes() else { continue };
        // Both manglings spell the crate name out (`6rustls`); skip the rest cheaply.
        if !contains(raw, b"rustls") {
            continue;
        }
        mentions_rustls = true;
        if !sym.is_definition() || sym.kind() != SymbolKind::Text {
            continue;
        }
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        let demangled = format!("{:#}", rustc_demangle::demangle(name));
        let Some(function) = classify(&demangled) else {
            continue;
        };
        if let Some(offset) = file_offset(&sym) {
            let offsets = found.entry(function).or_default();
            if !offsets.contains(&offset) {
                offsets.push(offset);
            }
        }
    }
    if !mentions_rustls {
        if elf.symbol_table().is_none() && rodata_mentions_rustls(elf) {
            return RustlsScan {
                hooks: Vec::new(),
                unhookable: Some(
                    "Rust binary using rustls, stripped of its symbol table: rustls hooks need \
                     .symtab (build with strip = false)"
                        .to_string(),
                ),
            };
        }
        return RustlsScan::default();
    }
    let has = |f: RustlsFn| found.contains_key(&f);
    let writes = has(RustlsFn::Write) || has(RustlsFn::WriteVectored);
    let reads = has(RustlsFn::Read) || (has(RustlsFn::IntoFirstChunk) && has(RustlsFn::Consume));
    if !writes || !reads {
        if found.is_empty() && !mentions_rustls_crate_code(elf) {
            // Only a name mentioning rustls (a dependency's type, say): not a rustls user.
            return RustlsScan::default();
        }
        return RustlsScan {
            hooks: Vec::new(),
            unhookable: Some(format!(
                "uses rustls, but its plaintext {} functions are not in the symbol table \
                 (inlined by the optimizer?)",
                match (writes, reads) {
                    (false, false) => "read and write",
                    (false, true) => "write",
                    _ => "read",
                }
            )),
        };
    }
    let hooks = found
        .into_iter()
        .flat_map(|(f, offsets)| offsets.into_iter().map(move |o| (f.label(), o)))
        .collect();
    RustlsScan {
        hooks,
        unhookable: None,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// Whether the binary defines functions of the rustls crate itself (`_ZN6rustls…`, v0
/// `…6rustls…`), as opposed to merely naming it.
fn mentions_rustls_crate_code<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
) -> bool {
    elf.symbols().any(|sym| {
        sym.kind() == SymbolKind::Text
            && sym.is_definition()
            && sym
                .name_bytes()
                .is_ok_and(|n| n.starts_with(b"_ZN6rustls") || contains(n, b"6rustls"))
    })
}

/// Whether `.rodata` holds rustls's source paths (panic locations survive stripping).
fn rodata_mentions_rustls<'data, R: object::ReadRef<'data>>(elf: &object::File<'data, R>) -> bool {
    let Some(section) = elf.section_by_name(".rodata") else {
        return false;
    };
    let Ok(data) = section.data() else {
        return false;
    };
    contains(data, b"/rustls-0.") || contains(data, b"rustls/src/")
}

/// (program, file offset) pairs to attach for the hooks discovery found, return probes
/// first; labels that are not rustls functions are ignored.
pub fn probes(hooks: &[(&'static str, u64)]) -> Vec<(&'static str, u64)> {
    let mut out = Vec::new();
    for &(label, offset) in hooks {
        if let Some(function) = RustlsFn::from_label(label) {
            out.extend(function.programs().iter().map(|p| (*p, offset)));
        }
    }
    out
}

/// How far above a connection's start its `received_plaintext` buffer may lie: more than the
/// size of rustls's `ConnectionCommon` (under 2 KiB in 0.23), less than the distance between
/// two live connections.
const MAX_READER_OFFSET: u64 = 16 * 1024;
/// Connections remembered per process (least recently written forgotten first).
const MAX_WRITERS_PER_PROCESS: usize = 4096;
/// Processes remembered (exit events free them; this bounds a missed exit).
const MAX_PROCESSES: usize = 16384;

#[derive(Debug, Default)]
struct ProcessConnections {
    /// Connection address → what is known of the connection (and of the last one that had
    /// this address).
    writers: BTreeMap<u64, WriterState>,
    /// Distance reader − writer, learned from the first pairing (constant per binary).
    reader_offset: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct WriterState {
    /// Sequence number of its last write.
    sequence: u64,
    /// End of the read stream in the kernel's numbering, as far as records went.
    read_end: u64,
    /// Kernel position at which this connection's read stream starts. A dropped connection's
    /// writer stream ends in the kernel, but its reader (another address, found only here)
    /// keeps counting: the next connection at this address reads on from there.
    read_base: u64,
}

/// Gives rustls reads and writes of one connection the same identity: a write names the
/// connection (`ConnectionCommon`), a read the plaintext buffer inside it, at a fixed
/// distance above. A read is paired with the connection at the learned distance, else with
/// the nearest connection below it within [`MAX_READER_OFFSET`]. When a connection is dropped
/// (its `CLOSE` record), reads of the next connection at its address are renumbered from its
/// start. Records of other TLS libraries pass through untouched.
#[derive(Debug, Default)]
pub struct ConnectionPairing {
    processes: HashMap<u32, ProcessConnections>,
    sequence: u64,
    /// Reads that matched no known connection (their writes were not seen).
    pub unpaired_reads: u64,
}

impl ConnectionPairing {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rewrites a rustls record's connection id to its pairing key; forgets a process's
    /// connections when it exits.
    pub fn resolve(&mut self, event: &mut CaptureEvent) {
        match event {
            CaptureEvent::Data(data) => {
                let tag = data.conn.conn & rustls_conn::TAG_MASK;
                if tag == 0 || tracer_common::plain::is_socket_conn(data.conn.conn) {
                    return; // not rustls (a plain TCP socket is a kernel address)
                }
                let address = data.conn.conn & !rustls_conn::TAG_MASK;
                data.conn.conn = if tag == rustls_conn::WRITER_TAG {
                    self.note_writer(data.conn.pid, address);
                    address
                } else {
                    match self.pair_reader(data.conn.pid, address) {
                        Some(writer) => {
                            data.stream_pos = self.renumber_read(
                                data.conn.pid,
                                writer,
                                data.stream_pos,
                                data.call_len,
                            );
                            writer
                        }
                        None => address,
                    }
                };
            }
            // A socket tied to a rustls writer (its first TLS send followed a write).
            CaptureEvent::ConnectionInfo { conn, .. }
                if conn.conn & rustls_conn::TAG_MASK == rustls_conn::WRITER_TAG =>
            {
                conn.conn &= !rustls_conn::TAG_MASK;
            }
            // A dropped connection (the kernel ended its write stream).
            CaptureEvent::Closed { conn, .. }
                if conn.conn & rustls_conn::TAG_MASK == rustls_conn::WRITER_TAG
                    && !tracer_common::plain::is_socket_conn(conn.conn) =>
            {
                conn.conn &= !rustls_conn::TAG_MASK;
                if let Some(state) = self
                    .processes
                    .get_mut(&conn.pid)
                    .and_then(|p| p.writers.get_mut(&conn.conn))
                {
                    state.read_base = state.read_end;
                }
            }
            CaptureEvent::ProcessExit { pid, .. } => {
                self.processes.remove(pid);
            }
            _ => {}
        }
    }

    fn process(&mut self, pid: u32) -> &mut ProcessConnections {
        if self.processes.len() >= MAX_PROCESSES && !self.processes.contains_key(&pid) {
            self.processes.clear();
        }
        self.processes.entry(pid).or_default()
    }

    fn note_writer(&mut self, pid: u32, address: u64) {
        self.sequence += 1;
        let sequence = self.sequence;
        let process = self.process(pid);
        process.writers.entry(address).or_default().sequence = sequence;
        if process.writers.len() > MAX_WRITERS_PER_PROCESS
            && let Some((&oldest, _)) = process.writers.iter().min_by_key(|(_, w)| w.sequence)
        {
            process.writers.remove(&oldest);
        }
    }

    /// The connection a read of plaintext buffer `reader` belongs to, if its writes were seen.
    fn pair_reader(&mut self, pid: u32, reader: u64) -> Option<u64> {
        let Some(process) = self.processes.get_mut(&pid) else {
            self.unpaired_reads += 1;
            return None;
        };
        if let Some(offset) = process.reader_offset
            && let Some(writer) = reader.checked_sub(offset)
            && process.writers.contains_key(&writer)
        {
            return Some(writer);
        }
        let lowest = reader.saturating_sub(MAX_READER_OFFSET);
        match process.writers.range(lowest..=reader).next_back() {
            Some((&writer, _)) => {
                if process.reader_offset.is_none() {
                    process.reader_offset = Some(reader - writer);
                }
                Some(writer)
            }
            None => {
                self.unpaired_reads += 1;
                None
            }
        }
    }

    /// A read record's position in the read stream of the connection now at `writer`: the
    /// kernel's position minus where that connection's reads started.
    fn renumber_read(&mut self, pid: u32, writer: u64, stream_pos: u64, call_len: u64) -> u64 {
        let Some(state) = self
            .processes
            .get_mut(&pid)
            .and_then(|p| p.writers.get_mut(&writer))
        else {
            return stream_pos;
        };
        if stream_pos < state.read_base {
            // The kernel restarted this reader's numbering (its entry aged out).
            state.read_base = 0;
            state.read_end = 0;
        }
        state.read_end = state.read_end.max(stream_pos.saturating_add(call_len));
        stream_pos - state.read_base
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::event::{Comm, ConnectionId, DataEvent, Direction};

    #[test]
    fn classifies_legacy_and_v0_names() {
        // Legacy mangling as rustc emits it (the first four as in a reqwest 0.13 binary,
        // rustls 0.23; the read as in rustls 0.21, whose types lived in `rustls::conn`).
        let cases = [
            (
                "_ZN66$LT$rustls..conn..connection..Writer$u20$as$u20$std..io..Write$GT$5write17h0123456789abcdefE",
                Some(RustlsFn::Write),
            ),
            (
                "_ZN66$LT$rustls..conn..connection..Writer$u20$as$u20$std..io..Write$GT$14write_vectored17h0123456789abcdefE",
                Some(RustlsFn::WriteVectored),
            ),
            (
                "_ZN6rustls4conn10connection6Reader16into_first_chunk17h0123456789abcdefE",
                Some(RustlsFn::IntoFirstChunk),
            ),
            (
                "_ZN68$LT$rustls..conn..connection..Reader$u20$as$u20$std..io..BufRead$GT$7consume17h0123456789abcdefE",
                Some(RustlsFn::Consume),
            ),
            (
                "_ZN53$LT$rustls..conn..Reader$u20$as$u20$std..io..Read$GT$4read17h0123456789abcdefE",
                Some(RustlsFn::Read),
            ),
            (
                "_ZN66$LT$rustls..conn..connection..Writer$u20$as$u20$std..io..Write$GT$5flush17h0123456789abcdefE",
                None,
            ),
            (
                "_ZN51$LT$tokio..io..Writer$u20$as$u20$std..io..Write$GT$5write17h0123456789abcdefE",
                None,
            ),
        ];
        for (mangled, want) in cases {
            let demangled = format!("{:#}", rustc_demangle::demangle(mangled));
            assert_eq!(classify(&demangled), want, "{mangled} → {demangled}");
        }
    }

    #[test]
    fn classifies_v0_shapes() {
        // What `{:#}` prints for v0 symbols: hashes and disambiguators hidden, lifetimes kept.
        assert_eq!(
            classify("<rustls::conn::connection::Writer<'_> as std::io::Write>::write"),
            Some(RustlsFn::Write)
        );
        assert_eq!(
            classify("<rustls::conn::connection::Reader<'_>>::into_first_chunk"),
            Some(RustlsFn::IntoFirstChunk)
        );
        assert_eq!(
            classify("<rustls::conn::connection::Reader<'a> as std::io::Read>::read"),
            Some(RustlsFn::Read)
        );
        assert_eq!(classify("rustls::conn::connection::Reader::read"), None);
        assert_eq!(classify("<not rustls"), None);
        assert_eq!(classify(""), None);
    }

    #[test]
    fn real_v0_symbol_demangles_and_classifies() {
        // v0 mangling of `<rustls::conn::connection::Writer as std::io::Write>::write`
        // produced by `-C symbol-mangling-version=v0` (crate disambiguators made up).
        let mangled =
            "_RNvXs_NtNtCs1234_6rustls4conn10connectionNtB4_6WriterNtNtCs5678_3std2io5Write5write";
        let demangled = format!("{:#}", rustc_demangle::demangle(mangled));
        assert_eq!(classify(&demangled), Some(RustlsFn::Write), "{demangled}");
    }

    fn data(pid: u32, conn: u64, direction: Direction) -> CaptureEvent {
        CaptureEvent::Data(DataEvent {
            conn: ConnectionId { pid, conn },
            tid: pid,
            comm: Comm::default(),
            direction,
            ts_entry_ns: 0,
            ts_return_ns: 0,
            call_len: 1,
            offset: 0,
            stream_pos: 0,
            uncaptured_len: 0,
            last_chunk: true,
            resumed: false,
            data: bytes::Bytes::from_static(b"x"),
        })
    }

    fn resolved(pairing: &mut ConnectionPairing, mut event: CaptureEvent) -> u64 {
        pairing.resolve(&mut event);
        event.conn().conn
    }

    #[test]
    fn pairs_reads_with_their_connection() {
        let mut p = ConnectionPairing::new();
        let w = rustls_conn::WRITER_TAG;
        let r = rustls_conn::READER_TAG;
        // Two connections 4 KiB apart; readers 0x2a0 above each.
        assert_eq!(
            resolved(&mut p, data(7, 0x5000 | w, Direction::Write)),
            0x5000
        );
        assert_eq!(
            resolved(&mut p, data(7, 0x6000 | w, Direction::Write)),
            0x6000
        );
        assert_eq!(
            resolved(&mut p, data(7, 0x52a0 | r, Direction::Read)),
            0x5000
        );
        assert_eq!(
            resolved(&mut p, data(7, 0x62a0 | r, Direction::Read)),
            0x6000
        );
        // Another process with the same addresses is separate.
        assert_eq!(
            resolved(&mut p, data(8, 0x52a0 | r, Direction::Read)),
            0x52a0
        );
        assert_eq!(p.unpaired_reads, 1);
        // A stale connection just below a reader does not win over the learned distance.
        assert_eq!(
            resolved(&mut p, data(7, 0x9000 | w, Direction::Write)),
            0x9000
        );
        assert_eq!(
            resolved(&mut p, data(7, 0x9100 | w, Direction::Write)),
            0x9100
        );
        assert_eq!(
            resolved(&mut p, data(7, 0x92a0 | r, Direction::Read)),
            0x9000
        );
        // OpenSSL records are untouched.
        assert_eq!(resolved(&mut p, data(7, 0x1234, Direction::Read)), 0x1234);
        // Exit forgets the process.
        let mut exit = CaptureEvent::ProcessExit {
            pid: 7,
            comm: Comm::default(),
            ts_ns: 0,
        };
        p.resolve(&mut exit);
        assert_eq!(
            resolved(&mut p, data(7, 0x52a0 | r, Direction::Read)),
            0x52a0
        );
    }

    fn read_at(pid: u32, conn: u64, stream_pos: u64, call_len: u64) -> CaptureEvent {
        let mut event = data(pid, conn | rustls_conn::READER_TAG, Direction::Read);
        if let CaptureEvent::Data(d) = &mut event {
            d.stream_pos = stream_pos;
            d.call_len = call_len;
        }
        event
    }

    fn position(pairing: &mut ConnectionPairing, mut event: CaptureEvent) -> (u64, u64) {
        pairing.resolve(&mut event);
        match event {
            CaptureEvent::Data(d) => (d.conn.conn, d.stream_pos),
            other => panic!("not data: {other:?}"),
        }
    }

    fn closed(pid: u32, conn: u64) -> CaptureEvent {
        CaptureEvent::Closed {
            conn: ConnectionId { pid, conn },
            comm: Comm::default(),
            ts_ns: 0,
        }
    }

    #[test]
    fn a_dropped_connections_address_starts_a_new_read_stream() {
        let mut p = ConnectionPairing::new();
        let w = rustls_conn::WRITER_TAG;
        resolved(&mut p, data(7, 0x5000 | w, Direction::Write));
        assert_eq!(position(&mut p, read_at(7, 0x52a0, 0, 300)), (0x5000, 0));
        assert_eq!(
            position(&mut p, read_at(7, 0x52a0, 300, 200)),
            (0x5000, 300)
        );
        // The kernel ends the writer at the drop; its close names the connection.
        let mut close = closed(7, 0x5000 | w);
        p.resolve(&mut close);
        assert_eq!(close.conn().conn, 0x5000);
        // The next connection at the same address: its reads start at 0 for user space,
        // whereas the kernel's reader (never told of the drop) counts on from 500.
        resolved(&mut p, data(7, 0x5000 | w, Direction::Write));
        assert_eq!(position(&mut p, read_at(7, 0x52a0, 500, 40)), (0x5000, 0));
        assert_eq!(position(&mut p, read_at(7, 0x52a0, 540, 10)), (0x5000, 40));
        // And the one after it.
        p.resolve(&mut closed(7, 0x5000 | w));
        resolved(&mut p, data(7, 0x5000 | w, Direction::Write));
        assert_eq!(position(&mut p, read_at(7, 0x52a0, 550, 5)), (0x5000, 0));
        // A reader whose kernel numbering restarted (its entry aged out) is taken as is.
        p.resolve(&mut closed(7, 0x5000 | w));
        assert_eq!(position(&mut p, read_at(7, 0x52a0, 0, 5)), (0x5000, 0));
        assert_eq!(position(&mut p, read_at(7, 0x52a0, 5, 5)), (0x5000, 5));
        // Another process's close changes nothing here.
        p.resolve(&mut closed(8, 0x5000 | w));
        assert_eq!(position(&mut p, read_at(7, 0x52a0, 10, 5)), (0x5000, 10));
        // OpenSSL closes are untouched.
        let mut other = closed(7, 0x1234);
        p.resolve(&mut other);
        assert_eq!(other.conn().conn, 0x1234);
    }

    #[test]
    fn classifies_connection_drop_glue() {
        let cases = [
            (
                "core::ptr::drop_in_place<rustls::conn::ConnectionCommon<rustls::client::client_conn::ClientConnectionData>>",
                Some(RustlsFn::Drop),
            ),
            (
                "core::ptr::drop_in_place::<rustls::conn::ConnectionCommon<rustls::server::server_conn::ServerConnectionData>>",
                Some(RustlsFn::Drop),
            ),
            (
                "core::ptr::drop_in_place<rustls::client::client_conn::connection::ClientConnection>",
                Some(RustlsFn::Drop),
            ),
            (
                "core::ptr::drop_in_place<rustls::conn::unbuffered::UnbufferedConnectionCommon<rustls::client::client_conn::ClientConnectionData>>",
                None,
            ),
            (
                "core::ptr::drop_in_place<rustls::vecbuf::ChunkVecBuffer>",
                None,
            ),
            (
                "core::ptr::drop_in_place<tokio_rustls::client::TlsStream<tokio::net::tcp::stream::TcpStream>>",
                None,
            ),
            (
                "core::ptr::drop_in_place<rustls::conn::connection::Connection>",
                None,
            ),
        ];
        for (name, want) in cases {
            assert_eq!(classify(name), want, "{name}");
        }
        // As rustc mangles it (legacy), through the demangler.
        let mangled = "_ZN4core3ptr108drop_in_place$LT$rustls..conn..ConnectionCommon$LT$rustls..client..client_conn..ClientConnectionData$GT$$GT$17h0123456789abcdefE";
        let demangled = format!("{:#}", rustc_demangle::demangle(mangled));
        assert_eq!(classify(&demangled), Some(RustlsFn::Drop), "{demangled}");
    }

    #[test]
    fn writers_per_process_are_bounded() {
        let mut p = ConnectionPairing::new();
        for i in 0..(MAX_WRITERS_PER_PROCESS as u64 + 10) {
            resolved(
                &mut p,
                data(
                    1,
                    (0x10000 + i * 0x10000) | rustls_conn::WRITER_TAG,
                    Direction::Write,
                ),
            );
        }
        assert_eq!(p.processes[&1].writers.len(), MAX_WRITERS_PER_PROCESS);
        // The oldest went first.
        assert!(!p.processes[&1].writers.contains_key(&0x10000));
    }

    #[test]
    fn probes_put_returns_first() {
        let probes = probes(&[(RustlsFn::Write.label(), 0x100), ("SSL_write", 0x200)]);
        assert_eq!(
            probes,
            [("rustls_io_return", 0x100), ("rustls_write_entry", 0x100)]
        );
    }
}
