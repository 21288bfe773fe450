#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: daemon
short_description: Keep a program running under a small supervisor, in a network namespace
version_added: 0.1.0
description:
  - Starts a program detached from Ansible under a supervisor process that restarts it when it exits,
    for machines without an init system that would do so (the lab's servers and proxies).
  - The supervisor runs the program in a process group of its own, with stdin from C(/dev/null) and
    stdout and stderr appended to C(RUN_DIR/NAME.log). When the program exits it is started again after
    1 second; after 5 exits within 30 seconds the supervisor gives up, writes a line to the log and ends.
  - SIGTERM to the supervisor stops the program (SIGTERM to its process group, SIGKILL after 5 seconds)
    and then the supervisor.
  - C(RUN_DIR/NAME.pid) holds the supervisor's pid and C(RUN_DIR/NAME.json) what it runs (argv, netns)
    with the supervisor's start time and command line, so a reused pid is never taken for it.
  - A running supervisor with the same argv and netns is left alone; a different argv or netns, or a
    supervisor in another namespace than the requested one, restarts it; a dead one is started again.
  - When the program exits during start-up, or does not listen on O(ready_port) in time, the module fails
    with the last log line and leaves nothing running.
author:
  - mpsocks developers (@mpsocks)
options:
  name:
    description:
      - Identifies the daemon within O(run_dir); letters, digits, C(_), C(.) and C(-).
    type: str
    required: true
  argv:
    description:
      - The program and its arguments. The program is a command found on C(PATH) or an absolute path.
      - Required when O(state=started); ignored when O(state=absent).
      - The program gets the module's environment and C(/) as working directory.
    type: list
    elements: str
  run_dir:
    description:
      - Directory of the pid, state and log files; created with mode C(0755) when missing.
    type: path
    default: /run/mpsocks
  ready_port:
    description:
      - After starting, wait until the program LISTENs on this TCP port in its network namespace.
      - When omitted, the start counts once the program has stayed up for 1 second.
    type: int
  ready_timeout:
    description:
      - Seconds to wait for O(ready_port).
    type: float
    default: 10
  state:
    description:
      - V(started) starts the daemon unless it runs as requested already; V(absent) stops the supervisor
        and the program and removes the pid and state files (the log is kept).
    type: str
    choices: [started, absent]
    default: started
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
notes:
  - The program runs in the namespace given by O(netns), or in the one the module runs in.
  - The supervisor forks from the module process and needs none of the module's files afterwards.
"""

EXAMPLES = r"""
- name: An HTTP server inside the lab's server namespace
  mpsocks.mptcp.daemon:
    name: web
    netns: mpslab-net
    argv: [python3, -m, http.server, --bind, 198.18.200.10, "80"]
    ready_port: 80

- name: Stop it (the log stays in /run/mpsocks/web.log)
  mpsocks.mptcp.daemon:
    name: web
    state: absent
"""

RETURN = r"""
pid:
  description: Pid of the supervisor; null when absent, or in check mode when it would be started.
  returned: always
  type: int
  sample: 4242
program_pid:
  description: Pid of the program the supervisor runs now; null between restarts or when there is none.
  returned: always
  type: int
  sample: 4243
argv:
  description: The program's argv (null when absent).
  returned: always
  type: list
  elements: str
  sample: [python3, -m, http.server, "80"]
netns:
  description: The namespace the daemon runs in, as requested (null for the module's own).
  returned: always
  type: str
  sample: mpslab-net
log:
  description: Path of the log file.
  returned: always
  type: str
  sample: /run/mpsocks/web.log
daemon:
  description: The daemon as found after the task (empty when absent).
  returned: always
  type: dict
  contains:
    name:
      description: The daemon's name.
      type: str
      sample: web
    argv:
      description: The program's argv.
      type: list
      elements: str
      sample: [python3, -m, http.server, "80"]
    netns:
      description: The namespace requested for it (null for the module's own).
      type: str
      sample: mpslab-net
    log:
      description: Path of the log file.
      type: str
      sample: /run/mpsocks/web.log
    running:
      description: Whether its supervisor runs, in the requested namespace.
      type: bool
      sample: true
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.daemon import Daemon
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            argv=dict(type="list", elements="str"),
            run_dir=dict(type="path", default="/run/mpsocks"),
            ready_port=dict(type="int"),
            ready_timeout=dict(type="float", default=10),
            state=dict(type="str", choices=["started", "absent"], default="started"),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), Daemon)


if __name__ == "__main__":
    main()
