//! A synchronous HTTPS client on rustls alone (`rustls::StreamOwned` over a `TcpStream`, no
//! OpenSSL, no async runtime), for the end-to-end tests of what is peculiar to rustls: how a
//! connection ends (its drop, nothing else) and vectored writes.
//!
//! Usage: `rustls-sync-client MODE CASSETTE.json` — sends the cassette's recorded request over
//! HTTP/1.1 (`Connection: close`) to the URL's host on port 443 (the test's `/etc/hosts` points
//! it at the replay server; the CA in `SSL_CERT_FILE` is the only one trusted). Modes:
//! - `vectored`: one call whose request goes out in one `write_vectored` of
//!   [`VECTORED_SLICES`] slices;
//! - `sequence`: [`SEQUENCE_CALLS`] calls in turn, each on its own connection held in the same
//!   place (so the allocator hands each the address of the last one); every other call reads
//!   only the first bytes of its response before dropping its connection. Prints one line per
//!   call: `call I conn 0xADDRESS full|partial`;
//! - `part` / `full`: one call; `part` reads the first bytes of the response and exits without
//!   dropping the connection (as a killed process would), `full` reads it all.
//!
//! Full calls print `status CODE body N bytes`. `RUSTLS_CLIENT_DELAY_MS` waits before the first
//! connection: a brand-new binary is hooked within milliseconds of its exec, and against a local
//! server this one would otherwise write first.
//!
//! Built in the test profile like `rustls-client`, so the rustls functions llmtap hooks stay
//! real functions with symbols.

use std::io::{IoSlice, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// IoSlices of the `vectored` request: more than llmtap once followed (64).
const VECTORED_SLICES: usize = 150;
/// Calls made by `sequence`.
const SEQUENCE_CALLS: usize = 6;
/// Response bytes a partial call reads before it stops.
const PARTIAL_BYTES: usize = 64;

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rustls-sync-client: {err:#}");
            ExitCode::FAILURE
        }
    }
}

struct Call {
    host: String,
    port: u16,
    request: Vec<u8>,
    config: Arc<ClientConfig>,
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: rustls-sync-client vectored|sequence|part|full CASSETTE.json";
    let mode = args.next().ok_or_else(|| anyhow!(usage))?;
    let cassette_path = args.next().ok_or_else(|| anyhow!(usage))?;
    let call = prepare(&cassette_path)?;
    if let Some(ms) = std::env::var("RUSTLS_CLIENT_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    match mode.as_str() {
        "vectored" => {
            let mut tls = call.connect()?;
            let slices: Vec<IoSlice<'_>> = call
                .request
                .chunks(call.request.len().div_ceil(VECTORED_SLICES))
                .map(IoSlice::new)
                .collect();
            if slices.len() <= 64 {
                bail!("the request is too short for {VECTORED_SLICES} slices");
            }
            // `StreamOwned` has no `write_vectored` of its own (the default writes one slice);
            // `Stream`'s hands all the slices to rustls's `Writer::write_vectored`.
            let written =
                rustls::Stream::new(&mut tls.conn, &mut tls.sock).write_vectored(&slices)?;
            if written != call.request.len() {
                bail!(
                    "write_vectored took {written} of {} bytes",
                    call.request.len()
                );
            }
            tls.flush()?;
            read_all(&mut tls)?;
        }
        "sequence" => {
            for i in 0..SEQUENCE_CALLS {
                // One place for every connection: each new one gets the last one's address.
                let mut tls = call.connect()?;
                let address = &tls.conn as *const ClientConnection as usize;
                let full = i % 2 == 1;
                println!(
                    "call {i} conn {address:#x} {}",
                    if full { "full" } else { "partial" }
                );
                tls.write_all(&call.request)?;
                tls.flush()?;
                if full {
                    read_all(&mut tls)?;
                } else {
                    read_partial(&mut tls)?;
                }
                // Dropped here, in place (`drop(tls)` would move it, and drop it elsewhere).
            }
        }
        // One call site and one frame for both: the same stack, hence the same connection
        // address, in a `part` and a `full` process (address randomisation off).
        "part" | "full" => one_call(&call, mode == "full")?,
        other => bail!("unknown mode {other:?}; {usage}"),
    }
    Ok(())
}

/// One call; a partial one exits without dropping its connection, as a killed or crashing
/// process would.
#[inline(never)]
fn one_call(call: &Call, full: bool) -> anyhow::Result<()> {
    let mut tls = call.connect()?;
    println!("conn {:#x}", &tls.conn as *const ClientConnection as usize);
    tls.write_all(&call.request)?;
    tls.flush()?;
    if full {
        return read_all(&mut tls);
    }
    read_partial(&mut tls)?;
    std::process::exit(0);
}

/// The cassette's request as HTTP/1.1 bytes, and the TLS configuration.
fn prepare(cassette_path: &str) -> anyhow::Result<Call> {
    let cassette: serde_json::Value = serde_json::from_slice(
        &std::fs::read(cassette_path).with_context(|| format!("reading {cassette_path}"))?,
    )?;
    let request = &cassette["request"];
    let url = request["url"]
        .as_str()
        .ok_or_else(|| anyhow!("cassette has no request.url"))?;
    let url: reqwest::Url = url.split('#').next().unwrap_or(url).parse()?;
    let host = url
        .host_str()
        .ok_or_else(|| anyhow!("no host in {url}"))?
        .to_string();
    let port = url.port().unwrap_or(443);
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    };
    let method = request["method"].as_str().unwrap_or("POST");
    let body = request["body"].as_str().unwrap_or_default();
    let mut head = format!("{method} {target} HTTP/1.1\r\nhost: {host}\r\n");
    if let Some(headers) = request["headers"].as_object() {
        for (name, value) in headers {
            // Framing is this client's own; compression would only make the server's job
            // harder.
            if matches!(
                name.to_ascii_lowercase().as_str(),
                "host" | "content-length" | "accept-encoding" | "connection" | "transfer-encoding"
            ) {
                continue;
            }
            if let Some(value) = value.as_str() {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());

    let ca = std::env::var_os("SSL_CERT_FILE").ok_or_else(|| anyhow!("SSL_CERT_FILE unset"))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Call {
        host,
        port,
        request: bytes,
        config: Arc::new(config),
    })
}

impl Call {
    fn connect(&self) -> anyhow::Result<Tls> {
        let name = ServerName::try_from(self.host.clone())?;
        let conn = ClientConnection::new(self.config.clone(), name)?;
        let sock = TcpStream::connect((self.host.as_str(), self.port))
            .with_context(|| format!("connecting to {}:{}", self.host, self.port))?;
        Ok(StreamOwned::new(conn, sock))
    }
}

/// Reads the response to its end (the server closes: `connection: close`).
fn read_all(tls: &mut Tls) -> anyhow::Result<()> {
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        // A server that closes without close_notify: the response is still whole.
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(err) => return Err(err.into()),
    }
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_ascii_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("no status line in {} bytes", response.len()))?;
    let body = text
        .find("\r\n\r\n")
        .map_or(0, |at| response.len() - at - 4);
    println!("status {status} body {body} bytes");
    Ok(())
}

/// Reads the first bytes of the response only.
fn read_partial(tls: &mut Tls) -> anyhow::Result<()> {
    let mut got = 0;
    let mut buf = [0u8; PARTIAL_BYTES];
    while got < PARTIAL_BYTES {
        let n = tls.read(&mut buf[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(())
}
