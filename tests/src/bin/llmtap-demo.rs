//! `cargo xtask demo`: llmtap's live console view while real clients (the Python `openai` and
//! `anthropic` SDKs, the npm `openai` SDK, curl) call `https://api.openai.com` and friends,
//! answered by the replay server from recorded exchanges. Needs root (eBPF); exits when done.
//! Arguments are handed to `llmtap run` (`cargo xtask demo --backend` adds its export flags).

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use llmtap_tests::replay::{
    ReplayServer, cassette_path, curl_command, https_cassettes, load_json, node_sdk_command,
    python_sdk_command, run_client,
};
use llmtap_tests::{ChildGuard, llmtap_bin};

struct DemoCall {
    what: &'static str,
    cassette: &'static str,
    client: fn(&ReplayServer, &PathBuf) -> anyhow::Result<Command>,
}

const CALLS: &[DemoCall] = &[
    DemoCall {
        what: "Python openai SDK, streaming chat",
        cassette: "openai__chat_stream_include_usage",
        client: |s, p| Ok(python_sdk_command(s, p, &[])),
    },
    DemoCall {
        what: "Python anthropic SDK, streaming with extended thinking",
        cassette: "anthropic__messages_stream_thinking",
        client: |s, p| Ok(python_sdk_command(s, p, &[])),
    },
    DemoCall {
        what: "Node openai SDK, Responses API stream",
        cassette: "openai__responses_stream_1",
        client: |s, p| Ok(node_sdk_command(s, p)),
    },
    DemoCall {
        what: "curl over HTTP/2, Gemini streamGenerateContent",
        cassette: "gcp.gemini__stream_generate_content_sse",
        client: |s, p| Ok(curl_command(s, &load_json(p)?, true)),
    },
    DemoCall {
        what: "Python openai SDK against Groq, with a stop sequence",
        cassette: "groq__chat_stop_sequence",
        client: |s, p| Ok(python_sdk_command(s, p, &[])),
    },
    DemoCall {
        what: "curl, an HTTP 400 from OpenAI",
        cassette: "openai__chat_vision_then_400_3",
        client: |s, p| Ok(curl_command(s, &load_json(p)?, false)),
    },
];

fn main() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo loads eBPF programs: run it as root");
    }
    let server = ReplayServer::start(&https_cassettes()).context("starting the replay server")?;
    println!(
        "replay server on https://{} (test CA {}), answering as api.openai.com, api.anthropic.com, ...",
        server.addr(),
        server.ca_pem_path().display()
    );

    // `cargo xtask demo --backend` passes the export flags of its backend.
    let export_args: Vec<String> = std::env::args().skip(1).collect();
    let mut llmtap = Command::new(llmtap_bin())
        .args(["run", "--summary-interval", "0s"])
        .args(&export_args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", llmtap_bin().display()))?;
    let stderr = llmtap.stderr.take().context("llmtap stderr")?;
    let llmtap = ChildGuard(llmtap);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let log = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut ready = Some(ready_tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("tracing LLM calls")
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
        drop(llmtap);
        let lines = log.join().unwrap_or_default();
        bail!("llmtap did not start:\n{}", lines.join("\n"));
    }
    println!("llmtap is tracing; running real clients (their own output is not shown)\n");

    for call in CALLS {
        let path = cassette_path(call.cassette);
        let mut cmd = (call.client)(&server, &path)?;
        println!("▶ {}", call.what);
        let outcome = run_client(&mut cmd)?;
        if outcome.code != Some(0) {
            println!(
                "  (the client exited with {:?}, as the recorded API answered)",
                outcome.code
            );
        }
        // Lets the span appear under its own heading in the live view.
        std::thread::sleep(Duration::from_millis(700));
    }

    println!("\nstopping llmtap (its exit summary follows)");
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(llmtap.0.id() as i32, libc::SIGINT) };
    let mut llmtap = llmtap;
    let status = llmtap.0.wait()?;
    let lines = log.join().unwrap_or_default();
    if !status.success() {
        bail!("llmtap exited with {status}:\n{}", lines.join("\n"));
    }
    Ok(())
}
