#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: tap
short_description: Manage a persistent tap device
version_added: 0.1.0
description:
  - Creates, changes or removes one persistent tap device (C(ip tuntap add mode tap)) with its
    owner, group, addresses and link state, through netlink and C(/dev/net/tun).
  - The tap is what a guest's network interface plugs into; uplink N of mpsocks uses tap C(mptcpN).
  - Every change is read back from the kernel; a difference is reported as a failure.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - pyroute2 >= 0.9.7 on the managed host
options:
  name:
    description:
      - Name of the tap device, at most 15 characters.
      - If an interface of another kind already has this name, the module fails and changes nothing.
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the tap, V(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
  owner:
    description:
      - User (name or uid) allowed to open the tap without privileges.
      - When omitted, an existing owner is kept and a new tap has none.
    type: str
  group:
    description:
      - Group (name or gid) allowed to open the tap without privileges.
      - When omitted, an existing group is kept and a new tap has none.
    type: str
  addresses:
    description:
      - Every address the tap should hold, as C(ADDR/PREFIX) (IPv4 or IPv6).
      - Addresses not listed are removed; IPv6 link-local addresses are left to the kernel.
      - When omitted, the addresses are not managed.
    type: list
    elements: str
  up:
    description:
      - Whether the link is administratively up.
    type: bool
    default: true
  forwarding:
    description:
      - Whether the kernel forwards IPv4 packets arriving on the tap (C(net.ipv4.conf.NAME.forwarding)).
        A guest's traffic needs it to be NAT'd out of an uplink (M(mpsocks.mptcp.nat)).
      - The setting lives and dies with the tap, so nothing needs restoring.
      - When omitted, an existing tap keeps its value and a new one gets the namespace's
        C(net.ipv4.conf.default.forwarding).
    type: bool
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
- name: Tap for uplink 0, usable by the libvirt-qemu user
  mpsocks.mptcp.tap:
    name: mptcp0
    owner: libvirt-qemu
    addresses:
      - 10.66.6.1/24
    forwarding: true

- name: Same tap inside a lab namespace
  mpsocks.mptcp.tap:
    name: mptcp0
    addresses: [10.66.6.1/24]
    netns: mpslab-host

- name: Remove it
  mpsocks.mptcp.tap:
    name: mptcp0
    state: absent
"""

RETURN = r"""
tap:
  description: The tap as the kernel holds it after the task (empty when absent).
  returned: always
  type: dict
  contains:
    name:
      description: Interface name.
      type: str
      sample: mptcp0
    owner:
      description: Owning uid, or null.
      type: int
      sample: 64055
    group:
      description: Owning gid, or null.
      type: int
      sample: null
    addresses:
      description: Addresses as C(ADDR/PREFIX), IPv6 link-local left out.
      type: list
      elements: str
      sample: [10.66.6.1/24]
    up:
      description: Whether the link is administratively up.
      type: bool
      sample: true
    forwarding:
      description: Whether IPv4 packets arriving on the tap are forwarded.
      type: bool
      sample: true
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.tap import Tap


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            owner=dict(type="str"),
            group=dict(type="str"),
            addresses=dict(type="list", elements="str"),
            up=dict(type="bool", default=True),
            forwarding=dict(type="bool"),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), Tap)


if __name__ == "__main__":
    main()
