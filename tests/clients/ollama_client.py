#!/usr/bin/env python3
"""Sends a recorded Ollama request through the official `ollama` Python SDK.

Usage: ollama_client.py CASSETTE HOST_URL

HOST_URL is the server (http://127.0.0.1:PORT, where a local Ollama would listen on 11434).
The recorded body's model, messages or prompt, stream flag and options become the SDK call's
arguments. Prints what the application would see, one JSON object per line (every streamed
chunk, or the whole response), so runs with and without llmtap can be compared byte for byte.
Exits 3 on an API error (after printing it).
"""
import json
import sys

import ollama


def main():
    with open(sys.argv[1]) as f:
        cassette = json.load(f)
    body = json.loads(cassette["request"]["body"])
    client = ollama.Client(host=sys.argv[2])
    kwargs = {k: body[k] for k in ("stream", "format", "options", "keep_alive") if k in body}
    try:
        if cassette["api"] == "ollama_chat":
            result = client.chat(model=body["model"], messages=body["messages"], **kwargs)
        else:
            result = client.generate(model=body["model"], prompt=body.get("prompt", ""), **kwargs)
        chunks = result if body.get("stream") else [result]
        for chunk in chunks:
            print(chunk.model_dump_json(), flush=True)
    except ollama.ResponseError as e:
        print(f"API error: {e.status_code} {e.error}")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
