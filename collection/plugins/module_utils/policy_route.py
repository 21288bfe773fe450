# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Source routing: the ``ip rule`` that selects a table, and that table's routes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import socket

from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.rtnl import (
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
FAMILIES = (socket.AF_INET, socket.AF_INET6)


def _family(version):
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _msg_table(msg):
    """Table of a rule or route message (tables above 255 live in an attribute)."""
    for attr in ("FRA_TABLE", "RTA_TABLE"):
        value = msg.get_attr(attr)
        if value is not None:
            return value
    return msg["table"]


def _prefix(address, length, family):
    if address is None:
        return "default" if length == 0 else None
    if length == (32 if family == socket.AF_INET else 128):
        return address
    return "%s/%d" % (address, length)


def _rule_dict(msg):
    rule = {"priority": msg.get_attr("FRA_PRIORITY") or 0}
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
    for msg in ipr.get_routes(family=_family(version), table=MAIN_TABLE):
        if msg["dst_len"] == 0 and msg.get_attr("RTA_OIF") == index and _msg_table(msg) == MAIN_TABLE:
            return msg.get_attr("RTA_GATEWAY")
    return False


class PolicyRoute(KernelObject):
    """One routing table the project owns plus the rule that sends traffic to it."""

    kind = "policy_route"

    def label(self):
        return "policy route table %s" % self.params["table"]

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
        self.rule = {"priority": self._priority()}
        self.version = 4
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
        self.routes = [self._route_spec(i, r) for i, r in enumerate(self.params.get("routes") or [])]

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
            to = str(network) if network.prefixlen < network.max_prefixlen else str(network.network_address)
        via = spec.get("via")
        if via not in (None, "auto"):
            via = str(ip_address(via, option + ".via"))
        return {"to": to, "via": via, "dev": interface_name(spec.get("dev"), option + ".dev")}

    def read(self):
        with iproute() as ipr:
            names = dict((link["index"], link.get_attr("IFLA_IFNAME")) for link in ipr.get_links())
            rules, routes = [], []
            for family in FAMILIES:
                rules += [_rule_dict(m) for m in ipr.get_rules(family=family) if _msg_table(m) == self.table]
                for msg in ipr.get_routes(family=family, table=self.table):
                    if _msg_table(msg) != self.table:
                        continue
                    routes.append({
                        "to": _prefix(msg.get_attr("RTA_DST"), msg["dst_len"], family),
                        "via": msg.get_attr("RTA_GATEWAY"),
                        "dev": names.get(msg.get_attr("RTA_OIF")),
                    })
        if not rules and not routes:
            return None
        return {"table": self.table, "rules": sorted(rules, key=_rule_order),
                "routes": sorted(routes, key=_route_order)}

    def wanted(self, current):
        with iproute() as ipr:
            routes = [self._resolve(ipr, spec, position) for position, spec in enumerate(self.routes)]
        return {"table": self.table, "rules": [self.rule], "routes": sorted(routes, key=_route_order)}

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
                "routes[%d].via: auto, but %s has no default route in the main table; "
                "give the gateway address instead" % (position, spec["dev"]))
        return dict(spec, via=gateway)

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
        args = {"table": self.table, "priority": rule["priority"]}
        family = socket.AF_INET
        if "iif" in rule:
            args["iifname"] = rule["iif"]
        if "from" in rule:
            network = ipaddress.ip_network(rule["from"])
            family = _family(network.version)
            args.update(src=str(network.network_address), src_len=network.prefixlen)
        if "to" in rule:
            network = ipaddress.ip_network(rule["to"])
            family = _family(network.version)
            args.update(dst=str(network.network_address), dst_len=network.prefixlen)
        with netlink_errors("%s rule %r for table %d" % (command, rule, self.table)):
            ipr.rule(command, family=family, **args)

    def _route(self, ipr, command, route):
        args = {"table": self.table, "oif": link_index(ipr, route["dev"]) if route["dev"] else None}
        to = route["to"]
        version = 6 if ":" in (to + (route["via"] or "")) else 4
        if to == "default":
            args.update(dst="0.0.0.0" if version == 4 else "::", dst_len=0)
        else:
            network = ipaddress.ip_network(to)
            args.update(dst=str(network.network_address), dst_len=network.prefixlen)
        if route["via"]:
            args["gateway"] = route["via"]
        if args["oif"] is None:
            if command == "del":
                return  # the device is gone, and its routes with it
            raise MpsocksError("route %r: interface %r does not exist" % (to, route["dev"]))
        with netlink_errors("%s route %s in table %d" % (command, to, self.table)):
            ipr.route(command, family=_family(version), **args)


def _rule_order(rule):
    return (rule["priority"], rule.get("iif", ""), rule.get("from", ""), rule.get("to", ""))


def _route_order(route):
    return (route["to"], route["dev"] or "", route["via"] or "")
