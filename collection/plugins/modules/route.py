#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: route
short_description: Manage routes, each one route in one routing table
version_added: 0.1.0
description:
  - Adds, changes or removes IPv4 and IPv6 routes through netlink, like
    C(ip route replace 198.19.0.0/24 via 198.18.64.1 dev core metric 0 table main); a list of them,
    in as many network namespaces as the items name, in one call.
  - A route is identified as the kernel identifies it, by table, address family, destination
    prefix and metric. V(present) makes that identity hold exactly one route, through O(config[].via)
    and O(config[].dev), replacing whatever held it (also several routes added with C(ip route append),
    a multipath or a blackhole route); V(absent) deletes every route of that identity, whatever its
    gateway. Naming the identity is the request, so a route there that mpsocks did not make is
    replaced or deleted too.
  - A route the module adds carries the protocol C(166) (C(ip route) shows C(proto 166)), which is
    how mpsocks tells its own routes from others.
  - Other routes, also those to the same prefix with another metric, are never changed.
  - Every change is read back from the kernel; a difference is reported as a failure. When a change
    fails half way, every route the identity held before is put back.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - pyroute2 >= 0.9.7 on the managed host
options:
  config:
    description:
      - The routes, one dict each. Every item is validated before anything changes, then the routes
        are made to match in order, each in its own namespace.
    type: list
    elements: dict
    required: true
    suboptions:
      to:
        description:
          - Destination prefix as C(ADDR/LEN) with no host bits set (V(198.19.0.0/24), V(fd00:19::/64)),
            a bare address for a host route, or V(default).
          - V(default) is IPv4's C(0.0.0.0/0), or IPv6's C(::/0) when O(config[].via) is an IPv6
            address; write V(::/0) for an IPv6 default route through a device only.
        type: str
        required: true
      via:
        description:
          - Gateway address, of the same family as O(config[].to). Omit it for a route straight onto
            O(config[].dev).
          - An IPv6 link-local gateway needs O(config[].dev).
        type: str
      dev:
        description:
          - Outgoing interface; it must exist.
          - When omitted, the kernel picks the interface whose network holds O(config[].via), and an
            existing route keeps the interface it has.
          - With V(present), at least one of O(config[].via) and O(config[].dev) is required.
        type: str
      metric:
        description:
          - Metric (priority) of the route; part of its identity, so two routes to the same prefix
            with different metrics are two routes.
          - V(0) (the default) is the kernel's default, which IPv6 stores as V(1024), so for IPv6
            V(0) and V(1024) name the same route.
        type: int
      table:
        description:
          - Routing table number, 1 to 4294967295; V(254) (the default) is C(main). The kernel's
            C(local) table (V(255)) is refused.
        type: int
      state:
        description:
          - V(present) creates the route or changes its gateway and device, V(absent) deletes it.
          - With V(absent), O(config[].via) and O(config[].dev) are ignored except for choosing the
            family of V(default).
          - Defaults to the module's O(state).
        type: str
        choices: [present, absent]
      netns:
        description:
          - Namespace of this route; defaults to the module's O(netns).
        type: str
  state:
    description:
      - The state of every item that does not give its own.
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
- name: Routes of a chain of router namespaces, in one call
  mpsocks.mptcp.route:
    config:
      - netns: lab-r1
        to: 198.19.0.0/24
        via: 198.18.129.2
        dev: next
      - netns: lab-r2
        to: 198.19.0.0/24
        via: 198.18.130.2
        dev: next
      - netns: lab-isp0
        to: default
        via: 198.18.64.1

- name: A second default route with a higher metric
  mpsocks.mptcp.route:
    config:
      - to: default
        via: 198.18.1.1
        dev: mpslab1
        metric: 101

- name: IPv6 route in table 100, inside a namespace
  mpsocks.mptcp.route:
    netns: mpslab-host
    config:
      - to: fd00:19::/64
        via: fe80::1
        dev: up0
        table: 100

- name: Remove routes (their gateways do not matter)
  mpsocks.mptcp.route:
    state: absent
    config:
      - to: 198.19.0.0/24
      - to: default
        metric: 101
"""

RETURN = r"""
results:
  description: One entry per route, in the order of O(config).
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: Which route.
      type: str
      sample: route 198.19.0.0/24 metric 0 table main
    changed:
      description: Whether this route changed.
      type: bool
    route:
      description: The route as the kernel holds it after the task (empty when absent), in the form
        O(config) takes.
      type: dict
      contains:
        to:
          description: Destination prefix; V(default) for IPv4's, V(::/0) for an IPv6 default route
            without a gateway.
          type: str
          sample: 198.19.0.0/24
        via:
          description: Gateway, or null for a route straight onto the device.
          type: str
          sample: 198.18.129.2
        dev:
          description: Outgoing interface.
          type: str
          sample: next
        metric:
          description: Metric as the kernel holds it (V(1024) for an IPv6 route given V(0)).
          type: int
          sample: 0
        table:
          description: Table number.
          type: int
          sample: 254
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.route import Route


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            config=dict(type="list", elements="dict", required=True, options=dict(
                to=dict(type="str", required=True),
                via=dict(type="str"),
                dev=dict(type="str"),
                metric=dict(type="int"),
                table=dict(type="int"),
                state=dict(type="str", choices=["present", "absent"]),
                netns=dict(type="str"),
            )),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), Route)


if __name__ == "__main__":
    main()
