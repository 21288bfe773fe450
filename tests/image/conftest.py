"""Image tests: one real build of the default image per session - with the extras, the image the VM
tests boot - into the default state folder, so that later tests (the VM) find it cached. Every other
test is cheap: a check-mode run, an error before anything is built, a look inside with debugfs."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.guest_image import missing_tools
from image_testlib import DEFAULT_STATE_DIR, INSTALL_VM_EXTRA, NICE, run_role


@pytest.fixture(scope="session")
def build_tools():
    """What building an image needs, installed as the role would (CI's machine is fresh)."""
    missing = missing_tools()
    if missing:
        if os.geteuid() != 0:
            pytest.fail(f"image tests need {' '.join(missing)} (apt-get install --no-install-recommends)")
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True,
                       capture_output=True)
    return True


@pytest.fixture(scope="session")
def default_image(build_tools, tmp_path_factory):
    """The default image with the extras, built (or found) by the role in the default state folder, once
    per session; its base layer is what playbooks/build_image.yml gives."""
    if os.geteuid() != 0:
        pytest.fail("building the image writes to /var/lib/mpsocks: run the tests as root")
    run = run_role(INSTALL_VM_EXTRA, tmp_path_factory.mktemp("image-runs"))
    assert run.rc == 0, run.output
    image = run.image()
    info = json.loads((image.parent / "image.json").read_text())
    base = json.loads((DEFAULT_STATE_DIR / "image" / info["parent"] / "image.json").read_text())
    built = run.changed() > 0
    print(f"default image: {'built' if built else 'found cached'} in {run.seconds:.1f} s (nice {NICE}), "
          f"{run.calls} module call(s); base layer {base['build_seconds']} s, extras layer "
          f"{info['build_seconds']} s when they were built")
    print(run.output)
    return {"run": run, "built": built, "image": image, "info": info, "base": base,
            "base_image": DEFAULT_STATE_DIR / "image" / info["parent"] / "disk.img",
            "state_dir": DEFAULT_STATE_DIR, "artifacts": tmp_path_factory.mktemp("image-more-runs")}
