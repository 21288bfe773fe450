"""A small HTTP client the lab tests run inside a namespace (``ip netns exec NS python3 lab_client.py``).

It speaks HTTP/1.0 over a plain TCP or an MPTCP socket, optionally bound to a source address (which picks
the uplink, through the lab host's source routing), and prints one JSON object: status, headers, body
(when short), length, sha256, seconds from the request (sent) to the last body byte (so a rate is
never flattered by bytes that waited in the socket buffer), and whether the kernel says the connection
is MPTCP (TCP_IS_MPTCP).
"""

import argparse
import hashlib
import json
import socket
import time
from urllib.parse import urlsplit

IPPROTO_MPTCP = 262
TCP_IS_MPTCP = 43


def fetch(url, mptcp=False, bind=None, timeout=30.0):
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP if mptcp else socket.IPPROTO_TCP)
    sock.settimeout(timeout)
    if bind:
        sock.bind((bind, 0))
    started = time.monotonic()
    sock.connect((parts.hostname, parts.port or 80))
    connected = time.monotonic()
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {parts.hostname}\r\n\r\n".encode())
    requested = time.monotonic()
    head, digest, length, first, last, body = b"", hashlib.sha256(), 0, None, None, b""
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        if first is None and b"\r\n\r\n" not in head:
            head += chunk
            if b"\r\n\r\n" not in head:
                continue
            head, chunk = head.split(b"\r\n\r\n", 1)
            first = time.monotonic()
        last = time.monotonic()
        digest.update(chunk)
        length += len(chunk)
        if len(body) < 4096:
            body += chunk[:4096 - len(body)]
    is_mptcp = sock.getsockopt(socket.SOL_TCP, TCP_IS_MPTCP) if mptcp else 0
    local = "{}:{}".format(*sock.getsockname()[:2])
    sock.close()
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return {
        "status": int(lines[0].split()[1]),
        "headers": headers,
        "body": body.decode("utf-8", "replace"),
        "length": length,
        "sha256": digest.hexdigest(),
        "connect_seconds": connected - started,
        "seconds": (last - requested) if first and last else 0.0,
        "mptcp": bool(is_mptcp),
        "local": local,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--mptcp", action="store_true", help="open an MPTCP socket")
    parser.add_argument("--bind", metavar="ADDR", help="source address (picks the uplink)")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    print(json.dumps(fetch(args.url, args.mptcp, args.bind, args.timeout)))


if __name__ == "__main__":
    main()
