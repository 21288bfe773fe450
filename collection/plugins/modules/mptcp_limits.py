#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mptcp_limits
short_description: Set the MPTCP path manager's limits and net.mptcp.enabled
version_added: 0.1.0
description:
  - Sets the per-connection limits of the kernel's in-kernel MPTCP path manager
    (C(ip mptcp limits set)) through the C(mptcp_pm) generic netlink family, and the
    C(net.mptcp.enabled) sysctl, of as many network namespaces as the items name, in one call.
  - The limits always exist, so there is no C(state); options left out are not managed.
  - Limits and C(net.mptcp.enabled) are per network namespace (see O(config[].netns)).
  - Every change is read back from the kernel; a difference is reported as a failure.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - pyroute2 >= 0.9.7 on the managed host
  - a kernel with CONFIG_MPTCP
options:
  config:
    description:
      - The limits, one dict per namespace. Every item is validated before anything changes, then
        the namespaces are made to match in order.
    type: list
    elements: dict
    required: true
    suboptions:
      subflows:
        description:
          - Most extra subflows one MPTCP connection may have, 0 to 8 (the kernel's maximum).
          - Both ends count, a subflow opens only if the client's and the server's limits allow it.
        type: int
      add_addr_accepted:
        description:
          - Most addresses announced by the peer (ADD_ADDR) that one connection accepts
            and opens subflows to, 0 to 8.
        type: int
      enabled:
        description:
          - Whether applications may open MPTCP sockets (C(net.mptcp.enabled)).
        type: bool
      netns:
        description:
          - Namespace whose limits these are; defaults to the module's O(netns).
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
  - module: mpsocks.mptcp.mptcp_endpoint
"""

EXAMPLES = r"""
- name: Allow two extra subflows per connection
  mpsocks.mptcp.mptcp_limits:
    config:
      - subflows: 2
        add_addr_accepted: 2

- name: The lab's server and host namespaces, MPTCP enabled in both
  mpsocks.mptcp.mptcp_limits:
    config:
      - netns: mpslab-net
        subflows: 8
        add_addr_accepted: 8
        enabled: true
      - netns: mpslab-host
        subflows: 1
        add_addr_accepted: 8
        enabled: true
"""

RETURN = r"""
results:
  description: One entry per item, in the order of O(config).
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: Whose limits.
      type: str
      sample: mptcp limits of netns mpslab-host
    changed:
      description: Whether these limits changed.
      type: bool
    mptcp_limits:
      description: The limits as the kernel holds them after the task, in the form O(config) takes.
      type: dict
      contains:
        subflows:
          description: Most extra subflows per connection.
          type: int
          sample: 2
        add_addr_accepted:
          description: Most accepted ADD_ADDR announcements per connection.
          type: int
          sample: 2
        enabled:
          description: The value of C(net.mptcp.enabled).
          type: bool
          sample: true
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.mptcp import Limits


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            config=dict(type="list", elements="dict", required=True, options=dict(
                subflows=dict(type="int"),
                add_addr_accepted=dict(type="int"),
                enabled=dict(type="bool"),
                netns=dict(type="str"),
            )),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), Limits)


if __name__ == "__main__":
    main()
