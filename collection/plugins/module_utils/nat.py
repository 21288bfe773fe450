# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Masquerade one subnet out of one uplink, in the nft table mpsocks owns.

An entry NAME is the set of rules whose comment starts with ``mpsocks:NAME``:
a masquerade rule in chain ``postrouting`` and two accepts in chain
``forward``. The comment also records what per-interface forwarding was
before mpsocks turned it on, so that removing the last entry needing an
interface puts it back::

    mpsocks:mptcp0 restore-ipv4 wlp1s0:0

Interface names cannot hold spaces or ``:``, so the record parses without
ambiguity; with names of at most 64 characters it fits nft's 128.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json
import re

from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.nft import Nft
from ansible_collections.mpsocks.mptcp.plugins.module_utils.rtnl import iproute, link_index
from ansible_collections.mpsocks.mptcp.plugins.module_utils.sysctl import read_value, write_value
from ansible_collections.mpsocks.mptcp.plugins.module_utils.validate import interface_name, ip_network

FAMILY = "inet"
DEFAULT_TABLE = "mpsocks"
PREFIX = "mpsocks:"
NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
NFT_FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
CHAINS = {
    "postrouting": {"type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"},  # srcnat
    "forward": {"type": "filter", "hook": "forward", "prio": 0, "policy": "accept"},  # filter
}
# IPv4 forwards what arrives on an interface whose conf/IF/forwarding is 1. IPv6's
# conf/IF/forwarding does not forward anything by itself (only conf/all does);
# force_forwarding (Linux 6.17+) is the per-interface switch.
FORWARDING = {4: "/proc/sys/net/ipv4/conf/%s/forwarding", 6: "/proc/sys/net/ipv6/conf/%s/force_forwarding"}


def make_comment(name, version, restore):
    """The comment on each rule of entry NAME; RESTORE maps interface -> previous forwarding."""
    words = [PREFIX + name, "restore-ipv%d" % version]
    return " ".join(words + ["%s:%d" % item for item in restore.items()])


def parse_comment(text):
    """``(name, version, restore)`` from a comment; None if it is not an mpsocks comment.

    A damaged forwarding record gives version and restore None.
    """
    words = (text or "").split(" ")
    if not words[0].startswith(PREFIX) or not NAME_RE.match(words[0][len(PREFIX):]):
        return None
    name = words[0][len(PREFIX):]
    if len(words) < 2 or words[1] not in ("restore-ipv4", "restore-ipv6"):
        return name, None, None
    restore = {}
    for word in words[2:]:
        iface, value = word.split(":", 1) if ":" in word else (word, "")
        if not iface or not re.match(r"^[0-9]+$", value) or iface in restore:
            return name, None, None
        restore[iface] = int(value)
    return name, int(words[1][-1]), restore


def _match(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key, value):
    return _match({"meta": {"key": key}}, value)


def _address(network):
    """A subnet as nft lists it: a full-length prefix is a plain address."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}


def render_rules(source, out_interface, in_interface=None):
    """The entry's rules as ``(chain, expressions)``, exactly as ``nft -j list`` shows them."""
    network = ipaddress.ip_network(source)
    protocol = "ip" if network.version == 4 else "ip6"

    def address(field):
        return _match({"payload": {"protocol": protocol, "field": field}}, _address(network))

    from_in = [_meta("iifname", in_interface)] if in_interface else []
    to_in = [_meta("oifname", in_interface)] if in_interface else []
    established = _match({"ct": {"key": "state"}}, ["established", "related"], "in")
    return [
        ("postrouting", [address("saddr"), _meta("oifname", out_interface), {"masquerade": None}]),
        ("forward", from_in + [address("saddr"), _meta("oifname", out_interface), {"accept": None}]),
        ("forward", [_meta("iifname", out_interface), address("daddr")] + to_in
         + [established, {"accept": None}]),
    ]


def _subnet(right):
    """The right side of an address match as a subnet string, or None."""
    if isinstance(right, dict):
        prefix = right.get("prefix") or {}
        right = "%s/%s" % (prefix.get("addr"), prefix.get("len"))
    try:
        return str(ipaddress.ip_network(str(right)))
    except ValueError:
        return None


def _matched(expressions):
    """``{"iifname": ..., "oifname": ..., "saddr": ..., "daddr": ...}`` a rule matches on."""
    found = {}
    for expr in expressions:
        match = expr.get("match") if isinstance(expr, dict) else None
        left = match.get("left") if isinstance(match, dict) else None
        if not isinstance(left, dict):
            continue
        if "meta" in left and isinstance(match.get("right"), str):
            found[left["meta"].get("key")] = match.get("right")
        elif "payload" in left and _subnet(match.get("right")):
            found[left["payload"].get("field")] = _subnet(match.get("right"))
    return found


def _fields(rules):
    """source, out_interface and in_interface as the entry's rules say; the masquerade rule first."""
    fields = {}
    for chain, expressions in sorted(rules, key=lambda rule: rule[0] != "postrouting"):
        seen = _matched(expressions)
        outbound = "saddr" in seen
        said = {"source": seen.get("saddr" if outbound else "daddr"),
                "out_interface": seen.get("oifname" if outbound else "iifname")}
        if chain == "forward":
            said["in_interface"] = seen.get("iifname" if outbound else "oifname")
        for key, value in said.items():
            if value is not None or key == "in_interface":
                fields.setdefault(key, value)
    return fields.get("source"), fields.get("out_interface"), fields.get("in_interface")


def parse_entries(objects):
    """Every mpsocks entry in a table listing, by name (see ``_entry``)."""
    grouped = {}
    for obj in objects or []:
        rule = obj.get("rule")
        parsed = parse_comment(rule.get("comment")) if rule else None
        if parsed:
            grouped.setdefault(parsed[0], []).append((rule, parsed[1:]))
    return {name: _entry(found) for name, found in grouped.items()}


def _canonical(rules):
    return sorted(json.dumps(rule, sort_keys=True) for rule in rules)


def _entry(found):
    """One entry from its ``(rule, (version, restore))`` pairs.

    ``intact`` says whether the rules are exactly those this module writes for
    the fields they show, all with the same forwarding record.
    """
    rules = [pair[0] for pair in found]
    records = [pair[1] for pair in found]
    shown = [(rule["chain"], rule.get("expr", [])) for rule in rules]
    source, out_interface, in_interface = _fields(shown)
    version, restore = records[0]
    intact = bool(all(record == records[0] for record in records)
                  and restore is not None and source and out_interface
                  and ipaddress.ip_network(source).version == version
                  and _canonical(shown) == _canonical(render_rules(source, out_interface, in_interface)))
    return {
        "source": source,
        "out_interface": out_interface,
        "in_interface": in_interface,
        "version": version,
        "restore": restore or {},
        "handles": [(rule["chain"], rule["handle"]) for rule in rules],
        "intact": intact,
    }


def _chain(table, name):
    return dict({"family": FAMILY, "table": table, "name": name}, **CHAINS[name])


def add_commands(table, name, entry):
    """Commands creating table and chains if missing and adding ENTRY's rules."""
    network = ipaddress.ip_network(entry["source"])
    comment = make_comment(name, network.version, entry["restore"])
    commands = [{"add": {"table": {"family": FAMILY, "name": table}}}]
    commands += [{"add": {"chain": _chain(table, chain)}} for chain in CHAINS]
    for chain, expressions in render_rules(entry["source"], entry["out_interface"], entry["in_interface"]):
        commands.append({"add": {"rule": {"family": FAMILY, "table": table, "chain": chain,
                                          "comment": comment, "expr": expressions}}})
    return commands


def delete_rule_commands(table, handles):
    return [{"delete": {"rule": {"family": FAMILY, "table": table, "chain": chain, "handle": handle}}}
            for chain, handle in handles]


def removal_commands(table, objects, handles):
    """Commands removing the rules HANDLES, then the module's chains once empty.

    The whole table goes instead when nothing else would be left in it: another
    module's chain, a set, a rule without an mpsocks comment all keep it.
    """
    removed = {pair[1] for pair in handles}
    rest = [obj for obj in objects if "rule" not in obj or obj["rule"]["handle"] not in removed]
    busy = {obj["rule"]["chain"] for obj in rest if "rule" in obj}
    present = {obj["chain"]["name"] for obj in rest if "chain" in obj}
    empty = [chain for chain in CHAINS if chain in present and chain not in busy]
    if all("chain" in obj and obj["chain"]["name"] in empty for obj in rest):
        return [{"delete": {"table": {"family": FAMILY, "name": table}}}]
    return delete_rule_commands(table, handles) + [
        {"delete": {"chain": {"family": FAMILY, "table": table, "name": chain}}} for chain in empty]


def read_forwarding(version, iface):
    """Per-interface forwarding (an int), or None when the interface is gone."""
    return read_value(FORWARDING[version] % iface)


def write_forwarding(version, iface, value):
    """Set per-interface forwarding; a vanished interface is skipped."""
    write_value(FORWARDING[version] % iface, value)


def _entry_name(value):
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise MpsocksError("name: %r must be 1 to 64 characters from A-Z a-z 0-9 _ . + - "
                           "(it goes into an nft comment)" % (value,))
    return value


def _table_name(value):
    words = str(value).split()
    if len(words) == 2 and words[0] in NFT_FAMILIES:
        raise MpsocksError("table: give only the name (%r); the family is always inet" % words[1])
    if not TABLE_RE.match(str(value)):
        raise MpsocksError("table: %r is not a valid nft table name (a letter or _, then up to 63 "
                           "letters, digits, _ or -)" % (value,))
    return value


class Nat(KernelObject):
    """Masquerade of ``source`` out of ``out_interface``, forward accepts, and forwarding."""

    kind = "nat"

    def label(self):
        table = self.params.get("table") or DEFAULT_TABLE
        return "nat %s in table %s %s" % (self.params["name"], FAMILY, table)

    def validate(self):
        self.name = _entry_name(self.params["name"])
        self.table = _table_name(self.params.get("table") or DEFAULT_TABLE)
        self.nft = Nft(FAMILY, self.table)
        if self.state == "absent":
            return
        network = ip_network(self.params.get("source"), "source")
        if network.version == 6 and network.network_address.ipv4_mapped is not None:
            raise MpsocksError("source: %r is an IPv4-mapped IPv6 subnet; give an IPv4 subnet instead"
                               % self.params["source"])
        self.source, self.version = str(network), network.version
        self.out_interface = interface_name(self.params.get("out_interface"), "out_interface")
        self.in_interface = self.params.get("in_interface")
        if self.in_interface is not None:
            interface_name(self.in_interface, "in_interface")
            if self.in_interface == self.out_interface:
                raise MpsocksError("in_interface: %r is also the out_interface" % self.in_interface)
        with iproute() as ipr:
            if link_index(ipr, self.out_interface) is None:
                raise MpsocksError("out_interface: interface %r does not exist" % self.out_interface)
        if self.version == 6 and read_forwarding(6, self.out_interface) is None:
            raise MpsocksError(
                "out_interface: no %s: IPv6 is off on %s, or the kernel is older than 6.17 (which "
                "brought per-interface IPv6 forwarding)"
                % (FORWARDING[6] % self.out_interface, self.out_interface))

    def read(self):
        self.objects = self.nft.objects() or []
        self.entries = parse_entries(self.objects)
        entry = self.entries.get(self.name)
        if entry is None:
            return None
        version = _source_version(entry) or entry["version"]
        found = {
            "name": self.name,
            "table": self.table,
            "source": entry["source"],
            "out_interface": entry["out_interface"],
            "in_interface": entry["in_interface"],
            "forwarding": {i: read_forwarding(version, i) for i in _interfaces(entry)} if version else {},
            "restore": entry["restore"],
        }
        if not entry["intact"]:
            found["damaged"] = True
        return found

    def wanted(self, current):
        interfaces = [self.out_interface]
        return {
            "name": self.name,
            "table": self.table,
            "source": self.source,
            "out_interface": self.out_interface,
            "in_interface": self.in_interface,
            "forwarding": dict.fromkeys(interfaces, 1),
            "restore": {i: self._before_mpsocks(i) for i in interfaces},
        }

    def _before_mpsocks(self, iface):
        """IFACE's forwarding before any entry of this table turned it on (own record first)."""
        own = self.entries.get(self.name)
        for entry in ([own] if own else []) + list(self.entries.values()):
            if entry["version"] == self.version and iface in entry["restore"]:
                return entry["restore"][iface]
        return read_forwarding(self.version, iface)

    def _needed_by_others(self):
        """``(version, interface)`` pairs whose forwarding another entry relies on."""
        needed = set()
        for name, entry in self.entries.items():
            if name != self.name:
                needed.update((entry["version"], i) for i in entry["restore"])
                needed.update((_source_version(entry), i) for i in _interfaces(entry))
        return needed

    def apply(self, current, wanted):
        """One nft transaction first; then forwarding put back where no one needs it, then turned on."""
        own = self.entries.get(self.name)
        handles = own["handles"] if own else []
        if wanted is None:
            self.nft.apply(removal_commands(self.table, self.objects, handles))
        elif _rules_part(current) != _rules_part(wanted):
            self.nft.apply(delete_rule_commands(self.table, handles)
                           + add_commands(self.table, self.name, wanted))
        turn_on = [(_source_version(wanted), i) for i in wanted["forwarding"]] if wanted else []
        kept = self._needed_by_others().union(turn_on)
        for iface, value in (own["restore"] if own else {}).items():
            if (own["version"], iface) not in kept:
                write_forwarding(own["version"], iface, value)
        for version, iface in turn_on:
            write_forwarding(version, iface, 1)


def _source_version(entry):
    return ipaddress.ip_network(entry["source"]).version if entry["source"] else None


def _interfaces(entry):
    """The interfaces whose forwarding an entry manages: its uplink (a tap manages its own)."""
    return [entry["out_interface"]] if entry["out_interface"] else []


def _rules_part(entry):
    """What the nft rules hold of an entry: all but the live forwarding values."""
    return {key: value for key, value in (entry or {}).items() if key != "forwarding"}
