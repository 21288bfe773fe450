#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: route
short_description: Manage one route in one routing table
version_added: 0.1.0
description:
  - Adds, changes or removes one IPv4 or IPv6 route through netlink, like
    C(ip route replace 198.19.0.0/24 via 198.18.64.1 dev core metric 0 table main).
  - A route is identified as the kernel identifies it, by table, address family, destination
    prefix and metric. V(present) makes the route with that identity go through O(via) and O(dev),
    replacing its gateway and device if they differ; V(absent) deletes it, whatever its gateway.
  - Other routes, also those to the same prefix with another metric, are never changed.
  - Every change is read back from the kernel; a difference is reported as a failure.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - pyroute2 >= 0.9.7 on the managed host
options:
  to:
    description:
      - Destination prefix as C(ADDR/LEN) with no host bits set (V(198.19.0.0/24), V(fd00:19::/64)),
        a bare address for a host route, or V(default).
      - V(default) is IPv4's C(0.0.0.0/0), or IPv6's C(::/0) when O(via) is an IPv6 address;
        write V(::/0) for an IPv6 default route through a device only.
    type: str
    required: true
  via:
    description:
      - Gateway address, of the same family as O(to). Omit it for a route straight onto O(dev).
      - An IPv6 link-local gateway needs O(dev).
    type: str
  dev:
    description:
      - Outgoing interface; it must exist.
      - When omitted, the kernel picks the interface whose network holds O(via), and an existing
        route keeps the interface it has.
      - With O(state=present), at least one of O(via) and O(dev) is required.
    type: str
  metric:
    description:
      - Metric (priority) of the route; part of its identity, so two routes to the same prefix
        with different metrics are two routes.
      - V(0) is the kernel's default, which IPv6 stores as V(1024), so for IPv6 V(0) and V(1024)
        name the same route.
    type: int
    default: 0
  table:
    description:
      - Routing table number, 1 to 4294967295; V(254) is C(main). The kernel's C(local) table
        (V(255)) is refused.
    type: int
    default: 254
  state:
    description:
      - V(present) creates the route or changes its gateway and device, V(absent) deletes it.
      - With V(absent), O(via) and O(dev) are ignored except for choosing the family of V(default).
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
seealso:
  - module: mpsocks.mptcp.policy_route
  - module: mpsocks.mptcp.sysctl
"""

EXAMPLES = r"""
- name: Servers are reached through the next router
  mpsocks.mptcp.route:
    netns: lab-r1
    to: 198.19.0.0/24
    via: 198.18.129.2
    dev: next

- name: Default route of an ISP namespace
  mpsocks.mptcp.route:
    netns: lab-isp0
    to: default
    via: 198.18.64.1

- name: A second default route with a higher metric
  mpsocks.mptcp.route:
    to: default
    via: 198.18.1.1
    dev: mpslab1
    metric: 101

- name: IPv6 route in table 100
  mpsocks.mptcp.route:
    to: fd00:19::/64
    via: fe80::1
    dev: up0
    table: 100

- name: Remove the route (its gateway does not matter)
  mpsocks.mptcp.route:
    to: 198.19.0.0/24
    state: absent
"""

RETURN = r"""
route:
  description: The route as the kernel holds it after the task (empty when absent).
  returned: always
  type: dict
  contains:
    table:
      description: Table number.
      type: int
      sample: 254
    family:
      description: V(ipv4) or V(ipv6).
      type: str
      sample: ipv4
    to:
      description: Destination prefix, or V(default) for a zero-length prefix of either family.
      type: str
      sample: 198.19.0.0/24
    metric:
      description: Metric as the kernel holds it (V(1024) for an IPv6 route given V(0)).
      type: int
      sample: 0
    via:
      description: Gateway, or null for a route straight onto the device.
      type: str
      sample: 198.18.129.2
    dev:
      description: Outgoing interface.
      type: str
      sample: next
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.route import Route


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            to=dict(type="str", required=True),
            via=dict(type="str"),
            dev=dict(type="str"),
            metric=dict(type="int", default=0),
            table=dict(type="int", default=254),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), Route)


if __name__ == "__main__":
    main()
