# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parse IPv4/IPv6 + TCP headers and TCP options, MPTCP's (RFC 6824 v0, RFC 8684 v1) included.

Garbage never raises: ``parse_tcp`` returns ``None`` for what is not TCP and ``CUT`` when a snaplen
cut the headers; the option parsers stop at the first malformed option and mark bad MPTCP options
``malformed``. Addresses stay packed bytes (``address_text`` prints them); the flow key is
``src + dst + sport + dport`` as packed bytes: 12 bytes for IPv4, 36 for IPv6.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import socket
import struct

#: parse_tcp's answer when the capture cut the IP or TCP header.
CUT = ()

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
TCP = 6
IPV6_EXTENSIONS = (0, 43, 60)  # hop-by-hop, routing, destination options: (len + 1) * 8 bytes
IPV6_FRAGMENT = 44
IPV6_AH = 51

OPTION_MSS, OPTION_WSCALE, OPTION_SACK_PERMITTED, OPTION_TIMESTAMP, OPTION_MPTCP = 2, 3, 4, 8, 30

MP_CAPABLE, MP_JOIN, DSS, ADD_ADDR, REMOVE_ADDR, MP_PRIO, MP_FAIL, MP_FASTCLOSE, MP_TCPRST = range(9)
MPTCP_SUBTYPES = ("MP_CAPABLE", "MP_JOIN", "DSS", "ADD_ADDR", "REMOVE_ADDR", "MP_PRIO", "MP_FAIL",
                  "MP_FASTCLOSE", "MP_TCPRST")

_TCP_FIELDS = struct.Struct("!IIBBH").unpack_from  # seq, ack, data offset, flags, window
_U16 = struct.Struct("!H").unpack_from
_U32 = struct.Struct("!I").unpack_from
_U64 = struct.Struct("!Q").unpack_from
_SSN_LENGTH = struct.Struct("!IH").unpack_from


def parse_tcp(data, missing=0):
    """The TCP segment in IP packet DATA (MISSING bytes of it not captured), as a tuple.

    ``(key, ttl, seq, ack, flags, window, payload_length, options, options_complete)``, where KEY is
    ``src + dst + sport + dport`` (packed), TTL the IPv4 TTL or IPv6 hop limit, PAYLOAD_LENGTH taken
    from the IP header (so right for cut packets), OPTIONS the raw TCP option bytes captured.
    ``None`` if DATA is not the first fragment of a TCP segment; ``CUT`` if its headers were cut.
    """
    size = len(data)
    if size < 20:
        return CUT if size >= 10 or not size else None
    version = data[0] >> 4
    if version == 4:
        if data[9] != TCP:
            return None
        header = (data[0] & 15) * 4
        if header < 20 or (data[6] & 0x1F or data[7]):  # bad header length, or a later fragment
            return None
        tcp = header
        total = data[2] << 8 | data[3]
        if not total:  # segmentation offload: the length field is left 0
            total = size + missing
        end = total
        if size < tcp + 20:
            return CUT
        key = data[12:24] if tcp == 20 else data[12:20] + data[tcp:tcp + 4]
        ttl = data[8]
    elif version == 6:
        if size < 40:
            return CUT
        tcp, protocol = 40, data[6]
        while protocol != TCP:
            if protocol in IPV6_EXTENSIONS:
                length = (data[tcp + 1] + 1) * 8 if tcp + 2 <= size else 0
            elif protocol == IPV6_FRAGMENT:
                if tcp + 8 <= size and _U16(data, tcp + 2)[0] & 0xFFF8:  # a later fragment
                    return None
                length = 8
            elif protocol == IPV6_AH:
                length = (data[tcp + 1] + 2) * 4 if tcp + 2 <= size else 0
            else:
                return None
            if not length or tcp + length > size:
                return CUT
            protocol = data[tcp]
            tcp += length
        payload = data[4] << 8 | data[5]
        end = 40 + payload if payload else size + missing  # 0: a jumbogram
        if size < tcp + 20:
            return CUT
        key = data[8:40] + data[tcp:tcp + 4]
        ttl = data[7]
    else:
        return None
    seq, ack, offset, flags, window = _TCP_FIELDS(data, tcp + 4)
    offset = (offset >> 4) * 4
    options_end = tcp + offset
    if offset > 20:
        options = data[tcp + 20:options_end]
        complete = options_end <= size
    else:
        options, complete = b"", offset == 20
    payload = end - options_end
    return key, ttl, seq, ack, flags, window, payload if payload > 0 else 0, options, complete


def key_parts(key):
    """(family 4 or 6, src, dst, sport, dport) of a flow KEY, addresses packed."""
    if len(key) == 12:
        return 4, key[0:4], key[4:8], _U16(key, 8)[0], _U16(key, 10)[0]
    return 6, key[0:16], key[16:32], _U16(key, 32)[0], _U16(key, 34)[0]


def reverse_key(key):
    """The key of the other direction of the flow KEY."""
    half = (len(key) - 4) // 2
    return key[half:2 * half] + key[:half] + key[-2:] + key[-4:-2]


def address_text(packed):
    """'192.0.2.1' or '2001:db8::1' from a packed address."""
    return socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed)


def flags_text(flags):
    """'SYN/ACK', 'RST', 'PSH/ACK'...: the TCP FLAGS set."""
    names = ((SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (PSH, "PSH"), (ACK, "ACK"))
    return "/".join(name for bit, name in names if flags & bit) or "none"


def parse_options(raw):
    """Every TCP option in RAW, as a dict (None/False/[] for absent ones).

    ``{"mss", "wscale", "sack_permitted", "timestamp": (tsval, tsecr) or None, "mptcp": [...]}``,
    MPTCP options parsed by ``parse_mptcp``.
    """
    found = {"mss": None, "wscale": None, "sack_permitted": False, "timestamp": None, "mptcp": []}
    for kind, start, end in _options(raw):
        length = end - start
        if kind == OPTION_MSS and length == 4:
            found["mss"] = _U16(raw, start + 2)[0]
        elif kind == OPTION_WSCALE and length == 3:
            found["wscale"] = raw[start + 2]
        elif kind == OPTION_SACK_PERMITTED and length == 2:
            found["sack_permitted"] = True
        elif kind == OPTION_TIMESTAMP and length == 10:
            found["timestamp"] = struct.unpack_from("!II", raw, start + 2)
        elif kind == OPTION_MPTCP:
            found["mptcp"].append(parse_mptcp(raw[start:end]))
    return found


def mptcp_options(raw):
    """The MPTCP options in RAW TCP options, parsed (see ``parse_mptcp``); the per-packet fast path."""
    found = []
    if OPTION_MPTCP not in raw:
        return found
    pos, size = 0, len(raw)
    while pos < size:
        kind = raw[pos]
        if kind == 1:
            pos += 1
            continue
        if kind == 0 or pos + 1 >= size:
            break
        length = raw[pos + 1]
        if length < 2 or pos + length > size:
            break
        if kind == OPTION_MPTCP:
            found.append(parse_mptcp(raw[pos:pos + length]))
        pos += length
    return found


def _options(raw):
    """(kind, start, end) of each well-formed option in RAW, up to the end-of-list or a bad length."""
    pos, size = 0, len(raw)
    while pos < size:
        kind = raw[pos]
        if kind == 0:
            return
        if kind == 1:
            pos += 1
            continue
        if pos + 1 >= size:
            return
        length = raw[pos + 1]
        if length < 2 or pos + length > size:
            return
        yield kind, pos, pos + length
        pos += length


def parse_mptcp(option):
    """One MPTCP OPTION (kind and length bytes included) as a dict with its ``subtype`` number.

    Per subtype (``name`` is its RFC name):

    - MP_CAPABLE: version, checksum (flag A), flags, sender_key, receiver_key, data_length
    - MP_JOIN: form (syn, syn-ack, ack), backup, address_id, token, nonce, hmac (hex)
    - DSS: data_fin, data_ack, data_ack64, dsn, dsn64, ssn, data_length, checksum
    - ADD_ADDR: version (0: RFC 6824, 1: RFC 8684), echo, address_id, address, port, hmac
    - REMOVE_ADDR: address_ids; MP_PRIO: backup, address_id; MP_FAIL: dsn
    - MP_FASTCLOSE: receiver_key; MP_TCPRST: flags (U V W T bits), transient, reason

    Absent fields are None; an option too short for its form is ``{"subtype", "name", "malformed"}``.
    """
    length = len(option)
    subtype = option[2] >> 4 if length > 2 else 15
    parser = _MPTCP_PARSERS.get(subtype)
    parsed = parser(option, length) if parser and length >= 3 else {} if length >= 3 else None
    name = MPTCP_SUBTYPES[subtype] if subtype < 9 else "MP_%d" % subtype
    if parsed is None:
        return {"subtype": subtype, "name": name, "malformed": True}
    parsed["subtype"] = subtype
    parsed["name"] = name
    return parsed


def _mp_capable(option, length):
    if length < 4:
        return None
    found = {"version": option[2] & 15, "checksum": bool(option[3] & 0x80), "flags": option[3],
             "sender_key": None, "receiver_key": None, "data_length": None}
    if length >= 12:
        found["sender_key"] = _U64(option, 4)[0]
    if length >= 20:
        found["receiver_key"] = _U64(option, 12)[0]
    if length >= 22:
        found["data_length"] = _U16(option, 20)[0]
    return found


def _mp_join(option, length):
    backup = bool(option[2] & 1)
    if length == 12:
        return {"form": "syn", "backup": backup, "address_id": option[3], "token": _U32(option, 4)[0],
                "nonce": _U32(option, 8)[0], "hmac": None}
    if length == 16:
        return {"form": "syn-ack", "backup": backup, "address_id": option[3], "token": None,
                "nonce": _U32(option, 12)[0], "hmac": option[4:12].hex()}
    if length == 24:
        return {"form": "ack", "backup": None, "address_id": None, "token": None, "nonce": None,
                "hmac": option[4:24].hex()}
    return None


def _dss(option, length):
    if length < 4:
        return None
    flags = option[3]
    data_ack = dsn = ssn = data_length = checksum = None
    pos = 4
    if flags & 0x01:
        size = 8 if flags & 0x02 else 4
        if length < pos + size:
            return None
        data_ack = (_U64 if size == 8 else _U32)(option, pos)[0]
        pos += size
    if flags & 0x04:
        size = 8 if flags & 0x08 else 4
        if length < pos + size + 6:
            return None
        dsn = (_U64 if size == 8 else _U32)(option, pos)[0]
        ssn, data_length = _SSN_LENGTH(option, pos + size)
        pos += size + 6
        if length >= pos + 2:
            checksum = _U16(option, pos)[0]
    return {"data_fin": bool(flags & 0x10), "data_ack": data_ack, "data_ack64": bool(flags & 0x02),
            "dsn": dsn, "dsn64": bool(flags & 0x08), "ssn": ssn, "data_length": data_length,
            "checksum": checksum}


def _add_addr(option, length):
    low = option[2] & 15
    if low in (4, 6):  # RFC 6824: the low nibble is the IP version
        size = 4 if low == 4 else 16
        if length not in (4 + size, 6 + size):
            return None
        hmac, echo, version = None, False, 0
    else:  # RFC 8684: the low bit is E (echo); without it an 8-byte truncated HMAC ends the option
        echo, version = bool(low & 1), 1
        rest = length - 4 - (0 if echo else 8)
        if rest in (4, 6):
            size = 4
        elif rest in (16, 18):
            size = 16
        else:
            return None
        hmac = None if echo else option[length - 8:].hex()
    end = 4 + size
    port = _U16(option, end)[0] if length in (end + 2, end + 10) else None
    return {"version": version, "echo": echo, "address_id": option[3],
            "address": address_text(option[4:end]), "port": port, "hmac": hmac}


def _remove_addr(option, length):
    return {"address_ids": list(option[3:length])} if length >= 4 else None


def _mp_prio(option, length):
    return {"backup": bool(option[2] & 1), "address_id": option[3] if length >= 4 else None}


def _mp_fail(option, length):
    return {"dsn": _U64(option, 4)[0]} if length >= 12 else None


def _mp_fastclose(option, length):
    return {"receiver_key": _U64(option, 4)[0]} if length >= 12 else None


def _mp_tcprst(option, length):
    if length < 4:
        return None
    return {"flags": option[2] & 15, "transient": bool(option[2] & 1), "reason": option[3]}


_MPTCP_PARSERS = {
    MP_CAPABLE: _mp_capable, MP_JOIN: _mp_join, DSS: _dss, ADD_ADDR: _add_addr, REMOVE_ADDR: _remove_addr,
    MP_PRIO: _mp_prio, MP_FAIL: _mp_fail, MP_FASTCLOSE: _mp_fastclose, MP_TCPRST: _mp_tcprst,
}


def key_token(key, version):
    """(token, IDSN) of an MPTCP KEY: the high 32 and low 64 bits of its SHA-1 (v0) or SHA-256 (v1)."""
    digest = (hashlib.sha1 if version == 0 else hashlib.sha256)(struct.pack("!Q", key)).digest()
    return _U32(digest, 0)[0], _U64(digest, len(digest) - 8)[0]


def initial_ttl(ttl):
    """The initial TTL a sender most likely used: the next of 32, 64, 128, 255 at or above TTL."""
    for initial in (32, 64, 128):
        if ttl <= initial:
            return initial
    return 255
