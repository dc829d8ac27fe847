#!/usr/bin/env python3
"""HTTPS/1.1 server that misbehaves on purpose, for llmtap's fault tests (tests/tests/faults.rs).

Answers POST /v1/chat/completions?fault=MODE with an OpenAI-shaped response:
  ok       chunked SSE stream of EVENTS content chunks, a usage chunk and [DONE]
  hang     chunked SSE stream: 3 chunks, then nothing (the connection stays open)
  close    chunked SSE stream: 3 chunks, then the TCP connection is closed mid-stream
  endless  chunked SSE stream that never ends (1 KiB content chunks until the client leaves)
  big      one non-streamed JSON body of SIZE bytes (Content-Length), usage at its very end
  lossy    SSE read until close: small chunks alternating with BIG chunks (larger than a
           tiny ring buffer), then a usage chunk and [DONE]
Every SSE event is its own write, so the client reads it in its own TLS record.
Prints the listening port, then serves until killed.
"""
import argparse
import json
import socket
import ssl
import time
from urllib.parse import parse_qs, urlsplit

from tls_accept import serve_forever

MODEL = "gpt-4o-mini-2024-07-18"


def chunk(content, finish=None):
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
    }


USAGE = {
    "id": "chatcmpl-fault",
    "object": "chat.completion.chunk",
    "model": MODEL,
    "choices": [],
    "usage": {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33},
}


def sse(obj):
    data = obj if isinstance(obj, str) else json.dumps(obj)
    return f"data: {data}\n\n".encode()


def read_request(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return None
        data += more
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    target = lines[0].split(" ")[1]
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        more = conn.recv(65536)
        if not more:
            return None
        body += more
    return target


def serve(conn, events_per_stream):
    try:
        while True:
            target = read_request(conn)
            if target is None:
                return
            query = parse_qs(urlsplit(target).query)
            mode = query.get("fault", ["ok"])[0]
            size = int(query.get("size", ["104857600"])[0])
            head = "HTTP/1.1 200 OK\r\n"
            if mode == "big":
                prefix = (
                    '{"id":"chatcmpl-big","object":"chat.completion","model":"%s",'
                    '"choices":[{"index":0,"message":{"role":"assistant","content":"' % MODEL
                ).encode()
                suffix = (
                    '"},"finish_reason":"stop"}],'
                    '"usage":{"prompt_tokens":11,"completion_tokens":22,"total_tokens":33}}'
                ).encode()
                filler = max(0, size - len(prefix) - len(suffix))
                conn.sendall(
                    (head + "Content-Type: application/json\r\n"
                     f"Content-Length: {len(prefix) + filler + len(suffix)}\r\n\r\n").encode()
                )
                conn.sendall(prefix)
                piece = b"x" * (1 << 20)
                while filler > 0:
                    n = min(filler, len(piece))
                    conn.sendall(piece[:n])
                    filler -= n
                conn.sendall(suffix)
                continue
            if mode == "lossy":
                conn.sendall((head + "Content-Type: text/event-stream\r\nConnection: close\r\n\r\n").encode())
                for i in range(events_per_stream):
                    conn.sendall(sse(chunk(f"small {i} ")))
                    conn.sendall(sse(chunk("B" * 20000)))
                conn.sendall(sse(chunk("", "stop")))
                conn.sendall(sse(USAGE))
                conn.sendall(sse("[DONE]"))
                return
            conn.sendall((head + "Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n").encode())

            def send_event(obj):
                ev = sse(obj)
                conn.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))

            if mode == "ok":
                for i in range(events_per_stream):
                    send_event(chunk(f"word{i} "))
                send_event(chunk("", "stop"))
                send_event(USAGE)
                send_event("[DONE]")
                conn.sendall(b"0\r\n\r\n")
                continue
            if mode in ("hang", "close"):
                for i in range(3):
                    send_event(chunk(f"word{i} "))
                if mode == "close":
                    # No terminating chunk, no TLS close_notify: the peer just goes away.
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                while True:
                    time.sleep(1)
            if mode == "endless":
                text = "y" * 1024
                while True:
                    send_event(chunk(text))
            return
    except (OSError, ValueError):
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--events", type=int, default=5)
    args = parser.parse_args()
    serve_forever(args.cert, args.key, serve, args.events)


if __name__ == "__main__":
    main()
