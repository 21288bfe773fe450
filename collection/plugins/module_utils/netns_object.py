# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A named network namespace (``ip netns add``) with its loopback up.

This is a KernelObject of its own file rather than part of netns.py: declarative.py
imports netns.py for enter_netns before it defines KernelObject, so a subclass there
would make an import cycle.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mpsocks.mptcp.plugins.module_utils import rtnl
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns import (
    create_netns,
    delete_netns,
    netns_identity,
    netns_members,
    netns_path,
    stop_members,
    valid_netns_name,
)

IFF_UP = 0x1
#: Seconds a process gets between SIGTERM and SIGKILL.
STOP_GRACE = 5.0


def iproute_in(netns):
    """An rtnetlink socket in named namespace NETNS, or in the current one if None.

    The socket is opened by a short-lived child that enters NETNS; this process stays
    where it is. ``flags=0``: pyroute2 would otherwise create a missing namespace.
    """
    if netns is None or rtnl.IPRoute is None:
        return rtnl.iproute()  # without pyroute2 this raises the missing-library error
    try:
        # The full path: pyroute2 would look a bare name up under /var/run/netns.
        return rtnl.IPRoute(netns=netns_path(netns), flags=0)
    except OSError as exc:
        raise MpsocksError("cannot open a netlink socket in namespace %r: %s"
                           % (netns, exc.strerror or exc)) from None


def loopback_up(netns):
    """Whether ``lo`` in namespace NETNS is administratively up."""
    with iproute_in(netns) as ipr:
        index = rtnl.link_index(ipr, "lo")
        return bool(ipr.get_links(index)[0]["flags"] & IFF_UP)


def set_loopback_up(netns):
    with iproute_in(netns) as ipr, rtnl.netlink_errors("setting lo up in namespace %s" % netns):
        ipr.link("set", index=rtnl.link_index(ipr, "lo"), state="up")


class NetworkNamespace(KernelObject):
    """One named network namespace; absent stops the processes inside it first."""

    kind = "netns"

    def label(self):
        return "netns %s" % self.params["name"]

    def validate(self):
        self.name = valid_netns_name(self.params["name"], "name")
        self.stopped = None

    def read(self):
        if netns_identity(self.name) is None:
            return None
        return {"name": self.name, "lo_up": loopback_up(self.name)}

    def wanted(self, current):
        return {"name": self.name, "lo_up": True}

    def apply(self, current, wanted):
        if wanted is None:
            identity = netns_identity(self.name)
            if identity is not None:
                try:
                    self.stopped = stop_members(identity, grace=STOP_GRACE)
                except MpsocksError as exc:
                    raise MpsocksError("netns %s: %s" % (self.name, exc)) from None
                delete_netns(self.name)
            return
        if current is None:
            create_netns(self.name)
        if not (current or {}).get("lo_up"):
            set_loopback_up(self.name)

    def run(self, check_mode=False):
        """The usual run, plus the pids that absent stopped (or would stop in check mode)."""
        result = super().run(check_mode=check_mode)
        if self.state == "absent":
            if self.stopped is None:  # check mode, or nothing to delete
                identity = netns_identity(self.name) if result["changed"] else None
                self.stopped = netns_members(identity) if identity else []
            result["stopped_pids"] = self.stopped
            if result["changed"]:
                result["diff"]["before"]["pids"] = self.stopped
        return result
