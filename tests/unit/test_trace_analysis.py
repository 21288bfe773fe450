"""The analysis: handshakes, MPTCP connections, fallbacks, injected packets and the middlebox verdict.

On the seed's captures, the lab's, and synthetic conversations built here; every number is checked
against tshark reading the same file (``assert_matches_tshark``, also used by the netns tests).
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_analysis import analyze, format_report
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_packet import key_token
from test_trace_pcap import (
    ACK,
    FIN,
    PSH,
    REPO,
    RST,
    SEED,
    SYN,
    add_addr_v1,
    dss,
    ethernet,
    ipv4,
    ipv6,
    mp_capable,
    mp_join_ack,
    mp_join_syn,
    mp_join_synack,
    mp_prio,
    mss,
    need_seed,
    pcap,
    remove_addr,
    sack_permitted,
    sll2,
    tcp,
    timestamps,
    tshark,
    wscale,
)

KEY_A, KEY_B = 0x0123456789ABCDEF, 0xFEDCBA9876543210
CLIENT, SERVER = "10.0.0.1", "192.0.2.80"
CLIENT2 = "10.0.1.1"
V6_CLIENT, V6_CLIENT2, V6_SERVER = "2001:db8:a::1", "2001:db8:b::1", "2001:db8:80::80"


class Conversation:
    """Synthetic packets in time order, each a millisecond after the previous one."""

    def __init__(self, start=1_700_000_000.0):
        self.time = start
        self.packets = []

    def send(self, src, dst, sport, dport, ttl=64, **segment):
        self.time += 0.001
        body = tcp(sport, dport, **segment)
        ip = ipv6(src, dst, body, hop_limit=ttl) if ":" in src else ipv4(src, dst, body, ttl=ttl)
        self.packets.append((self.time, ip))

    def write(self, path, link=ethernet, snaplen=65535):
        path.write_bytes(
            pcap(
                [(t, link(ip)) for t, ip in self.packets],
                link_type=276 if link is sll2 else 1,
                snaplen=snaplen,
            )
        )
        return path


def syn_options(mptcp=True, ws=7):
    return (
        mss(1460)
        + sack_permitted()
        + timestamps(1, 0)
        + b"\x01"
        + wscale(ws)
        + (mp_capable(1, 0x01) if mptcp else b"")
    )


def handshake(
    talk,
    client,
    server,
    sport,
    mptcp=True,
    answer=True,
    server_ttl=52,
    synack_options=None,
    client_isn=1000,
    server_isn=5000,
    dport=80,
):
    """SYN, SYN/ACK (unless not ANSWER), ACK of one connection; MPTCP v1 with KEY_A/KEY_B if MPTCP."""
    talk.send(client, server, sport, dport, seq=client_isn, flags=SYN, options=syn_options(mptcp))
    if not answer:
        return
    if synack_options is None:
        synack_options = mss(1460) + sack_permitted() + timestamps(2, 1) + b"\x01" + wscale(9)
        if mptcp:
            synack_options += mp_capable(1, 0x01, sender=KEY_B)
    talk.send(
        server,
        client,
        dport,
        sport,
        ttl=server_ttl,
        seq=server_isn,
        ack=client_isn + 1,
        flags=SYN | ACK,
        options=synack_options,
    )
    talk.send(
        client,
        server,
        sport,
        dport,
        seq=client_isn + 1,
        ack=server_isn + 1,
        flags=ACK,
        options=mp_capable(1, 0x01, KEY_A, KEY_B) if mptcp else b"",
    )


def mptcp_download(
    talk, client=CLIENT, client2=CLIENT2, server=SERVER, sizes=(1000, 1000, 500), join_sizes=(700,)
):
    """An MPTCP v1 download: initial subflow (port 40000), a backup MP_JOIN subflow (port 40001) from
    CLIENT2, data with DSS both ways, ADD_ADDR, REMOVE_ADDR, MP_PRIO and DATA_FIN."""
    _, idsn_a = key_token(KEY_A, 1)
    _, idsn_b = key_token(KEY_B, 1)
    handshake(talk, client, server, 40000)
    talk.send(
        client,
        server,
        40000,
        80,
        seq=1001,
        ack=5001,
        flags=ACK | PSH,
        payload=b"G" * 100,
        options=dss(data_ack=idsn_b + 1, ack64=True, dsn=idsn_a + 1, dsn64=True, ssn=1, length=100),
    )
    server_seq, data_seq = 1, idsn_b + 1
    for size in sizes:
        talk.send(
            server,
            client,
            80,
            40000,
            ttl=52,
            seq=5000 + server_seq,
            ack=1101,
            flags=ACK | PSH,
            payload=b"d" * size,
            options=dss(
                data_ack=idsn_a + 101, ack64=True, dsn=data_seq, dsn64=True, ssn=server_seq, length=size
            ),
        )
        server_seq += size
        data_seq += size
        talk.send(
            client,
            server,
            40000,
            80,
            seq=1101,
            ack=5000 + server_seq,
            flags=ACK,
            options=dss(data_ack=data_seq, ack64=True),
        )
    token_b, _ = key_token(KEY_B, 1)
    talk.send(
        client2,
        server,
        40001,
        80,
        seq=7000,
        flags=SYN,
        options=mss(1400) + wscale(8) + mp_join_syn(token_b, 11, address_id=1, backup=True),
    )
    talk.send(
        server,
        client2,
        80,
        40001,
        ttl=51,
        seq=9000,
        ack=7001,
        flags=SYN | ACK,
        options=mss(1460) + wscale(9) + mp_join_synack(b"h" * 8, 12, address_id=0, backup=True),
    )
    talk.send(client2, server, 40001, 80, seq=7001, ack=9001, flags=ACK, options=mp_join_ack(b"H" * 20))
    join_seq = 1
    for size in join_sizes:
        talk.send(
            server,
            client2,
            80,
            40001,
            ttl=51,
            seq=9000 + join_seq,
            ack=7001,
            flags=ACK | PSH,
            payload=b"j" * size,
            options=dss(
                data_ack=idsn_a + 101, ack64=True, dsn=data_seq & 0xFFFFFFFF, ssn=join_seq, length=size
            ),
        )
        join_seq += size
        data_seq += size
    talk.send(
        server,
        client,
        80,
        40000,
        ttl=52,
        seq=5000 + server_seq,
        ack=1101,
        flags=ACK,
        options=add_addr_v1("192.0.2.81", 5, 8080, hmac=b"12345678") + dss(data_ack=idsn_a + 101, ack64=True),
    )
    talk.send(
        server,
        client,
        80,
        40000,
        ttl=52,
        seq=5000 + server_seq,
        ack=1101,
        flags=ACK,
        options=remove_addr(5) + dss(data_ack=idsn_a + 101, ack64=True),
    )
    talk.send(
        client2,
        server,
        40001,
        80,
        seq=7001,
        ack=9000 + join_seq,
        flags=ACK,
        options=mp_prio(False) + dss(data_ack=data_seq, ack64=True),
    )
    talk.send(
        server,
        client,
        80,
        40000,
        ttl=52,
        seq=5000 + server_seq,
        ack=1101,
        flags=ACK | FIN,
        options=dss(
            data_ack=idsn_a + 101, ack64=True, dsn=data_seq, dsn64=True, ssn=0, length=1, data_fin=True
        ),
    )
    talk.send(
        client,
        server,
        40000,
        80,
        seq=1101,
        ack=5001 + server_seq,
        flags=ACK | FIN,
        options=dss(
            data_ack=data_seq + 1, ack64=True, dsn=idsn_a + 101, dsn64=True, ssn=0, length=1, data_fin=True
        ),
    )


# tshark as the reference --------------------------------------------------------------------------------


def _endpoint(row_address, port):
    return f"{row_address}:{port}"


def tshark_streams(path, display_filter="tcp"):
    """{tcp.stream: {...}} with the first SYN and SYN/ACK, SYN count, bytes per sender, mptcp.stream, of
    the packets DISPLAY_FILTER keeps."""
    fields = [
        "tcp.stream",
        "ip.src",
        "ipv6.src",
        "tcp.srcport",
        "ip.dst",
        "ipv6.dst",
        "tcp.dstport",
        "tcp.len",
        "mptcp.stream",
        "tcp.flags.syn",
        "tcp.flags.ack",
        "ip.ttl",
        "ipv6.hlim",
        "tcp.options.mss_val",
        "tcp.options.wscale.shift",
        "tcp.options.mptcp.subtype",
    ]
    streams = defaultdict(
        lambda: {"syns": 0, "syn": None, "synack": None, "bytes": defaultdict(int), "mptcp": None}
    )
    for row in tshark(path, fields, display_filter):
        stream = streams[int(row[0])]
        src, dst = _endpoint(row[1] or row[2], row[3]), _endpoint(row[4] or row[5], row[6])
        stream["bytes"][(src, dst)] += int(row[7])
        if row[8]:
            stream["mptcp"] = int(row[8])
        header = {
            "ttl": int(row[11] or row[12]),
            "mss": int(row[13]) if row[13] else None,
            "wscale": int(row[14]) if row[14] else None,
            "subtypes": row[15].split(",") if row[15] else [],
            "src": src,
            "dst": dst,
        }
        if row[9] == "1" and row[10] == "0":
            stream["syns"] += 1
            stream["syn"] = stream["syn"] or header
        elif row[9] == "1" and not stream["synack"]:
            stream["synack"] = header
    return streams


def _text(endpoint):
    return f"{endpoint['address']}:{endpoint['port']}"


def assert_matches_tshark(path, report, display_filter="tcp"):
    """Every handshake field, byte count and MPTCP grouping of REPORT (of PATH alone) is tshark's, for the
    packets DISPLAY_FILTER keeps."""
    streams = tshark_streams(path, display_filter)
    by_ends = {}
    for number, stream in streams.items():
        ends = (stream["syn"]["src"], stream["syn"]["dst"]) if stream["syn"] else None
        by_ends.setdefault(ends, []).append(number)
    for handshake in report["handshakes"]:
        numbers = by_ends[(_text(handshake["client"]), _text(handshake["server"]))]
        stream = streams[numbers[0]]
        syn, synack = handshake["syn"], handshake["synack"]
        assert (syn["ttl"], syn["mss"], syn["wscale"], syn["attempts"]) == (
            stream["syn"]["ttl"],
            stream["syn"]["mss"],
            stream["syn"]["wscale"],
            stream["syns"],
        )
        assert syn["mptcp"] == ("0" in stream["syn"]["subtypes"])
        assert syn["mp_join"] == ("1" in stream["syn"]["subtypes"])
        if stream["synack"] is None:
            assert synack is None
        else:
            assert (synack["ttl"], synack["mss"], synack["wscale"], synack["mptcp"]) == (
                stream["synack"]["ttl"],
                stream["synack"]["mss"],
                stream["synack"]["wscale"],
                "0" in stream["synack"]["subtypes"],
            )
    assert len(report["handshakes"]) == sum(1 for stream in streams.values() if stream["syn"])
    stream_of = {}
    for number, stream in streams.items():
        for src, dst in stream["bytes"]:
            stream_of.setdefault((src, dst), number)
    for connection in report["connections"]:
        numbers = set()
        for subflow in connection["subflows"]:
            client, server = _text(subflow["client"]), _text(subflow["server"])
            number = stream_of.get((client, server), stream_of.get((server, client)))
            numbers.add(number)
            sent = streams[number]["bytes"]
            assert subflow["bytes"] == {
                "client_to_server": sent[(client, server)],
                "server_to_client": sent[(server, client)],
            }
        mptcp_streams = {streams[number]["mptcp"] for number in numbers}
        assert len(mptcp_streams) == 1 and None not in mptcp_streams
        assert numbers == {n for n, stream in streams.items() if stream["mptcp"] in mptcp_streams}


# Synthetic conversations -----------------------------------------------------------------------------------


def test_mptcp_download(tmp_path):
    talk = Conversation()
    mptcp_download(talk)
    path = talk.write(tmp_path / "download.pcap")
    report = analyze([path])
    assert_matches_tshark(path, report)
    [connection] = report["connections"]
    assert (connection["version"], connection["client_key"], connection["server_key"]) == (1, KEY_A, KEY_B)
    assert (connection["client_token"], connection["server_token"]) == (
        key_token(KEY_A, 1)[0],
        key_token(KEY_B, 1)[0],
    )
    assert connection["bytes"] == {"client_to_server": 100, "server_to_client": 3200}
    initial, join = connection["subflows"]
    assert (initial["kind"], initial["backup"], initial["wscale"]) == (
        "initial",
        False,
        {"client": 7, "server": 9},
    )
    assert (join["kind"], join["backup"], join["address_id"], join["established"]) == ("join", False, 1, True)
    assert (initial["share"], join["share"]) == (round(2600 / 3300, 4), round(700 / 3300, 4))
    assert join["client"] == {"address": CLIENT2, "port": 40001}
    assert [(a["address"], a["port"], a["address_id"]) for a in connection["add_addr"]] == [
        ("192.0.2.81", 8080, 5)
    ]
    assert connection["remove_addr"][0]["address_ids"] == [5]
    assert connection["data_fin"] == {"client": True, "server": True}
    assert connection["fallback"] is None and report["fallbacks"] == [] and report["injected"] == []
    assert [h["connection"] for h in report["handshakes"]] == [0, 0]
    assert [h["syn"]["mp_join"] for h in report["handshakes"]] == [False, True]
    assert report["middlebox"]["verdict"] == "none"
    assert report["files"][0]["tcp"] == len(talk.packets)
    json.dumps(report)
    assert "Subflow 1 (join) with wscale : 8 9 IPv4 sport 40001 dport 80" in format_report(report)


def test_mptcp_over_ipv6_in_linux_cooked_v2(tmp_path):
    talk = Conversation()
    mptcp_download(talk, V6_CLIENT, V6_CLIENT2, V6_SERVER)
    path = talk.write(tmp_path / "download6.pcap", link=sll2)
    report = analyze([path])
    assert_matches_tshark(path, report)
    [connection] = report["connections"]
    assert [s["family"] for s in connection["subflows"]] == ["ipv6", "ipv6"]
    assert connection["server"] == {"address": V6_SERVER, "port": 80}
    assert "[2001:db8:a::1]:40000" in format_report(report)


def test_snaplen_cut_capture_gives_the_same_numbers(tmp_path):
    talk = Conversation()
    mptcp_download(talk)
    full, cut = (
        analyze([talk.write(tmp_path / "full.pcap")]),
        analyze([talk.write(tmp_path / "cut.pcap", snaplen=96)]),
    )
    assert cut["connections"] == full["connections"]
    assert cut["files"][0]["truncated"] == sum(1 for _, ip in talk.packets if len(ip) + 14 > 96)
    assert_matches_tshark(tmp_path / "cut.pcap", cut)


def test_join_captured_before_its_connection_in_another_file(tmp_path):
    talk = Conversation()
    mptcp_download(talk)
    initial = Conversation()
    initial.packets = [p for p in talk.packets if _port_of(p[1]) == 40000]
    joins = Conversation()
    joins.packets = [p for p in talk.packets if _port_of(p[1]) == 40001]
    report = analyze([joins.write(tmp_path / "wlan.pcap"), initial.write(tmp_path / "tether.pcap")])
    [connection] = report["connections"]
    assert [(s["kind"], s["file"]) for s in connection["subflows"]] == [("initial", 1), ("join", 0)]


def _port_of(ip):
    return ({40000, 40001} & {int.from_bytes(ip[20:22], "big"), int.from_bytes(ip[22:24], "big")}).pop()


def test_join_from_the_server_captured_before_its_connection(tmp_path):
    """The server opens the extra subflow (its MP_JOIN carries the client's token), in an earlier file."""
    joins, initial = Conversation(), Conversation()
    token_a, _ = key_token(KEY_A, 1)
    joins.send(SERVER, CLIENT2, 50000, 7000, seq=1, flags=SYN, options=mp_join_syn(token_a, 1, address_id=2))
    joins.send(
        CLIENT2, SERVER, 7000, 50000, seq=9, ack=2, flags=SYN | ACK, options=mp_join_synack(b"h" * 8, 2)
    )
    joins.send(SERVER, CLIENT2, 50000, 7000, seq=2, ack=10, flags=ACK, payload=b"s" * 300)
    handshake(initial, CLIENT, SERVER, 40000)
    report = analyze([joins.write(tmp_path / "a.pcap"), initial.write(tmp_path / "b.pcap")])
    [connection] = report["connections"]
    first, joined = connection["subflows"]
    assert (first["kind"], joined["kind"]) == ("initial", "join")
    assert joined["client"] == {"address": CLIENT2, "port": 7000}
    assert joined["bytes"] == {"client_to_server": 0, "server_to_client": 300}


def test_join_whose_connection_was_not_captured(tmp_path):
    talk = Conversation()
    mptcp_download(talk)
    talk.packets = [p for p in talk.packets if _port_of(p[1]) == 40001]
    report = analyze([talk.write(tmp_path / "join.pcap")])
    [connection] = report["connections"]
    assert (connection["version"], connection["server_token"], connection["handshake_seen"]) == (
        None,
        key_token(KEY_B, 1)[0],
        False,
    )


def test_subflow_captured_after_its_handshake(tmp_path):
    talk = Conversation()
    mptcp_download(talk)
    talk.packets = talk.packets[3:]
    report = analyze([talk.write(tmp_path / "late.pcap")])
    kinds = sorted(s["kind"] for c in report["connections"] for s in c["subflows"])
    assert kinds == ["join", "unknown"]


def test_fallback_when_the_synack_lacks_mp_capable(tmp_path):
    talk = Conversation()
    handshake(talk, CLIENT, SERVER, 40000, synack_options=mss(1460))
    report = analyze([talk.write(tmp_path / "fallback.pcap")])
    assert report["connections"] == []
    [fallback] = report["fallbacks"]
    assert fallback["reason"] == "the SYN/ACK came without MP_CAPABLE" and fallback["connection"] is None
    assert report["middlebox"]["verdict"] == "unknown"


def test_fallback_when_dss_stops(tmp_path):
    talk = Conversation()
    handshake(talk, CLIENT, SERVER, 40000)
    _, idsn_b = key_token(KEY_B, 1)
    talk.send(
        SERVER,
        CLIENT,
        80,
        40000,
        ttl=52,
        seq=5001,
        ack=1001,
        flags=ACK,
        payload=b"x" * 100,
        options=dss(data_ack=1, dsn=idsn_b + 1, dsn64=True, ssn=1, length=100),
    )
    for n in range(3):
        talk.send(
            SERVER, CLIENT, 80, 40000, ttl=52, seq=5101 + 100 * n, ack=1001, flags=ACK, payload=b"x" * 100
        )
    report = analyze([talk.write(tmp_path / "stopped.pcap")])
    [connection] = report["connections"]
    assert (
        connection["fallback"]["reason"] == "DSS stopped: the last 3 data segments from the server had no "
        "MPTCP option"
    )
    assert connection["subflows"][0]["fallback"] == connection["fallback"]["reason"]


def test_fallback_on_an_infinite_mapping(tmp_path):
    talk = Conversation()
    handshake(talk, CLIENT, SERVER, 40000)
    talk.send(
        SERVER,
        CLIENT,
        80,
        40000,
        ttl=52,
        seq=5001,
        ack=1001,
        flags=ACK,
        payload=b"x" * 100,
        options=dss(data_ack=1, dsn=7, ssn=1, length=0),
    )
    report = analyze([talk.write(tmp_path / "infinite.pcap")])
    assert report["connections"][0]["fallback"]["reason"].startswith("infinite mapping")


def test_injected_reset(tmp_path):
    talk = Conversation()
    mptcp_download(talk)
    talk.send(SERVER, CLIENT, 80, 40000, ttl=124, seq=9999, flags=RST)
    talk.send(SERVER, CLIENT, 80, 40000, ttl=124, seq=9999, flags=RST)
    report = analyze([talk.write(tmp_path / "injected.pcap")])
    [entry] = report["injected"]
    assert (
        entry["direction"],
        entry["flags"],
        entry["ttl"],
        entry["hops"],
        entry["expected_hops"],
        entry["packets"],
    ) == ("server-to-client", "RST", 124, 4, 12, 2)
    assert report["middlebox"]["verdict"] == "unknown"
    assert "2 RST packets from the server" in report["middlebox"]["evidence"][-1]


# Middlebox verdicts -------------------------------------------------------------------------------------


def test_terminating_proxy(tmp_path):
    talk = Conversation()
    handshake(talk, CLIENT, SERVER, 40000, mptcp=False, server_ttl=128, synack_options=mss(1360) + wscale(5))
    handshake(talk, CLIENT, SERVER, 40001)
    report = analyze([talk.write(tmp_path / "proxy.pcap")])
    middlebox = report["middlebox"]
    assert middlebox["verdict"] == "terminating-proxy"
    assert (
        "come from 0 hops away (TTL 128, initial 128), MPTCP ones from 12 hops away"
        in middlebox["evidence"][0]
    )
    assert "MSS 1360, window scale 5" in middlebox["evidence"][1]


def test_same_box_answers_both(tmp_path):
    talk = Conversation()
    handshake(talk, CLIENT, SERVER, 40000, mptcp=False, synack_options=mss(1460) + wscale(9))
    handshake(
        talk, CLIENT, SERVER, 40001, synack_options=mss(1460) + wscale(9) + mp_capable(1, 1, sender=KEY_B)
    )
    assert analyze([talk.write(tmp_path / "same.pcap")])["middlebox"]["verdict"] == "none"


def test_stripped_by_a_server_that_speaks_mptcp_elsewhere(tmp_path):
    talk = Conversation()
    handshake(talk, CLIENT, SERVER, 40000, synack_options=mss(1460) + wscale(9))
    handshake(talk, CLIENT2, SERVER, 40001)
    report = analyze([talk.write(tmp_path / "stripped.pcap")])
    assert report["middlebox"]["verdict"] == "mptcp-stripped"
    assert len(report["fallbacks"]) == 1


def test_stripped_between_two_capture_points(tmp_path):
    inside, outside = Conversation(), Conversation()
    handshake(inside, CLIENT, SERVER, 40000, answer=False)
    handshake(outside, "198.18.0.2", SERVER, 40000, mptcp=False, answer=False)
    report = analyze([inside.write(tmp_path / "host.pcap"), outside.write(tmp_path / "isp.pcap")])
    assert report["middlebox"]["verdict"] == "mptcp-stripped"
    assert (
        f"has MP_CAPABLE in {tmp_path / 'host.pcap'} but not in {tmp_path / 'isp.pcap'}"
        in report["middlebox"]["evidence"][0]
    )


def test_blocked_then_answered_without_mptcp(tmp_path):
    talk = Conversation()
    for _ in range(3):
        handshake(talk, CLIENT, SERVER, 40000, answer=False)
    handshake(talk, CLIENT, SERVER, 40000, mptcp=False)
    report = analyze([talk.write(tmp_path / "blocked.pcap")])
    [entry] = report["handshakes"]
    assert (
        entry["syn"]["attempts"],
        entry["syn"]["mptcp_attempts"],
        entry["syn"]["mptcp_dropped_on_retry"],
    ) == (4, 3, True)
    assert report["middlebox"]["verdict"] == "mptcp-blocked"
    assert report["middlebox"]["evidence"] == [
        f"3 SYNs with MP_CAPABLE to {SERVER}:80 got no answer, the retry without it was answered from 12 hops"
    ]


def test_blocked_while_plain_tcp_is_answered(tmp_path):
    talk = Conversation()
    handshake(talk, CLIENT, SERVER, 40000, mptcp=False)
    handshake(talk, CLIENT, SERVER, 40001, answer=False)
    report = analyze([talk.write(tmp_path / "blocked2.pcap")])
    assert report["middlebox"]["verdict"] == "mptcp-blocked"


def test_no_handshake_at_all(tmp_path):
    talk = Conversation()
    talk.send(CLIENT, SERVER, 40000, 80, payload=b"x")
    report = analyze([talk.write(tmp_path / "mid.pcap")])
    assert report["middlebox"] == {
        "verdict": "unknown",
        "evidence": ["no TCP handshake in the capture"],
        "findings": [],
    }


# The seed's captures and the lab's ------------------------------------------------------------------------


def test_seed_handshakes():
    need_seed()
    report = analyze([SEED["nomptcp_ttl10"], SEED["mptcp_ttl64"], SEED["mptcp_ttl10"]])
    plain, mptcp, blackholed = report["handshakes"]
    assert (plain["syn"]["ttl"], plain["syn"]["mptcp"], plain["synack"]["ttl"], plain["synack"]["hops"]) == (
        9,
        False,
        124,
        4,
    )
    assert (mptcp["syn"]["ttl"], mptcp["syn"]["mptcp"], mptcp["synack"]["ttl"], mptcp["synack"]["hops"]) == (
        63,
        True,
        51,
        13,
    )
    syn = blackholed["syn"]
    assert (syn["ttl"], syn["attempts"], syn["mptcp_attempts"], syn["mptcp_dropped_on_retry"]) == (
        9,
        5,
        4,
        True,
    )
    assert blackholed["synack"] is None


@pytest.mark.parametrize("name", ["nomptcp_ttl10", "mptcp_ttl64", "mptcp_ttl10"])
def test_seed_captures_match_tshark(name):
    need_seed()
    assert_matches_tshark(SEED[name], analyze([SEED[name]]))


def test_seed_terminating_proxy_and_injected_resets():
    need_seed()
    report = analyze([SEED["nomptcp_ttl10"], SEED["mptcp_ttl64"]])
    middlebox = report["middlebox"]
    assert middlebox["verdict"] == "terminating-proxy"
    assert (
        "from 4 hops away (TTL 124, initial 128), MPTCP ones from 13 hops away (TTL 51, initial 64)"
        in middlebox["evidence"][0]
    )
    [injected] = report["injected"]
    assert (
        injected["file"],
        injected["flags"],
        injected["ttl"],
        injected["hops"],
        injected["expected_hops"],
        injected["packets"],
    ) == (1, "RST", 124, 4, 13, 2)
    assert middlebox["evidence"][-1].endswith("probably the same box")
    [connection] = report["connections"]
    assert connection["version"] == 0
    assert connection["bytes"] == {"client_to_server": 125, "server_to_client": 315}
    assert (connection["client_token"], connection["server_token"]) == (3784532719, 14973214)  # tshark's


def test_seed_unanswered_mptcp_alone_is_unknown():
    need_seed()
    middlebox = analyze([SEED["mptcp_ttl10"]])["middlebox"]
    assert middlebox["verdict"] == "unknown"
    assert "no answer to the 5 SYNs" in middlebox["evidence"][0]


@pytest.mark.parametrize("name", sorted(str(path.relative_to(REPO / "traces"))
                                         for path in (REPO / "traces").rglob("*.pcap*")))
def test_the_projects_traces_match_tshark(name):
    """Every capture in traces/, the study's included (not counting the SYNs ICMP errors quote)."""
    path = REPO / "traces" / name
    assert_matches_tshark(path, analyze([path]), "tcp and not icmp")


def test_lab_optimizer_captures():
    plain, mptcp = REPO / "traces" / "lab-optimizer-plain.pcap", REPO / "traces" / "lab-optimizer-mptcp.pcap"
    report = analyze([plain, mptcp])
    plain_handshake, mptcp_handshake = report["handshakes"]
    assert (
        plain_handshake["synack"]["ttl"],
        plain_handshake["synack"]["mss"],
        plain_handshake["synack"]["wscale"],
        plain_handshake["synack"]["hops"],
    ) == (128, 1360, 5, 0)
    assert (
        mptcp_handshake["synack"]["ttl"],
        mptcp_handshake["synack"]["mss"],
        mptcp_handshake["synack"]["hops"],
        mptcp_handshake["synack"]["mptcp"],
    ) == (52, 1460, 12, True)
    assert report["middlebox"]["verdict"] == "terminating-proxy"
    for path in (plain, mptcp):
        assert_matches_tshark(path, analyze([path]))


def test_table_shows_the_verdict_and_the_mptcptrace_lines():
    need_seed()
    text = format_report(analyze([SEED["nomptcp_ttl10"], SEED["mptcp_ttl64"]]))
    assert "Middlebox verdict: terminating-proxy" in text
    assert (
        "Subflow 0 (initial) with wscale : 6 7 IPv4 sport 51753 dport 80 saddr 192.168.42.204 "
        "daddr 130.104.228.140" in text
    )
