// Sends a recorded request through Bun's own HTTP stacks: `fetch` (Bun's native client, on its
// "HTTP Client" thread) or `node:https` (Bun's Node compatibility layer, on the main thread).
// Both end in the BoringSSL linked into the bun executable, which has no SSL symbols.
//
// Usage: bun bun_client.mjs CASSETTE fetch|https
//
// The recording's real URL is used unchanged (the harness maps the host to the replay server
// and trusts its CA through NODE_EXTRA_CA_CERTS); credential headers recorded as REDACTED carry
// LLMTAP_TEST_API_KEY instead. Prints the response status and body.
import { readFileSync } from "node:fs";
import https from "node:https";

const [cassettePath, mode] = process.argv.slice(2);
const cassette = JSON.parse(readFileSync(cassettePath, "utf8"));
const key = process.env.LLMTAP_TEST_API_KEY ?? "sk-test";
const request = cassette.request;
const url = request.url.split("#")[0];
const headers = {};
for (const [name, value] of Object.entries(request.headers ?? {})) {
  const lower = name.toLowerCase();
  if (["host", "content-length", "transfer-encoding", "connection", "keep-alive", "accept-encoding"].includes(lower)) {
    continue;
  }
  headers[name] = value === "REDACTED" ? (lower === "authorization" ? `Bearer ${key}` : key) : value;
}
const body = request.body ?? "";

async function viaFetch() {
  const res = await fetch(url, {
    method: request.method ?? "POST",
    headers,
    body: body.length > 0 ? body : undefined,
  });
  return [res.status, await res.text()];
}

function viaHttps() {
  return new Promise((resolve, reject) => {
    const bytes = Buffer.from(body, "utf8");
    const req = https.request(url, {
      method: request.method ?? "POST",
      headers: bytes.length > 0 ? { ...headers, "content-length": bytes.length } : headers,
    }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve([res.statusCode, Buffer.concat(chunks).toString("utf8")]));
    });
    req.on("error", reject);
    if (bytes.length > 0) req.write(bytes);
    req.end();
  });
}

const [status, text] = mode === "https" ? await viaHttps() : await viaFetch();
console.log(`status ${status}`);
console.log(text);
