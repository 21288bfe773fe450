#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: libvirt_domain
short_description: Manage the libvirt domain of an mpsocks guest
version_added: 0.1.0
description:
  - Defines, starts, stops and undefines libvirt domains that boot a kernel directly (no boot
    loader) from one virtio disk, with one virtio network interface per tap and the serial
    console written to a log file; a list of them in one call.
  - The taps must exist beforehand (M(mpsocks.mptcp.tap)); the domain uses them as they are
    (C(<interface type='ethernet'>) with C(managed='no')) and never creates or deletes them.
  - The definition libvirt keeps (the inactive XML) is compared with the one asked for; only a
    difference redefines the domain, keeping its UUID and the MAC address of every tap it keeps.
    A running domain that is redefined runs its previous definition until its next start, which
    the result reports, unless O(restart_on_change) restarts it.
  - A domain the module defines carries an owner element in its C(<metadata>). A domain of the
    same name without it was not made by mpsocks, so the module fails and neither changes nor
    undefines it.
  - Every item is checked first (input, the domain's owner, and on this machine's libvirtd that
    the kernel, initrd and disk files and the taps exist), so a bad item anywhere changes nothing.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - libvirt-python on the managed host
  - a running libvirtd (and virtlogd) reachable at O(uri)
options:
  config:
    description:
      - The domains, one dict each, made to match in order.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Name of the domain, 1 to 64 characters out of C(A-Z a-z 0-9 _ . -), starting with a
            letter or digit.
        type: str
        required: true
      state:
        description:
          - V(present) defines the domain and leaves it running or not as it is (a new domain is
            shut off).
          - V(running) defines it if needed and starts it (or resumes it when paused).
          - V(stopped) defines it if needed and stops it; see O(shutdown_timeout).
          - V(absent) stops it the same way and undefines it. Its disk, kernel and log files stay.
          - Defaults to the module's O(state).
        type: str
        choices: [present, running, stopped, absent]
      type:
        description:
          - The libvirt domain type, V(kvm) (hardware virtualisation) or V(qemu) (TCG emulation,
            slower but works where KVM does not).
          - When omitted, an existing domain keeps its type and a new one gets V(qemu).
        type: str
        choices: [kvm, qemu]
      memory:
        description:
          - Memory in MiB, more than 0.
          - When omitted, an existing domain keeps its memory and a new one gets 512.
        type: int
      vcpus:
        description:
          - Number of virtual CPUs, at least 1.
          - When omitted, an existing domain keeps its number and a new one gets 1.
        type: int
      tcg_cache:
        description:
          - Size in MiB of QEMU's translation cache for a V(qemu) (TCG) domain; ignored for V(kvm).
            QEMU's default (1 GiB on x86_64) makes the guest's memory use about three times its
            O(config[].memory); the translated code of a small guest fits in far less. V(0) means
            QEMU's default.
          - When omitted, an existing domain keeps its size and a new one gets QEMU's default.
        type: int
      kernel:
        description:
          - Absolute path of the kernel image the domain boots.
          - Required to define a new domain; when omitted, an existing domain keeps its kernel.
        type: path
      initrd:
        description:
          - Absolute path of the initial ramdisk; an empty string means none.
          - When omitted, an existing domain keeps its initrd and a new one has none.
        type: str
      cmdline:
        description:
          - The kernel command line, e.g. C(root=/dev/vda console=ttyS0); an empty string means
            none.
          - When omitted, an existing domain keeps its command line and a new one has none.
        type: str
      disk:
        description:
          - Absolute path of the disk image, attached as the virtio disk C(vda).
          - Required to define a new domain; when omitted, an existing domain keeps its disk.
        type: path
      disk_backing:
        description:
          - Absolute path of an image (raw or qcow2) of which O(config[].disk) is made, when it does not
            exist, as a copy-on-write overlay in qcow2 (with C(qemu-img create); its folder too), so the
            image itself is never written. An existing disk is used as it is.
          - Needs O(config[].disk_format=qcow2) and a libvirtd on this machine.
        type: path
      disk_format:
        description:
          - Format of the disk image.
          - When omitted, an existing domain keeps its format and a new one gets V(raw).
        type: str
        choices: [raw, qcow2]
      config_drive:
        description:
          - Absolute path of a config drive (the text of P(mpsocks.mptcp.config_drive#filter)), attached
            read-only as the virtio disk C(vdb) with serial C(mpsocks-config); an image of
            M(mpsocks.mptcp.guest_image) makes its calls at boot. An empty string means none.
          - When omitted, an existing domain keeps its config drive and a new one has none.
        type: path
      config_drive_content:
        description:
          - The config drive's text, written to O(config[].config_drive) (mode C(0600)) when the file
            differs, before the domain is defined or started; the diff shows its SHA1, never the text.
          - A running domain reads a new config drive at its next start; a new config drive alone does not
            restart it.
          - When omitted, the file at O(config[].config_drive) is used as it is.
        type: str
      interfaces:
        description:
          - Names of the taps, in order; the domain gets one virtio interface on each.
          - When omitted, an existing domain keeps its interfaces and a new one has none.
        type: list
        elements: str
      serial_log:
        description:
          - Absolute path of the file the serial console (C(ttyS0)) is written to, by virtlogd; each
            start of the domain starts it afresh. Its folder is made when missing. An empty string means
            no log file (the console stays reachable with C(virsh console)).
          - When omitted, an existing domain keeps its log file and a new one has none.
        type: str
  state:
    description:
      - The state of every item that does not give its own.
    type: str
    choices: [present, running, stopped, absent]
    default: present
  uri:
    description:
      - The libvirt connection URI.
    type: str
    default: qemu:///system
  shutdown_timeout:
    description:
      - To stop a domain, the module asks the guest to power off (ACPI power button) and waits
        this many seconds for it, then destroys it (pulls the plug). V(0) destroys it at once.
    type: int
    default: 60
  restart_on_change:
    description:
      - Whether a running domain whose definition changes (now, or by an earlier run) is restarted
        (stopped as for O(shutdown_timeout), then started) so that it runs the new definition.
      - When false, it runs its previous definition until its next start and the result says so.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff shows the domain's definition and run state as dicts, before and after.
  platform:
    support: full
    platforms: linux
notes:
  - libvirtd must run; without systemd, start C(virtlogd -d) and then C(libvirtd -d).
  - Where C(/dev/kvm) exists, libvirtd's QEMU user must be able to open it (udev makes it C(root:kvm)
    mode C(0660)); where it cannot, libvirtd probes QEMU anew on every call, which made each
    definition take about 50 seconds on a machine without udev.
  - The module needs root (it takes its locks under C(/run/lock/mpsocks)).
"""

EXAMPLES = r"""
- name: The guest, running, on two uplink taps
  mpsocks.mptcp.libvirt_domain:
    state: running
    config:
      - name: mpsocks-guest
        type: kvm
        memory: 1024
        vcpus: 2
        kernel: /var/lib/mpsocks/vmlinuz
        cmdline: root=/dev/vda rw console=ttyS0
        disk: /var/lib/mpsocks/guest.img
        interfaces: [mptcp0, mptcp1]
        serial_log: /var/log/mpsocks/guest-console.log

- name: A new kernel; restart the guest now rather than at its next start
  mpsocks.mptcp.libvirt_domain:
    state: running
    restart_on_change: true
    config:
      - name: mpsocks-guest
        kernel: /var/lib/mpsocks/vmlinuz-mptcp

- name: Stop it, giving it 30 seconds to power off
  mpsocks.mptcp.libvirt_domain:
    state: stopped
    shutdown_timeout: 30
    config:
      - name: mpsocks-guest

- name: Remove it (its image and taps stay)
  mpsocks.mptcp.libvirt_domain:
    state: absent
    config:
      - name: mpsocks-guest
"""

RETURN = r"""
results:
  description: One entry per domain, in the order of O(config).
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: Which domain.
      type: str
      sample: domain mpsocks-guest
    changed:
      description: Whether this domain changed (its definition or whether it runs).
      type: bool
    note:
      description: Set when the domain runs its previous definition until its next start.
      type: str
      returned: when a restart is pending
      sample: domain mpsocks-guest runs its previous definition until its next start
        (restart_on_change true restarts it)
    domain:
      description: The domain as libvirt holds it after the task (empty when absent; in check mode,
        what it would be).
      type: dict
      contains:
        name:
          description: Domain name.
          type: str
          sample: mpsocks-guest
        uuid:
          description: The domain's UUID (null in check mode for a domain not yet defined).
          type: str
          sample: 0c6a6c4e-5f7e-4c55-9a38-2d1f3c0b9e11
        state:
          description: Run state, e.g. C(running), C(shut off), C(paused).
          type: str
          sample: running
        restart_pending:
          description: Whether the domain runs an older definition than the one libvirt keeps.
          type: bool
          sample: false
        type:
          description: Domain type.
          type: str
          sample: kvm
        memory:
          description: Memory in MiB.
          type: int
          sample: 1024
        vcpus:
          description: Number of virtual CPUs.
          type: int
          sample: 2
        tcg_cache:
          description: Size in MiB of the translation cache of a V(qemu) domain, or null (QEMU's default).
          type: int
          sample: 128
        kernel:
          description: Kernel image path.
          type: str
          sample: /var/lib/mpsocks/vmlinuz
        initrd:
          description: Initial ramdisk path, or null.
          type: str
          sample: null
        cmdline:
          description: Kernel command line.
          type: str
          sample: root=/dev/vda rw console=ttyS0
        disk:
          description: Disk image path.
          type: str
          sample: /var/lib/mpsocks/guest.img
        disk_format:
          description: Disk image format.
          type: str
          sample: raw
        config_drive:
          description: Config drive path, or null.
          type: str
          sample: /var/lib/mpsocks/guests/mpsocks-guest/config-drive.json
        interfaces:
          description: The taps of the domain's interfaces, in order.
          type: list
          elements: str
          sample: [mptcp0, mptcp1]
        macs:
          description: The MAC address of each interface, in the order of RV(results[].domain.interfaces)
            (null in check mode for an interface not yet defined).
          type: list
          elements: str
          sample: ["52:54:00:3a:1c:07", "52:54:00:91:e2:4d"]
        serial_log:
          description: The file the serial console is written to, or null.
          type: str
          sample: /var/log/mpsocks/guest-console.log
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.libvirt_domain import LibvirtDomain

STATES = ["present", "running", "stopped", "absent"]


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            config=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                state=dict(type="str", choices=STATES),
                type=dict(type="str", choices=["kvm", "qemu"]),
                memory=dict(type="int"),
                vcpus=dict(type="int"),
                tcg_cache=dict(type="int"),
                kernel=dict(type="path"),
                initrd=dict(type="str"),
                cmdline=dict(type="str"),
                disk=dict(type="path"),
                disk_backing=dict(type="path"),
                disk_format=dict(type="str", choices=["raw", "qcow2"]),
                config_drive=dict(type="path"),
                config_drive_content=dict(type="str", no_log=True),
                interfaces=dict(type="list", elements="str"),
                serial_log=dict(type="str"),
            )),
            state=dict(type="str", choices=STATES, default="present"),
            uri=dict(type="str", default="qemu:///system"),
            shutdown_timeout=dict(type="int", default=60),
            restart_on_change=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )


def main():
    run_module(build_module(), LibvirtDomain)


if __name__ == "__main__":
    main()
