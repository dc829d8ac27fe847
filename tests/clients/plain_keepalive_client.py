#!/usr/bin/env python3
"""One process's plain-HTTP calls to a local Ollama-shaped server, in steps the test paces.

Usage: plain_keepalive_client.py PORT

Waits for a line on stdin before each step (the test starts llmtap for this pid, then waits
for what llmtap logs), all on 127.0.0.1:PORT:
1. GET /api/tags on a keep-alive connection (an LLM-looking path, not an LLM call);
2. GET /api/blob on the same connection (1 MiB: must not be copied once llmtap has seen 1);
3. POST /api/chat on a new connection (the one LLM call).
Prints one line per step.
"""
import http.client
import json
import sys


def main():
    port = int(sys.argv[1])
    sys.stdin.readline()
    first = http.client.HTTPConnection("127.0.0.1", port)
    first.request("GET", "/api/tags")
    print("tags", len(first.getresponse().read()), flush=True)
    sys.stdin.readline()
    first.request("GET", "/api/blob")
    print("blob", len(first.getresponse().read()), flush=True)
    first.close()
    chat = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"model": "llama3", "messages": [{"role": "user", "content": "hi"}],
                       "stream": False})
    chat.request("POST", "/api/chat", body=body, headers={"Content-Type": "application/json"})
    print("chat", len(chat.getresponse().read()), flush=True)
    chat.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
