#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: nat
short_description: Masquerade a subnet out of one uplink in the nft table mpsocks owns
version_added: 0.1.0
description:
  - Manages one NAT entry, named by O(name). Traffic from O(source) leaving through O(out_interface) is
    masqueraded, forwarding between O(in_interface) and O(out_interface) is accepted, and the kernel is
    made to forward what arrives on O(out_interface) (the replies).
  - "The rules live in the nftables table C(inet mpsocks) (see O(table)), which the module creates
    with two chains when missing: C(postrouting) (type nat hook postrouting priority srcnat) holding
    C(ip saddr SOURCE oifname OUT masquerade), and C(forward) (type filter hook forward priority filter,
    policy accept) holding C([iifname IN] ip saddr SOURCE oifname OUT accept) and
    C(iifname OUT ip daddr SOURCE [oifname IN] ct state established,related accept)
    (C(ip6) instead of C(ip) for an IPv6 subnet)."
  - Every rule of the entry carries the comment C(mpsocks:NAME ...); that comment is how the module
    finds its own rules. Rules of other entries, rules without such a comment, other tables and the
    host's own rules are never changed or flushed.
  - Every change is one C(nft -j -f -) batch, applied by the kernel as a single transaction. An entry
    that exists with other values is replaced in that one transaction; an entry whose rules were edited
    by hand is rewritten (the diff's C(before) then has C(damaged) set to true).
  - V(absent) removes exactly the entry's rules, and the module's chains once they are empty. When
    nothing else is left in the table, the whole table is deleted, so after the last entry is removed
    the host has no C(inet mpsocks) table at all.
  - Forwarding is switched on per interface, never globally. IPv4 forwards what arrives on an
    interface whose C(net.ipv4.conf.IF.forwarding) is 1, so V(present) sets that to 1 for
    O(out_interface); C(net.ipv4.ip_forward) is not changed. The interface the traffic comes in on
    needs forwarding too; for a tap, M(mpsocks.mptcp.tap) sets it
    (O(mpsocks.mptcp.tap#module:forwarding)). For IPv6 the
    per-interface switch is C(net.ipv6.conf.IF.force_forwarding) (Linux 6.17 or later;
    C(net.ipv6.conf.IF.forwarding) alone does not make the kernel forward);
    C(net.ipv6.conf.all.forwarding) is not changed.
  - The value the uplink had before mpsocks touched it is recorded in the entry's comment, e.g.
    C(mpsocks:mptcp0 restore-ipv4 wlp1s0:0). V(absent) writes it back, unless another entry
    of the same table and IP version still needs forwarding on that interface (two taps masqueraded out
    of one uplink); then the last of them to go restores it. An entry added while another already
    needs an interface inherits that entry's record, so the original value survives any order of
    removal. An interface that no longer exists is skipped.
  - Every change is read back from the kernel; a difference is reported as a failure.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - nftables (the C(nft) command) on the managed host
  - pyroute2 >= 0.9.7 on the managed host
options:
  name:
    description:
      - Name of the NAT entry, e.g. the tap it serves (V(mptcp0)); 1 to 64 characters from
        C(A-Z a-z 0-9 _ . + -), as it goes into the rules' comments.
    type: str
    required: true
  source:
    description:
      - Subnet to masquerade, IPv4 or IPv6, e.g. V(10.66.6.0/24); host bits are cleared.
      - Required when O(state=present).
    type: str
  out_interface:
    description:
      - Uplink the traffic leaves through; it must exist. Required when O(state=present).
    type: str
  in_interface:
    description:
      - Interface the traffic comes in on (the tap); it need not exist yet.
      - When omitted, the rules match any input interface.
      - Forwarding on it is not changed here; a tap made by M(mpsocks.mptcp.tap) with
        O(mpsocks.mptcp.tap#module:forwarding=true) has it.
    type: str
  table:
    description:
      - Name of the nftables table the project owns; its family is always C(inet).
      - Entries in other tables are not considered when deciding whether an interface's forwarding can be
        restored.
    type: str
    default: mpsocks
  state:
    description:
      - V(present) creates or replaces the entry and enables forwarding; V(absent) removes it and restores
        forwarding as described above.
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
  - An C(accept) in this table cannot overrule a C(drop) in another table hooked to C(forward) (for
    example a firewall whose forward policy is drop); such a firewall must let the traffic through itself.
"""

EXAMPLES = r"""
- name: Guest 0 reaches the internet through the Wi-Fi uplink
  mpsocks.mptcp.nat:
    name: mptcp0
    source: 10.66.6.0/24
    in_interface: mptcp0
    out_interface: wlp1s0

- name: Same inside a lab namespace
  mpsocks.mptcp.nat:
    name: mptcp0
    source: 10.66.6.0/24
    in_interface: mptcp0
    out_interface: lab0
    netns: mpslab-host

- name: Remove it; forwarding on wlp1s0 goes back to what it was
  mpsocks.mptcp.nat:
    name: mptcp0
    state: absent
"""

RETURN = r"""
nat:
  description: The entry as the kernel holds it after the task (empty when absent).
  returned: always
  type: dict
  contains:
    name:
      description: Name of the entry.
      type: str
      sample: mptcp0
    table:
      description: Name of the C(inet) table holding it.
      type: str
      sample: mpsocks
    source:
      description: Masqueraded subnet.
      type: str
      sample: 10.66.6.0/24
    out_interface:
      description: Uplink the traffic leaves through.
      type: str
      sample: wlp1s0
    in_interface:
      description: Interface the traffic comes in on, or null for any.
      type: str
      sample: mptcp0
    forwarding:
      description:
        - Per-interface forwarding now, by interface (C(net.ipv4.conf.IF.forwarding), or
          C(net.ipv6.conf.IF.force_forwarding) for an IPv6 source); null for an interface that is gone.
      type: dict
      sample: {"wlp1s0": 1, }
    restore:
      description: Per-interface forwarding before mpsocks, written back by O(state=absent).
      type: dict
      sample: {"wlp1s0": 0}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.nat import Nat


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            source=dict(type="str"),
            out_interface=dict(type="str"),
            in_interface=dict(type="str"),
            table=dict(type="str", default="mpsocks"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            netns=dict(type="str"),
        ),
        required_if=[("state", "present", ["source", "out_interface"])],
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), Nat)


if __name__ == "__main__":
    main()
