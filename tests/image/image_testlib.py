"""What the image tests share: the role run as mpsocks-run runs it, and a look inside an ext4 image."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from mpsocks_testlib import REPO, RoleRun, run_with_progress

BUILD_IMAGE = REPO / "playbooks" / "build_image.yml"
INSTALL_VM_EXTRA = REPO / "playbooks" / "install_vm_extra.yml"
DEFAULT_STATE_DIR = Path("/var/lib/mpsocks")
#: The tests' builds yield the CPU (the niceness is not part of the image's key).
NICE = 19
IMAGE_LINE = re.compile(r"(?:is cached|built image \S+ \(.*\) in \S+): (/\S+/disk\.img)$", re.M)


class ImageRun(RoleRun):
    def image(self) -> Path:
        found = IMAGE_LINE.search(self.output)
        assert found, self.output
        return Path(found.group(1))


def run_role(playbook: Path, artifacts: Path, check: bool = False, **extravars) -> ImageRun:
    """PLAYBOOK (build_image or install_vm_extra) through mpsocks' runner and progress display."""
    extravars.setdefault("mpsocks_image_nice", NICE)
    return run_with_progress(playbook, artifacts, extravars, check, run_class=ImageRun)


def debugfs(image: Path, request: str) -> str:
    """What ``debugfs -R REQUEST`` prints about IMAGE (opened read-only, never mounted)."""
    proc = subprocess.run(["debugfs", "-R", request, str(image)], capture_output=True, text=True)
    assert proc.returncode == 0, f"debugfs -R {request!r} {image}: {proc.stderr}"
    return proc.stdout


def names_in(image: Path, folder: str) -> set[str]:
    """The names in FOLDER of IMAGE (debugfs ``ls -p``: /inode/mode/uid/gid/name/size/)."""
    return {line.split("/")[5] for line in debugfs(image, f"ls -p {folder}").splitlines()
            if line.count("/") >= 6} - {".", ".."}


def exists(image: Path, path: str) -> bool:
    proc = subprocess.run(["debugfs", "-R", f"stat {path}", str(image)], capture_output=True, text=True)
    return "Inode:" in proc.stdout


def file_text(image: Path, path: str) -> str:
    assert exists(image, path), f"{path} is not in {image}"
    return debugfs(image, f"cat {path}")


def superblock(image: Path) -> dict[str, str]:
    """``dumpe2fs -h`` of IMAGE as a dict."""
    proc = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=True)
    return {key.strip(): value.strip() for key, _, value in
            (line.partition(":") for line in proc.stdout.splitlines()) if value}
