"""Test set-up: the collection comes from this checkout; the root namespace stays untouched."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mpsocks_testlib import (
    collections_root,
    created_namespaces,
    delete_uplinks,
    leaked_processes,
    make_uplinks,
    sh,
    snapshot,
    start_capture,
    stop_capture,
    unique_name,
)

_ROOT = collections_root()
sys.path.insert(0, str(_ROOT))
os.environ["ANSIBLE_COLLECTIONS_PATH"] = str(_ROOT)
os.environ["ANSIBLE_NOCOLOR"] = "1"


def _is_root() -> bool:
    return os.geteuid() == 0


#: Every address block the tests use; none of it may ever appear on the machine's real interface.
TEST_NETWORKS = ("198.18.0.0/15", "10.66.0.0/16", "10.199.0.0/16", "192.168.42.0/24", "fd66::/16",
                 "2001:db8::/32")
OUTSIDE = "eth0"


@contextlib.contextmanager
def hermetic_capture(path: Path):
    """Capture on the machine's real interface into PATH while inside; yields a function listing leaks."""
    bpf = " or ".join(f"net {network}" for network in TEST_NETWORKS)
    proc = start_capture(OUTSIDE, path, bpf)
    try:
        yield lambda: sh("tcpdump", "-n", "-r", str(path))
    finally:
        stop_capture(proc)


@pytest.fixture(scope="session", autouse=True)
def root_namespace_untouched(tmp_path_factory):
    """Fail the session if any test changed the machine's own namespace."""
    if not _is_root():
        yield
        return
    before = snapshot()
    with hermetic_capture(tmp_path_factory.mktemp("hermetic") / "outside.pcap") as leaked:
        yield
    after = snapshot()
    assert not leaked(), f"test traffic left the machine on {OUTSIDE}:\n{leaked()}"
    for key in before:
        assert after[key] == before[key], f"tests changed the root namespace's {key}"
    left = created_namespaces()
    assert not left, f"tests left namespaces behind: {sorted(left)}"
    running = leaked_processes()
    assert not running, f"tests left processes behind: {running}"


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
