# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One route in one routing table, identified the way the kernel identifies it.

The kernel tells routes apart by table, address family, destination prefix and
metric (priority); the gateway and the device are what such a route *does*.
So ``present`` replaces whatever holds that identity with one route of
mpsocks' (protocol ``ownership.RT_PROTOCOL``), and ``absent`` deletes every
route of that identity, whatever its gateway.

``ip route append`` can give one identity several routes, and a multipath or
blackhole route is one route that is not a plain gateway. ``read()`` describes
each of them fully (type, gateway or next hops, device, scope, protocol, source,
metrics), so that a failed change puts every one of them back.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import ipaddress
import socket

from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.ownership import RT_PROTOCOL
from ansible_collections.mpsocks.mptcp.plugins.module_utils.rtnl import (
    NetlinkError,
    in_netns,
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
RTNH_F_ONLINK = 4
#: Errors with which the kernel says a gateway cannot be reached.
UNREACHABLE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN)
FAMILY_NAMES = {4: "ipv4", 6: "ipv6"}
FAMILY_VERSIONS = {"ipv4": 4, "ipv6": 6}
TYPE_NAMES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast", 6: "blackhole",
              7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat"}
SCOPE_NAMES = {0: "universe", 200: "site", 253: "link", 254: "host", 255: "nowhere"}


def _family(version):
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _number(names, value):
    """The kernel's number for VALUE, a name out of NAMES ({number: name}) or already a number."""
    for number, name in names.items():
        if name == value:
            return number
    return value


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


def _hop(gateway, index, flags, names):
    """Gateway and device of a route or of one next hop; ``onlink`` only when set."""
    hop = {"via": str(ipaddress.ip_address(gateway)) if gateway else None,
           "dev": names.get(index, "if%d" % index) if index else None}
    if flags & RTNH_F_ONLINK:
        hop["onlink"] = True
    return hop


def describe(msg, names):
    """One route message as a dict holding what it takes to add the route again.

    NAMES maps interface indexes to names. Keys that are usually unset (``nexthops``,
    ``src``, ``metrics``, ``pref``, ``onlink``) appear only when set.
    """
    route = {"type": TYPE_NAMES.get(msg["type"], msg["type"]),
             "protocol": msg["proto"],
             "scope": SCOPE_NAMES.get(msg["scope"], msg["scope"])}
    hops = msg.get_attr("RTA_MULTIPATH")
    if hops:
        route["nexthops"] = [dict(_hop(hop.get_attr("RTA_GATEWAY"), hop["oif"], hop["flags"], names),
                                  weight=hop["hops"] + 1) for hop in hops]
    else:
        route.update(_hop(msg.get_attr("RTA_GATEWAY"), msg.get_attr("RTA_OIF"), msg["flags"], names))
    source = msg.get_attr("RTA_PREFSRC")
    if source:
        route["src"] = source
    metrics = msg.get_attr("RTA_METRICS")
    if metrics and metrics.get("attrs"):
        route["metrics"] = dict(metrics["attrs"])
    if msg.get_attr("RTA_PREF"):
        route["pref"] = msg.get_attr("RTA_PREF")
    return route


class Route(KernelObject):
    """The route to ``to`` with metric ``metric`` in table ``table``."""

    kind = "route"

    def label(self):
        network = getattr(self, "network", None)
        table = getattr(self, "table", self.params.get("table") or MAIN_TABLE)
        return "route %s metric %s table %s%s" % (
            _prefix_text(network) if network is not None else self.params.get("to"),
            getattr(self, "metric", self.params.get("metric") or 0),
            "main" if table == MAIN_TABLE else table, in_netns(self.params))

    def validate(self):
        params = self.params
        self.table = table_number(params.get("table") or MAIN_TABLE)
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
        else:
            self.wanted(self.read())  # a gateway no connected network holds stops a list before it changes

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
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        return self._state([describe(msg, names) for msg in found])

    def _state(self, routes):
        return {
            "table": self.table,
            "family": FAMILY_NAMES[self.version],
            "to": _prefix_text(self.network),
            "metric": self.metric,
            "routes": routes,
        }

    def wanted(self, current):
        via = str(self.via) if self.via else None
        dev = self.dev
        if dev is None:
            kept = current["routes"] if current else []
            if len(kept) == 1 and kept[0].get("via") == via and kept[0].get("dev"):
                dev = kept[0]["dev"]  # dev left out: whatever the kernel picked stays
            else:
                dev = self._gateway_device()
        scope = "link" if via is None and self.version == 4 else "universe"
        return self._state([{"type": "unicast", "protocol": RT_PROTOCOL, "scope": scope,
                             "via": via, "dev": dev}])

    def as_config(self, state):
        """One plain route of mpsocks' as module input; anything else stays as read()."""
        routes = state["routes"]
        if len(routes) != 1 or set(routes[0]) != {"type", "protocol", "scope", "via", "dev"} \
                or (routes[0]["type"], routes[0]["protocol"]) != ("unicast", RT_PROTOCOL):
            return state
        to = state["to"]
        if to == "default" and state["family"] == "ipv6" and routes[0]["via"] is None:
            to = "::/0"  # "default" alone would mean IPv4's
        return {"to": to, "via": routes[0]["via"], "dev": routes[0]["dev"], "metric": state["metric"],
                "table": state["table"], "netns": self.params.get("netns")}

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
        """Make the identity hold exactly WANTED's routes.

        One route replaces what is there in one step; several (a restore after
        ``append``) are added one after the other once the identity is empty.
        """
        have = current["routes"] if current else []
        want = wanted["routes"] if wanted else []
        with iproute() as ipr:
            if not want or len(have) > 1 or len(want) > 1:
                # Delete one at a time until none is left (there may be several after `append`).
                for _attempt in range(64):
                    if not self._matches(ipr):
                        break
                    # Scope "nowhere" matches a route of any scope, as ip route del does.
                    self._request(ipr, "del", dict(self._identity(), scope=RT_SCOPE_NOWHERE))
            if len(want) == 1:
                self._request(ipr, "replace", self._route_args(ipr, want[0]))
            elif want:
                for route in want:
                    self._request(ipr, "append", self._route_args(ipr, route))

    def _route_args(self, ipr, route):
        """The netlink request that adds ROUTE (a ``describe()`` dict) under this identity."""
        args = dict(self._identity(), type=_number(TYPE_NAMES, route["type"]), proto=route["protocol"],
                    scope=_number(SCOPE_NAMES, route["scope"]))
        if "nexthops" in route:
            args["multipath"] = [dict(self._hop_args(ipr, hop), hops=hop["weight"] - 1)
                                 for hop in route["nexthops"]]
        else:
            args.update(self._hop_args(ipr, route))
        if "src" in route:
            args["prefsrc"] = route["src"]
        if "metrics" in route:
            args["metrics"] = route["metrics"]
        if "pref" in route:
            args["pref"] = route["pref"]
        return args

    def _hop_args(self, ipr, hop):
        args = {"flags": RTNH_F_ONLINK if hop.get("onlink") else 0}
        if hop["dev"] is not None:
            args["oif"] = link_index(ipr, hop["dev"])
            if args["oif"] is None:
                raise MpsocksError("route: dev %r does not exist" % hop["dev"])
        if hop["via"] is not None:
            args["gateway"] = hop["via"]
        return args

    def _request(self, ipr, command, args):
        try:
            ipr.route(command, **args)
        except NetlinkError as exc:
            code = exc.args[0] if exc.args else None
            reason = exc.args[-1] if exc.args else exc
            if command == "del" and code == errno.ESRCH:
                return  # already gone
            action = {"del": "deleting", "replace": "setting", "append": "putting back"}[command]
            if command == "replace" and self.via is not None and code in UNREACHABLE:
                through = " through %s" % self.dev if self.dev else ""
                raise MpsocksError("%s %s: gateway %s is not reachable%s (the kernel refused: %s)"
                                   % (action, self.label(), self.via, through, reason)) from None
            raise MpsocksError("%s %s: the kernel refused: %s" % (action, self.label(), reason)) from None
