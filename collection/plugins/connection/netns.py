# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: netns
short_description: Run tasks inside a network namespace of the controller
version_added: 0.1.0
description:
  - Treats a network namespace on the Ansible controller (one listed by C(ip netns list)) as a host.
  - Commands run through C(ip netns exec NAME), so modules see the namespace's interfaces, routes, nftables
    and C(/proc/sys/net); the file system is the controller's, so files are copied locally.
  - This is how mpsocks drives its lab, its tests and the namespace guest.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - C(ip) from iproute2 on the controller, run as root
options:
  remote_addr:
    description:
      - Name of the network namespace.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_netns_name
extends_documentation_fragment:
  - connection_pipelining
notes:
  - The namespace must exist before the first task; C(ip netns add NAME) makes one.
  - Privilege escalation prompts are not supported; run ansible as root.
"""

EXAMPLES = r"""
# inventory/lab.yml
# all:
#   hosts:
#     mpslab-host:
#       ansible_connection: mpsocks.mptcp.netns
#       ansible_python_interpreter: "{{ ansible_playbook_python }}"
"""

import os
import shlex
import shutil
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()

NETNS_RUN_DIR = "/run/netns"


class Connection(ConnectionBase):
    """Local execution with every command wrapped in ``ip netns exec``."""

    transport = "mpsocks.mptcp.netns"
    has_pipelining = True

    @property
    def netns(self):
        return self.get_option("remote_addr")

    def _connect(self):
        if not self._connected:
            name = self.netns
            if not name or "/" in name or not os.path.exists(os.path.join(NETNS_RUN_DIR, name)):
                raise AnsibleConnectionFailure("network namespace %r does not exist (ip netns list)" % name)
            if os.geteuid() != 0:
                raise AnsibleConnectionFailure("entering network namespace %r needs root" % name)
            display.vvv("ESTABLISH NETNS CONNECTION TO %s" % name, host=name)
            self._connected = True
        return self

    def exec_command(self, cmd, in_data=None, sudoable=True):
        """Run CMD with the controller's shell inside the namespace."""
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        wrapped = "ip netns exec %s %s" % (shlex.quote(self.netns), to_text(cmd))
        display.vvv("EXEC %s" % wrapped, host=self.netns)
        proc = subprocess.Popen(
            wrapped, shell=True, executable="/bin/sh",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        stdout, stderr = proc.communicate(in_data)
        return proc.returncode, stdout, stderr

    def put_file(self, in_path, out_path):
        """The namespace shares the controller's file system: a local copy."""
        super().put_file(in_path, out_path)
        display.vvv("PUT %s TO %s" % (in_path, out_path), host=self.netns)
        if not os.path.exists(to_bytes(in_path, errors="surrogate_or_strict")):
            raise AnsibleFileNotFound("file or module does not exist: %s" % in_path)
        try:
            shutil.copyfile(to_bytes(in_path, errors="surrogate_or_strict"),
                            to_bytes(out_path, errors="surrogate_or_strict"))
        except (OSError, shutil.Error) as exc:
            raise AnsibleError("failed to copy %s to %s: %s" % (in_path, out_path, exc)) from exc

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        display.vvv("FETCH %s TO %s" % (in_path, out_path), host=self.netns)
        self.put_file(in_path, out_path)

    def close(self):
        self._connected = False
