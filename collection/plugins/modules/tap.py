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
  - Creates, changes or removes persistent tap devices (C(ip tuntap add mode tap)) with their
    owner, group, addresses and link state, through netlink and C(/dev/net/tun), a list of them
    in one call.
  - The tap is what a guest's network interface plugs into; uplink N of mpsocks uses tap C(mptcpN).
  - A tap the module makes carries the alias C(mpsocks) (C(ip link show) prints it), which is how
    mpsocks tells its own taps from a user's.
  - Every change is read back from the kernel; a difference is reported as a failure.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - pyroute2 >= 0.9.7 on the managed host
options:
  config:
    description:
      - The taps, one dict each. Every item is validated before anything changes, then the taps
        are made to match in order, each in its own namespace.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Name of the tap device, at most 15 characters.
          - If an interface of another kind, or a tap mpsocks did not make (one without the
            C(mpsocks) alias), already has this name, the module fails and changes nothing.
        type: str
        required: true
      state:
        description:
          - V(present) creates or updates the tap, V(absent) deletes it.
          - Defaults to the module's O(state).
        type: str
        choices: [present, absent]
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
          - Whether the link is administratively up (default true).
        type: bool
      forwarding:
        description:
          - Whether the kernel forwards IPv4 packets arriving on the tap (C(net.ipv4.conf.NAME.forwarding)).
            A guest's traffic needs it to be NAT'd out of an uplink (M(mpsocks.mptcp.nat)).
          - The setting lives and dies with the tap, so nothing needs restoring.
          - When omitted, an existing tap keeps its value and a new one gets the namespace's
            C(net.ipv4.conf.default.forwarding).
        type: bool
      netns:
        description:
          - Namespace of this tap; defaults to the module's O(netns).
        type: str
  state:
    description:
      - The state of every item that does not give its own.
      - V(overridden) makes every item present and deletes every other tap mpsocks made in the
        namespaces of the module's O(netns) (taps with the C(mpsocks) alias).
    type: str
    choices: [present, absent, overridden]
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
- name: Taps for two uplinks, usable by the libvirt-qemu user
  mpsocks.mptcp.tap:
    config:
      - name: mptcp0
        owner: libvirt-qemu
        addresses: [10.66.6.1/24]
        forwarding: true
      - name: mptcp1
        owner: libvirt-qemu
        addresses: [10.66.7.1/24]
        forwarding: true

- name: One tap inside a lab namespace
  mpsocks.mptcp.tap:
    netns: mpslab-host
    config:
      - name: mptcp0
        addresses: [10.66.6.1/24]

- name: Exactly this tap; every other tap mpsocks made here goes
  mpsocks.mptcp.tap:
    state: overridden
    config:
      - name: mptcp0

- name: Remove it
  mpsocks.mptcp.tap:
    state: absent
    config:
      - name: mptcp0
"""

RETURN = r"""
results:
  description: One entry per tap, in the order of O(config), then the taps V(overridden) removed.
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: Which tap.
      type: str
      sample: tap mptcp0
    changed:
      description: Whether this tap changed.
      type: bool
    tap:
      description: The tap as the kernel holds it after the task (empty when absent), in the form
        O(config) takes.
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
            config=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                state=dict(type="str", choices=["present", "absent"]),
                owner=dict(type="str"),
                group=dict(type="str"),
                addresses=dict(type="list", elements="str"),
                up=dict(type="bool"),
                forwarding=dict(type="bool"),
                netns=dict(type="str"),
            )),
            state=dict(type="str", choices=["present", "absent", "overridden"], default="present"),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), Tap)


if __name__ == "__main__":
    main()
