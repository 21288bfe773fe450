"""The capture reader: pcap (both byte orders, micro/nanoseconds) and pcapng, every link type, bad files.

Synthetic packets are built here (the other test_trace_* files import these builders) and every number
the reader gives is compared with tshark reading the same file.
"""

from __future__ import annotations

import ipaddress
import struct
import subprocess
from pathlib import Path

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_pcap import Capture
from mpsocks_testlib import SEED_TRACES

REPO = Path(__file__).resolve().parents[2]
SEED = {name: SEED_TRACES / name for name in ("nomptcp_ttl10", "mptcp_ttl64", "mptcp_ttl10")}
LAB_TRACES = sorted((REPO / "traces").glob("*.pcap"))

ETHERNET, RAW, SLL, IPV4, IPV6, SLL2 = 1, 101, 113, 228, 229, 276
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def need_seed():
    assert SEED_TRACES.is_dir(), f"the seed's captures are not in {SEED_TRACES}"


def tshark(path: Path, fields: list[str], display_filter: str | None = None) -> list[list[str]]:
    """tshark -T fields on PATH: one list of strings per frame (multi-valued fields joined by ',')."""
    argv = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,"]
    argv += ["-o", "tcp.relative_sequence_numbers:FALSE"]
    for field in fields:
        argv += ["-e", field]
    if display_filter:
        argv += ["-Y", display_filter]
    proc = subprocess.run(argv, capture_output=True, text=True, check=True)
    return [line.split("\t") for line in proc.stdout.splitlines()]


# TCP options ---------------------------------------------------------------------------------------


def mss(value):
    return struct.pack("!BBH", 2, 4, value)


def wscale(shift):
    return bytes([3, 3, shift])


def sack_permitted():
    return b"\x04\x02"


def timestamps(value, echo):
    return struct.pack("!BBII", 8, 10, value, echo)


def mptcp_option(subtype_byte, body):
    return bytes([30, 3 + len(body), subtype_byte]) + body


def mp_capable(version=1, flags=0x01, sender=None, receiver=None, data_length=None, checksum=None):
    body = bytes([flags])
    for key in (sender, receiver):
        if key is not None:
            body += struct.pack("!Q", key)
    if data_length is not None:
        body += struct.pack("!H", data_length)
    if checksum is not None:
        body += struct.pack("!H", checksum)
    return mptcp_option(0x00 | version, body)


def mp_join_syn(token, nonce, address_id=0, backup=False):
    return mptcp_option(0x10 | backup, bytes([address_id]) + struct.pack("!II", token, nonce))


def mp_join_synack(hmac, nonce, address_id=0, backup=False):
    return mptcp_option(0x10 | backup, bytes([address_id]) + hmac[:8] + struct.pack("!I", nonce))


def mp_join_ack(hmac):
    return mptcp_option(0x10, b"\x00" + hmac[:20])


def dss(data_ack=None, ack64=False, dsn=None, dsn64=False, ssn=0, length=0, checksum=None, data_fin=False):
    flags = (data_fin and 0x10) | (dsn64 and 0x08) | (dsn is not None and 0x04) | (ack64 and 0x02)
    flags |= data_ack is not None and 0x01
    body = bytes([flags])
    if data_ack is not None:
        body += struct.pack("!Q" if ack64 else "!I", data_ack)
    if dsn is not None:
        body += struct.pack("!Q" if dsn64 else "!I", dsn) + struct.pack("!IH", ssn, length)
        if checksum is not None:
            body += struct.pack("!H", checksum)
    return mptcp_option(0x20, body)


def add_addr_v0(address, address_id, port=None):
    packed = ipaddress.ip_address(address).packed
    body = bytes([address_id]) + packed + (struct.pack("!H", port) if port is not None else b"")
    return mptcp_option(0x30 | (4 if len(packed) == 4 else 6), body)


def add_addr_v1(address, address_id, port=None, hmac=None):
    """RFC 8684 ADD_ADDR: with an 8-byte HMAC, or as an echo (E flag) without."""
    packed = ipaddress.ip_address(address).packed
    body = bytes([address_id]) + packed + (struct.pack("!H", port) if port is not None else b"")
    if hmac is not None:
        return mptcp_option(0x30, body + hmac[:8])
    return mptcp_option(0x31, body)


def remove_addr(*address_ids):
    return mptcp_option(0x40, bytes(address_ids))


def mp_prio(backup, address_id=None):
    return mptcp_option(0x50 | backup, bytes([address_id]) if address_id is not None else b"")


def mp_fail(dsn):
    return mptcp_option(0x60, b"\x00" + struct.pack("!Q", dsn))


def mp_fastclose(key):
    return mptcp_option(0x70, b"\x00" + struct.pack("!Q", key))


def mp_tcprst(flags, reason):
    return mptcp_option(0x80 | flags, bytes([reason]))


# Packets ---------------------------------------------------------------------------------------------


def tcp(sport, dport, seq=1000, ack=0, flags=ACK, options=b"", payload=b"", window=65535):
    """A TCP header (options padded with end-of-list bytes) followed by PAYLOAD."""
    options += b"\x00" * (-len(options) % 4)
    offset = (20 + len(options)) // 4
    return (
        struct.pack("!HHIIBBHHH", sport, dport, seq, ack, offset << 4, flags, window, 0, 0)
        + options
        + payload
    )


def ipv4(src, dst, segment, ttl=64, options=b"", protocol=6, fragment=0, total=None):
    header_length = 20 + len(options)
    if total is None:
        total = header_length + len(segment)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | header_length // 4,
        0,
        total,
        1,
        fragment,
        ttl,
        protocol,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header + options + segment


def ipv6(src, dst, segment, hop_limit=64, extensions=()):
    """IPv6 with EXTENSIONS: (type, body) pairs, in order, in front of SEGMENT (TCP)."""
    chain = b""
    types = [kind for kind, _ in extensions] + [6]
    for (_kind, body), following in zip(extensions, types[1:], strict=True):
        chain += bytes([following]) + body
    payload = chain + segment
    return (
        struct.pack(
            "!IHBB16s16s",
            0x60000000,
            len(payload),
            types[0],
            hop_limit,
            ipaddress.IPv6Address(src).packed,
            ipaddress.IPv6Address(dst).packed,
        )
        + payload
    )


def ethernet(ip, vlans=()):
    """An Ethernet frame around IP, with 802.1Q/802.1ad tags VLANS: (tpid, vlan id) pairs."""
    frame = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02"
    for tpid, vlan in vlans:
        frame += struct.pack("!HH", tpid, vlan)
    return frame + struct.pack("!H", 0x86DD if ip[0] >> 4 == 6 else 0x0800) + ip


def sll(ip):
    return (
        struct.pack(
            "!HHH8sH", 0, 1, 6, b"\x02\x00\x00\x00\x00\x01\x00\x00", 0x86DD if ip[0] >> 4 == 6 else 0x0800
        )
        + ip
    )


def sll2(ip, ifindex=3):
    return (
        struct.pack(
            "!HHIHBB8s",
            0x86DD if ip[0] >> 4 == 6 else 0x0800,
            0,
            ifindex,
            1,
            0,
            6,
            b"\x02\x00\x00\x00\x00\x01\x00\x00",
        )
        + ip
    )


FRAMERS = {ETHERNET: ethernet, SLL: sll, SLL2: sll2, RAW: bytes, IPV4: bytes, IPV6: bytes}


def pcap(frames, link_type=ETHERNET, order="<", nanoseconds=False, snaplen=65535):
    """A pcap file of FRAMES: (time, frame bytes) pairs, each cut to SNAPLEN."""
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, link_type)]
    for timestamp, frame in frames:
        seconds = int(timestamp)
        fraction = round((timestamp - seconds) * (1e9 if nanoseconds else 1e6))
        cut = frame[:snaplen]
        out.append(struct.pack(order + "IIII", seconds, fraction, len(cut), len(frame)) + cut)
    return b"".join(out)


def _block(order, kind, body):
    body += b"\x00" * (-len(body) % 4)
    length = len(body) + 12
    return struct.pack(order + "II", kind, length) + body + struct.pack(order + "I", length)


def pcapng_section(interfaces, packets, order="<", snaplen=0, simple=False):
    """A pcapng section: INTERFACES as (link type, tsresol byte or None), PACKETS as (interface, time,
    frame); SIMPLE writes simple packet blocks (interface 0, no time)."""
    out = [_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))]
    units = []
    for link_type, tsresol in interfaces:
        options = b""
        if tsresol is not None:
            options = (
                struct.pack(order + "HH", 9, 1) + bytes([tsresol, 0, 0, 0]) + struct.pack(order + "HH", 0, 0)
            )
        out.append(_block(order, 1, struct.pack(order + "HHI", link_type, 0, snaplen) + options))
        exponent = (tsresol if tsresol is not None else 6) & 0x7F
        units.append(2.0**-exponent if tsresol is not None and tsresol & 0x80 else 10.0**-exponent)
    for interface, timestamp, frame in packets:
        cut = frame[:snaplen] if snaplen else frame
        if simple:
            out.append(_block(order, 3, struct.pack(order + "I", len(frame)) + cut))
            continue
        ticks = round(timestamp / units[interface])
        out.append(
            _block(
                order,
                6,
                struct.pack(order + "IIIII", interface, ticks >> 32, ticks & 0xFFFFFFFF, len(cut), len(frame))
                + cut,
            )
        )
    return b"".join(out)


def syn_packet(family=4, ttl=64, sport=40000, dport=80, options=None):
    options = (
        options
        if options is not None
        else mss(1460) + sack_permitted() + timestamps(1, 0) + b"\x01" + wscale(7) + mp_capable()
    )
    segment = tcp(sport, dport, seq=1000, flags=SYN, options=options)
    if family == 4:
        return ipv4("192.0.2.1", "198.51.100.7", segment, ttl=ttl)
    return ipv6("2001:db8::1", "2001:db8:1::7", segment, hop_limit=ttl)


def read_all(path):
    return list(Capture(path))


# Tests -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("link_type", sorted(FRAMERS))
@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanoseconds", [False, True])
def test_pcap_every_link_type_byte_order_and_precision(tmp_path, link_type, order, nanoseconds):
    family = 6 if link_type == IPV6 else 4
    packets = [syn_packet(family, ttl=ttl, sport=40000 + ttl) for ttl in (9, 63, 124)]
    frames = [(1587025636.25 + n * 0.5, FRAMERS[link_type](ip)) for n, ip in enumerate(packets)]
    path = tmp_path / "t.pcap"
    path.write_bytes(pcap(frames, link_type, order, nanoseconds))
    got = read_all(path)
    assert [data for _, _, data, _ in got] == packets
    assert [missing for _, _, _, missing in got] == [0, 0, 0]
    expected = tshark(
        path,
        [
            "frame.time_epoch",
            "ipv6.hlim" if family == 6 else "ip.ttl",
            "tcp.options.mss_val",
            "tcp.options.wscale.shift",
            "tcp.options.mptcp.subtype",
        ],
    )
    assert [f"{timestamp:.6f}" for timestamp, _, _, _ in got] == [row[0][:17] for row in expected]
    assert [row[1:] for row in expected] == [[str(ttl), "1460", "7", "0"] for ttl in (9, 63, 124)]


@pytest.mark.parametrize("vlans", [[(0x8100, 10)], [(0x88A8, 100), (0x8100, 10)]], ids=["802.1Q", "802.1ad"])
def test_vlan_tags_are_skipped(tmp_path, vlans):
    ip = syn_packet(ttl=51)
    path = tmp_path / "vlan.pcap"
    path.write_bytes(pcap([(1.0, ethernet(ip, vlans))]))
    assert [data for _, _, data, _ in read_all(path)] == [ip]
    assert tshark(path, ["vlan.id", "ip.ttl"]) == [[str(vlans[-1][1]), "51"]]


def test_pcapng_interfaces_of_several_link_types_and_resolutions(tmp_path):
    v4, v6 = syn_packet(4, ttl=33), syn_packet(6, ttl=57)
    interfaces = [(ETHERNET, None), (SLL2, 9), (RAW, 0x80 | 20)]
    packets = [(0, 100.5, ethernet(v4)), (1, 101.123456789, sll2(v6)), (2, 102.25, v4), (1, 103.0, sll2(v4))]
    path = tmp_path / "multi.pcapng"
    path.write_bytes(
        pcapng_section(interfaces, packets, ">") + pcapng_section([(SLL, None)], [(0, 104.0, sll(v6))])
    )
    capture = Capture(path)
    got = list(capture)
    assert capture.format == "pcapng"
    assert capture.link_types == {"ethernet", "linux-sll2", "raw-ip", "linux-sll"}
    assert [(interface, data) for _, interface, data, _ in got] == [
        (0, v4),
        (1, v6),
        (2, v4),
        (1, v4),
        (0, v6),
    ]
    expected = tshark(path, ["frame.time_epoch", "frame.interface_id", "ip.ttl", "ipv6.hlim"])
    assert [round(timestamp, 6) for timestamp, _, _, _ in got] == [
        round(float(row[0]), 6) for row in expected
    ]
    assert [row[1:] for row in expected] == [
        ["0", "33", ""],
        ["1", "", "57"],
        ["2", "33", ""],
        ["1", "33", ""],
        ["0", "", "57"],
    ]


def test_pcapng_simple_packet_blocks_are_cut_to_the_snaplen(tmp_path):
    ip = syn_packet(ttl=64) + b"x" * 100
    path = tmp_path / "simple.pcapng"
    path.write_bytes(pcapng_section([(RAW, None)], [(0, 0, ip)], snaplen=80, simple=True))
    [(_, _, data, missing)] = read_all(path)
    assert (data, missing) == (ip[:80], len(ip) - 80)
    assert tshark(path, ["frame.len", "frame.cap_len"]) == [[str(len(ip)), "80"]]


def test_snaplen_cut_packets_say_how_much_is_missing(tmp_path):
    ip = ipv4("192.0.2.1", "198.51.100.7", tcp(40000, 80, payload=b"p" * 1000), ttl=40)
    path = tmp_path / "cut.pcap"
    path.write_bytes(pcap([(1.0, ethernet(ip))], snaplen=120))
    [(_, _, data, missing)] = read_all(path)
    assert data == ip[: 120 - 14] and missing == len(ip) - (120 - 14)
    assert tshark(path, ["frame.len", "frame.cap_len", "ip.ttl"]) == [[str(len(ip) + 14), "120", "40"]]


def test_non_ip_frames_are_counted_not_yielded(tmp_path):
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\x00" * 28
    ip = syn_packet()
    path = tmp_path / "arp.pcap"
    path.write_bytes(pcap([(1.0, arp), (2.0, ethernet(ip)), (3.0, b"\x00" * 5)]))
    capture = Capture(path)
    assert [data for _, _, data, _ in capture] == [ip]
    assert (capture.frames, capture.not_ip) == (3, 2)


@pytest.mark.parametrize("path", [*SEED.values(), *LAB_TRACES], ids=lambda p: p.name)
def test_real_captures_read_like_tshark(path):
    if not path.exists():
        need_seed()
    got = read_all(path)
    expected = tshark(path, ["frame.time_epoch", "ip.ttl", "frame.cap_len"])
    assert len(got) == len(expected)
    assert [round(t, 6) for t, _, _, _ in got] == [round(float(row[0]), 6) for row in expected]
    assert [data[8] for _, _, data, _ in got] == [int(row[1]) for row in expected]
    assert [len(data) + 14 <= int(row[2]) for (_, _, data, _), row in zip(got, expected, strict=True)] == [
        True
    ] * len(got)


# Bad files --------------------------------------------------------------------------------------------


def _bad_files():
    good = pcap([(1.0, ethernet(syn_packet()))])
    ng = pcapng_section([(ETHERNET, None)], [(0, 1.0, ethernet(syn_packet()))])
    files = {
        "empty": (b"", "empty file"),
        "text": (b"GET / HTTP/1.1\r\n", "not a pcap or pcapng capture"),
        "short-header": (good[:10], "cut short in the pcap file header"),
        "cut-record": (good[:-5], "cut short in the middle of a packet record"),
        "cut-block": (ng[:-5], "cut short in the middle of a pcapng block"),
        "link-type": (pcap([(1.0, b"\x00" * 40)], link_type=147), "link type 147 is not supported"),
        "ng-link-type": (
            pcapng_section([(147, None)], [(0, 1.0, b"\x00" * 40)]),
            "link type 147 is not supported",
        ),
        "huge-record": (good[:24] + struct.pack("<IIII", 0, 0, 1 << 30, 1 << 30), "claims 1073741824 bytes"),
        "bad-block-length": (ng[:28] + struct.pack("<II", 6, 13) + ng[36:], "a block claims 13 bytes"),
    }
    return files


@pytest.mark.parametrize(
    "name",
    [
        "empty",
        "text",
        "short-header",
        "cut-record",
        "cut-block",
        "link-type",
        "ng-link-type",
        "huge-record",
        "bad-block-length",
    ],
)
def test_bad_files_raise_one_line_naming_the_file(tmp_path, name):
    content, message = _bad_files()[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MpsocksError) as raised:
        read_all(path)
    text = str(raised.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_packet_on_an_undeclared_interface_is_corrupt(tmp_path):
    path = tmp_path / "orphan.pcapng"
    section = pcapng_section([(ETHERNET, None)], [(0, 1.0, ethernet(syn_packet()))])
    block = _block("<", 6, struct.pack("<IIIII", 5, 0, 0, 4, 4) + b"abcd")
    path.write_bytes(section + block)
    with pytest.raises(MpsocksError, match="undeclared interface 5"):
        read_all(path)


def test_directory_and_missing_file(tmp_path):
    with pytest.raises(MpsocksError, match=f"^{tmp_path}: is a directory"):
        Capture(tmp_path)
    with pytest.raises(MpsocksError, match=f"^{tmp_path / 'nope'}: No such file"):
        Capture(tmp_path / "nope")


def test_a_big_file_streams_in_flat_memory(tmp_path):
    """Many chunks' worth of records, one read at a time (the reader keeps no packet)."""
    frame = ethernet(ipv4("192.0.2.1", "198.51.100.7", tcp(40000, 80, payload=b"d" * 1400)))
    path = tmp_path / "big.pcap"
    path.write_bytes(pcap([(n * 0.001, frame) for n in range(3000)]))  # 4.3 MB: 5 chunks
    count = 0
    for _, _, data, _ in Capture(path):
        count += 1
        assert len(data) == len(frame) - 14
    assert count == 3000
