"""mpsocks.mptcp.interface: addresses, link state and MTU of links that exist, whoever made them."""

import json
import subprocess

from mpsocks_testlib import assert_unchanged, run_item, run_module, sh, snapshot, unique_name


def pair(netns, name):
    """A veth pair NAME/NAMEp made by hand (not by mpsocks), down, no IPv6 autoconfiguration.

    It was up once, so that its qdisc (attached at the first up) does not blur snapshots.
    """
    sh("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p", netns=netns)
    for end in (name, f"{name}p"):
        sh("ip", "link", "set", end, "addrgenmode", "none", netns=netns)
        sh("ip", "link", "set", end, "up", netns=netns)
        sh("ip", "link", "set", end, "down", netns=netns)


def shown(netns, name):
    """What iproute2 (not the module) says: (addresses, up, mtu)."""
    found = json.loads(sh("ip", "-j", "addr", "show", "dev", name, netns=netns))[0]
    addresses = sorted(f"{a['local']}/{a['prefixlen']}" for a in found["addr_info"]
                       if a.get("scope") != "link")
    return addresses, "UP" in found["flags"], found["mtu"]


def test_two_links_in_two_namespaces_the_module_contract(netns):
    """Check mode predicts and changes nothing, the run does it, again is a no-op, the result round-trips."""
    other = unique_name("mpsti")
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:
        pair(netns, "g0")
        pair(other, "g1")
        sh("ip", "addr", "add", "10.66.30.9/24", "dev", "g0", netns=netns)  # not listed: goes
        before = {ns: snapshot(ns) for ns in (netns, other)}
        config = [{"name": "g0", "addresses": ["10.66.30.2/24", "fd66:30::2/64"], "up": True, "mtu": 1400},
                  {"name": "g1", "addresses": ["10.66.31.2/24"], "up": True, "netns": other}]

        predicted = run_module("interface", check=True, inside=netns, config=config)
        assert [r["changed"] for r in predicted["results"]] == [True, True], predicted
        assert predicted["results"][0]["diff"]["before"]["addresses"] == ["10.66.30.9/24"]
        for ns in (netns, other):
            assert_unchanged(before[ns], ns)

        done = run_module("interface", inside=netns, config=config)
        assert not done.get("failed") and len(done["diff"]) == 2, done
        assert [r["interface"] for r in done["results"]] == [r["interface"] for r in predicted["results"]]
        g0 = {"name": "g0", "addresses": ["10.66.30.2/24", "fd66:30::2/64"], "up": True, "mtu": 1400,
              "netns": None}
        assert done["results"][0]["interface"] == g0
        assert shown(netns, "g0") == (["10.66.30.2/24", "fd66:30::2/64"], True, 1400)
        assert shown(other, "g1") == (["10.66.31.2/24"], True, 1500)
        assert "g1" not in sh("ip", "link", netns=netns)

        assert run_module("interface", check=True, inside=netns, config=config)["changed"] is False
        round_trip = run_module("interface", inside=netns, config=[r["interface"] for r in done["results"]])
        assert round_trip["changed"] is False, round_trip

        back = [{"name": "g0", "addresses": ["10.66.30.9/24"], "up": False, "mtu": 1500},
                {"name": "g1", "addresses": [], "up": False, "netns": other}]
        assert run_module("interface", inside=netns, config=back)["changed"] is True
        assert run_module("interface", inside=netns, config=back)["changed"] is False
        for ns in (netns, other):
            assert_unchanged(before[ns], ns)
    finally:
        subprocess.run(["ip", "netns", "del", other], check=False)


def test_options_left_out_are_not_managed_and_no_link_is_made_or_marked(netns):
    pair(netns, "h0")
    sh("ip", "addr", "add", "10.66.32.2/24", "dev", "h0", netns=netns)
    result = run_item("interface", name="h0", up=True, netns=netns)
    assert result["changed"] is True and result["interface"]["addresses"] == ["10.66.32.2/24"]
    assert shown(netns, "h0") == (["10.66.32.2/24"], True, 1500)
    assert run_item("interface", name="h0", netns=netns)["changed"] is False
    link = json.loads(sh("ip", "-j", "-d", "link", "show", "h0", netns=netns))[0]
    assert "ifalias" not in link, link  # configuring marks nothing


def test_bad_input_anywhere_changes_nothing(netns):
    pair(netns, "b0")
    pair(netns, "b1")
    before = snapshot(netns)
    good = {"name": "b0", "addresses": ["10.66.33.2/24"], "up": True}
    cases = [
        ({"name": "b9", "up": True}, "config[1] (interface b9): name: no interface 'b9' in netns"),
        ({"name": "b1", "mtu": 70000}, "config[1] (interface b1): mtu: 70000 is out of the range b1 takes"),
        ({"name": "b1", "mtu": 10}, "mtu: 10 is out of the range"),
        ({"name": "b1", "addresses": ["10.66.33.3"]}, "addresses: '10.66.33.3' needs a prefix length"),
        ({"name": "b1", "addresses": ["10.66.33.300/24"]}, "addresses: '10.66.33.300/24' is not a valid"),
        ({"name": "a-name-that-is-too-long"}, "name: interface name"),
    ]
    for bad, needle in cases:
        result = run_module("interface", netns=netns, config=[good, bad, dict(good, name="b1")])
        assert result.get("failed"), bad
        assert needle in result["msg"], result
        assert "\n" not in result["msg"] and "Traceback" not in result["msg"]
        assert_unchanged(before, netns)
    missing = run_item("interface", name="b0", netns="mpsocks-no-such-ns")
    assert missing["failed"] and "mpsocks-no-such-ns" in missing["msg"]
