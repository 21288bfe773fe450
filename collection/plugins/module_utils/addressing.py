# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The addressing plan: what uplink n becomes on the host and in the guest.

Uplink n (0-based) gets link ``mptcpN`` on the host (a tap for a VM, or a veth
whose peer is the guest's interface n in a guest namespace); the host holds
10.66.(6+n).1/24 and the guest 10.66.(6+n).2/24; traffic arriving from the link
is routed by table 6606+n (rule priority 6606+n) to the uplink's gateway and
masqueraded there.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import math

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns import valid_netns_name
from ansible_collections.mpsocks.mptcp.plugins.module_utils.validate import (
    interface_name,
    ip_address,
)

# The kernel's MPTCP path manager opens at most 8 subflows (MPTCP_PM_ADDR_MAX).
MAX_UPLINKS = 8
TAP_PREFIX = "mptcp"
GUEST_INTERFACE_PREFIX = "eth"
GUEST_LINKS = ("tap", "veth")
FIRST_NETWORK = ipaddress.ip_network("10.66.6.0/24")
FIRST_TABLE = 6606
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
#: An uplink slower than this share of the fastest one is made a backup unless its ``backup`` is set:
#: measured in the lab (20 Mbit/s + a slower uplink, downloads through the proxy), 20+5 adds up
#: (0.975 of the sum) but 20+2 falls to about half the fast uplink alone, since the sender's MPTCP
#: scheduler queues hundreds of KB on the slow subflow and the connection waits for them.
BACKUP_BELOW = 0.2


def flag(value, option):
    """A boolean option as YAML, JSON or a templated string may give it."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise MpsocksError("%s: expected true or false, got %r" % (option, value))


def parse_uplink(item, position):
    """An uplink is an interface name, or a dict with ``name`` and optional ``gateway``, ``backup``
    (None: decided from the rates) and ``rate_mbit`` (its download rate, when known)."""
    option = "mpsocks_uplinks[%d]" % position
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or "name" not in item:
        raise MpsocksError("%s: expected an interface name or {name: IF, gateway: GW, backup: BOOL, "
                           "rate_mbit: N}, got %r" % (option, item))
    unknown = set(item) - {"name", "gateway", "backup", "rate_mbit"}
    if unknown:
        raise MpsocksError("%s: unknown key(s) %s" % (option, ", ".join(sorted(unknown))))
    gateway = item.get("gateway") or "auto"
    if gateway != "auto":
        gateway = str(ip_address(gateway, option + ".gateway"))
    backup = item.get("backup")
    return {
        "name": interface_name(item["name"], option + ".name"),
        "gateway": gateway,
        "backup": None if backup is None else flag(backup, option + ".backup"),
        "rate_mbit": _rate(item.get("rate_mbit"), option + ".rate_mbit"),
    }


def _rate(value, option):
    """A positive rate in Mbit/s, or None when not given."""
    if value is None or value == "":
        return None
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise MpsocksError("%s: expected a rate in Mbit/s, got %r" % (option, value)) from None
    if not math.isfinite(rate) or rate <= 0:
        raise MpsocksError("%s: a rate must be above 0 Mbit/s, got %r" % (option, value))
    return rate


def _auto_backup(uplink, index, fastest):
    """Whether UPLINK (at INDEX) is a backup: as set, else when much slower than the FASTEST rate."""
    if uplink["backup"] is not None:
        return uplink["backup"]
    return bool(index and fastest and uplink["rate_mbit"] and uplink["rate_mbit"] < BACKUP_BELOW * fastest)


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
    """Validate the uplink list and give each uplink its slot.

    The first uplink carries every connection's first subflow (and the guest's SOCKS address), so it
    cannot be a backup.
    """
    if not isinstance(uplinks, list):
        raise MpsocksError("mpsocks_uplinks: expected a list of interface names, got %r" % (uplinks,))
    if len(uplinks) > MAX_UPLINKS:
        raise MpsocksError("mpsocks_uplinks: %d uplinks given, MPTCP uses at most %d"
                           % (len(uplinks), MAX_UPLINKS))
    parsed = [parse_uplink(item, index) for index, item in enumerate(uplinks)]
    fastest = max([uplink["rate_mbit"] for uplink in parsed if uplink["rate_mbit"]], default=None)
    plan = []
    for index, uplink in enumerate(parsed):
        if uplink["name"] in [p["uplink"] for p in plan]:
            raise MpsocksError("mpsocks_uplinks[%d]: %s is listed twice" % (index, uplink["name"]))
        if index == 0 and uplink["backup"]:
            raise MpsocksError("mpsocks_uplinks[0]: the first uplink carries every connection's first "
                               "subflow, so it cannot be a backup; list %s after another uplink"
                               % uplink["name"])
        plan.append(dict(slot(index, tap_prefix), uplink=uplink["name"], gateway=uplink["gateway"],
                         backup=_auto_backup(uplink, index, fastest), rate_mbit=uplink["rate_mbit"]))
    return plan


def guest_interfaces(names, count):
    """The guest's interface of each of COUNT uplinks: NAMES in uplink order, or eth0, eth1 ... when empty."""
    option = "mpsocks_guest_interfaces"
    if not names:
        return ["%s%d" % (GUEST_INTERFACE_PREFIX, index) for index in range(count)]
    if not isinstance(names, list):
        raise MpsocksError("%s: expected a list of interface names, got %r" % (option, names))
    checked = [interface_name(name, "%s[%d]" % (option, index)) for index, name in enumerate(names)]
    for index, name in enumerate(checked):
        if name in checked[:index]:
            raise MpsocksError("%s[%d]: %s is listed twice" % (option, index, name))
    if len(checked) < count:
        raise MpsocksError("%s: %d interface(s) for %d uplinks; name one guest interface per uplink"
                           % (option, len(checked), count))
    return checked[:count]


def host_plan(uplinks, tap_prefix=TAP_PREFIX, tap_owner=None, guest_link="tap", guest_netns=None,
              guest_interface_names=None):
    """What the host role declares for UPLINKS: one list per module, plus every slot's table and link.

    ``tables`` and ``links`` cover all slots, used or not, so that one overridden call removes what
    the slots of uplinks no longer listed hold. GUEST_LINK ``veth`` makes each slot's link a veth
    whose peer is the guest's interface in namespace GUEST_NETNS.
    """
    if guest_link not in GUEST_LINKS:
        raise MpsocksError("mpsocks_guest_link: %r is not one of %s" % (guest_link, ", ".join(GUEST_LINKS)))
    if guest_link == "veth":
        if not guest_netns:
            raise MpsocksError("mpsocks_guest_netns: required with mpsocks_guest_link veth (the "
                               "namespace the veths' peers go to)")
        valid_netns_name(guest_netns, "mpsocks_guest_netns")
    plan = uplink_plan(uplinks, tap_prefix)
    peers = guest_interfaces(guest_interface_names, len(plan)) if guest_link == "veth" else []
    return {
        "uplinks": plan,
        "tables": [FIRST_TABLE + index for index in range(MAX_UPLINKS)],
        "links": ["%s%d" % (tap_prefix, index) for index in range(MAX_UPLINKS)],
        "taps": [
            {"name": u["tap"], "owner": tap_owner, "addresses": [u["host_address"]], "forwarding": True}
            for u in plan
        ] if guest_link == "tap" else [],
        "veths": [
            {"name": u["tap"], "addresses": [u["host_address"]], "forwarding": True,
             "peer": peers[u["index"]], "peer_netns": guest_netns}
            for u in plan
        ] if guest_link == "veth" else [],
        "nat": [
            {"name": u["tap"], "source": u["subnet"], "in_interface": u["tap"], "out_interface": u["uplink"]}
            for u in plan
        ],
        "policy_routes": [
            {"table": u["table"], "iif": u["tap"], "routes": [{"via": u["gateway"], "dev": u["uplink"]}]}
            for u in plan
        ],
    }
