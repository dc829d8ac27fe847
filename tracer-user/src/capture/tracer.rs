//! The privileged part of capture: loads the embedded eBPF object, attaches the uprobes to TLS
//! libraries and reads the ring buffer on tokio.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope};
use aya::programs::{RawTracePoint, UProbe};
use aya::{Ebpf, EbpfLoader};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tracer_common::plain::{PATH_PREFIX_LEN, is_socket_conn, mode, state};
use tracer_common::{
    COMM_LEN, DEFAULT_MAX_CAPTURE_BYTES, HoldEntry, MAX_CAPTURE_BYTES_LIMIT, MUTE_KEY_DIRECTION,
    MuteEntry, StreamKey, counter, hold_state, mute_kind, mute_state,
};

use crate::flow::MuteSpan;

use super::plain::{LLM_PATH_PREFIXES, PlainHttp};

use super::event::{CaptureEvent, decode_record};
use super::hold_guard::HoldGuard;
use super::targets::FileId;

/// The eBPF object built by `build.rs` (aya-build) from `tracer-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/llmtap-tracer"));

/// Longest a record waits in the ring before the reader looks (records are not announced one
/// by one: see `WAKEUP_BYTES` in the eBPF program).
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);
/// Record bytes taken from the ring per batch handed to the pipeline.
const DRAIN_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// `bpf_map_update_elem` flag: only create, never replace (linux/bpf.h).
const BPF_NOEXIST: u64 = 1;

/// Default ring buffer size: room for bursts of large prompts without drops.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 16 * 1024 * 1024;

/// How each OpenSSL function is hooked: (symbol, entry program, return program, required).
const OPENSSL_HOOKS: &[(&str, &str, Option<&str>, bool)] = &[
    ("SSL_write", "ssl_write_entry", Some("ssl_rw_return"), true),
    ("SSL_read", "ssl_read_entry", Some("ssl_rw_return"), true),
    (
        "SSL_write_ex",
        "ssl_write_ex_entry",
        Some("ssl_rw_ex_return"),
        false,
    ),
    (
        "SSL_read_ex",
        "ssl_read_entry",
        Some("ssl_rw_ex_return"),
        false,
    ),
    ("SSL_free", "ssl_free_entry", None, false),
];

const PROGRAMS: &[&str] = &[
    "dl_debug_state",
    "ssl_write_entry",
    "ssl_write_ex_entry",
    "ssl_read_entry",
    "ssl_rw_return",
    "ssl_rw_ex_return",
    "ssl_free_entry",
];

/// What the kernel side is told at load time.
#[derive(Clone, Debug)]
pub struct TracerConfig {
    /// Ring buffer size in bytes: a power of two, multiple of the page size.
    pub ring_buffer_bytes: u32,
    /// Bytes of one `SSL_*` call copied at most; the rest is reported as uncaptured.
    pub max_capture_bytes: u32,
    /// Only trace these process ids (all when empty).
    pub pids: Vec<u32>,
    /// Only trace these command names (all when empty).
    pub comms: Vec<String>,
    /// Stop a new program at its first `connect` until it is hooked (`capture::hold`). Off by
    /// default: whoever turns it on must continue each `ProcessHeld` process (the `Session`
    /// does; a bare `Tracer` reader that ignores the event would leave it stopped).
    pub hold_new_processes: bool,
    /// Which plain (non-TLS) TCP connections to capture.
    pub plain_http: PlainHttp,
    /// Capture MCP over stdio (`capture::pipe`): off by default, its hook runs after every
    /// system call on the host.
    pub mcp_stdio: bool,
}

impl Default for TracerConfig {
    fn default() -> Self {
        Self {
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
            max_capture_bytes: DEFAULT_MAX_CAPTURE_BYTES,
            pids: Vec::new(),
            comms: Vec::new(),
            hold_new_processes: false,
            plain_http: PlainHttp::default(),
            mcp_stdio: false,
        }
    }
}

impl TracerConfig {
    pub fn validate(&self) -> Result<(), TracerError> {
        let page = page_size();
        let ring = self.ring_buffer_bytes;
        if !ring.is_power_of_two() || ring < page || !ring.is_multiple_of(page) {
            return Err(TracerError::Config(format!(
                "ring buffer size {ring} must be a power of two and a multiple of the page size ({page})"
            )));
        }
        if self.max_capture_bytes == 0 || self.max_capture_bytes > MAX_CAPTURE_BYTES_LIMIT {
            return Err(TracerError::Config(format!(
                "max capture bytes must be between 1 and {MAX_CAPTURE_BYTES_LIMIT}"
            )));
        }
        for comm in &self.comms {
            if comm.is_empty() || comm.len() >= COMM_LEN {
                return Err(TracerError::Config(format!(
                    "--comm {comm:?}: a command name has 1 to {} bytes",
                    COMM_LEN - 1
                )));
            }
        }
        Ok(())
    }
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).unwrap_or(4096)
}

#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(
        "loading the eBPF object failed (needs root or CAP_BPF+CAP_PERFMON, kernel >= 5.17 with BTF): {0}"
    )]
    Load(#[source] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("attaching to {path}: {source}")]
    Attach {
        path: PathBuf,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("{path} does not look like an OpenSSL library or binary: {reason}")]
    NotOpenSsl { path: PathBuf, reason: String },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Result of asking to hook a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachOutcome {
    /// Newly hooked; lists the functions found.
    Attached(Vec<&'static str>),
    /// This file (same device and inode) is hooked already.
    AlreadyAttached,
}

/// Totals from the kernel's counters, summed over CPUs, plus the reader's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureCounters {
    pub calls: u64,
    pub ringbuf_dropped_records: u64,
    pub ringbuf_dropped_bytes: u64,
    pub ringbuf_dropped_close: u64,
    pub ringbuf_dropped_process: u64,
    pub read_user_failed: u64,
    pub truncated_calls: u64,
    pub inflight_table_full: u64,
    /// Records received from the ring buffer.
    pub records: u64,
    /// Plaintext bytes received.
    pub bytes: u64,
    /// Records that did not decode.
    pub decode_errors: u64,
    /// New processes stopped at their first `connect` until their program was hooked.
    pub held_processes: u64,
    /// TCP connections the kernel classified as plain HTTP to an LLM path (copied).
    pub plain_http_connections: u64,
    /// TCP connections classified as neither TLS nor that (never copied).
    pub plain_ignored_connections: u64,
    /// TCP connections classified as TLS (ciphertext never copied).
    pub tls_connections: u64,
    /// Plain-HTTP connections user space told the kernel to stop copying (first request not
    /// an LLM call).
    pub plain_ignored_later: u64,
    /// MCP stdio channels the kernel found, the bytes it copied of them, and servers whose
    /// standard output was not a pipe (their answers unseen).
    pub mcp_pipe_channels: u64,
    pub mcp_pipe_bytes: u64,
    pub mcp_pipe_no_response_pipe: u64,
    /// TLS connections user space told the kernel to stop copying (muted): a server's side,
    /// not HTTP, or an HTTP/1 client whose latest request was not an LLM call.
    pub connections_muted: u64,
    /// Calls of muted connections, and their plaintext bytes: numbered, never copied.
    pub filtered_calls: u64,
    pub filtered_bytes: u64,
    /// Mutes the kernel dropped as stale at their first use, and mutes ended by a new request.
    pub mutes_stale: u64,
    pub mutes_resumed: u64,
}

impl CaptureCounters {
    /// Records the kernel could not deliver, all causes.
    pub fn lost_records(&self) -> u64 {
        self.ringbuf_dropped_records
            + self.ringbuf_dropped_close
            + self.ringbuf_dropped_process
            + self.read_user_failed
    }
}

struct AttachedFile {
    path: PathBuf,
    links: Vec<(&'static str, UProbeLinkId)>,
}

/// Where a probe goes: a file offset llmtap computed (aya's symbol lookup maps the file).
#[derive(Clone, Copy, Debug)]
enum HookAt {
    Offset(u64),
}

/// The dynamic loader's hook symbol (glibc and musl).
pub const LOADER_HOOK_SYMBOL: &str = "_dl_debug_state";

/// Loaded and attachable TLS tracer.
pub struct Tracer {
    ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    attached: HashMap<FileId, AttachedFile>,
    loaders: HashMap<FileId, (PathBuf, UProbeLinkId)>,
    records: u64,
    bytes: u64,
    decode_errors: u64,
    /// Gives rustls reads the identity of their connection's writes.
    rustls_pairing: super::rustls::ConnectionPairing,
    /// `--comm` names (empty: no name filter).
    comms: Vec<String>,
    held_processes: u64,
    plain_ignored_later: u64,
    connections_muted: u64,
    /// Continues held processes if llmtap cannot (`capture::hold_guard`); dropped after the
    /// tracer's own `Drop` has continued what it could.
    hold_guard: Option<HoldGuard>,
}

impl Tracer {
    /// Loads the programs and maps. Must run inside a tokio runtime (the ring buffer is
    /// registered with the reactor).
    pub fn load(config: &TracerConfig) -> Result<Self, TracerError> {
        config.validate()?;
        raise_memlock_limit();
        let self_pid = std::process::id();
        let filter_flags: u32 =
            u32::from(!config.pids.is_empty()) | (u32::from(!config.comms.is_empty()) << 1);
        // Wake the reader when a quarter of the ring is used; otherwise it polls.
        let wakeup_bytes = config.ring_buffer_bytes / 4;
        // Without the offsets, user space judges each new process from /proc (a window in
        // which a fast process is not held).
        let tty_offsets = if config.hold_new_processes {
            super::hold::TtyOffsets::from_kernel_btf().unwrap_or_else(|err| {
                log::info!("--hold-new-processes: {err}; deciding from /proc instead");
                super::hold::TtyOffsets::default()
            })
        } else {
            super::hold::TtyOffsets::default()
        };
        // Without them, state a dead process left under a reused pid is not recognised as such.
        let start_offsets = super::kernel_btf::ProcessStartOffsets::from_kernel_btf()
            .unwrap_or_else(|err| {
                log::warn!(
                    "{err}: a new process reusing an exited one's pid may continue its \
                     connections' byte counts"
                );
                super::kernel_btf::ProcessStartOffsets::default()
            });
        let plain_mode = match &config.plain_http {
            PlainHttp::Off => mode::OFF,
            PlainHttp::AllPorts => mode::ALL_PORTS,
            PlainHttp::Ports(_) => mode::LISTED_PORTS,
        };
        let pipe_offsets = if config.mcp_stdio {
            super::pipe::PipeOffsets::from_kernel_btf()
                .inspect_err(|err| log::warn!("MCP over stdio not captured: {err}"))
                .ok()
        } else {
            None
        };
        let hold_new_processes = u32::from(config.hold_new_processes);
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries("EVENTS", config.ring_buffer_bytes)
            .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
            .override_global("MAX_CAPTURE_BYTES", &config.max_capture_bytes, true)
            .override_global("FILTER_FLAGS", &filter_flags, true)
            .override_global("SELF_PID", &self_pid, true)
            .override_global("HOLD_NEW_PROCESSES", &hold_new_processes, true)
            .override_global("TASK_SIGNAL_OFFSET", &tty_offsets.task_signal, true)
            .override_global("SIGNAL_TTY_OFFSET", &tty_offsets.signal_tty, true)
            .override_global(
                "TASK_GROUP_LEADER_OFFSET",
                &start_offsets.task_group_leader,
                true,
            )
            .override_global(
                "TASK_START_TIME_OFFSET",
                &start_offsets.task_start_time,
                true,
            )
            .override_global("PLAIN_MODE", &plain_mode, true);
        if let Some(offsets) = &pipe_offsets {
            offsets.set_globals(&mut loader);
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(TracerError::Load)?;
        fill_plain_maps(&mut ebpf, &config.plain_http)?;

        if !config.pids.is_empty() {
            let map = ebpf
                .map_mut("PID_FILTER")
                .ok_or(TracerError::MissingMap("PID_FILTER"))?;
            let mut pids: aya::maps::HashMap<_, u32, u8> = aya::maps::HashMap::try_from(map)
                .map_err(|source| TracerError::Map {
                    name: "PID_FILTER",
                    source,
                })?;
            for pid in &config.pids {
                pids.insert(pid, 1, 0).map_err(|source| TracerError::Map {
                    name: "PID_FILTER",
                    source,
                })?;
            }
        }
        if !config.comms.is_empty() {
            let map = ebpf
                .map_mut("COMM_FILTER")
                .ok_or(TracerError::MissingMap("COMM_FILTER"))?;
            let mut comms: aya::maps::HashMap<_, [u8; COMM_LEN], u8> =
                aya::maps::HashMap::try_from(map).map_err(|source| TracerError::Map {
                    name: "COMM_FILTER",
                    source,
                })?;
            for comm in &config.comms {
                let mut key = [0u8; COMM_LEN];
                key[..comm.len()].copy_from_slice(comm.as_bytes());
                comms.insert(key, 1, 0).map_err(|source| TracerError::Map {
                    name: "COMM_FILTER",
                    source,
                })?;
            }
        }

        for name in PROGRAMS
            .iter()
            .chain(super::rustls::PROGRAMS)
            .chain(super::go_tls::PROGRAMS)
            .chain(super::awslc::PROGRAMS)
        {
            let program: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or(TracerError::Program {
                    name,
                    source: aya::programs::ProgramError::UnexpectedProgramType,
                })?
                .try_into()
                .map_err(|source| TracerError::Program { name, source })?;
            program
                .load()
                .map_err(|source| TracerError::Program { name, source })?;
        }

        // Process lifecycle: exec drives immediate discovery of new TLS code, exit frees state.
        for (name, tracepoint) in [
            ("process_exec", "sched_process_exec"),
            ("process_exit", "sched_process_exit"),
        ] {
            let program: &mut RawTracePoint = ebpf
                .program_mut(name)
                .ok_or(TracerError::Program {
                    name,
                    source: aya::programs::ProgramError::UnexpectedProgramType,
                })?
                .try_into()
                .map_err(|source| TracerError::Program { name, source })?;
            program
                .load()
                .map_err(|source| TracerError::Program { name, source })?;
            program
                .attach(tracepoint)
                .map_err(|source| TracerError::Program { name, source })?;
        }

        // Never a hold without the guard that ends it if llmtap cannot.
        let hold_guard = if config.hold_new_processes {
            match start_hold(&mut ebpf) {
                Ok(guard) => Some(guard),
                Err(reason) => {
                    log::warn!(
                        "--hold-new-processes unavailable ({reason}): a program's first call \
                         may be missed while it is being hooked"
                    );
                    None
                }
            }
        } else {
            None
        };

        // Plain-HTTP capture and socket identity; without them, TLS capture still works.
        if let Err(reason) = attach_socket_hooks(&mut ebpf) {
            log::warn!("plain-HTTP capture and socket addresses unavailable: {reason}");
        } else if plain_mode == mode::OFF {
            log::info!("plain-HTTP capture off (--plain-http off)");
        }
        if pipe_offsets.is_some() {
            match super::pipe::attach(&mut ebpf) {
                Ok(()) => log::info!(
                    "MCP over stdio captured (--mcp-stdio on): a hook after every system call"
                ),
                Err(reason) => log::warn!("MCP over stdio not captured: {reason}"),
            }
        }

        let ring = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .ok_or(TracerError::MissingMap("EVENTS"))?,
        )
        .map_err(|source| TracerError::Map {
            name: "EVENTS",
            source,
        })?;
        // SAFETY: the RingBuf owns its map fd, and the AsyncFd owns the RingBuf, so the fd stays
        // open for as long as it is registered with the reactor.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(io::Error::from)?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map("COUNTERS")
                .ok_or(TracerError::MissingMap("COUNTERS"))?,
        )
        .map_err(|source| TracerError::Map {
            name: "COUNTERS",
            source,
        })?;
        Ok(Self {
            ebpf,
            ring,
            counters,
            attached: HashMap::new(),
            loaders: HashMap::new(),
            records: 0,
            bytes: 0,
            decode_errors: 0,
            rustls_pairing: super::rustls::ConnectionPairing::new(),
            held_processes: 0,
            comms: config.comms.clone(),
            plain_ignored_later: 0,
            connections_muted: 0,
            hold_guard,
        })
    }

    /// Hooks OpenSSL's read/write functions in `path` for every process that maps it, now and
    /// later. Files already hooked (same device and inode) are skipped.
    pub fn attach_openssl(&mut self, path: &Path) -> Result<AttachOutcome, TracerError> {
        self.attach_openssl_labeled(path, path)
    }

    /// As [`Tracer::attach_openssl`], reading the file through `path` (e.g. an open
    /// `/proc/self/fd/N`) but naming it `label` in logs and listings.
    pub fn attach_openssl_labeled(
        &mut self,
        path: &Path,
        label: &Path,
    ) -> Result<AttachOutcome, TracerError> {
        self.attach_openssl_at(path, label, None)
    }

    /// As [`Tracer::attach_openssl_labeled`], with the functions' file offsets already known
    /// (from discovery), so the file is not parsed again.
    pub fn attach_openssl_at(
        &mut self,
        path: &Path,
        label: &Path,
        offsets: Option<&[(&'static str, u64)]>,
    ) -> Result<AttachOutcome, TracerError> {
        let id = FileId::of(path)?;
        if self.attached.contains_key(&id) {
            return Ok(AttachOutcome::AlreadyAttached);
        }
        // Symbols are found by llmtap's own bounded reader, never by aya's (which maps the
        // file: a process truncating it would kill llmtap with SIGBUS).
        let inspected;
        let offsets = match offsets {
            Some(known) => known,
            None => {
                inspected =
                    super::elf::inspect(path, true).map_err(|err| TracerError::NotOpenSsl {
                        path: label.to_path_buf(),
                        reason: err.to_string(),
                    })?;
                &inspected.openssl_offsets
            }
        };
        let mut links: Vec<(&'static str, UProbeLinkId)> = Vec::new();
        let mut hooked = Vec::new();
        let result = (|| {
            for &(symbol, entry, ret, required) in OPENSSL_HOOKS {
                // The return probe goes in first: a return without a recorded entry is ignored,
                // whereas an entry without its return would leave a stale in-flight slot.
                let mut programs = Vec::new();
                if let Some(ret) = ret {
                    programs.push(ret);
                }
                programs.push(entry);
                let mut symbol_links = Vec::new();
                let mut failure = None;
                let location = match offsets.iter().find(|(n, _)| *n == symbol) {
                    Some((_, offset)) => HookAt::Offset(*offset),
                    None if required => {
                        return Err(TracerError::NotOpenSsl {
                            path: label.to_path_buf(),
                            reason: format!("{symbol} not defined"),
                        });
                    }
                    None => continue,
                };
                for name in programs {
                    match self.attach_one(name, location, path) {
                        Ok(link) => symbol_links.push((name, link)),
                        Err(err) => {
                            failure = Some(err);
                            break;
                        }
                    }
                }
                match failure {
                    None => {
                        links.extend(symbol_links);
                        hooked.push(symbol);
                    }
                    Some(err) => {
                        self.detach_all(symbol_links);
                        if required {
                            return Err(err);
                        }
                        log::debug!("{}: {symbol} not hooked: {err}", path.display());
                    }
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                log::info!("hooked {} in {}", hooked.join(", "), label.display());
                self.attached.insert(
                    id,
                    AttachedFile {
                        path: label.to_path_buf(),
                        links: std::mem::take(&mut links),
                    },
                );
                Ok(AttachOutcome::Attached(hooked))
            }
            Err(err) => {
                self.detach_all(links);
                Err(match err {
                    TracerError::Attach { source, .. } => TracerError::NotOpenSsl {
                        path: label.to_path_buf(),
                        reason: source.to_string(),
                    },
                    other => other,
                })
            }
        }
    }

    fn attach_one(
        &mut self,
        program: &'static str,
        location: HookAt,
        path: &Path,
    ) -> Result<UProbeLinkId, TracerError> {
        let HookAt::Offset(offset) = location;
        let location = UProbeAttachLocation::AbsoluteOffset(offset);
        let prog: &mut UProbe = self
            .ebpf
            .program_mut(program)
            .ok_or(TracerError::Program {
                name: program,
                source: aya::programs::ProgramError::UnexpectedProgramType,
            })?
            .try_into()
            .map_err(|source| TracerError::Program {
                name: program,
                source,
            })?;
        prog.attach(location, path, UProbeScope::AllProcesses)
            .map_err(|source| TracerError::Attach {
                path: path.to_path_buf(),
                source,
            })
    }

    fn detach_all(&mut self, links: Vec<(&'static str, UProbeLinkId)>) {
        for (program, link) in links {
            if let Some(Ok(prog)) = self.ebpf.program_mut(program).map(<&mut UProbe>::try_from) {
                if let Err(err) = prog.detach(link) {
                    log::warn!("detaching {program}: {err}");
                }
            }
        }
    }

    /// Hooks `probes` — (eBPF program, file offset) pairs, return probes first — in `path`
    /// for every process that maps it, all or none; `functions` name what is hooked in logs.
    /// Files already hooked (same device and inode) are skipped.
    pub fn attach_offsets(
        &mut self,
        path: &Path,
        label: &Path,
        probes: &[(&'static str, u64)],
        functions: Vec<&'static str>,
    ) -> Result<AttachOutcome, TracerError> {
        let id = FileId::of(path)?;
        if self.attached.contains_key(&id) {
            return Ok(AttachOutcome::AlreadyAttached);
        }
        let mut links = Vec::new();
        for &(program, offset) in probes {
            match self.attach_one(program, HookAt::Offset(offset), path) {
                Ok(link) => links.push((program, link)),
                Err(err) => {
                    self.detach_all(links);
                    return Err(err);
                }
            }
        }
        log::info!("hooked {} in {}", functions.join(", "), label.display());
        self.attached.insert(
            id,
            AttachedFile {
                path: label.to_path_buf(),
                links,
            },
        );
        Ok(AttachOutcome::Attached(functions))
    }

    /// Hooks the dynamic loader at `path` (e.g. `ld-linux-x86-64.so.2`) so that every dlopen in
    /// processes using it is reported at once: a libssl copy mapped by a new process is then
    /// hooked before the process gets to its first TLS write.
    pub fn attach_loader(
        &mut self,
        path: &Path,
        label: &Path,
    ) -> Result<AttachOutcome, TracerError> {
        let not_a_loader = |reason: String| TracerError::NotOpenSsl {
            path: label.to_path_buf(),
            reason,
        };
        let file = super::file::open_regular(path, super::file::Follow::Symlinks)
            .map_err(|e| not_a_loader(e.to_string()))?;
        let offset = super::elf::symbol_offset(file, LOADER_HOOK_SYMBOL)
            .map_err(|e| not_a_loader(e.to_string()))?
            .ok_or_else(|| not_a_loader(format!("{LOADER_HOOK_SYMBOL} not defined")))?;
        self.attach_loader_at(path, label, offset)
    }

    /// As [`Tracer::attach_loader`], at the hook's file offset found by discovery.
    pub fn attach_loader_at(
        &mut self,
        path: &Path,
        label: &Path,
        offset: u64,
    ) -> Result<AttachOutcome, TracerError> {
        let id = FileId::of(path)?;
        if self.loaders.contains_key(&id) {
            return Ok(AttachOutcome::AlreadyAttached);
        }
        let link = self.attach_one("dl_debug_state", HookAt::Offset(offset), path)?;
        log::info!("watching library loads through {}", label.display());
        self.loaders.insert(id, (label.to_path_buf(), link));
        Ok(AttachOutcome::Attached(vec![LOADER_HOOK_SYMBOL]))
    }

    /// Whether this file (TLS code or a loader) is hooked already: asked before attaching, so
    /// that a file hooked once is not even looked at again.
    pub fn is_attached(&self, id: FileId) -> bool {
        self.attached.contains_key(&id) || self.loaders.contains_key(&id)
    }

    /// Identities of every hooked file (TLS code and loaders).
    pub fn attached_files(&self) -> Vec<FileId> {
        self.attached
            .keys()
            .chain(self.loaders.keys())
            .copied()
            .collect()
    }

    /// Removes the hooks of a file nobody uses any more. Its inode number may be reused by an
    /// unrelated file later, which must then be inspected afresh rather than taken as hooked.
    pub fn detach_file(&mut self, id: FileId) -> bool {
        if let Some(file) = self.attached.remove(&id) {
            log::info!("unhooked {} (no process uses it)", file.path.display());
            self.detach_all(file.links);
            return true;
        }
        if let Some((path, link)) = self.loaders.remove(&id) {
            log::debug!("stopped watching loads through {}", path.display());
            self.detach_all(vec![("dl_debug_state", link)]);
            return true;
        }
        false
    }

    /// Files hooked so far.
    pub fn attached_paths(&self) -> impl Iterator<Item = &Path> {
        self.attached.values().map(|f| f.path.as_path())
    }

    /// Waits for ring-buffer records and appends the available ones (a bounded batch) to `out`. Records are
    /// picked up on a wakeup (ring a quarter full) or at the latest after [`POLL_INTERVAL`].
    pub async fn read_events(&mut self, out: &mut Vec<CaptureEvent>) -> io::Result<()> {
        loop {
            self.drain(out);
            if !out.is_empty() {
                return Ok(());
            }
            tokio::select! {
                guard = self.ring.readable_mut() => guard?.clear_ready(),
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }

    /// Takes the records in the ring, at most [`DRAIN_BATCH_BYTES`] of data per call: under
    /// a flood the kernel refills the ring as fast as it is read, and an unbounded drain
    /// would copy the flood into llmtap's memory instead of letting the ring (bounded, its
    /// drops counted) absorb it.
    fn drain(&mut self, out: &mut Vec<CaptureEvent>) {
        let ring = self.ring.get_mut();
        let mut batch_bytes = 0usize;
        while batch_bytes < DRAIN_BATCH_BYTES
            && let Some(record) = ring.next()
        {
            self.records += 1;
            batch_bytes += record.len();
            match decode_record(&record) {
                Ok(mut event) => {
                    self.rustls_pairing.resolve(&mut event);
                    if let CaptureEvent::Data(d) = &event {
                        self.bytes += d.data.len() as u64;
                    }
                    out.push(event);
                }
                Err(err) => {
                    self.decode_errors += 1;
                    log::warn!("undecodable capture record: {err}");
                }
            }
        }
    }

    /// Current counters (kernel counters summed over CPUs).
    /// With `--comm`: a process whose own name is one of the names is traced on all its
    /// threads (the kernel only sees the calling thread's name, which tokio, Bun and most
    /// runtimes change); `name` is the process's name from its exec (`at_exec`: a process
    /// that execs another program stops matching) or from /proc.
    pub fn note_process_name(&mut self, pid: u32, name: &str, at_exec: bool) {
        if self.comms.is_empty() {
            return;
        }
        let wanted = self.comms.iter().any(|c| c == name);
        if !wanted && !at_exec {
            return;
        }
        let Some(map) = self.ebpf.map_mut("COMM_PIDS") else {
            log::warn!("--comm: no COMM_PIDS map");
            return;
        };
        let mut pids = match aya::maps::HashMap::<_, u32, u8>::try_from(map) {
            Ok(pids) => pids,
            Err(err) => {
                log::warn!("--comm: COMM_PIDS: {err}");
                return;
            }
        };
        log::debug!("--comm: pid {pid} is {name:?}: followed {wanted}");
        let result = if wanted {
            pids.insert(pid, 1, 0)
        } else {
            pids.remove(&pid)
        };
        if let Err(err) = result
            && wanted
        {
            log::warn!("--comm: cannot follow pid {pid} ({name}): {err}");
        }
    }

    /// The `HOLD` map's entry of a just-exec'd process (`capture::hold`).
    pub fn hold_entry(&self, pid: u32) -> Option<HoldEntry> {
        let map = self.ebpf.map("HOLD")?;
        let hold = aya::maps::HashMap::<_, u32, HoldEntry>::try_from(map).ok()?;
        hold.get(&pid, 0).ok()
    }

    /// Marks the process holdable, if its entry is still the one of `generation` and the
    /// kernel left the decision to user space.
    pub fn allow_hold(&mut self, pid: u32, generation: u32) {
        if let Some(map) = self.ebpf.map_mut("HOLD")
            && let Ok(mut hold) = aya::maps::HashMap::<_, u32, HoldEntry>::try_from(map)
            && hold
                .get(&pid, 0)
                .is_ok_and(|e| e.generation == generation && e.state == hold_state::UNDECIDED)
        {
            let entry = HoldEntry {
                state: hold_state::HOLDABLE,
                generation,
                held_at_ns: 0,
            };
            if let Err(err) = hold.insert(pid, entry, 0) {
                log::debug!("hold state of pid {pid}: {err}");
            }
        }
    }

    /// The program of the process's exec number `generation` is hooked: a `connect` no longer
    /// stops it, and if one already did, it is continued now. A later exec's entry is left for
    /// that exec's turn.
    pub fn end_hold(&mut self, pid: u32, generation: u32) {
        let entry = self.hold_entry(pid);
        if entry.is_some_and(|e| e.generation == generation) {
            self.release(pid, entry);
        }
    }

    /// Continues a process the kernel stopped at a `connect` (its `PROCESS_HELD` record).
    /// Without an entry it may have been stopped while `end_hold` removed it: SIGCONT to a
    /// running process changes nothing, a stopped one must not be left. An entry in another
    /// state belongs to a later exec, so the process runs.
    pub fn resume_held(&mut self, pid: u32) {
        match self.hold_entry(pid) {
            Some(entry) if entry.state == hold_state::HELD => self.release(pid, Some(entry)),
            Some(_) => {}
            None => super::hold::resume(pid),
        }
    }

    /// Drops the entry, then continues the process if it was stopped. The entry stays until
    /// the process is continued, so that a shutdown in between still finds it.
    fn release(&mut self, pid: u32, entry: Option<HoldEntry>) {
        if let Some(map) = self.ebpf.map_mut("HOLD")
            && let Ok(mut hold) = aya::maps::HashMap::<_, u32, HoldEntry>::try_from(map)
        {
            let _ = hold.remove(&pid);
        }
        if entry.is_some_and(|e| e.state == hold_state::HELD) {
            self.held_processes += 1;
            super::hold::resume(pid);
        }
    }

    /// The hold guard's pid: llmtap's own companion, not a program to hook.
    pub fn hold_guard_pid(&self) -> Option<u32> {
        self.hold_guard.as_ref().map(HoldGuard::pid)
    }

    /// Processes the kernel has stopped and not yet seen continued (for a shutdown).
    fn held_pids(&self) -> Vec<u32> {
        let Some(map) = self.ebpf.map("HOLD") else {
            return Vec::new();
        };
        let Ok(hold) = aya::maps::HashMap::<_, u32, HoldEntry>::try_from(map) else {
            return Vec::new();
        };
        hold.iter()
            .filter_map(Result::ok)
            .filter(|(_, entry)| entry.state == hold_state::HELD)
            .map(|(pid, _)| pid)
            .collect()
    }

    /// A process ended: it no longer matches `--comm` (its pid may be reused).
    pub fn forget_process(&mut self, pid: u32) {
        if self.comms.is_empty() {
            return;
        }
        if let Some(map) = self.ebpf.map_mut("COMM_PIDS")
            && let Ok(mut pids) = aya::maps::HashMap::<_, u32, u8>::try_from(map)
        {
            let _ = pids.remove(&pid);
        }
    }

    /// Stops copying a plain-HTTP connection (its first request was not an LLM call): the
    /// kernel treats its socket as ignored from its next send or receive on.
    pub fn ignore_plain_connection(&mut self, conn: super::ConnectionId) {
        if !is_socket_conn(conn.conn) {
            return;
        }
        let Some(map) = self.ebpf.map_mut("SOCK_STATE") else {
            return;
        };
        match aya::maps::HashMap::<_, u64, u64>::try_from(map) {
            Ok(mut states) => {
                // Only a socket still classified as plain HTTP: its address may have been
                // reused by a connection classified since. The value's low byte is the state;
                // the rest (its owner) stays.
                let Ok(value) = states.get(&conn.conn, 0) else {
                    return;
                };
                if value & 0xff != u64::from(state::PLAIN_HTTP)
                    || value >> 32 != u64::from(conn.pid)
                {
                    return;
                }
                match states.insert(conn.conn, (value & !0xff) | u64::from(state::IGNORED), 0) {
                    Ok(()) => {
                        self.plain_ignored_later += 1;
                        log::debug!(
                            "{conn}: plain HTTP whose first request is not an LLM call: \
                             no longer copied"
                        );
                    }
                    Err(err) => log::debug!("ignoring {conn}: {err}"),
                }
            }
            Err(err) => log::warn!("plain HTTP: SOCK_STATE map unusable: {err}"),
        }
    }

    /// Tells the kernel to stop copying a TLS connection later stages have no use for, as
    /// long as `span` says (see `tracer_common::MuteEntry`). `seen` is what user space
    /// received of it: the kernel drops the mute if the connection moved on since (it wrote
    /// again, or its identity now names another connection). An existing mute is left alone.
    /// rustls connections are named differently in the kernel: a mute of one matches nothing.
    pub fn mute_connection(
        &mut self,
        conn: super::ConnectionId,
        span: MuteSpan,
        seen: super::stream::StreamsSeen,
    ) {
        if is_socket_conn(conn.conn) {
            return; // plain TCP has its own classification (`ignore_plain_connection`)
        }
        let Some(map) = self.ebpf.map_mut("MUTED") else {
            return;
        };
        let mut muted = match aya::maps::HashMap::<_, StreamKey, MuteEntry>::try_from(map) {
            Ok(muted) => muted,
            Err(err) => {
                log::warn!("MUTED map unusable: {err}");
                return;
            }
        };
        let key = StreamKey {
            conn_id: conn.conn,
            pid: conn.pid,
            direction: MUTE_KEY_DIRECTION,
        };
        let entry = MuteEntry {
            state: mute_state::PENDING,
            kind: match span {
                MuteSpan::UntilClose => mute_kind::UNTIL_CLOSE,
                MuteSpan::UntilRequest => mute_kind::UNTIL_REQUEST,
            },
            write_seen: seen.write_end,
            read_seen: seen.read_end,
            seen_ts_ns: seen.last_ts_ns,
        };
        match muted.insert(key, entry, BPF_NOEXIST) {
            Ok(()) => {
                self.connections_muted += 1;
                log::debug!("{conn}: muted ({span:?}): no longer copied");
            }
            Err(err) => log::trace!("muting {conn}: {err}"),
        }
    }

    pub fn counters(&self) -> CaptureCounters {
        let read = |index: u32| -> u64 {
            match self.counters.get(&index, 0) {
                Ok(values) => values.iter().sum(),
                Err(err) => {
                    log::debug!("reading counter {index}: {err}");
                    0
                }
            }
        };
        CaptureCounters {
            calls: read(counter::CALLS),
            ringbuf_dropped_records: read(counter::RINGBUF_DROPPED_RECORDS),
            ringbuf_dropped_bytes: read(counter::RINGBUF_DROPPED_BYTES),
            ringbuf_dropped_close: read(counter::RINGBUF_DROPPED_CLOSE),
            ringbuf_dropped_process: read(counter::RINGBUF_DROPPED_PROCESS),
            read_user_failed: read(counter::READ_USER_FAILED),
            truncated_calls: read(counter::TRUNCATED_CALLS),
            inflight_table_full: read(counter::INFLIGHT_TABLE_FULL),
            records: self.records,
            bytes: self.bytes,
            decode_errors: self.decode_errors,
            held_processes: self.held_processes,
            plain_http_connections: read(counter::PLAIN_HTTP_CONNECTIONS),
            plain_ignored_connections: read(counter::PLAIN_IGNORED_CONNECTIONS),
            tls_connections: read(counter::TLS_CONNECTIONS),
            plain_ignored_later: self.plain_ignored_later,
            mcp_pipe_channels: read(counter::MCP_PIPE_CHANNELS),
            mcp_pipe_bytes: read(counter::MCP_PIPE_BYTES),
            mcp_pipe_no_response_pipe: read(counter::MCP_PIPE_NO_RESPONSE_PIPE),
            connections_muted: self.connections_muted,
            filtered_calls: read(counter::FILTERED_CALLS),
            filtered_bytes: read(counter::FILTERED_BYTES),
            mutes_stale: read(counter::MUTES_STALE),
            mutes_resumed: read(counter::MUTES_RESUMED),
        }
    }
}

/// The LLM path prefixes and `--plain-http` ports the kernel classifies with.
fn fill_plain_maps(ebpf: &mut Ebpf, plain: &PlainHttp) -> Result<(), TracerError> {
    let map_err = |name| move |source| TracerError::Map { name, source };
    let map = ebpf
        .map_mut("LLM_PATHS")
        .ok_or(TracerError::MissingMap("LLM_PATHS"))?;
    let mut paths: LpmTrie<_, [u8; PATH_PREFIX_LEN], u8> =
        LpmTrie::try_from(map).map_err(map_err("LLM_PATHS"))?;
    for prefix in LLM_PATH_PREFIXES {
        let mut data = [0u8; PATH_PREFIX_LEN];
        data[..prefix.len()].copy_from_slice(prefix.as_bytes());
        let key = LpmKey::new((prefix.len() * 8) as u32, data);
        paths.insert(&key, 1, 0).map_err(map_err("LLM_PATHS"))?;
    }
    if let PlainHttp::Ports(list) = plain {
        let map = ebpf
            .map_mut("PLAIN_PORTS")
            .ok_or(TracerError::MissingMap("PLAIN_PORTS"))?;
        let mut ports: aya::maps::HashMap<_, u16, u8> =
            aya::maps::HashMap::try_from(map).map_err(map_err("PLAIN_PORTS"))?;
        for port in list {
            ports.insert(port, 1, 0).map_err(map_err("PLAIN_PORTS"))?;
        }
    }
    Ok(())
}

/// Hooks socket sends and receives (`sock_*_length`, Linux >= 6.3) and TCP state changes
/// (closes) through raw tracepoints: no kprobe or ftrace support needed.
fn attach_socket_hooks(ebpf: &mut Ebpf) -> Result<(), String> {
    for name in [
        "inet_sock_set_state",
        "sock_send_length",
        "sock_recv_length",
    ] {
        (|| -> Result<(), aya::programs::ProgramError> {
            let program: &mut RawTracePoint = ebpf
                .program_mut(name)
                .ok_or(aya::programs::ProgramError::UnexpectedProgramType)?
                .try_into()?;
            program.load()?;
            program.attach(name)?;
            Ok(())
        })()
        .map_err(|e| format!("tracepoint {name}: {e}"))?;
    }
    Ok(())
}

fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall wrapper with a valid pointer. Failure is fine on kernels >= 5.11,
    // which charge BPF memory to the cgroup instead of RLIMIT_MEMLOCK.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        log::debug!(
            "setrlimit(RLIMIT_MEMLOCK) failed: {}",
            io::Error::last_os_error()
        );
    }
}

/// Starts the hold guard on the `HOLD` map, then the hold's program.
fn start_hold(ebpf: &mut Ebpf) -> Result<HoldGuard, String> {
    let Some(aya::maps::Map::LruHashMap(map)) = ebpf.map("HOLD") else {
        return Err("no HOLD map".to_string());
    };
    let guard = HoldGuard::spawn(map.fd().as_fd())
        .map_err(|err| format!("cannot start the hold guard: {err}"))?;
    attach_hold(ebpf)?;
    log::debug!("hold guard running as pid {}", guard.pid());
    Ok(guard)
}

/// The hold's program, on TCP sockets entering SYN_SENT (a raw tracepoint: no tracefs, no
/// kprobe support needed).
fn attach_hold(ebpf: &mut Ebpf) -> Result<(), String> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(HOLD_PROGRAM)
        .ok_or("no hold program")?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    program.load().map_err(|e| e.to_string())?;
    program
        .attach("inet_sock_set_state")
        .map_err(|e| e.to_string())?;
    Ok(())
}

const HOLD_PROGRAM: &str = "tcp_connect_hold";

impl Drop for Tracer {
    /// A process stopped by a hold must not stay stopped when llmtap exits: stop holding
    /// first (so no new hold starts), then continue every process still held.
    fn drop(&mut self) {
        if let Some(program) = self.ebpf.program_mut(HOLD_PROGRAM)
            && let Ok(program) = <&mut RawTracePoint>::try_from(program)
            && let Err(err) = program.unload()
        {
            log::debug!("unloading the hold program: {err}");
        }
        for pid in self.held_pids() {
            log::debug!("continuing held pid {pid} on exit");
            super::hold::resume(pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        assert!(TracerConfig::default().validate().is_ok());
        let bad_ring = TracerConfig {
            ring_buffer_bytes: 3 * 4096,
            ..Default::default()
        };
        assert!(bad_ring.validate().is_err());
        let bad_cap = TracerConfig {
            max_capture_bytes: 0,
            ..Default::default()
        };
        assert!(bad_cap.validate().is_err());
        let long_comm = TracerConfig {
            comms: vec!["a".repeat(16)],
            ..Default::default()
        };
        assert!(long_comm.validate().is_err());
    }
}
