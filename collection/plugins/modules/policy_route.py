#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: policy_route
short_description: Manage source routing through routing tables of mpsocks' own
version_added: 0.1.0
description:
  - Manages routing tables and the C(ip rule) that selects each, e.g.
    C(ip rule add iif mptcp1 lookup 6607 priority 6607) plus
    C(ip route add default via 192.168.1.1 dev wlp1s0 table 6607); a list of them, in as many
    network namespaces as the items name, in one call.
  - The rule selects traffic by incoming interface (O(config[].iif)) or source (O(config[].source)),
    by destination (O(config[].destination)), or by a destination together with one of the other two.
  - The rule's selector decides the address family (an interface alone selects IPv4); the routes of
    the table are of that family.
  - Every rule and route the module adds carries the protocol C(166) (C(ip rule) and C(ip route)
    show C(proto 166)). Only those are mpsocks'; the module changes and removes nothing else. A
    user's rule pointing at the same table, or a user's route in it, is left alone and reported in
    RV(results[].foreign); a user's route with the destination a listed route needs is an error.
  - Routes of mpsocks' in the table that are not listed are removed, and so are other rules of
    mpsocks' that point to it.
  - The main table and every other table are never changed.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - pyroute2 >= 0.9.7 on the managed host
options:
  config:
    description:
      - The tables, one dict each. Every item is validated before anything changes, then the tables
        are made to match in order, each in its own namespace.
    type: list
    elements: dict
    required: true
    suboptions:
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
          - Select packets that arrive on this interface (C(ip rule iif)). Mutually exclusive with
            O(config[].source).
          - At least one of O(config[].iif), O(config[].source) and O(config[].destination) is required
            with V(present).
        type: str
      source:
        description:
          - Select packets from this subnet (C(ip rule from)). Mutually exclusive with O(config[].iif).
        type: str
      destination:
        description:
          - Select packets to this subnet (C(ip rule to)), alone or together with O(config[].iif) or
            O(config[].source) (then a packet must match both).
          - With O(config[].source), both must be of the same address family.
        type: str
      routes:
        description:
          - Every route the table should hold, all of the rule's address family.
          - When omitted, the table holds no route of mpsocks'.
        type: list
        elements: dict
        suboptions:
          to:
            description: Destination prefix, or V(default) (the default).
            type: str
          via:
            description:
              - Gateway address; V(auto) takes the gateway of the main table's default route
                through O(config[].routes[].dev), and fails if there is none.
              - Omit it for a point-to-point link.
            type: str
          dev:
            description: Outgoing interface; it must exist.
            type: str
            required: true
      state:
        description:
          - V(present) makes the rule and the routes exactly as given.
          - V(absent) removes every rule of mpsocks' pointing to the table and every route of
            mpsocks' in it.
          - Defaults to the module's O(state).
        type: str
        choices: [present, absent]
      netns:
        description:
          - Namespace of this table; defaults to the module's O(netns).
        type: str
  state:
    description:
      - The state of every item that does not give its own.
      - V(overridden) makes every item present and removes, in the tables of O(tables) that no item
        names, every rule and route of mpsocks' (in the namespace of the module's O(netns)).
    type: str
    choices: [present, absent, overridden]
    default: present
  tables:
    description:
      - The tables V(overridden) may empty; required with it, ignored otherwise.
    type: list
    elements: int
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
- name: Traffic from taps mptcp0 and mptcp1 leaves through their uplinks' gateways
  mpsocks.mptcp.policy_route:
    config:
      - table: 6606
        iif: mptcp0
        routes:
          - via: auto
            dev: wlp1s0
      - table: 6607
        iif: mptcp1
        routes:
          - via: 192.168.42.129
            dev: usb0

- name: The same, and no other uplink slot keeps source routing
  mpsocks.mptcp.policy_route:
    state: overridden
    tables: [6606, 6607, 6608, 6609, 6610, 6611, 6612, 6613]
    config:
      - table: 6606
        iif: mptcp0
        routes:
          - via: auto
            dev: wlp1s0

- name: Source routing by subnet, and by destination, inside a lab namespace
  mpsocks.mptcp.policy_route:
    netns: mpslab-host
    config:
      - table: 6608
        source: 10.66.8.0/24
        routes:
          - via: 192.168.42.129
            dev: usb0
      - table: 6616
        destination: 198.18.0.0/15
        routes:
          - to: 198.18.0.0/15
            via: 198.18.0.1
            dev: mpslab0

- name: An IPv6 policy (its default route is IPv6's)
  mpsocks.mptcp.policy_route:
    config:
      - table: 6617
        source: fd00:1::/64
        routes:
          - dev: up0

- name: Remove tables and their rules
  mpsocks.mptcp.policy_route:
    state: absent
    config:
      - table: 6607
      - table: 6608
"""

RETURN = r"""
results:
  description: One entry per table, in the order of O(config), then the tables V(overridden) emptied.
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: Which table.
      type: str
      sample: policy route table 6607
    changed:
      description: Whether this table or its rule changed.
      type: bool
    policy_route:
      description:
        - mpsocks' rule and routes of the table as the kernel holds them after the task (empty when
          absent), in the form O(config) takes.
      type: dict
      contains:
        table:
          description: Table number.
          type: int
          sample: 6607
        priority:
          description: Priority of the rule.
          type: int
          sample: 6607
        iif:
          description: Incoming interface the rule selects, or null.
          type: str
          sample: mptcp1
        source:
          description: Source subnet the rule selects, or null.
          type: str
          sample: null
        destination:
          description: Destination subnet the rule selects, or null.
          type: str
          sample: null
        routes:
          description: Routes of mpsocks' in the table, each with C(to), C(via) and C(dev).
          type: list
          elements: dict
          sample: [{"to": "default", "via": "192.168.1.1", "dev": "wlp1s0"}]
    foreign:
      description: What points at the table or is in it without mpsocks' mark, left alone.
      type: dict
      contains:
        rules:
          description: Such rules, each with C(family), C(priority), C(protocol) and those of C(iif),
            C(from) and C(to) it selects by.
          type: list
          elements: dict
          sample: [{"family": "ipv4", "priority": 6607, "from": "10.0.0.0/8", "protocol": 3}]
        routes:
          description: Such routes, each with C(family), C(to), C(via), C(dev), C(metric) and C(protocol).
          type: list
          elements: dict
          sample: []
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.policy_route import PolicyRoute


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            config=dict(type="list", elements="dict", required=True, options=dict(
                table=dict(type="int", required=True),
                priority=dict(type="int"),
                iif=dict(type="str"),
                source=dict(type="str"),
                destination=dict(type="str"),
                routes=dict(type="list", elements="dict", options=dict(
                    to=dict(type="str"),
                    via=dict(type="str"),
                    dev=dict(type="str", required=True),
                )),
                state=dict(type="str", choices=["present", "absent"]),
                netns=dict(type="str"),
            )),
            state=dict(type="str", choices=["present", "absent", "overridden"], default="present"),
            tables=dict(type="list", elements="int"),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), PolicyRoute)


if __name__ == "__main__":
    main()
