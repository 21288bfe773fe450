"""The nat module's pure logic: rule rendering, comments, listing parsing, removal plans."""

import json

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils import nat, nft
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError

# What `nft -j list table inet mpsocks` printed (nft 1.0.6) for entry mptcp0, cut to the objects.
LISTED = json.loads("""[
 {"chain": {"family": "inet", "table": "mpsocks", "name": "postrouting", "handle": 1, "type": "nat",
            "hook": "postrouting", "prio": 100, "policy": "accept"}},
 {"chain": {"family": "inet", "table": "mpsocks", "name": "forward", "handle": 2, "type": "filter",
            "hook": "forward", "prio": 0, "policy": "accept"}},
 {"rule": {"family": "inet", "table": "mpsocks", "chain": "postrouting", "handle": 3,
   "comment": "mpsocks:mptcp0 restore-ipv4 up0:0", "expr": [
   {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
              "right": {"prefix": {"addr": "10.66.6.0", "len": 24}}}},
   {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "up0"}},
   {"masquerade": null}]}},
 {"rule": {"family": "inet", "table": "mpsocks", "chain": "forward", "handle": 4,
   "comment": "mpsocks:mptcp0 restore-ipv4 up0:0", "expr": [
   {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "mptcp0"}},
   {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
              "right": {"prefix": {"addr": "10.66.6.0", "len": 24}}}},
   {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "up0"}},
   {"accept": null}]}},
 {"rule": {"family": "inet", "table": "mpsocks", "chain": "forward", "handle": 5,
   "comment": "mpsocks:mptcp0 restore-ipv4 up0:0", "expr": [
   {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "up0"}},
   {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
              "right": {"prefix": {"addr": "10.66.6.0", "len": 24}}}},
   {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "mptcp0"}},
   {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
   {"accept": null}]}}
]""")


def listing(*entries, first_handle=10):
    """A table listing as nft would print it for ENTRIES (name, source, out, in, restore)."""
    objects = [{"chain": {"family": "inet", "table": "mpsocks", "name": c, "handle": i}}
               for i, c in enumerate(nat.CHAINS, 1)]
    handle = first_handle
    for name, source, out, inp, restore in entries:
        version = 6 if ":" in source else 4
        for chain, expr in nat.render_rules(source, out, inp):
            objects.append({"rule": {"family": "inet", "table": "mpsocks", "chain": chain, "handle": handle,
                                     "comment": nat.make_comment(name, version, restore), "expr": expr}})
            handle += 1
    return objects


def test_comment_round_trip_and_fits_nft():
    # The module records the uplink only (the tap's forwarding is the tap module's).
    text = nat.make_comment("mptcp0", 4, {"wlp1s0": 0})
    assert text == "mpsocks:mptcp0 restore-ipv4 wlp1s0:0"
    assert nat.parse_comment(text) == ("mptcp0", 4, {"wlp1s0": 0})
    longest = nat.make_comment("n" * 64, 6, {"a" * 15: 1})
    assert len(longest.encode()) <= 128  # nft's limit
    assert nat.parse_comment(longest) == ("n" * 64, 6, {"a" * 15: 1})
    # The record format itself holds any number of interfaces.
    assert nat.parse_comment("mpsocks:x restore-ipv4 a:0 b:1")[1:] == (4, {"a": 0, "b": 1})
    # Interface names may hold "," or "=", never " " or ":".
    assert nat.parse_comment("mpsocks:x restore-ipv6 a,b=c:0")[1:] == (6, {"a,b=c": 0})


@pytest.mark.parametrize("text", [None, "", "other", "mpsocks", "mpsocks:", "mpsocksx:a", "x mpsocks:a",
                                  "mpsocks:a/b restore-ipv4 x:1"])
def test_foreign_comments_are_not_entries(text):
    assert nat.parse_comment(text) is None


@pytest.mark.parametrize("text", ["mpsocks:a", "mpsocks:a b:c", "mpsocks:a restore-ipv5 x:1",
                                  "mpsocks:a restore-ipv4 x:one", "mpsocks:a restore-ipv4 :1",
                                  "mpsocks:a restore-ipv4 x:1 x:0"])
def test_damaged_record_still_names_the_entry(text):
    assert nat.parse_comment(text) == ("a", None, None)


def test_rendering_matches_what_nft_lists():
    listed = [(obj["rule"]["chain"], obj["rule"]["expr"]) for obj in LISTED if "rule" in obj]
    assert nat.render_rules("10.66.6.0/24", "up0", "mptcp0") == listed


def test_rendering_without_in_interface_and_for_ipv6_hosts():
    rules = nat.render_rules("2001:db8::1/128", "up0")
    address = {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}},
                         "right": "2001:db8::1"}}
    assert rules[0] == ("postrouting", [address, {"match": {"op": "==", "left": {"meta": {"key": "oifname"}},
                                                            "right": "up0"}}, {"masquerade": None}])
    assert [chain for chain, _ in rules] == ["postrouting", "forward", "forward"]
    assert not any("iifname" in json.dumps(expr) for _, expr in rules[1:2])
    assert not any('"oifname"' in json.dumps(expr) for _, expr in rules[2:])


def test_parse_a_real_listing():
    entries = nat.parse_entries(LISTED)
    assert entries == {"mptcp0": {
        "source": "10.66.6.0/24", "out_interface": "up0", "in_interface": "mptcp0", "version": 4,
        "restore": {"up0": 0}, "handles": [("postrouting", 3), ("forward", 4), ("forward", 5)],
        "intact": True}}


def test_parse_finds_damage():
    objects = listing(("a", "10.66.6.0/24", "up0", "mptcp0", {"up0": 0}),
                      ("b", "2001:db8:7::/64", "up0", None, {"up0": 1}))
    objects.append({"rule": {"chain": "forward", "handle": 99, "expr": [{"accept": None}]}})  # foreign
    entries = nat.parse_entries(objects)
    assert sorted(entries) == ["a", "b"] and all(e["intact"] for e in entries.values())
    assert (entries["b"]["version"], entries["b"]["in_interface"]) == (6, None)

    without_masquerade = [o for o in objects if o.get("rule", {}).get("handle") != 10]
    damaged = nat.parse_entries(without_masquerade)["a"]
    assert not damaged["intact"]
    assert (damaged["source"], damaged["out_interface"], damaged["in_interface"]) == \
        ("10.66.6.0/24", "up0", "mptcp0")

    edited = json.loads(json.dumps(objects))
    edited[2]["rule"]["expr"][1]["match"]["right"] = "up1"
    assert not nat.parse_entries(edited)["a"]["intact"]

    mixed = json.loads(json.dumps(objects))
    mixed[3]["rule"]["comment"] = "mpsocks:a restore-ipv4 up0:1"
    assert not nat.parse_entries(mixed)["a"]["intact"]


def test_add_commands_create_table_chains_and_rules():
    entry = {"source": "10.66.6.0/24", "out_interface": "up0", "in_interface": "mptcp0",
             "restore": {"up0": 0}}
    commands = nat.add_commands("mpsocks", "mptcp0", entry)
    assert commands[0] == {"add": {"table": {"family": "inet", "name": "mpsocks"}}}
    assert commands[1]["add"]["chain"] == {"family": "inet", "table": "mpsocks", "name": "postrouting",
                                           "type": "nat", "hook": "postrouting", "prio": 100,
                                           "policy": "accept"}
    assert commands[2]["add"]["chain"]["hook"] == "forward"
    rules = [c["add"]["rule"] for c in commands[3:]]
    assert {r["comment"] for r in rules} == {"mpsocks:mptcp0 restore-ipv4 up0:0"}
    assert [(r["chain"], r["expr"]) for r in rules] == nat.render_rules("10.66.6.0/24", "up0", "mptcp0")


def test_removal_plans():
    one = listing(("a", "10.66.6.0/24", "up0", "mptcp0", {"up0": 0}))
    handles = nat.parse_entries(one)["a"]["handles"]
    assert nat.removal_commands("mpsocks", one, handles) == [
        {"delete": {"table": {"family": "inet", "name": "mpsocks"}}}]

    two = listing(("a", "10.66.6.0/24", "up0", "mptcp0", {"up0": 0}),
                  ("b", "10.66.7.0/24", "up0", "mptcp1", {"up0": 0}))
    handles = nat.parse_entries(two)["a"]["handles"]
    assert nat.removal_commands("mpsocks", two, handles) == nat.delete_rule_commands("mpsocks", handles)
    assert len(handles) == 3

    shared = one + [{"chain": {"name": "prerouting"}}]
    handles = nat.parse_entries(shared)["a"]["handles"]
    chains = [{"delete": {"chain": {"family": "inet", "table": "mpsocks", "name": name}}}
              for name in ("postrouting", "forward")]
    assert nat.removal_commands("mpsocks", shared, handles) == \
        nat.delete_rule_commands("mpsocks", handles) + chains

    foreign_rule = one + [{"rule": {"chain": "forward", "handle": 99, "expr": []}}]
    assert nat.removal_commands("mpsocks", foreign_rule, handles)[-1] == \
        {"delete": {"chain": {"family": "inet", "table": "mpsocks", "name": "postrouting"}}}


ENTRY = dict(name="mptcp0", source="10.66.6.0/24", out_interface="up0", in_interface="mptcp0")


class FakeNft:
    def __init__(self, objects):
        self.listed, self.applied = objects, []

    def objects(self):
        return self.listed

    def apply(self, commands):
        self.applied.append(commands)


def prepared(monkeypatch, objects, state="present", sysctls=None):
    """A Nat on a fake table and fake forwarding sysctls; returns it, the reads and the writes."""
    sysctls = dict(sysctls or {"up0": 0, "mptcp0": 1})
    reads, writes = [], []

    def read(version, iface):
        reads.append((version, iface))
        return sysctls.get(iface)

    def write(version, iface, value):
        writes.append((version, iface, value))

    monkeypatch.setattr(nat, "read_forwarding", read)
    monkeypatch.setattr(nat, "write_forwarding", write)
    obj = nat.Nat(dict(ENTRY, state=state))
    obj.name, obj.table, obj.nft = "mptcp0", "mpsocks", FakeNft(objects)
    obj.source, obj.version, obj.out_interface, obj.in_interface = "10.66.6.0/24", 4, "up0", "mptcp0"
    return obj, reads, writes


def test_forwarding_is_managed_for_the_uplink_only(monkeypatch):
    obj, reads, writes = prepared(monkeypatch, [])
    current = obj.read()
    wanted = obj.wanted(current)
    assert (wanted["forwarding"], wanted["restore"]) == ({"up0": 1}, {"up0": 0})
    obj.apply(current, wanted)
    assert writes == [(4, "up0", 1)] and (4, "mptcp0") not in reads
    rules = [c["add"]["rule"] for c in obj.nft.applied[0] if "rule" in c.get("add", {})]
    assert {r["comment"] for r in rules} == {"mpsocks:mptcp0 restore-ipv4 up0:0"}

    existing = listing(("mptcp0", "10.66.6.0/24", "up0", "mptcp0", {"up0": 0}))
    obj, reads, writes = prepared(monkeypatch, existing, state="absent", sysctls={"up0": 1, "mptcp0": 1})
    current = obj.read()
    assert current["forwarding"] == {"up0": 1} and current["restore"] == {"up0": 0}
    obj.apply(current, None)
    assert writes == [(4, "up0", 0)] and (4, "mptcp0") not in reads  # the tap keeps its 1


@pytest.mark.parametrize("params, needle", [
    ({"name": "mptcp 0"}, "name: 'mptcp 0' must be 1 to 64 characters"),
    ({"name": ""}, "name: '' must be"),
    ({"name": None}, "name: None must be"),
    ({"name": "ok", "table": "inet mpsocks"}, "table: give only the name ('mpsocks'); the family is"),
    ({"name": "ok", "table": "9lives"}, "table: '9lives' is not a valid nft table name"),
])
def test_names_are_checked_first(params, needle):
    with pytest.raises(MpsocksError, match="^" + needle.replace("(", r"\(").replace(")", r"\)")):
        nat.Nat(dict(params, state="absent")).validate()


def test_missing_nft_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(nft.shutil, "which", lambda name: None)
    monkeypatch.setattr(nft, "NFT_FALLBACK", "/nonexistent/nft")
    with pytest.raises(MpsocksError, match="^nft: command not found .*install the nftables package$"):
        nat.Nat({"name": "mptcp0", "state": "absent"}).validate()


def test_nft_errors_become_one_line():
    stderr = ("internal:0:0-0: Error: Could not process rule: Operation not supported\n"
              "add chain inet t c\n              ^^^^^\n")
    assert nft._one_line(stderr) == \
        "Error: Could not process rule: Operation not supported / add chain inet t c"
