#!/usr/bin/env python3
"""An MCP client (the `mcp` SDK's Client) that spawns mcp_stdio_server.py and speaks to it
over stdio, for the tests.

Usage: mcp_stdio_client.py

Lists the tools, calls `add(2, 40)` and `fail()`, and prints one line per step:
`tools add,fail`, `add 42`, `fail error`. The server's standard error is this process's (the
server says `mcp-server-pid PID` there first, then its failing tool's traceback).
"""
import asyncio
import os
import sys

from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mcp_stdio_server.py")


async def main():
    params = StdioServerParameters(command=sys.executable, args=[SERVER])
    async with Client(params) as client:
        tools = await client.list_tools()
        print("tools", ",".join(sorted(t.name for t in tools.tools)), flush=True)
        result = await client.call_tool("add", {"a": 2, "b": 40})
        print("add", result.content[0].text, flush=True)
        failed = await client.call_tool("fail", {})
        print("fail", "error" if failed.is_error else "ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
