#!/usr/bin/env python3
"""Sends a recorded Responses request over a WebSocket with the `websockets` library.

Usage: ws_client.py CASSETTE [CASSETTE...] [--deflate]

Connects to wss://<recorded host>/v1/responses (the test harness runs this in a mount namespace
whose /etc/hosts sends the name to the replay server; SSL_CERT_FILE makes the test CA trusted),
with the API key of LLMTAP_TEST_API_KEY as a Bearer token, then for each cassette sends
`{"type": "response.create", ...recorded request fields}` and reads the server's events until
the terminal one, on the same socket. Prints each event received (one JSON object per line),
then closes the socket normally. Exits 3 on an `error` event.

--deflate: offer permessage-deflate (the library's default); without it no compression is offered.
"""
import argparse
import asyncio
import json
import os
import ssl
import sys
from urllib.parse import urlsplit

from websockets.asyncio.client import connect

TERMINAL = {"response.completed", "response.incomplete", "response.failed", "error"}


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("cassettes", nargs="+")
    parser.add_argument("--deflate", action="store_true")
    args = parser.parse_args()
    cassettes = [json.load(open(p)) for p in args.cassettes]
    url = urlsplit(cassettes[0]["request"]["url"])
    context = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    headers = {"Authorization": "Bearer " + os.environ["LLMTAP_TEST_API_KEY"]}
    failed = False
    async with connect(
        f"wss://{url.netloc}{url.path}",
        ssl=context,
        additional_headers=headers,
        compression="deflate" if args.deflate else None,
    ) as ws:
        for cassette in cassettes:
            fields = json.loads(cassette["request"]["body"])
            fields.pop("stream", None)
            await ws.send(json.dumps({"type": "response.create", **fields}))
            while True:
                event = json.loads(await ws.recv())
                print(json.dumps(event, sort_keys=True), flush=True)
                if event.get("type") in TERMINAL:
                    failed |= event.get("type") == "error"
                    break
    sys.exit(3 if failed else 0)


asyncio.run(main())
