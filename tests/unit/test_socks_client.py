"""The SOCKS5 client against a small SOCKS5 server of the test's own on loopback (RFC 1928, RFC 1929)."""

import contextlib
import socket
import struct
import threading

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.socks_client import (
    SocksError,
    connect,
    parse_proxy,
)


def _exactly(conn, size):
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        assert chunk, "the client closed early"
        data += chunk
    return data


class TinySocks:
    """One-connection-at-a-time SOCKS5 server; after a successful CONNECT it echoes what it gets."""

    def __init__(self, users=None, reply=0, bound=(1, "198.51.100.7", 4242), greeting=None):
        self.users, self.reply, self.bound, self.greeting = users, reply, bound, greeting
        self.seen = []  # (offered methods, credentials, (address type, address, port)) per connection
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn, contextlib.suppress(AssertionError, OSError):
                self.handle(conn)

    def handle(self, conn):
        _version, count = _exactly(conn, 2)
        methods = list(_exactly(conn, count))
        if self.greeting is not None:  # a server that is no SOCKS5 server
            conn.sendall(self.greeting)
            return
        credentials = None
        record = [methods, credentials, None]
        self.seen.append(record)
        if self.users is None:
            conn.sendall(bytes([5, 0]))
        elif 2 not in methods:
            conn.sendall(bytes([5, 0xFF]))
            return
        else:
            conn.sendall(bytes([5, 2]))
            _, length = _exactly(conn, 2)
            user = _exactly(conn, length).decode()
            password = _exactly(conn, _exactly(conn, 1)[0]).decode()
            record[1] = (user, password)
            ok = self.users.get(user) == password
            conn.sendall(bytes([1, 0 if ok else 1]))
            if not ok:
                return
        _version, command, _reserved, kind = _exactly(conn, 4)
        assert command == 1
        if kind == 1:
            address = socket.inet_ntop(socket.AF_INET, _exactly(conn, 4))
        elif kind == 4:
            address = socket.inet_ntop(socket.AF_INET6, _exactly(conn, 16))
        else:
            address = _exactly(conn, _exactly(conn, 1)[0]).decode()
        (port,) = struct.unpack("!H", _exactly(conn, 2))
        record[2] = (kind, address, port)
        bound_kind, bound_address, bound_port = self.bound
        if bound_kind == 3:
            encoded = bytes([len(bound_address)]) + bound_address.encode()
        else:
            encoded = socket.inet_pton(socket.AF_INET if bound_kind == 1 else socket.AF_INET6, bound_address)
        conn.sendall(bytes([5, self.reply, 0, bound_kind]) + encoded + struct.pack("!H", bound_port))
        if self.reply == 0:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                conn.sendall(data)

    def close(self):
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.fixture
def proxy(request):
    server = TinySocks(**getattr(request, "param", {}))
    yield server
    server.close()


def test_a_host_name_goes_to_the_proxy_unresolved_and_the_bound_address_comes_back(proxy):
    sock, bound = connect(proxy.address, "check.lab.test", 80, timeout=5)
    with sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
    assert bound == ("198.51.100.7", 4242)
    assert proxy.seen == [[[0], None, (3, "check.lab.test", 80)]]


def test_address_literals_are_sent_as_addresses(proxy):
    for host, kind in (("198.19.0.10", 1), ("2001:db8::10", 4)):
        sock, _ = connect(proxy.address, host, 8080, timeout=5)
        sock.close()
        assert proxy.seen[-1][2] == (kind, host, 8080)


@pytest.mark.parametrize("proxy", [{"bound": (4, "2001:db8::7", 1), }, {"bound": (3, "out.example", 2)}],
                         indirect=True)
def test_a_bound_address_of_any_type_is_read(proxy):
    sock, bound = connect(proxy.address, "check.lab.test", 80, timeout=5)
    sock.close()
    assert bound == proxy.bound[1:]


@pytest.mark.parametrize("proxy", [{"users": {"alice": "s3cret"}}], indirect=True)
def test_username_and_password_rfc1929(proxy):
    sock, _ = connect(proxy.address, "check.lab.test", 80, timeout=5, username="alice", password="s3cret")
    sock.close()
    assert proxy.seen[-1][:2] == [[0, 2], ("alice", "s3cret")]
    with pytest.raises(SocksError, match="the proxy refused username 'alice' and its password"):
        connect(proxy.address, "check.lab.test", 80, timeout=5, username="alice", password="wrong")
    with pytest.raises(SocksError, match=r"accepts none of our methods \(no authentication; it may want a "
                                         r"username and password\)"):
        connect(proxy.address, "check.lab.test", 80, timeout=5)


@pytest.mark.parametrize("proxy, message", [
    ({"reply": 5}, "the proxy could not connect to check.lab.test:80: connection refused"),
    ({"reply": 2}, "the proxy could not connect to check.lab.test:80: connection not allowed by ruleset"),
    ({"reply": 4}, "the proxy could not connect to check.lab.test:80: host unreachable"),
    ({"reply": 42}, "the proxy could not connect to check.lab.test:80: reply code 42"),
    ({"greeting": b"HTTP/1.1 400 Bad Request\r\n\r\n"},
     "the proxy does not speak SOCKS5 (it answered version 72)"),
    ({"greeting": b""}, "the proxy closed the connection during the greeting"),
], indirect=["proxy"])
def test_refusals_are_one_line(proxy, message):
    with pytest.raises(SocksError) as error:
        connect(proxy.address, "check.lab.test", 80, timeout=5)
    assert str(error.value) == message


def test_a_proxy_that_is_not_there():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = closed.getsockname()  # bound, never listening: the connection is refused
        with pytest.raises(SocksError, match="the proxy cannot be reached: Connection refused"):
            connect(address, "check.lab.test", 80, timeout=5)


@pytest.mark.parametrize("text, expected", [
    ("10.66.6.2:1080", ("10.66.6.2", 1080)),
    ("localhost:1", ("localhost", 1)),
    ("[2001:db8::2]:1080", ("2001:db8::2", 1080)),
])
def test_proxy_addresses(text, expected):
    assert parse_proxy(text) == expected


@pytest.mark.parametrize("text", ["10.66.6.2", "10.66.6.2:0", "10.66.6.2:65536", "2001:db8::2:1080", ":1080",
                                  "a b:1", "10.66.6.2:1080\n", None])
def test_bad_proxy_addresses_are_one_line_naming_the_option(text):
    with pytest.raises(MpsocksError) as error:
        parse_proxy(text)
    assert str(error.value) == f"proxy: {text!r} is not HOST:PORT (an IPv6 address in brackets)"
