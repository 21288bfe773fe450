# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""MPTCP endpoints and limits of the in-kernel path manager, and net.mptcp.enabled.

The path manager keeps no mark with an endpoint, so an endpoint is managed by its
address: naming the address is the request, whoever made the endpoint.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.mptcp_pm import (
    FLAGS,
    MAX_ENDPOINT_ID,
    MPTCP_PM_ADDR_MAX,
    flag_bits,
    flag_names,
    path_manager,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns import current_netns_identity
from ansible_collections.mpsocks.mptcp.plugins.module_utils.rtnl import (
    in_netns,
    iproute,
    link_index,
    netlink_errors,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.sysctl import read_value, write_value
from ansible_collections.mpsocks.mptcp.plugins.module_utils.validate import interface_name, ip_address

ENABLED_SYSCTL = "/proc/sys/net/mptcp/enabled"
# What SET_FLAGS can change in place; any other difference means delete + add.
IN_PLACE_FLAGS = {"backup", "fullmesh"}
#: {namespace identity: {address: id, or None once removed}} of the endpoints this
#: process has converged: in check mode the kernel does not hold them, yet a later
#: item of the same call must not predict the id an earlier one takes.
_CONVERGED = {}


def _in_range(value, option, low, high):
    if value is not None and not low <= value <= high:
        raise MpsocksError("%s: %d is out of range %d..%d" % (option, value, low, high))
    return value


def _link_names():
    """{ifindex: name} of the links in the current namespace."""
    with iproute() as ipr:
        return {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}


def _flags_only_change(current, wanted):
    """True if CURRENT becomes WANTED by SET_FLAGS alone."""
    return (current is not None and wanted is not None
            and all(current[key] == wanted[key] for key in ("id", "dev", "port"))
            and set(current["flags"]) ^ set(wanted["flags"]) <= IN_PLACE_FLAGS)


class Endpoint(KernelObject):
    """One endpoint of the in-kernel path manager, keyed by its address."""

    kind = "mptcp_endpoint"

    def label(self):
        return "mptcp endpoint %s%s" % (self.params["address"], in_netns(self.params))

    def validate(self):
        self.address = str(ip_address(self.params["address"], "address"))
        self.flags = sorted(set(self.params.get("flags") or []))
        bits = flag_bits(self.flags)
        self.endpoint_id = _in_range(self.params.get("id"), "id", 1, MAX_ENDPOINT_ID)
        self.port = _in_range(self.params.get("port"), "port", 1, 65535)
        if self.port is not None and not bits & FLAGS["signal"]:
            raise MpsocksError("port: %d needs the signal flag (the kernel listens there "
                               "for announced subflows)" % self.port)
        self.dev = self.params.get("dev")
        if self.dev is not None:
            interface_name(self.dev, "dev")
            if self.state == "present":
                with iproute() as ipr:
                    if link_index(ipr, self.dev) is None:
                        raise MpsocksError("dev: interface %r does not exist" % self.dev)

    def read(self):
        with path_manager() as pm, netlink_errors("reading mptcp endpoints"):
            mine = [e for e in pm.endpoints() if e["address"] == self.address]
        if not mine:
            return None
        if len(mine) > 1:
            raise MpsocksError(
                "address: the kernel holds %d endpoints for %s (ids %s, ports differ); this module "
                "manages one per address, remove the others first (ip mptcp endpoint delete id N)"
                % (len(mine), self.address, ", ".join(str(e["id"]) for e in mine)))
        found = mine[0]
        dev = None
        if found["ifindex"]:
            # iproute2 shows an index without a link as ifN; so do we.
            dev = _link_names().get(found["ifindex"], "if%d" % found["ifindex"])
        return {
            "address": self.address,
            "id": found["id"],
            "dev": dev,
            "port": found["port"],
            "flags": flag_names(found["flags"]),
        }

    def converge(self, check_mode=False):
        result = super().converge(check_mode)
        converged = _CONVERGED.setdefault(current_netns_identity(), {})
        converged[self.address] = (result[self.kind] or {}).get("id")
        return result

    def as_config(self, state):
        return dict(state, netns=self.params.get("netns"))

    def wanted(self, current):
        with path_manager() as pm, netlink_errors("reading mptcp endpoints"):
            ids = {e["address"]: e["id"] for e in pm.endpoints()}
        ids.update(_CONVERGED.get(current_netns_identity(), {}))
        taken = {number: address for address, number in ids.items()
                 if number is not None and address != self.address}
        if self.endpoint_id in taken:
            raise MpsocksError("id: %d is already used by the endpoint for %s"
                               % (self.endpoint_id, taken[self.endpoint_id]))
        endpoint_id = self.endpoint_id or (current or {}).get("id")
        if endpoint_id is None:
            # The lowest free id, chosen here rather than by the kernel (whose
            # choice depends on its history) so check mode can predict it.
            free = [n for n in range(1, MAX_ENDPOINT_ID + 1) if n not in taken]
            if not free:
                raise MpsocksError("id: all %d endpoint ids are in use" % MAX_ENDPOINT_ID)
            endpoint_id = free[0]
        return {
            "address": self.address,
            "id": endpoint_id,
            "dev": self.dev,
            "port": self.port,
            "flags": self.flags,
        }

    def apply(self, current, wanted):
        with path_manager() as pm:
            if _flags_only_change(current, wanted):
                with netlink_errors("setting flags of %s" % self.label()):
                    pm.set_flags(wanted["id"], flag_bits(wanted["flags"]))
                return
            if current:
                with netlink_errors("deleting %s (id %d)" % (self.label(), current["id"])):
                    pm.delete_endpoint(current["id"])
            if wanted:
                ifindex = None
                if wanted["dev"] is not None:
                    with iproute() as ipr:
                        ifindex = link_index(ipr, wanted["dev"])
                    if ifindex is None:
                        raise MpsocksError("dev: interface %r does not exist" % wanted["dev"])
                with netlink_errors("adding %s" % self.label()):
                    pm.add_endpoint(wanted["address"], wanted["id"], flag_bits(wanted["flags"]),
                                    ifindex, wanted["port"])


def _read_enabled():
    value = read_value(ENABLED_SYSCTL)
    if value is None:
        raise MpsocksError("enabled: %s does not exist: this kernel has no MPTCP" % ENABLED_SYSCTL)
    return value == 1


class Limits(KernelObject):
    """The path manager's per-connection limits and net.mptcp.enabled."""

    kind = "mptcp_limits"
    numbers = ("subflows", "add_addr_accepted")

    def label(self):
        return "mptcp limits" + in_netns(self.params)

    def validate(self):
        for option in self.numbers:
            _in_range(self.params.get(option), option, 0, MPTCP_PM_ADDR_MAX)

    def read(self):
        with path_manager() as pm, netlink_errors("reading mptcp limits"):
            subflows, add_addr_accepted = pm.limits()
        return {"subflows": subflows, "add_addr_accepted": add_addr_accepted, "enabled": _read_enabled()}

    def wanted(self, current):
        return {key: current[key] if self.params.get(key) is None else self.params[key] for key in current}

    def as_config(self, state):
        return dict(state, netns=self.params.get("netns"))

    def apply(self, current, wanted):
        if any(current[key] != wanted[key] for key in self.numbers):
            with path_manager() as pm, netlink_errors("setting mptcp limits"):
                pm.set_limits(wanted["subflows"], wanted["add_addr_accepted"])
        if current["enabled"] != wanted["enabled"]:
            write_value(ENABLED_SYSCTL, int(wanted["enabled"]))
