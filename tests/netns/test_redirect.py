"""mpsocks.mptcp.redirect: the socksifier's nft table, read back with nft, and real TCP redirected by it."""

import contextlib
import json
import subprocess
import sys

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns import visiting
from ansible_collections.mpsocks.mptcp.plugins.module_utils.redirect import Redirect
from mpsocks_testlib import assert_unchanged, run_item, run_module, sh, snapshot, unique_name

TABLE = "mpsocks_socksifier"
MARK = 'comment "managed by mpsocks"'
ITEM = {"interfaces": ["eth0", "eth1"], "sources": ["10.66.6.0/24", "10.66.7.0/24"],
        "exclude": ["10.0.0.0/8", "192.168.0.0/16", "fc00::/7", "203.0.113.7/32"],
        "to_address": "10.66.6.2", "to_port": 12345}
LINES = [
    ("prerouting", "type nat hook prerouting priority dstnat; policy accept;"),
    ("prerouting", 'iifname "eth0" meta l4proto tcp jump socksify'),
    ("prerouting", 'iifname "eth1" meta l4proto tcp jump socksify'),
    ("socksify", "fib daddr type local return"),
    ("socksify", "ip daddr 10.0.0.0/8 return"),
    ("socksify", "ip daddr 192.168.0.0/16 return"),
    ("socksify", "ip6 daddr fc00::/7 return"),
    ("socksify", "ip daddr 203.0.113.7 return"),
    ("socksify", "ip saddr 10.66.6.0/24 meta l4proto tcp counter dnat ip to 10.66.6.2:12345"),
    ("socksify", "ip saddr 10.66.7.0/24 meta l4proto tcp counter dnat ip to 10.66.6.2:12345"),
    ("input", "type filter hook input priority filter; policy accept;"),
    ("input", "ip daddr 10.66.6.2 tcp dport 12345 ct status dnat accept"),
    ("input", "ip daddr 10.66.6.2 tcp dport 12345 counter drop"),
]


def assert_one_line_failure(result, needle):
    assert result.get("failed"), result
    assert "\n" not in result["msg"] and "Traceback" not in result["msg"], result["msg"]
    assert needle in result["msg"], result["msg"]


def nft_lines(netns, table=TABLE):
    """``(chain, statement)`` of every line of the chains as ``nft list table`` prints them, no counts;
    None when there is no such table."""
    proc = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "inet", table],
                          capture_output=True, text=True)
    if proc.returncode:
        assert "No such file or directory" in proc.stderr, proc.stderr
        return None
    found, chain = [], None
    for line in proc.stdout.splitlines():
        line = line.strip().replace(" packets 0 bytes 0", "")
        if line.startswith("chain "):
            chain = line.split()[1]
        elif chain and line and line != "}":
            found.append((chain, line))
    return found


def test_check_mode_idempotence_round_trip_change_and_absent(netns):
    before = snapshot(netns)
    args = dict(ITEM, netns=netns)
    predicted = run_item("redirect", check=True, **args)
    assert predicted["changed"] is True and predicted["diff"]["before"] == ""
    assert "dnat ip to 10.66.6.2:12345" in predicted["diff"]["after"]
    assert_unchanged(before, netns)

    made = run_item("redirect", **args)
    keys = ("changed", "diff", "redirect", "rules")
    assert [made[k] for k in keys] == [predicted[k] for k in keys]
    assert made["redirect"] == dict(ITEM, table=TABLE, exclude=["10.0.0.0/8", "192.168.0.0/16", "fc00::/7",
                                                                "203.0.113.7"], netns=netns)
    assert nft_lines(netns) == LINES
    assert made["rules"] == [f"{chain}: {line}" for chain, line in LINES if not line.startswith("type ")]
    assert sh("nft", "list", "table", "inet", TABLE, netns=netns).splitlines()[1].strip() == MARK
    assert run_item("redirect", **args)["changed"] is False
    assert run_item("redirect", check=True, **args)["changed"] is False
    assert run_item("redirect", **made["redirect"])["changed"] is False

    # Another port, fewer interfaces and sources, no exclusions: the table is replaced as a whole.
    changed = dict(args, interfaces=["eth0"], sources=["10.66.6.0/24"], exclude=[], to_port=2000)
    predicted = run_item("redirect", check=True, **changed)
    assert nft_lines(netns) == LINES
    moved = run_item("redirect", **changed)
    assert [moved[k] for k in keys] == [predicted[k] for k in keys] and moved["changed"] is True
    assert "12345" in moved["diff"]["before"] and "12345" not in moved["diff"]["after"]
    assert nft_lines(netns) == [
        LINES[0], LINES[1], LINES[3],
        ("socksify", "ip saddr 10.66.6.0/24 meta l4proto tcp counter dnat ip to 10.66.6.2:2000"), LINES[10],
        ("input", "ip daddr 10.66.6.2 tcp dport 2000 ct status dnat accept"),
        ("input", "ip daddr 10.66.6.2 tcp dport 2000 counter drop")]
    assert run_item("redirect", **changed)["changed"] is False

    assert run_item("redirect", check=True, state="absent", netns=netns)["changed"] is True
    assert nft_lines(netns) is not None
    removed = run_item("redirect", state="absent", netns=netns)
    assert removed["changed"] is True and removed["redirect"] == {} and removed["rules"] == []
    assert removed["diff"]["after"] == "" and "dnat ip to 10.66.6.2:2000" in removed["diff"]["before"]
    assert nft_lines(netns) is None
    assert run_item("redirect", state="absent", netns=netns)["changed"] is False
    assert_unchanged(before, netns)


def test_the_whole_table_is_declared_and_other_tables_stay(netns):
    sh("nft", "add table inet keep; add chain inet keep c; add rule inet keep c accept", netns=netns)
    args = dict(ITEM, netns=netns)
    run_item("redirect", **args)
    sh("nft", f"add rule inet {TABLE} socksify ip saddr 198.18.1.1 drop; add chain inet {TABLE} extra; "
       f"add set inet {TABLE} s {{ type ipv4_addr; }}", netns=netns)
    predicted = run_item("redirect", check=True, **args)
    assert predicted["changed"] is True
    assert "# not as this module writes it" in predicted["diff"]["before"]
    assert '"saddr"' in predicted["diff"]["before"] and '"set"' in predicted["diff"]["before"]
    repaired = run_item("redirect", **args)
    assert repaired["changed"] is True and nft_lines(netns) == LINES
    assert run_item("redirect", **args)["changed"] is False
    assert "accept" in sh("nft", "list", "table", "inet", "keep", netns=netns)
    # A table of another name lives beside it.
    run_item("redirect", **dict(args, table="second", to_port=1))
    assert nft_lines(netns) == LINES and nft_lines(netns, "second")[-1][1].endswith("dport 1 counter drop")


def test_bad_input_fails_with_one_line_and_changes_nothing(netns):
    run_item("redirect", **ITEM, netns=netns)
    before = snapshot(netns)
    cases = {
        "interfaces: required when state is present": dict(interfaces=[]),
        "sources: required when state is present": dict(sources=None),
        "to_address: required when state is present": dict(to_address=None),
        "to_port: required when state is present": dict(to_port=None),
        "interfaces: 'eth*' holds '*'": dict(interfaces=["eth0", "eth*"]),
        "interfaces: 'eth0\\n' is not a valid interface name": dict(interfaces=["eth0\n"]),
        "interfaces: eth0 is listed twice": dict(interfaces=["eth0", "eth0"]),
        "sources: 'fd00::/8' is not an IPv4 subnet": dict(sources=["fd00::/8"]),
        "sources: '10.66.6/24' is not a valid subnet": dict(sources=["10.66.6/24"]),
        "exclude: 10.0.0.0/8 is listed twice": dict(exclude=["10.0.0.0/8", "10.1.0.0/8"]),
        "exclude: 'private' is not a valid subnet": dict(exclude=["private"]),
        "to_address: 'fd00::1' is not an IPv4 address": dict(to_address="fd00::1"),
        "to_address: '10.66.6.300' is not an IP address": dict(to_address="10.66.6.300"),
        "to_port: 0 is out of range 1..65535": dict(to_port=0),
        "to_port: 70000 is out of range 1..65535": dict(to_port=70000),
        "table: 'my table' is not a valid nft table name": dict(table="my table"),
        "table: give only the name ('mpsocks_socksifier')": dict(table="inet mpsocks_socksifier"),
        "table: 'mpsocks_socksifier\\n' is not a valid nft table name": dict(table="mpsocks_socksifier\n"),
    }
    for needle, change in cases.items():
        params = {k: v for k, v in dict(ITEM, **change).items() if v is not None}
        assert_one_line_failure(run_item("redirect", netns=netns, **params), needle)
    assert_unchanged(before, netns)


@pytest.fixture
def guests(netns):
    """Two namespaces: NETNS and one more."""
    other = unique_name("mpstr")
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:
        yield [netns, other]
    finally:
        subprocess.run(["ip", "netns", "del", other], check=False)


def test_one_call_for_several_guests_and_a_bad_item_in_the_middle(guests):
    config = [dict(ITEM, netns=guests[0]), dict(ITEM, netns=guests[1], to_port=7000)]
    before = {ns: snapshot(ns) for ns in guests}
    bad = run_module("redirect", config=[config[0], dict(config[1], to_port=-1), config[1]])
    assert_one_line_failure(bad, f"config[1] (redirect in table inet {TABLE} in netns {guests[1]}): to_port: "
                                 "-1 is out of range")
    assert bad["changed"] is False and bad["results"] == []
    for ns in guests:
        assert_unchanged(before[ns], ns)
    made = run_module("redirect", config=config)
    assert [r["changed"] for r in made["results"]] == [True, True]
    assert nft_lines(guests[1])[-1][1] == "ip daddr 10.66.6.2 tcp dport 7000 counter drop"
    assert run_module("redirect", config=[r["redirect"] for r in made["results"]])["changed"] is False
    gone = run_module("redirect", state="absent", config=[{"netns": ns} for ns in guests])
    assert [r["changed"] for r in gone["results"]] == [True, True]
    for ns in guests:
        assert_unchanged(before[ns], ns)


def test_a_table_named_like_ours_without_our_mark_is_left_alone(netns):
    sh("nft", f"add table inet {TABLE}; add chain inet {TABLE} c; add rule inet {TABLE} c accept",
       netns=netns)
    before = snapshot(netns)
    needle = f"table: inet {TABLE} exists but was not made by mpsocks (no 'managed by mpsocks' mark)"
    for check in (True, False):
        assert_one_line_failure(run_item("redirect", check=check, netns=netns, **ITEM), needle)
        assert_one_line_failure(run_item("redirect", check=check, netns=netns, state="absent"), needle)
    assert_unchanged(before, netns)


def test_removal_from_a_stale_listing_deletes_nothing_it_did_not_see(netns):
    run_item("redirect", netns=netns, **ITEM)
    with visiting(netns):
        redirect = Redirect({"state": "absent"})
        redirect.validate()
        current = redirect.read()
    sh("nft", f"add rule inet {TABLE} input counter", netns=netns)
    before = snapshot(netns)
    with visiting(netns), pytest.raises(MpsocksError, match=r": Device or resource busy \(it holds what"):
        redirect.apply(current, None)
    assert_unchanged(before, netns)
    assert run_item("redirect", netns=netns, state="absent")["changed"] is True
    assert nft_lines(netns) is None


# --- real traffic: client C (the host) -- guest G (runs the module, a transparent proxy) -- server S --------

PROXY = r"""
import json, socket, struct, sys
with socket.socket() as listener:
    listener.bind(("10.66.6.2", 12345))
    listener.listen()
    print("ready", flush=True)
    while True:
        conn, peer = listener.accept()
        port, address = struct.unpack("!2xH4s8x", conn.getsockopt(socket.SOL_IP, 80, 16))  # SO_ORIGINAL_DST
        conn.sendall(("proxy %s:%d\n" % (socket.inet_ntoa(address), port)).encode())
        conn.close()
"""
SERVER = r"""
import socket, sys
with socket.socket() as listener:
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 80))
    listener.listen()
    print("ready", flush=True)
    while True:
        conn, peer = listener.accept()
        conn.sendall(("%s server\n" % sys.argv[1]).encode())
        conn.close()
"""
CLIENT = r"""
import socket, sys
sock = socket.socket()
sock.settimeout(2)
try:
    sock.connect((sys.argv[1], int(sys.argv[2])))
    print(sock.makefile().readline().strip())
except OSError as exc:
    print(type(exc).__name__ if isinstance(exc, TimeoutError) else repr(exc))
"""


@contextlib.contextmanager
def listening(netns, script, *args):
    proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", script, *args],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def wire(netns):
    """C 10.66.6.1 (and 10.66.8.1, outside the sources) -- eth0 10.66.6.2 G (NETNS, forwarding) -- S.

    S holds 198.51.100.10 and 10.1.2.3 (an excluded subnet) on its lo and serves TCP port 80 there; G
    serves port 80 itself on 10.66.6.2.
    """
    client, server = unique_name("mpsrc"), unique_name("mpsrs")
    for ns in (client, server):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        sh("ip", "link", "add", "c0", "netns", client, "type", "veth", "peer", "name", "eth0", "netns", netns)
        sh("ip", "link", "add", "s0", "netns", server, "type", "veth", "peer", "name", "out0", "netns", netns)
        for ns, dev, addresses in ((client, "c0", ["10.66.6.1/24", "10.66.8.1/24"]),
                                   (netns, "eth0", ["10.66.6.2/24", "10.66.8.2/24"]),
                                   (netns, "out0", ["198.18.100.1/24"]), (server, "s0", ["198.18.100.2/24"]),
                                   (server, "lo", ["198.51.100.10/32", "10.1.2.3/32"])):
            for address in addresses:
                sh("ip", "addr", "add", address, "dev", dev, netns=ns)
            sh("ip", "link", "set", dev, "up", netns=ns)
        sh("ip", "link", "set", "lo", "up", netns=netns)
        sh("ip", "route", "add", "default", "via", "10.66.6.2", netns=client)
        sh("ip", "route", "add", "default", "via", "198.18.100.1", netns=server)
        sh("ip", "route", "add", "default", "via", "198.18.100.2", netns=netns)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=netns)
        with listening(server, SERVER, "real"), listening(netns, SERVER, "guest"), listening(netns, PROXY):
            yield {"client": client, "guest": netns}
    finally:
        for ns in (client, server):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def connect(wire, address, port=80):
    out = sh(sys.executable, "-c", CLIENT, address, str(port), netns=wire["client"])
    return out.strip()


def test_connections_from_the_host_go_to_the_proxy_and_only_those(wire):
    # Before the redirect, the guest forwards: the real server answers.
    assert connect(wire, "198.51.100.10") == "real server"
    run_item("redirect", netns=wire["guest"], **dict(ITEM, exclude=["10.0.0.0/8"]))
    # Redirected, with the original destination for the proxy to find.
    assert connect(wire, "198.51.100.10") == "proxy 198.51.100.10:80"
    assert connect(wire, "198.51.100.10", 8080) == "proxy 198.51.100.10:8080"
    # Excluded destinations and the guest's own addresses are left alone.
    assert connect(wire, "10.1.2.3") == "real server"
    assert connect(wire, "10.66.6.2") == "guest server"
    assert connect(wire, "10.66.8.2") == "guest server"
    # The proxy's port answers only redirected connections: a direct one is dropped.
    assert connect(wire, "10.66.6.2", 12345) == "TimeoutError"
    counted = json.loads(sh("nft", "-j", "list", "chain", "inet", TABLE, "input", netns=wire["guest"]))
    drops = [e["counter"]["packets"] for o in counted["nftables"] if "rule" in o for e in o["rule"]["expr"]
             if "counter" in e]
    assert drops and drops[0] >= 1
    # A source outside the host's subnets is not redirected (the guest forwards it as before).
    sh("ip", "route", "replace", "default", "via", "10.66.8.2", "src", "10.66.8.1", netns=wire["client"])
    assert connect(wire, "198.51.100.10") == "real server"
    sh("ip", "route", "replace", "default", "via", "10.66.6.2", "src", "10.66.6.1", netns=wire["client"])
    # Gone, the guest forwards again.
    run_item("redirect", netns=wire["guest"], state="absent")
    assert connect(wire, "198.51.100.10") == "real server"
