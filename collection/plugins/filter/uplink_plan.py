# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: uplink_plan
short_description: Give every uplink its tap, addresses and routing table
version_added: 0.1.0
description:
  - Validates a list of uplinks and returns, for uplink n, tap C(mptcpN), host address C(10.66.(6+n\).1/24),
    guest address C(10.66.(6+n\).2/24), subnet and routing table C(6606+n).
  - Fails with a one-line message naming the bad item.
author:
  - mpsocks developers (@mpsocks)
positional: tap_prefix
options:
  _input:
    description:
      - Uplinks; each an interface name or a dict with C(name) and optional C(gateway)
        (an address or V(auto)).
    type: list
    elements: raw
    required: true
  tap_prefix:
    description: Prefix of the tap names.
    type: str
    default: mptcp
"""

EXAMPLES = r"""
- name: Plan two uplinks
  ansible.builtin.debug:
    msg: "{{ ['wlp1s0', {'name': 'usb0', 'gateway': '192.168.42.129'}] | mpsocks.mptcp.uplink_plan }}"
"""

RETURN = r"""
_value:
  description: One dict per uplink with C(index), C(uplink), C(gateway), C(tap), C(subnet), C(host_address),
    C(guest_address) and C(table).
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.addressing import TAP_PREFIX, uplink_plan
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError


def plan_filter(uplinks, tap_prefix=TAP_PREFIX):
    try:
        return uplink_plan(list(uplinks) if isinstance(uplinks, (list, tuple)) else uplinks, tap_prefix)
    except MpsocksError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {"uplink_plan": plan_filter}
