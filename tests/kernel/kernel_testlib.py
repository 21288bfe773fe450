"""What the kernel tests share: the role run as mpsocks-run runs it, and what a state folder holds."""

from __future__ import annotations

import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mpsocks_testlib import RECAP, REPO

sys.path.insert(0, str(REPO / "runner"))

from mpsocks.playbook_run import Play, RunOptions, run_playbook  # noqa: E402
from mpsocks.progress import Progress  # noqa: E402

PLAYBOOK = REPO / "playbooks" / "build_kernel.yml"
INVENTORY = REPO / "inventory" / "localhost.yml"
DEFAULT_STATE_DIR = Path("/var/lib/mpsocks")
#: The tests' compiles yield the CPU (the kernel does not depend on it: it is not part of the key).
NICE = 19


@dataclass
class RoleRun:
    rc: int | None
    output: str
    seconds: float
    calls: int

    def changed(self, host: str = "localhost") -> int:
        counts = {m[0]: int(m[2]) for m in RECAP.findall(self.output)}
        assert host in counts, f"no recap line for {host}:\n{self.output}"
        return counts[host]

    def failure(self) -> str:
        """The one line under the failed task."""
        lines = self.output.splitlines()
        failed = [n for n, line in enumerate(lines) if " failed " in line and line.lstrip()[:1].isdigit()]
        assert failed, f"no failed task:\n{self.output}"
        return lines[failed[0] + 1].strip()


def run_role(artifacts: Path, check: bool = False, **extravars) -> RoleRun:
    """playbooks/build_kernel.yml through mpsocks' runner and progress display (what mpsocks-run shows)."""
    out = io.StringIO()
    display = Progress(out, long_task=3600)
    extravars.setdefault("mpsocks_kernel_nice", NICE)
    start = time.monotonic()
    result = run_playbook("build_kernel", Play(PLAYBOOK, INVENTORY, extravars),
                          RunOptions(check=check, artifacts_dir=artifacts), display=display)
    seconds = time.monotonic() - start
    return RoleRun(result.rc, out.getvalue(), seconds, display.calls)


def kernel_keys(state_dir: Path) -> set[str]:
    """The kernels (finished or not) in STATE_DIR/kernel."""
    folder = state_dir / "kernel"
    return {p.name for p in folder.iterdir() if p.name != "inputs"} if folder.is_dir() else set()
