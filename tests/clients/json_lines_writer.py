#!/usr/bin/env python3
"""Writes JSON-RPC-looking lines into a pipe whose reader is not an MCP server, for the tests.

Usage: json_lines_writer.py BYTES

Spawns `cat` with its standard input on a pipe and writes `{"jsonrpc":"2.0","id":N,
"method":"tools/call",...}` lines into it (never a session opening: no `initialize`, no
`server/discover`) until BYTES bytes were written, then prints `wrote N`.
"""
import subprocess
import sys


def main():
    total = int(sys.argv[1])
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    written = 0
    n = 0
    while written < total:
        n += 1
        line = ('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"add",'
                '"arguments":{"a":%d,"b":2}}}\n' % (n, n)).encode()
        reader.stdin.write(line)
        reader.stdin.flush()
        written += len(line)
    reader.stdin.close()
    reader.wait()
    print("wrote", written, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
