"""mpsocks.mptcp.policy_route against real rules and tables in a fresh namespace."""

import json

from mpsocks_testlib import assert_unchanged, run_module, sh, snapshot


def kernel_view(netns, table):
    """Rules and routes of TABLE as iproute2 (not the module) reports them."""
    rules = json.loads(sh("ip", "-j", "rule", "show", netns=netns))
    rules = [r for r in rules if r.get("table") == str(table)]
    routes = json.loads(sh("ip", "-j", "route", "show", "table", str(table), netns=netns))
    return rules, routes


def test_iif_rule_with_auto_gateway(netns, uplinks):
    before = snapshot(netns)
    main_before = sh("ip", "route", "show", "table", "main", netns=netns)
    args = dict(table=6607, iif="mptcp1", routes=[{"via": "auto", "dev": "up1"}], netns=netns)

    predicted = run_module("policy_route", check=True, **args)
    assert predicted["changed"] is True
    assert_unchanged(before, netns)
    done = run_module("policy_route", **args)
    assert done["changed"] is True and done["policy_route"] == predicted["policy_route"]
    assert done["policy_route"] == {"table": 6607, "rules": [{"priority": 6607, "iif": "mptcp1"}],
                                    "routes": [{"to": "default", "via": "10.199.1.1", "dev": "up1"}]}
    rules, routes = kernel_view(netns, 6607)
    assert [(r["priority"], r["iif"]) for r in rules] == [(6607, "mptcp1")]
    assert [(r["dst"], r["gateway"], r["dev"]) for r in routes] == [("default", "10.199.1.1", "up1")]
    assert sh("ip", "route", "show", "table", "main", netns=netns) == main_before

    assert run_module("policy_route", **args)["changed"] is False
    assert run_module("policy_route", check=True, table=6607, state="absent", netns=netns)["changed"]
    removed = run_module("policy_route", table=6607, state="absent", netns=netns)
    assert removed["changed"] is True and removed["policy_route"] == {}
    assert run_module("policy_route", table=6607, state="absent", netns=netns)["changed"] is False
    assert_unchanged(before, netns)


def test_source_rule_explicit_gateway_and_update(netns, uplinks):
    first = dict(table=70000, priority=6610, source="10.66.8.0/24",
                 routes=[{"via": "10.199.0.1", "dev": "up0"}, {"to": "10.66.8.0/24", "dev": "up0"}],
                 netns=netns)
    assert run_module("policy_route", **first)["changed"]
    rules, routes = kernel_view(netns, 70000)
    assert [(r["priority"], r["src"], r["srclen"]) for r in rules] == [(6610, "10.66.8.0", 24)]
    assert sorted(r["dst"] for r in routes) == ["10.66.8.0/24", "default"]

    moved = dict(first, routes=[{"via": "auto", "dev": "up1"}])
    predicted = run_module("policy_route", check=True, **moved)
    result = run_module("policy_route", **moved)
    assert result["changed"] and result["policy_route"] == predicted["policy_route"]
    assert result["diff"]["before"]["routes"] != result["diff"]["after"]["routes"]
    _, routes = kernel_view(netns, 70000)
    assert [(r["dst"], r["dev"]) for r in routes] == [("default", "up1")]
    run_module("policy_route", table=70000, state="absent", netns=netns)
    assert kernel_view(netns, 70000) == ([], [])


def test_bad_input_fails_with_one_line_and_changes_nothing(netns, uplinks):
    sh("ip", "link", "add", "nogw", "type", "veth", "peer", "name", "nogwp", netns=netns)
    before = snapshot(netns)
    route = [{"via": "auto", "dev": "up0"}]
    cases = [
        ("table", dict(table=4294967296, iif="mptcp0", routes=route)),
        ("table", dict(table=254, iif="mptcp0", routes=route)),
        ("priority", dict(table=40000, iif="mptcp0", routes=route)),
        ("iif", dict(table=6606, iif="an-interface-name-too-long", routes=route)),
        ("source", dict(table=6606, source="10.66.6.0/33", routes=route)),
        ("via", dict(table=6606, iif="mptcp0", routes=[{"via": "10.199.0.256", "dev": "up0"}])),
        ("does not exist", dict(table=6606, iif="mptcp0", routes=[{"via": "auto", "dev": "wlp9s9"}])),
        ("no default route", dict(table=6606, iif="mptcp0", routes=[{"via": "auto", "dev": "nogw"}])),
    ]
    for needle, args in cases:
        result = run_module("policy_route", netns=netns, **args)
        assert result.get("failed"), args
        assert needle in result["msg"] and "\n" not in result["msg"], result["msg"]
    assert_unchanged(before, netns)


def test_destination_alone_then_with_source(netns, uplinks):
    before = snapshot(netns)
    args = dict(table=6620, destination="198.19.0.0/24", routes=[{"via": "auto", "dev": "up1"}], netns=netns)
    predicted = run_module("policy_route", check=True, **args)
    assert predicted["changed"] is True
    assert_unchanged(before, netns)
    done = run_module("policy_route", **args)
    assert done["changed"] is True and done["policy_route"] == predicted["policy_route"]
    assert done["policy_route"]["rules"] == [{"priority": 6620, "to": "198.19.0.0/24"}]
    rules, routes = kernel_view(netns, 6620)
    assert [(r["priority"], r["src"], r["dst"], r["dstlen"]) for r in rules] == [
        (6620, "all", "198.19.0.0", 24)]
    assert [(r["dst"], r["gateway"], r["dev"]) for r in routes] == [("default", "10.199.1.1", "up1")]
    # The kernel now sends that destination (only) through up1; the rest keeps the main table's up0.
    assert "via 10.199.1.1 dev up1" in sh("ip", "route", "get", "198.19.0.9", netns=netns)
    assert "via 10.199.0.1 dev up0" in sh("ip", "route", "get", "10.66.9.9", netns=netns)
    assert run_module("policy_route", **args)["changed"] is False

    both = dict(args, source="10.199.1.2/32")
    predicted = run_module("policy_route", check=True, **both)
    done = run_module("policy_route", **both)
    assert done["changed"] is True and done["policy_route"] == predicted["policy_route"]
    assert done["diff"]["before"]["rules"] == [{"priority": 6620, "to": "198.19.0.0/24"}]
    assert done["policy_route"]["rules"] == [
        {"priority": 6620, "from": "10.199.1.2/32", "to": "198.19.0.0/24"}]
    rules, _ = kernel_view(netns, 6620)
    assert [(r["src"], r["dst"]) for r in rules] == [("10.199.1.2", "198.19.0.0")]
    assert run_module("policy_route", **both)["changed"] is False

    removed = run_module("policy_route", table=6620, state="absent", netns=netns)
    assert removed["changed"] is True and kernel_view(netns, 6620) == ([], [])
    assert_unchanged(before, netns)


def test_destination_with_iif_and_ipv6_destination(netns, uplinks):
    with_iif = dict(table=6621, iif="mptcp1", destination="198.19.0.0/24",
                    routes=[{"via": "10.199.0.1", "dev": "up0"}], netns=netns)
    done = run_module("policy_route", **with_iif)
    assert done["changed"] is True
    assert done["policy_route"]["rules"] == [{"priority": 6621, "iif": "mptcp1", "to": "198.19.0.0/24"}]
    rules, _ = kernel_view(netns, 6621)
    assert [(r["iif"], r["dst"], r["dstlen"]) for r in rules] == [("mptcp1", "198.19.0.0", 24)]
    assert run_module("policy_route", **with_iif)["changed"] is False
    # Dropping the destination from the selector is a change of the rule.
    assert run_module("policy_route", **dict(with_iif, destination=None))["policy_route"]["rules"] == [
        {"priority": 6621, "iif": "mptcp1"}]

    sh("ip", "-6", "addr", "add", "fd66:99::2/64", "dev", "up0", "nodad", netns=netns)
    ipv6 = dict(table=6622, destination="fd66:19::/64", routes=[{"to": "fd66:19::/64", "via": "fd66:99::1",
                                                                 "dev": "up0"}], netns=netns)
    done = run_module("policy_route", **ipv6)
    assert done["changed"] is True
    assert done["policy_route"]["rules"] == [{"priority": 6622, "to": "fd66:19::/64"}]
    rules = [r for r in json.loads(sh("ip", "-j", "-6", "rule", "show", netns=netns)) if r["table"] == "6622"]
    assert [(r["dst"], r["dstlen"]) for r in rules] == [("fd66:19::", 64)]
    assert run_module("policy_route", **ipv6)["changed"] is False
    for table in (6621, 6622):
        assert run_module("policy_route", table=table, state="absent", netns=netns)["changed"] is True
    assert kernel_view(netns, 6621)[0] == []
    rules = json.loads(sh("ip", "-j", "-6", "rule", "show", netns=netns))
    assert [r for r in rules if r["table"] == "6622"] == []
    assert "6622" not in sh("ip", "-6", "route", "show", "table", "all", netns=netns)


def test_destination_bad_input_fails_with_one_line(netns, uplinks):
    before = snapshot(netns)
    route = [{"via": "auto", "dev": "up0"}]
    cases = [
        ("destination", dict(table=6623, destination="198.19.0.0/33", routes=route)),
        ("destination", dict(table=6623, destination="fd66:19::/64", source="10.66.8.0/24", routes=route)),
        ("iif/source/destination", dict(table=6623, routes=route)),
    ]
    for needle, args in cases:
        result = run_module("policy_route", netns=netns, **args)
        assert result.get("failed"), args
        assert needle in result["msg"] and "\n" not in result["msg"], result["msg"]
    assert_unchanged(before, netns)
