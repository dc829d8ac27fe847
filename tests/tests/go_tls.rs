//! Go programs (crypto/tls compiled in, no OpenSSL) are traced through uprobes on
//! `crypto/tls.(*Conn).Write`/`Read`, with return probes at each `RET`. The client is
//! `clients/go-client` (standard library only), built here with the system's Go (`golang-go`,
//! installed by `cargo xtask setup`), statically (no cgo), offline. Real eBPF, the real binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use llmtap::capture::go_tls::SymbolSource;
use llmtap_tests::cassette_run::{CassetteServer, LlmtapRun, TestPki};
use llmtap_tests::{ChildGuard, llmtap_bin, repo_root, require_ebpf};

/// Two streaming and two non-streaming recorded calls to api.openai.com (the host the test
/// certificate names), each with its own response id.
const CASSETTES: [&str; 4] = [
    "tests/data/cassettes/openai__chat_stream_include_usage.json",
    "tests/data/cassettes/openai__responses_stream_1.json",
    "tests/data/cassettes/openai__chat_parallel_tool_calls.json",
    "tests/data/cassettes/openai__completions.json",
];

/// Serializes the tests that run their own llmtap.
static SERIAL: Mutex<()> = Mutex::new(());

/// The Go client, built once: (unstripped, stripped with `-ldflags=-s -w`).
struct GoClients {
    plain: PathBuf,
    stripped: PathBuf,
}

fn go_clients() -> &'static GoClients {
    static BUILT: OnceLock<GoClients> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-client");
        let build = |name: &str, ldflags: &str| -> PathBuf {
            let exe = out.join(name);
            let result = Command::new("go")
                .current_dir(repo_root().join("tests/clients/go-client"))
                .args(["build", "-trimpath", "-ldflags", ldflags, "-o"])
                .arg(&exe)
                .arg(".")
                // Offline and self-contained: no module downloads, caches in the target dir,
                // pure Go (cgo would bring in libc's resolver, not OpenSSL, but keep it out).
                .env("GOFLAGS", "-mod=mod")
                .env("GOPROXY", "off")
                .env("GOTOOLCHAIN", "local")
                .env("CGO_ENABLED", "0")
                .env("GOCACHE", out.join("cache"))
                .env("GOPATH", out.join("gopath"))
                .output()
                .expect("running `go build` (Debian golang-go, installed by `cargo xtask setup`)");
            assert!(
                result.status.success(),
                "go build {name}: {}",
                String::from_utf8_lossy(&result.stderr)
            );
            exe
        };
        GoClients {
            plain: build("go-client", ""),
            stripped: build("go-client-stripped", "-s -w"),
        }
    })
}

fn load(path: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(repo_root().join(path)).expect("cassette"))
        .expect("cassette json")
}

/// Output and exit status of one run of the client.
fn run_go(cmd: &mut Command) -> (u32, String, std::process::ExitStatus) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the Go client");
    let pid = child.id();
    let out = child.wait_with_output().expect("Go client output");
    assert!(
        out.stderr.is_empty(),
        "go-client wrote to stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        pid,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status,
    )
}

/// Every span of `pid`, grouped by response id, must be exactly `per_cassette` spans per
/// cassette, each with that cassette's values, complete, over `protocol`.
fn assert_spans_per_call(
    spans: &[serde_json::Value],
    pid: u32,
    cassettes: &[serde_json::Value],
    per_cassette: usize,
    protocol: &str,
    log: &str,
) {
    let ours: Vec<_> = spans
        .iter()
        .filter(|s| s["resource"]["process.pid"].as_u64() == Some(u64::from(pid)))
        .collect();
    assert_eq!(
        ours.len(),
        cassettes.len() * per_cassette,
        "one span per call for pid {pid}: {ours:#?}\n{log}"
    );
    let mut by_id: BTreeMap<String, Vec<&serde_json::Value>> = BTreeMap::new();
    for span in &ours {
        let id = span["attributes"]["gen_ai.response.id"]
            .as_str()
            .unwrap_or_else(|| panic!("span without a response id: {span:#}"))
            .to_string();
        by_id.entry(id).or_default().push(span);
    }
    for cassette in cassettes {
        let expected = &cassette["expected"];
        let id = expected["response_id"]
            .as_str()
            .expect("cassette response id");
        let spans = by_id.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(spans.len(), per_cassette, "spans of {id}: {by_id:#?}");
        for span in spans {
            let attrs = &span["attributes"];
            assert_eq!(attrs["gen_ai.provider.name"], cassette["provider"]);
            assert_eq!(attrs["gen_ai.operation.name"], expected["operation"]);
            for (attr, key) in [
                ("gen_ai.request.model", "request_model"),
                ("gen_ai.response.model", "response_model"),
                ("gen_ai.response.finish_reasons", "finish_reasons"),
                ("gen_ai.usage.input_tokens", "input_tokens"),
                ("gen_ai.usage.output_tokens", "output_tokens"),
                ("llmtap.stream.chunks", "stream_chunks"),
            ] {
                assert_eq!(attrs[attr], expected[key], "{attr}: {span:#}");
            }
            // Set when the request says `"stream"`; absent means not streamed.
            assert_eq!(
                attrs["gen_ai.request.stream"].as_bool().unwrap_or(false),
                cassette["streaming"].as_bool().expect("cassette streaming flag"),
                "{span:#}"
            );
            assert_eq!(attrs["http.response.status_code"], 200, "{span:#}");
            assert_eq!(attrs["network.protocol.version"], protocol, "{span:#}");
            assert_eq!(attrs["server.address"], "api.openai.com", "{span:#}");
            assert!(attrs.get("llmtap.call.incomplete").is_none(), "{span:#}");
            assert_eq!(span["resource"]["process.executable.name"], "go-client");
        }
    }
}

#[test]
fn hook_points_from_symtab_and_pclntab_agree() {
    let clients = go_clients();
    let plain = llmtap::capture::elf::inspect(&clients.plain, true).expect("inspect");
    let stripped = llmtap::capture::elf::inspect(&clients.stripped, true).expect("inspect");
    assert!(plain.has_symtab && !stripped.has_symtab);
    let version = plain.go_version.clone().expect("a Go version");
    assert!(version.starts_with("go1."), "{version}");
    assert_eq!(stripped.go_version, plain.go_version);
    let from_symtab = plain.go_tls.expect("Go binary").expect("hookable");
    let from_pclntab = stripped.go_tls.expect("Go binary").expect("hookable");
    assert_eq!(from_symtab.source, SymbolSource::Symtab);
    assert_eq!(from_pclntab.source, SymbolSource::Pclntab);
    assert!(!from_symtab.read.returns.is_empty());
    assert!(from_symtab.close.is_some());
    // Same code in both files (stripping drops only the symbol table), so the same offsets.
    assert_eq!(from_symtab.write, from_pclntab.write);
    assert_eq!(from_symtab.read, from_pclntab.read);
    assert_eq!(from_symtab.close, from_pclntab.close);
    let code = std::fs::read(&clients.plain).expect("read client");
    for ret in &from_symtab.read.returns {
        let at = usize::try_from(*ret).expect("offset");
        assert!(
            matches!(code.get(at), Some(0xc3 | 0xc2)),
            "RET opcode at {ret:#x}"
        );
    }
}

/// 20 calls in flight at once from 20 goroutines over HTTP/1.1 (one connection each, on
/// whichever threads the Go scheduler picks): every call is one span with its cassette's
/// values; the client prints and exits the same with and without llmtap.
#[test]
fn twenty_goroutines_over_http1_each_call_one_span() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf("twenty_goroutines_over_http1_each_call_one_span") {
        return;
    }
    let clients = go_clients();
    let cassettes: Vec<_> = CASSETTES.iter().map(|p| load(p)).collect();
    let pki = TestPki::generate().expect("pki");
    let servers: Vec<_> = CASSETTES
        .iter()
        .map(|p| CassetteServer::start(&pki, &repo_root().join(p)).expect("server"))
        .collect();
    let command = || {
        let mut cmd = Command::new(&clients.plain);
        cmd.args(["-concurrency", "20", "-repeat", "5", "-wait", "500ms"])
            .args(CASSETTES.iter().zip(&servers).map(|(path, server)| {
                format!(
                    "{}=127.0.0.1:{}",
                    repo_root().join(path).display(),
                    server.port
                )
            }))
            .env("SSL_CERT_FILE", pki.path("ca.pem"))
            .env("GODEBUG", "http2client=0");
        cmd
    };
    let (_, untraced_out, untraced_status) = run_go(&mut command());
    assert!(untraced_status.success(), "{untraced_out}");
    assert_eq!(untraced_out.lines().count(), 20, "{untraced_out}");
    assert!(
        untraced_out
            .lines()
            .all(|l| l.contains(" 200 ") && l.ends_with("HTTP/1.1")),
        "{untraced_out}"
    );

    let llmtap = LlmtapRun::start().expect("llmtap");
    let (pid, traced_out, traced_status) = run_go(&mut command());
    let (spans, log) = llmtap.stop_after(20);
    assert_eq!(traced_out, untraced_out, "output unchanged under llmtap");
    assert_eq!(traced_status.code(), untraced_status.code());
    assert!(
        log.contains("crypto/tls.(*Conn).Write") && log.contains("go-client"),
        "the Go client was hooked through crypto/tls:\n{log}"
    );
    assert_spans_per_call(&spans, pid, &cassettes, 5, "1.1", &log);
}

/// A stripped Go binary (`-ldflags=-s -w`, no `.symtab`) is found through `.gopclntab`,
/// listed by `llmtap targets` with its Go version, and traced like the unstripped one.
#[test]
fn stripped_go_binary_is_listed_and_traced() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf("stripped_go_binary_is_listed_and_traced") {
        return;
    }
    let clients = go_clients();
    let path = CASSETTES[0];
    let cassette = load(path);
    let pki = TestPki::generate().expect("pki");
    let server = CassetteServer::start(&pki, &repo_root().join(path)).expect("server");
    let llmtap = LlmtapRun::start().expect("llmtap");
    let child = Command::new(&clients.stripped)
        .args(["-repeat", "2", "-wait", "1500ms"])
        .arg(format!(
            "{}=127.0.0.1:{}",
            repo_root().join(path).display(),
            server.port
        ))
        .env("SSL_CERT_FILE", pki.path("ca.pem"))
        .env("GODEBUG", "http2client=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stripped client");
    let pid = child.id();
    let mut child = ChildGuard(child);
    std::thread::sleep(Duration::from_millis(500));
    let targets = Command::new(llmtap_bin())
        .args(["targets", "--pid", &pid.to_string()])
        .output()
        .expect("llmtap targets");
    let listing = String::from_utf8_lossy(&targets.stdout);
    let line = listing
        .lines()
        .find(|l| l.contains(&pid.to_string()))
        .unwrap_or_else(|| panic!("pid {pid} listed:\n{listing}"));
    assert!(
        line.contains("hook (go tls)") && line.contains("(go1."),
        "{listing}"
    );
    let status = child.0.wait().expect("wait");
    let mut stdout = String::new();
    if let Some(mut out) = child.0.stdout.take() {
        std::io::Read::read_to_string(&mut out, &mut stdout).expect("stdout");
    }
    assert!(status.success(), "{stdout}");
    let (spans, log) = llmtap.stop_after(2);
    let ours: Vec<_> = spans
        .iter()
        .filter(|s| s["resource"]["process.pid"].as_u64() == Some(u64::from(pid)))
        .cloned()
        .collect();
    assert_eq!(ours.len(), 2, "{spans:#?}\n{log}");
    for span in &ours {
        let attrs = &span["attributes"];
        assert_eq!(
            attrs["gen_ai.response.id"],
            cassette["expected"]["response_id"]
        );
        assert_eq!(
            attrs["gen_ai.usage.output_tokens"],
            cassette["expected"]["output_tokens"]
        );
        assert_eq!(
            attrs["llmtap.stream.chunks"],
            cassette["expected"]["stream_chunks"]
        );
        assert!(attrs.get("llmtap.call.incomplete").is_none(), "{span:#}");
    }
}
