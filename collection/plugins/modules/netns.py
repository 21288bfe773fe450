#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: netns
short_description: Manage a named network namespace
version_added: 0.1.0
description:
  - Creates or deletes one named network namespace the way C(ip netns add) and C(ip netns del) do,
    as a bind mount on C(/run/netns/NAME), so C(ip netns list) and C(ip netns exec) see it.
  - A present namespace has its loopback interface C(lo) up.
  - Deleting a namespace first stops every process whose network namespace it is (SIGTERM, then
    SIGKILL after 5 seconds), then removes the bind mount; its interfaces go with it, and so
    does the far end of any veth pair that has one end inside it.
  - This module manages namespaces themselves, so it has no C(netns) option and always acts on
    C(/run/netns) of the host it runs on. Run it on the host, not through a connection that
    enters a namespace.
  - Every change is read back; a difference is reported as a failure.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - pyroute2 >= 0.9.7 on the managed host
options:
  name:
    description:
      - Name of the namespace, as in C(ip netns list).
      - 1 to 64 characters out of C(A-Z a-z 0-9 _ . -).
    type: str
    required: true
  state:
    description:
      - V(present) creates the namespace (and brings its C(lo) up), V(absent) stops the
        processes inside it and deletes it.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: In check mode, state=absent reports the pids it would stop without stopping them.
  diff_mode:
    support: full
  platform:
    support: full
    platforms: linux
seealso:
  - module: mpsocks.mptcp.veth
"""

EXAMPLES = r"""
- name: A namespace for the first ISP of the lab
  mpsocks.mptcp.netns:
    name: mpslab-isp0

- name: Tear it down, with whatever still runs inside it
  mpsocks.mptcp.netns:
    name: mpslab-isp0
    state: absent
  register: gone

- name: Say what had to be stopped
  ansible.builtin.debug:
    msg: "stopped {{ gone.stopped_pids }}"
"""

RETURN = r"""
netns:
  description: The namespace after the task (empty when absent).
  returned: always
  type: dict
  contains:
    name:
      description: Namespace name.
      type: str
      sample: mpslab-isp0
    lo_up:
      description: Whether the loopback interface is administratively up.
      type: bool
      sample: true
stopped_pids:
  description:
    - Processes that were inside the namespace and were stopped before it was deleted.
    - In check mode, the processes that would be stopped.
  returned: when state=absent
  type: list
  elements: int
  sample: [4242]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns_object import NetworkNamespace


def build_module():
    # No netns option: run_module() only enters a namespace when params has one.
    return AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), NetworkNamespace)


if __name__ == "__main__":
    main()
