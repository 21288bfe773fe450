#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: interface
short_description: Set the addresses, link state and MTU of existing network interfaces
version_added: 0.1.0
description:
  - Configures links that already exist, of any kind (a guest's C(eth0), a VM's C(enp1s0), a veth's
    far end), through netlink; a list of them, in as many network namespaces as the items name, in
    one call. The equivalent of C(ip addr add/del), C(ip link set IF up|down) and C(ip link set IF mtu N).
  - The module never creates or deletes a link and marks nothing; naming a link is the request to
    configure it, whoever made it. A link that does not exist is an error (see
    M(mpsocks.mptcp.tap) and M(mpsocks.mptcp.veth) for links mpsocks makes).
  - A link always exists here, so there is no C(state); options left out are not managed.
  - Every item is checked (the link exists, the MTU is in the link's range, the addresses parse)
    before anything changes. Every change is read back from the kernel; a difference is reported as a
    failure.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - pyroute2 >= 0.9.7 on the managed host
options:
  config:
    description:
      - The links, one dict each, configured in order, each in its own namespace.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Name of an existing interface.
        type: str
        required: true
      addresses:
        description:
          - Every address the link should hold, as C(ADDR/PREFIX) (IPv4 or IPv6).
          - Addresses not listed are removed; IPv6 link-local addresses are left to the kernel.
          - When omitted, the addresses are not managed.
        type: list
        elements: str
      up:
        description:
          - Whether the link is administratively up. When omitted, its state is not changed.
        type: bool
      mtu:
        description:
          - The link's MTU, within the range the link's driver takes. When omitted, it is not changed.
        type: int
      netns:
        description:
          - Namespace of this link; defaults to the module's O(netns).
        type: str
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
  - module: mpsocks.mptcp.veth
  - module: mpsocks.mptcp.tap
"""

EXAMPLES = r"""
- name: The guest's side of two uplinks
  mpsocks.mptcp.interface:
    config:
      - name: eth0
        addresses: [10.66.6.2/24]
        up: true
      - name: eth1
        addresses: [10.66.7.2/24]
        up: true

- name: A smaller MTU on a link of a lab namespace, addresses left alone
  mpsocks.mptcp.interface:
    netns: mpslab-host
    config:
      - name: lab1
        mtu: 1400
"""

RETURN = r"""
results:
  description: One entry per link, in the order of O(config).
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: Which link.
      type: str
      sample: interface eth0
    changed:
      description: Whether this link changed.
      type: bool
    interface:
      description: The link as the kernel holds it after the task, in the form O(config) takes.
      type: dict
      contains:
        name:
          description: Interface name.
          type: str
          sample: eth0
        addresses:
          description: Addresses as C(ADDR/PREFIX), IPv6 link-local left out.
          type: list
          elements: str
          sample: [10.66.6.2/24]
        up:
          description: Whether the link is administratively up.
          type: bool
          sample: true
        mtu:
          description: The link's MTU.
          type: int
          sample: 1500
        netns:
          description: The link's namespace (null for the module's own).
          type: str
          sample: mpsocks-guest
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.interface import Interface


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            config=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                addresses=dict(type="list", elements="str"),
                up=dict(type="bool"),
                mtu=dict(type="int"),
                netns=dict(type="str"),
            )),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), Interface)


if __name__ == "__main__":
    main()
