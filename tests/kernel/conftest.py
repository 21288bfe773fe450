"""Kernel tests: a fake kernel source for the module's logic (seconds), and one real build of the
default kernel for the whole session, into the default state folder so that later tests (the VM)
find it cached."""

from __future__ import annotations

import os
import subprocess

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.kernel_build import DEFAULT_PACKAGE, missing_tools
from kernel_testlib import DEFAULT_STATE_DIR, NICE, run_role


@pytest.fixture(scope="session")
def build_tools():
    """What a kernel build needs, installed as the role would (CI's machine is fresh)."""
    missing = missing_tools("tinyconfig", tarball=".xz", git=True)
    have_source = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", DEFAULT_PACKAGE],
                                 capture_output=True, text=True).stdout.startswith("ii")
    missing += [] if have_source else [DEFAULT_PACKAGE]
    if missing:
        if os.geteuid() != 0:
            pytest.fail(f"kernel tests need {' '.join(missing)} (apt-get install --no-install-recommends)")
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True,
                       capture_output=True)
    return True


@pytest.fixture(scope="session")
def default_kernel(build_tools, tmp_path_factory):
    """The default kernel, built (or found) by the role in the default state folder, once per session."""
    if os.geteuid() != 0:
        pytest.fail("the kernel build writes to /var/lib/mpsocks: run the tests as root")
    run = run_role(tmp_path_factory.mktemp("kernel-runs"))
    assert run.rc == 0, run.output
    built = run.changed() > 0
    print(f"default kernel: {'built' if built else 'found cached'} in {run.seconds:.1f} s "
          f"(make at nice {NICE}), {run.calls} module calls")
    print(run.output)
    return {"run": run, "built": built, "state_dir": DEFAULT_STATE_DIR,
            "artifacts": tmp_path_factory.mktemp("kernel-more-runs")}
