# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The guest's side of the addressing plan, and the resolvers it is given.

Guest interface n (eth0, eth1 ... or the names given) holds 10.66.(6+n).2/24. Each interface has a
routing table 6606+n selected by ``ip rule from 10.66.(6+n).2``, holding ``default via 10.66.(6+n).1``,
so a subflow bound to an address leaves through its own uplink; the main table's default route goes
through interface 0. Every interface beyond the first is an MPTCP ``subflow`` endpoint bound to its
device (``backup`` for a backup uplink), so one MPTCP connection opens a subflow per uplink.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress

from ansible_collections.mpsocks.mptcp.plugins.module_utils.addressing import (
    FIRST_TABLE,
    MAX_UPLINKS,
    guest_interfaces,
    slot,
    uplink_plan,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError

#: Loose reverse-path filtering: a reply arriving on any interface of the guest is accepted.
RP_FILTER_LOOSE = "2"
#: At most this much unsent data per socket: a sender's MPTCP scheduler otherwise queues hundreds of KB
#: on a slow subflow and the fast one waits for it (uploads over 20+2 Mbit/s: 0.39-0.50 of the sum
#: without, 0.81-0.84 with; measured by tests/bench/bench_proxy.py).
NOTSENT_LOWAT = "16384"
HOST_RESOLV_CONF = "/etc/resolv.conf"
#: Where systemd-resolved lists the servers its stub (127.0.0.53) forwards to.
STUB_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"
RESOLV_CONF_HEADER = "# The guest's resolvers, written by mpsocks (role mpsocks.mptcp.guest_network)\n"


def _address(text):
    """The bare address of an ``ADDR/PREFIX`` string."""
    return str(ipaddress.ip_interface(text).ip)


def _dns_servers(servers):
    """Validated resolver addresses, in order, each once."""
    option = "mpsocks_dns_servers"
    if not isinstance(servers, list):
        raise MpsocksError("%s: expected a list of addresses, got %r" % (option, servers))
    found = []
    for position, server in enumerate(servers):
        try:
            address = str(ipaddress.ip_address(str(server).strip()))
        except ValueError:
            raise MpsocksError("%s[%d]: %r is not an IP address" % (option, position, server)) from None
        if address not in found:
            found.append(address)
    return found


def resolv_conf(servers):
    """The text of a resolver file naming SERVERS."""
    return RESOLV_CONF_HEADER + "".join("nameserver %s\n" % server for server in servers)


def guest_plan(uplinks, interfaces=None, dns_servers=None):
    """What the guest role declares for UPLINKS: one config list per module.

    INTERFACES names the guest's interface of each uplink (empty: eth0, eth1 ...). DNS_SERVERS
    (None or empty: leave the resolver file alone) become ``resolv_conf``, the file's text.
    """
    plan = uplink_plan(uplinks)
    if not plan:
        raise MpsocksError("mpsocks_uplinks: give at least one uplink")
    names = guest_interfaces(interfaces, len(plan))
    links = [dict(u, interface=names[u["index"]], address=_address(u["guest_address"]),
                  gateway=_address(u["host_address"])) for u in plan]
    servers = _dns_servers(dns_servers) if dns_servers else []
    extra = len(plan) - 1
    return {
        "interfaces": [{"name": link["interface"], "addresses": [link["guest_address"]], "up": True}
                       for link in links],
        "sysctls": [{"name": "net.ipv4.tcp_notsent_lowat", "value": NOTSENT_LOWAT}] + [
            {"name": "net.ipv4.conf.%s.rp_filter" % link["interface"], "value": RP_FILTER_LOOSE}
            for link in links],
        "tables": [FIRST_TABLE + index for index in range(MAX_UPLINKS)],
        "policy_routes": [
            {"table": link["table"], "source": link["address"] + "/32",
             "routes": [{"via": link["gateway"], "dev": link["interface"]}]}
            for link in links
        ],
        "routes": [{"to": "default", "via": links[0]["gateway"], "dev": links[0]["interface"]}],
        "mptcp_limits": [{"subflows": extra, "add_addr_accepted": extra, "enabled": True}],
        # Slots no longer used lose their endpoint, so a shrunk uplink list opens no stale subflow.
        "mptcp_endpoints": [
            {"address": link["address"], "dev": link["interface"],
             "flags": ["subflow", "backup"] if link["backup"] else ["subflow"]}
            for link in links[1:]
        ] + [
            {"address": _address(slot(index)["guest_address"]), "state": "absent"}
            for index in range(len(plan), MAX_UPLINKS)
        ],
        "socks_address": links[0]["address"],
        "resolv_conf": resolv_conf(servers) if servers else None,
    }


def _nameservers(path):
    """The ``nameserver`` addresses of resolver file PATH, in order (a zone suffix dropped)."""
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise MpsocksError("%s: cannot read the host's resolvers: %s" % (path, exc.strerror)) from None
    found = []
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                found.append(ipaddress.ip_address(words[1].split("%", 1)[0]))
            except ValueError:
                continue  # the C library skips such a line too
    return found


def _local(address):
    """Whether only the host itself can reach ADDRESS (a stub on loopback, or a link-local server)."""
    return address.is_loopback or address.is_link_local


def host_resolvers(resolv_conf_path=HOST_RESOLV_CONF, stub_resolv_conf_path=STUB_RESOLV_CONF):
    """The host's resolvers as a guest can use them.

    A server only the host reaches (a local stub such as systemd-resolved's 127.0.0.53) is replaced
    by the upstream servers the stub's own file lists (STUB_RESOLV_CONF_PATH, if it exists).
    """
    servers = []
    local = []
    for address in _nameservers(resolv_conf_path):
        if not _local(address):
            servers.append(str(address))
            continue
        local.append(str(address))
        if len(local) == 1:
            try:
                upstream = _nameservers(stub_resolv_conf_path)
            except MpsocksError:
                upstream = []
            servers += [str(a) for a in upstream if not _local(a)]
    unique = []
    for server in servers:
        if server not in unique:
            unique.append(server)
    if not unique:
        what = ("only resolvers the guest cannot reach (%s), and %s lists no upstream server"
                % (", ".join(local), stub_resolv_conf_path)) if local else "no nameserver"
        raise MpsocksError("%s names %s; set mpsocks_dns_servers to the guest's resolvers"
                           % (resolv_conf_path, what))
    return unique
