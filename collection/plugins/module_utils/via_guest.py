# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Destinations the host routes through the guest, where the socksifier sends them through the proxy.

Each destination gets a routing table of the project's own (6614 + i) selected by ``ip rule to
DEST``, holding ``DEST via <guest> dev <tap or veth 0>``: the host's main table is never changed,
and teardown finds them by their tables and mark (policy_route, state overridden).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mpsocks.mptcp.plugins.module_utils.addressing import slot
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.validate import ip_network

FIRST_TABLE = 6614
MAX_DESTINATIONS = 16
TABLES = list(range(FIRST_TABLE, FIRST_TABLE + MAX_DESTINATIONS))


def via_guest_routes(destinations, tap_prefix="mptcp"):
    """policy_route config items for DESTINATIONS (CIDRs), through the guest of uplink 0."""
    if not isinstance(destinations, list):
        raise MpsocksError("mpsocks_via_guest: expected a list of destinations (CIDR), got %r"
                           % (destinations,))
    if len(destinations) > MAX_DESTINATIONS:
        raise MpsocksError("mpsocks_via_guest: %d destinations, at most %d"
                           % (len(destinations), MAX_DESTINATIONS))
    first = slot(0, tap_prefix)
    guest = first["guest_address"].split("/")[0]
    items = []
    for position, value in enumerate(destinations):
        network = ip_network(value, "mpsocks_via_guest[%d]" % position)
        if network.version != 4:
            raise MpsocksError("mpsocks_via_guest[%d]: %s is not IPv4 (the guest's link is)"
                               % (position, network))
        items.append({"table": FIRST_TABLE + position, "destination": str(network),
                      "routes": [{"to": str(network), "via": guest, "dev": first["tap"]}]})
    return items
