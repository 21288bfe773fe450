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
  - Creates, changes or removes veth pairs (C(ip link add NAME type veth peer name PEER netns NS))
    with the addresses and link state of both ends, through netlink, a list of them in one call.
  - End O(config[].name) is in the item's namespace; end O(config[].peer) is created directly in
    O(config[].peer_netns) and read and changed through a netlink socket opened there.
  - Both ends carry the alias C(mpsocks), the mark by which mpsocks tells its own links from a user's.
  - If O(config[].name) exists but is not a veth, is not marked as mpsocks', or is a veth paired
    with another name or in another namespace, the module fails and changes nothing.
  - Deleting either end deletes the pair; so does deleting either namespace.
  - Every change is read back from the kernel; a difference is reported as a failure.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - pyroute2 >= 0.9.7 on the managed host
options:
  config:
    description:
      - The veth pairs, one dict each. Every item is validated before anything changes, then the
        pairs are made to match in order, each from its own namespace.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Name of the end in the item's namespace (O(config[].netns)), at most 15 characters.
        type: str
        required: true
      peer:
        description:
          - Name of the other end, at most 15 characters.
          - It may equal O(config[].name) only when the peer lives in another namespace.
        type: str
        required: true
      peer_netns:
        description:
          - Named network namespace (as in C(ip netns list)) the peer end lives in. It must exist.
          - When omitted, the peer is in the same namespace as O(config[].name).
        type: str
      state:
        description:
          - V(present) creates or updates the pair, V(absent) deletes it.
          - Defaults to the module's O(state).
        type: str
        choices: [present, absent]
      addresses:
        description:
          - Every address end O(config[].name) should hold, as C(ADDR/PREFIX) (IPv4 or IPv6).
          - Addresses not listed are removed; IPv6 link-local addresses are left to the kernel.
          - When omitted, the addresses are not managed.
        type: list
        elements: str
      peer_addresses:
        description:
          - Every address end O(config[].peer) should hold, like O(config[].addresses).
          - When omitted, the peer's addresses are not managed.
        type: list
        elements: str
      up:
        description:
          - Whether both ends are administratively up (default true).
        type: bool
      forwarding:
        description:
          - Whether the kernel forwards IPv4 packets arriving on end O(config[].name)
            (C(net.ipv4.conf.NAME.forwarding)), as a router's link towards a guest needs.
          - When omitted, it is not managed (a new end starts with the namespace's C(conf/default) value).
          - The setting goes with the link; nothing needs restoring when the pair is removed.
        type: bool
      netns:
        description:
          - Namespace of end O(config[].name); defaults to the module's O(netns).
        type: str
  state:
    description:
      - The state of every item that does not give its own.
      - V(overridden) makes every item present and deletes every other veth of mpsocks' (with the
        C(mpsocks) alias) in the module's namespace whose name is in O(names); the peer goes with it.
        A veth without the mark, or of another name, is never touched.
    type: str
    choices: [present, absent, overridden]
    default: present
  names:
    description:
      - The names of the veth ends (in the module's O(netns)) that V(overridden) may delete; required
        with it, ignored otherwise.
    type: list
    elements: str
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
- name: Link the lab host to its two ISPs
  mpsocks.mptcp.veth:
    netns: mpslab-host
    config:
      - name: lab0
        addresses: [198.18.0.2/24]
        peer: cust
        peer_netns: mpslab-isp0
        peer_addresses: [198.18.0.1/24]
      - name: lab1
        addresses: [198.18.1.2/24]
        peer: cust
        peer_netns: mpslab-isp1
        peer_addresses: [198.18.1.1/24]

- name: Both ends in one namespace, addresses not managed
  mpsocks.mptcp.veth:
    config:
      - name: v0
        peer: v0p

- name: Exactly one guest link among mptcp0 ... mptcp7 (the others of mpsocks' go), forwarding on
  mpsocks.mptcp.veth:
    state: overridden
    names: [mptcp0, mptcp1, mptcp2, mptcp3, mptcp4, mptcp5, mptcp6, mptcp7]
    config:
      - name: mptcp0
        addresses: [10.66.6.1/24]
        forwarding: true
        peer: eth0
        peer_netns: mpsocks-guest

- name: Remove a pair
  mpsocks.mptcp.veth:
    state: absent
    config:
      - name: lab0
        peer: cust
        peer_netns: mpslab-isp0
        netns: mpslab-host
"""

RETURN = r"""
results:
  description: One entry per pair, in the order of O(config), then the pairs V(overridden) deleted.
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: Which pair.
      type: str
      sample: veth lab0
    changed:
      description: Whether this pair changed.
      type: bool
    veth:
      description: The pair as the kernel holds it after the task (empty when absent), in the form
        O(config) takes.
      type: dict
      contains:
        name:
          description: Name of the end in the item's namespace.
          type: str
          sample: lab0
        netns:
          description: The item's namespace (null for the current one).
          type: str
          sample: mpslab-host
        addresses:
          description: Addresses of this end as C(ADDR/PREFIX), IPv6 link-local left out.
          type: list
          elements: str
          sample: [198.18.0.2/24]
        up:
          description: Whether the ends are administratively up.
          type: bool
          sample: true
        forwarding:
          description: Whether IPv4 forwarding is on for what arrives on this end.
          type: bool
          sample: true
        peer:
          description: Name of the other end.
          type: str
          sample: cust
        peer_netns:
          description: Namespace of the other end (null for the same one).
          type: str
          sample: mpslab-isp0
        peer_addresses:
          description: Addresses of the other end.
          type: list
          elements: str
          sample: [198.18.0.1/24]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.veth import Veth


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            config=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                peer=dict(type="str", required=True),
                peer_netns=dict(type="str"),
                state=dict(type="str", choices=["present", "absent"]),
                addresses=dict(type="list", elements="str"),
                peer_addresses=dict(type="list", elements="str"),
                up=dict(type="bool"),
                forwarding=dict(type="bool"),
                netns=dict(type="str"),
            )),
            state=dict(type="str", choices=["present", "absent", "overridden"], default="present"),
            names=dict(type="list", elements="str"),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), Veth)


if __name__ == "__main__":
    main()
