#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: guest_image
short_description: Build the guest's Debian disk image with debootstrap, cached by its inputs
version_added: 0.1.0
description:
  - Builds an ext4 disk image of a Debian system for the mpsocks guest in one call - plans the image, looks
    for one built from the same inputs and builds what is missing. Nothing is loop-mounted - the tree made
    by C(debootstrap --variant=minbase) becomes the file system with C(mkfs.ext4 -d), in a sparse file.
  - "The base layer holds O(packages) (and the distro kernel with O(distro_kernel)), O(python_packages)
    installed with the host's pip (pure-Python wheels only), the root ssh key O(ssh_key) authorized,
    O(hostname), C(/etc/fstab) mounting C(/dev/vda) as the ext4 root, sshd started at boot (key logins
    only), a unit that runs the steps of a config drive (made with P(mpsocks.mptcp.config_drive#filter), given
    to M(mpsocks.mptcp.libvirt_domain) as its C(config_drive)) before sshd starts (or reports the run that
    C(/usr/local/lib/mpsocks/init) started, the kernel's C(init=) that starts the steps, then becomes
    systemd), a cache of the code Python
    compiles from Ansible's module zips (one module call costs the guest half a second less under TCG), a
    getty on the serial console C(ttyS0) (root logged in with O(serial_autologin)), the units
    O(disabled_units) masked, and O(files). No package lists or C(.deb) files stay in the image;
    C(/etc/resolv.conf) is left for the guest's network role."
  - With O(extra_packages), an extras layer is built on the base layer's tree (kept as C(rootfs.tar)) by
    C(apt-get install) in a chroot, with no service started; its image is the result. So adding packages
    to a cached base takes seconds, not another debootstrap.
  - "Each layer is the folder O(state_dir)C(/image/KEY/): C(disk.img), C(image.json) (what it is made
    of), C(build.log), and with O(distro_kernel) the kernel C(vmlinuz) and its C(initrd.img). KEY is
    the suite, the layer and a hash of every input: suite, mirror, keyring, the package lists, size,
    hostname, files, units, the ssh key's public half and this module's build code. A layer is
    built in a temporary folder renamed to KEY at the end, so a folder named KEY is always whole. The
    C(.deb) files debootstrap downloads stay in O(state_dir)C(/image/cache/debs) for the next build."
  - The ssh key pair (ed25519, without a passphrase) is made when O(ssh_key) does not exist (private half
    mode 0600, folder 0700); it is never shipped with mpsocks.
  - Before anything is built, the free space where the image goes is checked - the image's full size
    (the guest may fill the sparse file) per layer to build plus 1.5 GiB to build in. Too little fails
    in one line naming both figures, and nothing is made.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - Root on the managed host, with C(debootstrap), C(mkfs.ext4) (e2fsprogs 1.43 or later), C(ssh-keygen)
    (openssh-client), C(tar) and C(chroot); O(missing_packages) says what happens when some are missing.
  - Access to the Debian mirror, and for O(python_packages) to a Python package index through the pip of
    the Python that runs the module.
options:
  state_dir:
    description:
      - Where mpsocks keeps what it builds; images go to C(image/), the ssh key to C(ssh/) by default.
    type: path
    default: /var/lib/mpsocks
  suite:
    description:
      - The Debian release to install (a name debootstrap has a script for, such as V(bookworm)).
      - When omitted, the release of the host's first apt source that is one (not C(-updates),
        C(-security) or C(-backports)), read from C(/etc/apt/sources.list) and C(/etc/apt/sources.list.d/).
    type: str
  mirror:
    description:
      - The Debian mirror's URL. When omitted, the URL of that apt source of the host, whose C(Signed-By)
        keyring (when it is a file) becomes O(keyring).
    type: str
  keyring:
    description:
      - The keyring debootstrap checks the mirror's C(Release) file with; debootstrap's default when omitted.
    type: path
  packages:
    description:
      - Debian packages debootstrap installs besides the C(minbase) variant (C(--include)).
    type: list
    elements: str
    default: [systemd-sysv, openssh-server, python3, iproute2, nftables, curl, tcpdump]
  extra_packages:
    description:
      - Debian packages of the extras layer, built on the base layer; none for no extras layer.
    type: list
    elements: str
    default: []
  python_packages:
    description:
      - Python requirements installed into the image's C(/usr/local/lib/python3.X/dist-packages) with the
        host's pip, as pure-Python wheels for the image's Python, then compiled by the image's Python.
    type: list
    elements: str
    default: []
  distro_kernel:
    description:
      - Whether the image holds Debian's cloud kernel (C(linux-image-cloud-amd64)), with a small initrd
        (virtio modules only); both are copied beside the image (RV(kernel), RV(initrd)) for direct kernel
        boot.
    type: bool
    default: false
  size:
    description:
      - The image's size, such as V(2G) or V(1536M) (binary units) or a number of bytes; the file is sparse.
    type: str
    default: 2G
  hostname:
    description:
      - The guest's host name.
    type: str
    default: mpsocks-guest
  ssh_key:
    description:
      - The private half of root's ssh key; made when missing. Defaults to O(state_dir)C(/ssh/id_ed25519).
    type: path
  serial_autologin:
    description:
      - Whether root is logged in on the serial console C(ttyS0) without a password. Otherwise the console
        shows a login prompt (root has no password, so only ssh lets anyone in).
    type: bool
    default: true
  disabled_units:
    description:
      - systemd units disabled and masked in the image (those it does not hold are skipped), for a faster
        boot. Masked too, since a static unit such as C(getty-static.service) cannot be disabled.
    type: list
    elements: str
    default: []
  files:
    description:
      - Files written into the base layer (owned by root), after everything else.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The file's absolute path in the image.
        type: str
        required: true
      content:
        description: The file's text.
        type: str
        default: ""
      mode:
        description: Its mode, in octal.
        type: str
        default: "0644"
  nice:
    description:
      - The niceness of debootstrap, apt, pip and mkfs, so that the build yields the CPU.
    type: int
    default: 10
  missing_packages:
    description:
      - What happens when the host lacks a tool. V(fail) fails naming the Debian packages to install;
        V(report) returns them in RV(missing_packages) and does nothing else, so that a play can install
        them and call the module again.
    type: str
    choices: [fail, report]
    default: fail
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Reports a cached image unchanged; otherwise predicts a change (checking the inputs and the free
        space) and makes nothing, not even the ssh key.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: linux
"""

EXAMPLES = r"""
- name: The guest's image, from the host's Debian mirror
  mpsocks.mptcp.guest_image:
    packages: [systemd-sysv, openssh-server, python3, iproute2, nftables, curl, tcpdump]
    python_packages: [pyroute2>=0.9.7]
    disabled_units: [apt-daily.timer, apt-daily-upgrade.timer]
  register: image

- name: The same with the SOCKS side, a second layer on the cached base
  mpsocks.mptcp.guest_image:
    packages: [systemd-sysv, openssh-server, python3, iproute2, nftables, curl, tcpdump]
    python_packages: [pyroute2>=0.9.7]
    extra_packages: [dante-server, redsocks, mptcpize]
    disabled_units: [danted.service, redsocks.service]

- name: Trixie from another mirror, 4 GiB, with Debian's kernel to boot it
  mpsocks.mptcp.guest_image:
    suite: trixie
    mirror: http://ftp.de.debian.org/debian
    size: 4G
    distro_kernel: true
"""

RETURN = r"""
changed:
  description: Whether a layer (or the ssh key) was built.
  returned: always
  type: bool
cached:
  description: Whether the image was there before the task.
  returned: always
  type: bool
key:
  description: The image's key, its folder's name (the extras layer's when there is one).
  returned: when the image exists
  type: str
  sample: bookworm-base-3f2a0c9d81b4
image:
  description: Path of the ext4 image.
  returned: when the image exists
  type: str
  sample: /var/lib/mpsocks/image/bookworm-base-3f2a0c9d81b4/disk.img
image_dir:
  description: The image's folder.
  returned: when the image exists
  type: str
ssh_key:
  description: Path of the private half of root's ssh key.
  returned: always
  type: str
  sample: /var/lib/mpsocks/ssh/id_ed25519
ssh_public_key:
  description: Its public half, as authorized in the image.
  returned: when the image exists
  type: str
host_key:
  description: The image's ed25519 ssh host key (type and key), for a C(known_hosts) line.
  returned: when the image exists
  type: str
kernel:
  description: The distro kernel beside the image, or empty without O(distro_kernel).
  returned: when the image exists
  type: str
initrd:
  description: Its initrd, or empty.
  returned: when the image exists
  type: str
info:
  description: The image's C(image.json) (inputs, package lists, Debian version, kernel release, Python
    packages and their versions, sizes, build time).
  returned: when the image exists
  type: dict
built:
  description: The layers this task built, with their times.
  returned: when the image exists
  type: list
  elements: str
  sample: [base 2m41s, extras 21s]
missing_packages:
  description: Debian packages the host lacks (O(missing_packages=report)).
  returned: always
  type: list
  elements: str
msg:
  description: What happened, in one line.
  returned: always
  type: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import one_line
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.guest_image import GuestImage


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            state_dir=dict(type="path", default="/var/lib/mpsocks"),
            suite=dict(type="str"),
            mirror=dict(type="str"),
            keyring=dict(type="path"),
            packages=dict(type="list", elements="str",
                          default=["systemd-sysv", "openssh-server", "python3", "iproute2", "nftables",
                                   "curl", "tcpdump"]),
            extra_packages=dict(type="list", elements="str", default=[]),
            python_packages=dict(type="list", elements="str", default=[]),
            distro_kernel=dict(type="bool", default=False),
            size=dict(type="str", default="2G"),
            hostname=dict(type="str", default="mpsocks-guest"),
            ssh_key=dict(type="path", no_log=False),
            serial_autologin=dict(type="bool", default=True),
            disabled_units=dict(type="list", elements="str", default=[]),
            files=dict(type="list", elements="dict", default=[], options=dict(
                path=dict(type="str", required=True),
                content=dict(type="str", default=""),
                mode=dict(type="str", default="0644"),
            )),
            nice=dict(type="int", default=10),
            missing_packages=dict(type="str", choices=["fail", "report"], default="fail"),
        ),
        supports_check_mode=True,
    )


def main():
    module = build_module()
    image = GuestImage(module.params)
    try:
        result = image.run(module.check_mode, module.params["missing_packages"] == "report")
    except MpsocksError as exc:
        module.fail_json(msg=one_line(exc), ssh_key=image.ssh_key)
    except Exception as exc:  # the last resort: one line for the user, the traceback for -vvv
        module.fail_json(msg="guest_image: unexpected %s: %s" % (type(exc).__name__, one_line(exc)),
                         exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
