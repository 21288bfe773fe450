"""mpsocks.mptcp.route (and sysctl) against real routes in namespaces the tests create.

The oracle is iproute2 and real packets: a client, a router and a server namespace
joined by veth pairs, and an ICMP echo (a raw socket: the machine has no ping) that
crosses the router only once the module's routes (set in all three namespaces by one
call) and net.ipv4.ip_forward are there.
"""

import contextlib
import json
import subprocess
import sys
import time

from mpsocks_testlib import assert_unchanged, run_item, run_module, sh, snapshot, unique_name

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
    """A veth pair between two namespaces, both ends addressed and up (carrier included)."""
    sh("ip", "link", "add", name_a, "netns", ns_a, "type", "veth", "peer", "name", name_b, "netns", ns_b)
    for ns, name, address in ((ns_a, name_a, address_a), (ns_b, name_b, address_b)):
        sh("ip", "link", "set", name, "addrgenmode", "none", netns=ns)
        sh("ip", "addr", "add", address, "dev", name, netns=ns)
        sh("ip", "link", "set", name, "up", netns=ns)
    for ns in (ns_a, ns_b):
        settle(ns)


def settle(netns):
    """Wait until NETNS's links have their carrier and its snapshot stops changing."""
    deadline = time.monotonic() + 10
    last = None
    while time.monotonic() < deadline:
        current = snapshot(netns)
        if current == last and "NO-CARRIER" not in current["links"]:
            return
        last = current
        time.sleep(0.1)
    raise AssertionError(f"namespace {netns} did not settle:\n{last['links']}")


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


def detailed(netns, *selector, family="-4"):
    """iproute2's full text of the routes SELECTOR lists (type, protocol, scope, metrics, next hops)."""
    return sh("ip", "-d", family, "route", "show", *selector, netns=netns)


def test_routes_and_forwarding_carry_an_echo_across_a_router(netns):
    router = netns
    with namespaces("mpstc", "mpsts") as (client, server):
        veth(client, "c0", "10.66.61.2/24", router, "r0", "10.66.61.1/24")
        veth(router, "r1", "10.66.62.1/24", server, "s0", "10.66.62.2/24")
        sh("ip", "addr", "add", "198.19.0.1/32", "dev", "lo", netns=server)
        assert echo(client, "198.19.0.1").startswith("error")  # no route yet: the client cannot send

        # One call for three namespaces. The client's route names only the gateway: the kernel
        # (and the prediction) pick c0.
        config = [dict(to="198.19.0.0/24", via="10.66.61.1", netns=client),
                  dict(to="198.19.0.0/24", via="10.66.62.2", dev="r1", netns=router),
                  dict(to="default", via="10.66.62.1", dev="s0", netns=server)]
        before = {ns: snapshot(ns) for ns in (client, router, server)}
        predicted = run_module("route", check=True, config=config)
        assert predicted["changed"] is True and [r["changed"] for r in predicted["results"]] == [True] * 3
        for ns, state in before.items():
            assert_unchanged(state, ns)
        done = run_module("route", config=config)
        assert done["changed"] is True and not done.get("failed"), done
        assert [r["route"] for r in done["results"]] == [r["route"] for r in predicted["results"]]
        assert done["results"][0]["route"] == {"to": "198.19.0.0/24", "via": "10.66.61.1", "dev": "c0",
                                               "metric": 0, "table": 254, "netns": client}
        assert done["results"][0]["label"] == f"route 198.19.0.0/24 metric 0 table main in netns {client}"
        assert [d["before"] for d in done["diff"]] == [{}, {}, {}]
        assert done["diff"][0]["after"]["routes"] == [
            {"type": "unicast", "protocol": 166, "scope": "universe", "via": "10.66.61.1", "dev": "c0"}]
        [kernel] = routes(client, "198.19.0.0/24")
        assert (kernel["gateway"], kernel["dev"], kernel.get("metric", 0), kernel["protocol"]) == (
            "10.66.61.1", "c0", 0, "166")
        [kernel] = routes(server, "default")
        assert (kernel["dst"], kernel["gateway"], kernel["dev"]) == ("default", "10.66.62.1", "s0")
        again = run_module("route", config=config)
        assert again["changed"] is False and again["diff"] == []

        # Routes everywhere, but a new namespace does not forward: the echo dies in the router.
        assert sh("cat", "/proc/sys/net/ipv4/ip_forward", netns=router).strip() == "0"
        assert echo(client, "198.19.0.1") == "no reply"

        forward = dict(name="net.ipv4.ip_forward", value="1", netns=router)
        predicted = run_item("sysctl", check=True, **forward)
        assert predicted["changed"] is True
        assert predicted["diff"]["before"]["value"] == "0" and predicted["diff"]["after"]["value"] == "1"
        assert sh("cat", "/proc/sys/net/ipv4/ip_forward", netns=router).strip() == "0"
        done = run_item("sysctl", **forward)
        assert done["changed"] is True and done["sysctl"] == predicted["sysctl"]
        assert sh("cat", "/proc/sys/net/ipv4/ip_forward", netns=router).strip() == "1"
        assert run_item("sysctl", **forward)["changed"] is False

        reply = echo(client, "198.19.0.1")
        print(f"echo through the router: {reply}")
        assert reply == "reply ttl=63"  # the server's 64, less the router's hop

        # Without the router's route the echo is lost again.
        gone = run_item("route", to="198.19.0.0/24", state="absent", netns=router)
        assert gone["changed"] is True and gone["route"] == {}
        assert routes(router, "198.19.0.0/24") == []
        assert echo(client, "198.19.0.1") != "reply ttl=63"


def test_identity_is_table_family_prefix_and_metric(netns):
    lan(netns)
    main_before = sh("ip", "route", "show", "table", "main", netns=netns)
    first = dict(to="198.19.0.0/24", via="10.66.51.1", dev="lan0", netns=netns)
    assert run_item("route", **first)["changed"]
    second = dict(to="198.19.0.0/24", via="10.66.52.1", metric=10, netns=netns)
    made = run_item("route", **second)
    assert made["changed"] and made["route"]["dev"] == "lan1"
    listed = sorted((r.get("metric", 0), r["gateway"], r["dev"]) for r in routes(netns, "198.19.0.0/24"))
    assert listed == [(0, "10.66.51.1", "lan0"), (10, "10.66.52.1", "lan1")]

    # Same identity, new gateway: replaced in place, the metric-10 route untouched.
    moved = dict(first, via="10.66.51.9")
    predicted = run_item("route", check=True, **moved)
    done = run_item("route", **moved)
    assert done["changed"] and done["route"] == predicted["route"]
    assert done["diff"]["before"]["routes"][0]["via"] == "10.66.51.1"
    assert done["diff"]["after"]["routes"][0]["via"] == "10.66.51.9"
    listed = sorted((r.get("metric", 0), r["gateway"], r["dev"]) for r in routes(netns, "198.19.0.0/24"))
    assert listed == [(0, "10.66.51.9", "lan0"), (10, "10.66.52.1", "lan1")]
    # dev left out: the route keeps the device it has.
    assert run_item("route", to="198.19.0.0/24", via="10.66.51.9", netns=netns)["changed"] is False

    # Gateway to device only: a link-scope route, like ip route add ... dev.
    onlink = run_item("route", to="198.19.0.0/24", dev="lan0", netns=netns)
    assert onlink["changed"] and onlink["route"]["via"] is None
    [kernel] = [r for r in routes(netns, "198.19.0.0/24") if r.get("metric", 0) == 0]
    assert "gateway" not in kernel and (kernel["dev"], kernel["scope"]) == ("lan0", "link")

    # Another table is another route; main is not touched.
    in_table = dict(to="198.19.0.0/24", via="10.66.52.1", dev="lan1", table=70001, netns=netns)
    done = run_item("route", **in_table)
    assert done["changed"] and done["route"]["table"] == 70001
    [kernel] = routes(netns, "table", "70001")
    assert (kernel["dst"], kernel["gateway"], kernel["dev"]) == ("198.19.0.0/24", "10.66.52.1", "lan1")
    assert run_item("route", **in_table)["changed"] is False
    assert len(routes(netns, "198.19.0.0/24")) == 2

    # absent deletes only the route with that identity, whatever its gateway.
    predicted = run_item("route", check=True, to="198.19.0.0/24", state="absent", netns=netns)
    assert predicted["changed"] and len(routes(netns, "198.19.0.0/24")) == 2
    gone = run_item("route", to="198.19.0.0/24", via="10.99.99.99", state="absent", netns=netns)
    assert gone["changed"] and gone["diff"]["before"]["routes"][0]["dev"] == "lan0"
    assert [(r["metric"], r["gateway"]) for r in routes(netns, "198.19.0.0/24")] == [(10, "10.66.52.1")]
    assert run_item("route", to="198.19.0.0/24", state="absent", netns=netns)["changed"] is False
    assert run_item("route", to="198.19.0.0/24", metric=10, state="absent", netns=netns)["changed"]
    assert run_item("route", to="198.19.0.0/24", table=70001, state="absent", netns=netns)["changed"]
    assert routes(netns, "table", "70001") == []
    assert sh("ip", "route", "show", "table", "main", netns=netns) == main_before


def test_blackhole_multipath_and_appended_routes_become_one_route(netns):
    lan(netns)
    sh("ip", "route", "add", "blackhole", "198.19.9.0/24", netns=netns)
    sh("ip", "route", "add", "198.19.8.0/24", "via", "10.66.51.3", netns=netns)
    sh("ip", "route", "append", "198.19.8.0/24", "via", "10.66.51.4", netns=netns)
    sh("ip", "route", "add", "198.19.7.0/24", "nexthop", "via", "10.66.51.5", "nexthop", "via", "10.66.52.6",
       netns=netns)
    expected_before = {
        "198.19.9.0/24": [{"type": "blackhole", "protocol": 3, "scope": "universe", "via": None,
                           "dev": None}],
        "198.19.8.0/24": [{"type": "unicast", "protocol": 3, "scope": "universe", "via": "10.66.51.3",
                           "dev": "lan0"},
                          {"type": "unicast", "protocol": 3, "scope": "universe", "via": "10.66.51.4",
                           "dev": "lan0"}],
        "198.19.7.0/24": [{"type": "unicast", "protocol": 3, "scope": "universe",
                           "nexthops": [{"via": "10.66.51.5", "dev": "lan0", "weight": 1},
                                        {"via": "10.66.52.6", "dev": "lan1", "weight": 1}]}],
    }
    for prefix, described in expected_before.items():
        args = dict(to=prefix, via="10.66.51.7", netns=netns)
        predicted = run_item("route", check=True, **args)
        assert predicted["changed"] and predicted["diff"]["before"]["routes"] == described
        done = run_item("route", **args)
        assert done["changed"] and done["route"] == predicted["route"], done
        kernel = routes(netns, prefix)
        found = [(r.get("type", "unicast"), r.get("gateway"), r.get("dev"), r["protocol"]) for r in kernel]
        assert found == [("unicast", "10.66.51.7", "lan0", "166")], kernel
        assert run_item("route", **args)["changed"] is False


def test_failed_change_puts_back_every_appended_route(netns):
    """Issue 7 #6: two appended routes, then a change through an unreachable gateway.

    The change fails; both routes must still be there, exactly as they were (the module
    used to read them as one route with no gateway and put nothing back).
    """
    sh("ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0p", netns=netns)
    for name in ("up0", "up0p"):
        sh("ip", "link", "set", name, "addrgenmode", "none", netns=netns)
        sh("ip", "link", "set", name, "up", netns=netns)
    sh("ip", "addr", "add", "10.66.51.2/24", "dev", "up0", netns=netns)
    sh("ip", "route", "append", "198.51.100.0/24", "via", "10.66.51.1", "dev", "up0", netns=netns)
    sh("ip", "route", "append", "198.51.100.0/24", "via", "10.66.51.3", "dev", "up0", netns=netns)
    shown = detailed(netns, "198.51.100.0/24")
    assert shown.count("\n") == 2, shown
    before = snapshot(netns)

    result = run_item("route", to="198.51.100.0/24", via="203.0.113.1", dev="up0", netns=netns)
    assert result["failed"] and "\n" not in result["msg"]
    assert "gateway 203.0.113.1 is not reachable through up0" in result["msg"], result["msg"]
    assert "putting the previous state back failed" not in result["msg"]
    assert detailed(netns, "198.51.100.0/24") == shown
    assert_unchanged(before, netns)

    # Everything read() describes comes back: protocol, source, metrics, next hops and their
    # weights, onlink, and a blackhole among them.
    lan(netns)
    sh("ip", "route", "append", "198.19.4.0/24", "via", "10.66.51.9", "dev", "lan0", "mtu", "1400",
       "src", "10.66.51.2", "proto", "static", netns=netns)
    sh("ip", "route", "append", "198.19.4.0/24", "nexthop", "via", "10.66.51.5", "weight", "2",
       "nexthop", "via", "10.66.52.6", "dev", "lan1", "onlink", netns=netns)
    sh("ip", "route", "append", "198.19.4.0/24", "via", "10.66.52.1", "dev", "lan1", "onlink", netns=netns)
    sh("ip", "route", "append", "blackhole", "198.19.4.0/24", netns=netns)
    shown = detailed(netns, "198.19.4.0/24")
    assert shown.count("unicast") == 3 and "blackhole" in shown and "mtu 1400" in shown, shown
    before = snapshot(netns)
    result = run_item("route", to="198.19.4.0/24", via="203.0.113.1", dev="lan0", netns=netns)
    assert result["failed"] and "is not reachable" in result["msg"], result["msg"]
    assert detailed(netns, "198.19.4.0/24") == shown
    assert_unchanged(before, netns)


def test_present_marks_its_route_and_touches_no_other_identity(netns):
    """Issue 7 #13 for routes: the named identity is replaced and marked, nothing else is touched."""
    lan(netns)
    # A user's routes: the identity the module is asked for, and others around it.
    sh("ip", "route", "add", "198.19.3.0/24", "via", "10.66.51.3", netns=netns)
    sh("ip", "route", "add", "198.19.3.0/24", "via", "10.66.52.3", "metric", "10", netns=netns)
    sh("ip", "route", "add", "198.19.3.0/24", "via", "10.66.52.3", "table", "6607", netns=netns)
    sh("ip", "route", "add", "198.19.3.0/25", "via", "10.66.51.3", netns=netns)
    others = [detailed(netns, "198.19.3.0/24", "metric", "10"), detailed(netns, "table", "6607"),
              detailed(netns, "198.19.3.0/25")]

    args = dict(to="198.19.3.0/24", via="10.66.51.4", netns=netns)
    predicted = run_item("route", check=True, **args)
    assert predicted["diff"]["before"]["routes"] == [
        {"type": "unicast", "protocol": 3, "scope": "universe", "via": "10.66.51.3", "dev": "lan0"}]
    done = run_item("route", **args)
    assert done["changed"] and done["route"] == predicted["route"]
    [kernel] = [r for r in routes(netns, "198.19.3.0/24") if r.get("metric", 0) == 0]
    assert (kernel["gateway"], kernel["protocol"]) == ("10.66.51.4", "166")
    assert run_item("route", **args)["changed"] is False

    # The same gateway without the mark is not the same route: it is marked on the next run.
    sh("ip", "route", "replace", "198.19.3.0/24", "via", "10.66.51.4", "proto", "boot", netns=netns)
    assert run_item("route", **args)["changed"] is True
    assert "proto 166" in detailed(netns, "198.19.3.0/24", "metric", "0")

    assert run_item("route", to="198.19.3.0/24", state="absent", netns=netns)["changed"]
    assert [detailed(netns, "198.19.3.0/24", "metric", "10"), detailed(netns, "table", "6607"),
            detailed(netns, "198.19.3.0/25")] == others
    assert [r.get("metric", 0) for r in routes(netns, "198.19.3.0/24")] == [10]


def _router_chain(names):
    """NAMES joined in a chain by veth pairs: names[i] 'next' 10.66.(70+i).1/24 - names[i+1] 'prev' .2."""
    for i, (left, right) in enumerate(zip(names, names[1:], strict=False)):
        veth(left, "next", f"10.66.{70 + i}.1/24", right, "prev", f"10.66.{70 + i}.2/24")


def _chain_config(names):
    """Three routes in each of NAMES: towards the servers, a default route back, and one in table 100."""
    config = []
    for i, name in enumerate(names):
        forward = ("next", f"10.66.{70 + i}.2") if i < len(names) - 1 else ("prev", f"10.66.{69 + i}.1")
        back = ("prev", f"10.66.{69 + i}.1") if i > 0 else ("next", f"10.66.{70 + i}.2")
        config += [
            {"netns": name, "to": "198.19.0.0/24", "via": forward[1], "dev": forward[0]},
            {"netns": name, "to": "default", "via": back[1], "dev": back[0], "metric": 100},
            {"netns": name, "to": "198.18.0.0/15", "dev": back[0], "table": 100},
        ]
    return config


def test_many_routes_across_namespaces_in_one_call():
    with namespaces(*["mpstr"] * 5) as names:
        _router_chain(names)
        config = _chain_config(names)
        before = {name: snapshot(name) for name in names}

        predicted = run_module("route", check=True, config=config)
        assert predicted["changed"] is True and len(predicted["results"]) == 15
        for name, state in before.items():
            assert_unchanged(state, name)

        done = run_module("route", config=config)
        assert done["changed"] is True and not done.get("failed"), done.get("msg")
        assert [r["route"] for r in done["results"]] == [r["route"] for r in predicted["results"]]
        assert len(done["diff"]) == 15
        for item, result in zip(config, done["results"], strict=True):
            table = str(item.get("table", "main"))
            [kernel] = [r for r in routes(item["netns"], "table", table)
                        if r["dst"] == item["to"] and r.get("metric", 0) == item.get("metric", 0)]
            assert (kernel.get("gateway"), kernel["dev"], kernel["protocol"]) == (
                item.get("via"), item["dev"], "166"), kernel
            assert result["route"]["netns"] == item["netns"]

        again = run_module("route", config=config)
        assert again["changed"] is False
        # What the module returns is its own input: fed back, it changes nothing.
        fed_back = run_module("route", config=[r["route"] for r in done["results"]])
        assert fed_back["changed"] is False and not fed_back.get("failed"), fed_back
        assert run_module("route", check=True, config=config)["changed"] is False

        gone = run_module("route", state="absent", config=[dict(item) for item in config])
        assert gone["changed"] is True and all(r["route"] == {} for r in gone["results"])
        for name, state in before.items():
            assert_unchanged(state, name)


def test_bad_item_in_the_middle_of_a_list_changes_nothing():
    with namespaces("mpstr", "mpstr") as names:
        _router_chain(names)
        before = {name: snapshot(name) for name in names}
        good = _chain_config(names)
        label = f"route 198.19.0.0/24 metric 0 table main in netns {names[1]}"
        item = f"config[3] ({label}):"
        cases = [
            (f"{item} route: dev 'nosuch0' does not exist", dict(good[3], dev="nosuch0")),
            (item.replace("/24", "/33") + " to:", dict(good[3], to="198.19.0.0/33")),
            (f"{item} dev:", dict(good[3], dev="next\n")),
            (f"{item} {label}: gateway 10.77.0.1 is not reachable: no directly connected network",
             {"netns": names[1], "to": "198.19.0.0/24", "via": "10.77.0.1"}),
            ("config[3] (route 198.19.0.0/24 metric 0 table main in netns mpsocks-no-such-ns):",
             dict(good[3], netns="mpsocks-no-such-ns")),
        ]
        for needle, bad in cases:
            for check in (True, False):
                result = run_module("route", check=check, config=good[:3] + [bad] + good[4:])
                assert result["failed"] and result["msg"].startswith(needle), (needle, result["msg"])
                assert "\n" not in result["msg"] and result["changed"] is False
        for name, state in before.items():
            assert_unchanged(state, name)


def test_ipv6_routes_and_the_kernels_default_metric(netns):
    lan(netns)
    args = dict(to="fd66:19::/64", via="fd66:51::1", netns=netns)
    predicted = run_item("route", check=True, **args)
    done = run_item("route", **args)
    assert done["changed"] and done["route"] == predicted["route"]
    assert done["route"] == {"to": "fd66:19::/64", "via": "fd66:51::1", "dev": "lan0", "metric": 1024,
                             "table": 254, "netns": netns}
    assert done["diff"]["after"]["family"] == "ipv6"
    [kernel] = routes(netns, "fd66:19::/64", family="-6")
    assert (kernel["gateway"], kernel["dev"], kernel["metric"], kernel["protocol"]) == (
        "fd66:51::1", "lan0", 1024, "166")
    # Metric 0 and 1024 name the same IPv6 route.
    assert run_item("route", **args)["changed"] is False
    assert run_item("route", metric=1024, **args)["changed"] is False

    default = dict(to="default", via="fe80::1", dev="lan0", table=100, netns=netns)
    done = run_item("route", **default)
    assert done["changed"] and done["diff"]["after"]["family"] == "ipv6"
    [kernel] = routes(netns, "table", "100", family="-6")
    assert (kernel["dst"], kernel["gateway"], kernel["dev"]) == ("default", "fe80::1", "lan0")
    assert [r for r in routes(netns, "table", "all") if r.get("table") == "100"] == []  # no IPv4 one
    assert run_item("route", **default)["changed"] is False

    # An IPv6 default route onto a device is returned as ::/0, which means IPv6 when fed back.
    onto_dev = run_item("route", to="::/0", dev="lan1", table=101, netns=netns)
    assert onto_dev["route"]["to"] == "::/0"
    assert run_item("route", **onto_dev["route"])["changed"] is False
    assert routes(netns, "table", "101", family="-6")[0]["dev"] == "lan1"

    assert run_item("route", to="fd66:19::/64", state="absent", netns=netns)["changed"]
    assert run_item("route", to="::/0", table=100, state="absent", netns=netns)["changed"]
    assert run_item("route", to="::/0", table=101, state="absent", netns=netns)["changed"]
    assert routes(netns, "fd66:19::/64", family="-6") == []
    assert routes(netns, "table", "100", family="-6") == []


def test_bad_input_and_refusals_fail_with_one_line_and_change_nothing(netns):
    lan(netns)
    before = snapshot(netns)
    ok = dict(to="198.19.0.0/24", via="10.66.51.1")
    label = f"route 198.19.0.0/24 metric 0 table main in netns {netns}"
    cases = [
        ("to:", dict(ok, to="198.19.0.0/33")),
        ("host bits", dict(ok, to="198.19.0.1/24")),
        ("to:", dict(ok, to="somewhere")),
        ("via:", dict(ok, via="10.66.51.300")),
        ("via:", dict(ok, to="fd66:19::/64")),  # IPv4 gateway for an IPv6 prefix
        ("via/dev", dict(to="198.19.0.0/24")),
        ("route: dev 'nosuch0' does not exist", dict(ok, dev="nosuch0")),
        ("dev:", dict(ok, dev="a-much-too-long-name")),
        ("dev: 'lan0\\n' is not a valid interface name", dict(ok, dev="lan0\n")),
        ("dev:", dict(to="fd66:19::/64", via="fe80::1")),  # link-local needs the interface
        ("table:", dict(ok, table=255)),
        ("metric:", dict(ok, metric=-1)),
        # The kernel refuses a gateway that no connected network holds (with and without dev).
        (f"setting {label}: gateway 10.77.0.1 is not reachable through lan0",
         dict(ok, via="10.77.0.1", dev="lan0")),
        (f"{label}: gateway 10.77.0.1 is not reachable", dict(ok, via="10.77.0.1")),
        (f"route fd66:19::/64 metric 1024 table 100 in netns {netns}: gateway fd66:77::1 is not reachable",
         dict(to="fd66:19::/64", via="fd66:77::1", dev="lan0", table=100)),
    ]
    for needle, args in cases:
        result = run_item("route", netns=netns, **args)
        assert result.get("failed"), args
        assert needle in result["msg"], result["msg"]
        assert "\n" not in result["msg"] and "Traceback" not in result["msg"], result["msg"]
    assert_unchanged(before, netns)


def test_missing_namespace_is_a_clear_error():
    result = run_item("route", to="198.19.0.0/24", dev="lo", netns="mpsocks-no-such-ns")
    assert result["failed"] and "mpsocks-no-such-ns" in result["msg"]
