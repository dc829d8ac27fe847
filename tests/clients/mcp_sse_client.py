#!/usr/bin/env python3
"""An MCP client on the legacy HTTP+SSE transport (the `mcp` SDK's sse_client and
ClientSession), for the tests.

Usage: mcp_sse_client.py URL

Opens the event stream at URL (`…/sse`), initialises the session, lists the tools, calls
`add(2, 40)` and `fail()`, and prints one line per step: `tools add,fail`, `add 42`,
`fail error`. The server's certificate is trusted through SSL_CERT_FILE.
"""
import asyncio
import sys

from mcp.client.session import ClientSession
from mcp.client.sse import sse_client


async def main():
    async with sse_client(sys.argv[1]) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            print("tools", ",".join(sorted(t.name for t in tools.tools)), flush=True)
            result = await session.call_tool("add", {"a": 2, "b": 40})
            print("add", result.content[0].text, flush=True)
            failed = await session.call_tool("fail", {})
            print("fail", "error" if failed.is_error else "ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
