#!/usr/bin/env python3
"""An MCP client (the `mcp` SDK's Client) on Streamable HTTP over TLS, for the tests.

Usage: mcp_http_client.py URL

Connects, lists the tools, calls `add(2, 40)` and `fail()`, and prints one line per step:
`tools add,fail`, `add 42`, `fail error`. The server's certificate is trusted through
SSL_CERT_FILE.
"""
import asyncio
import sys

from mcp.client import Client


async def main():
    async with Client(sys.argv[1]) as client:
        tools = await client.list_tools()
        print("tools", ",".join(sorted(t.name for t in tools.tools)), flush=True)
        result = await client.call_tool("add", {"a": 2, "b": 40})
        print("add", result.content[0].text, flush=True)
        failed = await client.call_tool("fail", {})
        print("fail", "error" if failed.is_error else "ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
