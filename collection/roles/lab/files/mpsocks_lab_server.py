# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's server program: an MPTCP check server and a transparent "optimizer" proxy.

One standard-library-only Python 3 (3.9+) script that the lab role copies to the managed
host and runs inside its network namespaces.

``http --listen ADDR:PORT [--tcp]``
    A threading HTTP/1.1 server.  Its listening socket is ``IPPROTO_MPTCP`` (a plain TCP
    client simply falls back); ``--tcp`` makes it a plain TCP socket (an MPTCP client falls
    back: the lab's "plain-TCP server").

    * ``GET /bytes/N`` answers N bytes (0 <= N <= 10 GiB, decimal digits only, else 400) of
      the deterministic content of :func:`content_chunks` with the header
      ``X-Content-SHA256`` (hex digest of those N bytes, :func:`content_sha256`).  The body
      is streamed, never held in memory.
    * Any other path is the MPTCP check.  The answer comes from the kernel's view of the
      accepted socket, never from a guess: ``getsockopt(SOL_TCP, TCP_IS_MPTCP)`` says MPTCP
      or not (0 for a plain socket and for an MPTCP socket that fell back to TCP), and
      ``getsockopt(SOL_MPTCP, MPTCP_INFO)`` gives the subflow count (see
      :func:`mptcp_subflows`).  Plain text by default::

          You are using MPTCP with 2 subflows (client 198.18.0.2:40312)
          You are not using MPTCP (client 198.18.0.2:40312)

      and with ``?format=json`` exactly the object
      ``{"mptcp": true, "subflows": 2, "client": "198.18.0.2:40312"}`` (``subflows`` is the
      number of TCP subflows carrying the connection, 1 for plain TCP).

    Subflow-settle rule: a client's extra subflows join (MP_JOIN) just after the first
    handshake, so a request that arrives early could see too few.  For an MPTCP connection
    the count is sampled every 10 ms and the answer is given as soon as one of these holds:
    the count reached this server's limit (``mptcpi_subflows_max`` + 1, i.e.
    ``ip mptcp limits``' ``subflows`` + 1), the count has not changed for 150 ms, or 300 ms
    have passed since the connection was accepted.  A connection older than 300 ms (HTTP
    keep-alive) and a plain/fallback connection are answered at once.

``optimizer --listen ADDR:PORT [--ttl 128] [--mss 1360] [--window-clamp BYTES] [--priority N]``
    A transparent splicing proxy, like a mobile operator's "performance enhancing proxy".
    An nft rule in its namespace redirects plain TCP SYNs to it (``redirect to :PORT``); it
    reads each connection's original destination with ``SO_ORIGINAL_DST``, opens its own
    plain TCP connection there and copies bytes both ways until both sides have closed
    (half-close is passed on as a FIN, a reset or error resets both sides).  The listening
    socket sets ``IP_TTL``, ``TCP_MAXSEG`` and ``TCP_WINDOW_CLAMP``, so the SYN/ACK a client
    sees carries TTL 128, the proxy's MSS and a window scale unlike a normal Linux host's;
    the upstream connection uses the same TTL; ``--priority`` sets ``SO_PRIORITY`` on the
    client-facing sockets (for an HTB class that shapes terminated flows).

    Window scale: Linux announces ``wscale = ilog2(min(max(tcp_rmem[2], rmem_max), clamp)) -
    15`` (bounded to 0..14).  On the lab's kernel (6.18, ``tcp_rmem[2]`` = 32 MiB,
    ``rmem_max`` = 4 MiB) a normal host announces 10 (7 on hosts with the classic 6 MiB
    ``tcp_rmem[2]``); the default clamp of 1 MiB (:data:`DEFAULT_WINDOW_CLAMP`) makes the
    optimizer announce 5 (:data:`DEFAULT_WSCALE`) wherever ``tcp_rmem[2]`` or ``rmem_max`` is
    at least 1 MiB.  ``optimizer --print-wscale [--window-clamp BYTES]`` measures the figure
    in the current namespace (a loopback connection, read back with ``TCP_INFO``) and prints it.

Every request or proxied connection logs one line on stderr; a bad request or a client's
reset is logged and never stops the server.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# Kernel constants (uapi), spelled out so the script runs on any Python 3.9+.
IPPROTO_MPTCP = 262
SOL_MPTCP = 284
MPTCP_INFO = 1
TCP_IS_MPTCP = 43
SOL_IP = 0
SOL_IPV6 = 41
SO_ORIGINAL_DST = 80  # also IP6T_SO_ORIGINAL_DST at SOL_IPV6
IP_TTL = 2
IPV6_UNICAST_HOPS = 16
TCP_MAXSEG = 2
TCP_WINDOW_CLAMP = 10
TCP_INFO = 11
SO_PRIORITY = 12

#: Offsets in struct mptcp_info: mptcpi_subflows (extra subflows, u8), mptcpi_subflows_max
#: (the namespace's limit on extra subflows, u8) and mptcpi_subflows_total (all subflows,
#: u8; kernel 6.10 and later).
_MPTCPI_SUBFLOWS, _MPTCPI_SUBFLOWS_MAX, _MPTCPI_SUBFLOWS_TOTAL = 0, 3, 80

SETTLE_POLL = 0.010
SETTLE_QUIET = 0.150
SETTLE_MAX = 0.300

BLOCK_SIZE = 64 * 1024
MAX_BYTES = 10 * 1024 ** 3
_CHUNK_BLOCKS = 16  # a 1 MiB chunk per write
_CHECKPOINT = 16 * 1024 ** 2

DEFAULT_TTL = 128
DEFAULT_MSS = 1360
DEFAULT_WINDOW_CLAMP = 1024 * 1024
#: The window scale the optimizer's SYN/ACK announces with DEFAULT_WINDOW_CLAMP.
DEFAULT_WSCALE = 5

_log_lock = threading.Lock()


def log(message: str) -> None:
    """One line on stderr with a timestamp."""
    line = "%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), message.replace("\n", " "))
    with _log_lock, contextlib.suppress(OSError, ValueError):
        sys.stderr.write(line)
        sys.stderr.flush()


# --------------------------------------------------------------------------- content


_block_cache: list[bytes] = []


def content_block() -> bytes:
    """The 64 KiB pseudo-random block that /bytes/N repeats (fixed: SHAKE-256 of a label)."""
    if not _block_cache:
        _block_cache.append(hashlib.shake_256(b"mpsocks lab content v1").digest(BLOCK_SIZE))
    return _block_cache[0]


def content_chunks(size: int, chunk_blocks: int = _CHUNK_BLOCKS):
    """Yield the first SIZE bytes of the content (the block repeated) as memoryviews."""
    chunk = memoryview(content_block() * chunk_blocks)
    while size > 0:
        piece = chunk[: min(size, len(chunk))]
        yield piece
        size -= len(piece)


def content_bytes(size: int) -> bytes:
    """The first SIZE bytes of the content in one bytes object (for small sizes in tests)."""
    return b"".join(bytes(piece) for piece in content_chunks(size))


class _Digests:
    """SHA-256 of content prefixes: hash states cached every 16 MiB, so each size costs
    at most 16 MiB of hashing once the prefix before it has been hashed for any request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.states = [hashlib.sha256()]  # states[k] has hashed k * _CHECKPOINT bytes
        self.done: dict[int, str] = {}
        self.chunk = b""

    def __call__(self, size: int) -> str:
        with self.lock:
            if size in self.done:
                return self.done[size]
            if not self.chunk:
                self.chunk = content_block() * (_CHECKPOINT // BLOCK_SIZE)
            chunk = self.chunk
            while len(self.states) <= size // _CHECKPOINT:
                state = self.states[-1].copy()
                state.update(chunk)
                self.states.append(state)
            state = self.states[size // _CHECKPOINT].copy()
        rest = size % _CHECKPOINT
        state.update(memoryview(chunk)[:rest])
        digest = state.hexdigest()
        with self.lock:
            if len(self.done) > 1024:
                self.done.clear()
            self.done[size] = digest
        return digest


_digests = _Digests()


def content_sha256(size: int) -> str:
    """Hex SHA-256 of the first SIZE bytes of the content (cached, see _Digests)."""
    return _digests(size)


# --------------------------------------------------------------------------- addresses


def parse_listen(text: str) -> tuple[int, str, int]:
    """ADDR:PORT or [ADDR6]:PORT -> (family, address, port); ValueError on bad input."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError("expected ADDR:PORT, got %r" % text)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    address = ipaddress.ip_address(host)
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError("port %d out of range" % port)
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return family, str(address), port


def format_endpoint(sockaddr) -> str:
    """('198.18.0.2', 40312) -> 198.18.0.2:40312; IPv6 in brackets, v4-mapped as IPv4."""
    host, port = sockaddr[0], sockaddr[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


# --------------------------------------------------------------------------- MPTCP check


def is_mptcp(sock: socket.socket) -> bool:
    """True when the kernel carries SOCK's connection with MPTCP (not plain, no fallback)."""
    try:
        return bool(sock.getsockopt(socket.SOL_TCP, TCP_IS_MPTCP))
    except OSError:
        return False


def mptcp_subflows(sock: socket.socket) -> tuple[int, int]:
    """(subflows carrying the connection, most this side accepts) from struct mptcp_info.

    ``mptcpi_subflows`` counts the subflows beyond the first one (the path manager's count,
    on the server side the MP_JOINs it accepted); ``mptcpi_subflows_total`` (6.10+) counts
    them all, the first one only while it is still open.  Checked on 6.18: a one-path
    connection reads subflows 0 / total 1, a two-path one 1 / 2.
    """
    raw = sock.getsockopt(SOL_MPTCP, MPTCP_INFO, 256)
    extra, limit = raw[_MPTCPI_SUBFLOWS], raw[_MPTCPI_SUBFLOWS_MAX] + 1
    if len(raw) > _MPTCPI_SUBFLOWS_TOTAL:
        return raw[_MPTCPI_SUBFLOWS_TOTAL], limit
    return extra + 1, limit


def mptcp_state(sock: socket.socket, accepted_at: float) -> tuple[bool, int]:
    """(MPTCP or not, subflow count) after the subflow count has settled (module doc)."""
    if not is_mptcp(sock):
        return False, 1
    try:
        count, limit = mptcp_subflows(sock)
        changed = now = time.monotonic()
        while count < limit and now - changed < SETTLE_QUIET and now - accepted_at < SETTLE_MAX:
            time.sleep(SETTLE_POLL)
            latest, limit = mptcp_subflows(sock)
            now = time.monotonic()
            if latest != count:
                count, changed = latest, now
    except OSError:  # fell back to TCP while we looked
        return is_mptcp(sock), 1
    if not is_mptcp(sock):
        return False, 1
    return True, max(count, 1)


def check_body(mptcp: bool, subflows: int, client: str, as_json: bool) -> tuple[str, bytes]:
    """(Content-Type, body) of the MPTCP check answer."""
    if as_json:
        body = json.dumps({"mptcp": mptcp, "subflows": subflows, "client": client})
        return "application/json", body.encode()
    if mptcp:
        text = "You are using MPTCP with %d subflow%s (client %s)\n" % (
            subflows, "" if subflows == 1 else "s", client)
    else:
        text = "You are not using MPTCP (client %s)\n" % client
    return "text/plain; charset=utf-8", text.encode()


# --------------------------------------------------------------------------- HTTP server


class LabHandler(BaseHTTPRequestHandler):
    """GET/HEAD: /bytes/N or the MPTCP check; one log line per request."""

    protocol_version = "HTTP/1.1"
    # Answers to garbage get a status line and headers too (not a bare HTTP/0.9 body).
    default_request_version = "HTTP/1.0"
    server_version = "mpsocks-lab"
    sys_version = ""
    timeout = 300

    def setup(self) -> None:
        self.accepted_at = time.monotonic()
        super().setup()

    def version_string(self) -> str:
        return self.server_version

    @property
    def client(self) -> str:
        return format_endpoint(self.client_address)

    def do_GET(self) -> None:
        self.serve(body=True)

    def do_HEAD(self) -> None:
        self.serve(body=False)

    def serve(self, body: bool) -> None:
        started = time.monotonic()
        url = urlsplit(self.path)
        if url.path.startswith("/bytes/"):
            status, sent, note = self.serve_bytes(url.path[len("/bytes/"):], body)
        else:
            status, sent, note = self.serve_check(parse_qs(url.query), body)
        log('%s "%s" %d %d bytes %.3fs %s' % (
            self.client, self.requestline, status, sent, time.monotonic() - started, note))

    def serve_check(self, query: dict, body: bool) -> tuple[int, int, str]:
        mptcp, subflows = mptcp_state(self.connection, self.accepted_at)
        as_json = query.get("format", ["text"])[-1] == "json"
        ctype, payload = check_body(mptcp, subflows, self.client, as_json)
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(payload)
        return 200, len(payload) if body else 0, "mptcp=%s subflows=%d" % (
            "yes" if mptcp else "no", subflows)

    def serve_bytes(self, text: str, body: bool) -> tuple[int, int, str]:
        if not text.isdigit() or not text.isascii() or int(text) > MAX_BYTES:
            payload = b"/bytes/N: N must be a whole number of bytes from 0 to %d\n" % MAX_BYTES
            self.send_response(400)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if body:
                self.wfile.write(payload)
            return 400, len(payload) if body else 0, "bad size"
        size = int(text)
        digest = content_sha256(size)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.send_header("X-Content-SHA256", digest)
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        sent = 0
        if body:
            try:
                for piece in content_chunks(size):
                    self.wfile.write(piece)
                    sent += len(piece)
            except OSError as exc:
                self.close_connection = True
                return 200, sent, "client went away: %s" % (exc.strerror or exc)
        return 200, sent, "sha256=%s" % digest[:16]

    def log_request(self, code="-", size="-") -> None:
        """Requests are logged once they are done (serve), not when the status line goes."""

    def log_message(self, format, *args) -> None:  # pylint: disable=redefined-builtin
        log("%s %s" % (self.client, format % args))


class LabHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer on an MPTCP (or plain TCP) socket; no reverse DNS, no tracebacks."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, listen: str, plain_tcp: bool) -> None:
        family, host, port = parse_listen(listen)
        self.address_family = family
        super().__init__((host, port), LabHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = socket.socket(family, socket.SOCK_STREAM, 0 if plain_tcp else IPPROTO_MPTCP)
        try:
            self.server_bind()
            self.server_activate()
        except OSError:
            self.server_close()
            raise

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the address up in DNS (socket.getfqdn).
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        log("%s connection error: %s: %s" % (format_endpoint(client_address), type(exc).__name__, exc))


def run_http(args: argparse.Namespace) -> int:
    server = LabHTTPServer(args.listen, args.tcp)
    log("http: listening on %s (%s)" % (args.listen, "plain TCP" if args.tcp else "MPTCP"))
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
    return 0


# --------------------------------------------------------------------------- optimizer


def original_destination(sock: socket.socket) -> tuple[int, tuple]:
    """(family, sockaddr) the client asked for before the nft redirect (SO_ORIGINAL_DST)."""
    if sock.family == socket.AF_INET6 and not sock.getsockname()[0].startswith("::ffff:"):
        raw = sock.getsockopt(SOL_IPV6, SO_ORIGINAL_DST, 28)
        port, addr = struct.unpack_from("!H4x16s", raw, 2)
        return socket.AF_INET6, (socket.inet_ntop(socket.AF_INET6, addr), port)
    raw = sock.getsockopt(SOL_IP, SO_ORIGINAL_DST, 16)
    port, addr = struct.unpack_from("!H4s", raw, 2)
    return socket.AF_INET, (socket.inet_ntop(socket.AF_INET, addr), port)


def set_ttl(sock: socket.socket, ttl: int) -> None:
    if sock.family == socket.AF_INET6:
        sock.setsockopt(SOL_IPV6, IPV6_UNICAST_HOPS, ttl)
    if sock.family == socket.AF_INET or (sock.family == socket.AF_INET6 and not _v6only(sock)):
        sock.setsockopt(SOL_IP, IP_TTL, ttl)


def _v6only(sock: socket.socket) -> bool:
    try:
        return bool(sock.getsockopt(SOL_IPV6, socket.IPV6_V6ONLY))
    except OSError:
        return True


def optimizer_listener(family: int, address: tuple, ttl: int, mss: int, clamp: int,
                       priority: int | None) -> socket.socket:
    """The proxy's listening socket with the options its SYN/ACKs show."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        set_ttl(sock, ttl)
        sock.setsockopt(socket.SOL_TCP, TCP_MAXSEG, mss)
        if clamp:
            sock.setsockopt(socket.SOL_TCP, TCP_WINDOW_CLAMP, clamp)
        if priority is not None:
            sock.setsockopt(socket.SOL_SOCKET, SO_PRIORITY, priority)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


class Splice:
    """Copy bytes both ways between two connected sockets until both directions ended."""

    def __init__(self, client: socket.socket, upstream: socket.socket, label: str) -> None:
        self.client, self.upstream, self.label = client, upstream, label
        self.counts = {"up": 0, "down": 0}
        self.failure = ""
        self.lock = threading.Lock()

    def run(self) -> None:
        started = time.monotonic()
        down = threading.Thread(target=self.pump, args=(self.upstream, self.client, "down"), daemon=True)
        down.start()
        self.pump(self.client, self.upstream, "up")
        down.join()
        for sock in (self.client, self.upstream):
            sock.close()
        log("optimizer: %s done in %.1fs: %d bytes up, %d down%s" % (
            self.label, time.monotonic() - started, self.counts["up"], self.counts["down"],
            ", " + self.failure if self.failure else ""))

    def pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        buf = bytearray(256 * 1024)
        view = memoryview(buf)
        try:
            while True:
                n = src.recv_into(buf)
                if not n:
                    break
                dst.sendall(view[:n])
                self.counts[direction] += n
            dst.shutdown(socket.SHUT_WR)  # pass the half-close on
        except OSError as exc:
            self.abort("%s: %s" % (direction, exc.strerror or exc))

    def abort(self, why: str) -> None:
        """A reset or error on either side: reset both sides and wake the other pump."""
        with self.lock:
            if self.failure:
                return
            self.failure = why
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)


def proxy_connection(client: socket.socket, peer, args: argparse.Namespace) -> None:
    """Handle one accepted connection: find where it was going, connect, splice."""
    who = format_endpoint(peer)
    try:
        family, target = original_destination(client)
    except OSError as exc:
        log("optimizer: %s: no original destination (%s), closing" % (who, exc.strerror or exc))
        client.close()
        return
    local = client.getsockname()
    if (target[0], target[1]) == (local[0], local[1]):
        log("optimizer: %s: connected to the proxy itself (not redirected), closing" % who)
        client.close()
        return
    label = "%s -> %s" % (who, format_endpoint(target))
    upstream = socket.socket(family, socket.SOCK_STREAM)
    try:
        set_ttl(upstream, args.ttl)
        upstream.settimeout(args.connect_timeout)
        upstream.connect(target)
        upstream.settimeout(None)
    except OSError as exc:
        log("optimizer: %s: upstream connect failed: %s" % (label, exc.strerror or exc))
        upstream.close()
        with contextlib.suppress(OSError):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        return
    log("optimizer: %s via %s" % (label, format_endpoint(upstream.getsockname())))
    Splice(client, upstream, label).run()


def run_optimizer(args: argparse.Namespace) -> int:
    family, host, port = parse_listen(args.listen)
    listener = optimizer_listener(family, (host, port), args.ttl, args.mss, args.window_clamp,
                                  args.priority)
    log("optimizer: listening on %s (ttl %d, mss %d, window clamp %d, priority %s)" % (
        args.listen, args.ttl, args.mss, args.window_clamp,
        "-" if args.priority is None else args.priority))
    with listener:
        while True:
            try:
                client, peer = listener.accept()
            except OSError as exc:
                log("optimizer: accept failed: %s" % (exc.strerror or exc))
                time.sleep(0.05)
                continue
            if args.priority is not None:
                try:
                    client.setsockopt(socket.SOL_SOCKET, SO_PRIORITY, args.priority)
                except OSError as exc:
                    log("optimizer: SO_PRIORITY: %s" % exc)
            threading.Thread(target=proxy_connection, args=(client, peer, args), daemon=True).start()


def measure_wscale(clamp: int) -> int:
    """The window scale a listener with CLAMP announces here (loopback, TCP_INFO)."""
    listener = optimizer_listener(socket.AF_INET, ("127.0.0.1", 0), DEFAULT_TTL, DEFAULT_MSS, clamp, None)
    with listener, socket.create_connection(listener.getsockname(), timeout=5) as client:
        accepted = listener.accept()[0]
        accepted.close()
        info = client.getsockopt(socket.SOL_TCP, TCP_INFO, 8)
    # struct tcp_info byte 6: tcpi_snd_wscale:4 (low nibble, what the peer announced), rcv:4.
    return info[6] & 0x0F


# --------------------------------------------------------------------------- command line


def _int_range(low: int, high: int):
    def convert(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError("%d is not in %d..%d" % (value, low, high))
        return value
    return convert


def _listen(text: str) -> str:
    try:
        parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="The mpsocks lab's servers: an MPTCP check/download HTTP server and a "
        "transparent TCP-terminating 'optimizer' proxy.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    http = commands.add_parser(
        "http", help="HTTP/1.1 server: MPTCP check on any path, N test bytes on /bytes/N",
        description="Threading HTTP/1.1 server. Any path but /bytes/N answers whether the "
        "connection uses MPTCP and with how many subflows (?format=json for JSON); /bytes/N "
        "sends N deterministic bytes (0..10 GiB) with an X-Content-SHA256 header.")
    http.add_argument("--listen", required=True, type=_listen, metavar="ADDR:PORT",
                      help="address and port to listen on ([ADDR]:PORT for IPv6)")
    http.add_argument("--tcp", action="store_true",
                      help="listen on a plain TCP socket (MPTCP clients fall back) instead of MPTCP")

    opt = commands.add_parser(
        "optimizer", help="transparent TCP-terminating proxy (a mobile network's PEP)",
        description="Transparent splicing proxy for connections an nft 'redirect' rule sends "
        "to it: reads SO_ORIGINAL_DST, connects there itself with plain TCP and copies "
        "both ways. Its SYN/ACKs show --ttl, --mss and the window scale --window-clamp gives "
        "(default clamp %d: wscale %d)." % (DEFAULT_WINDOW_CLAMP, DEFAULT_WSCALE))
    opt.add_argument("--listen", type=_listen, metavar="ADDR:PORT",
                     help="address and port the redirect rule sends to (required unless --print-wscale)")
    opt.add_argument("--ttl", type=_int_range(1, 255), default=DEFAULT_TTL,
                     help="IP TTL of the proxy's packets, both sides (default %(default)s)")
    opt.add_argument("--mss", type=_int_range(88, 65535), default=DEFAULT_MSS,
                     help="MSS announced to clients (default %(default)s)")
    opt.add_argument("--window-clamp", type=_int_range(0, 1 << 30), default=DEFAULT_WINDOW_CLAMP,
                     metavar="BYTES",
                     help="TCP_WINDOW_CLAMP of the listener, which sets the announced window "
                     "scale; 0 leaves Linux's own (default %(default)s)")
    opt.add_argument("--priority", type=_int_range(0, 0xFFFFFFFF), metavar="N",
                     help="SO_PRIORITY of the client-facing sockets, e.g. 0x10014 for HTB class 1:20")
    opt.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                     help="give up connecting to the original destination after this long "
                     "(default %(default)s)")
    opt.add_argument("--print-wscale", action="store_true",
                     help="measure the window scale this --window-clamp announces here, print it, exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "http":
            return run_http(args)
        if args.print_wscale:
            print(measure_wscale(args.window_clamp))
            return 0
        if not args.listen:
            parser.error("optimizer: --listen is required")
        return run_optimizer(args)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        log("%s: %s" % (args.command, exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
