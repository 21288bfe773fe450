# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The socksifier's redirect: TCP from the host's side goes to a local transparent proxy (redsocks).

One nft table the module owns holds exactly::

    chain prerouting   type nat hook prerouting priority dstnat
        iifname "IF" meta l4proto tcp jump socksify          one rule per interface
    chain socksify     (regular chain)
        fib daddr type local return                          the guest's own addresses
        ip daddr EXCLUDED return                             one rule per excluded subnet (ip6 for IPv6)
        ip saddr SOURCE meta l4proto tcp counter dnat ip to ADDRESS:PORT     one rule per source
    chain input        type filter hook input priority filter
        ip daddr ADDRESS tcp dport PORT ct status dnat accept
        ip daddr ADDRESS tcp dport PORT counter drop

So a connection from a source subnet (the host's) arriving on one of the interfaces, not addressed to
the guest and not to an excluded subnet, lands on the proxy at ADDRESS:PORT, which finds the real
destination with ``SO_ORIGINAL_DST``. It is a ``dnat`` to the proxy's address rather than nft's
``redirect``, which would take the primary address of whichever interface the packet came in on,
where the proxy does not listen. The input chain lets only redirected connections reach the proxy's
port: one made to it directly would have the proxy connect to itself, over and over.

The table carries mpsocks' mark (``ownership.NFT_TABLE_COMMENT``); a table of that name without it
is neither changed nor removed. Its whole content is declared: anything else in it is replaced.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json

from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.nft import Nft, table_name
from ansible_collections.mpsocks.mptcp.plugins.module_utils.ownership import NFT_TABLE_COMMENT, not_ours
from ansible_collections.mpsocks.mptcp.plugins.module_utils.validate import (
    ip_address,
    ip_network,
    nft_interface_name,
)

FAMILY = "inet"
DEFAULT_TABLE = "mpsocks_socksifier"
JUMP_CHAIN = "socksify"
CHAINS = {
    "prerouting": {"type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"},
    JUMP_CHAIN: {},
    "input": {"type": "filter", "hook": "input", "prio": 0, "policy": "accept"},
}
CHAIN_ORDER = ("prerouting", JUMP_CHAIN, "input")
#: The keys of a read() dict that are module input.
CONFIG_KEYS = ("table", "interfaces", "sources", "exclude", "to_address", "to_port")
LIST_OPTIONS = ("interfaces", "sources", "exclude")


def _match(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


def _payload(protocol, field):
    return {"payload": {"protocol": protocol, "field": field}}


def _address(network):
    """A subnet as nft lists it: a full-length prefix is a plain address."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}


def _text(network):
    return str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)


TCP = _match({"meta": {"key": "l4proto"}}, "tcp")
COUNTER = {"counter": {"packets": 0, "bytes": 0}}
LOCAL = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")


def build(spec):
    """The table content SPEC (a dict of CONFIG_KEYS) wants: ``[(chain, expressions, text)]`` in order."""
    to = ipaddress.ip_address(spec["to_address"])
    port = spec["to_port"]
    jump = {"jump": {"target": JUMP_CHAIN}}
    rules = [("prerouting", [_match({"meta": {"key": "iifname"}}, name), TCP, jump],
              'iifname "%s" meta l4proto tcp jump %s' % (name, JUMP_CHAIN)) for name in spec["interfaces"]]
    rules.append((JUMP_CHAIN, [LOCAL, {"return": None}], "fib daddr type local return"))
    for text in spec["exclude"]:
        network = ipaddress.ip_network(text)
        protocol = "ip" if network.version == 4 else "ip6"
        rules.append((JUMP_CHAIN, [_match(_payload(protocol, "daddr"), _address(network)), {"return": None}],
                      "%s daddr %s return" % (protocol, _text(network))))
    for text in spec["sources"]:
        network = ipaddress.ip_network(text)
        rules.append((JUMP_CHAIN, [_match(_payload("ip", "saddr"), _address(network)), TCP, COUNTER,
                                   {"dnat": {"family": "ip", "addr": str(to), "port": port}}],
                      "ip saddr %s meta l4proto tcp counter dnat ip to %s:%d" % (_text(network), to, port)))
    guard = [_match(_payload("ip", "daddr"), str(to)), _match(_payload("tcp", "dport"), port)]
    rules.append(("input", guard + [_match({"ct": {"key": "status"}}, "dnat", "in"), {"accept": None}],
                  "ip daddr %s tcp dport %d ct status dnat accept" % (to, port)))
    rules.append(("input", guard + [COUNTER, {"drop": None}],
                  "ip daddr %s tcp dport %d counter drop" % (to, port)))
    return rules


def normalise(objects):
    """A table listing reduced to what defines it: ``(chains, rules, other)``, no handles, counters at 0."""
    chains, rules, other = {}, [], []
    for obj in objects:
        if "chain" in obj:
            chains[obj["chain"]["name"]] = {key: value for key, value in obj["chain"].items()
                                            if key not in ("family", "table", "name", "handle")}
        elif "rule" in obj:
            expressions = [COUNTER if isinstance(expr, dict) and "counter" in expr else expr
                           for expr in obj["rule"].get("expr", [])]
            rules.append((obj["rule"].get("chain"), expressions, obj["rule"].get("comment")))
        else:
            other.append(obj)
    return chains, rules, other


def _right(expressions, index):
    """The right side of match INDEX of EXPRESSIONS, or None."""
    if len(expressions) <= index or not isinstance(expressions[index], dict):
        return None
    return (expressions[index].get("match") or {}).get("right")


def _subnet(right):
    """A listed address or prefix as subnet text, or None."""
    if isinstance(right, dict):
        prefix = right.get("prefix") or {}
        right = "%s/%s" % (prefix.get("addr"), prefix.get("len"))
    try:
        return _text(ipaddress.ip_network(str(right)))
    except ValueError:
        return None


def parameters(rules):
    """The module input the rules show (what build() would take to write them); fields None when unseen."""
    found = {"interfaces": [], "sources": [], "exclude": [], "to_address": None, "to_port": None}
    for chain, expressions, _comment in rules:
        last = expressions[-1] if expressions and isinstance(expressions[-1], dict) else {}
        if chain == "prerouting" and "jump" in last and isinstance(_right(expressions, 0), str):
            found["interfaces"].append(_right(expressions, 0))
        elif chain == JUMP_CHAIN and "return" in last and expressions[0] != LOCAL:
            subnet = _subnet(_right(expressions, 0))
            if subnet:
                found["exclude"].append(subnet)
        elif chain == JUMP_CHAIN and "dnat" in last:
            subnet = _subnet(_right(expressions, 0))
            if subnet:
                found["sources"].append(subnet)
            found["to_address"] = found["to_address"] or last["dnat"].get("addr")
            found["to_port"] = found["to_port"] or last["dnat"].get("port")
    return found


def describe(table, content):
    """The dict read() returns for CONTENT (``normalise()``'s): the parameters and the rules as text.

    ``damaged`` is set when the table holds anything the module would not write for those parameters.
    """
    chains, rules, other = content
    found = dict(parameters(rules), table=table)
    intact = not other and all(comment is None for _c, _e, comment in rules) and None not in found.values()
    lines = None
    if intact:
        wanted = build(found)
        intact = (chains == CHAINS and [(chain, expr) for chain, expr, _comment in rules]
                  == [(chain, expr) for chain, expr, _text in wanted])
        lines = [(chain, text) for chain, _expr, text in wanted]
    if not intact:
        found["damaged"] = True
        lines = [(chain, json.dumps(expr, sort_keys=True)) for chain, expr, _comment in rules]
        lines += [("(other)", json.dumps(obj, sort_keys=True)) for obj in other]
    found["rules"] = lines
    return found


def wanted_state(spec):
    """The dict read() gives once the table holds what SPEC asks for."""
    return dict(spec, rules=[(chain, text) for chain, _expr, text in build(spec)])


def render_text(state):
    """STATE (a read() or wanted() dict) as ``nft list table`` would print it, for the diff."""
    if not state:
        return ""
    lines = ["table %s %s {" % (FAMILY, state["table"])]
    if state.get("damaged"):
        lines.insert(0, "# not as this module writes it")
    current = None
    for chain, text in state["rules"]:
        if chain != current:
            if current is not None:
                lines.append("\t}")
            lines.append("\tchain %s {" % chain)
            if CHAINS.get(chain):
                lines.append("\t\ttype %(type)s hook %(hook)s priority %(prio)d; policy %(policy)s;"
                             % CHAINS[chain])
            current = chain
        lines.append("\t\t" + text)
    if current is not None:
        lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _port(value):
    if isinstance(value, bool) or value is None:
        raise MpsocksError("to_port: %r is not a port number" % (value,))
    try:
        port = int(str(value))
    except ValueError:
        raise MpsocksError("to_port: %r is not a port number" % (value,)) from None
    if not 1 <= port <= 65535:
        raise MpsocksError("to_port: %d is out of range 1..65535" % port)
    return port


def _subnets(values, option, version=None):
    """Subnet texts of the list VALUES, in order, each once; only IPv4 when VERSION is 4."""
    if not isinstance(values, list):
        raise MpsocksError("%s: expected a list of subnets, got %r" % (option, values))
    found = []
    for value in values:
        network = ip_network(value, option)
        if version and network.version != version:
            raise MpsocksError("%s: %r is not an IPv4 subnet (the proxy is reached over IPv4)"
                               % (option, value))
        if _text(network) in found:
            raise MpsocksError("%s: %s is listed twice" % (option, _text(network)))
        found.append(_text(network))
    return found


def _deletion_order(obj):
    """Rules first, then chains; a regular chain after the base chains jumping to it."""
    kind = next(iter(obj))
    if kind == "rule":
        return 0
    if kind == "chain":
        return 3 if "hook" not in obj["chain"] else 2
    return 1


class Redirect(KernelObject):
    """Table ``inet TABLE`` holding exactly the socksifier's redirect."""

    kind = "redirect"

    def label(self):
        where = " in netns %s" % self.params["netns"] if self.params.get("netns") else ""
        return "redirect in table %s %s%s" % (FAMILY, self.params.get("table") or DEFAULT_TABLE, where)

    def validate(self):
        self.table = table_name(self.params.get("table") or DEFAULT_TABLE)
        self.nft = Nft(FAMILY, self.table)
        if self.state == "absent":
            return
        for option in ("interfaces", "sources", "to_address", "to_port"):
            if self.params.get(option) in (None, []):
                raise MpsocksError("%s: required when state is present" % option)
        interfaces = []
        for name in self.params["interfaces"]:
            nft_interface_name(name, "interfaces")
            if name in interfaces:
                raise MpsocksError("interfaces: %s is listed twice" % name)
            interfaces.append(name)
        to_address = ip_address(self.params["to_address"], "to_address")
        if to_address.version != 4:
            raise MpsocksError("to_address: %r is not an IPv4 address" % self.params["to_address"])
        self.spec = {
            "table": self.table,
            "interfaces": interfaces,
            "sources": _subnets(self.params["sources"], "sources", 4),
            "exclude": _subnets(self.params.get("exclude") or [], "exclude"),
            "to_address": str(to_address),
            "to_port": _port(self.params["to_port"]),
        }

    def read(self):
        self.listing = self.nft.listing()
        if self.listing is None:
            return None
        if self.listing.mark != NFT_TABLE_COMMENT:
            raise not_ours("table: %s %s" % (FAMILY, self.table), self.listing.mark, NFT_TABLE_COMMENT)
        return describe(self.table, normalise(self.listing.objects))

    def wanted(self, current):
        return wanted_state(self.spec)

    def as_config(self, state):
        return {key: state[key] for key in CONFIG_KEYS}

    def result(self, before, after, changed):
        """The table as module input and its ``rules`` as text; the diff as readable nft text."""
        found = super().result(before, after, changed)
        found["diff"].update(before=render_text(before), after=render_text(after))
        found["rules"] = ["%s: %s" % pair for pair in after["rules"]] if after else []
        return found

    def apply(self, current, wanted):
        """One transaction replacing what was listed by what WANTED holds; without WANTED the table goes.

        Removal deletes by handle what was listed, then the chains and the table non-recursively, so the
        kernel refuses if anything was added since the listing.
        """
        listed = sorted(self.listing.objects if self.listing else [], key=_deletion_order)
        if wanted is None:
            others = [_deletion_command(obj) for obj in listed if _deletion_order(obj) == 1]
            if others:
                self.nft.apply(others)
            self.nft.delete([self.nft.rule_deletion(obj["rule"]["chain"], obj["rule"]["handle"])
                             for obj in listed if "rule" in obj]
                            + [self.nft.chain_deletion(obj["chain"]["name"], obj["chain"]["handle"])
                               for obj in listed if "chain" in obj]
                            + [self.nft.table_deletion(self.listing.handle)])
            return
        spec = {key: wanted[key] for key in CONFIG_KEYS}
        table = {"family": FAMILY, "table": self.table}
        commands = [_deletion_command(obj) for obj in listed]
        commands += [{"add": {"chain": dict(CHAINS[name], name=name, **table)}} for name in CHAIN_ORDER]
        commands += [{"add": {"rule": dict(table, chain=chain, expr=expr)}}
                     for chain, expr, _text in build(spec)]
        if self.listing is None:
            self.nft.create_and_apply(commands)
        else:
            self.nft.apply(commands)


def _deletion_command(obj):
    """The JSON command deleting listed object OBJ (a rule, a chain, a set, ...) by its handle."""
    kind, value = next(iter(obj.items()))
    target = {"family": FAMILY, "table": value["table"], "handle": value["handle"]}
    if kind == "rule":
        target["chain"] = value["chain"]
    elif kind == "ct helper":  # nft finds a ct helper by name only
        target["name"] = value["name"]
    return {"delete": {kind: target}}
