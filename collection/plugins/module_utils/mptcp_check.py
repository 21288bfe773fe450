# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The MPTCP check: what a check server says about a connection, and what the kernel says.

``run_check()`` fetches a check URL through a SOCKS5 proxy (the host name resolved by the proxy)
or directly over an MPTCP socket, with one HTTP/1.0 keep-alive request, so the connection is still
open when the answer has arrived: then it reads the kernel's view of the connection that reached
the server (the proxy's outgoing one, found by the address the proxy's reply names, or our own)
with its subflows, and the uplinks they use. ``failure()`` words why a result is not good enough.

The lab's check server answers ``{"mptcp": true, "subflows": 2, ...}`` with ``?format=json``
and "You are using MPTCP with 2 subflows" otherwise; other servers' "You are (not) using MPTCP"
is understood too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import ipaddress
import json
import re
import socket
import ssl
from urllib.parse import urlsplit

from ansible_collections.mpsocks.mptcp.plugins.module_utils import mptcp_sockets
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.mptcp_pm import FLAGS, path_manager
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns import visiting
from ansible_collections.mpsocks.mptcp.plugins.module_utils.socks_client import connect, parse_proxy
from ansible_collections.mpsocks.mptcp.plugins.module_utils.validate import interface_name

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
ANSWER_CHARS = 200
USER_AGENT = "mpsocks-mptcp-check"
NOT_USING = re.compile(r"\bnot\s+(?:using\s+)?(?:multipath\s+tcp|mptcp)\b", re.I)
USING = re.compile(r"\b(?:using|with|are)\s+(?:multipath\s+tcp|mptcp)\b|\bmptcp[- ]capable\b", re.I)
SUBFLOWS = re.compile(r"\b(\d+)\s+subflows?\b", re.I)
CLIENT = re.compile(r"\(client ([^)\s]+)\)")


def parse_url(url):
    """{scheme, host, port, target, label} of an http(s) URL; a one-line error naming it otherwise."""
    try:
        parts = urlsplit(url or "")
        port = parts.port
    except ValueError as exc:
        raise MpsocksError("url: %r is not a URL (%s)" % (url, exc)) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MpsocksError("url: %r is not an http:// or https:// URL with a host" % (url,))
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    default = 443 if parts.scheme == "https" else 80
    return {"scheme": parts.scheme, "host": parts.hostname, "port": port or default, "target": target,
            "host_header": parts.netloc.rpartition("@")[2]}


def _is_address(host):
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _open_direct(host, port, timeout):
    """A connection to HOST:PORT over an MPTCP socket (plain TCP where the kernel has no MPTCP)."""
    last = None
    for family, _type, _proto, _name, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM, mptcp_sockets.IPPROTO_MPTCP)
        except OSError as exc:
            if exc.errno not in (errno.EPROTONOSUPPORT, errno.ENOPROTOOPT, errno.EINVAL):
                raise
            sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last


def _read_answer(sock):
    """(status, reason, body) of the HTTP answer on SOCK; the body by its Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(MAX_HEAD)
        if not chunk or len(data) > MAX_HEAD:
            raise MpsocksError("no HTTP answer (%s)" % (
                "the connection closed" if not chunk else "the header is too long"))
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = re.match(r"HTTP/\d\.\d (\d{3}) ?(.*)\Z", lines[0])
    if not status:
        raise MpsocksError("not an HTTP answer: %r" % (lines[0][:80],))
    headers = {}
    for line in lines[1:]:
        name, value = (line.split(":", 1) + [""])[:2]
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length", "")
    wanted = min(int(length), MAX_BODY) if length.isdigit() else MAX_BODY
    while len(body) < wanted:
        chunk = sock.recv(min(wanted - len(body), 1 << 16))
        if not chunk:
            break  # a server that closes instead of saying how long
        body += chunk
    return int(status.group(1)), status.group(2), body[:wanted]


def server_verdict(body):
    """(mptcp, subflows, client) as the answer BODY says them; mptcp is None when it does not say."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("mptcp"), bool):
        subflows = data.get("subflows")
        return data["mptcp"], subflows if isinstance(subflows, int) else None, data.get("client")
    if NOT_USING.search(text):
        mptcp = False
    elif USING.search(text):
        mptcp = True
    else:
        return None, None, None
    subflows = SUBFLOWS.search(text)
    client = CLIENT.search(text)
    return (mptcp, int(subflows.group(1)) if subflows else (None if mptcp else 1),
            client.group(1) if client else None)


def _find_connection(before, after, local, remote_port, remote_address):
    """The MPTCP connection (or plain TCP socket) that reached the server, from two snapshots.

    LOCAL ('addr:port') is where it comes from when known (the proxy's reply, or our own socket);
    else the one connection that appeared meanwhile towards REMOTE_PORT (and REMOTE_ADDRESS if known).
    Returns (connection, plain): one of them is None, or both when the kernel shows neither.
    """
    if local is not None:
        for connection in after["connections"]:
            if connection["local"] == local:
                return connection, None
        for plain in after["tcp"]:
            if plain["local"] == local and plain["state"] != "LISTEN":
                return None, plain
    seen = set(connection["token"] for connection in before["connections"])
    new = [connection for connection in after["connections"]
           if connection["token"] not in seen
           and mptcp_sockets.split_endpoint(connection["remote"])[1] == remote_port
           and remote_address in (None, mptcp_sockets.split_endpoint(connection["remote"])[0])]
    return (new[0] if len(new) == 1 else None), None


def backup_interfaces(interfaces):
    """The INTERFACES whose MPTCP endpoint (by dev, or by an address on it) has the backup flag."""
    owners = mptcp_sockets.interface_addresses()
    names = dict(socket.if_nameindex())
    with path_manager() as pm:
        endpoints = pm.endpoints()
    backup = set()
    for endpoint in endpoints:
        if endpoint["flags"] & FLAGS["backup"]:
            backup.add(names.get(endpoint["ifindex"]) or owners.get(endpoint["address"]))
    return [name for name in interfaces if name in backup]


def kernel_view(connection, plain, interfaces):
    """The kernel's view of the connection, with the uplink (position in INTERFACES) of each subflow."""
    if connection is None and plain is None:
        return None
    if connection is None:
        return {"mptcp": False, "fallback": False, "plain_tcp": True, "token": None, "local": plain["local"],
                "remote": plain["remote"], "state": plain["state"], "subflows": []}
    subflows = []
    for subflow in connection["subflows"]:
        subflow = dict(subflow)
        on_uplink = subflow["interface"] in interfaces
        subflow["uplink"] = interfaces.index(subflow["interface"]) if on_uplink else None
        subflows.append(subflow)
    kept = ("token", "local", "remote", "state", "fallback", "bytes_sent", "bytes_received")
    view = dict((key, connection[key]) for key in kept)
    view.update(mptcp=not connection["fallback"], plain_tcp=False, subflows=subflows)
    return view


def uplink_report(kernel, interfaces, backup):
    """One entry per uplink: its interface, whether it is a backup, how many live subflows use it."""
    subflows = kernel["subflows"] if kernel else []
    return [{"index": index, "interface": name, "backup": name in backup,
             "subflows": sum(1 for subflow in subflows
                             if subflow["interface"] == name and subflow["state"] == "ESTABLISHED")}
            for index, name in enumerate(interfaces)]


def run_check(url, proxy=None, uplinks=(), timeout=10.0, username=None, password=None, validate_certs=True,
              client_netns=None, kernel_netns=None):
    """Fetch URL and read the kernel while the connection is open; the result the module returns.

    PROXY: 'HOST:PORT' of a SOCKS5 proxy, or None to connect directly (over an MPTCP socket).
    UPLINKS: the interfaces that carry uplink 0, 1, ... where the kernel is read.
    CLIENT_NETNS: where the client socket is opened; KERNEL_NETNS: whose kernel view is read (None:
    the current namespace). Raises MpsocksError (one line naming URL) when no answer comes.
    """
    target = parse_url(url)
    proxy_address = parse_proxy(proxy) if proxy else None
    interfaces = [interface_name(name, "uplinks[%d]" % index) for index, name in enumerate(uplinks or [])]
    with visiting(kernel_netns):
        before = mptcp_sockets.snapshot()
        backup = backup_interfaces(interfaces) if interfaces else []
    via = " through proxy %s" % proxy if proxy else ""
    try:
        with visiting(client_netns):
            if proxy_address:
                sock, bound = connect(proxy_address, target["host"], target["port"], timeout, username,
                                      password)
                local = mptcp_sockets.format_endpoint(*bound) if _is_address(bound[0]) and bound[1] else None
            else:
                sock = _open_direct(target["host"], target["port"], timeout)
                local = mptcp_sockets.format_endpoint(*sock.getsockname()[:2])
        try:
            if target["scheme"] == "https":
                context = ssl.create_default_context()
                if not validate_certs:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                sock = context.wrap_socket(sock, server_hostname=target["host"])
            sock.sendall(("GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: %s\r\nAccept: */*\r\n"
                          "Connection: keep-alive\r\n\r\n"
                          % (target["target"], target["host_header"], USER_AGENT)).encode("latin-1"))
            status, reason, body = _read_answer(sock)
            with visiting(kernel_netns):
                after = mptcp_sockets.snapshot()
        finally:
            sock.close()
    except TimeoutError:
        raise MpsocksError("%s does not answer%s: no answer within %g s" % (url, via, timeout)) from None
    except OSError as exc:  # ssl.SSLError too
        raise MpsocksError("%s does not answer%s: %s" % (url, via, getattr(exc, "strerror", None) or exc)) \
            from None
    except MpsocksError as exc:
        raise MpsocksError("%s does not answer%s: %s" % (url, via, exc)) from None
    if status != 200:
        raise MpsocksError("%s answered HTTP %d %s%s" % (url, status, reason, via))
    mptcp, subflows, client = server_verdict(body)
    address = target["host"] if _is_address(target["host"]) else None
    connection, plain = _find_connection(before, after, local, target["port"], address)
    kernel = kernel_view(connection, plain, interfaces)
    answer = body.decode("utf-8", "replace").strip().splitlines()
    return {
        "url": url,
        "proxy": proxy,
        "mptcp": mptcp,
        "subflows": subflows,
        "client": client,
        "answer": answer[0][:ANSWER_CHARS] if answer else "",
        "kernel": kernel,
        "uplinks": uplink_report(kernel, interfaces, backup),
    }


def failure(result):
    """Why RESULT is not MPTCP with a subflow on every uplink that is not a backup; None when it is."""
    if result["mptcp"] is None:
        return "%s: the answer does not say whether the connection is MPTCP: %r" % (
            result["url"], result["answer"])
    kernel = result["kernel"]
    if not result["mptcp"]:
        reasons = ["the server says TCP"]
        if kernel and kernel["fallback"]:
            reasons.append("the guest's connection fell back to TCP (the MPTCP option was lost on the way, "
                           "or the server does not speak MPTCP)")
        elif kernel and kernel["plain_tcp"]:
            reasons.append("the guest's connection to the server is plain TCP (the proxy does not open "
                           "MPTCP sockets)")
        return "not MPTCP: " + "; ".join(reasons)
    wanted = [uplink for uplink in result["uplinks"] if not uplink["backup"]]
    if wanted and kernel is None:
        return ("MPTCP, but the kernel here shows no connection to the server, so the uplinks cannot be "
                "checked (is the proxy on this host?)")
    missing = ["uplink %d (%s)" % (uplink["index"], uplink["interface"]) for uplink in wanted
               if not uplink["subflows"]]
    if missing:
        return "MPTCP, but no subflow on %s" % ", ".join(missing)
    return None
