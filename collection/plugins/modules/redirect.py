#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: redirect
short_description: Send TCP from the host's side to a transparent proxy, with nftables
version_added: 0.1.0
description:
  - The socksifier's redirect in a guest, a list of them in one call, each in one C(inet) nft table the
    module owns (O(config[].table)). TCP connections arriving on one of O(config[].interfaces) from one of
    O(config[].sources), addressed neither to the guest itself nor to an O(config[].exclude)d subnet, are
    sent to the transparent proxy (redsocks) at O(config[].to_address):O(config[].to_port), which finds
    their real destination with C(SO_ORIGINAL_DST).
  - "The table holds exactly: a chain C(prerouting) (type nat hook prerouting priority dstnat) with
    C(iifname IF meta l4proto tcp jump socksify) per interface; a chain C(socksify) with
    C(fib daddr type local return), C(ip daddr SUBNET return) per excluded subnet (C(ip6 daddr) for IPv6)
    and C(ip saddr SOURCE meta l4proto tcp counter dnat ip to ADDRESS:PORT) per source; a chain C(input)
    (type filter hook input priority filter) with C(ip daddr ADDRESS tcp dport PORT ct status dnat accept)
    and C(ip daddr ADDRESS tcp dport PORT counter drop)."
  - The rewrite is a C(dnat) to the proxy's address, not nft's C(redirect), which would take the address of
    the interface the packet came in on, where the proxy may not listen. The C(input) chain lets only
    redirected connections reach the proxy's port; one made to it directly would have the proxy connect to
    itself.
  - The table the module creates carries the comment C(managed by mpsocks). A table of that name without it
    was not made by mpsocks; the module then fails and neither changes nor removes it.
  - The table's whole content is declared. It is read back as JSON, compared with what the options want,
    and when different replaced in one nft transaction (what was listed is deleted by its handles, then the
    chains and rules are added), which the kernel applies all or nothing. Removing the table deletes what
    was listed, then the chains and the table with the kernel's non-recursive delete, so the kernel refuses
    if anything was added since the listing.
  - Every change is read back from the kernel; a difference is reported as a failure.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - nftables (the C(nft) command) on the managed host
  - a kernel with nftables NAT and C(fib) expressions
options:
  config:
    description:
      - The redirects, one dict each (one per namespace and table). Every item is validated before anything
        changes, then the tables are made to match in order, each in its own namespace.
    type: list
    elements: dict
    required: true
    suboptions:
      interfaces:
        description:
          - The guest's interfaces facing the host; only connections arriving on them are redirected.
          - They need not exist yet; the rules match them by name (C(iifname)). C(*), C(") and C(\) are
            refused, as nft would not match them literally.
          - Required when the item's state is V(present).
        type: list
        elements: str
      sources:
        description:
          - The IPv4 subnets whose connections are redirected (the host's side of each guest link).
          - Required when the item's state is V(present).
        type: list
        elements: str
      exclude:
        description:
          - Destination subnets left alone (IPv4 or IPv6), for example private ranges.
        type: list
        elements: str
      to_address:
        description:
          - The IPv4 address the proxy listens on. Required when the item's state is V(present).
        type: str
      to_port:
        description:
          - The TCP port the proxy listens on. Required when the item's state is V(present).
        type: int
      table:
        description:
          - Name of the C(inet) table the module owns (default V(mpsocks_socksifier)); nothing else should be
            put into it.
        type: str
      state:
        description:
          - V(present) makes the table hold exactly the redirect; V(absent) removes the table.
          - Defaults to the module's O(state).
        type: str
        choices: [present, absent]
      netns:
        description:
          - Namespace of the guest; defaults to the module's O(netns).
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
  - The diff shows the table as C(nft list table) prints it, without counters.
  - Excluded and source subnets are written in the order given; a subnet listed twice is an error.
"""

EXAMPLES = r"""
- name: Redsocks on 10.66.6.2:12345 takes every TCP connection the host routes via the guest
  mpsocks.mptcp.redirect:
    config:
      - interfaces: [eth0, eth1]
        sources: [10.66.6.0/24, 10.66.7.0/24]
        exclude: [0.0.0.0/8, 10.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16,
                  224.0.0.0/4, 240.0.0.0/4]
        to_address: 10.66.6.2
        to_port: 12345

- name: No redirect any more
  mpsocks.mptcp.redirect:
    state: absent
    config:
      - table: mpsocks_socksifier
"""

RETURN = r"""
results:
  description: One entry per redirect, in the order of O(config).
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: Which table, in which namespace.
      type: str
      sample: redirect in table inet mpsocks_socksifier
    changed:
      description: Whether this table changed.
      type: bool
    redirect:
      description: The table as the kernel holds it after the task (empty when there is none), in the form
        O(config) takes.
      type: dict
      contains:
        table:
          description: Name of the C(inet) table.
          type: str
          sample: mpsocks_socksifier
        interfaces:
          description: The interfaces whose connections are redirected.
          type: list
          elements: str
          sample: [eth0, eth1]
        sources:
          description: The source subnets whose connections are redirected.
          type: list
          elements: str
          sample: [10.66.6.0/24, 10.66.7.0/24]
        exclude:
          description: The destination subnets left alone.
          type: list
          elements: str
          sample: [10.0.0.0/8]
        to_address:
          description: The proxy's address.
          type: str
          sample: 10.66.6.2
        to_port:
          description: The proxy's port.
          type: int
          sample: 12345
    rules:
      description: Every rule as its chain, a colon and the rule in nft's syntax, in order; empty when
        there is no table.
      type: list
      elements: str
      sample:
        - 'prerouting: iifname "eth0" meta l4proto tcp jump socksify'
        - "socksify: fib daddr type local return"
        - "socksify: ip daddr 10.0.0.0/8 return"
        - "socksify: ip saddr 10.66.6.0/24 meta l4proto tcp counter dnat ip to 10.66.6.2:12345"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.redirect import Redirect


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            config=dict(type="list", elements="dict", required=True, options=dict(
                interfaces=dict(type="list", elements="str"),
                sources=dict(type="list", elements="str"),
                exclude=dict(type="list", elements="str"),
                to_address=dict(type="str"),
                to_port=dict(type="int"),
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
    run_module(build_module(), Redirect)


if __name__ == "__main__":
    main()
