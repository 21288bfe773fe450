#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: trace_capture
short_description: Capture packets on every uplink at once into one pcapng file
version_added: 0.1.0
description:
  - Runs C(dumpcap) (Wireshark's capture engine) on all O(interfaces) at once for O(seconds), in the
    network namespace O(netns) if given, and writes one pcapng file in time order, with an interface
    block per interface that names it, so that the file still says which uplink carried each packet.
  - The capture is written to C(OUTPUT.part) and renamed to O(output) once dumpcap has closed it, so a
    file named O(output) is always whole.
  - Every input is checked (interfaces exist, the folder of O(output) is writable) before the capture
    starts; a bad one fails the task with a one-line message naming it.
  - C(mpsocks-run capture) is the same from the command line, on the uplinks of what C(mpsocks-run up)
    made, until Ctrl-C or O(seconds).
author:
  - mpsocks developers (@mpsocks)
options:
  interfaces:
    description:
      - The interfaces to capture on, for example the uplinks, and the host's links to the guest
        (C(mptcp0), C(mptcp1) ...) to see the traffic before NAT.
    type: list
    elements: str
    required: true
  netns:
    description:
      - The network namespace the interfaces are in (by its C(ip netns) name); the module's own when
        not given.
    type: str
  seconds:
    description:
      - How long to capture, in seconds.
    type: int
    required: true
  snaplen:
    description:
      - Bytes kept of each packet (bash mpsocks captured with 120; at least 96, so that TCP options are kept).
    type: int
    default: 262144
  output:
    description:
      - The pcapng file to write. Its folder must exist. An existing file is replaced.
    type: path
    required: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Checks every input and captures nothing.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
notes:
  - Needs C(dumpcap) (Debian package C(wireshark-common), which C(tshark) brings) and the right to capture
    (root, or the C(wireshark) group).
  - Every run makes a new capture, so the task always reports a change.
seealso:
  - module: mpsocks.mptcp.trace_info
"""

EXAMPLES = r"""
- name: Capture both uplinks for 20 s while something downloads
  mpsocks.mptcp.trace_capture:
    interfaces: [wlp1s0, usb0]
    seconds: 20
    snaplen: 120
    output: /var/tmp/uplinks.pcapng
  register: capture

- name: Its MPTCP connections and subflows
  mpsocks.mptcp.trace_info:
    paths: ["{{ capture.path }}"]
"""

RETURN = r"""
path:
  description: The capture file (in check mode, the one that would be written).
  returned: always
  type: str
  sample: /var/tmp/uplinks.pcapng
packets:
  description: Packets captured on all interfaces (0 in check mode).
  returned: always
  type: int
interfaces:
  description: Per interface, in the order of O(interfaces), its C(name), the C(packets) captured on it
    and the C(dropped) ones dumpcap could not keep up with.
  returned: always
  type: list
  elements: dict
seconds:
  description: How long the capture ran.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_capture import TraceCapture


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            interfaces=dict(type="list", elements="str", required=True),
            netns=dict(type="str"),
            seconds=dict(type="int", required=True),
            snaplen=dict(type="int", default=262144),
            output=dict(type="path", required=True),
        ),
        supports_check_mode=True,
    )


def main():
    module = build_module()
    capture = TraceCapture(module.params)
    try:
        if module.check_mode:
            capture.validate()
            idle = [{"name": name, "packets": 0, "dropped": 0} for name in capture.interfaces]
            result = {"path": capture.output, "packets": 0, "seconds": 0.0, "interfaces": idle}
        else:
            result = capture.run()
    except MpsocksError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
