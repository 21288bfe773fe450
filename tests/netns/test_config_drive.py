"""A config drive's steps, made by the guest itself, leave the guest roles nothing to do.

The guest_network role's calls, taken on the controller (tasks/boot_calls.yml) and packed with filter
mpsocks.mptcp.config_drive, run in a guest namespace by a Python that sees only the drive's code (and
pyroute2, which the VM image has), as a VM runs them at boot. The role, run over the netns connection
afterwards, then reports changed=0, and MPTCP has its subflow per uplink.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pyroute2
from mpsocks_testlib import ansible_playbook
from test_guest_network_role import guest_play, host_up, mptcp_connection, world  # noqa: F401 (a fixture)

DRIVE_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: The guest network's calls
      ansible.builtin.include_role:
        name: mpsocks.mptcp.guest_network
        tasks_from: boot_calls
    - name: The config drive
      ansible.builtin.copy:
        content: "{{ mpsocks_guest_boot_calls | mpsocks.mptcp.config_drive }}"
        dest: "{{ config_drive }}"
        mode: "0600"
"""

# What the image's boot script does with the disk's text (the drive's own boot code unpacks and runs it), in
# a Python that imports nothing from site-packages but pyroute2, which the image has.
RUN_DRIVE = r"""
import json, sys
drive_path, code_dir, pyroute2_dir = sys.argv[1:4]
with open(drive_path, "rb") as handle:
    drive = json.loads(handle.read().rstrip(b" \0").decode("utf-8"))
sys.path.insert(0, pyroute2_dir)
exec(compile(drive["boot"], "mpsocks-config-drive", "exec"), {"drive": drive, "code_dir": code_dir})
"""


def run_drive(guest, config_drive, tmp_path):
    only_pyroute2 = tmp_path / "pyroute2-only"
    if not only_pyroute2.exists():
        only_pyroute2.mkdir()
        (only_pyroute2 / "pyroute2").symlink_to(Path(pyroute2.__file__).parent)
    return subprocess.run(["ip", "netns", "exec", guest, sys.executable, "-I", "-S", "-c", RUN_DRIVE,
                           str(config_drive), str(tmp_path / "code"), str(only_pyroute2)],
                          capture_output=True, text=True)


def test_boot_calls_leave_the_role_nothing_to_do(world, uplinks, tmp_path):  # noqa: F811
    host_up(world, tmp_path, ["up0", "up1"])
    options = {"mpsocks_uplinks": ["up0", "up1"], "mpsocks_dns_servers": []}
    config_drive = tmp_path / "config-drive.json"
    playbook = tmp_path / "boot_calls.yml"
    playbook.write_text(DRIVE_PLAYBOOK)
    inventory = tmp_path / "controller.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    extravars = dict(options, config_drive=str(config_drive))
    rc, output, recap = ansible_playbook(playbook, inventory, extravars=extravars)
    assert rc == 0 and recap["localhost"]["changed"] == 1, output
    text = config_drive.read_text()
    assert len(text.encode()) % 512 == 0
    drive = json.loads(text)
    assert [step["module"] for step in drive["steps"]] == [
        "interface", "sysctl", "policy_route", "route", "mptcp_limits", "mptcp_endpoint"]
    assert "ansible/module_utils/basic.py" in drive["code"]
    assert os.stat(config_drive).st_mode & 0o777 == 0o600

    done = run_drive(world["guest"], config_drive, tmp_path)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [f"{module}: changed" for module in (
        "interface", "sysctl", "policy_route", "route", "mptcp_limits", "mptcp_endpoint")]
    # The controller's bytecode went with the code (this Python is the controller's): nothing compiled.
    basic = tmp_path / "code" / "ansible" / "module_utils" / "basic.py"
    assert Path(importlib.util.cache_from_source(str(basic))).read_bytes()[4:8] == b"\1\0\0\0"

    rc, output, recap = guest_play(world, tmp_path, **options)
    assert rc == 0 and recap[world["guest"]]["changed"] == 0, output
    seen, local, remote, _ = mptcp_connection(world)
    assert seen["subflows"] == 2 and local == ["10.66.6.2", "10.66.7.2%eth1"], (seen, local)

    # The same drive again (a reboot): nothing to change; the playbook's config drive unchanged.
    again = run_drive(world["guest"], config_drive, tmp_path)
    assert again.returncode == 0 and again.stdout.splitlines() == [
        line.replace("changed", "ok") for line in done.stdout.splitlines()], again.stdout
    rc, output, recap = ansible_playbook(playbook, inventory, extravars=extravars)
    assert rc == 0 and recap["localhost"]["changed"] == 0, output


def test_a_failed_step_is_reported_and_the_rest_still_run(world, tmp_path):  # noqa: F811
    """A bad step fails alone (Ansible says why later, over ssh); the steps after it still run."""
    from ansible_collections.mpsocks.mptcp.plugins.module_utils.config_drive import drive_text

    steps = [{"module": "interface", "args": {"config": [{"name": "nosuchlink0", "up": True}]}},
             {"module": "sysctl", "args": {"config": [{"name": "net.ipv4.ip_forward", "value": "1"}]}}]
    config_drive = tmp_path / "config-drive.json"
    config_drive.write_text(drive_text(steps))
    done = run_drive(world["guest"], config_drive, tmp_path)
    lines = done.stdout.splitlines()
    assert done.returncode == 1 and len(lines) == 2, done.stdout + done.stderr
    assert lines[0].startswith("interface: failed: ") and "nosuchlink0" in lines[0]
    assert lines[1] == "sysctl: changed"
    assert subprocess.run(["ip", "netns", "exec", world["guest"], "sysctl", "-n", "net.ipv4.ip_forward"],
                          capture_output=True, text=True).stdout.strip() == "1"
