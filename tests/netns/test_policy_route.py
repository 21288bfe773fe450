"""mpsocks.mptcp.policy_route against real rules and tables in fresh namespaces."""

import json
import subprocess

from mpsocks_testlib import (
    assert_unchanged,
    delete_uplinks,
    make_uplinks,
    run_item,
    run_module,
    sh,
    snapshot,
    unique_name,
)


def kernel_view(netns, table, family="-4"):
    """Rules and routes of TABLE as iproute2 (not the module) reports them."""
    rules = json.loads(sh("ip", "-j", "-d", family, "rule", "show", netns=netns))
    rules = [r for r in rules if r.get("table") == str(table)]
    routes = json.loads(sh("ip", "-j", "-d", family, "route", "show", "table", "all", netns=netns))
    routes = [r for r in routes if r.get("table") == str(table)]
    return rules, routes


def rule_lines(netns, table):
    """`ip rule` lines (both families) of rules pointing at TABLE, as text."""
    text = sh("ip", "rule", netns=netns) + sh("ip", "-6", "rule", netns=netns)
    return [line for line in text.splitlines() if f"lookup {table} " in line + " "]


def route_lines(netns, table):
    """`ip route` lines (both families) of TABLE, as text."""
    return [line for line in (sh("ip", "route", "show", "table", "all", netns=netns)
                              + sh("ip", "-6", "route", "show", "table", "all", netns=netns)).splitlines()
            if f"table {table} " in line or line.endswith(f"table {table}")]


def test_iif_rule_with_auto_gateway(netns, uplinks):
    before = snapshot(netns)
    main_before = sh("ip", "route", "show", "table", "main", netns=netns)
    args = dict(table=6607, iif="mptcp1", routes=[{"via": "auto", "dev": "up1"}], netns=netns)

    predicted = run_item("policy_route", check=True, **args)
    assert predicted["changed"] is True
    assert_unchanged(before, netns)
    done = run_item("policy_route", **args)
    assert done["changed"] is True and done["policy_route"] == predicted["policy_route"]
    assert done["policy_route"] == {"table": 6607, "priority": 6607, "iif": "mptcp1", "source": None,
                                    "destination": None, "netns": netns,
                                    "routes": [{"to": "default", "via": "10.199.1.1", "dev": "up1"}]}
    assert done["diff"]["after"] == {
        "table": 6607, "rules": [{"family": "ipv4", "priority": 6607, "iif": "mptcp1"}],
        "routes": [{"family": "ipv4", "to": "default", "via": "10.199.1.1", "dev": "up1"}]}
    rules, routes = kernel_view(netns, 6607)
    assert [(r["priority"], r["iif"], r["protocol"]) for r in rules] == [(6607, "mptcp1", "166")]
    assert [(r["dst"], r["gateway"], r["dev"], r["protocol"]) for r in routes] == [
        ("default", "10.199.1.1", "up1", "166")]
    assert sh("ip", "route", "show", "table", "main", netns=netns) == main_before

    assert run_item("policy_route", **args)["changed"] is False
    # The result is the module's own input: fed back, it changes nothing.
    assert run_item("policy_route", **done["policy_route"])["changed"] is False
    assert run_item("policy_route", check=True, table=6607, state="absent", netns=netns)["changed"]
    removed = run_item("policy_route", table=6607, state="absent", netns=netns)
    assert removed["changed"] is True and removed["policy_route"] == {}
    assert run_item("policy_route", table=6607, state="absent", netns=netns)["changed"] is False
    assert_unchanged(before, netns)


def test_source_rule_explicit_gateway_and_update(netns, uplinks):
    first = dict(table=70000, priority=6610, source="10.66.8.0/24",
                 routes=[{"via": "10.199.0.1", "dev": "up0"}, {"to": "10.66.8.0/24", "dev": "up0"}],
                 netns=netns)
    assert run_item("policy_route", **first)["changed"]
    rules, routes = kernel_view(netns, 70000)
    assert [(r["priority"], r["src"], r["srclen"]) for r in rules] == [(6610, "10.66.8.0", 24)]
    assert sorted(r["dst"] for r in routes) == ["10.66.8.0/24", "default"]

    moved = dict(first, routes=[{"via": "auto", "dev": "up1"}])
    predicted = run_item("policy_route", check=True, **moved)
    result = run_item("policy_route", **moved)
    assert result["changed"] and result["policy_route"] == predicted["policy_route"]
    assert result["diff"]["before"]["routes"] != result["diff"]["after"]["routes"]
    _, routes = kernel_view(netns, 70000)
    assert [(r["dst"], r["dev"]) for r in routes] == [("default", "up1")]
    run_item("policy_route", table=70000, state="absent", netns=netns)
    assert kernel_view(netns, 70000) == ([], [])


def test_ipv6_policy_gets_an_ipv6_default_route(netns, uplinks):
    """Issue 7 #9: an IPv6 selector put ``default dev up0`` in the IPv4 table and passed its read-back."""
    args = dict(table=101, source="fd00:1::/64", routes=[{"dev": "up0"}], netns=netns)
    predicted = run_item("policy_route", check=True, **args)
    done = run_item("policy_route", **args)
    assert done["changed"] is True and done["policy_route"] == predicted["policy_route"]
    assert done["diff"]["after"]["routes"] == [{"family": "ipv6", "to": "default", "via": None, "dev": "up0"}]
    assert kernel_view(netns, 101, "-4") == ([], [])
    rules, routes = kernel_view(netns, 101, "-6")
    assert [(r["src"], r["srclen"], r["protocol"]) for r in rules] == [("fd00:1::", 64, "166")]
    assert [(r["dst"], r["dev"], r["protocol"]) for r in routes] == [("default", "up0", "166")]
    assert run_item("policy_route", **args)["changed"] is False
    assert run_item("policy_route", **done["policy_route"])["changed"] is False

    # The family is part of what is read: a marked IPv4 default in the same table is not the IPv6 one.
    sh("ip", "route", "add", "default", "dev", "up0", "table", "101", "proto", "166", netns=netns)
    fixed = run_item("policy_route", **args)
    assert fixed["changed"] is True
    assert {"family": "ipv4", "to": "default", "via": None, "dev": "up0"} in fixed["diff"]["before"]["routes"]
    assert kernel_view(netns, 101, "-4") == ([], [])

    # A route of the other family than the selector's is refused before anything changes.
    before = snapshot(netns)
    for route, option in (({"to": "198.19.0.0/24", "dev": "up0"}, "routes[0].to"),
                          ({"via": "10.199.0.1", "dev": "up0"}, "routes[0].via")):
        refused = run_item("policy_route", **dict(args, routes=[route]))
        assert refused["failed"] and refused["msg"].startswith(f"{option}: "), refused["msg"]
        assert "is IPv4 but the rule selects IPv6 traffic (from fd00:1::/64)" in refused["msg"]
    assert_unchanged(before, netns)
    assert run_item("policy_route", table=101, state="absent", netns=netns)["changed"] is True
    assert kernel_view(netns, 101, "-6") == ([], [])


def test_foreign_rules_and_routes_survive_every_verb(netns, uplinks):
    """Issue 7 #13: a user's rules pointing at table 6607 (same priority) and route in it are not mpsocks'."""
    sh("ip", "rule", "add", "iif", "mptcp1", "lookup", "6607", "priority", "6607", netns=netns)
    sh("ip", "rule", "add", "from", "10.66.99.0/24", "lookup", "6607", "priority", "6607", netns=netns)
    sh("ip", "-6", "rule", "add", "from", "fd66:99::/64", "lookup", "6607", "priority", "6607", netns=netns)
    sh("ip", "route", "add", "198.51.100.0/24", "dev", "up0", "table", "6607", netns=netns)
    foreign = (rule_lines(netns, 6607), route_lines(netns, 6607))
    assert len(foreign[0]) == 3 and len(foreign[1]) == 1, foreign
    before = snapshot(netns)

    # Nothing of mpsocks' there: absent has nothing to do, and reports what it left alone.
    nothing = run_item("policy_route", table=6607, state="absent", netns=netns)
    assert nothing["changed"] is False and nothing["policy_route"] == {}
    assert [r["protocol"] for r in nothing["foreign"]["rules"]] == [0, 0, 0]  # ip rule add sets none
    assert nothing["foreign"]["routes"] == [{"family": "ipv4", "to": "198.51.100.0/24", "via": None,
                                             "dev": "up0", "protocol": 3, "metric": 0}]
    overridden = run_module("policy_route", state="overridden", tables=[6606, 6607], config=[], netns=netns)
    assert overridden["changed"] is False and overridden["results"] == []
    assert_unchanged(before, netns)

    args = dict(table=6607, iif="mptcp1", routes=[{"via": "10.199.1.1", "dev": "up1"}], netns=netns)
    predicted = run_item("policy_route", check=True, **args)
    assert predicted["changed"] is True and predicted["diff"]["before"] == {}
    assert_unchanged(before, netns)
    done = run_item("policy_route", **args)
    assert done["changed"] is True and done["policy_route"] == predicted["policy_route"]
    assert len(done["foreign"]["rules"]) == 3
    rules, routes = kernel_view(netns, 6607)
    assert sorted((r["priority"], r.get("iif", "-"), r["src"], r["protocol"]) for r in rules) == [
        (6607, "-", "10.66.99.0", "unspec"), (6607, "mptcp1", "all", "166"),
        (6607, "mptcp1", "all", "unspec")]
    assert sorted((r["dst"], r["protocol"]) for r in routes) == [
        ("198.51.100.0/24", "boot"), ("default", "166")]
    assert run_item("policy_route", **args)["changed"] is False

    # A change of mpsocks' rule, then absent and overridden: the user's objects stay exactly as they were.
    moved = run_item("policy_route", **dict(args, priority=6611))
    assert moved["changed"] is True
    assert run_item("policy_route", table=6607, state="absent", netns=netns)["changed"] is True
    assert (rule_lines(netns, 6607), route_lines(netns, 6607)) == foreign
    assert run_item("policy_route", **args)["changed"] is True
    overridden = run_module("policy_route", state="overridden", tables=[6606, 6607], config=[], netns=netns)
    assert overridden["changed"] is True and [r["label"] for r in overridden["results"]] == [
        f"policy route table 6607 in netns {netns}"]
    assert (rule_lines(netns, 6607), route_lines(netns, 6607)) == foreign
    assert_unchanged(before, netns)

    # A user's route where mpsocks' must go is an error, predicted by check mode too; nothing changes.
    sh("ip", "route", "add", "default", "via", "10.199.0.1", "table", "6607", netns=netns)
    before = snapshot(netns)
    for check in (True, False):
        clash = run_item("policy_route", check=check, **args)
        assert clash["failed"] and clash["msg"].startswith(
            "table 6607 already holds a route to default (via 10.199.0.1 dev up0, protocol 3) that mpsocks "
            "did not make"), clash["msg"]
    assert_unchanged(before, netns)


def test_overridden_empties_exactly_the_unlisted_tables_in_scope(netns, uplinks):
    made = run_module("policy_route", netns=netns, config=[
        {"table": table, "iif": f"mptcp{table - 6606}", "routes": [{"via": "auto", "dev": "up0"}]}
        for table in (6606, 6607, 6608, 6609, 6620)])
    assert made["changed"] is True and len(made["results"]) == 5
    sh("ip", "rule", "add", "iif", "mptcp3", "lookup", "6609", "priority", "6609", netns=netns)  # a user's
    kept = {table: (rule_lines(netns, table), route_lines(netns, table)) for table in (6606, 6620)}

    scope = [6606, 6607, 6608, 6609, 6610]
    config = [{"table": 6606, "iif": "mptcp0", "routes": [{"via": "auto", "dev": "up0"}]},
              {"table": 6607, "iif": "mptcp1", "routes": [{"via": "auto", "dev": "up1"}]}]
    before = snapshot(netns)
    predicted = run_module("policy_route", check=True, state="overridden", tables=scope, config=config,
                           netns=netns)
    assert_unchanged(before, netns)
    assert [(r["label"], r["changed"]) for r in predicted["results"]] == [
        (f"policy route table {table} in netns {netns}", changed)
        for table, changed in ((6606, False), (6607, True), (6608, True), (6609, True))]
    done = run_module("policy_route", state="overridden", tables=scope, config=config, netns=netns)
    assert done["changed"] is True
    assert [r["policy_route"] for r in done["results"]] == [r["policy_route"] for r in predicted["results"]]
    assert [(r["label"], r["changed"]) for r in done["results"]] == [
        (r["label"], r["changed"]) for r in predicted["results"]]
    for table in (6608, 6609):
        assert route_lines(netns, table) == []
    assert rule_lines(netns, 6608) == []
    assert rule_lines(netns, 6609) == ["6609:\tfrom all iif mptcp3 [detached] lookup 6609"]
    assert [r["dev"] for r in kernel_view(netns, 6607)[1]] == ["up1"]
    # Tables outside the scope, and listed ones already right, are untouched.
    assert {table: (rule_lines(netns, table), route_lines(netns, table)) for table in (6606, 6620)} == kept
    again = run_module("policy_route", state="overridden", tables=scope, config=config, netns=netns)
    assert again["changed"] is False and len(again["results"]) == 2

    refused = run_module("policy_route", state="overridden", config=config, netns=netns)
    assert refused["failed"] and refused["msg"].startswith("tables: state overridden needs the tables")
    bad_scope = run_module("policy_route", state="overridden", tables=[6606, 254], config=config, netns=netns)
    assert bad_scope["failed"] and "tables: table 254 is the kernel's 'main' table" in bad_scope["msg"]


def test_overridden_for_the_current_namespace_spares_the_items_namespace(netns, uplinks):
    """As the lab role calls it: items in the lab's host namespace, overridden scoped to the caller's.

    The tables in scope are emptied in the namespace the module started in (here the root one, where
    tables 7700-7709 hold nothing), never in the namespace the items were just made in.
    """
    config = [{"netns": netns, "table": table, "source": f"10.66.{table - 7600}.0/24",
               "routes": [{"via": "auto", "dev": "up0"}]} for table in (7700, 7701)]
    scope = list(range(7700, 7710))
    done = run_module("policy_route", state="overridden", tables=scope, config=config)
    assert done["changed"] is True and not done.get("failed"), done.get("msg")
    assert [r["label"] for r in done["results"]] == [
        f"policy route table {table} in netns {netns}" for table in (7700, 7701)]
    for table in (7700, 7701):
        assert len(rule_lines(netns, table)) == 1 and len(route_lines(netns, table)) == 1
    # Run again (the lab's second `up`): nothing to do, and the items' tables stay.
    again = run_module("policy_route", state="overridden", tables=scope, config=config)
    assert [(r["label"], r["changed"]) for r in again["results"]] == [
        (f"policy route table {table} in netns {netns}", False) for table in (7700, 7701)]
    for table in (7700, 7701):
        assert len(rule_lines(netns, table)) == 1 and len(route_lines(netns, table)) == 1


def test_tables_in_several_namespaces_in_one_call(netns, uplinks):
    other = unique_name("mpst")
    subprocess.run(["ip", "netns", "add", other], check=True)
    other_uplinks = []
    try:
        other_uplinks = make_uplinks(other, 1)
        config = [{"netns": ns, "table": table, "source": f"10.66.{table - 6600}.0/24",
                   "routes": [{"via": "auto", "dev": "up0"}, {"to": "198.19.0.0/24", "dev": "up0"}]}
                  for ns in (netns, other) for table in (6606, 6607, 6608)]
        before = {ns: snapshot(ns) for ns in (netns, other)}
        predicted = run_module("policy_route", check=True, config=config)
        assert predicted["changed"] is True and len(predicted["results"]) == 6
        for ns, state in before.items():
            assert_unchanged(state, ns)
        done = run_module("policy_route", config=config)
        assert done["changed"] is True and not done.get("failed"), done.get("msg")
        assert [r["policy_route"] for r in done["results"]] == [
            r["policy_route"] for r in predicted["results"]]
        for item in config:
            rules, routes = kernel_view(item["netns"], item["table"])
            assert [r["src"] for r in rules] == [item["source"].split("/")[0]]
            gateway = "10.199.0.1"
            assert sorted((r["dst"], r.get("gateway")) for r in routes) == [
                ("198.19.0.0/24", None), ("default", gateway)]
        assert run_module("policy_route", config=config)["changed"] is False
        fed_back = run_module("policy_route", config=[r["policy_route"] for r in done["results"]])
        assert fed_back["changed"] is False and not fed_back.get("failed"), fed_back.get("msg")

        # A bad item in the middle: refused, naming it, and nothing changes anywhere.
        state = {ns: snapshot(ns) for ns in (netns, other)}
        changes = [dict(item, routes=[{"via": "auto", "dev": "up0"}]) for item in config]
        for bad, needle in (
                (dict(changes[3], routes=[{"via": "auto", "dev": "nosuch0"}]),
                 f"config[3] (policy route table 6606 in netns {other}): routes[0].dev: interface 'nosuch0' "
                 "does not exist"),
                (dict(changes[3], iif="up0", source=None, routes=None, priority=0),
                 f"config[3] (policy route table 6606 in netns {other}): priority: 0 is out of range"),
                (dict(changes[3], iif="up0\n", source=None),
                 f"config[3] (policy route table 6606 in netns {other}): iif: 'up0\\n' is not a valid")):
            for check in (True, False):
                result = run_module("policy_route", check=check, config=changes[:3] + [bad] + changes[4:])
                assert result["failed"] and result["msg"].startswith(needle), result["msg"]
                assert "\n" not in result["msg"]
        for ns, snap in state.items():
            assert_unchanged(snap, ns)

        gone = run_module("policy_route", state="absent", config=[{"netns": i["netns"], "table": i["table"]}
                                                                  for i in config])
        assert gone["changed"] is True
        for ns, snap in before.items():
            assert_unchanged(snap, ns)
    finally:
        delete_uplinks(other_uplinks)
        subprocess.run(["ip", "netns", "del", other], check=False)


def test_bad_input_fails_with_one_line_and_changes_nothing(netns, uplinks):
    sh("ip", "link", "add", "nogw", "type", "veth", "peer", "name", "nogwp", netns=netns)
    before = snapshot(netns)
    route = [{"via": "auto", "dev": "up0"}]
    cases = [
        ("table", dict(table=4294967296, iif="mptcp0", routes=route)),
        ("table", dict(table=254, iif="mptcp0", routes=route)),
        ("priority", dict(table=40000, iif="mptcp0", routes=route)),
        ("iif", dict(table=6606, iif="an-interface-name-too-long", routes=route)),
        ("iif/source", dict(table=6606, iif="mptcp0", source="10.66.6.0/24", routes=route)),
        ("source", dict(table=6606, source="10.66.6.0/33", routes=route)),
        ("via", dict(table=6606, iif="mptcp0", routes=[{"via": "10.199.0.256", "dev": "up0"}])),
        ("does not exist", dict(table=6606, iif="mptcp0", routes=[{"via": "auto", "dev": "wlp9s9"}])),
        ("nogw has no default route in the main table (IPv4)",
         dict(table=6606, iif="mptcp0", routes=[{"via": "auto", "dev": "nogw"}])),
        ("routes[1].to: default is listed twice", dict(table=6606, iif="mptcp0", routes=route * 2)),
    ]
    for needle, args in cases:
        result = run_item("policy_route", netns=netns, **args)
        assert result.get("failed"), args
        assert needle in result["msg"] and "\n" not in result["msg"], result["msg"]
    assert_unchanged(before, netns)


def test_destination_alone_then_with_source(netns, uplinks):
    before = snapshot(netns)
    args = dict(table=6620, destination="198.19.0.0/24", routes=[{"via": "auto", "dev": "up1"}], netns=netns)
    predicted = run_item("policy_route", check=True, **args)
    assert predicted["changed"] is True
    assert_unchanged(before, netns)
    done = run_item("policy_route", **args)
    assert done["changed"] is True and done["policy_route"] == predicted["policy_route"]
    assert (done["policy_route"]["priority"], done["policy_route"]["destination"]) == (6620, "198.19.0.0/24")
    rules, routes = kernel_view(netns, 6620)
    assert [(r["priority"], r["src"], r["dst"], r["dstlen"]) for r in rules] == [
        (6620, "all", "198.19.0.0", 24)]
    assert [(r["dst"], r["gateway"], r["dev"]) for r in routes] == [("default", "10.199.1.1", "up1")]
    # The kernel now sends that destination (only) through up1; the rest keeps the main table's up0.
    assert "via 10.199.1.1 dev up1" in sh("ip", "route", "get", "198.19.0.9", netns=netns)
    assert "via 10.199.0.1 dev up0" in sh("ip", "route", "get", "10.66.9.9", netns=netns)
    assert run_item("policy_route", **args)["changed"] is False

    both = dict(args, source="10.199.1.2/32")
    predicted = run_item("policy_route", check=True, **both)
    done = run_item("policy_route", **both)
    assert done["changed"] is True and done["policy_route"] == predicted["policy_route"]
    assert done["diff"]["before"]["rules"] == [{"family": "ipv4", "priority": 6620, "to": "198.19.0.0/24"}]
    assert (done["policy_route"]["source"], done["policy_route"]["destination"]) == (
        "10.199.1.2/32", "198.19.0.0/24")
    rules, _ = kernel_view(netns, 6620)
    assert [(r["src"], r["dst"]) for r in rules] == [("10.199.1.2", "198.19.0.0")]
    assert run_item("policy_route", **both)["changed"] is False

    removed = run_item("policy_route", table=6620, state="absent", netns=netns)
    assert removed["changed"] is True and kernel_view(netns, 6620) == ([], [])
    assert_unchanged(before, netns)


def test_destination_with_iif_and_ipv6_destination(netns, uplinks):
    with_iif = dict(table=6621, iif="mptcp1", destination="198.19.0.0/24",
                    routes=[{"via": "10.199.0.1", "dev": "up0"}], netns=netns)
    done = run_item("policy_route", **with_iif)
    assert done["changed"] is True
    assert (done["policy_route"]["iif"], done["policy_route"]["destination"]) == ("mptcp1", "198.19.0.0/24")
    rules, _ = kernel_view(netns, 6621)
    assert [(r["iif"], r["dst"], r["dstlen"]) for r in rules] == [("mptcp1", "198.19.0.0", 24)]
    assert run_item("policy_route", **with_iif)["changed"] is False
    # Dropping the destination from the selector is a change of the rule.
    dropped = run_item("policy_route", **dict(with_iif, destination=None))
    assert dropped["changed"] and dropped["policy_route"]["destination"] is None

    sh("ip", "-6", "addr", "add", "fd66:99::2/64", "dev", "up0", "nodad", netns=netns)
    ipv6 = dict(table=6622, destination="fd66:19::/64", routes=[{"to": "fd66:19::/64", "via": "fd66:99::1",
                                                                 "dev": "up0"}], netns=netns)
    done = run_item("policy_route", **ipv6)
    assert done["changed"] is True
    assert done["policy_route"]["destination"] == "fd66:19::/64"
    rules = [r for r in json.loads(sh("ip", "-j", "-6", "rule", "show", netns=netns)) if r["table"] == "6622"]
    assert [(r["dst"], r["dstlen"]) for r in rules] == [("fd66:19::", 64)]
    assert run_item("policy_route", **ipv6)["changed"] is False
    for table in (6621, 6622):
        assert run_item("policy_route", table=table, state="absent", netns=netns)["changed"] is True
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
        result = run_item("policy_route", netns=netns, **args)
        assert result.get("failed"), args
        assert needle in result["msg"] and "\n" not in result["msg"], result["msg"]
    assert_unchanged(before, netns)
