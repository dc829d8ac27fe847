#!/usr/bin/env python3
"""Client side of llmtap's fault tests: OpenAI-shaped calls to tests/servers/fault_server.py.

Usage: fault_client.py PORT MODE [ARG]
Each mode first waits for a line on stdin ("go"), so the test can start llmtap with
--pid <this pid> before the first TLS byte is written.
  stream FAULT     one streamed call with ?fault=FAULT; prints "first-event" after the first
                   SSE event, then "events N" and "complete" or "incomplete"; waits for stdin
                   to close before exiting (its connection is closed first), exit 0
  endless BYTES    one ?fault=endless stream, read until BYTES bytes arrived; prints
                   "read N", closes the connection, waits for stdin to close, exit 0
  big SIZE         one ?fault=big call of SIZE bytes; prints "read N" (checks every byte)
  loop STOPFILE    ?fault=ok calls, a new connection each, until STOPFILE exists; each
                   response is checked; prints "call N ok" per call, exit 0 when all were right
"""
import http.client
import json
import os
import ssl
import sys

port = int(sys.argv[1])
mode = sys.argv[2]
arg = sys.argv[3] if len(sys.argv) > 3 else ""

ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
BODY = json.dumps({
    "model": "gpt-4o-mini",
    "stream": True,
    "stream_options": {"include_usage": True},
    "messages": [{"role": "user", "content": "Say hello"}],
})
HEADERS = {
    "Host": "api.openai.com",
    "Content-Type": "application/json",
    "Authorization": "Bearer sk-test-not-a-key",
}


def say(line):
    print(line, flush=True)


def call(fault, query=""):
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
    conn.request("POST", f"/v1/chat/completions?fault={fault}{query}", body=BODY, headers=HEADERS)
    return conn, conn.getresponse()


def events(resp):
    """Yields each SSE data payload."""
    while True:
        line = resp.readline()
        if not line:
            return
        line = line.strip()
        if line.startswith(b"data: "):
            yield line[6:]


sys.stdin.readline()  # "go"

if mode == "stream":
    conn, resp = call(arg)
    n = 0
    complete = False
    try:
        for data in events(resp):
            n += 1
            if n == 1:
                say("first-event")
            if data == b"[DONE]":
                complete = True
    except (http.client.IncompleteRead, OSError):
        pass
    say(f"events {n}")
    say("complete" if complete else "incomplete")
    conn.close()
    sys.stdin.read()
    sys.exit(0)

if mode == "endless":
    limit = int(arg)
    conn, resp = call("endless")
    got = 0
    while got < limit:
        piece = resp.read1(65536)
        if not piece:
            break
        got += len(piece)
    say(f"read {got}")
    conn.close()
    sys.stdin.read()
    sys.exit(0)

if mode == "big":
    size = int(arg)
    conn, resp = call("big", f"&size={size}")
    got = 0
    tail = b""
    while True:
        piece = resp.read(1 << 20)
        if not piece:
            break
        got += len(piece)
        tail = (tail + piece)[-200:]
    assert got == size, (got, size)
    assert tail.endswith(b'"total_tokens":33}}'), tail
    say(f"read {got}")
    conn.close()
    sys.stdin.read()
    sys.exit(0)

if mode == "loop":
    n = 0
    while not os.path.exists(arg):
        conn, resp = call("ok")
        payloads = list(events(resp))
        conn.close()
        assert resp.status == 200, resp.status
        assert payloads[-1] == b"[DONE]", payloads
        text = "".join(
            c["delta"].get("content") or ""
            for p in payloads[:-1]
            for c in json.loads(p)["choices"]
        )
        assert text == "word0 word1 word2 word3 word4 ", text
        usage = json.loads(payloads[-2])["usage"]
        assert usage["completion_tokens"] == 22, usage
        n += 1
        say(f"call {n} ok")
    say(f"calls {n}")
    sys.exit(0)

sys.exit(f"unknown mode {mode}")
