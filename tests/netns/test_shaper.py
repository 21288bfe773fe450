"""mpsocks.mptcp.shaper: HTB on a real veth, read back with tc, and real TCP goodput through it."""

import json
import re
import subprocess
import sys
import time

import pytest
from mpsocks_testlib import assert_unchanged, run_item, run_module, sh, snapshot, unique_name

DEV, PEER_DEV = "shp0", "shp1"
ADDR, PEER_ADDR = "198.18.90.1", "198.18.90.2"
SECONDS = 3.0
#: The least share of a class's rate a TCP flow must get, even on a busy machine.
LOWEST_SHARE = 0.7

#: Receiver: counts payload for SECONDS from the moment the sender's connection was up (the sender's
#: first 8 bytes), so a receiver that starts reading late does not count buffered bytes in no time;
#: prints Mbit/s. Sender: sends until reset.
FLOW = r"""
import socket, struct, sys, time
if sys.argv[1] == "recv":
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((sys.argv[2], int(sys.argv[3])))
    srv.listen(1)
    srv.settimeout(15)
    print("ready", flush=True)
    conn, _ = srv.accept()
    conn.settimeout(15)
    head = b""
    while len(head) < 8:
        head += conn.recv(8 - len(head))
    (start,) = struct.unpack("d", head)  # CLOCK_MONOTONIC is the machine's, in every namespace
    conn.settimeout(0.2)
    window, total = float(sys.argv[4]), 0
    while time.monotonic() - start < window:
        try:
            data = conn.recv(262144)
        except socket.timeout:
            continue
        if not data:
            break
        total += len(data)
    print("%.4f" % (total * 8 / (time.monotonic() - start) / 1e6), flush=True)
    conn.close()
else:
    sock = socket.socket()
    priority = int(sys.argv[4], 0)
    if priority:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, priority)
    sock.settimeout(15)
    sock.connect((sys.argv[2], int(sys.argv[3])))
    sock.sendall(struct.pack("d", time.monotonic()))
    chunk = b"x" * 65536
    try:
        while True:
            sock.sendall(chunk)
    except OSError:
        pass
"""


@pytest.fixture
def pair(netns):
    """NETNS holds DEV, a veth whose peer PEER_DEV sits in a namespace of its own."""
    peer = unique_name("mpstp")
    subprocess.run(["ip", "netns", "add", peer], check=True)
    try:
        sh("ip", "link", "add", DEV, "netns", netns, "type", "veth", "peer", "name", PEER_DEV, "netns", peer)
        for ns, dev, addr in ((netns, DEV, ADDR), (peer, PEER_DEV, PEER_ADDR)):
            sh("ip", "link", "set", dev, "addrgenmode", "none", netns=ns)
            sh("ip", "addr", "add", addr + "/30", "dev", dev, netns=ns)
            sh("ip", "link", "set", dev, "up", netns=ns)
            sh("ip", "link", "set", "lo", "up", netns=ns)
        yield {"shaped": netns, "peer": peer}
    finally:
        subprocess.run(["ip", "netns", "del", peer], check=False)


def in_netns(netns, *args):
    return ["ip", "netns", "exec", netns, sys.executable, "-c", FLOW, *map(str, args)]


def goodput(pair, *priorities, seconds=SECONDS):
    """Mbit/s of TCP payload from the shaped side to the peer, one concurrent flow per priority."""
    procs, receivers = [], []
    try:
        for n, _ in enumerate(priorities):
            recv = subprocess.Popen(in_netns(pair["peer"], "recv", PEER_ADDR, 5201 + n, seconds),
                                    stdout=subprocess.PIPE, text=True)
            procs.append(recv)
            receivers.append(recv)
            assert recv.stdout.readline().strip() == "ready"
        for n, priority in enumerate(priorities):
            sender = in_netns(pair["shaped"], "send", PEER_ADDR, 5201 + n, hex(priority))
            procs.append(subprocess.Popen(sender))
        return [float(recv.communicate(timeout=seconds + 15)[0].strip()) for recv in receivers]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def tc_classes(netns, dev=DEV):
    """``tc -d class show`` (not the module) as {classid: {leaf, rate, ceil, burst, cburst, quantum}}."""
    found = {}
    for line in sh("tc", "-d", "class", "show", "dev", dev, netns=netns).splitlines():
        head = re.match(r"class htb (\S+) (?:root|parent \S+) (?:leaf (\S+) )?", line)
        if head:
            fields = dict(re.findall(r"\b(prio|quantum|rate|ceil|burst|cburst) ([^\s/]+)", line))
            found[head.group(1)] = dict(fields, leaf=head.group(2))
    return found


def tc_qdiscs(netns, dev=DEV):
    """``tc -j qdisc show`` as {parent or 'root': qdisc}."""
    return {q.get("parent", "root" if q.get("root") else None): q
            for q in json.loads(sh("tc", "-j", "qdisc", "show", "dev", dev, netns=netns))}


def leaf(qdisc):
    """(rate in bytes/s, queue limit in bytes) of a leaf tbf as ``tc -j`` shows it; checks its burst."""
    assert qdisc["kind"] == "tbf"
    opts = qdisc["options"]
    # Above one 1514-byte frame (every frame passes) but below two (super-packets are split).
    assert 1514 <= opts["burst"] < 3028, opts
    # tc shows the limit as a latency: limit = rate * (lat + burst time).
    return opts["rate"], opts["rate"] * (opts["lat"] / 1e6) + opts["burst"]


def test_goodput_follows_the_rate_and_the_priority_class(pair):
    ns = pair["shaped"]
    assert run_item("shaper", dev=DEV, rate_mbit=20, netns=ns)["changed"] is True
    (at20,) = goodput(pair, 0)
    print(f"\nshaper 20 Mbit/s: one TCP flow {at20:.2f} Mbit/s ({at20 / 20:.1%})")

    assert run_item("shaper", dev=DEV, rate_mbit=100, netns=ns)["changed"] is True
    (at100,) = goodput(pair, 0, seconds=1.5)
    print(f"shaper 100 Mbit/s: one TCP flow {at100:.2f} Mbit/s ({at100 / 100:.1%}, 1.5 s)")

    assert run_item("shaper", dev=DEV, rate_mbit=5, netns=ns)["changed"] is True
    (at5,) = goodput(pair, 0)
    print(f"shaper 5 Mbit/s: one TCP flow {at5:.2f} Mbit/s ({at5 / 5:.1%})")

    run_item("shaper", dev=DEV, rate_mbit=5, classes=[{"id": 0x10, "rate_mbit": 20}], netns=ns)
    in_class, default = goodput(pair, 0x10010, 0)
    print(f"default 5 + class 1:10 at 20 Mbit/s, concurrently: SO_PRIORITY 0x10010 {in_class:.2f} Mbit/s "
          f"({in_class / 20:.1%}), priority 0 {default:.2f} Mbit/s ({default / 5:.1%})")

    # Never above the rate (the window starts when the sender's connection is up, so this holds
    # however late the receiver reads); the lower bound is a wide sanity bound (96 % is usual, a
    # busy machine's sender gets less), catching only a shaper that starves its class.
    for goodput_mbit, rate in ((at20, 20), (at100, 100), (at5, 5), (in_class, 20), (default, 5)):
        assert LOWEST_SHARE * rate <= goodput_mbit <= rate, (goodput_mbit, rate)


def test_check_mode_apply_read_back_idempotent_and_absent(pair):
    ns = pair["shaped"]
    before = snapshot(ns)
    assert tc_qdiscs(ns)["root"]["kind"] == "noqueue"
    args = dict(dev=DEV, rate_mbit=20, classes=[{"id": 7, "rate_mbit": 2.5}], netns=ns)

    predicted = run_item("shaper", check=True, **args)
    assert predicted["changed"] is True and predicted["diff"]["before"] == {}
    assert predicted["shaper"]["rate_mbit"] == 20.0
    assert tc_qdiscs(ns)["root"]["kind"] == "noqueue"

    done = run_item("shaper", **args)
    assert done["changed"] is True and done["shaper"] == predicted["shaper"]
    qdiscs = tc_qdiscs(ns)
    assert (qdiscs["root"]["kind"], qdiscs["root"]["handle"]) == ("htb", "1:")
    assert qdiscs["root"]["options"]["default"] == "0xffff"
    # Leaf tbf: 10x the class rate (tc -j gives bytes/s), a burst of one frame, 100 ms / 128 KiB queue.
    assert leaf(qdiscs["1:ffff"]) == (25_000_000, pytest.approx(250_000, rel=0.01))
    assert leaf(qdiscs["1:7"]) == (3_125_000, pytest.approx(131_072, rel=0.01))
    classes = tc_classes(ns)
    assert set(classes) == {"1:ffff", "1:7"}
    assert (classes["1:ffff"]["rate"], classes["1:ffff"]["ceil"]) == ("20Mbit", "20Mbit")
    assert (classes["1:ffff"]["burst"], classes["1:ffff"]["cburst"]) == ("25000b", "25000b")
    assert (classes["1:7"]["rate"], classes["1:7"]["ceil"]) == ("2500Kbit", "2500Kbit")
    assert classes["1:7"]["quantum"] == "1514"

    assert run_item("shaper", **args)["changed"] is False
    assert run_item("shaper", check=True, **args)["changed"] is False

    slower = dict(args, rate_mbit=10)
    diff = run_item("shaper", check=True, **slower)["diff"]
    assert (diff["before"]["rate_mbit"], diff["after"]["rate_mbit"]) == (20.0, 10.0)
    assert diff["before"]["classes"] == diff["after"]["classes"]
    assert tc_classes(ns)["1:ffff"]["rate"] == "20Mbit"

    assert run_item("shaper", check=True, dev=DEV, state="absent", netns=ns)["changed"] is True
    assert tc_qdiscs(ns)["root"]["kind"] == "htb"
    removed = run_item("shaper", dev=DEV, state="absent", netns=ns)
    assert removed["changed"] is True and removed["shaper"] == {}
    assert removed["diff"]["before"]["rate_mbit"] == 20.0
    assert list(tc_qdiscs(ns)) == ["root"] and tc_qdiscs(ns)["root"]["kind"] == "noqueue"
    assert run_item("shaper", dev=DEV, state="absent", netns=ns)["changed"] is False
    assert_unchanged(before, ns)


def test_rate_change_touches_only_what_differs(pair):
    ns = pair["shaped"]
    run_item("shaper", dev=DEV, rate_mbit=5, netns=ns,
               classes=[{"id": 16, "rate_mbit": 20}, {"id": 32, "rate_mbit": 10}])
    leaves = {cid: c["leaf"] for cid, c in tc_classes(ns).items()}
    assert set(leaves) == {"1:ffff", "1:10", "1:20"}

    changed = run_item("shaper", dev=DEV, rate_mbit=8, classes=[{"id": 16, "rate_mbit": 20}], netns=ns)
    assert changed["changed"] is True
    assert [c["id"] for c in changed["shaper"]["classes"]] == [16]
    classes = tc_classes(ns)
    assert set(classes) == {"1:ffff", "1:10"}
    assert classes["1:ffff"]["rate"] == "8Mbit" and classes["1:10"]["rate"] == "20Mbit"
    # Same leaf qdiscs: the classes were changed in place, not the qdisc rebuilt.
    assert classes["1:ffff"]["leaf"] == leaves["1:ffff"] and classes["1:10"]["leaf"] == leaves["1:10"]
    assert leaf(tc_qdiscs(ns)["1:ffff"])[0] == 10_000_000
    assert run_item("shaper", dev=DEV, rate_mbit=8, classes=[{"id": 16, "rate_mbit": 20}],
                      netns=ns)["changed"] is False

    # A hand-made htb 1: with another default class is rebuilt to ours.
    sh("tc", "qdisc", "del", "dev", DEV, "root", netns=ns)
    sh("tc", "qdisc", "add", "dev", DEV, "root", "handle", "1:", "htb", "default", "10", netns=ns)
    sh("tc", "class", "add", "dev", DEV, "parent", "1:", "classid", "1:10", "htb", "rate", "1mbit", netns=ns)
    fixed = run_item("shaper", dev=DEV, rate_mbit=8, classes=[{"id": 16, "rate_mbit": 20}], netns=ns)
    assert fixed["changed"] is True and fixed["diff"]["before"]["default_class"]["id"] == 16
    assert tc_qdiscs(ns)["root"]["options"]["default"] == "0xffff"
    assert tc_classes(ns)["1:10"]["rate"] == "20Mbit"


def test_foreign_root_qdisc_is_left_by_absent_and_replaced_by_present(pair):
    ns = pair["shaped"]
    sh("tc", "qdisc", "add", "dev", DEV, "root", "handle", "2:", "htb", "default", "1", netns=ns)
    assert run_item("shaper", dev=DEV, state="absent", netns=ns)["changed"] is False
    assert tc_qdiscs(ns)["root"]["handle"] == "2:"
    sh("tc", "qdisc", "replace", "dev", DEV, "root", "tbf", "rate", "1mbit", "burst", "10k",
       "latency", "50ms", netns=ns)
    assert run_item("shaper", dev=DEV, state="absent", netns=ns)["changed"] is False
    assert tc_qdiscs(ns)["root"]["kind"] == "tbf"

    replaced = run_item("shaper", dev=DEV, rate_mbit=3, netns=ns)
    assert replaced["changed"] is True and replaced["diff"]["before"] == {}
    assert (tc_qdiscs(ns)["root"]["kind"], tc_qdiscs(ns)["root"]["handle"]) == ("htb", "1:")
    assert run_item("shaper", dev=DEV, state="absent", netns=ns)["changed"] is True
    assert tc_qdiscs(ns)["root"]["kind"] == "noqueue"
    # A missing interface has nothing to remove.
    assert run_item("shaper", dev="nosuchdev0", state="absent", netns=ns)["changed"] is False


def test_bad_input_fails_with_one_line_and_changes_nothing(pair):
    ns = pair["shaped"]
    run_item("shaper", dev=DEV, rate_mbit=4, classes=[{"id": 3, "rate_mbit": 1}], netns=ns)
    before, before_tc = snapshot(ns), (tc_qdiscs(ns), tc_classes(ns))
    ok = [{"id": 3, "rate_mbit": 1}]
    cases = [
        ("dev", dict(dev="nosuchdev0", rate_mbit=4)),
        ("dev", dict(dev="a-very-long-interface", rate_mbit=4)),
        ("rate_mbit", dict(dev=DEV)),
        ("rate_mbit", dict(dev=DEV, rate_mbit=0)),
        ("rate_mbit", dict(dev=DEV, rate_mbit=-5)),
        ("rate_mbit", dict(dev=DEV, rate_mbit=1e9)),
        ("rate_mbit", dict(dev=DEV, rate_mbit="fast")),
        ("classes", dict(dev=DEV, rate_mbit=4, classes=ok + [{"id": 0, "rate_mbit": 1}])),
        ("classes", dict(dev=DEV, rate_mbit=4, classes=ok + [{"id": 0xFFFF, "rate_mbit": 1}])),
        ("classes", dict(dev=DEV, rate_mbit=4, classes=ok + [{"id": 0x10000, "rate_mbit": 1}])),
        ("classes", dict(dev=DEV, rate_mbit=4, classes=ok + [{"id": 3, "rate_mbit": 2}])),
        ("classes", dict(dev=DEV, rate_mbit=4, classes=ok + [{"id": 9, "rate_mbit": 0}])),
        ("classes", dict(dev=DEV, rate_mbit=4, classes=ok + [{"id": 9}])),
    ]
    for option, args in cases:
        result = run_item("shaper", netns=ns, **args)
        assert result.get("failed"), args
        assert "\n" not in result["msg"] and "Traceback" not in result["msg"], result["msg"]
        assert option in result["msg"], (args, result["msg"])
    assert (tc_qdiscs(ns), tc_classes(ns)) == before_tc
    assert_unchanged(before, ns)


def test_unit_validation_without_ansible():
    from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
    from ansible_collections.mpsocks.mptcp.plugins.module_utils.shaper import Shaper, burst_for, leaf_for

    # Validation looks the interface up (in the current namespace): lo is always there.
    shaper = Shaper({"dev": "lo", "rate_mbit": 2.5, "classes": [{"id": 1, "rate_mbit": 0.1}]})
    shaper.validate()
    assert shaper.rate == 312500 and shaper.classes == {1: 12500}
    assert (burst_for(312500), burst_for(12500)) == (3125, 3028)
    assert leaf_for(312500, 1500) == (3125000, 1538, 131072)
    assert leaf_for(2500000, 9000) == (25000000, 9075, 250000)
    for bad in (float("nan"), float("inf"), True):
        with pytest.raises(MpsocksError, match="rate_mbit"):
            Shaper({"dev": "lo", "rate_mbit": bad}).validate()
    with pytest.raises(MpsocksError, match="whole"):
        Shaper({"dev": "lo", "rate_mbit": 1, "classes": [{"id": 2.5, "rate_mbit": 1}]}).validate()
    with pytest.raises(MpsocksError, match="dev: no interface named 'x0'"):
        Shaper({"dev": "x0", "rate_mbit": 1}).validate()
    assert Shaper({"dev": "x0", "state": "absent"}).validate() is None


def test_missing_namespace_is_a_clear_error():
    result = run_item("shaper", dev=DEV, rate_mbit=1, netns="mpsocks-no-such-ns")
    assert result["failed"] and "mpsocks-no-such-ns" in result["msg"]


def test_traffic_helper_measures_an_unshaped_link(pair):
    """Guard for the goodput figures: without the shaper the same flow is far above every rate tested."""
    start = time.monotonic()
    (free,) = goodput(pair, 0, seconds=1)
    print(f"\nunshaped veth: {free:.0f} Mbit/s in {time.monotonic() - start:.1f} s")
    assert free > 100


def root_kinds(pair):
    """{(netns, dev): kind of its root qdisc} for every interface the list tests shape."""
    return {(ns, dev): tc_qdiscs(ns, dev)["root"]["kind"]
            for ns, dev in [(pair["shaped"], DEV), (pair["shaped"], "va0"), (pair["peer"], PEER_DEV),
                            (pair["peer"], "va1")]}


def settled(netns, seconds=10.0):
    """Wait until every link of NETNS has its carrier and the kernel's follow-ups (IPv6 routes) are done."""
    deadline = time.monotonic() + seconds
    while "NO-CARRIER" in sh("ip", "-o", "link", "show", netns=netns):
        assert time.monotonic() < deadline, sh("ip", "-o", "link", "show", netns=netns)
        time.sleep(0.05)
    previous = None
    while previous != snapshot(netns):
        assert time.monotonic() < deadline, f"{netns} does not settle"
        previous = snapshot(netns)
        time.sleep(0.2)


@pytest.fixture
def four(pair):
    """PAIR plus a veth va0/va1 inside each namespace: four interfaces to shape, two in each."""
    for ns in pair.values():
        sh("ip", "link", "add", "va0", "type", "veth", "peer", "name", "va1", netns=ns)
        for dev in ("va0", "va1"):
            sh("ip", "link", "set", dev, "addrgenmode", "none", netns=ns)  # no late IPv6 addresses
            sh("ip", "link", "set", dev, "up", netns=ns)
    for ns in pair.values():
        settled(ns)
    return pair


def test_a_list_across_namespaces_in_one_call(four):
    """As the lab does: both directions of two uplinks, in two ISP namespaces, in one call."""
    shaped, peer = four["shaped"], four["peer"]
    config = [
        {"dev": DEV, "rate_mbit": 20},  # in the module's netns
        {"dev": "va0", "rate_mbit": 5, "classes": [{"id": 7, "rate_mbit": 1}]},
        {"netns": peer, "dev": PEER_DEV, "rate_mbit": 10},
        {"netns": peer, "dev": "va1", "rate_mbit": 2.5},
    ]
    nothing = root_kinds(four)
    assert set(nothing.values()) == {"noqueue"}
    before = {ns: snapshot(ns) for ns in (shaped, peer)}

    predicted = run_module("shaper", check=True, netns=shaped, config=config)
    assert predicted["changed"] is True and [r["changed"] for r in predicted["results"]] == [True] * 4
    assert root_kinds(four) == nothing
    for ns in (shaped, peer):
        assert_unchanged(before[ns], ns)

    done = run_module("shaper", netns=shaped, config=config)
    assert done["changed"] is True and len(done["diff"]) == 4
    assert [r["shaper"] for r in done["results"]] == [r["shaper"] for r in predicted["results"]]
    assert [r["diff"] for r in done["results"]] == [r["diff"] for r in predicted["results"]]
    assert set(root_kinds(four).values()) == {"htb"}
    assert tc_classes(shaped, "va0")["1:7"]["rate"] == "1Mbit"
    assert tc_classes(peer, PEER_DEV)["1:ffff"]["rate"] == "10Mbit"
    assert tc_classes(peer, "va1")["1:ffff"]["rate"] == "2500Kbit"
    assert done["results"][1]["shaper"] == {"dev": "va0", "rate_mbit": 5.0, "netns": shaped,
                                            "classes": [{"id": 7, "rate_mbit": 1.0}]}

    assert run_module("shaper", netns=shaped, config=config)["changed"] is False
    # What the module returned, fed back as its input (each item names its netns), changes nothing.
    returned = [result["shaper"] for result in done["results"]]
    again = run_module("shaper", config=returned)
    assert again["changed"] is False and [r["shaper"] for r in again["results"]] == returned

    gone = [{"netns": item["netns"], "dev": item["dev"]} for item in returned]
    predicted = run_module("shaper", check=True, state="absent", config=gone)
    assert [r["changed"] for r in predicted["results"]] == [True] * 4
    assert set(root_kinds(four).values()) == {"htb"}
    removed = run_module("shaper", state="absent", config=gone)
    assert [r["shaper"] for r in removed["results"]] == [{}] * 4
    assert root_kinds(four) == nothing
    assert run_module("shaper", state="absent", config=gone)["changed"] is False


def test_a_bad_item_in_the_middle_changes_nothing(four):
    shaped, peer = four["shaped"], four["peer"]
    good = [{"netns": shaped, "dev": DEV, "rate_mbit": 20}, {"netns": peer, "dev": PEER_DEV, "rate_mbit": 10}]
    bad_items = [
        ({"netns": peer, "dev": "nosuchdev0", "rate_mbit": 4}, "dev: no interface named 'nosuchdev0'"),
        ({"netns": shaped, "dev": "va0", "rate_mbit": 0}, "rate_mbit"),
        ({"netns": shaped, "dev": "va0", "rate_mbit": 4, "classes": [{"id": 0xFFFF, "rate_mbit": 1}]},
         "collides with the default class"),
        ({"netns": "mpsocks-no-such-ns", "dev": "va0", "rate_mbit": 4}, "mpsocks-no-such-ns"),
    ]
    before = {ns: snapshot(ns) for ns in (shaped, peer)}
    nothing = root_kinds(four)
    for bad, needle in bad_items:
        for check in (True, False):
            result = run_module("shaper", check=check, config=good[:1] + [bad] + good[1:])
            assert result.get("failed") and result["changed"] is False, result
            assert result["msg"].startswith("config[1] (shaper "), result["msg"]
            assert needle in result["msg"] and "\n" not in result["msg"], result["msg"]
            assert root_kinds(four) == nothing
            for ns in (shaped, peer):
                assert_unchanged(before[ns], ns)
