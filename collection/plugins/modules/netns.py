#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: netns
short_description: Manage named network namespaces
version_added: 0.1.0
description:
  - Creates or deletes named network namespaces the way C(ip netns add) and C(ip netns del) do,
    as bind mounts on C(/run/netns/NAME), so C(ip netns list) and C(ip netns exec) see them,
    a list of them in one call.
  - A present namespace has its loopback interface C(lo) up, with the alias C(mpsocks) (or
    C(mpsocks OWNER)); that mark is how mpsocks knows a namespace is its own. A namespace with the
    same name but without that mark is neither adopted nor deleted; the module fails instead.
  - Deleting a namespace first stops every process whose network namespace it is (SIGTERM, then
    SIGKILL after 5 seconds), then removes the bind mount; its interfaces go with it, and so
    does the far end of any veth pair that has one end inside it.
  - A name bound to the namespace the module runs in, or to PID 1's, is never deleted.
  - This module manages namespaces themselves, so it has no C(netns) option and always acts on
    C(/run/netns) of the host it runs on. Run it on the host, not through a connection that
    enters a namespace.
  - Every change is read back; a difference is reported as a failure.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - pyroute2 >= 0.9.7 on the managed host
options:
  config:
    description:
      - The namespaces, one dict each. Every item is validated before anything changes.
    type: list
    elements: dict
    required: true
    suboptions:
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
          - Defaults to the module's O(state).
        type: str
        choices: [present, absent]
      owner:
        description:
          - Who in mpsocks the namespace belongs to, e.g. C(lab:mpslab); defaults to the module's
            O(owner).
        type: str
  owner:
    description:
      - Who in mpsocks the namespaces belong to, kept in the alias of their C(lo) as
        C(mpsocks OWNER); without it the alias is C(mpsocks).
      - 1 to 64 characters, each a letter, a digit or one of C(_ . - :).
    type: str
  state:
    description:
      - The state of every item that does not give its own.
      - V(overridden) makes every item present and deletes every other namespace marked with
        the same O(owner), so C(state=overridden) with an empty O(config) deletes all of them.
    type: str
    choices: [present, absent, overridden]
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
- name: The namespaces of a lab's ISPs
  mpsocks.mptcp.netns:
    owner: lab:mpslab
    config:
      - name: mpslab-isp0
      - name: mpslab-isp1

- name: Tear down every namespace of that lab, with whatever still runs inside
  mpsocks.mptcp.netns:
    owner: lab:mpslab
    state: overridden
    config: []
  register: gone

- name: Say what had to be stopped
  ansible.builtin.debug:
    msg: "stopped {{ gone.results | map(attribute='stopped_pids') | flatten }}"
"""

RETURN = r"""
results:
  description: One entry per namespace, in the order of O(config), then those V(overridden) deleted.
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: Which namespace.
      type: str
      sample: netns mpslab-isp0
    changed:
      description: Whether this namespace changed.
      type: bool
    netns:
      description: The namespace after the task (empty when absent), in the form O(config) takes.
      type: dict
      contains:
        name:
          description: Namespace name.
          type: str
          sample: mpslab-isp0
        owner:
          description: Its owner, or null.
          type: str
          sample: lab:mpslab
    stopped_pids:
      description:
        - Processes that were inside the namespace and were stopped before it was deleted.
        - In check mode, the processes that would be stopped.
      returned: when the namespace's state is absent
      type: list
      elements: int
      sample: [4242]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns_object import NetworkNamespace


def build_module():
    # No netns option: items are namespaces, not objects inside one.
    return AnsibleModule(
        argument_spec=dict(
            config=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                state=dict(type="str", choices=["present", "absent"]),
                owner=dict(type="str"),
            )),
            owner=dict(type="str"),
            state=dict(type="str", choices=["present", "absent", "overridden"], default="present"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), NetworkNamespace)


if __name__ == "__main__":
    main()
