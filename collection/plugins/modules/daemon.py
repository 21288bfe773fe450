#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: daemon
short_description: Keep programs running, with their files, under small supervisors or systemd
version_added: 0.1.0
description:
  - Starts programs detached from Ansible, each under a supervisor process that restarts it when it
    exits, for machines without an init system that would do so (the lab's servers and proxies), a
    list of them in one call, each in its own namespace.
  - With O(config[].supervisor=systemd) the program is a runtime systemd unit instead,
    C(/run/systemd/system/mpsocks-NAME.service), restarted by systemd when it exits, its output appended
    to the same log; the unit carries the record (argv, files) as a comment.
  - A daemon's O(config[].files) (its configuration) are written before it starts; when one of them
    differs from what the daemon was started with, it is written and the daemon restarted, as for a new
    argv. So one call writes a daemon's configuration and runs it.
  - The supervisor runs the program in a process group of its own, with stdin from C(/dev/null) and
    stdout and stderr appended to C(RUN_DIR/NAME.log). When the program exits it is started again after
    1 second; after 5 exits within 30 seconds the supervisor gives up, writes a line to the log and ends.
  - SIGTERM to the supervisor stops the program (SIGTERM to its process group, SIGKILL after 5 seconds)
    and then the supervisor.
  - The supervisor itself writes C(RUN_DIR/NAME.json) (what runs, argv and netns, with the supervisor's
    start time and command line, so a reused pid is never taken for it, and the program's process group
    with its start time) and C(RUN_DIR/NAME.pid) (its pid), before the module goes on, so a module
    killed right after starting it still leaves a record that finds it.
  - When a supervisor was killed (SIGKILL), removing or restarting the daemon kills what it left, every
    process of the recorded program group (a reused group number is recognised by its start time), and
    any process that still carries the daemon's C(MPSOCKS_DAEMON) environment variable.
  - Two runs never start or stop the same daemon (same O(config[].run_dir) and O(config[].name)) at
    once; each holds a lock on it from its first look to the read-back.
  - A running supervisor with the same argv and netns is left alone; a different argv or netns, or a
    supervisor in another namespace than the requested one, restarts it; a dead one is started again.
  - When the program exits during start-up, or does not listen on O(config[].ready_port) in time, the
    module fails with the last log line and leaves nothing of that daemon running.
author:
  - mpsocks developers (@mpsocks)
options:
  config:
    description:
      - The daemons, one dict each. Every item is validated before anything starts or stops, then the
        daemons are made to match in order, each in its own namespace.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Identifies the daemon within its O(config[].run_dir); letters, digits, C(_), C(.) and C(-).
        type: str
        required: true
      argv:
        description:
          - The program and its arguments. The program is a command found on C(PATH) or an absolute path.
          - Required when the item's state is V(started); ignored when V(absent).
          - The program gets the module's environment and C(/) as working directory.
        type: list
        elements: str
      run_dir:
        description:
          - Directory of the daemon's pid, state and log files; created with mode C(0755) when missing.
          - Defaults to the module's O(run_dir).
        type: path
      ready_port:
        description:
          - After starting, wait until the program LISTENs on this TCP port in its network namespace.
          - When omitted, the start counts once the program has stayed up for 1 second.
        type: int
      exclusive_port:
        description:
          - The daemon wants O(config[].ready_port) to itself. Before anything changes, the module fails,
            naming it, when another program (one without this daemon's C(MPSOCKS_DAEMON) mark) listens on
            that port in the namespace, on any address.
          - Leave it off for programs that share a port, each on an address of its own.
        type: bool
        default: false
      ready_timeout:
        description:
          - Seconds to wait for O(config[].ready_port) (default 10).
        type: float
      state:
        description:
          - V(started) starts the daemon unless it runs as requested already; V(absent) stops the
            supervisor and the program and removes the pid and state files (the log is kept).
          - Defaults to the module's O(state).
        type: str
        choices: [started, absent]
      netns:
        description:
          - Namespace the program runs in; defaults to the module's O(netns). Not with V(systemd).
        type: str
      supervisor:
        description:
          - What keeps the program running; defaults to the module's O(supervisor).
        type: str
        choices: [mpsocks, systemd]
      files:
        description:
          - Files the daemon owns, written (atomically, folders made) before it starts. They are removed
            with the daemon (V(absent)), the log is not.
        type: list
        elements: dict
        default: []
        suboptions:
          path:
            description:
              - Absolute path of the file.
            type: path
            required: true
          content:
            description:
              - The file's text; required unless O(config[].files[].state=absent). Not logged.
            type: str
          mode:
            description:
              - Octal permission bits.
            type: str
            default: "0644"
          state:
            description:
              - V(absent) removes the file (a password file when there are no users, say).
            type: str
            choices: [present, absent]
            default: present
  run_dir:
    description:
      - The O(config[].run_dir) of every item that gives none, and the directory V(overridden) looks in.
    type: path
    default: /run/mpsocks
  state:
    description:
      - The state of every item that does not give its own.
      - V(overridden) starts every item and stops every other daemon recorded in O(run_dir) (a
        C(NAME.json) the module wrote), removing its pid and state files.
    type: str
    choices: [started, absent, overridden]
    default: started
  supervisor:
    description:
      - The O(config[].supervisor) of every item that gives none. V(mpsocks) is the module's own
        supervisor process; V(systemd) a runtime unit, where systemd runs the machine.
    type: str
    choices: [mpsocks, systemd]
    default: mpsocks
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
  - The program runs in the namespace given by O(config[].netns) (or O(netns)), or in the one the module
    runs in.
  - The supervisor forks from the module process and needs none of the module's files afterwards.
"""

EXAMPLES = r"""
- name: An HTTP server in the lab's server namespace and a proxy in an ISP's
  mpsocks.mptcp.daemon:
    run_dir: /run/mpsocks/lab
    config:
      - name: web
        netns: mpslab-net
        argv: [python3, -m, http.server, --bind, 198.19.0.10, "80"]
        ready_port: 80
      - name: proxy
        netns: mpslab-isp0
        argv: [python3, /opt/proxy.py, --port, "3128"]
        ready_port: 3128

- name: Dante with its configuration, a systemd unit in a VM guest (restarted when the file changes)
  mpsocks.mptcp.daemon:
    supervisor: systemd
    config:
      - name: danted
        argv: [danted, -f, /run/mpsocks/danted.conf]
        ready_port: 1080
        files:
          - path: /run/mpsocks/danted.conf
            content: "{{ lookup('ansible.builtin.template', 'danted.conf.j2') }}"

- name: Exactly the web server; every other daemon recorded in /run/mpsocks/lab stops
  mpsocks.mptcp.daemon:
    run_dir: /run/mpsocks/lab
    state: overridden
    config:
      - name: web
        netns: mpslab-net
        argv: [python3, -m, http.server, --bind, 198.19.0.10, "80"]
        ready_port: 80

- name: Stop it (the log stays in /run/mpsocks/lab/web.log)
  mpsocks.mptcp.daemon:
    run_dir: /run/mpsocks/lab
    state: absent
    config:
      - name: web
"""

RETURN = r"""
results:
  description: One entry per daemon, in the order of O(config), then the daemons V(overridden) stopped.
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: Which daemon.
      type: str
      sample: daemon web
    changed:
      description: Whether this daemon was started, restarted or stopped.
      type: bool
    pid:
      description: Pid of the supervisor; null when absent, under systemd, or in check mode when it would be
        started.
      type: int
      sample: 4242
    program_pid:
      description: Pid of the program the supervisor (or systemd) runs now; null between restarts or when
        there is none.
      type: int
      sample: 4243
    log:
      description: Path of the log file.
      type: str
      sample: /run/mpsocks/web.log
    daemon:
      description: The daemon after the task (empty when absent), in the form O(config) takes; the diff
        also shows its log and whether its supervisor ran (C(running)).
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
        run_dir:
          description: The directory of its files.
          type: str
          sample: /run/mpsocks
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.daemon import DEFAULT_RUN_DIR, SUPERVISORS, Daemon
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            config=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                argv=dict(type="list", elements="str"),
                run_dir=dict(type="path"),
                ready_port=dict(type="int"),
                exclusive_port=dict(type="bool", default=False),
                ready_timeout=dict(type="float"),
                state=dict(type="str", choices=["started", "absent"]),
                netns=dict(type="str"),
                supervisor=dict(type="str", choices=list(SUPERVISORS)),
                files=dict(type="list", elements="dict", default=[], options=dict(
                    path=dict(type="path", required=True),
                    content=dict(type="str", no_log=True),
                    mode=dict(type="str", default="0644"),
                    state=dict(type="str", choices=["present", "absent"], default="present"),
                )),
            )),
            run_dir=dict(type="path", default=DEFAULT_RUN_DIR),
            state=dict(type="str", choices=["started", "absent", "overridden"], default="started"),
            netns=dict(type="str"),
            supervisor=dict(type="str", choices=list(SUPERVISORS), default="mpsocks"),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), Daemon)


if __name__ == "__main__":
    main()
