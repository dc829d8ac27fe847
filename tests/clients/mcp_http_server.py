#!/usr/bin/env python3
"""An MCP server on Streamable HTTP (over TLS, or plain), for the tests (the `mcp` SDK's MCPServer).

Usage: mcp_http_server.py PORT [CERT_PEM KEY_PEM]

Plain HTTP without a certificate.
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
    port = int(sys.argv[1])
    tls = {"ssl_certfile": sys.argv[2], "ssl_keyfile": sys.argv[3]} if len(sys.argv) > 3 else {}
    config = uvicorn.Config(server.streamable_http_app(), host="127.0.0.1", port=port,
                            log_level="warning", **tls)
    Ready(config).run()


if __name__ == "__main__":
    main()
