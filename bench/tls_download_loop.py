#!/usr/bin/env python3
"""Non-LLM TLS traffic for `cargo xtask bench`: a file download loop against a local TLS server.

Usage: tls_download_loop.py CERT KEY SECONDS SIZE

A TLS server (a thread, 127.0.0.1, a free port) serves `GET /file` (SIZE bytes); once a line
on stdin says go (the bench attaches llmtap to this pid first), the client downloads it over
one keep-alive HTTPS connection again and again for SECONDS seconds, both through the system's
libssl. Prints one JSON line: downloads, bytes and seconds.
"""
import http.client
import json
import socket
import ssl
import sys
import threading
import time


def serve(listener, context, size):
    raw, _ = listener.accept()
    conn = context.wrap_socket(raw, server_side=True)
    body = b"f" * size
    pending = b""
    while True:
        while b"\r\n\r\n" not in pending:
            data = conn.recv(65536)
            if not data:
                conn.close()
                return
            pending += data
        _, _, pending = pending.partition(b"\r\n\r\n")
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: %d\r\n\r\n" % size)
        conn.sendall(body)


def main():
    cert, key, seconds, size = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    threading.Thread(target=serve, args=(listener, server_context, size), daemon=True).start()
    sys.stdin.readline()
    client_context = ssl.create_default_context(cafile=cert)
    client = http.client.HTTPSConnection("localhost", port, context=client_context)
    downloads = received = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        client.request("GET", "/file")
        received += len(client.getresponse().read())
        downloads += 1
    elapsed = time.monotonic() - start
    client.close()
    print(json.dumps({"downloads": downloads, "bytes": received, "seconds": elapsed}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
