"""The analyzer on captures made here: an MPTCP download over two paths between two namespaces.

The client namespace has two veth links to the server namespace (each shaped by the server's tbf) and an
MPTCP ``subflow`` endpoint on its second link, so the download uses two subflows. tcpdump captures from
``-i any`` (Linux cooked v2) and from the second link only (Ethernet, snaplen 120); the analysis of each
must be tshark's (``assert_matches_tshark``).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_analysis import analyze
from mpsocks_testlib import sh, unique_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from test_trace_analysis import assert_matches_tshark  # noqa: E402
from test_trace_packet import assert_frames_match_tshark  # noqa: E402
from test_trace_plot import read_png  # noqa: E402

pytestmark = pytest.mark.root

PORT = 8080
SIZE = 3_000_000
#: Per family: the two links' subnets (client .1, server .2) and the server's own address.
ADDRESSES = {
    4: (("10.199.200.1", "10.199.200.2", 24), ("10.199.201.1", "10.199.201.2", 24), "10.199.210.1"),
    6: (
        ("fd00:199:200::1", "fd00:199:200::2", 64),
        ("fd00:199:201::1", "fd00:199:201::2", 64),
        "fd00:199:210::1",
    ),
}

SERVER = r"""
import socket, sys
family, port, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
with socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6, socket.SOCK_STREAM, 262) as server:
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0" if family == 4 else "::", port))
    server.listen()
    print("ready", flush=True)
    conn, _ = server.accept()
    asked = b""
    while len(asked) < 2:
        asked += conn.recv(2 - len(asked))
    chunk = b"x" * 65536
    while size > 0:
        size -= conn.send(chunk[:size])
    conn.close()
"""

# One byte makes the MPTCP connection fully established (the path manager then adds the second subflow);
# the second asks for the download once the kernel counts that subflow (MPTCP_INFO's first byte), or after
# 10 s without it, so a slow machine never starts the download on one subflow.
CLIENT = r"""
import socket, sys, time
family, address, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
with socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6, socket.SOCK_STREAM, 262) as sock:
    sock.settimeout(30)
    sock.connect((address, port))
    sock.sendall(b"g")
    deadline = time.monotonic() + 10
    while sock.getsockopt(284, 1, 256)[0] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    sock.sendall(b"o")
    received = 0
    while True:
        data = sock.recv(1 << 20)
        if not data:
            break
        received += len(data)
print(received)
"""


@contextlib.contextmanager
def two_paths(family, rate="40mbit"):
    """Client and server namespaces joined by links c0-s0 and c1-s1; yields (client ns, server ns, server
    address). RATE shapes the server's side of both links (None: unshaped)."""
    client, server = unique_name("mpstc"), unique_name("mpsts")
    links = ADDRESSES[family]
    ip = ["ip"] if family == 4 else ["ip", "-6"]
    nodad = [] if family == 4 else ["nodad"]
    subprocess.run(["ip", "netns", "add", client], check=True)
    try:
        subprocess.run(["ip", "netns", "add", server], check=True)
        for netns in (client, server):
            sh("ip", "link", "set", "lo", "up", netns=netns)
            sh("ip", "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "2", netns=netns)
        service = links[2]
        sh(*ip, "addr", "add", service, "dev", "lo", *nodad, netns=server)
        for n, (near, far, prefix) in enumerate(links[:2]):
            sh(
                "ip",
                "link",
                "add",
                f"c{n}",
                "netns",
                client,
                "type",
                "veth",
                "peer",
                "name",
                f"s{n}",
                "netns",
                server,
            )
            sh(*ip, "addr", "add", f"{near}/{prefix}", "dev", f"c{n}", *nodad, netns=client)
            sh(*ip, "addr", "add", f"{far}/{prefix}", "dev", f"s{n}", *nodad, netns=server)
            sh("ip", "link", "set", f"c{n}", "up", netns=client)
            sh("ip", "link", "set", f"s{n}", "up", netns=server)
            sh(*ip, "route", "add", service, "via", far, "dev", f"c{n}", "metric", str(100 + n), netns=client)
            if rate:
                sh(
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    f"s{n}",
                    "root",
                    "tbf",
                    "rate",
                    rate,
                    "burst",
                    "20kb",
                    "latency",
                    "100ms",
                    netns=server,
                )
        sh("ip", "mptcp", "endpoint", "add", links[1][0], "dev", "c1", "subflow", netns=client)
        yield client, server, service
    finally:
        subprocess.run(["ip", "netns", "del", server], check=False)
        subprocess.run(["ip", "netns", "del", client], check=False)


def start_tcpdump(netns, interface, path, snaplen):
    """tcpdump of the download's packets, running once this returns."""
    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "tcpdump",
            "-Z",
            "root",
            "--immediate-mode",
            "-p",
            "-n",
            "-U",
            "-B",
            "65536",
            "-s",
            str(snaplen),
            "-i",
            interface,
            "-w",
            str(path),
            f"tcp port {PORT}",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stderr.readline()
    while line and "listening" not in line:
        line = proc.stderr.readline()
    assert "listening" in line, f"cannot capture on {interface}"
    return proc


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=20)


def download(client, server, service, family, size=SIZE):
    """Run the server and the client once; returns the bytes the client received."""
    serving = subprocess.Popen(
        ["ip", "netns", "exec", server, sys.executable, "-c", SERVER, str(family), str(PORT), str(size)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert serving.stdout.readline().strip() == "ready"
        received = sh(sys.executable, "-c", CLIENT, str(family), service, str(PORT), netns=client)
        serving.wait(timeout=30)
        return int(received)
    finally:
        if serving.poll() is None:
            serving.kill()
            serving.wait()


@pytest.mark.parametrize("family", [4, 6])
def test_mptcp_download_with_two_subflows(tmp_path, family):
    everywhere, second_link = tmp_path / "any.pcap", tmp_path / "c1.pcap"
    with two_paths(family) as (client, server, service):
        captures = [
            start_tcpdump(client, "any", everywhere, 262144),
            start_tcpdump(client, "c1", second_link, 120),
        ]
        try:
            assert download(client, server, service, family) == SIZE
        finally:
            for proc in captures:
                stop(proc)

    report = analyze([everywhere], plot_dir=tmp_path / "plots")
    assert report["files"][0]["link_types"] == ["linux-sll2"]
    assert_matches_tshark(everywhere, report)
    assert_frames_match_tshark(everywhere)
    [connection] = report["connections"]
    assert connection["version"] == 1 and connection["fallback"] is None
    initial, join = connection["subflows"]
    links = ADDRESSES[family]
    assert (initial["kind"], initial["client"]["address"], initial["server"]["address"]) == (
        "initial",
        links[0][0],
        service,
    )
    assert (join["kind"], join["client"]["address"], join["established"]) == ("join", links[1][0], True)
    assert connection["bytes"]["server_to_client"] >= SIZE  # retransmissions count too
    assert initial["bytes"]["server_to_client"] > 0 and join["bytes"]["server_to_client"] > 0
    assert abs(initial["share"] + join["share"] - 1) < 0.001
    assert [(h["syn"]["mptcp"], h["syn"]["mp_join"], h["synack"]["hops"]) for h in report["handshakes"]] == [
        (True, False, 0),
        (False, True, 0),
    ]
    assert report["middlebox"]["verdict"] == "none" and report["injected"] == []
    for plot in report["plots"]:
        assert read_png(Path(plot).read_bytes())[:2] == (1200, 720)
    assert sorted(Path(plot).name for plot in report["plots"]) == ["c2s_seq_0.png", "s2c_seq_0.png"]

    # The second link alone: only the join, cut by the snaplen, its connection known by the token.
    alone = analyze([second_link])
    assert alone["files"][0]["link_types"] == ["ethernet"] and alone["files"][0]["truncated"] > 0
    assert_matches_tshark(second_link, alone)
    assert_frames_match_tshark(second_link)
    [partial] = alone["connections"]
    assert partial["server_token"] == connection["server_token"] and partial["handshake_seen"] is False
    [subflow] = partial["subflows"]
    assert (subflow["kind"], subflow["bytes"]) == ("join", join["bytes"])

    # Both captures together: the join seen at both capture points counts once.
    both = analyze([everywhere, second_link])
    assert [c["subflows"] for c in both["connections"]] == [connection["subflows"]]
