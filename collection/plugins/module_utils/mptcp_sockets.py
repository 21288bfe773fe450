# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kernel's view of the MPTCP connections of a namespace and of their subflows.

Read with sock_diag (netlink), as ``ss -tiM`` does, from any process's sockets:

* an MPTCP socket (protocol IPPROTO_MPTCP, asked for with INET_DIAG_REQ_PROTOCOL since the
  request's protocol byte cannot hold 262) comes with ``struct mptcp_info`` (INET_DIAG_INFO):
  the connection's token, its fallback flag, the extra-subflow count and, on 6.x kernels, the
  bytes it sent and received;
* its subflows are TCP sockets whose ULP is ``mptcp``: INET_DIAG_ULP_INFO carries the token of
  the connection they belong to (MPTCP_SUBFLOW_ATTR_TOKEN_LOC), their flags (MP_CAPABLE or
  MP_JOIN, local and remote backup, fully established) and endpoint ids, and INET_DIAG_INFO
  their ``struct tcp_info`` (bytes sent, acked, received; rtt).

The ULP attribute needs CAP_NET_ADMIN. The interface of a subflow is the device it is bound to
(a subflow the path manager opened from an endpoint with ``dev``), else the interface that holds
its local address. Nothing here imports pyroute2: a raw netlink socket is enough and costs nothing
to load. A socket opened inside ``netns.visiting(NAME)`` reads namespace NAME.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import os
import socket
import struct

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError

IPPROTO_MPTCP = 262
NETLINK_ROUTE = 0
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
RTM_GETADDR = 22
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_TYPE_MASK = 0x3FFF

INET_DIAG_INFO = 2
INET_DIAG_ULP_INFO = 19
INET_DIAG_REQ_PROTOCOL = 3
INET_ULP_INFO_NAME = 1
INET_ULP_INFO_MPTCP = 3
SUBFLOW_ATTR_TOKEN_LOC = 2
SUBFLOW_ATTR_FLAGS = 8
SUBFLOW_ATTR_ID_REM = 9
SUBFLOW_ATTR_ID_LOC = 10
SUBFLOW_FLAG_JOIN_REM = 1 << 2
SUBFLOW_FLAG_JOIN_LOC = 1 << 3
SUBFLOW_FLAG_BKUP_REM = 1 << 4
SUBFLOW_FLAG_BKUP_LOC = 1 << 5
SUBFLOW_FLAG_FULLY_ESTABLISHED = 1 << 6
MPTCP_INFO_FLAG_FALLBACK = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2

#: TCP states as the kernel numbers them (include/net/tcp_states.h).
TCP_STATES = ("", "ESTABLISHED", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT",
              "CLOSE", "CLOSE-WAIT", "LAST-ACK", "LISTEN", "CLOSING", "NEW-SYN-RECV")
LISTEN = 10
ALL_STATES = 0xFFFFFFFF
#: inet_diag_msg: family, state, timer, retrans, sport, dport (big-endian), src, dst, if, cookie,
#: expires, rqueue, wqueue, uid, inode.
_DIAG_MSG = struct.Struct("=BBBB2H16s16sI8sIIIII")
#: struct mptcp_info: offsets of subflows (u8), subflows_max (u8), flags (u32), token (u32) and
#: (6.x) bytes_sent, bytes_received (u64); subflows_total (u8, 6.10+).
_MPTCP_INFO_HEAD = struct.Struct("=B2xB4xII")
_MPTCP_INFO_BYTES = struct.Struct("=QQ")
_MPTCP_BYTES_OFFSET = 56
_MPTCP_SUBFLOWS_TOTAL = 80
#: struct tcp_info: offset and layout of rtt (µs), bytes_acked, bytes_received and bytes_sent.
_TCP_INFO_FIELDS = {"rtt": (68, "=I"), "bytes_acked": (120, "=Q"), "bytes_received": (128, "=Q"),
                    "bytes_sent": (200, "=Q")}


def _attributes(data, offset=0):
    """{type: payload} of the netlink attributes in DATA from OFFSET (the last of a type wins)."""
    found = {}
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        found[kind & NLA_TYPE_MASK] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return found


def _dump(protocol, msg_type, payload):
    """The payloads of the answers to a netlink dump request, in the current namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
    try:
        sock.bind((0, 0))
        header = struct.pack("=IHHII", 16 + len(payload), msg_type, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        sock.send(header + payload)
        answers = []
        while True:
            data = sock.recv(1 << 20)
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                body = data[offset + 16:offset + length]
                if kind == NLMSG_DONE:
                    return answers
                if kind == NLMSG_ERROR:
                    error = -struct.unpack_from("=i", body)[0]
                    if error:
                        raise OSError(error, os.strerror(error))
                    return answers
                answers.append(body)
                offset += (length + 3) & ~3
    finally:
        sock.close()


def format_endpoint(address, port):
    """'addr:port' ('[addr]:port' for IPv6; a v4-mapped address as IPv4) of ADDRESS (text or bytes)."""
    address = ipaddress.ip_address(address)
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return ("[%s]:%d" if address.version == 6 else "%s:%d") % (address, port)


def _endpoint(family, raw, port):
    return format_endpoint(raw[:4] if family == socket.AF_INET else raw, port)


def split_endpoint(text):
    """('addr', port) of an 'addr:port' or '[addr]:port' string."""
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port)


def _sockets(family, protocol):
    """The sock_diag records of one family and protocol, each a dict with its raw attributes."""
    request = struct.pack("=BBBBI48s", family, protocol & 0xFF, 1 << (INET_DIAG_INFO - 1), 0,
                          ALL_STATES, b"")
    if protocol > 0xFF:
        request += struct.pack("=HHI", 8, INET_DIAG_REQ_PROTOCOL, protocol)
    found = []
    try:
        answers = _dump(NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, request)
    except OSError as exc:
        if family == socket.AF_INET6 or protocol != IPPROTO_MPTCP:
            return found  # no IPv6, or nothing of that kind: nothing to show
        raise MpsocksError("this kernel lists no MPTCP sockets (sock_diag: %s)" % exc.strerror) from None
    for body in answers:
        (fam, state, _timer, _retrans, sport, dport, src, dst, ifindex, _cookie, _expires, rqueue, wqueue,
         _uid, inode) = _DIAG_MSG.unpack_from(body)
        found.append({
            "local": _endpoint(fam, src, socket.ntohs(sport)),
            "remote": _endpoint(fam, dst, socket.ntohs(dport)),
            "state": TCP_STATES[state] if state < len(TCP_STATES) else str(state),
            "ifindex": ifindex,
            "inode": inode,
            "queues": (rqueue, wqueue),
            "attrs": _attributes(body, _DIAG_MSG.size),
        })
    return found


def _mptcp_info(raw):
    """What a struct mptcp_info says about its connection."""
    extra, limit, flags, token = _MPTCP_INFO_HEAD.unpack_from(raw)
    info = {"token": "%08x" % token, "fallback": bool(flags & MPTCP_INFO_FLAG_FALLBACK),
            "extra_subflows": extra, "subflows_max": limit, "bytes_sent": None, "bytes_received": None}
    if len(raw) >= _MPTCP_BYTES_OFFSET + _MPTCP_INFO_BYTES.size:
        info["bytes_sent"], info["bytes_received"] = _MPTCP_INFO_BYTES.unpack_from(raw, _MPTCP_BYTES_OFFSET)
    return info


def _tcp_info(raw):
    """The fields of _TCP_INFO_FIELDS in a struct tcp_info (None where an older kernel's is shorter)."""
    found = {}
    for name, (offset, layout) in _TCP_INFO_FIELDS.items():
        fits = len(raw) >= offset + struct.calcsize(layout)
        found[name] = struct.unpack_from(layout, raw, offset)[0] if fits else None
    return found


def _subflow(record):
    """The subflow view of a TCP socket whose ULP is mptcp, or None for any other TCP socket."""
    ulp = _attributes(record["attrs"].get(INET_DIAG_ULP_INFO, b""))
    if ulp.get(INET_ULP_INFO_NAME, b"").rstrip(b"\0") != b"mptcp" or INET_ULP_INFO_MPTCP not in ulp:
        return None
    attrs = _attributes(ulp[INET_ULP_INFO_MPTCP])
    flags = struct.unpack("=I", attrs.get(SUBFLOW_ATTR_FLAGS, b"\0\0\0\0")[:4])[0]
    tcp_info = _tcp_info(record["attrs"].get(INET_DIAG_INFO, b""))
    return {
        "token": "%08x" % struct.unpack("=I", attrs.get(SUBFLOW_ATTR_TOKEN_LOC, b"\0\0\0\0")[:4])[0],
        "local": record["local"],
        "remote": record["remote"],
        "state": record["state"],
        "ifindex": record["ifindex"],
        "join": bool(flags & (SUBFLOW_FLAG_JOIN_LOC | SUBFLOW_FLAG_JOIN_REM)),
        "backup": bool(flags & (SUBFLOW_FLAG_BKUP_LOC | SUBFLOW_FLAG_BKUP_REM)),
        "backup_local": bool(flags & SUBFLOW_FLAG_BKUP_LOC),
        "backup_remote": bool(flags & SUBFLOW_FLAG_BKUP_REM),
        "fully_established": bool(flags & SUBFLOW_FLAG_FULLY_ESTABLISHED),
        "local_id": attrs.get(SUBFLOW_ATTR_ID_LOC, b"\0")[0],
        "remote_id": attrs.get(SUBFLOW_ATTR_ID_REM, b"\0")[0],
        "bytes_sent": tcp_info["bytes_sent"],
        "bytes_acked": tcp_info["bytes_acked"],
        "bytes_received": tcp_info["bytes_received"],
        "rtt_ms": None if tcp_info["rtt"] is None else tcp_info["rtt"] / 1000.0,
    }


def interface_addresses():
    """{address: interface name} of every address in the current namespace."""
    names = dict(socket.if_nameindex())
    found = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        for body in _dump(NETLINK_ROUTE, RTM_GETADDR, struct.pack("=BBBBI", family, 0, 0, 0, 0)):
            index = struct.unpack_from("=I", body, 4)[0]
            attrs = _attributes(body, 8)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw and index in names:
                found[str(ipaddress.ip_address(raw))] = names[index]
    return found


def snapshot():
    """Every MPTCP socket of the current namespace and every plain TCP one, at one moment.

    Returns ``{"connections": [...], "listeners": [...], "tcp": [...]}``: connections with their
    subflows (see the module doc), the MPTCP listening sockets ('addr:port'), and the TCP sockets
    that are no subflow (local, remote, state), so that a proxy's plain TCP connection is found too.
    """
    names = dict(socket.if_nameindex())
    owners = interface_addresses()
    msks, tcp = [], []
    for family in (socket.AF_INET, socket.AF_INET6):
        msks += _sockets(family, IPPROTO_MPTCP)
        tcp += _sockets(family, socket.IPPROTO_TCP)
    subflows, plain = {}, []
    for record in tcp:
        subflow = _subflow(record)
        if subflow is None:
            plain.append({key: record[key] for key in ("local", "remote", "state")})
            continue
        local_address = split_endpoint(subflow["local"])[0]
        subflow["interface"] = names.get(subflow.pop("ifindex")) or owners.get(local_address)
        subflows.setdefault(subflow.pop("token"), []).append(subflow)
    connections, listeners = [], []
    for record in msks:
        if record["state"] == "LISTEN":
            listeners.append(record["local"])
            continue
        info = _mptcp_info(record["attrs"].get(INET_DIAG_INFO, b"\0" * 16))
        own = sorted(subflows.get(info["token"], []), key=lambda subflow: subflow["join"])
        connections.append(dict(info, local=record["local"], remote=record["remote"], state=record["state"],
                                inode=record["inode"], subflows=own))
    return {"connections": connections, "listeners": listeners, "tcp": plain}


def is_inbound(connection, listeners):
    """Whether CONNECTION was accepted by one of LISTENERS (its local port is a listening one)."""
    address, port = split_endpoint(connection["local"])
    for listener in listeners:
        listen_address, listen_port = split_endpoint(listener)
        if listen_port == port and listen_address in (address, "0.0.0.0", "::"):
            return True
    return False
