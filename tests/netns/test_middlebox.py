"""mpsocks.mptcp.middlebox: nft rules read back with nft, and real MPTCP traffic through an ISP namespace."""

import contextlib
import json
import subprocess
import sys

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.middlebox import Middlebox
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns import visiting
from mpsocks_testlib import assert_unchanged, run_item, run_module, sh, snapshot, unique_name

TABLE = "mpsocks_lab"
MARK = 'comment "managed by mpsocks"'
SUB = "sub0"  # the ISP's interface facing the subscriber
SERVER_ADDRESS, SERVER_PORT, PROXY_PORT = "198.18.101.2", 5201, 3129
# IPPROTO_MPTCP = 262; TCP_IS_MPTCP = 43 (SOL_TCP); SO_ORIGINAL_DST = 80 (SOL_IP).

SERVER = r"""
import json, socket, sys
with socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262) as srv:
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((sys.argv[1], int(sys.argv[2])))
    srv.listen()
    print("ready", flush=True)
    while True:
        conn, peer = srv.accept()
        mptcp = conn.getsockopt(socket.SOL_TCP, 43)
        conn.sendall(b"server mptcp=%d\n" % mptcp)
        print(json.dumps({"peer": "%s:%d" % peer, "mptcp": mptcp}), flush=True)
        conn.close()
"""

PROXY = r"""
import json, socket, struct, sys
with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", int(sys.argv[1])))
    srv.listen()
    print("ready", flush=True)
    while True:
        conn, peer = srv.accept()
        raw = conn.getsockopt(socket.SOL_IP, 80, 16)
        port, address = struct.unpack("!2xH4s8x", raw)
        original = "%s:%d" % (socket.inet_ntoa(address), port)
        conn.sendall(("proxy original=%s\n" % original).encode())
        print(json.dumps({"peer": "%s:%d" % peer, "original": original}), flush=True)
        conn.close()
"""

CLIENT = r"""
import json, socket, sys, time
host, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262 if proto == "mptcp" else 0)
sock.settimeout(20)
start = time.monotonic()
try:
    sock.connect((host, port))
    seconds = time.monotonic() - start
    reply = sock.makefile().readline().strip()
    mptcp = sock.getsockopt(socket.SOL_TCP, 43) if proto == "mptcp" else 0
    print(json.dumps({"seconds": seconds, "reply": reply, "client_mptcp": mptcp}))
except OSError as exc:
    print(json.dumps({"error": str(exc), "seconds": time.monotonic() - start}))
finally:
    sock.close()
"""


def assert_one_line_failure(result, needle):
    assert result.get("failed"), result
    assert "\n" not in result["msg"] and "Traceback" not in result["msg"], result["msg"]
    assert needle in result["msg"], result["msg"]


def nft_table(netns, table=TABLE):
    """Chains and rules of table inet TABLE as nft lists them (not the module's parser); None if absent."""
    proc = subprocess.run(["ip", "netns", "exec", netns, "nft", "-j", "list", "table", "inet", table],
                          capture_output=True, text=True)
    if proc.returncode:
        assert "No such file or directory" in proc.stderr, proc.stderr
        return None
    return [obj for obj in json.loads(proc.stdout)["nftables"] if "chain" in obj or "rule" in obj]


def nft_lines(netns, table=TABLE):
    """``(chain, statement)`` of every line of the chains in ``nft list table``, counter values dropped."""
    found, chain = [], None
    text = sh("nft", "list", "table", "inet", table, netns=netns)
    for line in text.splitlines():
        line = line.strip().replace(" packets 0 bytes 0", "")
        if line.startswith("chain "):
            chain = line.split()[1]
        elif chain and line and line != "}":
            found.append((chain, line))
    return found


def counters(netns, table=TABLE):
    """Packets counted by each rule, in listing order."""
    return [next(e["counter"]["packets"] for e in obj["rule"]["expr"] if "counter" in e)
            for obj in nft_table(netns, table) if "rule" in obj]


STRIP_LINES = [
    ("forward", "type filter hook forward priority -2147483648; policy accept;"),
    ("forward", f'iifname "{SUB}" tcp flags syn / syn,ack tcp option mptcp exists counter '
                "reset tcp option mptcp"),
]
DROP_LINES = [STRIP_LINES[0], ("forward", f'iifname "{SUB}" tcp flags syn / syn,ack tcp option mptcp exists '
                                          "counter drop")]
OPTIMIZER_LINES = [
    ("prerouting", "type nat hook prerouting priority dstnat; policy accept;"),
    ("prerouting", f'iifname "{SUB}" tcp option mptcp exists counter accept'),
    ("prerouting", f'iifname "{SUB}" meta l4proto tcp counter redirect to :{PROXY_PORT}'),
]


# --- the table itself ------------------------------------------------------------------------------

def test_each_kind_check_mode_idempotent_switch_and_absent(netns):
    before = snapshot(netns)
    args = dict(interface=SUB, netns=netns)

    predicted = run_item("middlebox", check=True, kind="strip", **args)
    assert predicted["changed"] is True and predicted["diff"]["before"] == ""
    assert "reset tcp option mptcp" in predicted["diff"]["after"]
    assert_unchanged(before, netns)

    created = run_item("middlebox", kind="strip", **args)
    keys = ("changed", "diff", "middlebox", "chains")
    assert [created[k] for k in keys] == [predicted[k] for k in keys]
    assert created["middlebox"] == {"table": TABLE, "kind": "strip", "interface": SUB, "proxy_port": None,
                                    "netns": netns}
    assert created["chains"] == {"forward": [line for _, line in STRIP_LINES]}
    assert nft_lines(netns) == STRIP_LINES
    # The table carries mpsocks' mark, as nft itself shows it.
    assert sh("nft", "list", "table", "inet", TABLE, netns=netns).splitlines()[1].strip() == MARK
    assert run_item("middlebox", kind="strip", **args)["changed"] is False
    assert run_item("middlebox", check=True, kind="strip", **args)["changed"] is False
    # The returned table is module input: fed back, it changes nothing.
    assert run_item("middlebox", **created["middlebox"])["changed"] is False

    # Switching kind replaces the rules: the diff shows both as rule lines, check mode predicts it.
    predicted = run_item("middlebox", check=True, kind="drop-mptcp", **args)
    assert nft_lines(netns) == STRIP_LINES
    switched = run_item("middlebox", kind="drop-mptcp", **args)
    assert [switched[k] for k in keys] == [predicted[k] for k in keys]
    assert switched["changed"] is True
    assert "# middlebox strip on sub0" in switched["diff"]["before"]
    assert "counter reset tcp option mptcp" in switched["diff"]["before"]
    assert "counter drop" in switched["diff"]["after"] and "reset" not in switched["diff"]["after"]
    assert nft_lines(netns) == DROP_LINES
    assert run_item("middlebox", kind="drop-mptcp", **args)["changed"] is False

    optimizer = run_item("middlebox", kind="optimizer", **args)
    assert optimizer["changed"] is True and optimizer["middlebox"]["proxy_port"] == PROXY_PORT
    assert nft_lines(netns) == OPTIMIZER_LINES
    assert run_item("middlebox", kind="optimizer", proxy_port=PROXY_PORT, **args)["changed"] is False
    moved = run_item("middlebox", kind="optimizer", proxy_port=8080, **args)
    assert moved["changed"] is True and nft_lines(netns)[2][1].endswith("redirect to :8080")
    other_interface = run_item("middlebox", kind="optimizer", proxy_port=8080, interface="sub1",
                                 netns=netns)
    assert other_interface["changed"] is True and other_interface["middlebox"]["interface"] == "sub1"
    assert all('iifname "sub1"' in line for _, line in nft_lines(netns)[1:])

    # absent and none both remove the table; check mode first predicts it.
    assert run_item("middlebox", check=True, kind="optimizer", state="absent", **args)["changed"] is True
    assert nft_table(netns) is not None
    removed = run_item("middlebox", kind="optimizer", state="absent", **args)
    assert removed["changed"] is True and removed["middlebox"] == {} and removed["diff"]["after"] == ""
    assert nft_table(netns) is None
    assert run_item("middlebox", kind="optimizer", state="absent", **args)["changed"] is False
    strip = run_item("middlebox", kind="strip", **args)
    predicted = run_item("middlebox", check=True, kind="none", **args)
    assert nft_table(netns) is not None
    none = run_item("middlebox", kind="none", **args)
    assert [none[k] for k in keys] == [predicted[k] for k in keys]
    assert none["changed"] is True and nft_table(netns) is None
    assert (none["middlebox"], none["chains"]) == ({}, {})
    assert none["diff"] == {"before_header": strip["label"], "after_header": strip["label"],
                            "before": strip["diff"]["after"], "after": ""}
    assert "reset tcp option mptcp" in none["diff"]["before"]
    assert run_item("middlebox", kind="none", **args)["changed"] is False
    assert_unchanged(before, netns)


def test_the_whole_table_is_declared(netns):
    """Anything added to the table by hand goes; other tables stay."""
    sh("nft", "add table inet keep; add chain inet keep c; add rule inet keep c accept", netns=netns)
    args = dict(interface=SUB, kind="drop-mptcp", netns=netns)
    run_item("middlebox", **args)
    sh("nft", f"add rule inet {TABLE} forward ip saddr 198.18.1.1 drop; add chain inet {TABLE} extra; "
       f"add set inet {TABLE} s {{ type ipv4_addr; }}", netns=netns)
    predicted = run_item("middlebox", check=True, **args)
    assert predicted["changed"] is True
    before = predicted["diff"]["before"]
    assert "# middlebox unknown" in before and '"saddr"' in before and "chain extra" in before, before
    repaired = run_item("middlebox", **args)
    assert repaired["changed"] is True and repaired["middlebox"]["kind"] == "drop-mptcp"
    assert nft_lines(netns) == DROP_LINES and MARK in sh("nft", "list", "table", "inet", TABLE, netns=netns)
    assert run_item("middlebox", **args)["changed"] is False
    assert "accept" in sh("nft", "list", "table", "inet", "keep", netns=netns)
    # A table of another name is another middlebox's: both live side by side.
    run_item("middlebox", interface="sub1", kind="strip", table="second", netns=netns)
    assert nft_lines(netns) == DROP_LINES and nft_lines(netns, "second")[1][1].startswith('iifname "sub1"')


def test_bad_input_fails_with_one_line_and_changes_nothing(netns):
    run_item("middlebox", interface=SUB, kind="strip", netns=netns)
    before = snapshot(netns)
    cases = {
        "kind must be one of: none, strip, drop-mptcp, optimizer": dict(kind="firewall"),
        "proxy_port: 0 is out of range 1..65535": dict(kind="optimizer", proxy_port=0),
        "proxy_port: 70000 is out of range 1..65535": dict(kind="optimizer", proxy_port=70000),
        "proxy_port": dict(kind="optimizer", proxy_port="http"),
        "interface: 'sub/0' is not a valid interface name": dict(interface="sub/0"),
        "interface: interface name 'a-very-long-interface'": dict(interface="a-very-long-interface"),
        "interface: 'sub*' holds '*'": dict(interface="sub*"),
        "interface: an interface name is required": dict(interface=""),
        "missing required arguments: interface": dict(interface=None),
        "missing required arguments: kind": dict(kind=None),
        "table: give only the name ('mpsocks_lab')": dict(table="inet mpsocks_lab"),
        "table: 'my table!' is not a valid nft table name": dict(table="my table!"),
        # Issue 7 #10: a trailing newline passed a `$` check.
        "table: 'mpsocks_lab\\n' is not a valid nft table name": dict(table="mpsocks_lab\n"),
        "interface: 'sub0\\n' is not a valid interface name": dict(interface="sub0\n"),
    }
    for needle, change in cases.items():
        params = dict(dict(interface=SUB, kind="drop-mptcp"), **change)
        params = {k: v for k, v in params.items() if v is not None}
        assert_one_line_failure(run_item("middlebox", netns=netns, **params), needle)
        assert_one_line_failure(run_item("middlebox", netns=netns, state="absent", **params), needle)
    assert_unchanged(before, netns)


def test_errors_without_ansible(monkeypatch):
    """The logic class alone: its own checks, and nft missing from the machine."""
    from ansible_collections.mpsocks.mptcp.plugins.module_utils import nft
    from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
    from ansible_collections.mpsocks.mptcp.plugins.module_utils.middlebox import Middlebox

    with pytest.raises(MpsocksError, match=r"^kind: 'firewall' is not one of none, strip, drop-mptcp, "
                                           r"optimizer$"):
        Middlebox(dict(interface=SUB, kind="firewall")).run(check_mode=True)
    with pytest.raises(MpsocksError, match=r"^proxy_port: True is not a port number$"):
        Middlebox(dict(interface=SUB, kind="optimizer", proxy_port=True)).run(check_mode=True)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(nft, "NFT_FALLBACK", "/nonexistent/nft")
    with pytest.raises(MpsocksError, match=r"^nft: command not found .*install the nftables package$"):
        Middlebox(dict(interface=SUB, kind="strip")).run(check_mode=True)


# --- lists of middleboxes, and safety ----------------------------------------------------------------

@pytest.fixture
def isps(netns):
    """Two ISP namespaces: NETNS and one more."""
    other = unique_name("mpsti")
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:
        yield [netns, other]
    finally:
        subprocess.run(["ip", "netns", "del", other], check=False)


def test_one_call_for_every_isp_check_mode_predicts_exactly(isps):
    before = {ns: snapshot(ns) for ns in isps}
    config = [dict(netns=isps[0], interface="cust", kind="optimizer"),
              dict(netns=isps[1], interface="cust", kind="strip")]
    predicted = run_module("middlebox", check=True, config=config)
    assert predicted["changed"] is True and [r["changed"] for r in predicted["results"]] == [True, True]
    for ns in isps:
        assert_unchanged(before[ns], ns)
    created = run_module("middlebox", config=config)
    assert created["results"] == predicted["results"] and created["diff"] == predicted["diff"]
    assert [r["label"] for r in created["results"]] == [
        f"middlebox in table inet {TABLE} in netns {ns}" for ns in isps]
    assert [nft_lines(ns)[1][1] for ns in isps] == [
        'iifname "cust" tcp option mptcp exists counter accept',
        'iifname "cust" tcp flags syn / syn,ack tcp option mptcp exists counter reset tcp option mptcp']
    assert run_module("middlebox", config=config)["changed"] is False
    fed_back = [dict(r["middlebox"], netns=ns) for r, ns in zip(created["results"], isps, strict=True)]
    assert run_module("middlebox", config=fed_back)["changed"] is False

    gone = run_module("middlebox", config=[dict(item, kind="none") for item in config])
    assert [(r["changed"], r["middlebox"], r["chains"]) for r in gone["results"]] == [(True, {}, {})] * 2
    for ns in isps:
        assert nft_table(ns) is None
        assert_unchanged(before[ns], ns)


def test_a_bad_item_in_the_middle_changes_nothing(isps):
    run_item("middlebox", netns=isps[1], interface="cust", kind="drop-mptcp")
    before = {ns: snapshot(ns) for ns in isps}
    config = [dict(netns=isps[0], interface="cust", kind="optimizer"),
              dict(netns=isps[1], interface="c*", kind="strip"),
              dict(netns=isps[0], interface="cust", kind="strip", table="other")]
    result = run_module("middlebox", config=config)
    assert_one_line_failure(result, f"config[1] (middlebox in table inet {TABLE} in netns {isps[1]}): "
                                    "interface: 'c*' holds '*'")
    assert result["changed"] is False and result["results"] == []
    for ns in isps:
        assert_unchanged(before[ns], ns)


FOREIGN = f"""
table inet {TABLE} {{
    chain forward {{ type filter hook forward priority 0; policy accept;
        iifname "{SUB}" counter accept comment "mpsocks:mptcp0"
    }}
}}
"""
NOT_OURS = f"table: inet {TABLE} exists but was not made by mpsocks (no 'managed by mpsocks' mark)"


def test_a_table_named_like_ours_without_our_mark_is_left_alone(netns):
    """Issue 7 #13: a user's own ``inet mpsocks_lab`` is neither replaced nor removed, whatever the verb."""
    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=FOREIGN, text=True, check=True)
    before = snapshot(netns)
    for check in (True, False):
        for kind in ("strip", "drop-mptcp", "optimizer", "none"):
            assert_one_line_failure(run_item("middlebox", check=check, netns=netns, interface=SUB, kind=kind),
                                    NOT_OURS)
        assert_one_line_failure(run_item("middlebox", check=check, netns=netns, interface=SUB, kind="strip",
                                         state="absent"), NOT_OURS)
    assert_unchanged(before, netns)


def test_removal_from_a_stale_listing_deletes_nothing_it_did_not_see(netns):
    """Removal deletes what was listed, then the table, non-recursively: an addition since stops it."""
    run_item("middlebox", netns=netns, interface=SUB, kind="strip")
    for addition in (f"add rule inet {TABLE} forward counter", f"add chain inet {TABLE} theirs",
                     f"add set inet {TABLE} theirs {{ type ipv4_addr; }}"):
        with visiting(netns):
            middlebox = Middlebox({"interface": SUB, "kind": "none"})
            middlebox.validate()
            current = middlebox.read()
        sh("nft", addition, netns=netns)
        before = snapshot(netns)
        with visiting(netns), pytest.raises(MpsocksError, match=r": Device or resource busy \(it holds what"):
            middlebox.apply(current, None)
        assert_unchanged(before, netns)
        # Read afresh, the table is declared whole again: the addition goes with it.
        assert run_item("middlebox", netns=netns, interface=SUB, kind="strip")["changed"] is True
        assert nft_lines(netns) == STRIP_LINES
    assert run_item("middlebox", netns=netns, interface=SUB, kind="none")["changed"] is True
    assert nft_table(netns) is None


# --- real traffic: client -- ISP (runs the module) -- server -----------------------------------------

@pytest.fixture
def lab(netns):
    """Client 198.18.100.2 -- (sub0 198.18.100.1) ISP NETNS (up0 198.18.101.1) -- server 198.18.101.2."""
    client, server = unique_name("mpsmc"), unique_name("mpsms")
    for ns in (client, server):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        sh("ip", "link", "add", "c0", "netns", client, "type", "veth", "peer", "name", SUB, "netns", netns)
        sh("ip", "link", "add", "s0", "netns", server, "type", "veth", "peer", "name", "up0", "netns", netns)
        for ns, dev, address in ((client, "c0", "198.18.100.2/24"), (netns, SUB, "198.18.100.1/24"),
                                 (netns, "up0", "198.18.101.1/24"), (server, "s0", SERVER_ADDRESS + "/24")):
            sh("ip", "link", "set", dev, "addrgenmode", "none", netns=ns)
            sh("ip", "addr", "add", address, "dev", dev, netns=ns)
            sh("ip", "link", "set", dev, "up", netns=ns)
            sh("ip", "link", "set", "lo", "up", netns=ns)
        sh("ip", "route", "add", "default", "via", "198.18.100.1", netns=client)
        sh("ip", "route", "add", "default", "via", "198.18.101.1", netns=server)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=netns)
        with daemon(server, SERVER, SERVER_ADDRESS, str(SERVER_PORT)) as served:
            yield {"client": client, "isp": netns, "server": server, "served": served}
    finally:
        for ns in (client, server):
            subprocess.run(["ip", "netns", "del", ns], check=False)


@contextlib.contextmanager
def daemon(netns, script, *args):
    """A Python listener in NETNS; yields its stdout (one JSON line per accepted connection)."""
    proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", script, *args],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc.stdout
    finally:
        proc.kill()
        proc.wait()


def connect(lab, proto="mptcp"):
    """Client -> server:SERVER_PORT; returns what the client saw (seconds to connect, reply, MPTCP)."""
    out = sh(sys.executable, "-c", CLIENT, SERVER_ADDRESS, str(SERVER_PORT), proto, netns=lab["client"])
    return json.loads(out)


def served(lab):
    """The server's record of the connection just made (call only after a reply came back)."""
    return json.loads(lab["served"].readline())


@contextlib.contextmanager
def syn_capture(netns, dev):
    """tcpdump of the first TCP SYN (without ACK) on DEV; yields a function giving its decoded line."""
    proc = subprocess.Popen(["ip", "netns", "exec", netns, "tcpdump", "-n", "-l", "-v", "-c", "1", "-i", dev,
                             "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = proc.stderr.readline()
        assert "listening" in started, started
        yield lambda: proc.communicate(timeout=10)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_none_baseline_connection_is_mptcp(lab):
    assert run_item("middlebox", interface=SUB, kind="none", netns=lab["isp"])["changed"] is False
    with syn_capture(lab["server"], "s0") as syn:
        got = connect(lab)
        line = syn()
    assert got["client_mptcp"] == 1 and got["reply"] == "server mptcp=1", got
    record = served(lab)
    assert record["mptcp"] == 1 and record["peer"].startswith("198.18.100.2:"), record
    assert "mptcp" in line, line  # the SYN reached the server with MP_CAPABLE


def test_strip_makes_the_connection_plain_tcp(lab):
    run_item("middlebox", interface=SUB, kind="strip", netns=lab["isp"])
    with syn_capture(lab["server"], "s0") as syn:
        got = connect(lab)
        line = syn()
    print(f"strip: SYN as the server got it: {line.strip()}")
    assert got["reply"] == "server mptcp=0" and got["client_mptcp"] == 0, got
    assert served(lab)["mptcp"] == 0
    assert "mptcp" not in line and "nop,nop,nop,nop" in line, line  # option overwritten with NOPs
    assert counters(lab["isp"]) == [1]
    # Plain TCP SYNs do not match the rule.
    assert connect(lab, "tcp")["reply"] == "server mptcp=0"
    assert counters(lab["isp"]) == [1]
    served(lab)
    # A stripped SYN is an ordinary fallback, not a blackhole: once the ISP stops, MPTCP is back at once.
    assert run_item("middlebox", interface=SUB, kind="none", netns=lab["isp"])["changed"] is True
    again = connect(lab)
    assert again["reply"] == "server mptcp=1" and again["client_mptcp"] == 1, again


def test_drop_mptcp_falls_back_after_retransmissions(lab):
    run_item("middlebox", interface=SUB, kind="drop-mptcp", netns=lab["isp"])
    retries = int(sh("sysctl", "-n", "net.mptcp.syn_retrans_before_tcp_fallback", netns=lab["client"]))
    got = connect(lab)
    print(f"drop-mptcp: connected after {got['seconds']:.2f} s, {retries} MPTCP SYN retransmissions "
          f"dropped before the plain-TCP SYN (net.mptcp.syn_retrans_before_tcp_fallback={retries})")
    assert got.get("reply") == "server mptcp=0" and got["client_mptcp"] == 0, got
    assert served(lab)["mptcp"] == 0
    assert counters(lab["isp"]) == [retries + 1]  # first SYN and each retransmission with MPTCP
    assert 0.9 < got["seconds"] < 10, got  # initial RTO 1 s, doubling: 1 + 2 = 3 s with the default 2

    # The client's namespace now treats MPTCP as blackholed: even without the middlebox a new MPTCP
    # socket opens plain TCP (net.mptcp.blackhole_timeout), at once.
    run_item("middlebox", interface=SUB, kind="none", netns=lab["isp"])
    after = connect(lab)
    print(f"drop-mptcp removed: next MPTCP connect took {after['seconds']:.2f} s, "
          f"MPTCP={after['client_mptcp']}")
    assert after["reply"] == "server mptcp=0" and after["seconds"] < 0.9, after


def test_optimizer_redirects_plain_tcp_and_lets_mptcp_through(lab):
    run_item("middlebox", interface=SUB, kind="optimizer", proxy_port=PROXY_PORT, netns=lab["isp"])
    with daemon(lab["isp"], PROXY, str(PROXY_PORT)) as proxied:
        plain = connect(lab, "tcp")
        assert plain.get("reply") == f"proxy original={SERVER_ADDRESS}:{SERVER_PORT}", plain
        record = json.loads(proxied.readline())
        assert record["peer"].startswith("198.18.100.2:"), record  # not NATed on the way in
        mptcp = connect(lab)
        assert mptcp.get("reply") == "server mptcp=1" and mptcp["client_mptcp"] == 1, mptcp
        # The server's first record is this MPTCP connection: the plain one never reached it.
        record = served(lab)
        assert record["mptcp"] == 1 and record["peer"].startswith("198.18.100.2:"), record
    assert counters(lab["isp"]) == [1, 1]
