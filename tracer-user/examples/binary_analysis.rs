//! How long discovery takes to analyse the executables it must find TLS in without symbols
//! (Bun, Claude Code, ...). Run by `cargo xtask bench` with the paths; prints one JSON object.
//!
//! Each file is inspected twice: the first time does the analysis (the file's pages are
//! read in from the page cache or the disk), the second is answered from the per-build cache
//! that discovery keeps for the daemon's lifetime.

use std::path::Path;
use std::time::Instant;

use serde_json::json;

fn main() {
    let mut files = Vec::new();
    for path in std::env::args().skip(1) {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let started = Instant::now();
        let first = llmtap::capture::elf::inspect(Path::new(&path), true);
        let first_ms = started.elapsed().as_secs_f64() * 1e3;
        let started = Instant::now();
        let _second = llmtap::capture::elf::inspect(Path::new(&path), true);
        let cached_ms = started.elapsed().as_secs_f64() * 1e3;
        let method = match &first {
            Err(err) => format!("unreadable: {err}"),
            Ok(info) => match &info.boringssl {
                Some(Ok(hooks)) => format!(
                    "BoringSSL by error sites: SSL_write {:#x}, SSL_read {:#x}",
                    hooks.write, hooks.read
                ),
                Some(Err(why)) => why.clone(),
                None if info.exports_openssl => "OpenSSL symbols".to_string(),
                None if matches!(info.aead, Some(Ok(_))) => {
                    "aws-lc AEAD by error sites (stripped rustls)".to_string()
                }
                None if !info.rustls_hooks.is_empty() => "rustls symbols".to_string(),
                None => info
                    .rustls_unhookable
                    .clone()
                    .unwrap_or_else(|| "no TLS library recognised".to_string()),
            },
        };
        files.push(json!({
            "path": path,
            "size_mb": size as f64 / 1e6,
            "first_ms": first_ms,
            "cached_ms": cached_ms,
            "method": method,
        }));
    }
    println!("{}", json!({ "files": files }));
}
