#!/usr/bin/env python3
"""Many concurrent chat completions with long prompts, from one process.

Usage: long_prompts_client.py CALLS PROMPT_BYTES

Waits for a line on stdin first (the test starts llmtap for this process's pid meanwhile).
Sends CALLS requests at once (one connection each, httpx over TLS) to
https://api.openai.com/v1/chat/completions, each a streamed call with a user message of
PROMPT_BYTES bytes.
The bodies go out side by side, 64 KiB per write, as many uploads on one event loop do, so
all of them are in flight together; one pre-serialised body is shared so that the client's
own memory stays small. Prints `ok N` with the number of 200 answers, then each answer's id
on its own line.
"""
import asyncio
import json
import os
import re
import sys

import httpx


async def main():
    calls = int(sys.argv[1])
    prompt_bytes = int(sys.argv[2])
    body = json.dumps({
        "model": "gpt-4o-mini",
        "temperature": 0.25,
        "max_tokens": 64,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "a" * prompt_bytes}],
    }).encode()
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Authorization": "Bearer " + os.environ.get("LLMTAP_TEST_API_KEY", "sk-test"),
    }
    sys.stdin.readline()
    limits = httpx.Limits(max_connections=calls, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=300.0) as client:
        async def pieces():
            view = memoryview(body)
            for start in range(0, len(body), 64 * 1024):
                yield bytes(view[start:start + 64 * 1024])
                await asyncio.sleep(0)

        async def one():
            r = await client.post("https://api.openai.com/v1/chat/completions",
                                  content=pieces(), headers=headers)
            found = re.search(r'"id":\s*"([^"]+)"', r.text)
            return r.status_code, found.group(1) if found else None

        results = await asyncio.gather(*(one() for _ in range(calls)))
    ok = [rid for status, rid in results if status == 200]
    print("ok", len(ok), flush=True)
    for rid in ok:
        print(rid)
    return 0 if len(ok) == calls else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
