#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: virt_accelerator
short_description: Find whether a guest should run under KVM or TCG here
version_added: 0.1.0
description:
  - Answers which accelerator a QEMU or libvirt guest should use on the managed host, V(kvm) or
    V(tcg), and libvirt's domain type for it (V(kvm) or V(qemu)).
  - With O(accelerator=auto) it uses KVM only when a probe guest really boots under it. Where
    C(/dev/kvm) is missing or cannot be opened read-write the answer is V(tcg) at once. Else it
    boots O(kernel) under C(qemu-system-x86_64 -accel kvm) with its console on a pipe and waits up to
    O(timeout) seconds for the kernel's first line (C(Linux version)); on some machines C(/dev/kvm)
    opens but a KVM guest hangs before its kernel prints anything. The probe's process group is
    always killed and reaped before the module returns.
  - The answer of a probe is cached in O(cache) per host identity (host kernel release, CPU model and
    QEMU version), so that later calls answer at once; another identity probes again.
  - When it falls back to TCG the module says why in one warning.
  - Changes nothing on the system but the cache file.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - qemu-system-x86_64 on the managed host (for O(accelerator=auto))
options:
  accelerator:
    description:
      - V(auto) probes (or takes the cached answer); V(kvm) and V(tcg) are returned as given, without
        probing, to override the probe.
    type: str
    choices: [auto, kvm, tcg]
    default: auto
  kernel:
    description:
      - Path of an x86_64 kernel image (bzImage) to boot the probe guest with; it needs its serial
        console (C(ttyS0)) and nothing else, no root file system or initrd.
      - Required for O(accelerator=auto); it must be a file.
    type: path
  timeout:
    description:
      - Seconds the probe guest's kernel has to print its first line under KVM. Under KVM that takes
        well under a second; the rest of the time goes to a guest that hangs.
    type: int
    default: 20
  cache:
    description:
      - Path of the JSON file that keeps probe answers per host identity (its folder is created if
        missing). It is written atomically; a file that cannot be read as a cache is replaced.
    type: path
    default: /var/lib/mpsocks/accelerator.json
  refresh:
    description:
      - Probe even when the cache holds an answer for this host identity (and replace that answer).
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The probe runs in check mode too (it changes nothing); the cache is read but not written.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: linux
notes:
  - The probe runs as the module's user; libvirtd runs its guests as its own QEMU user, which must be
    able to open C(/dev/kvm) too for a V(kvm) domain.
  - TCG works everywhere QEMU does, about ten times slower than KVM.
seealso:
  - module: mpsocks.mptcp.libvirt_domain
"""

EXAMPLES = r"""
- name: Which accelerator works here?
  mpsocks.mptcp.virt_accelerator:
    kernel: /var/lib/mpsocks/kernel/linux-source-6.1/bzImage
  register: accel

- name: The guest, on whatever works
  mpsocks.mptcp.libvirt_domain:
    state: running
    config:
      - name: mpsocks-guest
        type: "{{ accel.domain_type }}"
        kernel: /var/lib/mpsocks/vmlinuz
        disk: /var/lib/mpsocks/guest.img

- name: Ask again, after a BIOS setting changed
  mpsocks.mptcp.virt_accelerator:
    kernel: /var/lib/mpsocks/kernel/linux-source-6.1/bzImage
    refresh: true

- name: The user knows better (no probe)
  mpsocks.mptcp.virt_accelerator:
    accelerator: tcg
"""

RETURN = r"""
accelerator:
  description: The accelerator to use.
  returned: always
  type: str
  sample: tcg
domain_type:
  description: libvirt's domain type for it (V(kvm) for KVM, V(qemu) for TCG).
  returned: always
  type: str
  sample: qemu
reason:
  description: Why, in one line.
  returned: always
  type: str
  sample: a KVM guest's kernel printed nothing in 20 s
cached:
  description: Whether the answer came from O(cache) (no probe ran).
  returned: always
  type: bool
  sample: false
probe_seconds:
  description: How long this call's probe guest ran, or null when no guest was booted (an
    override, a cached answer, or no usable C(/dev/kvm)).
  returned: always
  type: float
  sample: 20.01
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.accelerator import AcceleratorChoice
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            accelerator=dict(type="str", choices=["auto", "kvm", "tcg"], default="auto"),
            kernel=dict(type="path"),
            timeout=dict(type="int", default=20),
            cache=dict(type="path", default="/var/lib/mpsocks/accelerator.json"),
            refresh=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )


def main():
    module = build_module()
    choice = AcceleratorChoice(module.params, check_mode=module.check_mode)
    try:
        choice.validate()
        answer = choice.choose()
    except MpsocksError as exc:
        module.fail_json(msg=str(exc))
    for warning in choice.warnings:
        module.warn(warning)
    module.exit_json(changed=False, **answer)


if __name__ == "__main__":
    main()
