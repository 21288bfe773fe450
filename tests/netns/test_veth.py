"""mpsocks.mptcp.veth against real veth pairs, within one namespace and across two."""

import contextlib
import json
import subprocess
import sys

from mpsocks_testlib import assert_unchanged, run_item, run_module, sh, snapshot, unique_name

# One ICMP echo request with a raw socket (this machine has no ping binary);
# exit 0 on the matching reply from the address asked, 3 on none (1 would be a crash).
PING = r"""
import os, socket, struct, sys, time

def checksum(data):
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF

dst, timeout = sys.argv[1], float(sys.argv[2])
ident, payload = os.getpid() & 0xFFFF, b"mpsocks veth test"
body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + payload
packet = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
try:
    sock.sendto(packet, (dst, 0))
except OSError:  # e.g. network unreachable: no route while the link is down
    sys.exit(3)
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    sock.settimeout(max(deadline - time.monotonic(), 0.01))
    try:
        data, (src, _) = sock.recvfrom(2048)
    except socket.timeout:
        break
    icmp = data[(data[0] & 0xF) * 4:]
    if src == dst and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident and icmp[8:] == payload:
        sys.exit(0)
sys.exit(3)
"""


def pings(netns, address, timeout=2.0):
    proc = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", PING, address, str(timeout)],
                          capture_output=True, text=True)
    assert proc.returncode in (0, 3), proc.stderr
    return proc.returncode == 0


def link(netns, name):
    """What iproute2 (not the module) says about interface NAME in NETNS."""
    return json.loads(sh("ip", "-j", "-d", "link", "show", name, netns=netns))[0]


def addresses(netns, name):
    found = json.loads(sh("ip", "-j", "addr", "show", "dev", name, netns=netns))[0]["addr_info"]
    return sorted(f"{a['local']}/{a['prefixlen']}" for a in found if a.get("scope") != "link")


def links(netns):
    return {item["ifname"] for item in json.loads(sh("ip", "-j", "link", "show", netns=netns))}


def default_forwarding(netns):
    """The IPv4 forwarding a new link of NETNS starts with."""
    return sh("sysctl", "-n", "net.ipv4.conf.default.forwarding", netns=netns).strip() == "1"


@contextlib.contextmanager
def second_namespace():
    name = unique_name("mpstv")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_pair_across_two_namespaces(netns):
    with second_namespace() as other:
        before, before_other = snapshot(netns), snapshot(other)
        args = dict(name="isp0", peer="host", peer_netns=other, addresses=["10.66.40.1/24"],
                    peer_addresses=["10.66.40.2/24", "fd66:40::2/64"], netns=netns)
        forwarding = default_forwarding(netns)
        state = {"name": "isp0", "netns": netns, "addresses": ["10.66.40.1/24"], "up": True,
                 "forwarding": forwarding,
                 "peer": {"name": "host", "netns": other, "addresses": ["10.66.40.2/24", "fd66:40::2/64"],
                          "up": True}}
        expected = {"name": "isp0", "netns": netns, "addresses": ["10.66.40.1/24"], "up": True,
                    "forwarding": forwarding, "peer": "host", "peer_netns": other,
                    "peer_addresses": ["10.66.40.2/24", "fd66:40::2/64"]}

        predicted = run_item("veth", check=True, **args)
        assert predicted["changed"] is True and predicted["veth"] == expected
        assert predicted["diff"]["before"] == {} and predicted["diff"]["after"] == state
        assert_unchanged(before, netns)
        assert_unchanged(before_other, other)

        created = run_item("veth", **args)
        assert created["changed"] is True and created["veth"] == expected
        here, there = link(netns, "isp0"), link(other, "host")
        assert here["linkinfo"]["info_kind"] == "veth" and there["linkinfo"]["info_kind"] == "veth"
        # Each end points at the other: the peer's index, in a namespace of its own.
        assert here["link_index"] == there["ifindex"] and there["link_index"] == here["ifindex"]
        assert "link_netnsid" in here and "link_netnsid" in there
        assert "isp0" not in links(other) and "host" not in links(netns)
        assert "UP" in here["flags"] and "UP" in there["flags"]
        assert addresses(netns, "isp0") == ["10.66.40.1/24"]
        assert addresses(other, "host") == ["10.66.40.2/24", "fd66:40::2/64"]
        assert pings(netns, "10.66.40.2") and pings(other, "10.66.40.1")

        assert run_item("veth", **args)["changed"] is False
        assert run_item("veth", check=True, **args)["changed"] is False

        down = dict(args, addresses=["10.66.41.1/24"], peer_addresses=["10.66.41.2/24"], up=False)
        predicted = run_item("veth", check=True, **down)
        assert predicted["changed"] is True and predicted["diff"]["before"] == state
        assert addresses(netns, "isp0") == ["10.66.40.1/24"] and "UP" in link(netns, "isp0")["flags"]
        changed = run_item("veth", **down)
        assert changed["changed"] is True and changed["veth"] == predicted["veth"]
        assert changed["veth"] == dict(expected, addresses=["10.66.41.1/24"], up=False,
                                       peer_addresses=["10.66.41.2/24"])
        assert run_item("veth", **changed["veth"])["changed"] is False  # the result is valid input
        assert addresses(netns, "isp0") == ["10.66.41.1/24"] and addresses(other, "host") == ["10.66.41.2/24"]
        assert "UP" not in link(netns, "isp0")["flags"] and "UP" not in link(other, "host")["flags"]
        assert not pings(netns, "10.66.41.2", timeout=0.5)
        assert run_item("veth", **down)["changed"] is False

        gone = dict(name="isp0", peer="host", peer_netns=other, netns=netns, state="absent")
        assert run_item("veth", check=True, **gone)["changed"] is True
        assert "isp0" in links(netns) and "host" in links(other)
        removed = run_item("veth", **gone)
        assert removed["changed"] is True and removed["veth"] == {}
        assert removed["diff"]["before"]["peer"]["name"] == "host"
        assert "isp0" not in links(netns) and "host" not in links(other)
        assert run_item("veth", **gone)["changed"] is False
        assert_unchanged(before, netns)
        assert_unchanged(before_other, other)


def test_pair_in_one_namespace_and_unmanaged_addresses(netns):
    args = dict(name="v0", peer="v0p", netns=netns)
    created = run_item("veth", **args)
    assert created["changed"] is True
    assert created["veth"] == {"name": "v0", "netns": netns, "addresses": [], "up": True,
                               "forwarding": default_forwarding(netns), "peer": "v0p", "peer_netns": None,
                               "peer_addresses": []}
    here, there = link(netns, "v0"), link(netns, "v0p")
    assert here["linkinfo"]["info_kind"] == "veth" and there["linkinfo"]["info_kind"] == "veth"
    assert (here["link"], there["link"]) == ("v0p", "v0") and "link_netnsid" not in here

    # Addresses left out are not managed; an empty list removes them, on either end.
    sh("ip", "addr", "add", "10.66.42.1/24", "dev", "v0", netns=netns)
    sh("ip", "addr", "add", "10.66.42.2/24", "dev", "v0p", netns=netns)
    assert run_item("veth", **args)["changed"] is False
    cleared = run_item("veth", addresses=[], **args)
    assert cleared["changed"] is True and cleared["veth"]["peer_addresses"] == ["10.66.42.2/24"]
    assert addresses(netns, "v0") == [] and addresses(netns, "v0p") == ["10.66.42.2/24"]

    # Deleting the pair by naming its other end works too: it is the same pair seen from there.
    removed = run_item("veth", name="v0p", peer="v0", netns=netns, state="absent")
    assert removed["changed"] is True
    assert "v0" not in links(netns) and "v0p" not in links(netns)


def test_conflicts_and_bad_input_fail_with_one_line_and_change_nothing(netns):
    with second_namespace() as other:
        sh("ip", "tuntap", "add", "mode", "tap", "name", "tp0", netns=netns)
        sh("ip", "link", "add", "br0", "type", "bridge", netns=netns)
        run_item("veth", name="x0", peer="x0p", netns=netns, up=False)  # down: no IPv6 address changes
        run_item("veth", name="y0", peer="y0p", peer_netns=other, netns=netns, up=False)
        sh("ip", "link", "add", "u0", "type", "veth", "peer", "name", "u0p", netns=netns)  # a user's
        before, before_other = snapshot(netns), snapshot(other)
        cases = [
            ("name: 'tp0' already exists as a tun", dict(name="tp0", peer="p")),
            ("name: 'br0' already exists as a bridge", dict(name="br0", peer="p", peer_netns=other)),
            ("paired with 'x0p' in", dict(name="x0", peer="x1")),
            ("paired with 'x0p' in", dict(name="x0", peer="x0p", peer_netns=other)),
            (f"paired with 'y0p' in namespace '{other}'", dict(name="y0", peer="y0p")),
            ("paired with 'y0p'", dict(name="y0", peer="y0p", peer_netns=netns)),
            ("paired with 'x0p'", dict(name="x0", peer="other", state="absent")),
            ("peer: an interface 'x0p'", dict(name="n0", peer="x0p")),
            ("veth end 'u0' exists but was not made by mpsocks", dict(name="u0", peer="u0p")),
            ("veth end 'u0' exists but was not made by mpsocks", dict(name="u0", peer="u0p", state="absent")),
            ("peer: an interface 'y0p'", dict(name="n0", peer="y0p", peer_netns=other)),
            ("peer_netns: namespace 'mpsocks-no-such-ns' does not exist",
             dict(name="n0", peer="n1", peer_netns="mpsocks-no-such-ns")),
            ("peer_netns: 'a/b' is not a valid namespace name", dict(name="n0", peer="n1", peer_netns="a/b")),
            ("peer: 'n0' is also the name", dict(name="n0", peer="n0")),
            ("name: interface name", dict(name="a-very-long-veth-name", peer="n1")),
            ("peer: interface name", dict(name="n0", peer="a-very-long-veth-name")),
            ("addresses: '10.66.43.1' needs a prefix", dict(name="n0", peer="n1", addresses=["10.66.43.1"])),
            ("peer_addresses: '10.66.43.300/24' is not", dict(name="n0", peer="n1",
                                                               peer_addresses=["10.66.43.300/24"])),
        ]
        for needle, args in cases:
            result = run_item("veth", netns=netns, **args)
            assert result.get("failed"), args
            assert "\n" not in result["msg"] and "Traceback" not in result["msg"]
            assert needle in result["msg"], result["msg"]
        assert_unchanged(before, netns)
        assert_unchanged(before_other, other)


def test_missing_namespace_is_a_clear_error():
    result = run_item("veth", name="v0", peer="v0p", netns="mpsocks-no-such-ns")
    assert result["failed"] and "mpsocks-no-such-ns" in result["msg"]


def test_many_pairs_in_one_call_and_a_bad_item_changes_nothing(netns):
    with second_namespace() as other:
        before, before_other = snapshot(netns), snapshot(other)
        pairs = [dict(name=f"l{n}", peer=f"c{n}", peer_netns=other, addresses=[f"10.66.5{n}.1/24"],
                      peer_addresses=[f"10.66.5{n}.2/24"]) for n in range(3)]
        bad = pairs[:1] + [dict(name="l9", peer="c9", peer_netns="mpsocks-no-such-ns")] + pairs[1:]
        refused = run_module("veth", netns=netns, config=bad)
        assert refused.get("failed"), refused
        assert refused["msg"].startswith("config[1] (veth l9): peer_netns: "), refused
        assert_unchanged(before, netns)
        assert_unchanged(before_other, other)
        made = run_module("veth", netns=netns, config=pairs)
        assert made["changed"] and [r["changed"] for r in made["results"]] == [True] * 3
        assert len(made["diff"]) == 3 and addresses(other, "c2") == ["10.66.52.2/24"]
        again = run_module("veth", netns=netns, config=[r["veth"] for r in made["results"]])
        assert again["changed"] is False and again["diff"] == []
        gone = run_module("veth", netns=netns, state="absent", config=pairs)
        assert [r["changed"] for r in gone["results"]] == [True] * 3
        assert_unchanged(before, netns)
        assert_unchanged(before_other, other)


def test_forwarding_of_the_near_end(netns):
    with second_namespace() as other:
        args = dict(name="f0", peer="f0p", peer_netns=other, netns=netns, up=False)
        path = "net.ipv4.conf.%s.forwarding"
        predicted = run_item("veth", check=True, forwarding=True, **args)
        assert predicted["changed"] and predicted["veth"]["forwarding"] is True
        made = run_item("veth", forwarding=True, **args)
        assert made["changed"] and made["veth"] == predicted["veth"]
        assert sh("sysctl", "-n", path % "f0", netns=netns).strip() == "1"
        assert sh("sysctl", "-n", path % "f0p", netns=other).strip() == "0"  # the far end is not a router
        assert run_item("veth", forwarding=True, **args)["changed"] is False
        assert run_item("veth", **args)["changed"] is False  # left out: not managed
        off = run_item("veth", forwarding=False, **args)
        assert off["changed"] and off["diff"]["before"]["forwarding"] is True
        assert sh("sysctl", "-n", path % "f0", netns=netns).strip() == "0"
        assert run_item("veth", state="absent", **args)["changed"] is True


def test_overridden_deletes_only_mpsocks_veths_it_may(netns):
    """Overridden removes marked veths named in ``names`` that the config leaves out, and nothing else."""
    with second_namespace() as other:
        def pair(name):
            return dict(name=name, peer=f"{name}g", peer_netns=other, up=False)

        made = run_module("veth", netns=netns, config=[pair("m0"), pair("m1"), pair("m2")])
        assert made["changed"], made
        sh("ip", "link", "add", "m3", "type", "veth", "peer", "name", "m3p", netns=netns)  # a user's
        sh("ip", "tuntap", "add", "mode", "tap", "name", "m4", netns=netns)  # not a veth
        scope = ["m0", "m1", "m3", "m4", "m5"]
        before, before_other = snapshot(netns), snapshot(other)

        missing = run_module("veth", netns=netns, state="overridden", config=[pair("m0")])
        assert missing.get("failed") and missing["msg"].startswith("names: required"), missing
        predicted = run_module("veth", netns=netns, state="overridden", names=scope, config=[pair("m0")],
                               check=True)
        assert predicted["changed"] and [r["label"] for r in predicted["results"]] == ["veth m0", "veth m1"]
        assert [r["changed"] for r in predicted["results"]] == [False, True]
        assert_unchanged(before, netns)
        assert_unchanged(before_other, other)

        done = run_module("veth", netns=netns, state="overridden", names=scope, config=[pair("m0")])
        assert [r["changed"] for r in done["results"]] == [False, True], done
        assert links(netns) >= {"m0", "m2", "m3", "m4"} and "m1" not in links(netns)
        assert "m1g" not in links(other) and "m2g" in links(other)
        again = run_module("veth", netns=netns, state="overridden", names=scope, config=[pair("m0")])
        assert again["changed"] is False and len(again["results"]) == 1

        emptied = run_module("veth", netns=netns, state="overridden", names=scope, config=[])
        assert [r["label"] for r in emptied["results"]] == ["veth m0"] and emptied["changed"]
        assert links(netns) >= {"m2", "m3", "m4"} and not links(netns) & {"m0", "m1"}
        run_item("veth", netns=netns, state="absent", **pair("m2"))
