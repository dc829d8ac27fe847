// Sends a recorded request with Deno's `fetch` (rustls over aws-lc inside a stripped Rust
// executable; it offers h2 in ALPN).
//
// Usage: deno run --allow-net --allow-read --allow-env deno_client.ts CASSETTE
//
// The recording's real URL is used unchanged (the harness maps the host to the replay server;
// the test CA comes through DENO_CERT); credential headers recorded as REDACTED carry
// LLMTAP_TEST_API_KEY instead. Prints the response status and body.
const cassette = JSON.parse(await Deno.readTextFile(Deno.args[0]));
const key = Deno.env.get("LLMTAP_TEST_API_KEY") ?? "sk-test";
const headers: Record<string, string> = {};
for (const [name, value] of Object.entries(cassette.request.headers ?? {})) {
  const lower = name.toLowerCase();
  if (["host", "content-length", "transfer-encoding", "connection", "keep-alive", "accept-encoding"].includes(lower)) {
    continue;
  }
  headers[name] = value === "REDACTED" ? (lower === "authorization" ? `Bearer ${key}` : key) : String(value);
}
const body: string = cassette.request.body ?? "";
const res = await fetch(cassette.request.url.split("#")[0], {
  method: cassette.request.method ?? "POST",
  headers,
  body: body.length > 0 ? body : undefined,
});
console.log(`status ${res.status}`);
console.log(await res.text());
