//! The BoringSSL locator on the real executables it exists for: Bun, a `bun build --compile`
//! program, and Claude Code, as installed from npm by `cargo xtask setup` into
//! tests/node_modules. Offsets are checked against what the locator must agree with whatever
//! the release: each found function is the one whose code reports `SSL_write`'s (or
//! `SSL_peek`'s) error reasons, which the unit tests pin down; here the point is that the real
//! builds are recognised, analysed within bounds, and that a compiled program shares Bun's
//! result through the build-id cache.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use llmtap::capture::elf::inspect;

fn node_modules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/node_modules")
}

/// The binary, or `None` (a skip) when setup has not installed it; CI (with
/// `LLMTAP_REQUIRE_EBPF=1`) must have it.
fn installed(relative: &str) -> Option<PathBuf> {
    let path = node_modules().join(relative);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("LLMTAP_REQUIRE_EBPF").is_none(),
        "{} missing: run `cargo xtask setup`",
        path.display()
    );
    eprintln!("skipping: {} not installed", path.display());
    None
}

const BUN: &str = "@oven/bun-linux-x64/bin/bun";
const CLAUDE: &str = "@anthropic-ai/claude-code-linux-x64/claude";

#[test]
fn bun_boringssl_is_located_without_symbols() {
    let Some(bun) = installed(BUN) else { return };
    let started = Instant::now();
    let info = inspect(&bun, true).expect("bun parses");
    assert!(!info.exports_openssl, "bun exports no SSL symbols");
    let hooks = info
        .boringssl
        .expect("BoringSSL recognised")
        .expect("SSL_write/SSL_read located");
    assert_ne!(hooks.write, hooks.read);
    assert!(
        hooks.source.ends_with("boringssl/ssl/ssl_lib.cc"),
        "{hooks:?}"
    );
    eprintln!(
        "bun: SSL_write {:#x}, SSL_read {:#x}, {:?} (inspect {:?})",
        hooks.write,
        hooks.read,
        hooks.analysis,
        started.elapsed()
    );
}

#[test]
fn claude_code_boringssl_is_located_without_symbols() {
    let Some(claude) = installed(CLAUDE) else {
        return;
    };
    let info = inspect(&claude, true).expect("claude parses");
    let hooks = info
        .boringssl
        .expect("BoringSSL recognised")
        .expect("SSL_write/SSL_read located");
    assert_ne!(hooks.write, hooks.read);
    eprintln!(
        "claude: SSL_write {:#x}, SSL_read {:#x}, {:?}",
        hooks.write, hooks.read, hooks.analysis
    );
    // The npm wrapper's `bin/claude.exe` is the same build: answered from the cache.
    let wrapper = node_modules().join("@anthropic-ai/claude-code/bin/claude.exe");
    if wrapper.is_file() {
        let again = inspect(&wrapper, true).expect("wrapper parses");
        assert_eq!(again.boringssl, Some(Ok(hooks)));
    }
}

#[test]
fn a_compiled_bun_program_shares_buns_hooks() {
    let Some(bun) = installed(BUN) else { return };
    let dir = std::env::temp_dir().join(format!("llmtap-bun-compile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let script = dir.join("hello.js");
    std::fs::write(
        &script,
        "console.log(await (await fetch('data:,hi')).text());\n",
    )
    .expect("script");
    let exe = dir.join("hello");
    let out = Command::new(&bun)
        .arg("build")
        .arg("--compile")
        .arg(&script)
        .arg("--outfile")
        .arg(&exe)
        .env("BUN_INSTALL_CACHE_DIR", dir.join("cache"))
        .output()
        .expect("bun runs");
    assert!(
        out.status.success(),
        "bun build --compile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let compiled = inspect(&exe, true).expect("compiled program parses");
    let original = inspect(&bun, true).expect("bun parses");
    let _ = std::fs::remove_dir_all(&dir);
    let (compiled, original) = (
        compiled.boringssl.expect("recognised").expect("located"),
        original.boringssl.expect("recognised").expect("located"),
    );
    assert_eq!(
        (compiled.write, compiled.read),
        (original.write, original.read)
    );
}
