#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: sysctl
short_description: Set one sysctl of a network namespace
version_added: 0.1.0
description:
  - Sets one kernel setting under C(net.) (C(/proc/sys/net)), such as C(net.ipv4.ip_forward) or
    C(net.ipv4.conf.lab0.rp_filter), in the current network namespace or in O(netns).
  - Only C(net.*) settings are accepted, because only those belong to a network namespace;
    anything else would change the whole machine.
  - Nothing is written to C(/etc/sysctl.d); the setting lives as long as the namespace (or the
    interface it belongs to).
  - A sysctl always exists, so there is no C(state). The value is read back after the change;
    a difference is reported as a failure.
author:
  - mpsocks developers (@mpsocks)
options:
  name:
    description:
      - The sysctl, dotted as in C(sysctl -a) (V(net.ipv4.ip_forward), V(net.ipv4.conf.lab0.rp_filter)).
      - An interface name holding dots is found as it is (V(net.ipv4.conf.eth0.100.rp_filter)); the
        slash form of sysctl(8) (V(net/ipv4/conf/eth0.100/rp_filter)) is accepted too.
      - A key that does not exist in the namespace is an error.
    type: str
    required: true
  value:
    description:
      - The value to set. Whitespace is compared normalised, so V(4096 131072 6291456) matches what
        C(/proc) prints with tabs for C(net.ipv4.tcp_rmem).
    type: str
    required: true
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
  - module: mpsocks.mptcp.route
"""

EXAMPLES = r"""
- name: A router namespace forwards IPv4
  mpsocks.mptcp.sysctl:
    netns: lab-r1
    name: net.ipv4.ip_forward
    value: "1"

- name: Loose reverse-path filter on an uplink
  mpsocks.mptcp.sysctl:
    name: net.ipv4.conf.mpslab0.rp_filter
    value: "2"

- name: TCP receive buffer sizes (min, default, max)
  mpsocks.mptcp.sysctl:
    netns: lab-net
    name: net.ipv4.tcp_rmem
    value: 4096 131072 6291456
"""

RETURN = r"""
sysctl:
  description: The sysctl after the task.
  returned: always
  type: dict
  contains:
    name:
      description: The sysctl's name as given.
      type: str
      sample: net.ipv4.ip_forward
    value:
      description: Its value, whitespace normalised to single spaces.
      type: str
      sample: "1"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.sysctl_setting import SysctlSetting


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            value=dict(type="str", required=True),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), SysctlSetting)


if __name__ == "__main__":
    main()
