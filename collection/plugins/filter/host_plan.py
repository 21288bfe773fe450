# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: host_plan
short_description: Give every uplink its slot, and say what the host role declares for them
version_added: 0.1.0
description:
  - Validates the uplink list (at most 8, each an interface name or a dict with C(name) and C(gateway))
    and gives uplink N slot N, following the seed's plan; fails with a one-line message naming the bad item.
  - Slot N is tap C(mptcpN) with host address 10.66.(6+N).1/24 (the guest takes .2), and routing
    table (and rule priority) 6606+N.
author:
  - mpsocks developers (@mpsocks)
options:
  _input:
    description: The uplinks, as the role's O(mpsocks_uplinks).
    type: list
    elements: raw
    required: true
  tap_prefix:
    description: Prefix of the tap names.
    type: str
    default: mptcp
  tap_owner:
    description: User that may open the taps, or null.
    type: str
"""

EXAMPLES = r"""
- name: Plan two uplinks
  ansible.builtin.debug:
    msg: "{{ ['wlp1s0', {'name': 'usb0', 'gateway': '192.168.42.129'}] | mpsocks.mptcp.host_plan }}"
"""

RETURN = r"""
_value:
  description:
    - C(uplinks), one dict per uplink with C(index), C(uplink), C(gateway), C(tap), C(subnet),
      C(host_address), C(guest_address) and C(table); C(tables), every slot's table; and the
      C(config) lists of the modules M(mpsocks.mptcp.tap) (C(taps)), M(mpsocks.mptcp.nat) (C(nat)) and
      M(mpsocks.mptcp.policy_route) (C(policy_routes)).
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.addressing import TAP_PREFIX, host_plan
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError


def plan_filter(uplinks, tap_prefix=TAP_PREFIX, tap_owner=None):
    try:
        return host_plan(list(uplinks) if isinstance(uplinks, (list, tuple)) else uplinks, tap_prefix,
                         tap_owner or None)
    except MpsocksError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {"host_plan": plan_filter}
