"""Helpers the tests share: run a module for real, make namespaces, snapshot state."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLLECTION = REPO / "collection"
_counter = itertools.count()


def collections_root() -> Path:
    """A folder whose ansible_collections/mpsocks/mptcp is this checkout's collection."""
    root = Path(tempfile.gettempdir()) / f"mpsocks-tests-{os.getuid()}" / "collections"
    link = root / "ansible_collections" / "mpsocks" / "mptcp"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink() or link.resolve() != COLLECTION:
        tmp = link.with_name(f".mptcp-{os.getpid()}")
        tmp.symlink_to(COLLECTION)
        os.replace(tmp, link)
    return root


def unique_name(prefix: str) -> str:
    """A name no other test run on this machine uses at the same time."""
    return f"{prefix}{os.getpid() % 100000}x{next(_counter)}"


def sh(*argv: str, netns: str | None = None, check: bool = True) -> str:
    """Run a command (inside NETNS if given) and return its stdout."""
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc.stdout


def run_module(module: str, /, check: bool = False, diff: bool = True, **params) -> dict:
    """Run collection MODULE as Ansible would (a fresh Python process) with PARAMS."""
    args = {"ANSIBLE_MODULE_ARGS": dict(params, _ansible_check_mode=check, _ansible_diff=diff)}
    with tempfile.NamedTemporaryFile("w", suffix=".json") as handle:
        json.dump(args, handle)
        handle.flush()
        proc = subprocess.run(
            [sys.executable, str(COLLECTION / "plugins" / "modules" / f"{module}.py"), handle.name],
            capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=str(collections_root())),
        )
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"module {module} printed no JSON: {proc.stdout}{proc.stderr}")


def netns_names() -> set[str]:
    """Names of the namespaces ``ip netns`` knows."""
    return {line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.strip()}


def _sysctls(netns: str | None) -> str:
    """The forwarding and MPTCP sysctls the project may touch."""
    return sh("sh", "-c", "sysctl -a 2>/dev/null | grep -E '(forwarding|rp_filter|mptcp)' | sort",
              netns=netns)


def snapshot(netns: str | None = None) -> dict:
    """Everything the project could change in a namespace, as comparable text."""
    return {
        "links": sh("ip", "-d", "link", "show", netns=netns),
        "addresses": sh("ip", "addr", "show", netns=netns),
        "rules": sh("ip", "rule", "show", netns=netns) + sh("ip", "-6", "rule", "show", netns=netns),
        "routes": sh("ip", "route", "show", "table", "all", netns=netns)
        + sh("ip", "-6", "route", "show", "table", "all", netns=netns),
        "nft": sh("nft", "list", "ruleset", netns=netns),
        "mptcp": sh("ip", "mptcp", "endpoint", "show", netns=netns)
        + sh("ip", "mptcp", "limits", "show", netns=netns),
        "sysctl": _sysctls(netns),
    }
