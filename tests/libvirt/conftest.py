"""A real libvirtd for the libvirt tests, and a kernel that boots under it.

There is no init system here: virtlogd and libvirtd are started by hand (``-d``) when their sockets do
not answer, and only those are stopped at the end. /dev/kvm gets what Debian's udev rule gives it (group
kvm, mode 0660) for the session: with the kernel's root-only 0600, libvirtd finds that the QEMU it probed
with KVM "has no KVM now" and probes it again on every call, which made each define take 48 s here.

The kernel is Debian's cloud kernel, downloaded (``apt-get download``, not installed) and unpacked once
into a cache. Booted with no initrd and an empty disk it panics at "unable to mount root fs", but it
runs, and its boot lines reach the serial log: all these tests need.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

RUN_DIR = Path("/run/libvirt")
DAEMONS = (  # (program, its socket, its pid file), in start order: libvirtd logs through virtlogd
    ("virtlogd", RUN_DIR / "virtlogd-sock", Path("/run/virtlogd.pid")),
    ("libvirtd", RUN_DIR / "libvirt-sock", Path("/run/libvirtd.pid")),
)
KVM = Path("/dev/kvm")
KERNEL_CACHE = Path(tempfile.gettempdir()) / f"mpsocks-tests-{os.getuid()}" / "kernel"
KERNEL_META_PACKAGE = "linux-image-cloud-amd64"


def answers(path: Path) -> bool:
    """Whether a daemon accepts connections on unix socket PATH (a file left by a dead one does not)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
                return False
            raise
    return True


def start_daemon(program: str, sock: Path, pid_file: Path) -> int:
    """Start PROGRAM detached (``-d``); return its pid once SOCK answers."""
    if shutil.which(program) is None:
        pytest.fail(f"{program} is not installed: run runner/install.sh (it installs the libvirt packages)")
    proc = subprocess.run([program, "-d"], capture_output=True, text=True, timeout=30)
    if proc.returncode:
        pytest.fail(f"{program} -d failed: {(proc.stderr or proc.stdout).strip()}")
    deadline = time.monotonic() + 20
    while not answers(sock):
        if time.monotonic() > deadline:
            pytest.fail(f"{program} started but {sock} does not answer; see /var/log/libvirt/{program}.log")
        time.sleep(0.1)
    return int(pid_file.read_text().split()[0])


def stop_daemon(program: str, pid: int) -> None:
    """SIGTERM the daemon this session started (by pid, after checking that it is still that program)."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != program:
            return
        os.kill(pid, signal.SIGTERM)
    except (OSError, ProcessLookupError):
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            return
        if state == "Z":  # exited; no init here reaps it
            return
        time.sleep(0.1)


@contextlib.contextmanager
def kvm_for_the_kvm_group():
    """/dev/kvm as udev makes it (root:kvm 0660) while inside; put back as it was."""
    try:
        info = KVM.stat()
        gid = grp.getgrnam("kvm").gr_gid
    except (OSError, KeyError):
        yield
        return
    mode = stat.S_IMODE(info.st_mode)
    if info.st_gid == gid and mode & 0o060 == 0o060:
        yield
        return
    os.chown(KVM, -1, gid)
    os.chmod(KVM, mode | 0o060)
    try:
        yield
    finally:
        os.chown(KVM, -1, info.st_gid)
        os.chmod(KVM, mode)


@pytest.fixture(scope="session")
def libvirtd():
    """qemu:///system answering: virtlogd and libvirtd started if they are not running, stopped if started."""
    if os.geteuid() != 0:
        pytest.fail("the libvirt tests need root: run the README's test command")
    started = []
    with kvm_for_the_kvm_group():
        try:
            for program, sock, pid_file in DAEMONS:
                if not answers(sock):
                    started.append((program, start_daemon(program, sock, pid_file)))
            yield "qemu:///system"
        finally:
            for program, pid in reversed(started):
                stop_daemon(program, pid)


def _download_kernel() -> Path:
    """vmlinuz of the package linux-image-cloud-amd64 depends on, unpacked into KERNEL_CACHE."""
    depends = subprocess.run(["apt-cache", "depends", KERNEL_META_PACKAGE], capture_output=True, text=True)
    packages = [line.split(":", 1)[1].strip() for line in depends.stdout.splitlines()
                if line.strip().startswith("Depends:") and "linux-image-" in line]
    if not packages:
        pytest.fail(f"apt-cache knows no kernel behind {KERNEL_META_PACKAGE}: {depends.stderr.strip()}")
    work = Path(tempfile.mkdtemp(prefix="download.", dir=KERNEL_CACHE))
    try:
        for attempt in range(2):
            got = subprocess.run(["apt-get", "download", "-q", packages[0]], cwd=work, capture_output=True,
                                 text=True)
            if got.returncode == 0:
                break
            if attempt == 0:  # stale package lists name a version the mirror no longer has
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
        else:
            pytest.fail(f"apt-get download {packages[0]} failed: {got.stderr.strip()}")
        deb = next(work.glob("*.deb"))
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(work), "--wildcards", "./boot/vmlinuz-*"], stdin=tar.stdout,
                       check=True)
        tar.wait()
        kernel = next((work / "boot").glob("vmlinuz-*"))
        kernel.chmod(0o644)
        target = KERNEL_CACHE / kernel.name
        os.replace(kernel, target)
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def kernel() -> Path:
    """A bootable x86_64 kernel (cached across runs), in a folder the libvirt-qemu user can reach."""
    KERNEL_CACHE.mkdir(parents=True, exist_ok=True)
    for folder in (KERNEL_CACHE.parent, KERNEL_CACHE):
        folder.chmod(0o755)
    cached = sorted(KERNEL_CACHE.glob("vmlinuz-*"))
    return cached[-1] if cached else _download_kernel()


@pytest.fixture
def workdir():
    """A folder for a domain's disk image and serial log that the libvirt-qemu user can reach
    (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="mpsocks-libvirt."))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
