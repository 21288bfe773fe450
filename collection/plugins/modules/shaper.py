#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: shaper
short_description: Shape the egress of interfaces with an HTB root qdisc
version_added: 0.1.0
description:
  - Puts an HTB queueing discipline with handle C(1:) at the root of an interface's egress, a list of
    interfaces in one call, each in its own namespace. Its default class C(1:ffff) carries every packet
    at O(config[].rate_mbit) (ceil equal to the rate, so it never borrows).
  - Each entry of O(config[].classes) adds a class C(1:ID) (tc shows ID in hex) beside it with a rate of
    its own. A packet goes to class C(1:ID) when its skb priority is C(0x10000 + ID), which a sender sets
    with the socket option C(SO_PRIORITY); HTB looks the priority up as one of its class ids before any
    filter, so no tc filter is installed. Every other priority goes to the default class, except
    priority C(0x10000) (the qdisc's own handle), which HTB sends unshaped.
  - Every class has a burst (and cburst) of 10 ms at its rate (3028 bytes at least) and a quantum of
    1514 bytes. Its leaf queue is a C(tbf) at ten times the class rate with a burst just above one
    frame of the interface's MTU and a limit of 100 ms at the class rate (128 KiB to 32 MiB); it hardly
    ever holds traffic back itself but splits GSO/TSO super-packets into frames, which HTB would
    otherwise let out in 64 KiB line-rate bursts. One TCP flow then gets a steady 95 to 96 % of the rate
    as goodput (the rest is header overhead). The leaf follows the MTU, so rerun the task after
    changing it.
  - A root qdisc of another kind or handle is replaced. A changed rate changes only the classes and
    queues that differ (C(tc class change)); a root htb C(1:) with another default class or with
    nested classes is rebuilt from scratch. Filters are neither installed nor read.
  - V(absent) deletes the root qdisc only if it is an htb with handle C(1:), so the kernel's default
    qdisc returns; any other root qdisc is left alone and nothing changes.
  - Every item is checked before anything changes (its interface must exist when it is to be shaped);
    every change is read back from the kernel, and a difference is reported as a failure.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - pyroute2 >= 0.9.7 on the managed host
  - a kernel with the C(htb) and C(tbf) queueing disciplines
options:
  config:
    description:
      - The shaped interfaces, one dict each, made to match in order.
    type: list
    elements: dict
    required: true
    suboptions:
      dev:
        description:
          - Interface whose egress is shaped. It must exist when the item is V(present); when V(absent),
            a missing interface means there is nothing to remove.
        type: str
        required: true
      rate_mbit:
        description:
          - Rate of the default class in Mbit/s (10^6 bit/s), from 0.001 to 10000. Required when the item
            is V(present).
          - The kernel keeps rates in whole bytes per second; the returned rates are the kernel's.
        type: float
      classes:
        description:
          - Extra classes, each taking the packets whose skb priority is C(0x10000 + id).
          - Classes of the qdisc that are not listed are removed; when omitted, there are none.
        type: list
        elements: dict
        suboptions:
          id:
            description:
              - Minor number of the class C(1:id), 1 to 65534 (65535, C(0xffff), is the default class).
            type: int
            required: true
          rate_mbit:
            description:
              - Rate (and ceil) of the class in Mbit/s, from 0.001 to 10000.
            type: float
            required: true
      state:
        description:
          - V(present) installs or updates the shaper, V(absent) removes it.
          - Defaults to the module's O(state).
        type: str
        choices: [present, absent]
      netns:
        description:
          - Namespace of the interface; defaults to the module's O(netns).
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
"""

EXAMPLES = r"""
- name: Two ISP uplinks of 20 and 5 Mbit/s, shaped in both directions
  mpsocks.mptcp.shaper:
    config:
      - {netns: mpslab-isp0, dev: isp0, rate_mbit: 20}
      - {netns: mpslab-host, dev: mpslab0, rate_mbit: 20}
      - {netns: mpslab-isp1, dev: isp1, rate_mbit: 5}
      - {netns: mpslab-host, dev: mpslab1, rate_mbit: 5}

- name: 5 Mbit/s for everyone, 50 Mbit/s for sockets with SO_PRIORITY 0x10010
  mpsocks.mptcp.shaper:
    netns: mpslab-isp0
    config:
      - dev: isp0
        rate_mbit: 5
        classes:
          - id: 0x10
            rate_mbit: 50

- name: Back to the kernel's default qdisc
  mpsocks.mptcp.shaper:
    netns: mpslab-isp0
    state: absent
    config:
      - dev: isp0
"""

RETURN = r"""
results:
  description: One entry per interface, in the order of O(config). The diff of each shows the qdisc as
    the kernel holds it, with every class's C(classid), C(parent), C(ceil_mbit), C(burst_bytes),
    C(cburst_bytes), C(quantum), C(prio) and C(queue) (the leaf qdisc, with C(kind) and for a tbf its
    C(rate_mbit), C(burst_bytes) and C(limit_bytes)).
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: Which interface.
      type: str
      sample: shaper isp0
    changed:
      description: Whether its shaping changed.
      type: bool
    shaper:
      description: The shaper as the kernel holds it after the task (empty when absent), in the form
        O(config) takes.
      type: dict
      contains:
        dev:
          description: The shaped interface.
          type: str
          sample: isp0
        rate_mbit:
          description: Rate of the default class in Mbit/s.
          type: float
          sample: 20.0
        classes:
          description: The other classes, sorted by id, each with its C(id) and C(rate_mbit).
          type: list
          elements: dict
          sample: [{id: 16, rate_mbit: 50.0}]
        netns:
          description: The interface's namespace (null for the module's own).
          type: str
          sample: mpslab-isp0
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.shaper import Shaper


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            config=dict(type="list", elements="dict", required=True, options=dict(
                dev=dict(type="str", required=True),
                rate_mbit=dict(type="float"),
                classes=dict(type="list", elements="dict", options=dict(
                    id=dict(type="int", required=True),
                    rate_mbit=dict(type="float", required=True),
                )),
                state=dict(type="str", choices=["present", "absent"]),
                netns=dict(type="str"),
            )),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), Shaper)


if __name__ == "__main__":
    main()
