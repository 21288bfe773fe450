#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: policy_route
short_description: Manage source routing through a routing table of its own
version_added: 0.1.0
description:
  - Manages one routing table and the C(ip rule) that selects it, e.g.
    C(ip rule add iif mptcp1 lookup 6607 priority 6607) plus
    C(ip route add default via 192.168.1.1 dev wlp1s0 table 6607).
  - The rule selects traffic by incoming interface (O(iif)) or source (O(source)), by
    destination (O(destination)), or by a destination together with one of the other two.
  - The table is treated as owned by this task; routes in it that are not listed are removed, and so
    are other rules that point to it.
  - The main table and every other table are never changed.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - pyroute2 >= 0.9.7 on the managed host
options:
  table:
    description:
      - Routing table number, 1 to 4294967295, except the kernel's own 252 to 255.
    type: int
    required: true
  priority:
    description:
      - Priority (preference) of the rule; lower is looked at first.
      - Defaults to the table number, which must then be below 32766.
    type: int
  iif:
    description:
      - Select packets that arrive on this interface (C(ip rule iif)). Mutually exclusive with O(source).
      - At least one of O(iif), O(source) and O(destination) is required with O(state=present).
    type: str
  source:
    description:
      - Select packets from this subnet (C(ip rule from)). Mutually exclusive with O(iif).
    type: str
  destination:
    description:
      - Select packets to this subnet (C(ip rule to)), alone or together with O(iif) or O(source)
        (then a packet must match both).
      - With O(source), both must be of the same address family.
    type: str
  routes:
    description:
      - Every route the table should hold.
    type: list
    elements: dict
    default: []
    suboptions:
      to:
        description: Destination prefix, or V(default).
        type: str
        default: default
      via:
        description:
          - Gateway address; V(auto) takes the gateway of the main table's default route
            through O(routes[].dev), and fails if there is none.
          - Omit it for a point-to-point link.
        type: str
      dev:
        description: Outgoing interface; it must exist.
        type: str
        required: true
  state:
    description:
      - V(present) makes the rule and the routes exactly as given.
      - V(absent) removes every rule pointing to the table and every route in it.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - mpsocks.mptcp.netns
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    support: full
    platforms: linux
"""

EXAMPLES = r"""
- name: Traffic from tap mptcp1 leaves through wlp1s0's gateway
  mpsocks.mptcp.policy_route:
    table: 6607
    iif: mptcp1
    routes:
      - via: auto
        dev: wlp1s0

- name: Source routing by subnet with an explicit gateway
  mpsocks.mptcp.policy_route:
    table: 6608
    source: 10.66.8.0/24
    routes:
      - via: 192.168.42.129
        dev: usb0

- name: Only traffic to the lab's addresses goes through the lab's uplink
  mpsocks.mptcp.policy_route:
    table: 6616
    destination: 198.18.0.0/15
    routes:
      - to: 198.18.0.0/15
        via: 198.18.0.1
        dev: mpslab0

- name: Traffic from one address to one subnet
  mpsocks.mptcp.policy_route:
    table: 6617
    source: 10.66.8.2/32
    destination: 198.19.0.0/24
    routes:
      - via: auto
        dev: usb0

- name: Remove the table and its rule
  mpsocks.mptcp.policy_route:
    table: 6607
    state: absent
"""

RETURN = r"""
policy_route:
  description: The table's rules and routes as the kernel holds them after the task (empty when absent).
  returned: always
  type: dict
  contains:
    table:
      description: Table number.
      type: int
      sample: 6607
    rules:
      description: Rules pointing to the table, each with C(priority) and those of C(iif), C(from) and C(to)
        it selects by.
      type: list
      elements: dict
      sample: [{"priority": 6607, "iif": "mptcp1"}]
    routes:
      description: Routes in the table, each with C(to), C(via) and C(dev).
      type: list
      elements: dict
      sample: [{"to": "default", "via": "192.168.1.1", "dev": "wlp1s0"}]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.policy_route import PolicyRoute


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            table=dict(type="int", required=True),
            priority=dict(type="int"),
            iif=dict(type="str"),
            source=dict(type="str"),
            destination=dict(type="str"),
            routes=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    to=dict(type="str", default="default"),
                    via=dict(type="str"),
                    dev=dict(type="str", required=True),
                ),
            ),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            netns=dict(type="str"),
        ),
        mutually_exclusive=[("iif", "source")],
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), PolicyRoute)


if __name__ == "__main__":
    main()
