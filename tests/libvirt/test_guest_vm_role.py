"""Role guest_vm when the guest never answers: a kernel that cannot mount its root (Debian's cloud kernel
with no initrd) boots under TCG on a tap of the test's own and panics. The role must fail in one line
that names the guest and ends with its serial console, and leave no domain and no disk behind; the same
when the guest's address is routed elsewhere than its first tap."""

from __future__ import annotations

import re
import subprocess

import libvirt
import pytest
from mpsocks_testlib import REPO, ansible_playbook, sh, unique_name

pytestmark = pytest.mark.root

PLAYBOOK = """\
- name: The guest as a VM
  hosts: localhost
  gather_facts: false
  roles:
    - role: mpsocks.mptcp.guest_vm
"""


@pytest.fixture
def tap():
    """A tap holding the host's address of the guest link, as role host_network makes it (so that the
    role's wait for ssh goes to the tap, never out of the machine)."""
    name = unique_name("mpsvt")
    sh("ip", "tuntap", "add", "mode", "tap", "name", name)
    sh("ip", "addr", "add", "10.66.6.1/24", "dev", name)
    sh("ip", "link", "set", name, "up")
    yield name
    subprocess.run(["ip", "tuntap", "del", "mode", "tap", "name", name], check=False)


def test_a_guest_that_never_answers_ssh_is_removed_and_its_console_shown(libvirtd, kernel, workdir, tap,
                                                                       tmp_path):
    name = unique_name("mpsvg")
    image = workdir / "image" / "disk.img"
    image.parent.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(16 * 1024 * 1024)
    playbook = tmp_path / "vm.yml"
    playbook.write_text(PLAYBOOK)
    settings = {"mpsocks_vm_name": name, "mpsocks_state_dir": str(workdir), "mpsocks_vm_kernel": str(kernel),
                "mpsocks_vm_image": str(image), "mpsocks_vm_host_key": "ssh-ed25519 AAAAC3Nz",
                "mpsocks_vm_interfaces": [tap], "mpsocks_vm_memory": 256, "mpsocks_vm_boot_timeout": 20,
                "mpsocks_vm_accelerator": "tcg"}
    inventory = REPO / "inventory" / "localhost.yml"
    guest_dir = workdir / "guests" / name
    elsewhere = unique_name("mpsvo")  # a tap without the guest link's address: 10.66.6.2 is not behind it
    sh("ip", "tuntap", "add", "mode", "tap", "name", elsewhere)
    try:
        rc, output, recap = ansible_playbook(playbook, inventory, extravars=dict(settings,
                                             mpsocks_vm_interfaces=[elsewhere]))
        assert rc == 2 and f"mpsocks_vm_interfaces: the guest's address 10.66.6.2 is not routed to tap " \
            f"{elsewhere} (" in output, output
        with pytest.raises(libvirt.libvirtError):  # checked while the guest boots, then removed
            libvirt.open(libvirtd).lookupByName(name)
        assert not list(guest_dir.glob("*.qcow2"))
        rc, output, recap = ansible_playbook(playbook, inventory, extravars=settings)
        assert rc == 2 and recap["localhost"]["failed"] == 1, output
        message = re.search(r'"msg": "(guest .*)"', output)
        assert message, output
        assert message[1].startswith(f"guest {name}: no ssh on 10.66.6.2:22 within 20 s; the end of its "
                                     f"serial console {guest_dir}/console.log: "), message[1]
        assert "Kernel panic" in message[1] or "Unable to mount root fs" in message[1], message[1]
        with pytest.raises(libvirt.libvirtError):
            libvirt.open(libvirtd).lookupByName(name)
        assert not list(guest_dir.glob("*.qcow2")) and (guest_dir / "console.log").exists()
    finally:
        subprocess.run(["ip", "tuntap", "del", "mode", "tap", "name", elsewhere], check=False)
        rc, output, _ = ansible_playbook(playbook, inventory,
                                         extravars=dict(settings, mpsocks_state="absent"))
    assert rc == 0, output
    assert not guest_dir.exists()
