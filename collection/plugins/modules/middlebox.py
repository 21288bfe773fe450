#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: middlebox
short_description: Put "net neutrality" middleboxes into ISP namespaces with nftables
version_added: 0.1.0
description:
  - Makes ISP namespaces of the lab interfere with MPTCP the way some real networks do, with nftables rules
    in one C(inet) table per namespace that the module owns (C(table)), a list of them in one call, one item
    per ISP. Only TCP connections opened from the item's C(interface), the ISP's interface facing the
    subscriber, are affected.
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
    the interface lands on the local proxy at C(proxy_port), which finds the real destination with
    C(SO_ORIGINAL_DST). The proxy itself is not started here."
  - V(none) and state V(absent) remove the table.
  - The table the module creates carries the comment C(managed by mpsocks). A table of that name without it
    was not made by mpsocks; the module then fails and neither changes nor removes it.
  - The table's whole content is declared. It is read back as JSON, compared with what C(kind) wants, and when
    different replaced in one nft transaction (what was listed is deleted by its handles, then the chains and
    rules of the kind are added), which the kernel applies all or nothing. Rules, chains or sets added to the
    table by hand are removed. Removing the table deletes what was listed, then the table with the kernel's
    non-recursive delete, so the kernel refuses if anything was added since the listing.
  - Every change is read back from the kernel; a difference is reported as a failure.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - nftables (the C(nft) command) on the managed host
  - a kernel with nftables TCP option matching and resetting (C(reset tcp option), Linux 5.18 or later)
options:
  config:
    description:
      - The middleboxes, one dict each (one per ISP namespace and table). Every item is validated before
        anything changes, then the tables are made to match in order, each in its own namespace.
    type: list
    elements: dict
    required: true
    suboptions:
      interface:
        description:
          - The ISP's interface facing the subscriber (the host). Only SYNs arriving on it are affected.
          - It need not exist yet; the rules match it by name (C(iifname)). C(*), C(") and C(\) are refused,
            as nft would not match them literally.
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
          - Local TCP port the V(optimizer) redirects plain TCP connections to (default 3129). Ignored for
            other kinds.
        type: int
      table:
        description:
          - Name of the C(inet) table the module owns (default V(mpsocks_lab)); nothing else should be put
            into it.
        type: str
      state:
        description:
          - V(present) makes the table hold exactly the rules of C(kind); V(absent) removes the table.
          - Defaults to the module's O(state).
        type: str
        choices: [present, absent]
      netns:
        description:
          - Namespace of the ISP; defaults to the module's O(netns).
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
notes:
  - The diff shows each table as C(nft list table) prints it, with counters left out and priorities as
    numbers.
  - The module does not turn on forwarding in the ISP namespace; that is the lab's business.
"""

EXAMPLES = r"""
- name: ISP 0 terminates plain TCP in a proxy on port 3129, ISP 1 strips MPTCP from its subscriber's SYNs
  mpsocks.mptcp.middlebox:
    config:
      - netns: mpslab-isp0
        interface: cust
        kind: optimizer
        proxy_port: 3129
      - netns: mpslab-isp1
        interface: cust
        kind: strip

- name: No middlebox any more
  mpsocks.mptcp.middlebox:
    config:
      - netns: mpslab-isp0
        interface: cust
        kind: none
      - netns: mpslab-isp1
        interface: cust
        kind: none
"""

RETURN = r"""
results:
  description: One entry per middlebox, in the order of O(config).
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: Which table, in which namespace.
      type: str
      sample: middlebox in table inet mpsocks_lab in netns mpslab-isp0
    changed:
      description: Whether this table changed.
      type: bool
    middlebox:
      description: The table as the kernel holds it after the task (empty when there is none), in the form
        O(config) takes.
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
          sample: cust
        proxy_port:
          description: The port plain TCP is redirected to (optimizer only, else null).
          type: int
          sample: null
    chains:
      description: By chain name, its type line and then its rules, as C(nft list) prints them (no counts);
        empty when there is no table.
      type: dict
      sample:
        forward:
          - "type filter hook forward priority -2147483648; policy accept;"
          - 'iifname "cust" tcp flags syn / syn,ack tcp option mptcp exists counter reset tcp option mptcp'
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.middlebox import Middlebox


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            config=dict(type="list", elements="dict", required=True, options=dict(
                interface=dict(type="str", required=True),
                kind=dict(type="str", choices=["none", "strip", "drop-mptcp", "optimizer"], required=True),
                proxy_port=dict(type="int"),
                table=dict(type="str"),
                state=dict(type="str", choices=["present", "absent"]),
                netns=dict(type="str"),
            )),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), Middlebox)


if __name__ == "__main__":
    main()
