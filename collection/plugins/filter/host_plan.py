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
  - Validates the uplink list (at most 8, each an interface name or a dict with C(name), C(gateway) and
    C(backup)) and gives uplink N slot N, following bash mpsocks' plan; fails with a one-line message naming
    the bad item. The first uplink cannot be a backup.
  - Slot N is link C(mptcpN) with host address 10.66.(6+N).1/24 (the guest takes .2), and routing
    table (and rule priority) 6606+N.
  - The link is a tap (for a VM), or with O(guest_link=veth) a veth whose peer is the guest's interface
    N in namespace O(guest_netns).
author:
  - mpsocks developers (@mpsocks)
options:
  _input:
    description: The uplinks, as the role's O(mpsocks_uplinks).
    type: list
    elements: raw
    required: true
  tap_prefix:
    description: Prefix of the link names.
    type: str
    default: mptcp
  tap_owner:
    description: User that may open the taps, or null.
    type: str
  guest_link:
    description: What links the host to the guest, V(tap) or V(veth).
    type: str
    default: tap
  guest_netns:
    description: The guest namespace the veths' peers live in; required with O(guest_link=veth).
    type: str
  guest_interfaces:
    description: The names of the veths' peers in uplink order; empty for C(eth0), C(eth1) ...
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Plan two uplinks
  ansible.builtin.debug:
    msg: "{{ ['wlp1s0', {'name': 'usb0', 'gateway': '192.168.42.129'}] | mpsocks.mptcp.host_plan }}"

- name: Plan veths to a guest namespace, the second uplink as a backup
  ansible.builtin.debug:
    msg: "{{ ['wlp1s0', {'name': 'usb0', 'backup': true}] | mpsocks.mptcp.host_plan(guest_link='veth',
             guest_netns='mpsocks-guest') }}"
"""

RETURN = r"""
_value:
  description:
    - C(uplinks), one dict per uplink with C(index), C(uplink), C(gateway), C(backup), C(tap) (the link's
      name), C(subnet), C(host_address), C(guest_address) and C(table); C(tables) and C(links), every
      slot's table and link name; and the C(config) lists of the modules M(mpsocks.mptcp.tap) (C(taps),
      empty with veths), M(mpsocks.mptcp.veth) (C(veths), empty with taps), M(mpsocks.mptcp.nat) (C(nat))
      and M(mpsocks.mptcp.policy_route) (C(policy_routes)).
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.addressing import TAP_PREFIX, host_plan
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError


def _listed(value):
    """A list given through Jinja as a tuple or list, as a list; anything else as it is, for validation."""
    return list(value) if isinstance(value, (list, tuple)) else value


def plan_filter(uplinks, tap_prefix=TAP_PREFIX, tap_owner=None, guest_link="tap", guest_netns=None,
                guest_interfaces=None):
    try:
        return host_plan(_listed(uplinks), tap_prefix, tap_owner or None, guest_link, guest_netns or None,
                         _listed(guest_interfaces))
    except MpsocksError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {"host_plan": plan_filter}
