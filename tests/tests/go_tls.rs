//! Go programs (crypto/tls compiled in, no OpenSSL) are traced through uprobes on
//! `crypto/tls.(*Conn).Write`/`Read`, with return probes at each `RET`. The client is
//! `clients/go-client` (standard library only), built here with the system's Go (`golang-go`,
//! installed by `cargo xtask setup`), statically (no cgo), offline. Real eBPF, the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use llmtap::capture::go_tls::SymbolSource;
use llmtap_tests::replay::{
    self, LlmtapRun, ReplayOptions, ReplayServer, span_differences, spans_of,
};
use llmtap_tests::{ChildGuard, go_client, llmtap_bin, repo_root, require_ebpf};

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
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"));
        GoClients {
            plain: go_client(out, "go-client", ""),
            stripped: go_client(out, "go-client-stripped", "-s -w"),
        }
    })
}

fn load(path: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(repo_root().join(path)).expect("cassette"))
        .expect("cassette json")
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
    let server = ReplayServer::start(&[repo_root().join(path)]).expect("server");
    let llmtap = LlmtapRun::start(&[]).expect("llmtap");
    let child = server
        .client_command(&clients.stripped)
        .args(["-repeat", "2", "-wait", "1500ms"])
        .arg(repo_root().join(path))
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

/// 20 goroutines against the replay server, the Go client calling `https://api.openai.com`
/// unmodified (private `/etc/hosts`, test CA in `SSL_CERT_FILE`): with `http2`, Go's default
/// ALPN h2 multiplexes the calls as streams; without, `GODEBUG=http2client=0` gives one
/// HTTP/1.1 connection per call in flight. Each call is one span matching its own response
/// (the server gives each streamed response its own id, which the client prints), and the
/// client's output and exit code are the same with and without llmtap.
fn replay_calls_each_one_span(test: &str, http2: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_ebpf(test) {
        return;
    }
    const REPEAT: usize = 5;
    let clients = go_clients();
    let paths: Vec<PathBuf> = CASSETTES.iter().map(|p| repo_root().join(p)).collect();
    let cassettes: Vec<_> = CASSETTES.iter().map(|p| load(p)).collect();
    let server = ReplayServer::start_with(
        &paths,
        &ReplayOptions {
            unique_ids: true,
            http1_only: !http2,
            ..ReplayOptions::default()
        },
    )
    .expect("replay server");
    let command = || {
        let mut cmd = server.client_command(&clients.plain);
        cmd.args(["-concurrency", "20", "-repeat", &REPEAT.to_string()])
            .args(["-wait", "500ms"])
            .args(&paths);
        if !http2 {
            cmd.env("GODEBUG", "http2client=0");
        }
        cmd
    };
    let proto = if http2 { "HTTP/2.0" } else { "HTTP/1.1" };
    // How often each recorded body names its response id.
    let id_counts: Vec<usize> = cassettes
        .iter()
        .map(|c| {
            let body = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                c["response"]["body_b64"].as_str().expect("body"),
            )
            .expect("base64 body");
            let id = c["expected"]["response_id"].as_str().unwrap_or("\0");
            body.windows(id.len())
                .filter(|w| *w == id.as_bytes())
                .count()
        })
        .collect();
    // The output with the per-call ids the server assigns (which differ from run to run, and
    // with them the body sizes) taken out: "index status size-as-recorded protocol".
    let visible = |out: &str| -> Vec<String> {
        out.lines()
            .map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let mut size: usize = fields.get(2).and_then(|f| f.parse().ok()).unwrap_or(0);
                if let (Some(id), Some(index)) = (
                    fields.get(4),
                    fields.first().and_then(|f| f.parse::<usize>().ok()),
                ) {
                    let which = index / REPEAT;
                    let recorded = cassettes[which]["expected"]["response_id"]
                        .as_str()
                        .unwrap_or_default();
                    size -= (id.len() - recorded.len()) * id_counts[which];
                }
                format!("{} {} {size} {}", fields[0], fields[1], fields[3])
            })
            .collect()
    };
    let untraced = replay::run_client(&mut command()).expect("untraced run");
    assert_eq!(untraced.code, Some(0), "{}", untraced.stderr);
    assert_eq!(untraced.stdout.lines().count(), 20, "{}", untraced.stdout);
    // Every body arrived whole (as recorded, once the server's ids are taken out).
    for line in visible(&untraced.stdout) {
        let fields: Vec<&str> = line.split(' ').collect();
        let which = fields[0].parse::<usize>().expect("index") / REPEAT;
        let recorded = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            cassettes[which]["response"]["body_b64"]
                .as_str()
                .expect("body"),
        )
        .expect("base64 body");
        assert_eq!(fields[2], recorded.len().to_string(), "{line}");
    }
    assert!(
        untraced
            .stdout
            .lines()
            .all(|l| l.split(' ').nth(3) == Some(proto)),
        "{}",
        untraced.stdout
    );

    let llmtap = replay::LlmtapRun::start(&[]).expect("llmtap");
    let traced = replay::run_client(&mut command()).expect("traced run");
    llmtap.wait_for(|spans| spans_of(spans, traced.pid).len() >= 20);
    let (spans, jsonl, log) = llmtap.stop();
    assert!(
        !jsonl.contains(replay::PLANTED_API_KEY) && !log.contains(replay::PLANTED_API_KEY),
        "the API key the Go client sent leaked into llmtap's output or log"
    );
    assert_eq!(traced.code, untraced.code, "{}", traced.stderr);
    assert_eq!(visible(&traced.stdout), visible(&untraced.stdout));
    assert!(
        server.served().iter().all(|(_, v)| v == proto),
        "{:?}",
        server.served()
    );

    // What each call received: its cassette (calls are sent cassette by cassette) and the
    // response id (assigned by the server, or the recorded one for gzip bodies).
    let mut expected: Vec<(usize, String)> = traced
        .stdout
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let index: usize = fields[0].parse().expect("call index");
            let which = index / REPEAT;
            let id = fields.get(4).map(|s| s.to_string()).unwrap_or_else(|| {
                cassettes[which]["expected"]["response_id"]
                    .as_str()
                    .expect("recorded id")
                    .to_string()
            });
            (which, id)
        })
        .collect();
    let ours = spans_of(&spans, traced.pid);
    assert_eq!(ours.len(), 20, "one span per call: {ours:#?}\n{log}");
    let version = if http2 { "2" } else { "1.1" };
    for span in ours {
        let id = span["attributes"]["gen_ai.response.id"]
            .as_str()
            .unwrap_or_default();
        let at = expected
            .iter()
            .position(|(_, want)| want == id)
            .unwrap_or_else(|| panic!("span {id:?} matches no call left: {expected:?}\n{span:#}"));
        let (which, _) = expected.swap_remove(at);
        let mut cassette = cassettes[which].clone();
        cassette["expected"]["response_id"] = serde_json::Value::from(id);
        let diffs = span_differences(span, &cassette, version);
        assert!(diffs.is_empty(), "{id}: {diffs:#?}\n{span:#}");
    }
    assert!(expected.is_empty(), "calls without a span: {expected:?}");
}

#[test]
fn twenty_goroutines_over_h2_each_call_one_span() {
    replay_calls_each_one_span("twenty_goroutines_over_h2_each_call_one_span", true);
}

#[test]
fn twenty_goroutines_over_http1_replay_each_call_one_span() {
    replay_calls_each_one_span(
        "twenty_goroutines_over_http1_replay_each_call_one_span",
        false,
    );
}
