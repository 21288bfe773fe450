# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One route in one routing table, identified the way the kernel identifies it.

The kernel tells routes apart by table, address family, destination prefix and
metric (priority); the gateway and the device are what such a route *does*.
So ``present`` replaces a route with the same identity, and ``absent`` deletes
it whatever its gateway.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import ipaddress
import socket

from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.rtnl import (
    NetlinkError,
    iproute,
    link_index,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.validate import (
    interface_name,
)

MAIN_TABLE = 254
LOCAL_TABLE = 255
MAX_TABLE = 2 ** 32 - 1
MAX_METRIC = 2 ** 32 - 1
#: IPv6 gives a route added with metric 0 this metric instead (IP6_RT_PRIO_USER).
IPV6_DEFAULT_METRIC = 1024
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255
#: Errors with which the kernel says a gateway cannot be reached.
UNREACHABLE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN)
FAMILY_NAMES = {4: "ipv4", 6: "ipv6"}


def _family(version):
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _msg_table(msg):
    """Table of a route message (tables above 255 live in RTA_TABLE)."""
    value = msg.get_attr("RTA_TABLE")
    return msg["table"] if value is None else value


def table_number(value, option="table"):
    """Any routing table but 0 (unspec) and 255 (local, the kernel's own addresses)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise MpsocksError("%s: %r is not a routing table number" % (option, value)) from None
    if number == LOCAL_TABLE:
        raise MpsocksError("%s: table 255 is the kernel's 'local' table; use another number" % option)
    if not 1 <= number <= MAX_TABLE:
        raise MpsocksError("%s: table %d is out of range 1..%d (and not 255)" % (option, number, MAX_TABLE))
    return number


def destination(value, version_hint):
    """Parse option ``to``: ``default``, ``ADDR/LEN`` or a bare address (a host route)."""
    text = str(value).strip()
    if text == "default":
        return ipaddress.ip_network("0.0.0.0/0" if version_hint != 6 else "::/0")
    try:
        network = ipaddress.ip_network(text)
    except ValueError:
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise MpsocksError("to: %r is not a prefix (e.g. 198.19.0.0/24, fd00::/64 or default)"
                               % text) from None
        raise MpsocksError("to: %r has host bits set; the prefix is %s"
                           % (text, ipaddress.ip_network(text, strict=False))) from None
    return network


def _prefix_text(network):
    return "default" if network.prefixlen == 0 else str(network)


class Route(KernelObject):
    """The route to ``to`` with metric ``metric`` in table ``table``."""

    kind = "route"

    def label(self):
        network = getattr(self, "network", None)
        table = getattr(self, "table", self.params.get("table", MAIN_TABLE))
        return "route %s metric %s table %s" % (
            _prefix_text(network) if network is not None else self.params.get("to"),
            getattr(self, "metric", self.params.get("metric") or 0),
            "main" if table == MAIN_TABLE else table)

    def validate(self):
        params = self.params
        self.table = table_number(params.get("table", MAIN_TABLE))
        metric = params.get("metric") or 0
        if not 0 <= metric <= MAX_METRIC:
            raise MpsocksError("metric: %d is out of range 0..%d" % (metric, MAX_METRIC))
        self.via = None
        if params.get("via") not in (None, ""):
            try:
                self.via = ipaddress.ip_address(str(params["via"]).strip())
            except ValueError:
                raise MpsocksError("via: %r is not an IP address" % (params["via"],)) from None
        self.network = destination(params["to"], self.via.version if self.via else None)
        self.version = self.network.version
        self.metric = IPV6_DEFAULT_METRIC if self.version == 6 and metric == 0 else metric
        self.dev = params.get("dev") or None
        if self.dev is not None:
            interface_name(self.dev, "dev")
        if self.state == "absent":
            return
        if self.via is None and self.dev is None:
            raise MpsocksError("via/dev: give a gateway (via), an interface (dev) or both for %s"
                               % _prefix_text(self.network))
        if self.via is not None:
            if self.via.version != self.version:
                raise MpsocksError("via: %s is an IPv%d address but the route to %s is IPv%d"
                                   % (self.via, self.via.version, _prefix_text(self.network), self.version))
            if self.via.is_multicast or self.via.is_unspecified:
                raise MpsocksError("via: %s cannot be a gateway" % self.via)
            if self.version == 6 and self.via.is_link_local and self.dev is None:
                raise MpsocksError("dev: the link-local gateway %s needs the interface it is on" % self.via)
        if self.dev is not None:
            with iproute() as ipr:
                if link_index(ipr, self.dev) is None:
                    raise MpsocksError("route: dev %r does not exist" % self.dev)

    # -- reading -------------------------------------------------------------

    def _matches(self, ipr):
        """Every route message with this route's identity (more than one only after ``append``)."""
        found = []
        for msg in ipr.get_routes(family=_family(self.version), table=self.table):
            if (_msg_table(msg) == self.table and msg["dst_len"] == self.network.prefixlen
                    and msg["tos"] == 0 and (msg.get_attr("RTA_PRIORITY") or 0) == self.metric
                    and msg["type"] != 0):
                dst = msg.get_attr("RTA_DST")
                if self.network.prefixlen == 0 or (
                        dst is not None and ipaddress.ip_address(dst) == self.network.network_address):
                    found.append(msg)
        return found

    def read(self):
        with iproute() as ipr:
            found = self._matches(ipr)
            if not found:
                return None
            msg = found[0]
            single = len(found) == 1 and msg["type"] == RTN_UNICAST and not msg.get_attr("RTA_MULTIPATH")
            index = msg.get_attr("RTA_OIF") if single else None
            dev = None
            if index is not None:
                links = ipr.get_links(index)
                dev = links[0].get_attr("IFLA_IFNAME") if links else None
            via = msg.get_attr("RTA_GATEWAY") if single else None
        return self._state(via, dev)

    def _state(self, via, dev):
        return {
            "table": self.table,
            "family": FAMILY_NAMES[self.version],
            "to": _prefix_text(self.network),
            "metric": self.metric,
            "via": str(ipaddress.ip_address(via)) if via else None,
            "dev": dev,
        }

    def wanted(self, current):
        dev = self.dev
        via = str(self.via) if self.via else None
        if dev is None:
            if current and current["via"] == via and current["dev"]:
                dev = current["dev"]  # dev left out: whatever the kernel picked stays
            else:
                dev = self._gateway_device()
        return self._state(via, dev)

    def _gateway_device(self):
        """The interface the kernel will pick for gateway ``via`` when no dev is given.

        Like the kernel: the most specific route without a gateway (on-link, and for
        IPv4 of scope link or narrower) that holds the gateway, in the route's own
        table first and then in the main table.
        """
        tables = [self.table] if self.table == MAIN_TABLE else [self.table, MAIN_TABLE]
        with iproute() as ipr:
            for table in tables:
                best = None
                for msg in ipr.get_routes(family=_family(self.version), table=table):
                    if (_msg_table(msg) != table or msg["type"] != RTN_UNICAST
                            or msg.get_attr("RTA_GATEWAY") or msg.get_attr("RTA_MULTIPATH")
                            or msg.get_attr("RTA_OIF") is None
                            or (self.version == 4 and msg["scope"] == RT_SCOPE_UNIVERSE)):
                        continue
                    network = ipaddress.ip_network("%s/%d" % (
                        msg.get_attr("RTA_DST") or ("0.0.0.0" if self.version == 4 else "::"),
                        msg["dst_len"]), strict=False)
                    if self.via not in network:
                        continue
                    key = (-network.prefixlen, msg.get_attr("RTA_PRIORITY") or 0)
                    if best is None or key < best[0]:
                        best = (key, msg.get_attr("RTA_OIF"))
                if best is not None:
                    links = ipr.get_links(best[1])
                    return links[0].get_attr("IFLA_IFNAME")
        raise MpsocksError("%s: gateway %s is not reachable: no directly connected network in %s holds it; "
                           "give dev, or add the address first"
                           % (self.label(), self.via,
                              "table main" if self.table == MAIN_TABLE else "table %d or main" % self.table))

    # -- changing ------------------------------------------------------------

    def _identity(self):
        return {
            "family": _family(self.version),
            "dst": str(self.network.network_address),
            "dst_len": self.network.prefixlen,
            "table": self.table,
            "priority": self.metric,
            "tos": 0,
        }

    def apply(self, current, wanted):
        with iproute() as ipr:
            duplicates = len(self._matches(ipr)) > 1
            if wanted is None or duplicates:
                # Delete one at a time until none is left (there may be several after `append`).
                for _attempt in range(64):
                    if not self._matches(ipr):
                        break
                    # Scope "nowhere" matches a route of any scope, as ip route del does.
                    self._request(ipr, "del", dict(self._identity(), scope=RT_SCOPE_NOWHERE))
            if wanted is None:
                return
            args = self._identity()
            args.update(type="unicast", proto="static",
                        scope=RT_SCOPE_LINK if wanted["via"] is None and self.version == 4
                        else RT_SCOPE_UNIVERSE,
                        oif=link_index(ipr, wanted["dev"]))
            if args["oif"] is None:
                raise MpsocksError("route: dev %r does not exist" % wanted["dev"])
            if wanted["via"]:
                args["gateway"] = wanted["via"]
            self._request(ipr, "replace", args)

    def _request(self, ipr, command, args):
        try:
            ipr.route(command, **args)
        except NetlinkError as exc:
            code = exc.args[0] if exc.args else None
            reason = exc.args[-1] if exc.args else exc
            if command == "del" and code == errno.ESRCH:
                return  # already gone
            action = {"del": "deleting", "replace": "setting"}[command]
            if command == "replace" and self.via is not None and code in UNREACHABLE:
                through = " through %s" % self.dev if self.dev else ""
                raise MpsocksError("%s %s: gateway %s is not reachable%s (the kernel refused: %s)"
                                   % (action, self.label(), self.via, through, reason)) from None
            raise MpsocksError("%s %s: the kernel refused: %s" % (action, self.label(), reason)) from None
