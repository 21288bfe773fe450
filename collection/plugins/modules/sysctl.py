#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: sysctl
short_description: Set sysctls of network namespaces
version_added: 0.1.0
description:
  - Sets kernel settings under C(net.) (C(/proc/sys/net)), such as C(net.ipv4.ip_forward) or
    C(net.ipv4.conf.lab0.rp_filter), in the current network namespace or in named ones, a list of
    them in one call, each in its own namespace.
  - Only C(net.*) settings are accepted, because only those belong to a network namespace;
    anything else would change the whole machine.
  - Nothing is written to C(/etc/sysctl.d); a setting lives as long as its namespace (or the
    interface it belongs to).
  - A sysctl always exists, so there is no C(state). Every item is checked before anything changes;
    the sysctl must exist in its namespace and be writable, and a sysctl that holds integers only
    takes integers. A value the kernel still refuses (out of its range) fails that item; the items
    before it keep their new values. Each value is read back after the change; a difference is
    reported as a failure.
author:
  - mpsocks developers (@mpsocks)
options:
  config:
    description:
      - The sysctls, one dict each, set in order.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - The sysctl, dotted as in C(sysctl -a) (V(net.ipv4.ip_forward),
            V(net.ipv4.conf.lab0.rp_filter)).
          - An interface name holding dots is found as it is (V(net.ipv4.conf.eth0.100.rp_filter)); the
            slash form of sysctl(8) (V(net/ipv4/conf/eth0.100/rp_filter)) is accepted too.
          - A key that does not exist in the namespace is an error.
        type: str
        required: true
      value:
        description:
          - The value to set. Whitespace is compared normalised, so V(4096 131072 6291456) matches what
            C(/proc) prints with tabs for C(net.ipv4.tcp_rmem), and integers as numbers (V(01) is V(1)).
        type: str
        required: true
      netns:
        description:
          - Namespace of this sysctl; defaults to the module's O(netns).
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
  - module: mpsocks.mptcp.route
"""

EXAMPLES = r"""
- name: Routers forward IPv4; the host's uplinks have a loose reverse-path filter
  mpsocks.mptcp.sysctl:
    config:
      - {netns: lab-r1, name: net.ipv4.ip_forward, value: "1"}
      - {netns: lab-r2, name: net.ipv4.ip_forward, value: "1"}
      - {netns: lab-host, name: net.ipv4.conf.mpslab0.rp_filter, value: "2"}

- name: TCP receive buffer sizes (min, default, max) in one namespace
  mpsocks.mptcp.sysctl:
    netns: lab-net
    config:
      - name: net.ipv4.tcp_rmem
        value: 4096 131072 6291456
"""

RETURN = r"""
results:
  description: One entry per sysctl, in the order of O(config).
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: Which sysctl.
      type: str
      sample: sysctl net.ipv4.ip_forward
    changed:
      description: Whether this sysctl changed.
      type: bool
    sysctl:
      description: The sysctl after the task, in the form O(config) takes.
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
        netns:
          description: Its namespace (null for the module's own).
          type: str
          sample: lab-r1
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.sysctl_setting import SysctlSetting


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            config=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                value=dict(type="str", required=True),
                netns=dict(type="str"),
            )),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), SysctlSetting)


if __name__ == "__main__":
    main()
