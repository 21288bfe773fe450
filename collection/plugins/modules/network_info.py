#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: network_info
short_description: Find the taps, routing tables and NAT entries mpsocks holds
version_added: 0.1.0
description:
  - Reads, for each of the 8 uplink slots, whether tap C(mptcpN), routing table C(6606+N)
    (rules or routes) and the NAT entry C(mptcpN) in the project's nft table exist.
  - Used by teardown, so that it removes what an interrupted run left behind, whatever the uplink list.
  - Changes nothing.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - pyroute2 >= 0.9.7 and nft on the managed host
options:
  nft_table:
    description: Name of the project's C(inet) nft table.
    type: str
    default: mpsocks
  tap_prefix:
    description: Prefix of the tap names.
    type: str
    default: mptcp
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - mpsocks.mptcp.netns
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    support: full
    platforms: linux
"""

EXAMPLES = r"""
- name: What does mpsocks hold here?
  mpsocks.mptcp.network_info:
  register: found

- name: Show the taps
  ansible.builtin.debug:
    msg: "{{ found.slots | selectattr('tap_exists') | map(attribute='tap') }}"
"""

RETURN = r"""
slots:
  description: The slots in which something exists, in slot order.
  returned: always
  type: list
  elements: dict
  contains:
    index:
      description: Slot number n.
      type: int
      sample: 0
    tap:
      description: Name of the slot's tap.
      type: str
      sample: mptcp0
    table:
      description: The slot's routing table.
      type: int
      sample: 6606
    subnet:
      description: The slot's subnet.
      type: str
      sample: 10.66.6.0/24
    host_address:
      description: The host's address on the tap.
      type: str
      sample: 10.66.6.1/24
    guest_address:
      description: The guest's address on the tap.
      type: str
      sample: 10.66.6.2/24
    tap_exists:
      description: Whether the tap exists.
      type: bool
    table_used:
      description: Whether the routing table holds routes or has rules pointing to it.
      type: bool
    nat_used:
      description: Whether the nft table holds a NAT entry for the slot.
      type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns import enter_netns
from ansible_collections.mpsocks.mptcp.plugins.module_utils.network_info import used_slots


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            nft_table=dict(type="str", default="mpsocks"),
            tap_prefix=dict(type="str", default="mptcp"),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    module = build_module()
    try:
        if module.params["netns"]:
            enter_netns(module.params["netns"])
        slots = used_slots(module.params["nft_table"], module.params["tap_prefix"])
    except MpsocksError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, slots=slots)


if __name__ == "__main__":
    main()
