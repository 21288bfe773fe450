#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: kernel_build
short_description: Build a small x86_64 kernel from source, cached by its source and final config
version_added: 0.1.0
description:
  - Builds a C(bzImage) from Debian's C(linux-source-X) package (the default, the tarball under
    C(/usr/src)), from a kernel tarball, or from a commit of a git tree, configured as a base
    (C(make tinyconfig) or C(make defconfig)) with config fragments appended and C(make olddefconfig)
    run over them. Without modules or an initrd, such a kernel boots by direct kernel boot.
  - Every option a fragment asks for (C(CONFIG_X=VALUE) or C(# CONFIG_X is not set)) is checked. An
    option that no Kconfig file of the source defines fails the task before anything is configured;
    one the final C(.config) does not hold as asked (an unmet dependency, most often) fails it after
    the configuration, naming the option, where it is defined, its conditions and which of their
    symbols are unset. Nothing is compiled then.
  - "A kernel is stored in O(state_dir)C(/kernel/KEY/): C(bzImage), C(config) (the final C(.config))
    and C(kernel.json) (release, source, config sha256, build seconds, objects built). KEY joins the
    source's identity (package and version, tarball sha256, or git commit) and the final C(.config)'s
    sha256. A kernel is copied into a temporary folder renamed to KEY at the end, so a folder of that
    name is always whole."
  - "Two steps, so that a play can show progress. O(step=start) resolves the source and looks for a
    kernel built from the same inputs (source identity, base, fragments, compiler): found, it is the
    result, in well under a second, without touching the source. Otherwise the source is unpacked
    (once per identity) into O(state_dir)C(/build/SOURCE/), configured and checked, and if no kernel of
    the resulting KEY exists, C(make bzImage) starts in the background, its log in
    C(build/SOURCE/build.log). O(step=wait) then waits up to O(wait) seconds and reports how many
    objects are built; once make is done it stores the kernel. Run it with C(until) and C(retries): each
    retry shows its message."
  - A background build that nobody waits for during O(abandon_after) seconds (the play was cancelled)
    stops itself; the next run starts it again, with the objects already built.
  - Only one source tree is kept in O(state_dir)C(/build); unpacking another source removes the trees
    of other sources in which no build runs.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - An x86_64 host with C(make), C(gcc), C(libc6-dev), C(bison), C(flex), C(bc), C(perl), C(libelf-dev)
    and C(tar) (with C(xz-utils) for C(.tar.xz)); C(git) for a git source; C(libssl-dev) for the
    C(defconfig) base. O(missing_packages) says what happens when some are missing.
options:
  step:
    description:
      - V(start) finds the cached kernel, or configures the source and starts its build.
      - V(wait) waits for the build O(key) in O(build_dir) that V(start) returned.
    type: str
    choices: [start, wait]
    default: start
  state_dir:
    description:
      - Where kernels (C(kernel/)) and the build tree (C(build/)) are kept.
    type: path
    default: /var/lib/mpsocks
  package:
    description:
      - The Debian package whose tarball C(/usr/src/PACKAGE.tar.xz) is the source, when neither
        O(tarball) nor O(git_repo) is given. Its installed version is the source's identity.
    type: str
    default: linux-source-6.1
  tarball:
    description:
      - A kernel source tarball (any compression C(tar) reads) on the managed host; its sha256 is the
        source's identity. Mutually exclusive with O(git_repo).
    type: path
  git_repo:
    description:
      - A git tree on the managed host holding a kernel source; the commit O(git_ref) names is built
        (exported with C(git archive), the tree itself is left alone). Mutually exclusive with O(tarball).
    type: path
  git_ref:
    description:
      - The branch, tag or commit of O(git_repo) to build; the commit it resolves to is the identity.
    type: str
    default: HEAD
  base:
    description:
      - The configuration the fragments are merged over. V(tinyconfig) is the smallest kernel that
        builds (about 140 s with 2 CPUs); V(defconfig) is the architecture's default (much larger).
    type: str
    choices: [tinyconfig, defconfig]
    default: tinyconfig
  fragments:
    description:
      - Config fragments merged over the base, in order (a later fragment wins over an earlier one).
        Each line is C(CONFIG_X=VALUE), C(# CONFIG_X is not set), a comment or blank.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - What messages call the fragment; defaults to its O(fragments[].path) or position.
        type: str
      text:
        description:
          - The fragment's text. Give one of O(fragments[].text), O(fragments[].lines) and
            O(fragments[].path).
        type: str
      lines:
        description:
          - The fragment's lines, as a list.
        type: list
        elements: str
      path:
        description:
          - A file on the managed host holding the fragment.
        type: path
  jobs:
    description:
      - C(make -j) of the compile; V(0) is the number of CPUs.
    type: int
    default: 0
  nice:
    description:
      - The niceness the compile runs at, so that it yields the CPU to interactive work.
    type: int
    default: 10
  abandon_after:
    description:
      - Seconds a background build runs on when nobody waits for it (O(step=wait) calls) before it stops.
    type: int
    default: 120
  missing_packages:
    description:
      - What V(start) does when build tools or the source package are missing. V(fail) fails naming
        the Debian packages to install; V(report) returns them in RV(missing_packages) and does nothing
        else, so that a play can install them and call V(start) again.
    type: str
    choices: [fail, report]
    default: fail
  key:
    description:
      - With O(step=wait), the build's key as V(start) returned it.
    type: str
  build_dir:
    description:
      - With O(step=wait), the build folder as V(start) returned it.
    type: path
  wait:
    description:
      - With O(step=wait), at most this many seconds to wait for the build before reporting its progress.
    type: int
    default: 10
  timeout:
    description:
      - With O(step=wait), a build running longer than this many seconds (since it started) is stopped
        and the task fails; V(0) waits for ever.
    type: int
    default: 0
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - V(start) reports a cached kernel unchanged; for inputs no kernel was built from it predicts a
        change, unpacks, configures and builds nothing, and checks the options' names when the source
        tree is already unpacked. V(wait) changes nothing and reports a change.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: linux
"""

EXAMPLES = r"""
- name: Configure and start the build (a cached kernel is the answer at once)
  mpsocks.mptcp.kernel_build:
    fragments:
      - name: mptcp
        text: |
          CONFIG_MPTCP=y
          CONFIG_MPTCP_IPV6=y
      - path: /etc/mpsocks/kernel.config
  register: kernel

- name: Compile it, showing how far it got
  mpsocks.mptcp.kernel_build:
    step: wait
    key: "{{ kernel.key }}"
    build_dir: "{{ kernel.build_dir }}"
  register: compiled
  until: compiled is failed or compiled.done
  retries: 720
  delay: 0
  when: kernel.building

- name: A kernel from a git tree's tag, on the defconfig base
  mpsocks.mptcp.kernel_build:
    git_repo: /srv/linux
    git_ref: v6.6
    base: defconfig
"""

RETURN = r"""
done:
  description: Whether the kernel is built (RV(image) is there).
  returned: always
  type: bool
building:
  description: Whether a build runs in the background (call O(step=wait)).
  returned: always
  type: bool
cached:
  description: Whether the kernel was already built before this task.
  returned: always
  type: bool
key:
  description: The kernel's key (source identity and final config hash), its folder's name.
  returned: when the source was resolved
  type: str
  sample: linux-source-6.1_6.1.192-3-3f2a0c9d81b4
image:
  description: Path of the C(bzImage).
  returned: when done
  type: str
  sample: /var/lib/mpsocks/kernel/linux-source-6.1_6.1.192-3-3f2a0c9d81b4/bzImage
config:
  description: Path of the kernel's final C(.config).
  returned: when done
  type: str
release:
  description: The kernel's release (C(make kernelrelease), C(uname -r) in the guest).
  returned: when done
  type: str
  sample: 6.1.192
kernel:
  description: The kernel's C(kernel.json)
  returned: when done
  type: dict
  contains:
    release:
      description: As RV(release).
      type: str
    source:
      description: The source's identity (kind, package and version, tarball and sha256, or git tree,
        ref and commit) and a label.
      type: dict
    config_sha256:
      description: sha256 of the final C(.config).
      type: str
    build_seconds:
      description: How long C(make bzImage) took.
      type: int
    objects:
      description: How many objects the compile built.
      type: int
build_dir:
  description: The build folder (source tree C(src), objects C(out), C(build.log)).
  returned: while building
  type: str
log:
  description: The compile's log.
  returned: when a build started
  type: str
objects:
  description: Objects built so far (O(step=wait)), or in all once done.
  returned: with O(step=wait)
  type: int
missing_packages:
  description: Debian packages the build needs that are not installed (O(missing_packages=report)).
  returned: with O(step=start)
  type: list
  elements: str
  sample: [bison, flex, libelf-dev]
msg:
  description: What happened, in one line, e.g. C(1234 objects built in 3m05s) while waiting.
  returned: always
  type: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import one_line
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.kernel_build import KernelBuild


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            step=dict(type="str", choices=["start", "wait"], default="start"),
            state_dir=dict(type="path", default="/var/lib/mpsocks"),
            package=dict(type="str", default="linux-source-6.1"),
            tarball=dict(type="path"),
            git_repo=dict(type="path"),
            git_ref=dict(type="str", default="HEAD"),
            base=dict(type="str", choices=["tinyconfig", "defconfig"], default="tinyconfig"),
            fragments=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str"),
                text=dict(type="str"),
                lines=dict(type="list", elements="str"),
                path=dict(type="path"),
            )),
            jobs=dict(type="int", default=0),
            nice=dict(type="int", default=10),
            abandon_after=dict(type="int", default=120),
            missing_packages=dict(type="str", choices=["fail", "report"], default="fail"),
            key=dict(type="str", no_log=False),
            build_dir=dict(type="path"),
            wait=dict(type="int", default=10),
            timeout=dict(type="int", default=0),
        ),
        mutually_exclusive=[("tarball", "git_repo")],
        required_if=[("step", "wait", ("key", "build_dir"))],
        supports_check_mode=True,
    )


def main():
    module = build_module()
    build = KernelBuild(module.params)
    try:
        if module.params["step"] == "wait":
            if module.check_mode:
                module.exit_json(changed=True, done=True, building=False, cached=False,
                                 msg="check mode: would wait for the build of %s" % module.params["key"])
            result = build.wait(module.params["wait"], module.params["timeout"])
        else:
            result = build.start(module.check_mode, module.params["missing_packages"] == "report")
    except MpsocksError as exc:
        module.fail_json(msg=one_line(exc))
    except Exception as exc:  # the last resort: one line for the user, the traceback for -vvv
        module.fail_json(msg="kernel_build: unexpected %s: %s" % (type(exc).__name__, one_line(exc)),
                         exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
