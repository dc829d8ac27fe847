// Sends a recorded OpenAI-compatible request through the official `openai` npm SDK
// (tests/node_modules, installed by `cargo xtask setup`) on the system's node.
//
// Usage: node sdk_client.mjs CASSETTE
//
// Points the SDK at the recording's real base URL (the harness maps the host to the replay
// server and trusts its CA through NODE_EXTRA_CA_CERTS); the key is LLMTAP_TEST_API_KEY.
// Prints every streamed chunk (or the whole response) as one JSON line; exits 3 on an API error.
import { readFileSync } from "node:fs";
import OpenAI from "openai";

const ENDPOINTS = {
  chat_completions: ["/chat/completions", (c) => c.chat.completions],
  completions: ["/completions", (c) => c.completions],
  embeddings: ["/embeddings", (c) => c.embeddings],
  responses: ["/responses", (c) => c.responses],
};

const cassette = JSON.parse(readFileSync(process.argv[2], "utf8"));
const endpoint = ENDPOINTS[cassette.api];
if (!endpoint) {
  console.error(`not an OpenAI-compatible recording: ${cassette.api}`);
  process.exit(2);
}
const [suffix, resource] = endpoint;
const url = new URL(cassette.request.url);
if (!url.pathname.endsWith(suffix)) {
  console.error(`unexpected path ${url.pathname}`);
  process.exit(2);
}
const client = new OpenAI({
  apiKey: process.env.LLMTAP_TEST_API_KEY ?? "sk-test",
  baseURL: `${url.origin}${url.pathname.slice(0, -suffix.length)}`,
  maxRetries: 0,
});
const body = JSON.parse(cassette.request.body);
try {
  const result = await resource(client).create(body);
  if (body.stream) {
    for await (const chunk of result) console.log(JSON.stringify(chunk));
  } else {
    console.log(JSON.stringify(result));
  }
} catch (e) {
  if (e instanceof OpenAI.APIError) {
    console.log(`API error: ${e.constructor.name}: ${e.status} ${JSON.stringify(e.error)}`);
    process.exit(3);
  }
  throw e;
}
