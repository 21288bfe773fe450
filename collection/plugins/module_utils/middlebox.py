# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A "net neutrality" middlebox of an ISP namespace, as one nft table the module owns.

The table's whole content is declared by the kind; anything else in it is
replaced. Each kind is a handful of statements, every one known both as the
JSON ``nft -j`` speaks and as the text ``nft list`` prints, so the module can
read the table back in JSON and show it (diff, return value) as rule lines.

- ``strip``: a filter chain on the forward hook, before every other chain,
  resets the MPTCP option of SYNs arriving from the subscriber: plain TCP.
- ``drop-mptcp``: the same chain drops those SYNs; the client's stack retries
  without MPTCP after ``net.mptcp.syn_retrans_before_tcp_fallback``
  retransmissions (Linux 6.12 and later).
- ``optimizer``: a nat prerouting chain lets MPTCP SYNs through to the real
  server and redirects every other new TCP connection from the subscriber to
  the local proxy port.
- ``none`` (or state absent): no table.

The table carries mpsocks' mark (the comment ``ownership.NFT_TABLE_COMMENT``);
a table of that name without it is neither changed nor removed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.nft import Nft, table_name
from ansible_collections.mpsocks.mptcp.plugins.module_utils.ownership import NFT_TABLE_COMMENT, not_ours
from ansible_collections.mpsocks.mptcp.plugins.module_utils.validate import nft_interface_name

FAMILY = "inet"
DEFAULT_TABLE = "mpsocks_lab"
DEFAULT_PORT = 3129
KINDS = ("none", "strip", "drop-mptcp", "optimizer")
#: NF_IP_PRI_FIRST: the forward chain runs before any other chain on that hook.
PRIO_FIRST = -2147483648
PRIO_DSTNAT = -100
CHAINS = {
    "forward": {"type": "filter", "hook": "forward", "prio": PRIO_FIRST, "policy": "accept"},
    "prerouting": {"type": "nat", "hook": "prerouting", "prio": PRIO_DSTNAT, "policy": "accept"},
}
#: kind -> [(chain, [rule as statement names])]; the statements are in ``statements()``.
LAYOUT = {
    "none": [],
    "strip": [("forward", ["iifname", "syn", "mptcp", "counter", "reset"])],
    "drop-mptcp": [("forward", ["iifname", "syn", "mptcp", "counter", "drop"])],
    "optimizer": [
        ("prerouting", ["iifname", "mptcp", "counter", "accept"]),
        ("prerouting", ["iifname", "tcp", "counter", "redirect"]),
    ],
}


def _match(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


def statements(interface, port):
    """Every statement the module writes: name -> (text as ``nft list`` prints it, JSON expression)."""
    return {
        "iifname": ('iifname "%s"' % interface, _match({"meta": {"key": "iifname"}}, interface)),
        # SYN set, ACK clear: the opening SYN only, not a SYN/ACK.
        "syn": ("tcp flags syn / syn,ack",
                _match({"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["syn", "ack"]]}, "syn")),
        "mptcp": ("tcp option mptcp exists", _match({"tcp option": {"name": "mptcp"}}, True)),
        "tcp": ("meta l4proto tcp", _match({"meta": {"key": "l4proto"}}, "tcp")),
        "counter": ("counter", {"counter": {"packets": 0, "bytes": 0}}),
        "reset": ("reset tcp option mptcp", {"reset": {"tcp option": {"name": "mptcp"}}}),
        "drop": ("drop", {"drop": None}),
        "accept": ("accept", {"accept": None}),
        "redirect": ("redirect to :%s" % port, {"redirect": {"port": port}}),
    }


def chain_text(chain):
    """A chain's header line as ``nft list`` prints it (numeric priority)."""
    if "hook" not in chain:
        return "(regular chain)"
    return "type %s hook %s priority %s; policy %s;" % (
        chain.get("type"), chain.get("hook"), chain.get("prio"), chain.get("policy", "accept"))


def build(kind, interface, port):
    """The table content KIND wants: ``{"chains": [...], "rules": [...]}`` in normalised form."""
    known = statements(interface, port)
    names = []
    rules = []
    for chain, words in LAYOUT[kind]:
        if chain not in names:
            names.append(chain)
        rules.append({"chain": chain, "expr": [known[word][1] for word in words]})
    return {"chains": [dict({"name": name}, **CHAINS[name]) for name in names], "rules": rules}


def normalise(objects):
    """A table listing (``Nft.objects()``) reduced to what defines it: no handles, counters at 0."""
    chains, rules, other = [], [], []
    for obj in objects:
        if "chain" in obj:
            chains.append({key: value for key, value in obj["chain"].items()
                           if key not in ("family", "table", "handle")})
        elif "rule" in obj:
            expressions = [_zero(expr) for expr in obj["rule"].get("expr", [])]
            rule = {"chain": obj["rule"].get("chain"), "expr": expressions}
            if obj["rule"].get("comment") is not None:
                rule["comment"] = obj["rule"]["comment"]
            rules.append(rule)
        else:
            other.append(obj)
    content = {"chains": chains, "rules": rules}
    if other:
        content["other"] = other
    return content


def _zero(expr):
    if isinstance(expr, dict) and isinstance(expr.get("counter"), dict):
        return {"counter": {"packets": 0, "bytes": 0}}
    return expr


def _parameters(content):
    """``(interface, port)`` as the rules show them (the first iifname match, the redirect port)."""
    interface = port = None
    for rule in content["rules"]:
        for expr in rule["expr"]:
            match = expr.get("match") if isinstance(expr, dict) else None
            if (interface is None and isinstance(match, dict) and isinstance(match.get("right"), str)
                    and match.get("left") == {"meta": {"key": "iifname"}}):
                interface = match["right"]
            redirect = expr.get("redirect") if isinstance(expr, dict) else None
            if port is None and isinstance(redirect, dict) and isinstance(redirect.get("port"), int):
                port = redirect["port"]
    return interface, port


def _line(expressions, known):
    """A rule as text; an expression the module does not write is shown as its JSON."""
    words = []
    for expr in expressions:
        text = next((text for text, value in known.values() if value == expr), None)
        words.append(text if text is not None else json.dumps(expr, sort_keys=True))
    return " ".join(words)


def describe(table, content):
    """The dict read() returns for CONTENT: kind (None if no kind writes exactly this) and rule lines."""
    interface, port = _parameters(content)
    kind = next((kind for kind in KINDS[1:] if content == build(kind, interface, port)), None)
    known = statements(interface, port)
    chains = {}
    for chain in content["chains"]:
        chains[chain["name"]] = [chain_text(chain)]
    for rule in content["rules"]:
        line = _line(rule["expr"], known)
        if "comment" in rule:
            line += " comment %s" % json.dumps(rule["comment"])
        chains.setdefault(rule["chain"], ["(chain not listed)"]).append(line)
    found = {
        "table": table,
        "kind": kind,
        "interface": interface if kind else None,
        "proxy_port": port if kind == "optimizer" else None,
        "chains": chains,
    }
    if "other" in content:
        found["other"] = [json.dumps(obj, sort_keys=True) for obj in content["other"]]
    return found


def render_text(state):
    """STATE (a read() or wanted() dict) as ``nft list table`` would print it, for the diff."""
    if not state:
        return ""
    kind = state["kind"] or "unknown (not written by this module)"
    lines = ["# middlebox %s%s" % (kind, " on %s" % state["interface"] if state["interface"] else ""),
             "table %s %s {" % (FAMILY, state["table"])]
    for name in sorted(state["chains"]):
        lines.append("\tchain %s {" % name)
        lines += ["\t\t" + line for line in state["chains"][name]]
        lines.append("\t}")
    lines += ["\t# " + line for line in state.get("other", [])]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _port(value):
    if isinstance(value, bool):
        raise MpsocksError("proxy_port: %r is not a port number" % (value,))
    try:
        port = int(str(value))
    except ValueError:
        raise MpsocksError("proxy_port: %r is not a port number" % (value,)) from None
    if not 1 <= port <= 65535:
        raise MpsocksError("proxy_port: %d is out of range 1..65535" % port)
    return port


def _deletion_command(obj):
    """The JSON command deleting listed object OBJ (a rule, a chain, a set, ...) by its handle."""
    kind, value = next(iter(obj.items()))
    target = {"family": FAMILY, "table": value["table"], "handle": value["handle"]}
    if kind == "rule":
        target["chain"] = value["chain"]
    elif kind == "ct helper":  # nft finds a ct helper by name only
        target["name"] = value["name"]
    return {"delete": {kind: target}}


def _deletion_order(obj):
    """Rules before the chains holding them; a chain goes last."""
    return {"rule": 0, "chain": 2}.get(next(iter(obj)), 1)


class Middlebox(KernelObject):
    """Table ``inet TABLE`` holding exactly the rules of one middlebox kind."""

    kind = "middlebox"

    def label(self):
        where = " in netns %s" % self.params["netns"] if self.params.get("netns") else ""
        return "middlebox in table %s %s%s" % (FAMILY, self.params.get("table") or DEFAULT_TABLE, where)

    def validate(self):
        self.table = table_name(self.params.get("table") or DEFAULT_TABLE)
        behaviour = self.params.get("kind")
        if behaviour not in KINDS:
            raise MpsocksError("kind: %r is not one of %s" % (behaviour, ", ".join(KINDS)))
        self.behaviour = behaviour
        self.interface = nft_interface_name(self.params.get("interface"), "interface")
        port = self.params.get("proxy_port")
        self.port = _port(DEFAULT_PORT if port is None else port)
        self.nft = Nft(FAMILY, self.table)

    def read(self):
        self.listing = self.nft.listing()
        if self.listing is None:
            return None
        if self.listing.mark != NFT_TABLE_COMMENT:
            raise not_ours("table: %s %s" % (FAMILY, self.table), self.listing.mark, NFT_TABLE_COMMENT)
        return describe(self.table, normalise(self.listing.objects))

    def wanted(self, current):
        if self.behaviour == "none":
            return None
        return describe(self.table, build(self.behaviour, self.interface, self.port))

    def as_config(self, state):
        return {key: state[key] for key in ("table", "kind", "interface", "proxy_port")}

    def result(self, before, after, changed):
        """The table as module input and its ``chains``; the diff as readable nft text."""
        found = super().result(before, after, changed)
        found["diff"].update(before=render_text(before), after=render_text(after))
        found["chains"] = after["chains"] if after else {}
        return found

    def apply(self, current, wanted):
        """One transaction deleting, by their handles, what the table held and adding what WANTED holds.

        Without WANTED the chains and the table go too, and the kernel refuses to delete either while it
        holds something that was not there when it was listed.
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
        if not wanted["kind"]:
            raise MpsocksError("%s: cannot recreate content this module did not write" % self.label())
        content = build(wanted["kind"], wanted["interface"], wanted["proxy_port"] or self.port)
        table = {"family": FAMILY, "table": self.table}
        commands = [_deletion_command(obj) for obj in listed]
        commands += [{"add": {"chain": dict(chain, **table)}} for chain in content["chains"]]
        commands += [{"add": {"rule": dict(rule, **table)}} for rule in content["rules"]]
        if self.listing is None:
            self.nft.create_and_apply(commands)
        else:
            self.nft.apply(commands)
