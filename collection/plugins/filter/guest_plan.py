# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: guest_plan
short_description: Say what the guest role declares for the uplinks
version_added: 0.1.0
description:
  - Validates the uplink list as M(mpsocks.mptcp.host_plan#filter) does, the guest's interface names and the
    resolvers, and returns the C(config) list of every module the role C(mpsocks.mptcp.guest_network) calls;
    fails with a one-line message naming the bad item.
  - Guest interface N holds 10.66.(6+N).2/24; table 6606+N, selected by C(ip rule from 10.66.(6+N).2), holds
    C(default via 10.66.(6+N).1); the main table's default route goes through interface 0; every interface
    has a loose reverse-path filter; every interface beyond the first is an MPTCP C(subflow) endpoint bound
    to its device (C(backup) too for a backup uplink); the MPTCP limits allow one extra subflow per
    extra uplink.
author:
  - mpsocks developers (@mpsocks)
options:
  _input:
    description: The uplinks, as the role's O(mpsocks_uplinks) (their names are not used in the guest).
    type: list
    elements: raw
    required: true
  interfaces:
    description: The guest's interface of each uplink, in order; empty for C(eth0), C(eth1) ...
    type: list
    elements: str
  dns_servers:
    description: The guest's resolvers; empty to leave its resolver file alone.
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Plan the guest of two uplinks, the second a backup
  ansible.builtin.debug:
    msg: "{{ ['wlp1s0', {'name': 'usb0', 'backup': true}]
             | mpsocks.mptcp.guest_plan(dns_servers=['192.0.2.53']) }}"
"""

RETURN = r"""
_value:
  description:
    - The C(config) lists of the modules M(mpsocks.mptcp.interface) (C(interfaces)),
      M(mpsocks.mptcp.sysctl) (C(sysctls)), M(mpsocks.mptcp.policy_route) (C(policy_routes), with
      C(tables), every slot's table, for V(overridden)), M(mpsocks.mptcp.route) (C(routes)),
      M(mpsocks.mptcp.mptcp_limits) (C(mptcp_limits)) and M(mpsocks.mptcp.mptcp_endpoint)
      (C(mptcp_endpoints), the endpoints of unused slots absent); C(socks_address), the guest's address
      on interface 0; and C(resolv_conf), the text of the guest's resolver file (null when no resolver
      is given).
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.guest import guest_plan


def _listed(value):
    """A list given through Jinja as a tuple or list, as a list; anything else as it is, for validation."""
    return list(value) if isinstance(value, (list, tuple)) else value


def plan_filter(uplinks, interfaces=None, dns_servers=None):
    try:
        return guest_plan(_listed(uplinks), _listed(interfaces), _listed(dns_servers))
    except MpsocksError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {"guest_plan": plan_filter}
