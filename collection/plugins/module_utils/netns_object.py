# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A named network namespace (``ip netns add``) with its loopback up and marked as mpsocks'.

The mark is the alias of the namespace's ``lo`` (``mpsocks`` or ``mpsocks OWNER``): a
namespace without it was not made by mpsocks and is never deleted or adopted, whatever its
name. This is a KernelObject of its own file rather than part of netns.py: declarative.py
imports netns.py, so a subclass there would make an import cycle.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.mpsocks.mptcp.plugins.module_utils import rtnl
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.locking import netns_key
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns import (
    NETNS_RUN_DIR,
    create_netns,
    delete_netns,
    home_netns_identity,
    netns_identity,
    netns_members,
    stop_members,
    valid_netns_name,
    visiting,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.ownership import not_ours, owner_mark

IFF_UP = 0x1
#: Seconds a process gets between SIGTERM and SIGKILL.
STOP_GRACE = 5.0


def iproute_in(netns):
    """An rtnetlink socket in named namespace NETNS, or in the current one if None.

    The thread visits NETNS just long enough to open the socket, which stays bound there.
    """
    with visiting(netns):
        return rtnl.iproute()


def loopback(netns):
    """``(up, alias)`` of ``lo`` in namespace NETNS."""
    with iproute_in(netns) as ipr:
        link = ipr.get_links(rtnl.link_index(ipr, "lo"))[0]
        return bool(link["flags"] & IFF_UP), link.get_attr("IFLA_IFALIAS")


def mark_loopback(netns, mark):
    """Set ``lo`` of namespace NETNS up, with alias MARK."""
    with iproute_in(netns) as ipr, rtnl.netlink_errors("setting lo up in namespace %s" % netns):
        ipr.link("set", index=rtnl.link_index(ipr, "lo"), state="up", ifalias=mark)


#: Processes whose namespace is the host's own: PID 1, and kthreadd (kernel threads live in the
#: initial namespace; PID 1's may be unreadable in a container).
HOST_PIDS = (1, 2)


def forbidden_identities():
    """Namespaces never deleted, whatever name they are bound to: the caller's own and the host's."""
    found = {tuple(home_netns_identity()): "the namespace this module runs in"}
    for pid in HOST_PIDS:
        try:
            host = os.stat("/proc/%d/ns/net" % pid)
        except OSError:
            continue
        found.setdefault((host.st_dev, host.st_ino), "the host's own namespace (that of PID %d)" % pid)
    return found


class NetworkNamespace(KernelObject):
    """One named network namespace; absent stops the processes inside it first."""

    kind = "netns"

    def label(self):
        return "netns %s" % self.params["name"]

    def validate(self):
        self.name = valid_netns_name(self.params["name"], "name")
        self.owner = self.params.get("owner")
        self.mark = owner_mark(self.owner)
        self.stopped = None
        if self.state == "absent":
            self._refuse_protected(netns_identity(self.name))

    def _refuse_protected(self, identity):
        reason = forbidden_identities().get(tuple(identity)) if identity else None
        if reason:
            raise MpsocksError("name: %r is bound to %s; refusing to delete it and stop its processes"
                               % (self.name, reason))

    def lock_keys(self):
        keys = ["netns-name-%s" % self.name]
        identity = netns_identity(self.name)
        if identity is not None:
            keys.append(netns_key(identity))
        return keys

    def read(self):
        if netns_identity(self.name) is None:
            return None
        up, alias = loopback(self.name)
        if alias != self.mark:
            raise not_ours("name: namespace %r" % self.name, alias, self.mark)
        return {"name": self.name, "owner": self.owner, "lo_up": up}

    def wanted(self, current):
        return {"name": self.name, "owner": self.owner, "lo_up": True}

    def as_config(self, state):
        return {"name": state["name"], "owner": state["owner"]}

    def apply(self, current, wanted):
        if wanted is None:
            identity = netns_identity(self.name)
            if identity is not None:
                self._refuse_protected(identity)
                try:
                    self.stopped = stop_members(identity, grace=STOP_GRACE)
                except MpsocksError as exc:
                    raise MpsocksError("netns %s: %s" % (self.name, exc)) from None
                delete_netns(self.name)
            return
        if current is None:
            create_netns(self.name)
        mark_loopback(self.name, self.mark)

    def converge(self, check_mode=False):
        """The usual converge, plus the pids that absent stopped (or would stop in check mode)."""
        result = super().converge(check_mode=check_mode)
        if self.state == "absent":
            if self.stopped is None:  # check mode, or nothing to delete
                identity = netns_identity(self.name) if result["changed"] else None
                self.stopped = netns_members(identity) if identity else []
            result["stopped_pids"] = self.stopped
            if result["changed"]:
                result["diff"]["before"]["pids"] = self.stopped
        return result

    @classmethod
    def strays(cls, params, declared):
        """Every namespace carrying the module's owner mark that DECLARED does not name."""
        mark = owner_mark(params.get("owner"))
        names = {obj.name for obj in declared}
        found = []
        for name in sorted(os.listdir(NETNS_RUN_DIR)) if os.path.isdir(NETNS_RUN_DIR) else []:
            if name in names:
                continue
            try:
                if netns_identity(name) is None or loopback(name)[1] != mark:
                    continue
            except MpsocksError:
                continue  # a stale file, or a namespace we cannot look into: not ours to judge
            stray = cls({"name": name, "owner": params.get("owner"), "state": "absent"})
            stray.validate()
            found.append(stray)
        return found
