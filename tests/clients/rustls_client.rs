//! A Rust HTTPS client on reqwest + rustls (no OpenSSL anywhere), used by the end-to-end tests
//! to check that llmtap's rustls hooks capture a real call.
//!
//! Usage: `rustls-client CASSETTE.json [IP:PORT]` — sends the cassette's recorded request
//! (method, URL, headers, body) over HTTP/1.1; with `IP:PORT`, the URL's host name is resolved
//! to `IP` and its port replaced by `PORT` (the host name, hence `Host` and SNI, stay as
//! recorded), reads the whole
//! response body chunk by chunk and prints its status and size. The CA in `SSL_CERT_FILE` is
//! trusted in addition to nothing else, so the test server's certificate is accepted.
//!
//! It is built by cargo as a binary of the test package, in the test (debug) profile: at
//! opt-level 0 the small rustls functions llmtap hooks (`Writer::write`, `Reader::read`, ...)
//! stay real functions with symbols; optimised builds may inline them into their callers.

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rustls-client: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let cassette_path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: rustls-client CASSETTE.json [IP:PORT]"))?;
    let cassette: serde_json::Value = serde_json::from_slice(&std::fs::read(&cassette_path)?)?;
    let request = &cassette["request"];
    let mut url: reqwest::Url = request["url"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("cassette has no request.url"))?
        .parse()?;
    url.set_fragment(None);
    let connect_to: Option<std::net::SocketAddr> = args.next().map(|a| a.parse()).transpose()?;
    let method: reqwest::Method = request["method"].as_str().unwrap_or("POST").parse()?;
    let body = request["body"].as_str().unwrap_or_default().to_string();

    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder().http1_only();
    if let Some(addr) = connect_to {
        let host = url
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("no host in {url}"))?
            .to_string();
        url.set_port(Some(addr.port()))
            .map_err(|()| anyhow::anyhow!("cannot set a port on {url}"))?;
        builder = builder.resolve(&host, addr);
    }
    if let Some(ca) = std::env::var_os("SSL_CERT_FILE") {
        let pem = std::fs::read(&ca)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)?;
        builder = builder.tls_certs_only(certs);
    }
    let client = builder.build()?;

    let mut call = client.request(method, url).body(body);
    if let Some(headers) = request["headers"].as_object() {
        for (name, value) in headers {
            // Framing and routing are the client's own business; compression would only make
            // the test server's job harder.
            if matches!(
                name.to_ascii_lowercase().as_str(),
                "host" | "content-length" | "accept-encoding" | "connection" | "transfer-encoding"
            ) {
                continue;
            }
            if let Some(value) = value.as_str() {
                call = call.header(name.as_str(), value);
            }
        }
    }
    // A brand-new binary is hooked within tens of milliseconds of its exec (README, "What gets
    // hooked, and when"); a real client spends that on start-up and DNS, but against a local
    // server this one would send its request first. `RUSTLS_CLIENT_DELAY_MS` waits before it.
    if let Some(ms) = std::env::var("RUSTLS_CLIENT_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let mut response = call.send().await?;
    let status = response.status();
    let mut received = 0usize;
    while let Some(chunk) = response.chunk().await? {
        received += chunk.len();
    }
    println!("status {} body {received} bytes", status.as_u16());
    Ok(())
}
