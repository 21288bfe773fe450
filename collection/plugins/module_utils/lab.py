# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's plan: every namespace, link, address, route, shaper, middlebox and server.

``lab_plan()`` is pure: from a few settings it derives the whole topology as plain data, one
list per kind of object in the form its module's ``config`` takes, so the lab role makes one
module call per kind. ``mpsocks-run lab status`` prints it, the tests read it.

::

  host ══ uplink i ══ isp i ─┐
  (lab0 198.18.i.2)  (cust)  └ r1 ─ r2 ─ ... ─ r(hops-1) ─ net (servers on lo)

Addresses come from 198.18.0.0/15, the block reserved for benchmarking (RFC 2544):
uplink i is 198.18.i.0/24 (host .2, ISP .1), ISP i's link to the core 198.18.(64+i).0/24,
router link j 198.18.(128+j).0/24, the servers 198.19.0.0/24 (held by the net namespace's
link towards the ISPs).  The net namespace also runs the lab's DNS server (dnsmasq on 198.19.0.53,
no upstream, no DHCP) for the servers' names under ``lab.test`` (RFC 6761 reserves ``.test``),
so a SOCKS proxy can resolve ``check.lab.test`` as a browser's proxy resolves names on the internet.
A server's packet crosses
``hops`` routers (the ISP and hops-1 core routers), so it reaches the host with TTL 64-hops.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError

NAME_PATTERN = re.compile(r"[a-z][a-z0-9]{0,9}\Z")
UPLINK_PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9]{0,10}\Z")
MIDDLEBOXES = ("none", "optimizer", "strip", "drop-mptcp")
MAX_UPLINKS = 8
MAX_HOPS = 40
LAB_NETWORK = "198.18.0.0/15"
SERVER_NETWORK = "198.19.0.0/24"
SERVERS = (
    # name, address, extra arguments of the server program
    ("check", "198.19.0.10", []),
    ("download", "198.19.0.11", []),
    ("plain", "198.19.0.12", ["--tcp"]),
)
SERVER_PORT = 80
#: The lab's DNS server: its address (in the server network) and the domain of the servers' names.
DNS_ADDRESS = "198.19.0.53"
DNS_DOMAIN = "lab.test"
DNS_PORT = 53
#: The servers' program, copied into the lab's run folder.
SERVER_PROGRAM = "mpsocks_lab_server.py"
#: The optimizer proxy's SYN/ACK: TTL, MSS and a window clamp that gives window scale 5 (a Linux
#: host announces 7 or more); its terminated flows go to HTB class 1:20 (hexadecimal, as tc writes it).
OPTIMIZER = {
    "port": 3129,
    "ttl": 128,
    "mss": 1360,
    "window_clamp": 1048576,
    "wscale": 5,
    "priority_class": 0x20,
}
ISP_INTERFACE = "cust"
CORE_INTERFACE = "core"
DEFAULTS = {
    "name": "mpslab",
    "uplinks": [{}, {}],
    "hops": 12,
    "host_netns": True,
    "host_mptcp": True,
    "uplink_prefix": "lab",
    "table_base": 6650,
    "run_root": "/run/mpsocks/lab",
    "python": "python3",
}
#: The MPTCP limits of the servers: accept as many joins as the path manager allows.
SERVER_LIMITS = {"subflows": 8, "add_addr_accepted": 8, "enabled": True}
UPLINK_DEFAULTS = {"rate_mbit": 20, "middlebox": "none", "optimizer_rate_mbit": None, "delay_ms": 0}


def owner(name):
    """The owner mark of lab NAME's namespaces (see the netns module)."""
    return "lab:%s" % name


def _number(value, option, low, high, integer=False):
    """VALUE as a number within [LOW, HIGH], or a one-line error naming OPTION."""
    if isinstance(value, bool):
        raise MpsocksError("%s: %r is not a number" % (option, value))
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise MpsocksError(
            "%s: %r is not a%s number" % (option, value, "n integer" if integer else "")
        ) from None
    if integer and number != float(value):
        raise MpsocksError("%s: %r is not an integer" % (option, value))
    if not low <= number <= high:
        raise MpsocksError("%s: %s is outside %s..%s" % (option, value, low, high))
    return int(number) if integer or number == int(number) else number


def _uplink_settings(position, item):
    """One uplink's settings with defaults filled in; a rate alone may be given as a number."""
    label = "uplinks[%d]" % position
    if item is None:
        item = {}
    elif not isinstance(item, dict):
        item = {"rate_mbit": item}
    unknown = sorted(set(item) - set(UPLINK_DEFAULTS))
    if unknown:
        raise MpsocksError(
            "%s: unknown setting %r (known: %s)" % (label, unknown[0], ", ".join(UPLINK_DEFAULTS))
        )
    settings = dict(UPLINK_DEFAULTS, **{key: value for key, value in item.items() if value is not None})
    settings["rate_mbit"] = _number(settings["rate_mbit"], label + ".rate_mbit", 0.1, 10000)
    if settings["middlebox"] not in MIDDLEBOXES:
        raise MpsocksError(
            "%s.middlebox: %r is not one of %s" % (label, settings["middlebox"], ", ".join(MIDDLEBOXES))
        )
    if settings["optimizer_rate_mbit"] is not None:
        if settings["middlebox"] != "optimizer":
            raise MpsocksError("%s.optimizer_rate_mbit: only an optimizer uplink has one" % label)
        settings["optimizer_rate_mbit"] = _number(
            settings["optimizer_rate_mbit"], label + ".optimizer_rate_mbit", 0.1, 10000
        )
    settings["delay_ms"] = _number(settings["delay_ms"], label + ".delay_ms", 0, 10000)
    return settings


def _settings(params):
    """PARAMS with defaults filled in and checked; one-line errors name the bad setting."""
    settings = dict(DEFAULTS, **{key: value for key, value in params.items() if value is not None})
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise MpsocksError("lab: unknown setting %r" % unknown[0])
    if not isinstance(settings["name"], str) or not NAME_PATTERN.match(settings["name"]):
        raise MpsocksError(
            "name: %r must be 1-10 lower-case letters or digits, starting with a letter" % (settings["name"],)
        )
    if not isinstance(settings["uplink_prefix"], str) or not UPLINK_PREFIX_PATTERN.match(
        settings["uplink_prefix"]
    ):
        raise MpsocksError(
            "uplink_prefix: %r must be 1-11 lower-case letters or digits, starting with a letter"
            % (settings["uplink_prefix"],)
        )
    uplinks = settings["uplinks"]
    if not isinstance(uplinks, list) or not 1 <= len(uplinks) <= MAX_UPLINKS:
        raise MpsocksError("uplinks: give 1 to %d uplinks" % MAX_UPLINKS)
    settings["uplinks"] = [_uplink_settings(position, item) for position, item in enumerate(uplinks)]
    settings["hops"] = _number(settings["hops"], "hops", 1, MAX_HOPS, integer=True)
    settings["table_base"] = _number(
        settings["table_base"], "table_base", 1, 32000 - MAX_UPLINKS, integer=True
    )
    for option in ("host_netns", "host_mptcp"):
        if not isinstance(settings[option], bool):
            raise MpsocksError("%s: %r is not a boolean" % (option, settings[option]))
    if not isinstance(settings["python"], str) or not settings["python"]:
        raise MpsocksError("python: %r is not a program name" % (settings["python"],))
    if not os.path.isabs(str(settings["run_root"])):
        raise MpsocksError("run_root: %r is not an absolute path" % (settings["run_root"],))
    return settings


def _veth(netns, name, addresses, peer_netns, peer, peer_addresses):
    return {
        "netns": netns,
        "name": name,
        "addresses": addresses,
        "peer_netns": peer_netns,
        "peer": peer,
        "peer_addresses": peer_addresses,
    }


def _route(netns, to, via, dev, metric=0):
    return {"netns": netns, "to": to, "via": via, "dev": dev, "metric": metric}


def dns_names():
    """{name: address} the lab's DNS server answers: each server's, and its own."""
    names = dict(("%s.%s" % (server, DNS_DOMAIN), address) for server, address, _extra in SERVERS)
    names["dns.%s" % DNS_DOMAIN] = DNS_ADDRESS
    return names


def dns_argv(names):
    """dnsmasq answering NAMES ({name: address}) on DNS_ADDRESS only, in the foreground, logging to stderr.

    No configuration file, no /etc/hosts, no upstream server (other names are refused, names of the
    domain that it does not know are NXDOMAIN), no DHCP (no range given).
    """
    return (["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
             "--bind-dynamic", "--listen-address=%s" % DNS_ADDRESS, "--port=%d" % DNS_PORT,
             "--local=/%s/" % DNS_DOMAIN, "--pid-file=", "--log-facility=-", "--log-queries"]
            + ["--host-record=%s,%s" % (name, address) for name, address in sorted(names.items())])


def lab_plan(params):
    """The whole lab as data, from PARAMS (see DEFAULTS); raises MpsocksError on bad input."""
    s = _settings(params)
    name = s["name"]
    host = "%s-host" % name if s["host_netns"] else None
    net = "%s-net" % name
    routers = ["%s-r%d" % (name, j) for j in range(1, s["hops"])]
    core = routers + [net]  # the chain from the ISPs' side to the servers
    uplinks, links, routes, shapers, middleboxes, policy_routes, daemons = [], [], [], [], [], [], []
    sysctls = []
    run_dir = "%s/%s" % (s["run_root"].rstrip("/"), name)
    program = [s["python"], "%s/%s" % (run_dir, SERVER_PROGRAM)]
    for i, settings in enumerate(s["uplinks"]):
        isp = "%s-isp%d" % (name, i)
        uplink = {
            "index": i,
            "name": "%s%d" % (s["uplink_prefix"], i),
            "address": "198.18.%d.2/24" % i,
            "gateway": "198.18.%d.1" % i,
            "isp_netns": isp,
            "isp_interface": ISP_INTERFACE,
            "table": s["table_base"] + i,
        }
        uplink.update(settings)
        uplinks.append(uplink)
        links.append(
            _veth(host, uplink["name"], [uplink["address"]], isp, ISP_INTERFACE, ["198.18.%d.1/24" % i])
        )
        links.append(
            _veth(
                isp,
                CORE_INTERFACE,
                ["198.18.%d.2/24" % (64 + i)],
                core[0],
                "isp%d" % i,
                ["198.18.%d.1/24" % (64 + i)],
            )
        )
        routes.append(_route(isp, "default", "198.18.%d.1" % (64 + i), CORE_INTERFACE))
        routes.append(_route(core[0], "198.18.%d.0/24" % i, "198.18.%d.2" % (64 + i), "isp%d" % i))
        policy_routes.append(
            {
                "netns": host,
                "table": uplink["table"],
                "source": "198.18.%d.2/32" % i,
                "routes": [{"to": "default", "via": uplink["gateway"], "dev": uplink["name"]}],
            }
        )
        # A subflow may answer on any uplink: loose reverse-path filter on the host's ends.
        sysctls.append({"netns": host, "name": "net.ipv4.conf.%s.rp_filter" % uplink["name"], "value": "2"})
        if host is not None:
            routes.append(_route(host, "default", uplink["gateway"], uplink["name"], metric=100 + i))
        classes = []
        middleboxes.append({"netns": isp, "interface": ISP_INTERFACE, "kind": settings["middlebox"],
                            "proxy_port": OPTIMIZER["port"]})
        if settings["middlebox"] == "optimizer":
            argv = [
                "optimizer",
                "--listen",
                "0.0.0.0:%d" % OPTIMIZER["port"],
                "--ttl",
                str(OPTIMIZER["ttl"]),
                "--mss",
                str(OPTIMIZER["mss"]),
                "--window-clamp",
                str(OPTIMIZER["window_clamp"]),
            ]
            if settings["optimizer_rate_mbit"] is not None:
                classes.append(
                    {"id": OPTIMIZER["priority_class"], "rate_mbit": settings["optimizer_rate_mbit"]}
                )
                argv += ["--priority", str(0x10000 | OPTIMIZER["priority_class"])]
            daemons.append(
                {"name": "optimizer-isp%d" % i, "netns": isp, "argv": program + argv,
                 "ready_port": OPTIMIZER["port"]}
            )
        # download direction: the ISP towards the subscriber; upload: the ISP towards the core
        rate = settings["rate_mbit"]
        shapers.append({"netns": isp, "dev": ISP_INTERFACE, "rate_mbit": rate, "classes": classes})
        shapers.append({"netns": isp, "dev": CORE_INTERFACE, "rate_mbit": rate, "classes": []})
    for j in range(1, len(core)):
        link = 128 + j
        links.append(
            _veth(core[j - 1], "next", ["198.18.%d.1/24" % link], core[j], "prev", ["198.18.%d.2/24" % link])
        )
        routes.append(_route(core[j - 1], SERVER_NETWORK, "198.18.%d.2" % link, "next"))
        routes.append(_route(core[j], "default", "198.18.%d.1" % link, "prev"))
    server_link = [link for link in links if link["peer_netns"] == net][0]
    server_link["peer_addresses"] = server_link["peer_addresses"] + [
        "%s/32" % address for _server, address, _extra in SERVERS
    ] + ["%s/32" % DNS_ADDRESS]
    servers = {}
    for server, address, extra in SERVERS:
        servers[server] = "http://%s/" % address
        daemons.append(
            {
                "name": server,
                "netns": net,
                "ready_port": SERVER_PORT,
                "argv": program + ["http", "--listen", "%s:%d" % (address, SERVER_PORT)] + extra,
            }
        )
    names = dns_names()
    daemons.append({"name": "dns", "netns": net, "ready_port": DNS_PORT, "argv": dns_argv(names)})
    forwarding = [u["isp_netns"] for u in uplinks] + routers
    sysctls += [{"netns": netns, "name": "net.ipv4.ip_forward", "value": "1"} for netns in forwarding]
    mptcp_limits = [dict(SERVER_LIMITS, netns=net)]
    endpoints = []
    if host is not None:
        # One drop-mptcp experiment must not switch MPTCP off for an hour.
        sysctls.append({"netns": host, "name": "net.mptcp.blackhole_timeout", "value": "0"})
        if s["host_mptcp"]:
            mptcp_limits.append({"netns": host, "subflows": min(len(uplinks) - 1, 8), "add_addr_accepted": 8,
                                 "enabled": True})
            endpoints = [{"netns": host, "address": u["address"].split("/")[0], "dev": u["name"],
                          "flags": ["subflow"]} for u in uplinks[1:]]
    else:
        policy_routes.append({
            "netns": None,
            "table": s["table_base"] + MAX_UPLINKS,
            "destination": LAB_NETWORK,
            "routes": [{"to": LAB_NETWORK, "via": uplinks[0]["gateway"], "dev": uplinks[0]["name"]}],
        })
    namespaces = ([host] if host else []) + [u["isp_netns"] for u in uplinks] + routers + [net]
    return {
        "name": name,
        "owner": owner(name),
        "run_dir": run_dir,
        "hops": s["hops"],
        "server_ttl_at_host": 64 - s["hops"],
        "host_netns": host,
        "server_netns": net,
        "routers": routers,
        "namespaces": namespaces,
        "namespace_config": [{"name": netns} for netns in namespaces],
        "uplinks": uplinks,
        "links": links,
        "sysctls": sysctls,
        "routes": routes,
        "policy_routes": policy_routes,
        "tables": list(range(s["table_base"], s["table_base"] + MAX_UPLINKS + 1)),
        "shapers": shapers,
        "delays_ms": [u["delay_ms"] for u in uplinks],
        "middleboxes": middleboxes,
        "mptcp_limits": mptcp_limits,
        "mptcp_endpoints": endpoints,
        "optimizer": dict(OPTIMIZER),
        "servers": servers,
        "dns": {"address": DNS_ADDRESS, "domain": DNS_DOMAIN, "names": names},
        "daemons": daemons,
        "inventory": inventory(host, [u["isp_netns"] for u in uplinks], routers, net),
        "settings": s,
    }


def inventory(host, isps, routers, net):
    """An Ansible inventory of the lab's namespaces (the netns connection), grouped by role; a lab whose
    uplinks end in the root namespace has ``localhost`` as its host."""
    netns = {"ansible_connection": "mpsocks.mptcp.netns"}
    host_entry = {host: dict(netns)} if host else {"localhost": {"ansible_connection": "local"}}
    return {"all": {
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "children": {
            "lab_host": {"hosts": host_entry},
            "lab_isps": {"hosts": {isp: dict(netns) for isp in isps}},
            "lab_routers": {"hosts": {router: dict(netns) for router in routers}},
            "lab_servers": {"hosts": {net: dict(netns)}},
        },
    }}
