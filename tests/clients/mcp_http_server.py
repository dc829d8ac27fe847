#!/usr/bin/env python3
"""An MCP server on Streamable HTTP (over TLS, or plain), for the tests (the `mcp` SDK's MCPServer).

Usage: mcp_http_server.py [--sse] PORT [CERT_PEM KEY_PEM]

Plain HTTP without a certificate. `--sse`: the legacy HTTP+SSE transport (`GET /sse`, POSTs to
the `/messages/` endpoint it names) instead of Streamable HTTP.
Tools: `add(a, b)` returns the sum; `fail()` always fails (a tool error, `isError: true`).
Prints `ready` once it listens.
"""
import sys

import uvicorn
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


class Ready(uvicorn.Server):
    async def startup(self, sockets=None):
        await super().startup(sockets)
        print("ready", flush=True)


def main():
    args = sys.argv[1:]
    legacy = args[:1] == ["--sse"]
    if legacy:
        args = args[1:]
    port = int(args[0])
    tls = {"ssl_certfile": args[1], "ssl_keyfile": args[2]} if len(args) > 2 else {}
    app = server.sse_app() if legacy else server.streamable_http_app()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **tls)
    Ready(config).run()


if __name__ == "__main__":
    main()
