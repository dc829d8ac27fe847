#!/usr/bin/env python3
"""Test-owned HTTPS/1.1 server that logs the exact plaintext of every connection.

The capture tests compare what llmtap saw a client write and read with what this server read
and wrote: TLS is a byte stream, so both must be identical byte for byte.

Routes: GET /bytes/N -> N deterministic bytes; POST /upload -> a short receipt.
Connections are keep-alive. Prints the listening port on stdout, then serves until killed.
Logs: <log-dir>/conn-<i>.in (bytes received) and conn-<i>.out (bytes sent).
"""
import argparse
import itertools
import os
import ssl

from tls_accept import serve_forever

COUNTER = itertools.count()


def payload(n: int) -> bytes:
    pattern = bytes(range(32, 127))
    return (pattern * (n // len(pattern) + 1))[:n]


def serve(conn: ssl.SSLSocket, log_dir: str) -> None:
    idx = next(COUNTER)
    with open(os.path.join(log_dir, f"conn-{idx}.in"), "wb") as log_in, open(
        os.path.join(log_dir, f"conn-{idx}.out"), "wb"
    ) as log_out:

        def recv() -> bytes:
            data = conn.recv(65536)
            log_in.write(data)
            log_in.flush()
            return data

        def send(data: bytes) -> None:
            conn.sendall(data)
            log_out.write(data)
            log_out.flush()

        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = recv()
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                while len(buf) < length:
                    data = recv()
                    if not data:
                        return
                    buf += data
                body, buf = buf[:length], buf[length:]
                if path.startswith("/bytes/"):
                    out = payload(int(path.split("/")[2]))
                    ctype = "application/octet-stream"
                else:
                    out = f"received {len(body)} bytes via {method}\n".encode()
                    ctype = "text/plain"
                send(
                    b"HTTP/1.1 200 OK\r\nContent-Type: "
                    + ctype.encode()
                    + b"\r\nContent-Length: "
                    + str(len(out)).encode()
                    + b"\r\n\r\n"
                    + out
                )
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, ssl.SSLError, OSError):
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--log-dir", required=True)
    args = parser.parse_args()
    serve_forever(args.cert, args.key, serve, args.log_dir)


if __name__ == "__main__":
    main()
