# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Source routing: the ``ip rule`` that selects a table, and that table's routes.

Only rules and routes marked with ``ownership.RT_PROTOCOL`` are mpsocks': the
rules pointing at the table and the routes in it that carry another protocol
are a user's, and are neither counted, changed nor removed (they are reported
as ``foreign``). Everything is read per address family: the family of a
policy is the family of its rule's selector, and its routes are of that family.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import socket

from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.ownership import RT_PROTOCOL
from ansible_collections.mpsocks.mptcp.plugins.module_utils.rtnl import (
    in_netns,
    iproute,
    link_index,
    netlink_errors,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.validate import (
    interface_name,
    ip_address,
    ip_network,
    table_id,
)

MAIN_TABLE = 254
FIRST_UNUSABLE_PRIORITY = 32766  # the kernel's own "lookup main" rule
#: The metric of every route in the table: the kernel's default (IPv6 stores 0 as 1024).
ROUTE_METRIC = {4: 0, 6: 1024}
RT_SCOPE_NOWHERE = 255
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}
FAMILY_NAMES = {4: "ipv4", 6: "ipv6"}


def _msg_table(msg):
    """Table of a rule or route message (tables above 255 live in an attribute)."""
    for attr in ("FRA_TABLE", "RTA_TABLE"):
        value = msg.get_attr(attr)
        if value is not None:
            return value
    return msg["table"]


def _prefix(address, length, version):
    if address is None:
        return "default" if length == 0 else None
    if length == (32 if version == 4 else 128):
        return address
    return "%s/%d" % (address, length)


def _rule_dict(msg, version):
    rule = {"family": FAMILY_NAMES[version], "priority": msg.get_attr("FRA_PRIORITY") or 0}
    if msg.get_attr("FRA_IIFNAME"):
        rule["iif"] = msg.get_attr("FRA_IIFNAME")
    if msg.get_attr("FRA_SRC"):
        rule["from"] = "%s/%d" % (msg.get_attr("FRA_SRC"), msg["src_len"])
    if msg.get_attr("FRA_DST"):
        rule["to"] = "%s/%d" % (msg.get_attr("FRA_DST"), msg["dst_len"])
    return rule


def default_gateway(ipr, index, version):
    """The gateway (or None for a point-to-point link) of the main table's default via INDEX.

    Returns False when the main table has no default route through that link.
    """
    for msg in ipr.get_routes(family=FAMILIES[version], table=MAIN_TABLE):
        if msg["dst_len"] == 0 and msg.get_attr("RTA_OIF") == index and _msg_table(msg) == MAIN_TABLE:
            return msg.get_attr("RTA_GATEWAY")
    return False


def _tables_holding_ours(ipr):
    """The tables that hold a rule or a route of mpsocks', of either family, in one dump of each (the
    kernel sends every table's routes whichever table is asked for)."""
    tables = set()
    for family in FAMILIES.values():
        tables.update(_msg_table(msg) for msg in ipr.get_rules(family=family)
                      if msg.get_attr("FRA_PROTOCOL") == RT_PROTOCOL)
        tables.update(_msg_table(msg) for msg in ipr.get_routes(family=family) if msg["proto"] == RT_PROTOCOL)
    return tables


class PolicyRoute(KernelObject):
    """The rule of mpsocks that sends traffic to a table, and mpsocks' routes in that table."""

    kind = "policy_route"

    def __init__(self, params):
        super().__init__(params)
        #: What read() last found in the table that is not mpsocks' (left alone).
        self.foreign = {"rules": [], "routes": []}

    def label(self):
        return "policy route table %s%s" % (self.params["table"], in_netns(self.params))

    def validate(self):
        self.table = table_id(self.params["table"], "table")
        if self.state == "absent":
            return
        iif, source = self.params.get("iif"), self.params.get("source")
        target = self.params.get("destination")
        if iif and source:
            raise MpsocksError("iif/source: give only one of them to select the traffic")
        if not (iif or source or target):
            raise MpsocksError("iif/source/destination: give at least one of them to select the traffic")
        # The selector's addresses decide the family; an interface alone selects IPv4.
        self.version = 4
        self.rule = {"priority": self._priority()}
        if iif:
            self.rule["iif"] = interface_name(iif, "iif")
        if source:
            network = ip_network(source, "source")
            self.rule["from"] = str(network)
            self.version = network.version
        if target:
            network = ip_network(target, "destination")
            if source and network.version != self.version:
                raise MpsocksError("destination: %s is IPv%d but source %s is IPv%d"
                                   % (network, network.version, self.rule["from"], self.version))
            self.rule["to"] = str(network)
            self.version = network.version
        self.rule["family"] = FAMILY_NAMES[self.version]
        self.routes = [self._route_spec(i, r) for i, r in enumerate(self.params.get("routes") or [])]
        seen = set()
        for position, spec in enumerate(self.routes):
            if spec["to"] in seen:
                raise MpsocksError("routes[%d].to: %s is listed twice; a table holds one route "
                                   "per destination" % (position, spec["to"]))
            seen.add(spec["to"])
        # What the kernel must hold for the change (devices, gateways, a free place for each
        # route) is checked here too, so that a list stops before its first item changes.
        self.wanted(self.read())

    def _priority(self):
        priority = self.params.get("priority")
        if priority is None:
            if self.table >= FIRST_UNUSABLE_PRIORITY:
                raise MpsocksError("priority: required when table (%d) is %d or more"
                                   % (self.table, FIRST_UNUSABLE_PRIORITY))
            return self.table
        if not 1 <= priority < FIRST_UNUSABLE_PRIORITY:
            raise MpsocksError("priority: %d is out of range 1..%d (the main table's rule is at %d)"
                               % (priority, FIRST_UNUSABLE_PRIORITY - 1, FIRST_UNUSABLE_PRIORITY))
        return priority

    def _route_spec(self, position, spec):
        option = "routes[%d]" % position
        to = spec.get("to") or "default"
        if to != "default":
            network = ip_network(to, option + ".to")
            self._same_family(network.version, option + ".to", network)
            if network.prefixlen == 0:
                to = "default"
            elif network.prefixlen == network.max_prefixlen:
                to = str(network.network_address)
            else:
                to = str(network)
        via = spec.get("via")
        if via not in (None, "auto"):
            address = ip_address(via, option + ".via")
            self._same_family(address.version, option + ".via", address)
            via = str(address)
        return {"family": FAMILY_NAMES[self.version], "to": to, "via": via,
                "dev": interface_name(spec.get("dev"), option + ".dev")}

    def _same_family(self, version, option, value):
        if version != self.version:
            raise MpsocksError("%s: %s is IPv%d but the rule selects IPv%d traffic (%s)"
                               % (option, value, version, self.version, self._selector_text()))

    def _selector_text(self):
        parts = ["%s %s" % (key, self.rule[key]) for key in ("iif", "from", "to") if key in self.rule]
        return " ".join(parts)

    # -- reading -------------------------------------------------------------

    def read(self):
        """mpsocks' rules pointing at the table and its routes in it, of both families; None if none."""
        rules, routes = [], []
        self.foreign = {"rules": [], "routes": []}
        with iproute() as ipr:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            for version, family in FAMILIES.items():
                for msg in ipr.get_rules(family=family):
                    if _msg_table(msg) != self.table:
                        continue
                    rule = _rule_dict(msg, version)
                    if msg.get_attr("FRA_PROTOCOL") == RT_PROTOCOL:
                        rules.append(rule)
                    else:
                        self.foreign["rules"].append(dict(rule, protocol=msg.get_attr("FRA_PROTOCOL") or 0))
                for msg in ipr.get_routes(family=family, table=self.table):
                    if _msg_table(msg) != self.table:
                        continue
                    route = {
                        "family": FAMILY_NAMES[version],
                        "to": _prefix(msg.get_attr("RTA_DST"), msg["dst_len"], version),
                        "via": msg.get_attr("RTA_GATEWAY"),
                        "dev": names.get(msg.get_attr("RTA_OIF")),
                    }
                    if msg["proto"] == RT_PROTOCOL:
                        routes.append(route)
                    else:
                        self.foreign["routes"].append(dict(route, protocol=msg["proto"],
                                                           metric=msg.get_attr("RTA_PRIORITY") or 0))
        if not rules and not routes:
            return None
        return {"table": self.table, "rules": sorted(rules, key=_rule_order),
                "routes": sorted(routes, key=_route_order)}

    def wanted(self, current):
        """The rule and routes, ``via: auto`` resolved; fails if a route of a user's is in the way."""
        with iproute() as ipr:
            routes = [self._resolve(ipr, spec, position) for position, spec in enumerate(self.routes)]
        mine = current["routes"] if current else []
        for route in routes:
            if route not in mine:
                self._refuse_foreign_clash(route)
        return {"table": self.table, "rules": [self.rule], "routes": sorted(routes, key=_route_order)}

    def _refuse_foreign_clash(self, route):
        """Fail if a route that is not mpsocks' holds the place ROUTE needs (same destination and metric)."""
        for other in self.foreign["routes"]:
            if ((other["family"], other["to"]) == (route["family"], route["to"])
                    and other["metric"] in (0, ROUTE_METRIC[self.version])):
                raise MpsocksError(
                    "table %d already holds a route to %s (via %s dev %s, protocol %s) that mpsocks did not "
                    "make: mpsocks neither adopts nor removes it; remove it or use another table"
                    % (self.table, route["to"], other["via"], other["dev"], other["protocol"]))

    def _resolve(self, ipr, spec, position):
        """Check the device exists and turn ``via: auto`` into the uplink's gateway."""
        index = link_index(ipr, spec["dev"])
        if index is None:
            raise MpsocksError("routes[%d].dev: interface %r does not exist" % (position, spec["dev"]))
        if spec["via"] != "auto":
            return spec
        gateway = default_gateway(ipr, index, self.version)
        if gateway is False:
            raise MpsocksError(
                "routes[%d].via: auto, but %s has no default route in the main table (IPv%d); "
                "give the gateway address instead" % (position, spec["dev"], self.version))
        return dict(spec, via=gateway)

    def as_config(self, state):
        """One rule and routes of its family as module input; anything else stays as read()."""
        rules = state["rules"]
        if len(rules) != 1 or any(route["family"] != rules[0]["family"] for route in state["routes"]):
            return state
        rule = rules[0]
        config = {"table": state["table"], "priority": rule["priority"], "iif": rule.get("iif"),
                  "source": rule.get("from"), "destination": rule.get("to"),
                  "routes": [{"to": route["to"], "via": route["via"], "dev": route["dev"]}
                             for route in state["routes"]],
                  "netns": self.params.get("netns")}
        if rule["family"] == "ipv6" and not (config["source"] or config["destination"]):
            return state  # an interface alone would select IPv4
        return config

    def result(self, before, after, changed):
        result = super().result(before, after, changed)
        result["foreign"] = self.foreign
        return result

    @classmethod
    def strays(cls, params, declared):
        """For overridden: the tables of ``tables`` that hold something of mpsocks' and no item declares."""
        if not params.get("tables"):
            raise MpsocksError("tables: state overridden needs the tables in its scope "
                               "(e.g. tables: [6606, 6607])")
        netns = params.get("netns")
        kept = {obj.table for obj in declared if obj.params.get("netns") == netns}
        scope = {table_id(value, "tables") for value in params["tables"]} - kept
        with iproute() as ipr:
            holding = _tables_holding_ours(ipr)
        found = []
        for table in sorted(scope & holding):
            obj = cls({"table": table, "state": "absent", "netns": netns})
            obj.validate()
            found.append(obj)
        return found

    # -- changing ------------------------------------------------------------

    def apply(self, current, wanted):
        current = current or {"rules": [], "routes": []}
        wanted = wanted or {"rules": [], "routes": []}
        with iproute() as ipr:
            for rule in current["rules"]:
                if rule not in wanted["rules"]:
                    self._rule(ipr, "del", rule)
            for route in current["routes"]:
                if route not in wanted["routes"]:
                    self._route(ipr, "del", route)
            for route in wanted["routes"]:
                if route not in current["routes"]:
                    self._route(ipr, "add", route)
            for rule in wanted["rules"]:
                if rule not in current["rules"]:
                    self._rule(ipr, "add", rule)

    def _rule(self, ipr, command, rule):
        """Add or delete RULE, marked: a delete matches the mark, so a user's twin rule stays."""
        version = 6 if rule["family"] == "ipv6" else 4
        args = {"family": FAMILIES[version], "table": self.table, "priority": rule["priority"],
                "protocol": RT_PROTOCOL}
        if "iif" in rule:
            args["iifname"] = rule["iif"]
        if "from" in rule:
            network = ipaddress.ip_network(rule["from"])
            args.update(src=str(network.network_address), src_len=network.prefixlen)
        if "to" in rule:
            network = ipaddress.ip_network(rule["to"])
            args.update(dst=str(network.network_address), dst_len=network.prefixlen)
        with netlink_errors("%s rule %s for table %d" % (command, _rule_text(rule), self.table)):
            ipr.rule(command, **args)

    def _route(self, ipr, command, route):
        """Add or delete ROUTE, marked: a delete matches the mark, gateway and device."""
        version = 6 if route["family"] == "ipv6" else 4
        args = {"family": FAMILIES[version], "table": self.table, "proto": RT_PROTOCOL,
                "oif": link_index(ipr, route["dev"]) if route["dev"] else None}
        if route["to"] == "default":
            args.update(dst="0.0.0.0" if version == 4 else "::", dst_len=0)
        else:
            network = ipaddress.ip_network(route["to"])
            args.update(dst=str(network.network_address), dst_len=network.prefixlen)
        if route["via"]:
            args["gateway"] = route["via"]
        if args["oif"] is None:
            if command == "del":
                return  # the device is gone, and its routes with it
            raise MpsocksError("route %r: interface %r does not exist" % (route["to"], route["dev"]))
        if command == "del":
            args["scope"] = RT_SCOPE_NOWHERE  # any scope, as ip route del does
        what = "%s %s route %s in table %d" % (command, route["family"], route["to"], self.table)
        with netlink_errors(what):
            ipr.route(command, **args)


def _rule_text(rule):
    return " ".join(["priority %s" % rule["priority"]] + ["%s %s" % (key, rule[key])
                                                          for key in ("iif", "from", "to") if key in rule])


def _rule_order(rule):
    return (rule["family"], rule["priority"], rule.get("iif", ""), rule.get("from", ""), rule.get("to", ""))


def _route_order(route):
    return (route["family"], route["to"], route["dev"] or "", route["via"] or "")
