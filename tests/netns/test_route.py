"""mpsocks.mptcp.route (and sysctl) against real routes in namespaces the tests create.

The oracle is iproute2 and real packets: a client, a router and a server namespace
joined by veth pairs, and an ICMP echo (a raw socket: the machine has no ping) that
crosses the router only once the module's routes and net.ipv4.ip_forward are there.
"""

import contextlib
import json
import subprocess
import sys

from mpsocks_testlib import assert_unchanged, run_module, sh, snapshot, unique_name

ECHO = r"""
import os, socket, struct, sys, time
dst = sys.argv[1]
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
ident = os.getpid() & 0xFFFF
body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"mpsocks-route-test"
packet = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
sock.settimeout(0.3)
deadline = time.time() + 1.5
try:
    sock.sendto(packet, (dst, 0))
    while time.time() < deadline:
        try:
            data, peer = sock.recvfrom(2048)
        except socket.timeout:
            continue
        header = (data[0] & 0x0F) * 4
        kind, _, _, got = struct.unpack("!BBHH", data[header:header + 6])
        if kind == 0 and got == ident and peer[0] == dst:
            print("reply ttl=%d" % data[8])
            sys.exit(0)
    print("no reply")
except OSError as exc:
    print("error: %s" % exc.strerror)
sys.exit(1)
"""


def echo(netns, address):
    """Send one ICMP echo from NETNS to ADDRESS; 'reply ttl=N', 'no reply' or 'error: ...'."""
    proc = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", ECHO, address],
                          capture_output=True, text=True, timeout=20)
    return proc.stdout.strip() or proc.stderr.strip()


def routes(netns, *selector, family="-4"):
    """Routes as iproute2 (not the module) lists them."""
    return json.loads(sh("ip", "-j", family, "route", "show", *selector, netns=netns))


def veth(ns_a, name_a, address_a, ns_b, name_b, address_b):
    """A veth pair between two namespaces, both ends addressed and up."""
    sh("ip", "link", "add", name_a, "netns", ns_a, "type", "veth", "peer", "name", name_b, "netns", ns_b)
    for ns, name, address in ((ns_a, name_a, address_a), (ns_b, name_b, address_b)):
        sh("ip", "link", "set", name, "addrgenmode", "none", netns=ns)
        sh("ip", "addr", "add", address, "dev", name, netns=ns)
        sh("ip", "link", "set", name, "up", netns=ns)


@contextlib.contextmanager
def namespaces(*prefixes):
    """Extra namespaces (lo up), always deleted."""
    names = [unique_name(prefix) for prefix in prefixes]
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
            sh("ip", "link", "set", "lo", "up", netns=name)
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False)


def lan(netns):
    """Two veth pairs inside NETNS: lan0 10.66.51.2/24 and lan1 10.66.52.2/24, plus IPv6 on lan0."""
    for n in (0, 1):
        sh("ip", "link", "add", f"lan{n}", "type", "veth", "peer", "name", f"lan{n}p", netns=netns)
        for name in (f"lan{n}", f"lan{n}p"):
            sh("ip", "link", "set", name, "addrgenmode", "none", netns=netns)
            sh("ip", "link", "set", name, "up", netns=netns)
        sh("ip", "addr", "add", f"10.66.5{n + 1}.2/24", "dev", f"lan{n}", netns=netns)
    sh("ip", "addr", "add", "fd66:51::2/64", "dev", "lan0", "nodad", netns=netns)


def test_routes_and_forwarding_carry_an_echo_across_a_router(netns):
    router = netns
    with namespaces("mpstc", "mpsts") as (client, server):
        veth(client, "c0", "10.66.61.2/24", router, "r0", "10.66.61.1/24")
        veth(router, "r1", "10.66.62.1/24", server, "s0", "10.66.62.2/24")
        sh("ip", "addr", "add", "198.19.0.1/32", "dev", "lo", netns=server)
        assert echo(client, "198.19.0.1").startswith("error")  # no route yet: the client cannot send

        # The client's route names only the gateway: the kernel (and the prediction) pick c0.
        client_route = dict(to="198.19.0.0/24", via="10.66.61.1", netns=client)
        before = snapshot(client)
        predicted = run_module("route", check=True, **client_route)
        assert predicted["changed"] is True
        assert_unchanged(before, client)
        done = run_module("route", **client_route)
        assert done["changed"] is True and done["route"] == predicted["route"]
        assert done["route"] == {"table": 254, "family": "ipv4", "to": "198.19.0.0/24", "metric": 0,
                                 "via": "10.66.61.1", "dev": "c0"}
        assert done["diff"]["before"] == {} and done["diff"]["after"] == done["route"]
        [kernel] = routes(client, "198.19.0.0/24")
        assert (kernel["gateway"], kernel["dev"], kernel.get("metric", 0)) == ("10.66.61.1", "c0", 0)
        assert run_module("route", **client_route)["changed"] is False

        assert run_module("route", to="198.19.0.0/24", via="10.66.62.2", dev="r1", netns=router)["changed"]
        assert run_module("route", to="default", via="10.66.62.1", dev="s0", netns=server)["changed"]
        [kernel] = routes(server, "default")
        assert (kernel["dst"], kernel["gateway"], kernel["dev"]) == ("default", "10.66.62.1", "s0")

        # Routes everywhere, but a new namespace does not forward: the echo dies in the router.
        assert sh("cat", "/proc/sys/net/ipv4/ip_forward", netns=router).strip() == "0"
        assert echo(client, "198.19.0.1") == "no reply"

        forward = dict(name="net.ipv4.ip_forward", value="1", netns=router)
        predicted = run_module("sysctl", check=True, **forward)
        assert predicted["changed"] is True
        assert predicted["diff"]["before"]["value"] == "0" and predicted["diff"]["after"]["value"] == "1"
        assert sh("cat", "/proc/sys/net/ipv4/ip_forward", netns=router).strip() == "0"
        done = run_module("sysctl", **forward)
        assert done["changed"] is True and done["sysctl"] == predicted["sysctl"]
        assert sh("cat", "/proc/sys/net/ipv4/ip_forward", netns=router).strip() == "1"
        assert run_module("sysctl", **forward)["changed"] is False

        reply = echo(client, "198.19.0.1")
        print(f"echo through the router: {reply}")
        assert reply == "reply ttl=63"  # the server's 64, less the router's hop

        # Without the router's route the echo is lost again.
        gone = run_module("route", to="198.19.0.0/24", state="absent", netns=router)
        assert gone["changed"] is True and gone["route"] == {}
        assert routes(router, "198.19.0.0/24") == []
        assert echo(client, "198.19.0.1") != "reply ttl=63"


def test_identity_is_table_family_prefix_and_metric(netns):
    lan(netns)
    main_before = sh("ip", "route", "show", "table", "main", netns=netns)
    first = dict(to="198.19.0.0/24", via="10.66.51.1", dev="lan0", netns=netns)
    assert run_module("route", **first)["changed"]
    second = dict(to="198.19.0.0/24", via="10.66.52.1", metric=10, netns=netns)
    made = run_module("route", **second)
    assert made["changed"] and made["route"]["dev"] == "lan1"
    listed = sorted((r.get("metric", 0), r["gateway"], r["dev"]) for r in routes(netns, "198.19.0.0/24"))
    assert listed == [(0, "10.66.51.1", "lan0"), (10, "10.66.52.1", "lan1")]

    # Same identity, new gateway: replaced in place, the metric-10 route untouched.
    moved = dict(first, via="10.66.51.9")
    predicted = run_module("route", check=True, **moved)
    done = run_module("route", **moved)
    assert done["changed"] and done["route"] == predicted["route"]
    assert done["diff"]["before"]["via"] == "10.66.51.1" and done["diff"]["after"]["via"] == "10.66.51.9"
    listed = sorted((r.get("metric", 0), r["gateway"], r["dev"]) for r in routes(netns, "198.19.0.0/24"))
    assert listed == [(0, "10.66.51.9", "lan0"), (10, "10.66.52.1", "lan1")]
    # dev left out: the route keeps the device it has.
    assert run_module("route", to="198.19.0.0/24", via="10.66.51.9", netns=netns)["changed"] is False

    # Gateway to device only: a link-scope route, like ip route add ... dev.
    onlink = run_module("route", to="198.19.0.0/24", dev="lan0", netns=netns)
    assert onlink["changed"] and onlink["route"]["via"] is None
    [kernel] = [r for r in routes(netns, "198.19.0.0/24") if r.get("metric", 0) == 0]
    assert "gateway" not in kernel and (kernel["dev"], kernel["scope"]) == ("lan0", "link")

    # Another table is another route; main is not touched.
    in_table = dict(to="198.19.0.0/24", via="10.66.52.1", dev="lan1", table=70001, netns=netns)
    done = run_module("route", **in_table)
    assert done["changed"] and done["route"]["table"] == 70001
    [kernel] = routes(netns, "table", "70001")
    assert (kernel["dst"], kernel["gateway"], kernel["dev"]) == ("198.19.0.0/24", "10.66.52.1", "lan1")
    assert run_module("route", **in_table)["changed"] is False
    assert len(routes(netns, "198.19.0.0/24")) == 2

    # absent deletes only the route with that identity, whatever its gateway.
    predicted = run_module("route", check=True, to="198.19.0.0/24", state="absent", netns=netns)
    assert predicted["changed"] and len(routes(netns, "198.19.0.0/24")) == 2
    gone = run_module("route", to="198.19.0.0/24", via="10.99.99.99", state="absent", netns=netns)
    assert gone["changed"] and gone["diff"]["before"]["dev"] == "lan0"
    assert [(r["metric"], r["gateway"]) for r in routes(netns, "198.19.0.0/24")] == [(10, "10.66.52.1")]
    assert run_module("route", to="198.19.0.0/24", state="absent", netns=netns)["changed"] is False
    assert run_module("route", to="198.19.0.0/24", metric=10, state="absent", netns=netns)["changed"]
    assert run_module("route", to="198.19.0.0/24", table=70001, state="absent", netns=netns)["changed"]
    assert routes(netns, "table", "70001") == []
    assert sh("ip", "route", "show", "table", "main", netns=netns) == main_before


def test_blackhole_multipath_and_appended_routes_become_one_route(netns):
    lan(netns)
    sh("ip", "route", "add", "blackhole", "198.19.9.0/24", netns=netns)
    sh("ip", "route", "add", "198.19.8.0/24", "via", "10.66.51.3", netns=netns)
    sh("ip", "route", "append", "198.19.8.0/24", "via", "10.66.51.4", netns=netns)
    sh("ip", "route", "add", "198.19.7.0/24", "nexthop", "via", "10.66.51.5", "nexthop", "via", "10.66.52.6",
       netns=netns)
    for prefix in ("198.19.9.0/24", "198.19.8.0/24", "198.19.7.0/24"):
        args = dict(to=prefix, via="10.66.51.7", netns=netns)
        predicted = run_module("route", check=True, **args)
        assert predicted["changed"] and predicted["diff"]["before"]["via"] is None
        done = run_module("route", **args)
        assert done["changed"] and done["route"] == predicted["route"], done
        kernel = routes(netns, prefix)
        assert [(r.get("type", "unicast"), r.get("gateway"), r.get("dev")) for r in kernel] == [
            ("unicast", "10.66.51.7", "lan0")], kernel
        assert run_module("route", **args)["changed"] is False


def test_ipv6_routes_and_the_kernels_default_metric(netns):
    lan(netns)
    args = dict(to="fd66:19::/64", via="fd66:51::1", netns=netns)
    predicted = run_module("route", check=True, **args)
    done = run_module("route", **args)
    assert done["changed"] and done["route"] == predicted["route"]
    assert done["route"] == {"table": 254, "family": "ipv6", "to": "fd66:19::/64", "metric": 1024,
                             "via": "fd66:51::1", "dev": "lan0"}
    [kernel] = routes(netns, "fd66:19::/64", family="-6")
    assert (kernel["gateway"], kernel["dev"], kernel["metric"]) == ("fd66:51::1", "lan0", 1024)
    # Metric 0 and 1024 name the same IPv6 route.
    assert run_module("route", **args)["changed"] is False
    assert run_module("route", metric=1024, **args)["changed"] is False

    default = dict(to="default", via="fe80::1", dev="lan0", table=100, netns=netns)
    done = run_module("route", **default)
    assert done["changed"] and done["route"]["family"] == "ipv6"
    [kernel] = routes(netns, "table", "100", family="-6")
    assert (kernel["dst"], kernel["gateway"], kernel["dev"]) == ("default", "fe80::1", "lan0")
    assert [r for r in routes(netns, "table", "all") if r.get("table") == "100"] == []  # no IPv4 one
    assert run_module("route", **default)["changed"] is False

    assert run_module("route", to="fd66:19::/64", state="absent", netns=netns)["changed"]
    assert run_module("route", to="::/0", table=100, state="absent", netns=netns)["changed"]
    assert routes(netns, "fd66:19::/64", family="-6") == []
    assert routes(netns, "table", "100", family="-6") == []


def test_bad_input_and_refusals_fail_with_one_line_and_change_nothing(netns):
    lan(netns)
    before = snapshot(netns)
    ok = dict(to="198.19.0.0/24", via="10.66.51.1")
    cases = [
        ("to:", dict(ok, to="198.19.0.0/33")),
        ("host bits", dict(ok, to="198.19.0.1/24")),
        ("to:", dict(ok, to="somewhere")),
        ("via:", dict(ok, via="10.66.51.300")),
        ("via:", dict(ok, to="fd66:19::/64")),  # IPv4 gateway for an IPv6 prefix
        ("via/dev", dict(to="198.19.0.0/24")),
        ("route: dev 'nosuch0' does not exist", dict(ok, dev="nosuch0")),
        ("dev:", dict(ok, dev="a-much-too-long-name")),
        ("dev:", dict(to="fd66:19::/64", via="fe80::1")),  # link-local needs the interface
        ("table:", dict(ok, table=255)),
        ("table:", dict(ok, table=0)),
        ("metric:", dict(ok, metric=-1)),
        # The kernel refuses a gateway that no connected network holds (with and without dev).
        ("route 198.19.0.0/24 metric 0 table main: gateway 10.77.0.1 is not reachable through lan0",
         dict(ok, via="10.77.0.1", dev="lan0")),
        ("route 198.19.0.0/24 metric 0 table main: gateway 10.77.0.1 is not reachable",
         dict(ok, via="10.77.0.1")),
        ("route fd66:19::/64 metric 1024 table 100: gateway fd66:77::1 is not reachable",
         dict(to="fd66:19::/64", via="fd66:77::1", dev="lan0", table=100)),
    ]
    for needle, args in cases:
        result = run_module("route", netns=netns, **args)
        assert result.get("failed"), args
        assert needle in result["msg"], result["msg"]
        assert "\n" not in result["msg"] and "Traceback" not in result["msg"], result["msg"]
    assert_unchanged(before, netns)


def test_missing_namespace_is_a_clear_error():
    result = run_module("route", to="198.19.0.0/24", dev="lo", netns="mpsocks-no-such-ns")
    assert result["failed"] and "mpsocks-no-such-ns" in result["msg"]
