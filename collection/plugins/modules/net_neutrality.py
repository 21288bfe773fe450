#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: net_neutrality
short_description: Run bash mpsocks' net-neutrality study in a lab and write its captures and report
version_added: 0.1.0
description:
  - From the guest of a proxy stack on lab O(lab), fetches the lab's check server with MPTCP off and on
    and the guest's default TTL at 10 and at 64, then downloads from the lab's download server without
    and with MPTCP, capturing every uplink of the lab host for each case (120 bytes of each packet).
  - Analyses each capture (the handshake's SYN and SYN/ACK TTLs, the answering box's hop distance,
    MP_CAPABLE), then all of them together for the middlebox verdict, and writes into O(output) one
    C(CASE.pcapng) per case, C(report.json) and C(report.md) (bash mpsocks' table, its two findings checked,
    the verdict with its evidence).
  - The guest's default TTL is put back as it was, also when a case fails.
  - A folder that already holds a report is left alone unless O(force) is set, so that a second run of a
    playbook changes nothing.
  - C(mpsocks-run lab experiment net-neutrality) makes the lab (the optimizer on uplink 0) and the stack,
    runs this module through C(playbooks/net_neutrality.yml), and removes them.
author:
  - mpsocks developers (@mpsocks)
options:
  lab:
    description:
      - The name of the running lab whose servers and uplinks the study uses.
    type: str
    default: mpslab
  guest_netns:
    description:
      - The network namespace of the client, the guest of C(mpsocks-run up --lab LAB --backend netns).
      - Defaults to C(LAB-guest).
    type: str
  output:
    description:
      - The folder for the captures and the report; made if it does not exist (its parent must).
    type: path
    required: true
  download_bytes:
    description:
      - How many bytes each download fetches.
    type: int
    default: 4194304
  timeout:
    description:
      - Seconds each fetch may take; a request whose SYNs are never answered ends after it.
    type: int
    default: 8
  force:
    description:
      - Run the study even if O(output) already holds a report.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Checks every input (the lab, the guest, the uplinks, the folder, curl, mptcpize, dumpcap) and
      runs nothing.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
notes:
  - Needs root (it enters the lab's namespaces and captures), C(curl), C(mptcpize) and C(dumpcap).
seealso:
  - module: mpsocks.mptcp.trace_capture
  - module: mpsocks.mptcp.trace_info
"""

EXAMPLES = r"""
- name: The study on lab mpsnn, whose guest is up
  mpsocks.mptcp.net_neutrality:
    lab: mpsnn
    output: /var/tmp/net_neutrality
  register: study

- name: Its verdict
  ansible.builtin.debug:
    msg: "{{ study.report.middlebox.verdict }}"
"""

RETURN = r"""
files:
  description: The files the study writes into O(output) (or has written, when it was there already).
  returned: always
  type: list
  elements: str
report:
  description:
    - The report as in C(report.json) (empty in check mode) with C(schema_version), C(lab), C(guest),
      C(cases[]) (case, kind, mptcp, ttl, capture, answered, syn, synack, server_says or rate_mbit),
      C(findings[]) (claim, holds, evidence) and C(middlebox) (verdict, evidence) as C(trace_info) gives it.
  returned: always
  type: dict
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.net_neutrality import Study


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            lab=dict(type="str", default="mpslab"),
            guest_netns=dict(type="str"),
            output=dict(type="path", required=True),
            download_bytes=dict(type="int", default=4194304),
            timeout=dict(type="int", default=8),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )


def main():
    module = build_module()
    study = Study(module.params)
    try:
        if study.output and os.path.isdir(study.output) and study.done() and not module.params["force"]:
            with open(os.path.join(study.output, "report.json")) as handle:
                module.exit_json(changed=False, files=study.files(), report=json.load(handle))
        study.validate()
        report = {} if module.check_mode else study.run()
    except (MpsocksError, OSError, ValueError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=True, files=study.files(), report=report)


if __name__ == "__main__":
    main()
