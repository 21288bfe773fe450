# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A persistent tap device: owner, group, addresses, link state and IPv4 forwarding."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fcntl
import grp
import ipaddress
import os
import pwd
import struct

from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.ownership import MARK, not_ours
from ansible_collections.mpsocks.mptcp.plugins.module_utils.rtnl import (
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

TUN_DEVICE = "/dev/net/tun"
IFF_UP = 0x1
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFLA_TUN_TYPE_TAP = 2


def _iow_int(number):
    """``_IOW('T', number, int)`` in the generic Linux ioctl encoding."""
    return (1 << 30) | (4 << 16) | (ord("T") << 8) | number


TUNSETIFF = _iow_int(202)
TUNSETPERSIST = _iow_int(203)
TUNSETOWNER = _iow_int(204)
TUNSETGROUP = _iow_int(206)


def make_persistent_tap(name, owner=None, group=None):
    """Create tap NAME, or attach to it, and set owner/group; it outlives us."""
    fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
        if owner is not None:
            fcntl.ioctl(fd, TUNSETOWNER, owner)
        if group is not None:
            fcntl.ioctl(fd, TUNSETGROUP, group)
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    except OSError as exc:
        raise MpsocksError("tap %s: %s failed: %s" % (name, TUN_DEVICE, exc.strerror)) from None
    finally:
        os.close(fd)


def _account_id(value, option):
    """A uid (option owner) or gid (option group) from a name or a number."""
    if value is None:
        return None
    text = str(value)
    if text.isdigit():
        return int(text)
    try:
        if option == "owner":
            return pwd.getpwnam(text).pw_uid
        return grp.getgrnam(text).gr_gid
    except KeyError:
        what = "user" if option == "owner" else "group"
        raise MpsocksError("%s: no such %s %r" % (option, what, text)) from None


class Tap(KernelObject):
    """The tap the guest's uplink n plugs into."""

    kind = "tap"

    def label(self):
        return "tap %s" % self.params["name"]

    def validate(self):
        self.name = interface_name(self.params["name"], "name")
        self.owner = _account_id(self.params.get("owner"), "owner")
        self.group = _account_id(self.params.get("group"), "group")
        addresses = self.params.get("addresses")
        if addresses is None:
            self.addresses = None
        else:
            unique = {str(interface_address(a, "addresses")) for a in addresses}
            self.addresses = sorted(unique, key=address_order)

    def read(self):
        with iproute() as ipr:
            index = link_index(ipr, self.name)
            if index is None:
                return None
            link = ipr.get_links(index)[0]
            kind = link_kind(link)
            data = link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA") if kind else None
            if kind != "tun" or data.get_attr("IFLA_TUN_TYPE") != IFLA_TUN_TYPE_TAP:
                raise MpsocksError("name: %r already exists as a %s interface, not a tap"
                                   % (self.name, "tun" if kind == "tun" else kind or "plain"))
            alias = link.get_attr("IFLA_IFALIAS")
            if alias != MARK:
                raise not_ours("name: tap %r" % self.name, alias, MARK)
            return {
                "name": self.name,
                "owner": data.get_attr("IFLA_TUN_OWNER"),
                "group": data.get_attr("IFLA_TUN_GROUP"),
                "addresses": managed_addresses(ipr, index),
                "up": bool(link["flags"] & IFF_UP),
                "forwarding": read_value(ipv4_forwarding_path(self.name)) == 1,
            }

    def as_config(self, state):
        ids = {key: None if state[key] is None else str(state[key]) for key in ("owner", "group")}
        return dict(state, **ids)

    @classmethod
    def strays(cls, params, declared):
        """Every tap with the mpsocks alias in the module's namespace that DECLARED does not name."""
        names = {obj.name for obj in declared if obj.params.get("netns") == params.get("netns")}
        found = []
        with iproute() as ipr:
            for link in ipr.get_links():
                name = link.get_attr("IFLA_IFNAME")
                if (link_kind(link) == "tun" and link.get_attr("IFLA_IFALIAS") == MARK
                        and name not in names):
                    found.append(cls({"name": name, "state": "absent", "netns": params.get("netns")}))
        for obj in found:
            obj.validate()
        return found

    def wanted(self, current):
        # A new interface starts with the namespace's conf/default values.
        current = current or {"owner": None, "group": None, "addresses": [],
                              "forwarding": read_value(ipv4_forwarding_path("default")) == 1}
        forwarding = self.params.get("forwarding")
        return {
            "name": self.name,
            "owner": current["owner"] if self.owner is None else self.owner,
            "group": current["group"] if self.group is None else self.group,
            "addresses": current["addresses"] if self.addresses is None else self.addresses,
            "up": self.params.get("up", True),
            "forwarding": current["forwarding"] if forwarding is None else forwarding,
        }

    def apply(self, current, wanted):
        if wanted is None:
            with iproute() as ipr, netlink_errors("deleting tap %s" % self.name):
                ipr.link("del", ifname=self.name)
            return
        if current is None or (current["owner"], current["group"]) != (wanted["owner"], wanted["group"]):
            make_persistent_tap(self.name, wanted["owner"], wanted["group"])
        have = set(current["addresses"]) if current else set()
        with iproute() as ipr:
            index = link_index(ipr, self.name)
            if current is None:
                with netlink_errors("marking %s as mpsocks'" % self.name):
                    ipr.link("set", index=index, ifalias=MARK)
            for text in sorted(have - set(wanted["addresses"])):
                iface = ipaddress.ip_interface(text)
                with netlink_errors("removing %s from %s" % (text, self.name)):
                    ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            for text in wanted["addresses"]:
                if text not in have:
                    iface = ipaddress.ip_interface(text)
                    with netlink_errors("adding %s to %s" % (text, self.name)):
                        ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            with netlink_errors("setting %s %s" % (self.name, "up" if wanted["up"] else "down")):
                ipr.link("set", index=index, state="up" if wanted["up"] else "down")
        write_value(ipv4_forwarding_path(self.name), int(wanted["forwarding"]))
