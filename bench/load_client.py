#!/usr/bin/env python3
"""Load client for `cargo xtask bench`: N concurrent streaming calls, each on its own TLS
connection (asyncio + the system OpenSSL), against the replay server.

Usage: load_client.py IP CA_PEM CASSETTE N
Prints one JSON object: calls made, calls completed, and the distinct response ids received.
"""
import asyncio
import json
import ssl
import sys


async def one(ip, ctx, host, path, body, ids):
    reader, writer = await asyncio.open_connection(ip, 443, ssl=ctx, server_hostname=host)
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer sk-bench\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
    marker = b'"id":"'
    i = data.find(marker)
    if b" 200 " in data[:20] and i >= 0:
        j = data.find(b'"', i + len(marker))
        ids.add(data[i + len(marker) : j].decode())
        return True
    return False


async def main():
    ip, ca, cassette_path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with open(cassette_path) as f:
        cassette = json.load(f)
    url = cassette["request"]["url"].split("#")[0]
    host = url.split("/")[2]
    path = "/" + url.split("/", 3)[3]
    body = cassette["request"]["body"].encode()
    ctx = ssl.create_default_context(cafile=ca)
    ids = set()
    results = await asyncio.gather(
        *(one(ip, ctx, host, path, body, ids) for _ in range(n)), return_exceptions=True
    )
    ok = sum(1 for r in results if r is True)
    errors = [repr(r) for r in results if isinstance(r, BaseException)][:3]
    print(json.dumps({"calls": n, "completed": ok, "distinct_ids": len(ids), "errors": errors}))


asyncio.run(main())
