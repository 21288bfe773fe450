"""The installed package: collection visible to Ansible from anywhere, runner entry point, Galaxy build.

These tests look at the copy ``pip install .`` put into this Python's
environment (what tests/run does before running them), not at the checkout.
"""

import filecmp
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from mpsocks_testlib import COLLECTION

BIN = Path(sys.executable).parent
#: Every plugin and role of the checkout, as (ansible-doc type, name).
_FOLDERS = {"module": "modules", "connection": "connection", "filter": "filter"}
PLUGINS = sorted(
    [(kind, path.stem) for kind, folder in _FOLDERS.items()
     for path in (COLLECTION / "plugins" / folder).glob("[!_]*.py")]
    + [("role", path.name) for path in (COLLECTION / "roles").iterdir()])


def plain_env():
    """The environment of a user who set nothing up: no collections path, no checkout on sys.path."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHONPATH"))}


def installed_collection() -> Path:
    proc = subprocess.run([sys.executable, "-c", "import ansible_collections.mpsocks.mptcp as c; "
                           "print(list(c.__path__)[0])"], capture_output=True, text=True, env=plain_env(),
                          cwd="/")
    assert proc.returncode == 0, "mpsocks is not installed in this environment: pip install . first"
    return Path(proc.stdout.strip())


def test_installed_copy_is_this_checkout():
    installed = installed_collection()
    assert "site-packages" in str(installed)
    comparison = filecmp.dircmp(COLLECTION, installed, ignore=["__pycache__"])
    stale = []

    def walk(cmp):
        stale.extend(cmp.left_only + cmp.diff_files)
        for sub in cmp.subdirs.values():
            walk(sub)
    walk(comparison)
    assert not stale, f"the installed collection differs from the checkout ({stale}): pip install . again"


@pytest.mark.parametrize("kind, name", PLUGINS)
def test_ansible_doc_renders_from_any_directory(kind, name, tmp_path):
    proc = subprocess.run([str(BIN / "ansible-doc"), "-t", kind, f"mpsocks.mptcp.{name}"],
                          capture_output=True, text=True, env=plain_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"mpsocks.mptcp.{name}" in proc.stdout and "site-packages" in proc.stdout
    assert "WARNING" not in proc.stderr


def test_mpsocks_run_is_installed_with_its_playbooks(tmp_path):
    proc = subprocess.run([str(BIN / "mpsocks-run"), "host", "up", "--help"],
                          capture_output=True, text=True, env=plain_env(), cwd=tmp_path)
    assert proc.returncode == 0 and "--uplinks" in proc.stdout
    check = ("from mpsocks.playbook_run import data_file; "
             "print(data_file('playbooks/host_network.yml'), data_file('inventory/localhost.yml'))")
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=plain_env(),
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert all("site-packages/mpsocks/" in path for path in proc.stdout.split())


def test_galaxy_build(tmp_path):
    proc = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", str(COLLECTION),
                           "--output-path", str(tmp_path)], capture_output=True, text=True, env=plain_env())
    assert proc.returncode == 0, proc.stderr
    (artifact,) = tmp_path.glob("mpsocks-mptcp-*.tar.gz")
    with tarfile.open(artifact) as tar:
        names = set(tar.getnames())
    assert {"MANIFEST.json", "plugins/modules/tap.py", "plugins/connection/netns.py",
            "roles/host_network/meta/argument_specs.yml"} <= names
    assert not any("__pycache__" in name for name in names)
