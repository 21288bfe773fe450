# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A SOCKS5 client (RFC 1928): CONNECT, with no authentication or username/password (RFC 1929).

A host name is sent as such (address type 3), so the proxy resolves it, as
``curl --socks5-hostname`` does. The proxy's reply names the address and port it bound for the
outgoing connection, which is how the caller finds that connection in the proxy's kernel.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re
import socket
import struct

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError

VERSION = 5
NO_AUTHENTICATION = 0
USERNAME_PASSWORD = 2
NO_ACCEPTABLE_METHOD = 0xFF
CONNECT = 1
ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 1, 3, 4
#: RFC 1928's reply codes.
REPLIES = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}
PROXY_PATTERN = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>[0-9]{1,5})\Z")


class SocksError(MpsocksError):
    """The proxy refused, or did not speak SOCKS5."""


def parse_proxy(text, option="proxy"):
    """(host, port) of 'HOST:PORT' or '[IPV6]:PORT'; a one-line error naming OPTION otherwise."""
    found = PROXY_PATTERN.match(text or "")
    port = int(found.group("port")) if found else 0
    if not found or not 0 < port < 65536:
        raise MpsocksError("%s: %r is not HOST:PORT (an IPv6 address in brackets)" % (option, text))
    return found.group("v6") or found.group("host"), port


def _address_field(host):
    """The address type and bytes of HOST in a request: an IP literal as such, anything else a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("idna")
        if not 0 < len(name) < 256:
            raise MpsocksError("%r: a SOCKS5 host name has 1 to 255 bytes" % host) from None
        return struct.pack("!BB", ATYP_DOMAIN, len(name)) + name
    return struct.pack("!B", ATYP_IPV4 if address.version == 4 else ATYP_IPV6) + address.packed


def _receive(sock, size, what):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise SocksError("the proxy closed the connection during %s" % what)
        data += chunk
    return data


def _authenticate(sock, username, password):
    """Offer the methods we can do and do the one the proxy picks."""
    methods = [NO_AUTHENTICATION] + ([USERNAME_PASSWORD] if username is not None else [])
    sock.sendall(struct.pack("!BB", VERSION, len(methods)) + bytes(methods))
    version, method = _receive(sock, 2, "the greeting")
    if version != VERSION:
        raise SocksError("the proxy does not speak SOCKS5 (it answered version %d)" % version)
    if method == NO_ACCEPTABLE_METHOD:
        raise SocksError("the proxy accepts none of our methods (%s)" % (
            "no authentication, username/password" if username is not None
            else "no authentication; it may want a username and password"))
    if method == USERNAME_PASSWORD and username is not None:
        user, secret = username.encode(), (password or "").encode()
        if not (0 < len(user) < 256 and len(secret) < 256):
            raise SocksError("the SOCKS username and password have at most 255 bytes each")
        sock.sendall(struct.pack("!BB", 1, len(user)) + user + struct.pack("!B", len(secret)) + secret)
        if _receive(sock, 2, "authentication")[1] != 0:
            raise SocksError("the proxy refused username %r and its password" % username)
    elif method != NO_AUTHENTICATION:
        raise SocksError("the proxy picked method %d, which we did not offer" % method)


def _bound_address(sock, address_type):
    if address_type == ATYP_IPV4:
        return str(ipaddress.IPv4Address(_receive(sock, 4, "the reply")))
    if address_type == ATYP_IPV6:
        return str(ipaddress.IPv6Address(_receive(sock, 16, "the reply")))
    if address_type == ATYP_DOMAIN:
        return _receive(sock, _receive(sock, 1, "the reply")[0], "the reply").decode("idna")
    raise SocksError("the proxy's reply has an unknown address type %d" % address_type)


def connect(proxy, host, port, timeout, username=None, password=None):
    """A socket connected through PROXY ((host, port)) to HOST:PORT, and the proxy's bound address.

    Returns (socket, (address, port)): the address and port the proxy's outgoing connection uses, as
    its reply says. Raises SocksError when the proxy cannot be reached or refuses; OSError when the
    connection breaks afterwards.
    """
    try:
        sock = socket.create_connection(proxy, timeout=timeout)
    except OSError as exc:
        raise SocksError("the proxy cannot be reached: %s" % (exc.strerror or exc)) from None
    try:
        _authenticate(sock, username, password)
        request = struct.pack("!BBB", VERSION, CONNECT, 0) + _address_field(host) + struct.pack("!H", port)
        sock.sendall(request)
        version, reply, _reserved, address_type = _receive(sock, 4, "the reply")
        if version != VERSION:
            raise SocksError("the proxy's reply is not SOCKS5 (version %d)" % version)
        if reply != 0:
            raise SocksError("the proxy could not connect to %s:%d: %s" % (
                host, port, REPLIES.get(reply, "reply code %d" % reply)))
        bound = _bound_address(sock, address_type)
        (bound_port,) = struct.unpack("!H", _receive(sock, 2, "the reply"))
    except BaseException:
        sock.close()
        raise
    return sock, (bound, bound_port)
