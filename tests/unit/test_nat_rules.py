"""The nat module's pure logic: rule rendering, comments, listing parsing, removal plans."""

import json
import re

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils import nat, nft
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.ownership import NFT_TABLE_COMMENT
from ansible_collections.mpsocks.mptcp.plugins.module_utils.validate import nft_interface_name

# What `nft -j list table inet mpsocks` printed (nft 1.0.6) for entry mptcp0, cut to the objects.
LISTED = json.loads("""[
 {"chain": {"family": "inet", "table": "mpsocks", "name": "postrouting", "handle": 1, "type": "nat",
            "hook": "postrouting", "prio": 100, "policy": "accept"}},
 {"chain": {"family": "inet", "table": "mpsocks", "name": "forward", "handle": 2, "type": "filter",
            "hook": "forward", "prio": 0, "policy": "accept"}},
 {"rule": {"family": "inet", "table": "mpsocks", "chain": "postrouting", "handle": 3,
   "comment": "mpsocks:mptcp0 restore-ipv4 up0/3:0", "expr": [
   {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
              "right": {"prefix": {"addr": "10.66.6.0", "len": 24}}}},
   {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "up0"}},
   {"masquerade": null}]}},
 {"rule": {"family": "inet", "table": "mpsocks", "chain": "forward", "handle": 4,
   "comment": "mpsocks:mptcp0 restore-ipv4 up0/3:0", "expr": [
   {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "mptcp0"}},
   {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
              "right": {"prefix": {"addr": "10.66.6.0", "len": 24}}}},
   {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "up0"}},
   {"accept": null}]}},
 {"rule": {"family": "inet", "table": "mpsocks", "chain": "forward", "handle": 5,
   "comment": "mpsocks:mptcp0 restore-ipv4 up0/3:0", "expr": [
   {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "up0"}},
   {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
              "right": {"prefix": {"addr": "10.66.6.0", "len": 24}}}},
   {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "mptcp0"}},
   {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
   {"accept": null}]}}
]""")


def record(forwarding, index=3):
    """A forwarding record as parse_comment() gives it."""
    return {"index": index, "forwarding": forwarding}


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
    # The module records the uplink only (the tap's forwarding is the tap module's), by name and index.
    text = nat.make_comment("mptcp0", 4, {"wlp1s0": record(0)})
    assert text == "mpsocks:mptcp0 restore-ipv4 wlp1s0/3:0"
    assert nat.parse_comment(text) == ("mptcp0", 4, {"wlp1s0": record(0)})
    longest = nat.make_comment("n" * 64, 6, {"a" * 15: record(1, 2 ** 32 - 1)})
    assert len(longest.encode()) <= 128  # nft's limit
    assert nat.parse_comment(longest) == ("n" * 64, 6, {"a" * 15: record(1, 2 ** 32 - 1)})
    # The record format itself holds any number of interfaces; one without an index is read by name.
    assert nat.parse_comment("mpsocks:x restore-ipv4 a/5:0 b:1")[1:] == (
        4, {"a": record(0, 5), "b": record(1, None)})
    # Interface names may hold "," or "=", never " ", "/" or ":".
    assert nat.parse_comment("mpsocks:x restore-ipv6 a,b=c/7:0")[1:] == (6, {"a,b=c": record(0, 7)})


@pytest.mark.parametrize("text", [None, "", "other", "mpsocks", "mpsocks:", "mpsocksx:a", "x mpsocks:a",
                                  "mpsocks:a/b restore-ipv4 x:1", "mpsocks:a\n restore-ipv4 x:1",
                                  "mpsocks:a\n"])
def test_foreign_comments_are_not_entries(text):
    assert nat.parse_comment(text) is None


@pytest.mark.parametrize("text", ["mpsocks:a", "mpsocks:a b:c", "mpsocks:a restore-ipv5 x:1",
                                  "mpsocks:a restore-ipv4 x:one", "mpsocks:a restore-ipv4 :1",
                                  "mpsocks:a restore-ipv4 x:1 x:0", "mpsocks:a restore-ipv4 x/:1",
                                  "mpsocks:a restore-ipv4 x/y:1", "mpsocks:a restore-ipv4 x/3:1\n",
                                  "mpsocks:a restore-ipv4 x/3\n:1"])
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
        "restore": {"up0": record(0)}, "handles": [("postrouting", 3), ("forward", 4), ("forward", 5)],
        "intact": True}}


def test_parse_finds_damage():
    objects = listing(("a", "10.66.6.0/24", "up0", "mptcp0", {"up0": record(0)}),
                      ("b", "2001:db8:7::/64", "up0", None, {"up0": record(1)}))
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
    mixed[3]["rule"]["comment"] = "mpsocks:a restore-ipv4 up0/3:1"
    assert not nat.parse_entries(mixed)["a"]["intact"]


def test_add_commands_add_chains_and_rules():
    entry = {"source": "10.66.6.0/24", "out_interface": "up0", "in_interface": "mptcp0",
             "restore": {"up0": record(0)}}
    commands = nat.add_commands("mpsocks", "mptcp0", entry)
    # No table: nft's JSON would drop its comment; the module creates it on its own first.
    assert commands[0]["add"]["chain"] == {"family": "inet", "table": "mpsocks", "name": "postrouting",
                                           "type": "nat", "hook": "postrouting", "prio": 100,
                                           "policy": "accept"}
    assert commands[1]["add"]["chain"]["hook"] == "forward"
    rules = [c["add"]["rule"] for c in commands[2:]]
    assert {r["comment"] for r in rules} == {"mpsocks:mptcp0 restore-ipv4 up0/3:0"}
    assert [(r["chain"], r["expr"]) for r in rules] == nat.render_rules("10.66.6.0/24", "up0", "mptcp0")


def planned(objects, name):
    """What removal() would ask the kernel to delete for entry NAME, as its descriptions."""
    table = nft.Listing(42, NFT_TABLE_COMMENT, objects)
    handles = nat.parse_entries(objects)[name]["handles"]
    return [deletion[3] for deletion in nat.removal(nft.Nft("inet", "mpsocks"), table, handles)]


def test_removal_plans():
    rules = [f"deleting rule {handle} of chain {chain}"
             for handle, chain in ((10, "postrouting"), (11, "forward"), (12, "forward"))]
    chains = ["deleting chain postrouting", "deleting chain forward"]
    one = listing(("a", "10.66.6.0/24", "up0", "mptcp0", {"up0": record(0)}))
    assert planned(one, "a") == rules + chains + ["deleting the table"]

    two = listing(("a", "10.66.6.0/24", "up0", "mptcp0", {"up0": record(0)}),
                  ("b", "10.66.7.0/24", "up0", "mptcp1", {"up0": record(0)}))
    assert planned(two, "a") == rules

    # Another chain, or a set, keeps the table; the module's own chains go once empty.
    for other in ({"chain": {"name": "prerouting", "handle": 7}}, {"set": {"name": "s", "handle": 1}}):
        assert planned(one + [other], "a") == rules + chains

    foreign_rule = one + [{"rule": {"chain": "forward", "handle": 99, "expr": []}}]
    assert planned(foreign_rule, "a") == rules + ["deleting chain postrouting"]


ENTRY = dict(name="mptcp0", source="10.66.6.0/24", out_interface="up0", in_interface="mptcp0")


class FakeNft:
    """Table inet mpsocks holding OBJECTS (None: no table); records what the module asks of it."""

    def __init__(self, objects):
        self.listed, self.applied, self.deleted = objects, [], []

    def listing(self):
        return None if self.listed is None else nft.Listing(42, NFT_TABLE_COMMENT, self.listed)

    def apply(self, commands):
        self.applied.append(commands)

    create_and_apply = apply

    def delete(self, deletions):
        self.deleted.append([deletion[3] for deletion in deletions])

    def rule_deletion(self, chain, handle):
        return None, None, None, f"rule {handle}"

    def chain_deletion(self, chain, handle):
        return None, None, None, f"chain {chain}"

    def table_deletion(self, handle):
        return None, None, None, "table"


def prepared(monkeypatch, objects, state="present", sysctls=None, indexes=None):
    """A Nat on a fake table, fake forwarding sysctls and fake interface indexes.

    Returns it, the sysctls read and the sysctls written.
    """
    sysctls = dict(sysctls or {"up0": 0, "mptcp0": 1})
    indexes = dict(indexes or {"up0": 3, "mptcp0": 4})
    reads, writes = [], []

    def read(version, iface):
        reads.append((version, iface))
        return sysctls.get(iface)

    def write(version, iface, value):
        writes.append((version, iface, value))

    monkeypatch.setattr(nat, "read_forwarding", read)
    monkeypatch.setattr(nat, "write_forwarding", write)
    monkeypatch.setattr(nat, "interface_index", indexes.get)
    monkeypatch.setattr(nat, "interface_called", {v: k for k, v in indexes.items()}.get)
    obj = nat.Nat(dict(ENTRY, state=state))
    obj.name, obj.table, obj.nft, obj.refuse_foreign = "mptcp0", "mpsocks", FakeNft(objects), True
    obj.source, obj.version, obj.out_interface, obj.in_interface = "10.66.6.0/24", 4, "up0", "mptcp0"
    return obj, reads, writes


def test_forwarding_is_managed_for_the_uplink_only(monkeypatch):
    obj, reads, writes = prepared(monkeypatch, None)
    current = obj.read()
    wanted = obj.wanted(current)
    assert (wanted["forwarding"], wanted["restore"]) == ({"up0": 1}, {"up0": record(0)})
    obj.apply(current, wanted)
    assert writes == [(4, "up0", 1)] and (4, "mptcp0") not in reads
    rules = [c["add"]["rule"] for c in obj.nft.applied[0] if "rule" in c.get("add", {})]
    assert {r["comment"] for r in rules} == {"mpsocks:mptcp0 restore-ipv4 up0/3:0"}

    existing = listing(("mptcp0", "10.66.6.0/24", "up0", "mptcp0", {"up0": record(0)}))
    obj, reads, writes = prepared(monkeypatch, existing, state="absent", sysctls={"up0": 1, "mptcp0": 1})
    current = obj.read()
    assert current["forwarding"] == {"up0": 1} and current["restore"] == {"up0": record(0)}
    obj.apply(current, None)
    assert obj.nft.deleted == [
        ["rule 10", "rule 11", "rule 12", "chain postrouting", "chain forward", "table"]]
    assert writes == [(4, "up0", 0)] and (4, "mptcp0") not in reads  # the tap keeps its 1


def test_forwarding_follows_the_interface_index(monkeypatch):
    """The record's index finds the uplink under its new name; a new interface of the old name is not it."""
    existing = listing(("mptcp0", "10.66.6.0/24", "upa", "mptcp0", {"upa": record(0, 3)}))
    obj, _, writes = prepared(monkeypatch, existing, state="absent", sysctls={"upz": 1, "upa": 1},
                              indexes={"upz": 3, "upa": 9})
    obj.apply(obj.read(), None)
    assert writes == [(4, "upz", 0)]

    # A new entry on the renamed uplink inherits the record of the entry still needing it.
    other = listing(("mptcp1", "10.66.7.0/24", "upa", "mptcp1", {"upa": record(0, 3)}))
    obj, _, writes = prepared(monkeypatch, other, sysctls={"upz": 1}, indexes={"upz": 3})
    obj.out_interface = "upz"
    assert obj.wanted(obj.read())["restore"] == {"upz": record(0, 3)}

    # An old record without an index is found by name, as before.
    old = listing(("mptcp0", "10.66.6.0/24", "up0", "mptcp0", {"up0": record(0, None)}))
    obj, _, writes = prepared(monkeypatch, old, state="absent", sysctls={"up0": 1})
    obj.apply(obj.read(), None)
    assert writes == [(4, "up0", 0)]


def test_a_table_without_the_mark_holds_no_entries(monkeypatch):
    entry = ("mptcp0", "10.66.6.0/24", "up0", "mptcp0", {"up0": record(0)})
    obj, _, _ = prepared(monkeypatch, listing(entry))
    obj.nft.listing = lambda: nft.Listing(42, None, obj.nft.listed)
    with pytest.raises(MpsocksError, match=r"^table: inet mpsocks exists but was not made by mpsocks"):
        obj.read()
    obj.refuse_foreign = False  # as network_info reads it
    assert obj.read() is None


@pytest.mark.parametrize("params, needle", [
    ({"name": "mptcp 0"}, "name: 'mptcp 0' must be 1 to 64 characters"),
    ({"name": ""}, "name: '' must be"),
    ({"name": None}, "name: None must be"),
    ({"name": "ok", "table": "inet mpsocks"}, "table: give only the name ('mpsocks'); the family is"),
    ({"name": "ok", "table": "9lives"}, "table: '9lives' is not a valid nft table name"),
    ({"name": "mptcp0\n"}, "name: 'mptcp0\\n' must be 1 to 64 characters"),
    ({"name": "ok", "table": "evil\n"}, "table: 'evil\\n' is not a valid nft table name"),
])
def test_names_are_checked_first(params, needle):
    with pytest.raises(MpsocksError, match="^" + re.escape(needle)):
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


@pytest.mark.parametrize("text, head", [
    ('table inet mpsocks { # handle 7\n\tcomment "managed by mpsocks"\n\tchain c { # handle 1\n',
     (7, "managed by mpsocks")),
    ('table inet mpsocks { # handle 7\n\tflags dormant\n\tcomment "x"\n}\n', (7, "x")),
    ('table inet mpsocks { # handle 12 progname nft\n\tchain c { # handle 1\n\t\tcomment "no"\n', (12, None)),
    ("table inet mpsocks { # handle 3\n}\n", (3, None)),
])
def test_table_head_from_nft_text(text, head):
    assert nft.parse_head(text) == head


@pytest.mark.parametrize("value, needle", [
    ("u*", "'u*' holds '*'"), ('u"p', "holds '\"'"), ("u\\p", "holds '\\\\'"),
    ("u p", "'u p' is not a valid interface name"), ("up0\n", "is not a valid interface name"),
    ("", "an interface name is required"), ("a" * 16, "is 16 characters long"),
])
def test_nft_interface_names(value, needle):
    with pytest.raises(MpsocksError, match="^option: ") as caught:
        nft_interface_name(value, "option")
    assert needle in str(caught.value)
    assert nft_interface_name("up0.1-x", "option") == "up0.1-x"
