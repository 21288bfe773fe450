# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stream the IP packets of a pcap or pcapng capture, in big chunks, one packet at a time.

``Capture(path)`` checks the file header; iterating over it yields, for every captured frame that
holds an IPv4 or IPv6 packet, ``(timestamp, interface, ip_packet, missing)``: the time in seconds
since the epoch, the pcapng interface number (0 in pcap), the bytes of the IP packet as captured,
and how many bytes of the frame the capture left out (0 unless a snaplen cut it). Frames of other
protocols are counted in ``not_ip``. Memory stays the size of one chunk whatever the file's size.

Formats: pcap in both byte orders with micro- or nanosecond timestamps; pcapng with any number of
sections and interfaces (enhanced, simple and obsolete packet blocks, ``if_tsresol``,
``if_tsoffset``). Link types: Ethernet (802.1Q/802.1ad tags skipped), Linux cooked SLL and SLL2,
raw IP (101, 228, 229).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import struct

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError

CHUNK = 1 << 20
#: No real frame is larger; a bigger length means the file is corrupt.
MAX_FRAME = 1 << 20
MAX_BLOCK = 16 << 20

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
LINK_TYPES = {
    LINKTYPE_ETHERNET: "ethernet",
    LINKTYPE_RAW: "raw-ip",
    LINKTYPE_LINUX_SLL: "linux-sll",
    LINKTYPE_IPV4: "ipv4",
    LINKTYPE_IPV6: "ipv6",
    LINKTYPE_LINUX_SLL2: "linux-sll2",
}

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
VLAN_ETHERTYPES = (0x8100, 0x88A8, 0x9100)

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
BYTE_ORDER_MAGIC = 0x1A2B3C4D
BLOCK_IDB = 1
BLOCK_OPB = 2
BLOCK_SPB = 3
BLOCK_EPB = 6
BLOCK_SHB = 0x0A0D0D0A
OPTION_TSRESOL = 9
OPTION_TSOFFSET = 14


def ip_offset(link_type, buf, start, end):
    """Offset in BUF of the IP packet inside the frame BUF[START:END] of LINK_TYPE, or -1 if none."""
    if link_type == LINKTYPE_ETHERNET:
        offset = start + 12
    elif link_type == LINKTYPE_LINUX_SLL2:
        offset = start
    elif link_type == LINKTYPE_LINUX_SLL:
        offset = start + 14
    else:  # raw IP: the version says which
        return start if start < end and buf[start] >> 4 in (4, 6) else -1
    if offset + 2 > end:
        return -1
    ethertype = buf[offset] << 8 | buf[offset + 1]
    ip = start + 20 if link_type == LINKTYPE_LINUX_SLL2 else offset + 2
    while ethertype in VLAN_ETHERTYPES and ip + 4 <= end:
        ethertype = buf[ip + 2] << 8 | buf[ip + 3]
        ip += 4
    if ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6) and ip < end:
        return ip
    return -1


class Capture:
    """A capture file, read as a stream of IP packets (see the module docstring)."""

    def __init__(self, path):
        self.path = str(path)
        self.format = None
        #: Names of the link types met so far.
        self.link_types = set()
        #: Frames read, and those that held no IP packet (other protocol, unknown link type).
        self.frames = 0
        self.not_ip = 0
        self._unsupported = set()
        if os.path.isdir(self.path):
            raise MpsocksError("%s: is a directory, not a capture file" % self.path)
        try:
            with open(self.path, "rb") as handle:
                head = handle.read(24)
        except OSError as exc:
            raise MpsocksError("%s: %s" % (self.path, exc.strerror or exc)) from None
        if not head:
            raise MpsocksError("%s: empty file, not a capture" % self.path)
        if head[:4] in PCAP_MAGICS:
            if len(head) < 24:
                raise MpsocksError("%s: cut short in the pcap file header" % self.path)
            self.format = "pcap"
            order, self._unit = PCAP_MAGICS[head[:4]]
            self._order = order
            self._link_type = struct.unpack(order + "I", head[20:24])[0] & 0x03FFFFFF
            if self._link_type not in LINK_TYPES:
                raise self._unknown_link_type(self._link_type)
            self.link_types.add(LINK_TYPES[self._link_type])
        elif head[:4] == PCAPNG_SHB:
            self.format = "pcapng"
        else:
            raise MpsocksError("%s: not a pcap or pcapng capture (it starts with %s)"
                               % (self.path, head[:4].hex()))

    def _unknown_link_type(self, link_type):
        return MpsocksError("%s: link type %d is not supported (%s are)"
                            % (self.path, link_type, ", ".join(sorted(LINK_TYPES.values()))))

    def _cut_short(self, what):
        return MpsocksError("%s: cut short in the middle of %s (after %d frames)"
                            % (self.path, what, self.frames))

    def _corrupt(self, what):
        return MpsocksError("%s: corrupt capture: %s (after %d frames)" % (self.path, what, self.frames))

    def __iter__(self):
        try:
            with open(self.path, "rb") as handle:
                yield from (self._pcap(handle) if self.format == "pcap" else self._pcapng(handle))
        except OSError as exc:
            raise MpsocksError("%s: %s" % (self.path, exc.strerror or exc)) from None
        if self._unsupported and not self.link_types:
            raise self._unknown_link_type(min(self._unsupported))

    def _pcap(self, handle):
        handle.read(24)
        record = struct.Struct(self._order + "IIII")
        unpack_record = record.unpack_from
        unit = self._unit
        link_type = self._link_type
        buf = b""
        while True:
            more = handle.read(CHUNK)
            if not more:
                if buf:
                    raise self._cut_short("a packet record")
                return
            buf += more
            pos, size = 0, len(buf)
            while pos + 16 <= size:
                seconds, fraction, caplen, wirelen = unpack_record(buf, pos)
                if caplen > MAX_FRAME:
                    raise self._corrupt("a packet record claims %d bytes" % caplen)
                start = pos + 16
                end = start + caplen
                if end > size:
                    break
                pos = end
                self.frames += 1
                ip = ip_offset(link_type, buf, start, end)
                if ip < 0:
                    self.not_ip += 1
                    continue
                yield seconds + fraction * unit, 0, buf[ip:end], wirelen - caplen if wirelen > caplen else 0
            buf = buf[pos:]

    def _pcapng(self, handle):
        interfaces = []  # (link type or None, seconds per tick, offset, snaplen)
        order = "<"
        buf = b""
        while True:
            more = handle.read(CHUNK)
            if not more:
                if buf:
                    raise self._cut_short("a pcapng block")
                return
            buf += more
            pos, size = 0, len(buf)
            while pos + 12 <= size:
                block_type, length = struct.unpack_from(order + "II", buf, pos)
                if block_type == BLOCK_SHB:  # the same in both byte orders
                    order = self._section_order(buf, pos)
                    length = struct.unpack_from(order + "I", buf, pos + 4)[0]
                    interfaces = []
                if length < 12 or length % 4 or length > MAX_BLOCK:
                    raise self._corrupt("a block claims %d bytes" % length)
                end = pos + length
                if end > size:
                    break
                if struct.unpack_from(order + "I", buf, end - 4)[0] != length:
                    raise self._corrupt("block lengths differ at byte %d of a chunk" % pos)
                start = pos
                pos = end
                if block_type in (BLOCK_EPB, BLOCK_OPB):
                    if block_type == BLOCK_EPB:
                        interface, high, low, caplen, wirelen = struct.unpack_from(
                            order + "IIIII", buf, start + 8)
                    else:
                        interface, _drops, high, low, caplen, wirelen = struct.unpack_from(
                            order + "HHIIII", buf, start + 8)
                    data = start + 28
                    if data + caplen > end - 4:
                        raise self._corrupt("a packet block claims %d bytes" % caplen)
                    if interface >= len(interfaces):
                        raise self._corrupt("a packet on undeclared interface %d" % interface)
                    link_type, tick, offset, _snaplen = interfaces[interface]
                    timestamp = (high << 32 | low) * tick + offset
                elif block_type == BLOCK_SPB:
                    if not interfaces:
                        raise self._corrupt("a simple packet block before any interface")
                    interface = 0
                    wirelen = struct.unpack_from(order + "I", buf, start + 8)[0]
                    link_type, _tick, _offset, snaplen = interfaces[0]
                    data = start + 12
                    caplen = min(wirelen, end - 4 - data, snaplen or wirelen)
                    timestamp = 0.0
                elif block_type == BLOCK_IDB:
                    interfaces.append(self._interface(buf, start, end, order))
                    continue
                else:
                    continue
                self.frames += 1
                if link_type is None:
                    self.not_ip += 1
                    continue
                ip = ip_offset(link_type, buf, data, data + caplen)
                if ip < 0:
                    self.not_ip += 1
                    continue
                yield timestamp, interface, buf[ip:data + caplen], wirelen - caplen if wirelen > caplen else 0
            buf = buf[pos:]

    def _section_order(self, buf, pos):
        """The byte order of the section header block at POS."""
        magic = buf[pos + 8:pos + 12]
        if magic == struct.pack("<I", BYTE_ORDER_MAGIC):
            return "<"
        if magic == struct.pack(">I", BYTE_ORDER_MAGIC):
            return ">"
        raise self._corrupt("a section header without its byte-order magic")

    def _interface(self, buf, start, end, order):
        """(link type or None, seconds per tick, offset, snaplen) of the interface block at START."""
        if end - start < 20:
            raise self._corrupt("an interface block of %d bytes" % (end - start))
        link_type, _reserved, snaplen = struct.unpack_from(order + "HHI", buf, start + 8)
        tick, offset = 1e-6, 0
        pos = start + 16
        while pos + 4 <= end - 4:
            code, length = struct.unpack_from(order + "HH", buf, pos)
            value = buf[pos + 4:pos + 4 + length]
            if code == 0:
                break
            if code == OPTION_TSRESOL and length == 1:
                exponent = value[0] & 0x7F
                tick = 2.0 ** -exponent if value[0] & 0x80 else 10.0 ** -exponent
            elif code == OPTION_TSOFFSET and length == 8:
                offset = struct.unpack(order + "q", value)[0]
            pos += 4 + (length + 3) // 4 * 4
        if link_type in LINK_TYPES:
            self.link_types.add(LINK_TYPES[link_type])
            return link_type, tick, offset, snaplen
        self._unsupported.add(link_type)
        return None, tick, offset, snaplen
