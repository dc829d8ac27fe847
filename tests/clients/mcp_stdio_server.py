#!/usr/bin/env python3
"""An MCP server on stdio (the `mcp` SDK's MCPServer), for the tests.

Usage: mcp_stdio_server.py

Tools: `add(a, b)` returns the sum; `fail()` always fails (a tool error, `isError: true`);
`get_weather(location)` and `get_news(location)` answer what the agent test's tools answer
(tests/clients/agent_loop_client.py).
Started by mcp_stdio_client.py, which speaks to it over its standard input and output. Says
`mcp-server-pid PID` on its standard error first.
"""
import os
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("llmtap-test-tools")


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@server.tool()
def fail() -> str:
    """Always fails."""
    raise ValueError("this tool always fails")


@server.tool()
def get_weather(location: str) -> str:
    """The weather at a location."""
    return f"weather {location}: 18C, sunny"


@server.tool()
def get_news(location: str) -> str:
    """The news of a location."""
    return f"news {location}: cable cars run late tonight"


if __name__ == "__main__":
    print("mcp-server-pid", os.getpid(), file=sys.stderr, flush=True)
    server.run("stdio")
