#!/usr/bin/env python3
"""A TLS server and its client in one process, for kernel-side filtering (paced by the test).

Usage: tls_keepalive_filter.py CERT KEY

The server (a thread, on 127.0.0.1, a free port) serves `GET /download` (a 4 MiB file) and
`POST /api/chat` (an Ollama-shaped chat answer) on keep-alive connections. The client, on one
keep-alive HTTPS connection through the system's libssl, once a line on stdin says go:
1. sends `GET /download`; the server answers the head and the first 1 KiB, then waits;
   the client prints `head`;
2. on a line on stdin, the server sends the rest; the client prints `download N`;
3. sends `POST /api/chat` on the same connection (an LLM call after a non-LLM one), its method
   in a write of its own, and prints `chat N`.
Between 1 and 2 the test waits until llmtap has muted the connection's two sides (the server's
and the client's): the rest of the download must then be filtered in the kernel, the chat call
copied again.
"""
import http.client
import json
import socket
import ssl
import sys
import threading

DOWNLOAD = 4 << 20
FIRST = 1024
CHAT = json.dumps({
    "model": "llama3", "created_at": "2024-05-24T20:01:31Z",
    "message": {"role": "assistant", "content": "hi"}, "done_reason": "stop", "done": True,
    "prompt_eval_count": 5, "eval_count": 2,
}).encode()


def read_request(conn, pending):
    while b"\r\n\r\n" not in pending:
        data = conn.recv(65536)
        if not data:
            return None, pending
        pending += data
    head, _, rest = pending.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        data = conn.recv(65536)
        if not data:
            return None, rest
        rest += data
    return head.split(b"\r\n")[0].decode(), rest[length:]


def serve(listener, context, go):
    raw, _ = listener.accept()
    conn = context.wrap_socket(raw, server_side=True)
    pending = b""
    while True:
        line, pending = read_request(conn, pending)
        if line is None:
            break
        if line.startswith("GET /download"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: %d\r\n\r\n" % DOWNLOAD + b"d" * FIRST)
            go.wait()
            chunk = b"d" * 65536
            left = DOWNLOAD - FIRST
            while left > 0:
                n = min(left, len(chunk))
                conn.sendall(chunk[:n])
                left -= n
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(CHAT) + CHAT)
    conn.close()


def main():
    cert, key = sys.argv[1], sys.argv[2]
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    go = threading.Event()
    server = threading.Thread(target=serve, args=(listener, server_context, go), daemon=True)
    server.start()

    sys.stdin.readline()
    client_context = ssl.create_default_context(cafile=cert)
    client = http.client.HTTPSConnection("localhost", port, context=client_context)
    client.request("GET", "/download")
    response = client.getresponse()
    print("head", flush=True)
    sys.stdin.readline()
    go.set()
    print("download", len(response.read()), flush=True)
    body = json.dumps({"model": "llama3", "messages": [{"role": "user", "content": "hi"}],
                       "stream": False})
    # The request line in pieces, its method alone first (as a client that writes each part
    # as it is formatted would): the kernel must take a write of "POST" for a new request.
    request = ("POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               "Content-Length: %d\r\n\r\n%s" % (len(body), body)).encode()
    client.sock.sendall(request[:4])
    client.sock.sendall(request[4:])
    chat = http.client.HTTPResponse(client.sock, method="POST")
    chat.begin()
    print("chat", len(chat.read()), flush=True)
    client.close()
    server.join(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
