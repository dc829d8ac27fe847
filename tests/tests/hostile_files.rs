//! Files other processes control must not hurt llmtap (issue 19 item 11): a library truncated
//! while llmtap reads it (a mapped file cut short kills its reader with SIGBUS), a FIFO where a
//! process's maps name a library (opening it for reading waits for a writer forever), and a
//! FIFO given as `--ssl-lib`. After each, a call made by a normal client is still traced.
//! Real eBPF, the real `llmtap` binary.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use llmtap_tests::{
    ChildGuard, CliCapture, LoggingTlsServer, TempDir, assert_cli_connection_matches, llmtap_bin,
    require_ebpf, run_client,
};

const ONE_SHOT: &str = r#"
import http.client, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
c = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=ctx)
c.request("GET", "/bytes/3000"); body = c.getresponse().read(); assert len(body) == 3000
print(ssl.OPENSSL_VERSION)
"#;

/// Serializes these tests: each runs its own llmtap.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn system_libssl() -> PathBuf {
    llmtap::capture::targets::default_libssl().expect("system libssl (cargo xtask setup)")
}

/// A normal client's call after the hostile file is traced, byte for byte.
fn assert_a_normal_call_is_traced(capture: &CliCapture) {
    let server = LoggingTlsServer::start().expect("server");
    let (pid, out) =
        run_client(Command::new("python3").args(["-c", ONE_SHOT, &server.port.to_string()]))
            .expect("python one-shot");
    assert!(out.contains("OpenSSL"), "{out}");
    assert_cli_connection_matches(capture, &server, pid, 0);
}

/// Starts `python3 -c script args…` and waits for it to print `ready`.
fn start_ready(mut cmd: Command) -> ChildGuard {
    let mut child = ChildGuard(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("helper process"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "ready", "helper process did not get ready");
    child
}

/// A well-formed ELF shared object whose `.dynsym` is `dynsym_bytes` (a multiple of a symbol's
/// 24 bytes) of zeros, a hole in a sparse file: reading its symbol table takes a while, which
/// is the window in which the test truncates it.
fn write_big_symbol_table_elf(path: &Path, dynsym_bytes: u64) {
    const DYNSTR: u64 = 0x1000;
    const SHSTRTAB: u64 = 0x1100;
    const DYNSYM: u64 = 0x10000;
    let names = b"\0.dynsym\0.dynstr\0.shstrtab\0";
    let shoff = DYNSYM + dynsym_bytes;
    let mut header = Vec::new();
    header.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    header.extend_from_slice(&3u16.to_le_bytes()); // ET_DYN
    header.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes()); // entry
    header.extend_from_slice(&0u64.to_le_bytes()); // phoff
    header.extend_from_slice(&shoff.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [64u16, 56, 0, 64, 4, 3] {
        // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
        header.extend_from_slice(&v.to_le_bytes());
    }
    #[allow(clippy::too_many_arguments)]
    fn section(
        out: &mut Vec<u8>,
        name: u32,
        kind: u32,
        addr: u64,
        offset: u64,
        size: u64,
        link: u32,
        info: u32,
        entsize: u64,
    ) {
        out.extend_from_slice(&name.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&(if kind == 0 { 0u64 } else { 2 }).to_le_bytes()); // SHF_ALLOC
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&link.to_le_bytes());
        out.extend_from_slice(&info.to_le_bytes());
        out.extend_from_slice(&8u64.to_le_bytes());
        out.extend_from_slice(&entsize.to_le_bytes());
    }
    let mut sections = Vec::new();
    section(&mut sections, 0, 0, 0, 0, 0, 0, 0, 0);
    section(&mut sections, 1, 11, DYNSYM, DYNSYM, dynsym_bytes, 2, 1, 24); // .dynsym
    section(&mut sections, 9, 3, DYNSTR, DYNSTR, 1, 0, 0, 0); // .dynstr: ""
    section(
        &mut sections,
        17,
        3,
        0,
        SHSTRTAB,
        names.len() as u64,
        0,
        0,
        0,
    );
    let mut file = std::fs::File::create(path).expect("create");
    use std::os::unix::fs::FileExt as _;
    file.write_all_at(&header, 0).expect("header");
    file.write_all_at(&[0], DYNSTR).expect("dynstr");
    file.write_all_at(names, SHSTRTAB).expect("shstrtab");
    file.write_all_at(&sections, shoff)
        .expect("section headers");
    file.flush().expect("flush");
}

/// Pids of running `llmtap` processes (whatever the binary's name starts with `llmtap`: a
/// copy of an older build, say).
fn llmtap_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("llmtap"))
        })
        .collect()
}

#[test]
fn a_library_truncated_while_llmtap_reads_it_does_not_kill_llmtap() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf("a_library_truncated_while_llmtap_reads_it_does_not_kill_llmtap") {
        return;
    }
    let dir = TempDir::new("truncated-lib").expect("tmp");
    let lib = dir.path().join("libhostile.so");
    write_big_symbol_table_elf(&lib, (256 << 20) / 24 * 24);
    // A process maps it executable, as a loaded library is: llmtap's startup scan reads it.
    let mapper = start_ready({
        let mut cmd = Command::new("python3");
        cmd.args([
            "-c",
            "import mmap, sys, time\n\
             f = open(sys.argv[1], 'rb')\n\
             m = mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC)\n\
             print('ready', flush=True)\n\
             time.sleep(120)",
        ])
        .arg(&lib);
        cmd
    });

    // Truncate the file the moment an llmtap maps it (what made it die of SIGBUS), else once
    // it is up (it must not have mapped it at all).
    let ready = Arc::new(AtomicBool::new(false));
    let watcher = {
        let ready = ready.clone();
        let lib = lib.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(90);
            let needle = lib.display().to_string();
            let mut pids = Vec::new();
            let mut looked_for_pids = Instant::now() - Duration::from_secs(1);
            while !ready.load(Ordering::SeqCst) && Instant::now() < deadline {
                if looked_for_pids.elapsed() > Duration::from_millis(20) {
                    pids = llmtap_pids();
                    looked_for_pids = Instant::now();
                }
                let mapped = pids.iter().any(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/maps"))
                        .is_ok_and(|m| m.contains(&needle))
                });
                if mapped {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&lib)
                .expect("open for truncation");
            file.set_len(4096).expect("truncate");
        })
    };
    let capture = CliCapture::start(&["--comm", "python3"]);
    ready.store(true, Ordering::SeqCst);
    watcher.join().expect("watcher");
    let capture = capture.expect("llmtap survives a library truncated under it");
    assert_a_normal_call_is_traced(&capture);
    drop(mapper);
    let log = capture.log_text();
    assert!(capture.stop(), "llmtap exits cleanly:\n{log}");
}

/// A process in its own mount namespace maps a library, then mounts a FIFO over its path
/// (any user can, in a user namespace): its maps still name the path, which is now a FIFO.
#[test]
fn a_fifo_at_a_mapped_library_path_does_not_block_capture() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf("a_fifo_at_a_mapped_library_path_does_not_block_capture") {
        return;
    }
    let dir = TempDir::new("fifo-lib").expect("tmp");
    let lib = dir.path().join("libssl.so.3");
    std::fs::copy(system_libssl(), &lib).expect("copy libssl");
    let fifo = dir.path().join("fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    let script = "import ctypes, subprocess, sys, time\n\
                  ctypes.CDLL(sys.argv[1])\n\
                  subprocess.run(['mount', '--bind', sys.argv[2], sys.argv[1]], check=True)\n\
                  print('ready', flush=True)\n\
                  time.sleep(120)";
    let holder = start_ready({
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "python3",
            "-c",
            script,
        ])
        .arg(&lib)
        .arg(&fifo);
        cmd
    });
    let capture = CliCapture::start(&["--comm", "python3"])
        .expect("llmtap starts although a process's library path is a FIFO");
    assert!(
        capture.log_text().contains("not a regular file (a FIFO)"),
        "the FIFO is refused and said so:\n{}",
        capture.log_text()
    );
    assert_a_normal_call_is_traced(&capture);
    drop(holder);
    let log = capture.log_text();
    assert!(capture.stop(), "llmtap exits cleanly:\n{log}");
}

#[test]
fn a_fifo_as_ssl_lib_is_a_clear_error_not_a_hang() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf("a_fifo_as_ssl_lib_is_a_clear_error_not_a_hang") {
        return;
    }
    let dir = TempDir::new("fifo-ssl-lib").expect("tmp");
    let fifo = dir.path().join("libssl.so.3");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    let mut child = ChildGuard(
        Command::new(llmtap_bin())
            .args(["capture", "--format", "jsonl", "--ssl-lib"])
            .arg(&fifo)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("llmtap"),
    );
    // Waiting is bounded: a hang (the old behaviour) fails the test instead of blocking it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = status.expect("llmtap --ssl-lib FIFO returns instead of hanging");
    let mut stderr = String::new();
    use std::io::Read as _;
    child
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("not a regular file (a FIFO)"), "{stderr}");

    // Capture itself is fine with the same FIFO present.
    let capture = CliCapture::start(&["--comm", "python3"]).expect("llmtap");
    assert_a_normal_call_is_traced(&capture);
    assert!(capture.stop());
}
