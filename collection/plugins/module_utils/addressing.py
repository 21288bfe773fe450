# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The addressing plan: what uplink n becomes on the host and in the guest.

Uplink n (0-based) gets tap ``mptcpN``; the host holds 10.66.(6+n).1/24 and the
guest 10.66.(6+n).2/24; traffic arriving from the tap is routed by table
6606+n (rule priority 6606+n) to the uplink's gateway and masqueraded there.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.validate import (
    interface_name,
    ip_address,
)

# The kernel's MPTCP path manager opens at most 8 subflows (MPTCP_PM_ADDR_MAX).
MAX_UPLINKS = 8
TAP_PREFIX = "mptcp"
FIRST_NETWORK = ipaddress.ip_network("10.66.6.0/24")
FIRST_TABLE = 6606


def parse_uplink(item, position):
    """An uplink is an interface name, or a dict with ``name`` and optional ``gateway``."""
    option = "mpsocks_uplinks[%d]" % position
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or "name" not in item:
        raise MpsocksError("%s: expected an interface name or {name: IF, gateway: GW}, got %r"
                           % (option, item))
    unknown = set(item) - {"name", "gateway"}
    if unknown:
        raise MpsocksError("%s: unknown key(s) %s" % (option, ", ".join(sorted(unknown))))
    gateway = item.get("gateway") or "auto"
    if gateway != "auto":
        gateway = str(ip_address(gateway, option + ".gateway"))
    return {"name": interface_name(item["name"], option + ".name"), "gateway": gateway}


def slot(index, tap_prefix=TAP_PREFIX):
    """The host-side objects of uplink slot INDEX, whether or not an uplink uses it."""
    network = ipaddress.ip_network((int(FIRST_NETWORK.network_address) + (index << 8), 24))
    return {
        "index": index,
        "tap": "%s%d" % (tap_prefix, index),
        "subnet": str(network),
        "host_address": "%s/24" % network[1],
        "guest_address": "%s/24" % network[2],
        "table": FIRST_TABLE + index,
    }


def uplink_plan(uplinks, tap_prefix=TAP_PREFIX):
    """Validate the uplink list and give each uplink its slot."""
    if not isinstance(uplinks, list):
        raise MpsocksError("mpsocks_uplinks: expected a list of interface names, got %r" % (uplinks,))
    if len(uplinks) > MAX_UPLINKS:
        raise MpsocksError("mpsocks_uplinks: %d uplinks given, MPTCP uses at most %d"
                           % (len(uplinks), MAX_UPLINKS))
    plan = []
    for index, item in enumerate(uplinks):
        uplink = parse_uplink(item, index)
        if uplink["name"] in [p["uplink"] for p in plan]:
            raise MpsocksError("mpsocks_uplinks[%d]: %s is listed twice" % (index, uplink["name"]))
        plan.append(dict(slot(index, tap_prefix), uplink=uplink["name"], gateway=uplink["gateway"]))
    return plan


def host_plan(uplinks, tap_prefix=TAP_PREFIX, tap_owner=None):
    """What the host role declares for UPLINKS: one list per module, plus every slot's table.

    ``tables`` covers all slots, used or not, so that one overridden call removes what the
    slots of uplinks no longer listed hold.
    """
    plan = uplink_plan(uplinks, tap_prefix)
    return {
        "uplinks": plan,
        "tables": [FIRST_TABLE + index for index in range(MAX_UPLINKS)],
        "taps": [
            {"name": u["tap"], "owner": tap_owner, "addresses": [u["host_address"]], "forwarding": True}
            for u in plan
        ],
        "nat": [
            {"name": u["tap"], "source": u["subnet"], "in_interface": u["tap"], "out_interface": u["uplink"]}
            for u in plan
        ],
        "policy_routes": [
            {"table": u["table"], "iif": u["tap"], "routes": [{"via": u["gateway"], "dev": u["uplink"]}]}
            for u in plan
        ],
    }
