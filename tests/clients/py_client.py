#!/usr/bin/env python3
"""Python urllib-stack client (http.client over the ssl module: SSL_read_ex/SSL_write_ex).

Several keep-alive requests on one connection, then a 1 MiB POST body.
Usage: py_client.py PORT UPLOAD_BYTES
"""
import http.client
import ssl
import sys

port = int(sys.argv[1])
upload = int(sys.argv[2])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
for n in (100, 20000, 70000):
    conn.request("GET", f"/bytes/{n}")
    body = conn.getresponse().read()
    assert len(body) == n, (len(body), n)
conn.request("POST", "/upload", body=b"x" * upload, headers={"Content-Type": "application/octet-stream"})
print(conn.getresponse().read().decode().strip())
conn.close()
