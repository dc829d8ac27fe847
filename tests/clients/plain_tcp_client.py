#!/usr/bin/env python3
"""Plain TCP traffic of one process, for the test that llmtap copies only LLM calls of it.

Usage: plain_tcp_client.py ECHO_PORT HTTP_PORT

Waits for a line on stdin (the tracer is started for this pid meanwhile), then on 127.0.0.1:
1. sends 100 KiB to the echo server and reads them back (a raw TCP protocol),
2. GET /index.html from the HTTP server (a 1 MiB page: not an LLM path),
3. POST /v1/chat/completions to the same server (the one LLM call).
Prints the byte counts it saw; exits non-zero on a short read.
"""
import json
import socket
import sys


def read_exactly(sock, n):
    got = bytearray()
    while len(got) < n:
        chunk = sock.recv(min(65536, n - len(got)))
        if not chunk:
            raise SystemExit(f"short read: {len(got)} of {n}")
        got += chunk
    return bytes(got)


def http(port, request):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(request)
        data = bytearray()
        while chunk := s.recv(65536):
            data += chunk
    return bytes(data)


def main():
    echo_port, http_port = int(sys.argv[1]), int(sys.argv[2])
    sys.stdin.readline()
    payload = bytes(range(256)) * 400
    with socket.create_connection(("127.0.0.1", echo_port)) as s:
        s.sendall(payload)
        echoed = read_exactly(s, len(payload))
    page = http(http_port, b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    call = http(
        http_port,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body,
    )
    print(len(echoed), len(page), len(call))
    return 0 if echoed == payload else 1


if __name__ == "__main__":
    sys.exit(main())
