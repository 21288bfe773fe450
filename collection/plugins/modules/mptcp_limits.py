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
    C(net.mptcp.enabled) sysctl of the network namespace.
  - The limits always exist, so there is no C(state); options left out are not managed.
  - Limits and C(net.mptcp.enabled) are per network namespace (see O(netns)).
  - Every change is read back from the kernel; a difference is reported as a failure.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - pyroute2 >= 0.9.7 on the managed host
  - a kernel with CONFIG_MPTCP
options:
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
    subflows: 2
    add_addr_accepted: 2

- name: Same in a lab namespace, and make sure MPTCP is enabled there
  mpsocks.mptcp.mptcp_limits:
    subflows: 2
    enabled: true
    netns: mpslab-host
"""

RETURN = r"""
mptcp_limits:
  description: The limits as the kernel holds them after the task.
  returned: always
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
            subflows=dict(type="int"),
            add_addr_accepted=dict(type="int"),
            enabled=dict(type="bool"),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), Limits)


if __name__ == "__main__":
    main()
