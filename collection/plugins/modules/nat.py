#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: nat
short_description: Masquerade subnets out of uplinks in the nft table mpsocks owns
version_added: 0.1.0
description:
  - Manages NAT entries, each named by its C(name), a list of them in one call. Traffic from the entry's
    C(source) leaving through its C(out_interface) is masqueraded, forwarding between C(in_interface) and
    C(out_interface) is accepted, and the kernel is made to forward what arrives on C(out_interface)
    (the replies).
  - "The rules live in the nftables table C(inet mpsocks) (see O(table)), which the module creates
    with two chains when missing: C(postrouting) (type nat hook postrouting priority srcnat) holding
    C(ip saddr SOURCE oifname OUT masquerade), and C(forward) (type filter hook forward priority filter,
    policy accept) holding C([iifname IN] ip saddr SOURCE oifname OUT accept) and
    C(iifname OUT ip daddr SOURCE [oifname IN] ct state established,related accept)
    (C(ip6) instead of C(ip) for an IPv6 subnet)."
  - The table the module creates carries the comment C(managed by mpsocks) (C(nft list table inet mpsocks)
    shows it). A table of that name without it was not made by mpsocks; the module then fails and changes
    nothing, whatever the state.
  - Every rule of an entry carries the comment C(mpsocks:NAME ...); that comment is how the module
    finds its own rules. Rules of other entries, rules without such a comment, other tables and the
    host's own rules are never changed or flushed.
  - Every change of an entry is one nft transaction, which the kernel applies all or nothing. An entry
    that exists with other values is replaced in that one transaction; an entry whose rules were edited
    by hand is rewritten (the diff's C(before) then has C(damaged) set to true).
  - V(absent) removes exactly the entry's rules, by the handles they were listed with, and the module's
    chains once they are empty. When nothing else is left in the table, the table is deleted, so after the
    last entry is removed the host has no C(inet mpsocks) table at all. Chains and table are deleted with
    the kernel's non-recursive delete, so if another program added anything to them since they were listed,
    the kernel refuses and nothing changes.
  - Forwarding is switched on per interface, never globally. IPv4 forwards what arrives on an
    interface whose C(net.ipv4.conf.IF.forwarding) is 1, so V(present) sets that to 1 for
    C(out_interface); C(net.ipv4.ip_forward) is not changed. The interface the traffic comes in on
    needs forwarding too; for a tap, M(mpsocks.mptcp.tap) sets it
    (O(mpsocks.mptcp.tap#module:config[].forwarding)). For IPv6 the
    per-interface switch is C(net.ipv6.conf.IF.force_forwarding) (Linux 6.17 or later;
    C(net.ipv6.conf.IF.forwarding) alone does not make the kernel forward);
    C(net.ipv6.conf.all.forwarding) is not changed.
  - The value the uplink had before mpsocks touched it is recorded in the entry's comment with the
    uplink's name and interface index, e.g. C(mpsocks:mptcp0 restore-ipv4 wlp1s0/3:0). V(absent) writes it
    back to the interface with that index, under whatever name it has now, unless another entry
    of the same table and IP version still needs forwarding on that interface (two taps masqueraded out
    of one uplink); then the last of them to go restores it. An entry added while another already
    needs an interface inherits that entry's record, so the original value survives any order of
    removal. An interface that no longer exists is skipped.
  - Every change is read back from the kernel; a difference is reported as a failure.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - nftables (the C(nft) command) on the managed host
options:
  config:
    description:
      - The NAT entries, one dict each. Every item is validated before anything changes, then the
        entries are made to match in order, each in its own namespace.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Name of the NAT entry, e.g. the tap it serves (V(mptcp0)); 1 to 64 characters from
            C(A-Z a-z 0-9 _ . + -), as it goes into the rules' comments.
        type: str
        required: true
      state:
        description:
          - V(present) creates or replaces the entry and enables forwarding; V(absent) removes it and
            restores forwarding as described above.
          - Defaults to the module's O(state).
        type: str
        choices: [present, absent]
      source:
        description:
          - Subnet to masquerade, IPv4 or IPv6, e.g. V(10.66.6.0/24); host bits are cleared.
          - Required when the item's state is V(present).
        type: str
      out_interface:
        description:
          - Uplink the traffic leaves through; it must exist. Required when the item's state is V(present).
          - Like O(config[].in_interface), a plain interface name; C(*), C(") and C(\) are refused, as nft
            would not match them literally.
        type: str
      in_interface:
        description:
          - Interface the traffic comes in on (the tap); it need not exist yet.
          - When omitted, the rules match any input interface.
          - Forwarding on it is not changed here; a tap made by M(mpsocks.mptcp.tap) with
            O(mpsocks.mptcp.tap#module:config[].forwarding=true) has it.
        type: str
      table:
        description:
          - Name of the nftables table holding the entry; its family is always C(inet).
          - Defaults to the module's O(table).
        type: str
      netns:
        description:
          - Namespace of this entry; defaults to the module's O(netns).
        type: str
  table:
    description:
      - The table of every item that does not give its own, and the scope of O(state=overridden).
      - Entries in other tables are not considered when deciding whether an interface's forwarding can be
        restored.
    type: str
    default: mpsocks
  state:
    description:
      - The state of every item that does not give its own.
      - V(overridden) makes every item present and removes every other entry of the table O(table) in the
        namespace O(netns) (a table without the C(managed by mpsocks) comment holds no entries).
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
notes:
  - An C(accept) in this table cannot overrule a C(drop) in another table hooked to C(forward) (for
    example a firewall whose forward policy is drop); such a firewall must let the traffic through itself.
"""

EXAMPLES = r"""
- name: Guests 0 and 1 reach the internet through the Wi-Fi and the phone
  mpsocks.mptcp.nat:
    config:
      - name: mptcp0
        source: 10.66.6.0/24
        in_interface: mptcp0
        out_interface: wlp1s0
      - name: mptcp1
        source: 10.66.7.0/24
        in_interface: mptcp1
        out_interface: usb0

- name: Exactly this entry inside a lab namespace; every other entry of table inet mpsocks there goes
  mpsocks.mptcp.nat:
    netns: mpslab-host
    state: overridden
    config:
      - name: mptcp0
        source: 10.66.6.0/24
        in_interface: mptcp0
        out_interface: lab0

- name: Remove them; forwarding on wlp1s0 and usb0 goes back to what it was
  mpsocks.mptcp.nat:
    state: absent
    config:
      - name: mptcp0
      - name: mptcp1
"""

RETURN = r"""
results:
  description: One entry per NAT entry, in the order of O(config), then the entries V(overridden) removed.
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: Which entry.
      type: str
      sample: nat mptcp0 in table inet mpsocks
    changed:
      description: Whether this entry changed.
      type: bool
    nat:
      description: The entry as the kernel holds it after the task (empty when absent), in the form
        O(config) takes.
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
      sample: {"wlp1s0": 1}
    restore:
      description: By interface name, its index and its forwarding before mpsocks, which V(absent) writes
        back.
      type: dict
      sample: {"wlp1s0": {"index": 3, "forwarding": 0}}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.nat import Nat


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            config=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                state=dict(type="str", choices=["present", "absent"]),
                source=dict(type="str"),
                out_interface=dict(type="str"),
                in_interface=dict(type="str"),
                table=dict(type="str"),
                netns=dict(type="str"),
            )),
            table=dict(type="str", default="mpsocks"),
            state=dict(type="str", choices=["present", "absent", "overridden"], default="present"),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), Nat)


if __name__ == "__main__":
    main()
