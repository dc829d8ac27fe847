//! The host service: `cargo xtask package` builds a .deb; its systemd unit passes
//! `systemd-analyze verify` (with no warning about it) in a root holding the package's files
//! and this machine's systemd units, and its configuration file is one llmtap accepts.
//! Skipped only when systemd-analyze is missing and LLMTAP_REQUIRE_EBPF is unset (CI installs
//! it with `cargo xtask setup`).

use std::path::{Path, PathBuf};
use std::process::Command;

use llmtap_tests::{TempDir, ebpf_required, llmtap_bin, repo_root};

fn tool_available(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

fn required_tools_present(test: &str) -> bool {
    if tool_available("systemd-analyze") && tool_available("dpkg-deb") {
        return true;
    }
    assert!(
        !ebpf_required(),
        "{test}: systemd-analyze and dpkg-deb are required (`cargo xtask setup` installs them)"
    );
    eprintln!("SKIPPED {test}: systemd-analyze or dpkg-deb missing (`cargo xtask setup`)");
    false
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if kind.is_symlink() {
            let link = std::fs::read_link(entry.path()).expect("link");
            let _ = std::os::unix::fs::symlink(link, &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy unit");
        }
    }
}

/// `systemd-analyze verify` of `unit` in `root` (which holds the package's files); the host's
/// units (targets the unit depends on) are copied in. Returns its whole output.
fn verify(root: &Path, unit: &str) -> String {
    let system = root.join("usr/lib/systemd/system");
    for host in ["/usr/lib/systemd/system", "/lib/systemd/system"] {
        if Path::new(host).is_dir() {
            copy_dir(Path::new(host), &system);
            break;
        }
    }
    // The package installs under /lib/systemd/system: one directory for systemd to read.
    let packaged = root.join("lib/systemd/system").join(unit);
    if packaged.is_file() && !root.join("lib").is_symlink() {
        std::fs::copy(&packaged, system.join(unit)).expect("place unit");
    }
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("--man=no")
        .arg(unit)
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "systemd-analyze verify {unit}:\n{text}"
    );
    text
}

fn build_package(out: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(repo_root())
        .args([
            "run",
            "--quiet",
            "-p",
            "xtask",
            "--",
            "package",
            "--llmtap-bin",
        ])
        .arg(llmtap_bin())
        .arg("--out-dir")
        .arg(out)
        .status()
        .expect("cargo xtask package");
    assert!(status.success(), "cargo xtask package failed");
    std::fs::read_dir(out)
        .expect("out dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb")
}

#[test]
fn the_packaged_unit_verifies_and_its_configuration_is_accepted() {
    let test = "the_packaged_unit_verifies_and_its_configuration_is_accepted";
    if !required_tools_present(test) {
        return;
    }
    let dir = TempDir::new("deb").expect("temp dir");
    let deb = build_package(&dir.path().join("out"));

    let info = Command::new("dpkg-deb")
        .arg("--field")
        .arg(&deb)
        .output()
        .expect("dpkg-deb --field");
    let control = String::from_utf8_lossy(&info.stdout);
    assert!(control.contains("Package: llmtap"), "{control}");
    assert!(control.contains("Depends: libc6 (>= "), "{control}");
    let control_dir = dir.path().join("control");
    let status = Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&control_dir)
        .status()
        .expect("dpkg-deb -e");
    assert!(status.success());
    let conffiles = std::fs::read_to_string(control_dir.join("conffiles")).expect("conffiles");
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/llmtap/llmtap.toml", "/etc/default/llmtap"],
        "configuration survives upgrades"
    );

    let root = dir.path().join("root");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .status()
        .expect("dpkg-deb -x");
    assert!(status.success());
    for file in [
        "usr/bin/llmtap",
        "lib/systemd/system/llmtap.service",
        "etc/llmtap/llmtap.toml",
        "etc/default/llmtap",
    ] {
        assert!(root.join(file).is_file(), "{file} not in the package");
    }

    let unit =
        std::fs::read_to_string(root.join("lib/systemd/system/llmtap.service")).expect("unit");
    for line in [
        "ExecStart=/usr/bin/llmtap run --config /etc/llmtap/llmtap.toml",
        "ProtectSystem=strict",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
    let bounding = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("a capability bounding set");
    for cap in ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_KILL"] {
        assert!(bounding.split(' ').any(|c| c == cap), "{cap}: {bounding}");
    }
    let report = verify(&root, "llmtap.service");
    // verify exits 0 on unknown keys and bad values too: they are warnings naming the file.
    assert!(
        !report.contains("llmtap.service"),
        "systemd-analyze has remarks on the unit:\n{report}"
    );

    // The shipped configuration parses: llmtap gets past it to the price file named here.
    let output = Command::new(root.join("usr/bin/llmtap"))
        .arg("run")
        .arg("--config")
        .arg(root.join("etc/llmtap/llmtap.toml"))
        .args(["--price-file", "/nonexistent/prices.toml"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("packaged llmtap");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("cannot read price file"), "{log}");
}
