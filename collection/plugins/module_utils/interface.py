# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An existing link of any kind: its addresses, link state and MTU.

The module neither makes nor deletes links, so it marks nothing: naming a link is the request to
configure it, whoever made it (a guest's ``eth0``, a VM's ``enp1s0``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress

from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.rtnl import (
    address_order,
    in_netns,
    iproute,
    link_index,
    managed_addresses,
    netlink_errors,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.validate import (
    interface_address,
    interface_name,
)

IFF_UP = 0x1


def _link(ipr, name, where):
    """The link message of NAME; MpsocksError naming it when there is none."""
    index = link_index(ipr, name)
    if index is None:
        raise MpsocksError("name: no interface %r%s; this module configures existing links only"
                           % (name, where or " in this namespace"))
    return ipr.get_links(index)[0]


class Interface(KernelObject):
    """Addresses, up/down and MTU of one existing link."""

    kind = "interface"

    def label(self):
        return "interface %s" % self.params["name"]

    def validate(self):
        self.name = interface_name(self.params["name"], "name")
        addresses = self.params.get("addresses")
        self.addresses = None
        if addresses is not None:
            unique = {str(interface_address(a, "addresses")) for a in addresses}
            self.addresses = sorted(unique, key=address_order)
        self.mtu = self.params.get("mtu")
        with iproute() as ipr:
            link = _link(ipr, self.name, in_netns(self.params))
            if self.mtu is not None:
                lowest = link.get_attr("IFLA_MIN_MTU") or 0
                highest = link.get_attr("IFLA_MAX_MTU") or 65535
                if not lowest <= self.mtu <= highest:
                    raise MpsocksError("mtu: %d is out of the range %s takes (%d to %d)"
                                       % (self.mtu, self.name, lowest, highest))

    def read(self):
        with iproute() as ipr:
            link = _link(ipr, self.name, in_netns(self.params))
            return {
                "name": self.name,
                "addresses": managed_addresses(ipr, link["index"]),
                "up": bool(link["flags"] & IFF_UP),
                "mtu": link.get_attr("IFLA_MTU"),
            }

    def wanted(self, current):
        up = self.params.get("up")
        return {
            "name": self.name,
            "addresses": current["addresses"] if self.addresses is None else self.addresses,
            "up": current["up"] if up is None else up,
            "mtu": current["mtu"] if self.mtu is None else self.mtu,
        }

    def apply(self, current, wanted):
        with iproute() as ipr:
            index = _link(ipr, self.name, in_netns(self.params))["index"]
            if wanted["mtu"] != current["mtu"]:
                with netlink_errors("setting the MTU of %s to %d" % (self.name, wanted["mtu"])):
                    ipr.link("set", index=index, mtu=wanted["mtu"])
            for text in sorted(set(current["addresses"]) - set(wanted["addresses"])):
                iface = ipaddress.ip_interface(text)
                with netlink_errors("removing %s from %s" % (text, self.name)):
                    ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            for text in wanted["addresses"]:
                if text not in current["addresses"]:
                    iface = ipaddress.ip_interface(text)
                    with netlink_errors("adding %s to %s" % (text, self.name)):
                        ipr.addr("add", index=index, address=str(iface.ip),
                                 prefixlen=iface.network.prefixlen)
            if wanted["up"] != current["up"]:
                with netlink_errors("setting %s %s" % (self.name, "up" if wanted["up"] else "down")):
                    ipr.link("set", index=index, state="up" if wanted["up"] else "down")
