//! `llmtap doctor`: checks that this host can run llmtap, and says how to fix what fails.

use std::path::Path;

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Works, with a limitation worth knowing.
    Warn,
    Fail,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do when it is not OK.
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Self {
        Self {
            name,
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Parses `major.minor` from a kernel release such as `6.18.44-fc-v782`.
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Parses the effective capability mask from `/proc/self/status` content.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn has(mask: u64, cap: u32) -> bool {
    mask & (1u64 << cap) != 0
}

/// Runs every check.
pub fn run_checks() -> Vec<Check> {
    let mut checks = Vec::new();

    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    checks.push(match parse_kernel_version(&release) {
        Some(v) if v >= (5, 17) => Check::new(
            "kernel",
            Status::Ok,
            format!("{release}: ring buffer (≥ 5.8) and bpf_loop (≥ 5.17) available"),
        ),
        Some(v) if v >= (5, 8) => Check::new(
            "kernel",
            Status::Fail,
            format!("{release}: has the ring buffer but not bpf_loop (5.17), which llmtap uses to copy large payloads"),
        )
        .fix("run on Linux ≥ 5.17"),
        _ => Check::new("kernel", Status::Fail, format!("{release:?}: too old or unknown"))
            .fix("run on Linux ≥ 5.17 with BTF"),
    });

    // The socket tracepoints behind plain-HTTP capture and socket identity.
    checks.push(match parse_kernel_version(&release) {
        Some(v) if v >= (6, 3) => Check::new(
            "plain-http",
            Status::Ok,
            "sock:sock_send_length/sock_recv_length available (plain HTTP, socket addresses)",
        ),
        _ => Check::new(
            "plain-http",
            Status::Warn,
            format!(
                "{release}: no sock_*_length tracepoints (Linux 6.3): TLS only, no socket addresses"
            ),
        )
        .fix("run on Linux ≥ 6.3 to capture plain-HTTP calls"),
    });

    checks.push(if Path::new("/sys/kernel/btf/vmlinux").exists() {
        Check::new("btf", Status::Ok, "/sys/kernel/btf/vmlinux present")
    } else {
        Check::new("btf", Status::Fail, "/sys/kernel/btf/vmlinux missing").fix(
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels ≥ 5.8)",
        )
    });

    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_cap_eff(&s))
        .unwrap_or(0);
    let bpf_ok = has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON));
    checks.push(if bpf_ok && has(caps, CAP_SYS_PTRACE) {
        let status = if has(caps, CAP_DAC_READ_SEARCH) { Status::Ok } else { Status::Warn };
        let c = Check::new(
            "capabilities",
            status,
            format!("CapEff={caps:#x}: BPF/PERFMON (or SYS_ADMIN) and SYS_PTRACE present"),
        );
        if status == Status::Warn {
            c.fix("add CAP_DAC_READ_SEARCH to read every process's /proc/PID/maps")
        } else {
            c
        }
    } else {
        Check::new("capabilities", Status::Fail, format!("CapEff={caps:#x}: missing BPF, PERFMON or SYS_PTRACE"))
            .fix("run as root, or grant CAP_BPF,CAP_PERFMON,CAP_SYS_PTRACE,CAP_DAC_READ_SEARCH (e.g. setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search+ep llmtap)")
    });

    checks.push(
        match aya::sys::is_map_supported(aya::maps::MapType::RingBuf) {
            Ok(true) => Check::new(
                "ring buffer",
                Status::Ok,
                "BPF_MAP_TYPE_RINGBUF can be created",
            ),
            Ok(false) => Check::new(
                "ring buffer",
                Status::Fail,
                "BPF_MAP_TYPE_RINGBUF not supported",
            )
            .fix("run on Linux ≥ 5.8"),
            Err(err) => Check::new(
                "ring buffer",
                Status::Fail,
                format!("probing failed: {err}"),
            )
            .fix("run as root (or with CAP_BPF) so the bpf() syscall is allowed"),
        },
    );

    checks.push(
        match aya::sys::is_helper_supported(
            aya::programs::ProgramType::KProbe,
            aya::sys::BpfHelper::BPF_FUNC_loop,
        ) {
            Ok(true) => Check::new(
                "bpf_loop",
                Status::Ok,
                "helper available to uprobe programs",
            ),
            Ok(false) => Check::new("bpf_loop", Status::Fail, "helper not available")
                .fix("run on Linux ≥ 5.17"),
            Err(err) => Check::new("bpf_loop", Status::Fail, format!("probing failed: {err}"))
                .fix("run as root (or with CAP_BPF)"),
        },
    );

    checks.push(
        if Path::new("/sys/bus/event_source/devices/uprobe/type").exists() {
            Check::new("uprobes", Status::Ok, "uprobe perf event source present")
        } else {
            Check::new(
                "uprobes",
                Status::Fail,
                "/sys/bus/event_source/devices/uprobe missing",
            )
            .fix("use a kernel with CONFIG_UPROBE_EVENTS=y")
        },
    );

    let tracefs = [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .into_iter()
    .find(|p| Path::new(p).is_dir());
    checks.push(match tracefs {
        Some(path) => Check::new("tracefs", Status::Ok, format!("{path} mounted")),
        None => Check::new("tracefs", Status::Warn, "tracefs not mounted")
            .fix("mount -t tracefs nodev /sys/kernel/tracing (in Kubernetes, mount the host's /sys/kernel/tracing)"),
    });

    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    checks.push(match paranoid {
        Some(level) if level <= 2 || has(caps, CAP_PERFMON) || has(caps, CAP_SYS_ADMIN) => {
            Check::new(
                "perf_event_paranoid",
                Status::Ok,
                format!("{level} (privileges suffice)"),
            )
        }
        Some(level) => Check::new(
            "perf_event_paranoid",
            Status::Fail,
            format!("{level} without CAP_PERFMON"),
        )
        .fix("grant CAP_PERFMON, or sysctl kernel.perf_event_paranoid=2"),
        None => Check::new("perf_event_paranoid", Status::Warn, "unreadable"),
    });

    let lockdown = std::fs::read_to_string("/sys/kernel/security/lockdown").unwrap_or_default();
    checks.push(if lockdown.contains("[confidentiality]") {
        Check::new(
            "lockdown",
            Status::Fail,
            "kernel lockdown=confidentiality blocks reading process memory from BPF",
        )
        .fix("boot with lockdown=integrity or none")
    } else {
        Check::new(
            "lockdown",
            Status::Ok,
            if lockdown.is_empty() {
                "not enabled".to_string()
            } else {
                lockdown.trim().to_string()
            },
        )
    });

    checks.push(match crate::capture::targets::default_libssl() {
        Some(lib) => Check::new(
            "libssl",
            Status::Ok,
            format!("system OpenSSL at {}", lib.display()),
        ),
        None => Check::new(
            "libssl",
            Status::Warn,
            "no system libssl found; only processes' own copies and --ssl-lib targets are hooked",
        ),
    });
    checks
}

/// Renders checks as lines for a terminal.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let mark = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        out.push_str(&format!("[{mark}] {:<20} {}\n", c.name, c.detail));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("       {:<20} fix: {fix}\n", ""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_kernel_version("garbage"), None);
        assert!((5, 17) > (5, 8) && (6, 1) > (5, 17));
    }

    #[test]
    fn capabilities() {
        let status = "Name:\tllmtap\nCapEff:\t000001ffffffffff\n";
        let caps = parse_cap_eff(status).unwrap();
        assert!(has(caps, CAP_BPF) && has(caps, CAP_PERFMON) && has(caps, CAP_SYS_PTRACE));
        assert_eq!(parse_cap_eff("CapEff:\t0000000000000000"), Some(0));
        assert_eq!(parse_cap_eff("nothing"), None);
    }

    #[test]
    fn render_shows_fixes() {
        let checks = vec![
            Check::new("btf", Status::Fail, "missing").fix("install a BTF kernel"),
            Check::new("kernel", Status::Ok, "6.18"),
        ];
        let text = render(&checks);
        assert!(text.contains("[FAIL] btf"));
        assert!(text.contains("fix: install a BTF kernel"));
        assert!(text.contains("[ok  ] kernel"));
    }
}
