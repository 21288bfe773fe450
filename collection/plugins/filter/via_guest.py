# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: via_guest
short_description: Routes that send destinations through the guest, for M(mpsocks.mptcp.policy_route)
version_added: 0.1.0
description:
  - Turns a list of destinations (CIDRs, at most 16) into O(mpsocks.mptcp.policy_route#module:config)
    items, one routing table each (6614, 6615 ...) selected by C(ip rule to DEST), holding
    C(DEST via 10.66.6.2 dev mptcp0), so the guest's socksifier takes that traffic through the proxy
    while the host's main table stays as it is.
  - Fails with a one-line message naming the bad destination.
author:
  - mpsocks developers (@mpsocks)
options:
  _input:
    description: The destinations.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Socksify everything to 198.19.0.0/24
  mpsocks.mptcp.policy_route:
    state: overridden
    tables: "{{ range(6614, 6630) | list }}"
    config: "{{ ['198.19.0.0/24'] | mpsocks.mptcp.via_guest }}"
"""

RETURN = r"""
_value:
  description: One C(policy_route) config item per destination.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.via_guest import via_guest_routes


def via_guest_filter(destinations):
    try:
        listed = list(destinations) if isinstance(destinations, (list, tuple)) else destinations
        return via_guest_routes(listed)
    except MpsocksError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {"via_guest": via_guest_filter}
