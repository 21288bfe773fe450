"""Test set-up: the collection comes from this checkout; the root namespace stays untouched."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mpsocks_testlib import (
    CREATED,
    collections_root,
    delete_uplinks,
    make_uplinks,
    netns_names,
    sh,
    snapshot,
    unique_name,
)

_ROOT = collections_root()
sys.path.insert(0, str(_ROOT))
os.environ["ANSIBLE_COLLECTIONS_PATH"] = str(_ROOT)
os.environ["ANSIBLE_NOCOLOR"] = "1"


def _is_root() -> bool:
    return os.geteuid() == 0


@pytest.fixture(scope="session", autouse=True)
def root_namespace_untouched():
    """Fail the session if any test changed the machine's own namespace."""
    if not _is_root():
        yield
        return
    before = snapshot()
    yield
    after = snapshot()
    for key in before:
        assert after[key] == before[key], f"tests changed the root namespace's {key}"
    left = netns_names() & CREATED
    assert not left, f"tests left namespaces behind: {sorted(left)}"


@pytest.fixture
def netns():
    """A fresh, empty network namespace (lo up), deleted afterwards."""
    if not _is_root():
        pytest.fail("this test needs root: run the README's test command")
    name = unique_name("mpst")
    subprocess.run(["ip", "netns", "add", name], check=True)
    sh("ip", "link", "set", "lo", "up", netns=name)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def uplinks(netns):
    """Two veth uplinks with gateways and default routes inside ``netns``."""
    made = make_uplinks(netns, 2)
    try:
        yield made
    finally:
        delete_uplinks(made)
