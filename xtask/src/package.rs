//! `cargo xtask package`: a Debian package of llmtap (binary, systemd unit, configuration),
//! assembled in a staging tree and built by `dpkg-deb`; its dependencies are computed by
//! `dpkg-shlibdeps` from the binary's shared libraries.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// What goes where: (source under the workspace, path in the package, mode).
const FILES: &[(&str, &str, u32)] = &[
    (
        "deploy/systemd/llmtap.service",
        "lib/systemd/system/llmtap.service",
        0o644,
    ),
    (
        "deploy/systemd/llmtap.toml",
        "etc/llmtap/llmtap.toml",
        0o644,
    ),
    ("deploy/systemd/llmtap.default", "etc/default/llmtap", 0o644),
    ("README.md", "usr/share/doc/llmtap/README.md", 0o644),
    (
        "deploy/prometheus/llmtap-rules.yaml",
        "usr/share/doc/llmtap/prometheus/llmtap-rules.yaml",
        0o644,
    ),
    (
        "deploy/grafana/llmtap-dashboard.json",
        "usr/share/doc/llmtap/grafana/llmtap-dashboard.json",
        0o644,
    ),
];

/// Configuration files dpkg keeps when the administrator changed them.
const CONFFILES: &[&str] = &["/etc/llmtap/llmtap.toml", "/etc/default/llmtap"];

/// Registers the unit with systemd; not enabled: tracing every process of the host is the
/// administrator's decision (`systemctl enable --now llmtap`).
const POSTINST: &str = "#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
";

const PRERM: &str = "#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ \"$1\" = remove ]; then
    systemctl stop llmtap.service || true
fi
";

const POSTRM: &str = "#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
";

fn write_mode(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn output_of(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `Depends:` of the binary, from `dpkg-shlibdeps` (which reads a `debian/control`; a
/// minimal one is made for it in a scratch directory).
fn shared_library_depends(binary: &Path, scratch: &Path) -> anyhow::Result<String> {
    write_mode(
        &scratch.join("debian/control"),
        b"Source: llmtap\n\nPackage: llmtap\nArchitecture: any\n",
        0o644,
    )?;
    let binary = std::fs::canonicalize(binary)?;
    let out = output_of(
        Command::new("dpkg-shlibdeps")
            .current_dir(scratch)
            .args(["-O", "--ignore-missing-info"])
            .arg(format!("-e{}", binary.display())),
    )?;
    out.lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::to_string)
        .context("dpkg-shlibdeps printed no shlibs:Depends")
}

/// Builds `llmtap_VERSION_ARCH.deb` in `out_dir` from `binary`; returns its path.
pub fn package(root: &Path, binary: &Path, out_dir: &Path) -> anyhow::Result<PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    let arch = output_of(Command::new("dpkg").arg("--print-architecture"))?;
    let stage = out_dir.join(format!("llmtap_{version}_{arch}"));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;
    let binary_bytes =
        std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    write_mode(&stage.join("usr/bin/llmtap"), &binary_bytes, 0o755)?;
    for (source, target, mode) in FILES {
        let bytes =
            std::fs::read(root.join(source)).with_context(|| format!("reading {source}"))?;
        write_mode(&stage.join(target), &bytes, *mode)?;
    }
    let scratch = out_dir.join("shlibdeps");
    let depends = shared_library_depends(binary, &scratch)?;
    let _ = std::fs::remove_dir_all(&scratch);
    let installed_kib = walk_size(&stage)?.div_ceil(1024);
    let control = format!(
        "Package: llmtap\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: llmtap developers <llmtap@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Section: admin\n\
         Priority: optional\n\
         Description: see every LLM call a Linux host makes, with eBPF\n \
         llmtap captures TLS plaintext of unmodified processes with eBPF uprobes and turns\n \
         LLM API calls into OpenTelemetry GenAI spans and metrics (console, JSON Lines,\n \
         OTLP, Prometheus). The llmtap service is installed but not enabled:\n \
         systemctl enable --now llmtap\n"
    );
    write_mode(&stage.join("DEBIAN/control"), control.as_bytes(), 0o644)?;
    let conffiles: String = CONFFILES.iter().map(|c| format!("{c}\n")).collect();
    write_mode(&stage.join("DEBIAN/conffiles"), conffiles.as_bytes(), 0o644)?;
    write_mode(&stage.join("DEBIAN/postinst"), POSTINST.as_bytes(), 0o755)?;
    write_mode(&stage.join("DEBIAN/prerm"), PRERM.as_bytes(), 0o755)?;
    write_mode(&stage.join("DEBIAN/postrm"), POSTRM.as_bytes(), 0o755)?;
    let deb = out_dir.join(format!("llmtap_{version}_{arch}.deb"));
    crate::run(
        Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&stage)
            .arg(&deb),
    )?;
    let _ = std::fs::remove_dir_all(&stage);
    Ok(deb)
}

fn walk_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            walk_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
