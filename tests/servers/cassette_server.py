#!/usr/bin/env python3
"""Minimal HTTPS/1.1 server replaying one recorded cassette response (tests/data/cassettes).

Reads one request per connection (head + Content-Length body), answers with the cassette's
status, content type and body; a streamed body is sent chunked, one write per SSE event, so
the client reads it in several TLS records. Prints the listening port, then serves until
killed. (A stop-gap for the rustls test until the replay harness lands.)
"""
import argparse
import base64
import json
import socket
import ssl
import threading


def events(body: bytes):
    parts = body.split(b"\n\n")
    for i, part in enumerate(parts):
        if not part:
            continue
        yield part + (b"\n\n" if i < len(parts) - 1 else b"")


def serve(conn: ssl.SSLSocket, cassette: dict) -> None:
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            more = conn.recv(65536)
            if not more:
                return
            data += more
        head, body = data.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            more = conn.recv(65536)
            if not more:
                return
            body += more
        response = cassette["response"]
        payload = base64.b64decode(response["body_b64"])
        ctype = next(
            (v for k, v in response["headers"].items() if k.lower() == "content-type"),
            "application/json",
        )
        status = response["status"]
        # One request per connection, said so: keep-alive clients (Go) must not reuse it.
        head = f"HTTP/1.1 {status} Replayed\r\nContent-Type: {ctype}\r\nConnection: close\r\n"
        # Recorded bodies are stored as sent (non-streamed ones are often gzip).
        encoding = next(
            (v for k, v in response["headers"].items() if k.lower() == "content-encoding"),
            None,
        )
        if encoding:
            head += f"Content-Encoding: {encoding}\r\n"
        if cassette.get("streaming") and status == 200:
            conn.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
            for event in events(payload):
                conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
            conn.sendall(b"0\r\n\r\n")
        else:
            conn.sendall((head + f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload)
    except (OSError, ValueError):
        pass
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--cassette", required=True)
    args = parser.parse_args()
    with open(args.cassette) as f:
        cassette = json.load(f)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["http/1.1"])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    print(sock.getsockname()[1], flush=True)
    while True:
        raw, _ = sock.accept()
        try:
            conn = ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            continue
        threading.Thread(target=serve, args=(conn, cassette), daemon=True).start()


if __name__ == "__main__":
    main()
