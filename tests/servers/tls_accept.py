"""The accept loop the test servers share: HTTPS/1.1 on a free port of 127.0.0.1.

Prints the port on stdout (the tests read it), then hands each TLS connection to `serve` on
its own thread until killed. A client that fails the handshake is dropped, not fatal.
"""
import socket
import ssl
import threading


def serve_forever(cert, key, serve, *args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    print(sock.getsockname()[1], flush=True)
    while True:
        raw, _ = sock.accept()
        try:
            conn = ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            continue
        threading.Thread(target=serve, args=(conn, *args), daemon=True).start()
