# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Masquerade one subnet out of one uplink, in an nft table mpsocks owns.

An entry NAME is the set of rules whose comment starts with ``mpsocks:NAME``:
a masquerade rule in chain ``postrouting`` and two accepts in chain
``forward``. The comment also records what the uplink's forwarding was
before mpsocks turned it on, with the uplink's name and index, so that
removing the last entry needing it puts it back, also after a rename::

    mpsocks:mptcp0 restore-ipv4 wlp1s0/3:0

Interface names cannot hold spaces, ``/`` or ``:``, so the record parses
without ambiguity (a record without the index, ``wlp1s0:0``, is read by name);
with names of at most 64 characters it fits nft's 128.

Entries live only in a table carrying mpsocks' mark (the comment
``ownership.NFT_TABLE_COMMENT``); a table of that name without it is never
changed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json
import re
import socket

from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.nft import Nft, table_name
from ansible_collections.mpsocks.mptcp.plugins.module_utils.ownership import NFT_TABLE_COMMENT, not_ours
from ansible_collections.mpsocks.mptcp.plugins.module_utils.sysctl import read_value, write_value
from ansible_collections.mpsocks.mptcp.plugins.module_utils.validate import ip_network, nft_interface_name

FAMILY = "inet"
DEFAULT_TABLE = "mpsocks"
PREFIX = "mpsocks:"
NAME_RE = re.compile(r"[A-Za-z0-9_.+-]{1,64}\Z")
DIGITS = re.compile(r"[0-9]+\Z")
CHAINS = {
    "postrouting": {"type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"},  # srcnat
    "forward": {"type": "filter", "hook": "forward", "prio": 0, "policy": "accept"},  # filter
}
#: The keys of a read() dict that are module input.
CONFIG_KEYS = ("name", "table", "source", "out_interface", "in_interface")
# IPv4 forwards what arrives on an interface whose conf/IF/forwarding is 1. IPv6's
# conf/IF/forwarding does not forward anything by itself (only conf/all does);
# force_forwarding (Linux 6.17+) is the per-interface switch.
FORWARDING = {4: "/proc/sys/net/ipv4/conf/%s/forwarding", 6: "/proc/sys/net/ipv6/conf/%s/force_forwarding"}


def make_comment(name, version, restore):
    """The comment on each rule of entry NAME.

    RESTORE maps interface name -> ``{"index": ifindex or None, "forwarding": value before mpsocks}``.
    """
    words = [PREFIX + name, "restore-ipv%d" % version]
    for iface, record in restore.items():
        where = iface if record["index"] is None else "%s/%d" % (iface, record["index"])
        words.append("%s:%d" % (where, record["forwarding"]))
    return " ".join(words)


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
        where, colon, value = word.partition(":")
        iface, slash, index = where.partition("/")
        if (not iface or iface in restore or not colon or not DIGITS.match(value)
                or (slash and not DIGITS.match(index))):
            return name, None, None
        restore[iface] = {"index": int(index) if slash else None, "forwarding": int(value)}
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
    """Commands adding the module's chains if missing and ENTRY's rules (the table must exist)."""
    network = ipaddress.ip_network(entry["source"])
    comment = make_comment(name, network.version, entry["restore"])
    commands = [{"add": {"chain": _chain(table, chain)}} for chain in CHAINS]
    for chain, expressions in render_rules(entry["source"], entry["out_interface"], entry["in_interface"]):
        commands.append({"add": {"rule": {"family": FAMILY, "table": table, "chain": chain,
                                          "comment": comment, "expr": expressions}}})
    return commands


def delete_rule_commands(table, handles):
    return [{"delete": {"rule": {"family": FAMILY, "table": table, "chain": chain, "handle": handle}}}
            for chain, handle in handles]


def removal(nft, listing, handles):
    """The deletions (for ``Nft.delete``) removing an entry's rules HANDLES, as LISTING shows the table.

    The module's chains go once the entry's rules are all they hold, the table once it holds nothing
    else; the kernel refuses both if they hold more by then than the listing showed.
    """
    removed = {pair[1] for pair in handles}
    rest = [obj for obj in listing.objects if "rule" not in obj or obj["rule"]["handle"] not in removed]
    busy = {obj["rule"]["chain"] for obj in rest if "rule" in obj}
    emptied = [obj["chain"] for obj in rest
               if "chain" in obj and obj["chain"]["name"] in CHAINS and obj["chain"]["name"] not in busy]
    deletions = [nft.rule_deletion(chain, handle) for chain, handle in handles]
    deletions += [nft.chain_deletion(chain["name"], chain["handle"]) for chain in emptied]
    if len(rest) == len(emptied):
        deletions.append(nft.table_deletion(listing.handle))
    return deletions


def read_forwarding(version, iface):
    """Per-interface forwarding (an int), or None when the interface is gone."""
    return read_value(FORWARDING[version] % iface)


def write_forwarding(version, iface, value):
    """Set per-interface forwarding; a vanished interface is skipped."""
    write_value(FORWARDING[version] % iface, value)


def interface_index(name):
    """The index of interface NAME in the current namespace, or None when there is none."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def interface_called(index):
    """The name interface INDEX has now in the current namespace, or None when there is none."""
    try:
        return socket.if_indextoname(index)
    except OSError:
        return None


def where_now(recorded, record):
    """``(name, index)`` the interface of a forwarding record has now, or None when it is gone.

    A record with an index follows the interface through renames; an older one without is read by name.
    """
    if record["index"] is None:
        index = interface_index(recorded)
        return None if index is None else (recorded, index)
    name = interface_called(record["index"])
    return None if name is None else (name, record["index"])


def _entry_name(value):
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise MpsocksError("name: %r must be 1 to 64 characters from A-Z a-z 0-9 _ . + - "
                           "(it goes into an nft comment)" % (value,))
    return value


class Nat(KernelObject):
    """Masquerade of ``source`` out of ``out_interface``, forward accepts, and forwarding."""

    kind = "nat"

    def label(self):
        table = self.params.get("table") or DEFAULT_TABLE
        return "nat %s in table %s %s" % (self.params.get("name"), FAMILY, table)

    def validate(self):
        self.name = _entry_name(self.params.get("name"))
        self.table = table_name(self.params.get("table") or DEFAULT_TABLE)
        self.nft = Nft(FAMILY, self.table)
        self.refuse_foreign = False
        if self.state == "absent":
            return
        for option in ("source", "out_interface"):
            if self.params.get(option) is None:
                raise MpsocksError("%s: required when state is present" % option)
        network = ip_network(self.params["source"], "source")
        if network.version == 6 and network.network_address.ipv4_mapped is not None:
            raise MpsocksError("source: %r is an IPv4-mapped IPv6 subnet; give an IPv4 subnet instead"
                               % self.params["source"])
        self.source, self.version = str(network), network.version
        self.out_interface = nft_interface_name(self.params["out_interface"], "out_interface")
        self.in_interface = self.params.get("in_interface")
        if self.in_interface is not None:
            nft_interface_name(self.in_interface, "in_interface")
            if self.in_interface == self.out_interface:
                raise MpsocksError("in_interface: %r is also the out_interface" % self.in_interface)
        if interface_index(self.out_interface) is None:
            raise MpsocksError("out_interface: interface %r does not exist" % self.out_interface)
        if self.version == 6 and read_forwarding(6, self.out_interface) is None:
            raise MpsocksError(
                "out_interface: no %s: IPv6 is off on %s, or the kernel is older than 6.17 (which "
                "brought per-interface IPv6 forwarding)"
                % (FORWARDING[6] % self.out_interface, self.out_interface))

    def converge(self, check_mode=False):
        """As KernelObject's, but a table of this name that mpsocks did not make is refused."""
        self.refuse_foreign = True
        return super().converge(check_mode)

    def read(self):
        """The entry as the kernel holds it, or None.

        None also when the table has this name but not mpsocks' mark (network_info asks so); while
        converging, such a table is refused instead.
        """
        listing = self.nft.listing()
        if listing is not None and listing.mark != NFT_TABLE_COMMENT:
            if self.refuse_foreign:
                raise not_ours("table: %s %s" % (FAMILY, self.table), listing.mark, NFT_TABLE_COMMENT)
            listing = None
        self.listing = listing
        self.entries = parse_entries(listing.objects) if listing else {}
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
        index = interface_index(self.out_interface)
        if index is None:
            raise MpsocksError("out_interface: interface %r does not exist" % self.out_interface)
        return {
            "name": self.name,
            "table": self.table,
            "source": self.source,
            "out_interface": self.out_interface,
            "in_interface": self.in_interface,
            "forwarding": {self.out_interface: 1},
            "restore": {self.out_interface: {"index": index,
                                             "forwarding": self._before_mpsocks(self.out_interface, index)}},
        }

    def as_config(self, state):
        return {key: state[key] for key in CONFIG_KEYS}

    def result(self, before, after, changed):
        """The entry as module input; the diff and ``forwarding``/``restore`` show the forwarding too."""
        found = super().result(before, after, changed)
        found["diff"].update(before=before or {}, after=after or {})
        found["forwarding"] = after["forwarding"] if after else {}
        found["restore"] = after["restore"] if after else {}
        return found

    @classmethod
    def strays(cls, params, declared):
        """For state overridden: the entries of the module's table in its namespace DECLARED leaves out."""
        table = table_name(params.get("table") or DEFAULT_TABLE)
        named = {obj.name for obj in declared
                 if obj.params.get("netns") == params.get("netns") and obj.table == table}
        listing = Nft(FAMILY, table).listing()
        if listing is None or listing.mark != NFT_TABLE_COMMENT:
            return []
        found = [cls({"name": name, "table": table, "state": "absent", "netns": params.get("netns")})
                 for name in sorted(parse_entries(listing.objects)) if name not in named]
        for obj in found:
            obj.validate()
        return found

    def _before_mpsocks(self, iface, index):
        """IFACE's forwarding before any entry of this table turned it on (own record first)."""
        own = self.entries.get(self.name)
        for entry in ([own] if own else []) + list(self.entries.values()):
            if entry["version"] != self.version:
                continue
            for recorded, record in entry["restore"].items():
                if (record["index"] == index) if record["index"] is not None else (recorded == iface):
                    return record["forwarding"]
        return read_forwarding(self.version, iface)

    def _needed_by_others(self):
        """``(version, interface index)`` pairs whose forwarding another entry relies on."""
        needed = set()
        for name, entry in self.entries.items():
            if name == self.name:
                continue
            for recorded, record in entry["restore"].items():
                now = where_now(recorded, record)
                if now:
                    needed.add((entry["version"], now[1]))
            for iface in _interfaces(entry):
                needed.add((_source_version(entry), interface_index(iface)))
        return needed

    def apply(self, current, wanted):
        """One nft transaction first; then forwarding put back where no one needs it, then turned on."""
        own = self.entries.get(self.name)
        handles = own["handles"] if own else []
        if wanted is None:
            if own:
                self.nft.delete(removal(self.nft, self.listing, handles))
        elif _rules_part(current) != _rules_part(wanted):
            commands = delete_rule_commands(self.table, handles) + add_commands(self.table, self.name, wanted)
            if self.listing is None:
                self.nft.create_and_apply(commands)
            else:
                self.nft.apply(commands)
        turn_on = [(_source_version(wanted), wanted["out_interface"])] if wanted else []
        kept = self._needed_by_others().union((version, interface_index(iface)) for version, iface in turn_on)
        for recorded, record in (own["restore"] if own else {}).items():
            now = where_now(recorded, record)
            if now and (own["version"], now[1]) not in kept:
                write_forwarding(own["version"], now[0], record["forwarding"])
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
