#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: veth
short_description: Manage a veth pair whose ends may be in two network namespaces
version_added: 0.1.0
description:
  - Creates, changes or removes one veth pair (C(ip link add NAME type veth peer name PEER netns NS))
    with the addresses and link state of both ends, through netlink.
  - End O(name) is in the current namespace (or O(netns)); end O(peer) is created directly in
    O(peer_netns). The peer end is read and changed through a netlink socket opened in that
    namespace; the module itself does not move.
  - If O(name) exists but is not a veth, or is a veth paired with another name or in another
    namespace, the module fails and changes nothing.
  - Deleting either end deletes the pair; so does deleting either namespace.
  - Every change is read back from the kernel; a difference is reported as a failure.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - pyroute2 >= 0.9.7 on the managed host
options:
  name:
    description:
      - Name of the end in the current namespace (or O(netns)), at most 15 characters.
    type: str
    required: true
  peer:
    description:
      - Name of the other end, at most 15 characters.
      - It may equal O(name) only when the peer lives in another namespace.
    type: str
    required: true
  peer_netns:
    description:
      - Named network namespace (as in C(ip netns list)) the peer end lives in. It must exist.
      - When omitted, the peer is in the same namespace as O(name).
    type: str
  state:
    description:
      - V(present) creates or updates the pair, V(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
  addresses:
    description:
      - Every address end O(name) should hold, as C(ADDR/PREFIX) (IPv4 or IPv6).
      - Addresses not listed are removed; IPv6 link-local addresses are left to the kernel.
      - When omitted, the addresses are not managed.
    type: list
    elements: str
  peer_addresses:
    description:
      - Every address end O(peer) should hold, like O(addresses).
      - When omitted, the peer's addresses are not managed.
    type: list
    elements: str
  up:
    description:
      - Whether both ends are administratively up.
    type: bool
    default: true
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
  - module: mpsocks.mptcp.netns
"""

EXAMPLES = r"""
- name: Link the lab host to its first ISP
  mpsocks.mptcp.veth:
    name: isp0
    addresses: [10.66.10.2/30]
    peer: host
    peer_netns: mpslab-isp0
    peer_addresses: [10.66.10.1/30]
    netns: mpslab-host

- name: Both ends in one namespace, addresses not managed
  mpsocks.mptcp.veth:
    name: v0
    peer: v0p

- name: Remove the pair
  mpsocks.mptcp.veth:
    name: isp0
    peer: host
    peer_netns: mpslab-isp0
    netns: mpslab-host
    state: absent
"""

RETURN = r"""
veth:
  description: The pair as the kernel holds it after the task (empty when absent).
  returned: always
  type: dict
  contains:
    name:
      description: Name of the end in the current namespace.
      type: str
      sample: isp0
    netns:
      description: The O(netns) option, the namespace of this end (null for the current one).
      type: str
      sample: mpslab-host
    addresses:
      description: Addresses of this end as C(ADDR/PREFIX), IPv6 link-local left out.
      type: list
      elements: str
      sample: [10.66.10.2/30]
    up:
      description: Whether this end is administratively up.
      type: bool
      sample: true
    peer:
      description: The other end, with the same keys; its C(netns) is O(peer_netns).
      type: dict
      sample:
        name: host
        netns: mpslab-isp0
        addresses: [10.66.10.1/30]
        up: true
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.veth import Veth


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            peer=dict(type="str", required=True),
            peer_netns=dict(type="str"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            addresses=dict(type="list", elements="str"),
            peer_addresses=dict(type="list", elements="str"),
            up=dict(type="bool", default=True),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), Veth)


if __name__ == "__main__":
    main()
