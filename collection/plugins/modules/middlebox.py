#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: middlebox
short_description: Put a "net neutrality" middlebox into an ISP namespace with nftables
version_added: 0.1.0
description:
  - Makes an ISP namespace of the lab interfere with MPTCP the way some real networks do, with nftables rules
    in one C(inet) table that the module owns (O(table)). Only TCP connections opened from
    O(interface), the ISP's interface facing the subscriber, are affected.
  - "V(strip): a chain C(forward) (type filter hook forward priority -2147483648, the lowest, so it runs
    before any other chain on that hook) holds C(iifname IF tcp flags syn / syn,ack tcp option mptcp exists
    counter reset tcp option mptcp). The MPTCP option of forwarded SYNs is overwritten with NOPs, so the
    server answers without MPTCP and the connection falls back to plain TCP."
  - "V(drop-mptcp): the same chain holds C(iifname IF tcp flags syn / syn,ack tcp option mptcp exists counter
    drop). The client's stack retries without MPTCP after C(net.mptcp.syn_retrans_before_tcp_fallback)
    retransmissions (Linux 6.12 and later; about 3 s with the defaults). Linux then also stops opening MPTCP
    connections from that namespace for C(net.mptcp.blackhole_timeout) seconds."
  - "V(optimizer): a chain C(prerouting) (type nat hook prerouting priority dstnat) holds
    C(iifname IF tcp option mptcp exists counter accept) and C(iifname IF meta l4proto tcp counter redirect
    to :PORT). MPTCP connections reach the real server untouched; every other new TCP connection from
    O(interface) lands on the local proxy at O(proxy_port), which finds the real destination with
    C(SO_ORIGINAL_DST). The proxy itself is not started here."
  - V(none) and O(state=absent) remove the table.
  - The table's whole content is declared. It is read back as JSON, compared with what O(kind) wants, and when
    different replaced in one C(nft -j -f -) batch (delete the table, add it again with its chains and rules),
    which the kernel applies as a single transaction. Rules or chains added to the table by hand are removed.
  - Every change is read back from the kernel; a difference is reported as a failure.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - nftables (the C(nft) command) on the managed host
  - a kernel with nftables TCP option matching and resetting (C(reset tcp option), Linux 5.18 or later)
options:
  interface:
    description:
      - The ISP's interface facing the subscriber (the host). Only SYNs arriving on it are affected.
      - It need not exist yet; the rules match it by name (C(iifname)). C(*), C(") and C(\) are refused, as
        nft would not match them literally.
    type: str
    required: true
  kind:
    description:
      - Which middlebox, see above. V(none) means no middlebox (no table).
    type: str
    choices: [none, strip, drop-mptcp, optimizer]
    required: true
  proxy_port:
    description:
      - Local TCP port the V(optimizer) redirects plain TCP connections to. Ignored for other kinds.
    type: int
    default: 3129
  table:
    description:
      - Name of the C(inet) table the module owns; nothing else should be put into it.
    type: str
    default: mpsocks_lab
  state:
    description:
      - V(present) makes the table hold exactly the rules of O(kind); V(absent) removes the table.
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
notes:
  - The diff shows the table as C(nft list table) prints it, with counters left out and priorities as numbers.
  - The module does not turn on forwarding in the ISP namespace; that is the lab's business.
"""

EXAMPLES = r"""
- name: ISP 1 strips MPTCP from its subscriber's SYNs
  mpsocks.mptcp.middlebox:
    netns: lab-isp1
    interface: sub0
    kind: strip

- name: ISP 0 terminates plain TCP in a proxy on port 3129
  mpsocks.mptcp.middlebox:
    netns: lab-isp0
    interface: sub0
    kind: optimizer
    proxy_port: 3129

- name: No middlebox any more
  mpsocks.mptcp.middlebox:
    netns: lab-isp1
    interface: sub0
    kind: none
"""

RETURN = r"""
middlebox:
  description: The table as the kernel holds it after the task (empty when there is none).
  returned: always
  type: dict
  contains:
    table:
      description: Name of the C(inet) table.
      type: str
      sample: mpsocks_lab
    kind:
      description: The middlebox the table holds, or null when its content is not what any kind writes.
      type: str
      sample: strip
    interface:
      description: The subscriber-facing interface the rules match.
      type: str
      sample: sub0
    proxy_port:
      description: The port plain TCP is redirected to (optimizer only, else null).
      type: int
      sample: null
    chains:
      description: By chain name, its type line and then its rules, as C(nft list) prints them (no counts).
      type: dict
      sample:
        forward:
          - "type filter hook forward priority -2147483648; policy accept;"
          - 'iifname "sub0" tcp flags syn / syn,ack tcp option mptcp exists counter reset tcp option mptcp'
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.middlebox import Middlebox


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            interface=dict(type="str", required=True),
            kind=dict(type="str", choices=["none", "strip", "drop-mptcp", "optimizer"], required=True),
            proxy_port=dict(type="int", default=3129),
            table=dict(type="str", default="mpsocks_lab"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), Middlebox)


if __name__ == "__main__":
    main()
