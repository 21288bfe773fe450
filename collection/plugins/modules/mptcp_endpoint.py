#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mptcp_endpoint
short_description: Manage MPTCP endpoints of the in-kernel path manager
version_added: 0.1.0
description:
  - Creates, changes or removes endpoints of the kernel's MPTCP path manager
    (C(ip mptcp endpoint add)), through the C(mptcp_pm) generic netlink family; a list of them,
    in as many network namespaces as the items name, in one call.
  - The kernel keys endpoints by address; each item manages the one endpoint of its address, whoever
    made it (the kernel keeps no mark with an endpoint). If the kernel holds several endpoints for
    that address (with different ports), the module fails and changes nothing.
  - A change of the backup or fullmesh flag alone is made in place; any other change replaces
    the endpoint (delete, then add), which closes the subflows that used it.
  - Every change is read back from the kernel; a difference is reported as a failure.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - pyroute2 >= 0.9.7 on the managed host
  - a kernel with CONFIG_MPTCP
options:
  config:
    description:
      - The endpoints, one dict each. Every item is validated before anything changes, then the
        endpoints are made to match in order, each in its own namespace.
    type: list
    elements: dict
    required: true
    suboptions:
      address:
        description:
          - The local IPv4 or IPv6 address of the endpoint, without a prefix length.
        type: str
        required: true
      state:
        description:
          - V(present) creates or updates the endpoint, V(absent) deletes it.
          - Defaults to the module's O(state).
        type: str
        choices: [present, absent]
      dev:
        description:
          - Interface the endpoint's subflows are bound to; it must exist.
          - When omitted, the endpoint has no device binding.
        type: str
      id:
        description:
          - Endpoint id, 1 to 255; no other address's endpoint may use it.
          - When omitted, an existing endpoint keeps its id and a new one gets the lowest free id
            (after the endpoints of earlier items).
        type: int
      port:
        description:
          - Port announced with the address, on which the kernel listens for joining subflows.
          - Only with the V(signal) flag, and only for an address the host holds (the kernel
            opens a listening socket there). When omitted, the endpoint has no port.
        type: int
      flags:
        description:
          - The endpoint's flags. V(subflow) opens an extra subflow from this address,
            V(signal) announces the address to the peer, V(backup) marks its subflows as backup,
            V(fullmesh) opens a subflow from this address to every address the peer announced.
          - V(signal) and V(fullmesh) cannot be combined; the kernel refuses it.
          - Flags not listed are cleared; when omitted, the endpoint has none.
        type: list
        elements: str
        choices: [subflow, signal, backup, fullmesh]
      netns:
        description:
          - Namespace of this endpoint; defaults to the module's O(netns).
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
seealso:
  - module: mpsocks.mptcp.mptcp_limits
"""

EXAMPLES = r"""
- name: Extra subflows from the second and third uplinks' addresses
  mpsocks.mptcp.mptcp_endpoint:
    config:
      - address: 192.168.42.23
        dev: usb0
        flags: [subflow]
      - address: 10.0.0.23
        dev: wwan0
        flags: [subflow, backup]

- name: Announce a server address on port 8443, inside a lab namespace
  mpsocks.mptcp.mptcp_endpoint:
    netns: mpslab-net
    config:
      - address: 10.199.1.1
        flags: [signal]
        port: 8443

- name: Remove them
  mpsocks.mptcp.mptcp_endpoint:
    state: absent
    config:
      - address: 192.168.42.23
      - address: 10.0.0.23
"""

RETURN = r"""
results:
  description: One entry per endpoint, in the order of O(config).
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: Which endpoint.
      type: str
      sample: mptcp endpoint 192.168.42.23
    changed:
      description: Whether this endpoint changed.
      type: bool
    mptcp_endpoint:
      description: The endpoint as the kernel holds it after the task (empty when absent), in the form
        O(config) takes.
      type: dict
      contains:
        address:
          description: The endpoint's address.
          type: str
          sample: 192.168.42.23
        id:
          description: The endpoint id.
          type: int
          sample: 1
        dev:
          description: Interface the endpoint is bound to, or null.
          type: str
          sample: usb0
        port:
          description: Announced port, or null.
          type: int
          sample: null
        flags:
          description:
            - Flag names, sorted. Besides the four settable ones the kernel may report V(implicit)
              (an endpoint it made itself); bits without a name appear as hex.
          type: list
          elements: str
          sample: [subflow]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.mptcp import Endpoint


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            config=dict(type="list", elements="dict", required=True, options=dict(
                address=dict(type="str", required=True),
                state=dict(type="str", choices=["present", "absent"]),
                dev=dict(type="str"),
                id=dict(type="int"),
                port=dict(type="int"),
                flags=dict(type="list", elements="str", choices=["subflow", "signal", "backup", "fullmesh"]),
                netns=dict(type="str"),
            )),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), Endpoint)


if __name__ == "__main__":
    main()
