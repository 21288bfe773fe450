"""What the kernel tests share: the role run as mpsocks-run runs it, and what a state folder holds."""

from __future__ import annotations

from pathlib import Path

from mpsocks_testlib import REPO, RoleRun, run_with_progress

PLAYBOOK = REPO / "playbooks" / "build_kernel.yml"
DEFAULT_STATE_DIR = Path("/var/lib/mpsocks")
#: The tests' compiles yield the CPU (the kernel does not depend on it: it is not part of the key).
NICE = 19


def run_role(artifacts: Path, check: bool = False, **extravars) -> RoleRun:
    """playbooks/build_kernel.yml through mpsocks' runner and progress display (what mpsocks-run shows)."""
    extravars.setdefault("mpsocks_kernel_nice", NICE)
    return run_with_progress(PLAYBOOK, artifacts, extravars, check)


def kernel_keys(state_dir: Path) -> set[str]:
    """The kernels (finished or not) in STATE_DIR/kernel."""
    folder = state_dir / "kernel"
    return {p.name for p in folder.iterdir() if p.name != "inputs"} if folder.is_dir() else set()
