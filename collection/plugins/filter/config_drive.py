# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: config_drive
short_description: The content of a VM guest's config drive, the module calls it makes itself at boot
version_added: 0.1.0
description:
  - "Turns a list of steps, module calls of this collection (C({module, args})) or files (C({file: {path,
    content, mode}})), into the text of a config drive for role C(mpsocks.mptcp.guest_vm): the steps and the
    code that runs them (the modules, the module_utils they import, Ansible's C(module_utils) they need),
    one JSON document padded to whole 512-byte sectors."
  - An image made by M(mpsocks.mptcp.guest_image) runs the steps at boot, before sshd, in order, with the
    same modules Ansible would run; a failed step is left for Ansible to report.
  - Fails with a one-line message naming the bad step.
author:
  - mpsocks developers (@mpsocks)
options:
  _input:
    description: The steps, in order.
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: The guest's config drive brings its interface up at boot
  ansible.builtin.copy:
    content: "{{ [{'module': 'interface', 'args': {'config': [{'name': 'eth1', 'up': true}]}}]
      | mpsocks.mptcp.config_drive }}"
    dest: /var/lib/mpsocks/guests/mpsocks-guest/config-drive.json
    mode: "0600"
"""

RETURN = r"""
_value:
  description: The config drive's text.
  type: str
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.config_drive import drive_text
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError


def _plain(value):
    """VALUE as plain JSON types (Ansible hands filters its own str, list and dict types)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def drive_filter(steps):
    try:
        return drive_text(_plain(steps))
    except MpsocksError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {"config_drive": drive_filter}
