"""IPv4/IPv6/TCP headers and TCP options, every MPTCP subtype: the parser against tshark on the same file."""

from __future__ import annotations

import hashlib
import ipaddress
import struct

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_packet import (
    CUT,
    initial_ttl,
    key_parts,
    key_token,
    mptcp_options,
    parse_mptcp,
    parse_options,
    parse_tcp,
    reverse_key,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_pcap import Capture
from test_trace_pcap import (
    ACK,
    FIN,
    LAB_TRACES,
    PSH,
    SEED,
    SYN,
    add_addr_v0,
    add_addr_v1,
    dss,
    ethernet,
    ipv4,
    ipv6,
    mp_capable,
    mp_fail,
    mp_fastclose,
    mp_join_ack,
    mp_join_syn,
    mp_join_synack,
    mp_prio,
    mp_tcprst,
    mss,
    need_seed,
    pcap,
    remove_addr,
    sack_permitted,
    tcp,
    timestamps,
    tshark,
    wscale,
)

KEY_A, KEY_B = 0x1122334455667788, 0x99AABBCCDDEEFF00
MPTCP_OPTIONS = [
    ("MP_CAPABLE v1 SYN", SYN, mp_capable(1, 0x81)),
    ("MP_CAPABLE v1 SYN/ACK", SYN | ACK, mp_capable(1, 0x01, sender=KEY_B)),
    ("MP_CAPABLE v1 ACK", ACK, mp_capable(1, 0x01, KEY_A, KEY_B)),
    (
        "MP_CAPABLE v1 ACK with data",
        ACK | PSH,
        mp_capable(1, 0x81, KEY_A, KEY_B, data_length=100, checksum=0xABCD),
    ),
    ("MP_CAPABLE v0 SYN", SYN, mp_capable(0, 0x81, sender=KEY_A)),
    ("MP_CAPABLE v0 ACK", ACK, mp_capable(0, 0x81, KEY_A, KEY_B)),
    ("MP_JOIN SYN", SYN, mp_join_syn(0xDEADBEEF, 0x01020304, 3, True)),
    ("MP_JOIN SYN/ACK", SYN | ACK, mp_join_synack(b"12345678", 0x0A0B0C0D, 4, False)),
    ("MP_JOIN ACK", ACK, mp_join_ack(b"A" * 20)),
    ("DSS data ack 4", ACK, dss(data_ack=0x11223344)),
    ("DSS data ack 8", ACK, dss(data_ack=KEY_A, ack64=True)),
    ("DSS mapping DSN 4", ACK, dss(dsn=0x55667788, ssn=10, length=1400)),
    (
        "DSS ack + DSN 8 + checksum",
        ACK,
        dss(data_ack=5, dsn=KEY_A, dsn64=True, ssn=1, length=1000, checksum=0x1234),
    ),
    ("DSS ack 8 + DSN 8", ACK, dss(data_ack=KEY_B, ack64=True, dsn=KEY_A, dsn64=True, ssn=7, length=10)),
    ("DSS DATA_FIN", ACK | FIN, dss(data_ack=7, data_fin=True, dsn=9, ssn=0, length=1)),
    ("ADD_ADDR v0 IPv4", ACK, add_addr_v0("10.1.2.3", 2)),
    ("ADD_ADDR v0 IPv4 port", ACK, add_addr_v0("10.1.2.3", 2, 8080)),
    ("ADD_ADDR v0 IPv6", ACK, add_addr_v0("2001:db8::5", 3)),
    ("ADD_ADDR v0 IPv6 port", ACK, add_addr_v0("2001:db8::5", 3, 443)),
    ("ADD_ADDR v1 IPv4 HMAC", ACK, add_addr_v1("10.1.2.3", 2, hmac=b"HMACHMAC")),
    ("ADD_ADDR v1 IPv4 port HMAC", ACK, add_addr_v1("10.1.2.3", 2, 8080, hmac=b"HMACHMAC")),
    ("ADD_ADDR v1 IPv4 echo", ACK, add_addr_v1("10.1.2.3", 2)),
    ("ADD_ADDR v1 IPv4 port echo", ACK, add_addr_v1("10.1.2.3", 2, 8080)),
    ("ADD_ADDR v1 IPv6 HMAC", ACK, add_addr_v1("2001:db8::5", 3, hmac=b"HMACHMAC")),
    ("ADD_ADDR v1 IPv6 port HMAC", ACK, add_addr_v1("2001:db8::5", 3, 443, hmac=b"HMACHMAC")),
    ("ADD_ADDR v1 IPv6 echo", ACK, add_addr_v1("2001:db8::5", 3)),
    ("REMOVE_ADDR", ACK, remove_addr(1, 2, 7)),
    ("MP_PRIO v1", ACK, mp_prio(True)),
    ("MP_PRIO v0 with address id", ACK, mp_prio(False, 4)),
    ("MP_FAIL", ACK, mp_fail(0x0102030405060708)),
    ("MP_FASTCLOSE", ACK, mp_fastclose(KEY_B)),
    ("MP_TCPRST", ACK | 0x04, mp_tcprst(0x1, 5)),
]
TSHARK_MPTCP_FIELDS = [
    "subtype",
    "version",
    "sendkey",
    "recvkey",
    "recvtok",
    "sendrand",
    "backup.flag",
    "addrid",
    "rawdataack",
    "rawdataseqno",
    "subflowseqno",
    "datalvllen",
    "ipv4",
    "ipv6",
    "port",
    "rst_reason",
    "datafin.flag",
    "addaddrtrunchmac",
    "echo",
]


def _flag(value):
    return "" if value is None else str(int(value))


def tshark_view(option):
    """The tshark fields (TSHARK_MPTCP_FIELDS) that a parsed MPTCP OPTION gives."""
    view = dict.fromkeys(TSHARK_MPTCP_FIELDS, "")
    view["subtype"] = str(option["subtype"])
    name = option["name"]
    if name == "MP_CAPABLE":
        view.update(
            version=str(option["version"]),
            sendkey=_flag(option["sender_key"]),
            recvkey=_flag(option["receiver_key"]),
            datalvllen=_flag(option["data_length"]),
        )
    elif name == "MP_JOIN" and option["form"] != "ack":
        view.update(
            recvtok=_flag(option["token"]),
            sendrand=_flag(option["nonce"]),
            addrid=_flag(option["address_id"]),
        )
        view["backup.flag"] = _flag(option["backup"])
    elif name == "DSS":
        view.update(
            rawdataack=_flag(option["data_ack"]),
            rawdataseqno=_flag(option["dsn"]),
            subflowseqno=_flag(option["ssn"]),
            datalvllen=_flag(option["data_length"]),
        )
        view["datafin.flag"] = _flag(option["data_fin"])
    elif name == "ADD_ADDR":
        view.update(
            addrid=str(option["address_id"]),
            port=_flag(option["port"]),
            addaddrtrunchmac=str(int(option["hmac"], 16)) if option["hmac"] else "",
            echo=_flag(option["echo"]) if option["version"] == 1 else "",
        )
        view["ipv6" if ":" in option["address"] else "ipv4"] = option["address"]
    elif name == "REMOVE_ADDR":
        view["addrid"] = ",".join(str(number) for number in option["address_ids"])
    elif name == "MP_PRIO":
        view.update(addrid=_flag(option["address_id"]))
        view["backup.flag"] = _flag(option["backup"])
    elif name == "MP_FAIL":
        view["rawdataseqno"] = str(option["dsn"])
    elif name == "MP_FASTCLOSE":
        view["recvkey"] = str(option["receiver_key"])
    elif name == "MP_TCPRST":
        view["rst_reason"] = f"0x{option['reason']:02x}"
    return [view[field] for field in TSHARK_MPTCP_FIELDS]


def test_every_mptcp_option_parses_as_tshark_dissects_it(tmp_path):
    frames = []
    for number, (_name, flags, option) in enumerate(MPTCP_OPTIONS):
        segment = tcp(40000 + number, 80, seq=number, ack=1, flags=flags, options=option)
        frames.append((1.0 + number, ethernet(ipv4("192.0.2.1", "198.51.100.7", segment))))
    path = tmp_path / "options.pcap"
    path.write_bytes(pcap(frames))
    expected = tshark(path, ["tcp.options.mptcp." + field for field in TSHARK_MPTCP_FIELDS])
    packets = list(Capture(path))
    assert len(packets) == len(MPTCP_OPTIONS)
    for (name, _flags, _option), (_t, _i, data, missing), row in zip(
        MPTCP_OPTIONS, packets, expected, strict=True
    ):
        segment = parse_tcp(data, missing)
        [option] = mptcp_options(segment[7])
        assert tshark_view(option) == row, name


def test_parsed_fields_of_each_form():
    def one(option):
        return parse_mptcp(option)

    assert one(mp_capable(1, 0x81)) == {
        "subtype": 0,
        "name": "MP_CAPABLE",
        "version": 1,
        "checksum": True,
        "flags": 0x81,
        "sender_key": None,
        "receiver_key": None,
        "data_length": None,
    }
    assert one(mp_join_syn(7, 9, 3, True)) == {
        "subtype": 1,
        "name": "MP_JOIN",
        "form": "syn",
        "backup": True,
        "address_id": 3,
        "token": 7,
        "nonce": 9,
        "hmac": None,
    }
    assert one(mp_join_synack(b"12345678", 5, 4))["hmac"] == b"12345678".hex()
    assert one(mp_join_ack(b"A" * 20))["form"] == "ack"
    mapping = one(dss(data_ack=5, dsn=KEY_A, dsn64=True, ssn=1, length=1000, checksum=0x1234))
    assert (
        mapping["data_ack"],
        mapping["data_ack64"],
        mapping["dsn"],
        mapping["dsn64"],
        mapping["ssn"],
        mapping["data_length"],
        mapping["checksum"],
    ) == (5, False, KEY_A, True, 1, 1000, 0x1234)
    assert one(add_addr_v1("2001:db8::5", 3, 443, hmac=b"HMACHMAC")) == {
        "subtype": 3,
        "name": "ADD_ADDR",
        "version": 1,
        "echo": False,
        "address_id": 3,
        "address": "2001:db8::5",
        "port": 443,
        "hmac": b"HMACHMAC".hex(),
    }
    assert one(add_addr_v0("10.1.2.3", 2, 8080))["version"] == 0
    assert one(remove_addr(1, 2))["address_ids"] == [1, 2]
    assert one(mp_tcprst(0x1, 5)) == {
        "subtype": 8,
        "name": "MP_TCPRST",
        "flags": 1,
        "transient": True,
        "reason": 5,
    }


@pytest.mark.parametrize(
    "option",
    [
        b"\x1e\x03\x00",  # MP_CAPABLE without flags
        b"\x1e\x05\x10\x00\x00",  # MP_JOIN of no known length
        b"\x1e\x06\x20\x05\x00\x00",  # DSS announcing a data ack it has no room for
        b"\x1e\x07\x34\x01\x0a\x00\x00",  # ADD_ADDR too short for its address
        b"\x1e\x02",
    ],
)
def test_malformed_mptcp_options_are_marked(option):
    assert parse_mptcp(option)["malformed"] is True


def test_common_options():
    raw = (
        mss(1370)
        + b"\x01"
        + wscale(9)
        + sack_permitted()
        + timestamps(5, 6)
        + mp_capable(1, 0x81)
        + b"\x00\x00"
    )
    assert parse_options(raw) == {
        "mss": 1370,
        "wscale": 9,
        "sack_permitted": True,
        "timestamp": (5, 6),
        "mptcp": [parse_mptcp(mp_capable(1, 0x81))],
    }


@pytest.mark.parametrize("raw", [b"\x02", b"\x02\x04\x05", b"\x02\x01\x05\xb4", b"\x08\xff" + b"\x00" * 8])
def test_broken_option_lists_stop_without_raising(raw):
    assert parse_options(raw)["mss"] is None


def test_headers_against_tshark(tmp_path):
    """Addresses, ports, TTL, sequence numbers, flags, window and payload length for IPv4 and IPv6
    with options and extension headers, as tshark reads them."""
    payload = b"p" * 300
    segment = tcp(
        40000,
        443,
        seq=123456789,
        ack=987654321,
        flags=ACK | PSH,
        options=timestamps(1, 2),
        payload=payload,
        window=501,
    )
    packets = [
        ipv4("192.0.2.1", "198.51.100.7", segment, ttl=52),
        ipv4("192.0.2.1", "198.51.100.7", segment, ttl=124, options=b"\x01\x01\x01\x00"),
        ipv6("2001:db8::1", "2001:db8:1::7", segment, hop_limit=57),
        ipv6(
            "2001:db8::1",
            "2001:db8:1::7",
            segment,
            hop_limit=60,
            extensions=[
                (0, b"\x00" + b"\x01\x04\x00\x00\x00\x00"),  # hop-by-hop: PadN
                (43, b"\x00\x00\x00" + b"\x00" * 4),  # routing, type 0, no segments left
                (60, b"\x00" + b"\x01\x04\x00\x00\x00\x00"),  # destination options
                (44, b"\x00\x00\x00" + b"\x00\x00\x00\x01"),  # fragment header, offset 0 (first), no M flag
            ],
        ),
    ]
    path = tmp_path / "headers.pcap"
    path.write_bytes(pcap([(1.0 + n, ethernet(ip)) for n, ip in enumerate(packets)]))
    expected = tshark(
        path,
        [
            "ip.src",
            "ipv6.src",
            "ip.dst",
            "ipv6.dst",
            "ip.ttl",
            "ipv6.hlim",
            "tcp.srcport",
            "tcp.dstport",
            "tcp.seq_raw",
            "tcp.ack_raw",
            "tcp.flags",
            "tcp.window_size_value",
            "tcp.len",
        ],
    )
    for ip, row in zip(packets, expected, strict=True):
        key, ttl, seq, ack, flags, window, length, options, complete = parse_tcp(ip)
        family, src, dst, sport, dport = key_parts(key)
        assert [
            str(ipaddress.ip_address(src)),
            str(ipaddress.ip_address(dst)),
            str(ttl),
            str(sport),
            str(dport),
            str(seq),
            str(ack),
            f"0x{flags:04x}",
            str(window),
            str(length),
        ] == [row[0] or row[1], row[2] or row[3], row[4] or row[5], *row[6:]]
        assert (options, complete) == (timestamps(1, 2) + b"\x00\x00", True)


def test_not_tcp_and_later_fragments_are_none():
    segment = tcp(1, 2)
    assert parse_tcp(ipv4("192.0.2.1", "192.0.2.2", segment, protocol=17)) is None
    assert parse_tcp(ipv4("192.0.2.1", "192.0.2.2", segment, fragment=185)) is None
    later = ipv6("2001:db8::1", "2001:db8::2", segment, extensions=[(44, b"\x00\x05\xc8\x00\x00\x00\x01")])
    assert parse_tcp(later) is None
    assert parse_tcp(ipv6("2001:db8::1", "2001:db8::2", segment, extensions=[(50, b"\x00" * 8)])) is None
    assert parse_tcp(b"\x50" + b"\x00" * 40) is None


def test_headers_cut_by_the_snaplen():
    ip = ipv4("192.0.2.1", "192.0.2.2", tcp(1, 2, options=mss(1460) + wscale(3)))
    assert parse_tcp(ip[:30], len(ip) - 30) is CUT
    assert parse_tcp(ip[:15], len(ip) - 15) is CUT
    six = ipv6("2001:db8::1", "2001:db8::2", tcp(1, 2), extensions=[(0, b"\x00" * 7)])
    assert parse_tcp(six[:44], len(six) - 44) is CUT
    segment = parse_tcp(ip[:44], len(ip) - 44)  # options half there
    assert segment[7] == mss(1460) and segment[8] is False


def test_payload_length_comes_from_the_ip_header_even_when_cut():
    ip = ipv4("192.0.2.1", "192.0.2.2", tcp(1, 2, payload=b"x" * 1000))
    assert parse_tcp(ip[:60], len(ip) - 60)[6] == 1000
    offloaded = ipv4("192.0.2.1", "192.0.2.2", tcp(1, 2, payload=b"x" * 1000), total=0)  # TSO: length 0
    assert parse_tcp(offloaded[:60], len(offloaded) - 60)[6] == 1000


def test_keys():
    ip = ipv4("192.0.2.1", "198.51.100.7", tcp(40000, 80))
    key = parse_tcp(ip)[0]
    assert key_parts(reverse_key(key))[1:] == key_parts(key)[2:0:-1] + (80, 40000)
    six = parse_tcp(ipv6("2001:db8::1", "2001:db8::2", tcp(5, 6)))[0]
    assert len(six) == 36 and reverse_key(reverse_key(six)) == six


def test_tokens_are_the_high_bits_of_the_key_hash():
    digest = hashlib.sha256(struct.pack("!Q", KEY_A)).digest()
    assert key_token(KEY_A, 1) == (int.from_bytes(digest[:4], "big"), int.from_bytes(digest[-8:], "big"))
    assert key_token(KEY_A, 0)[0] == int.from_bytes(
        hashlib.sha1(struct.pack("!Q", KEY_A)).digest()[:4], "big"
    )


def test_tokens_match_tshark(tmp_path):
    options = (mp_capable(0, 0x81, sender=KEY_A), mp_capable(1, 0x01, sender=KEY_B))
    frames = [
        (1.0, ethernet(ipv4("192.0.2.1", "198.51.100.7", tcp(4000 + n, 80, flags=SYN, options=option))))
        for n, option in enumerate(options)
    ]
    path = tmp_path / "keys.pcap"
    path.write_bytes(pcap(frames))
    assert tshark(path, ["mptcp.expected_token"]) == [
        [str(key_token(KEY_A, 0)[0])],
        [str(key_token(KEY_B, 1)[0])],
    ]


@pytest.mark.parametrize(
    ("ttl", "initial"),
    [(1, 32), (9, 32), (32, 32), (51, 64), (64, 64), (124, 128), (128, 128), (129, 255), (255, 255)],
)
def test_initial_ttl(ttl, initial):
    assert initial_ttl(ttl) == initial


def assert_frames_match_tshark(path):
    """For every TCP frame of PATH: TTL, flags, MSS, window scale, MPTCP subtypes and payload length."""
    expected = tshark(
        path,
        [
            "ip.ttl",
            "ipv6.hlim",
            "tcp.flags",
            "tcp.options.mss_val",
            "tcp.options.wscale.shift",
            "tcp.options.mptcp.subtype",
            "tcp.len",
        ],
        "tcp",
    )
    got = []
    for _, _, data, missing in Capture(path):
        segment = parse_tcp(data, missing)
        if segment:
            _, ttl, _, _, flags, _, length, raw, _ = segment
            options = parse_options(raw)
            got.append(
                [
                    str(ttl),
                    f"0x{flags:04x}",
                    "" if options["mss"] is None else str(options["mss"]),
                    "" if options["wscale"] is None else str(options["wscale"]),
                    ",".join(str(option["subtype"]) for option in options["mptcp"]),
                    str(length),
                ]
            )
    assert got == [[row[0] or row[1], *row[2:]] for row in expected]


@pytest.mark.parametrize("path", [*SEED.values(), *LAB_TRACES], ids=lambda path: path.name)
def test_real_captures_frame_by_frame(path):
    if not path.exists():
        need_seed()
    assert_frames_match_tshark(path)
