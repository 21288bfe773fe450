# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A veth pair whose peer end may live in another named namespace: addresses and link state of both ends,
and IPv4 forwarding of the end in the item's namespace."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import os

from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.locking import netns_key
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns import (
    NETNS_RUN_DIR,
    current_netns_identity,
    netns_identity,
    netns_path,
    valid_netns_name,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns_object import iproute_in
from ansible_collections.mpsocks.mptcp.plugins.module_utils.ownership import MARK, not_ours
from ansible_collections.mpsocks.mptcp.plugins.module_utils.rtnl import (
    NetlinkError,
    address_order,
    iproute,
    link_index,
    link_kind,
    managed_addresses,
    netlink_errors,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.sysctl import (
    ipv4_forwarding_path,
    read_value,
    write_value,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.validate import (
    interface_address,
    interface_name,
)

IFF_UP = 0x1


def _addresses(values, option):
    """Sorted unique ``addr/prefix`` strings, or None when the option is left out."""
    if values is None:
        return None
    unique = {str(interface_address(value, option)) for value in values}
    return sorted(unique, key=address_order)


def _nsid(ipr, name):
    """The id the namespace of IPR's socket gives namespace NAME (-1 or None if it has none)."""
    fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        with netlink_errors("looking up the id of namespace %s" % name):
            found = ipr.get_netnsid(fd=fd)
    finally:
        os.close(fd)
    return found["nsid"] if found else None


def _peer_of(ipr, link):
    """(namespace name or None for this one, name) of the other end of veth LINK on IPR's namespace.

    The name is None when the peer's namespace has no /run/netns name.
    """
    nsid = link.get_attr("IFLA_LINK_NETNSID")
    if nsid is None:
        there = _peer_end_name(ipr, link.get_attr("IFLA_LINK"))
        return None, there
    where = _namespace_with_id(ipr, nsid)
    if where is None:
        return None, None
    with iproute_in(where) as other:
        return where, _peer_end_name(other, link.get_attr("IFLA_LINK"))


def _peer_end_name(ipr, index):
    try:
        links = ipr.get_links(index) if index else []
    except NetlinkError:
        links = []
    return links[0].get_attr("IFLA_IFNAME") if links else None


def _namespace_with_id(ipr, nsid):
    """The /run/netns name of the namespace that has id NSID where IPR's socket is, or None."""
    try:
        names = sorted(os.listdir(NETNS_RUN_DIR))
    except OSError:
        names = []
    for name in names:
        try:
            if _nsid(ipr, name) == nsid:
                return name
        except (OSError, MpsocksError):
            continue
    return None


def _forwarding(name):
    """Whether IPv4 forwarding is on for what arrives on link NAME of the current namespace."""
    return read_value(ipv4_forwarding_path(name)) == 1


def _peer_end(ipr, index):
    """The end with index INDEX on IPR's namespace, or None if there is none."""
    try:
        links = ipr.get_links(index) if index else []
    except NetlinkError:
        links = []
    return _end(ipr, links[0], None) if links else None


def _end(ipr, link, netns):
    """One end of the pair as read() reports it; fails if mpsocks did not make it."""
    alias = link.get_attr("IFLA_IFALIAS")
    if alias != MARK:
        raise not_ours("veth end %r" % link.get_attr("IFLA_IFNAME"), alias, MARK)
    return {
        "name": link.get_attr("IFLA_IFNAME"),
        "netns": netns,
        "addresses": managed_addresses(ipr, link["index"]),
        "up": bool(link["flags"] & IFF_UP),
    }


def _mark(ipr, name):
    with netlink_errors("marking %s as mpsocks'" % name):
        ipr.link("set", index=link_index(ipr, name), ifalias=MARK)


def _converge(ipr, name, have, want, up):
    """Give link NAME (on IPR's namespace) exactly addresses WANT and the link state UP."""
    index = link_index(ipr, name)
    if index is None:
        raise MpsocksError("veth end %s disappeared while it was being set up" % name)
    for text in sorted(set(have) - set(want)):
        iface = ipaddress.ip_interface(text)
        with netlink_errors("removing %s from %s" % (text, name)):
            ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
    for text in want:
        if text not in have:
            iface = ipaddress.ip_interface(text)
            with netlink_errors("adding %s to %s" % (text, name)):
                ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
    with netlink_errors("setting %s %s" % (name, "up" if up else "down")):
        ipr.link("set", index=index, state="up" if up else "down")


class Veth(KernelObject):
    """A veth pair: NAME here (the current or ``netns`` namespace), PEER here or in PEER_NETNS."""

    kind = "veth"

    def label(self):
        return "veth %s" % self.params["name"]

    def validate(self):
        self.name = interface_name(self.params["name"], "name")
        self.peer = interface_name(self.params["peer"], "peer")
        self.peer_netns = self.params.get("peer_netns")
        if self.peer_netns is not None:
            valid_netns_name(self.peer_netns, "peer_netns")
        elif self.peer == self.name:
            raise MpsocksError("peer: %r is also the name of this end; in one namespace the two "
                               "ends need different names" % self.peer)
        self.addresses = _addresses(self.params.get("addresses"), "addresses")
        self.peer_addresses = _addresses(self.params.get("peer_addresses"), "peer_addresses")
        self._where = False  # not resolved yet
        if self.state == "present":
            self._peer_namespace()

    def _peer_namespace(self):
        """Name of the namespace the peer belongs in, or None for the current one."""
        if self._where is False:
            where = None
            if self.peer_netns is not None:
                identity = netns_identity(self.peer_netns, "peer_netns")
                if identity is None:
                    raise MpsocksError("peer_netns: namespace %r does not exist (no %s)"
                                       % (self.peer_netns, netns_path(self.peer_netns)))
                if identity != current_netns_identity():
                    where = self.peer_netns
            if where is None and self.peer == self.name:
                raise MpsocksError("peer: %r is also the name of this end, and peer_netns %r is "
                                   "this namespace" % (self.peer, self.peer_netns))
            self._where = where
        return self._where

    def lock_keys(self):
        keys = super().lock_keys()
        if self.peer_netns is not None:
            identity = netns_identity(self.peer_netns, "peer_netns")
            if identity is not None:
                keys.append(netns_key(identity))
        return keys

    def as_config(self, state):
        peer = state["peer"]
        return {"name": state["name"], "netns": state["netns"], "addresses": state["addresses"],
                "up": state["up"], "forwarding": state["forwarding"], "peer": peer["name"],
                "peer_netns": peer["netns"], "peer_addresses": peer["addresses"]}

    @classmethod
    def strays(cls, params, declared):
        """Every veth of mpsocks' in the module's namespace named in ``names`` that DECLARED leaves out."""
        scope = params.get("names")
        if scope is None:
            raise MpsocksError("names: required with state overridden (the veths it may delete)")
        for position, name in enumerate(scope):
            interface_name(name, "names[%d]" % position)
        keep = {obj.name for obj in declared if obj.params.get("netns") == params.get("netns")}
        found = []
        with iproute() as ipr:
            for name in sorted(set(scope) - keep):
                index = link_index(ipr, name)
                if index is None:
                    continue
                link = ipr.get_links(index)[0]
                if link_kind(link) != "veth" or link.get_attr("IFLA_IFALIAS") != MARK:
                    continue  # not mpsocks': never removed
                peer_netns, peer = _peer_of(ipr, link)
                if peer is None:
                    raise MpsocksError("names: veth %r is paired with an interface in a namespace that "
                                       "has no name (none in %s), so it cannot be checked; remove it "
                                       "with ip link del %s" % (name, NETNS_RUN_DIR, name))
                found.append(cls({"name": name, "peer": peer, "peer_netns": peer_netns,
                                  "state": "absent", "netns": params.get("netns")}))
        for obj in found:
            obj.validate()
        return found

    def _describe(self, where):
        if where is not None:
            return "namespace %r" % where
        netns = self.params.get("netns")
        return "namespace %r" % netns if netns else "this namespace"

    def read(self):
        with iproute() as ipr:
            index = link_index(ipr, self.name)
            if index is None:
                if self.state == "present":
                    self._check_peer_name_free()
                return None
            link = ipr.get_links(index)[0]
            kind = link_kind(link)
            if kind != "veth":
                raise MpsocksError("name: %r already exists as a %s interface, not a veth"
                                   % (self.name, kind or "plain"))
            here = dict(_end(ipr, link, self.params.get("netns")), forwarding=_forwarding(self.name))
            peer_index = link.get_attr("IFLA_LINK")
            nsid = link.get_attr("IFLA_LINK_NETNSID")
            where = self._peer_namespace()
            if nsid is None:  # the peer is in this namespace
                found_in = None
                there = _peer_end(ipr, peer_index)
            else:
                found_in = _namespace_with_id(ipr, nsid)
                there = None
                if found_in is not None:
                    with iproute_in(found_in) as other:
                        there = _peer_end(other, peer_index)
        right_place = (nsid is None and where is None) or (nsid is not None and found_in == where)
        if there is None or there["name"] != self.peer or not right_place:
            if nsid is not None and found_in is None:
                actual = "an unnamed namespace (nsid %d)" % nsid
            else:
                actual = self._describe(found_in)
            raise MpsocksError("name: veth %r is paired with %s in %s, not with %r in %s"
                               % (self.name, repr(there["name"]) if there else "an interface",
                                  actual, self.peer, self._describe(where)))
        there["netns"] = self.peer_netns
        return dict(here, peer=there)

    def _check_peer_name_free(self):
        """Creating the pair would fail if the peer's name is taken where it is to live."""
        where = self._peer_namespace()
        with iproute_in(where) as ipr:
            index = link_index(ipr, self.peer)
            if index is not None:
                kind = link_kind(ipr.get_links(index)[0])
                raise MpsocksError("peer: an interface %r (%s) already exists in %s"
                                   % (self.peer, kind or "plain", self._describe(where)))

    def wanted(self, current):
        # A new link starts with the namespace's conf/default forwarding.
        current = current or {"addresses": [], "peer": {"addresses": []},
                              "forwarding": _forwarding("default")}
        up = self.params.get("up") is not False
        forwarding = self.params.get("forwarding")
        return {
            "name": self.name,
            "netns": self.params.get("netns"),
            "addresses": current["addresses"] if self.addresses is None else self.addresses,
            "up": up,
            "forwarding": current["forwarding"] if forwarding is None else forwarding,
            "peer": {
                "name": self.peer,
                "netns": self.peer_netns,
                "addresses": (current["peer"]["addresses"] if self.peer_addresses is None
                              else self.peer_addresses),
                "up": up,
            },
        }

    def apply(self, current, wanted):
        if wanted is None:
            with iproute() as ipr, netlink_errors("deleting veth %s" % self.name):
                ipr.link("del", index=link_index(ipr, self.name))
            return
        where = self._peer_namespace()
        with iproute() as ipr:
            if current is None:
                self._create(ipr, where)
                _mark(ipr, self.name)
                with iproute_in(where) as other:
                    _mark(other, self.peer)
            _converge(ipr, self.name, current["addresses"] if current else [],
                      wanted["addresses"], wanted["up"])
        write_value(ipv4_forwarding_path(self.name), int(wanted["forwarding"]))
        with iproute_in(where) as ipr:
            _converge(ipr, self.peer, current["peer"]["addresses"] if current else [],
                      wanted["peer"]["addresses"], wanted["peer"]["up"])

    def _create(self, ipr, where):
        """``ip link add NAME type veth peer name PEER [netns WHERE]``."""
        peer = {"ifname": self.peer}
        fd = None
        if where is not None:
            fd = os.open(netns_path(where), os.O_RDONLY | os.O_CLOEXEC)
            peer["net_ns_fd"] = fd
        try:
            with netlink_errors("creating veth %s with peer %s in %s"
                                % (self.name, self.peer, self._describe(where))):
                ipr.link("add", ifname=self.name, kind="veth", peer=peer)
        finally:
            if fd is not None:
                os.close(fd)
