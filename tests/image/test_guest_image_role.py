"""Role guest_image through playbooks/build_image.yml and install_vm_extra.yml as mpsocks-run runs them.

The real image is built once per session (fixture default_image, into /var/lib/mpsocks, where the VM
tests find it); the other tests are cheap: check mode, errors that come before any build, a failed
debootstrap against a mirror that does not exist, a look inside the image with debugfs, and one boot of
the image under TCG with its own (Debian) kernel, reached over ssh with the generated key.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.guest_image import (
    host_release_source,
    host_sources,
)
from image_testlib import (
    BUILD_IMAGE,
    INSTALL_VM_EXTRA,
    debugfs,
    exists,
    file_text,
    names_in,
    run_role,
    superblock,
)
from mpsocks_testlib import run_module

BOOT_LIMIT = 120  # seconds from qemu's start to an ssh login under TCG (about 45 s here, the machine shared)


# --- without building anything ---------------------------------------------------------------------

def test_the_host_apt_sources_give_the_suite_and_mirror(tmp_path):
    one_line = tmp_path / "sources.list"
    one_line.write_text("# a comment\ndeb-src http://deb.example/debian bookworm main\n"
                        "deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] https://deb.example/debian "
                        "bookworm-updates main\n"
                        "deb [signed-by=/usr/share/keyrings/x.gpg] https://deb.example/debian "
                        "bookworm main\n")
    deb822 = tmp_path / "extra.sources"
    deb822.write_text("Types: deb\nURIs: https://packages.example/apt\nSuites: nodistro\nComponents: main\n\n"
                      "Types: deb\nURIs: http://mirror.example/debian\nSuites: trixie trixie-updates\n"
                      "Components: main\nEnabled: no\n\n"
                      "Types: deb deb-src\n# comment\nURIs: http://mirror.example/debian\n"
                      "Suites: trixie-security trixie\nComponents: main contrib\n"
                      "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    scripts = tmp_path / "debootstrap-scripts"
    scripts.mkdir()
    for suite in ("sid", "bookworm", "trixie"):
        (scripts / suite).write_text("")
    found = host_release_source(host_sources([str(one_line), str(deb822)]), scripts=str(scripts))
    assert found["uri"] == "https://deb.example/debian" and found["suite"] == "bookworm"
    assert found["signed_by"] == "/usr/share/keyrings/x.gpg"
    found = host_release_source(host_sources([str(deb822)]), scripts=str(scripts))
    assert (found["uri"], found["suite"]) == ("http://mirror.example/debian", "trixie")
    assert found["components"] == ["main", "contrib"]
    # nodistro: no debootstrap script
    assert host_release_source(host_sources([str(deb822)])[:1], scripts=str(scripts)) is None
    # before debootstrap is installed: the first source that looks like Debian's
    found = host_release_source(host_sources([str(deb822)]), scripts=str(tmp_path / "none"))
    assert (found["uri"], found["suite"]) == ("http://mirror.example/debian", "trixie")


def test_check_mode_with_a_fresh_key_builds_nothing(tmp_path, build_tools):
    state = tmp_path / "state"
    run = run_role(BUILD_IMAGE, tmp_path / "runs", check=True, mpsocks_state_dir=str(state))
    print(f"check mode, fresh state folder: {run.seconds:.1f} s, {run.calls} module call(s)")
    assert run.rc == 0 and run.changed() == 1, run.output
    assert f"would make ssh key {state}/ssh/id_ed25519 and build the base image layer of" in run.output
    assert not state.exists()


def test_a_suite_debootstrap_does_not_know_fails_in_one_line(tmp_path, build_tools):
    state = tmp_path / "state"
    run = run_role(BUILD_IMAGE, tmp_path / "runs", mpsocks_state_dir=str(state),
                   mpsocks_image_suite="nosuchsuite")
    line = run.failure()
    print(line)
    assert run.rc != 0 and "suite 'nosuchsuite': debootstrap knows no such release" in line
    assert not state.exists()


@contextlib.contextmanager
def small_tmpfs(size: str):
    """A tmpfs of SIZE mounted on a new folder while inside; unmounted and removed afterwards."""
    where = Path(tempfile.mkdtemp(prefix="mpsocks-image-tmpfs."))
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "mpsocks-test", str(where)],
                       check=True, capture_output=True)
        try:
            yield where
        finally:
            subprocess.run(["umount", str(where)], check=True, capture_output=True)
    finally:
        where.rmdir()


def test_too_little_disk_fails_before_building_and_leaves_nothing(tmp_path, build_tools):
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs: run it as root")
    with small_tmpfs("64m") as state:
        run = run_role(BUILD_IMAGE, tmp_path / "runs", mpsocks_state_dir=str(state))
        line = run.failure()
        print(line)
        assert run.rc != 0, run.output
        assert f"not enough disk space for the guest image in {state}: it needs 3.5 GiB (2.0 GiB for the " \
               "image, which the guest may fill, and 1.5 GiB to build it), 64.0 MiB is free" in line
        assert list(state.iterdir()) == []


def test_an_image_larger_than_the_free_space_fails_in_check_mode_too(tmp_path, build_tools):
    result = run_module("guest_image", check=True, state_dir=str(tmp_path / "state"), size="64T")
    assert result.get("failed"), result
    assert result["msg"].startswith("not enough disk space for the guest image in ")
    assert "it needs 64.0 TiB" in result["msg"] and "\n" not in result["msg"]
    assert not (tmp_path / "state").exists()


# --- the real image (built once per session) -------------------------------------------------------

def test_default_image_build(default_image):
    """The session's build: its time and the image's size (printed)."""
    image, info, base = default_image["image"], default_image["info"], default_image["base"]
    allocated = image.stat().st_blocks * 512
    print(f"image {image}: {info['size'] >> 20} MiB sparse, {allocated >> 20} MiB allocated, "
          f"{info['used_bytes'] >> 20} MiB of files; base layer {base['build_seconds']} s, extras layer "
          f"{info['build_seconds']} s (nice 19, shared machine)")
    assert image.stat().st_size == info["size"] == 2 << 30
    assert allocated < info["size"] // 2  # sparse
    assert info["layer"] == "extras" and base["layer"] == "base"


def test_a_second_run_changes_nothing_in_seconds(default_image):
    artifacts = default_image["artifacts"]
    again = run_role(INSTALL_VM_EXTRA, artifacts)
    print(f"cached image (install_vm_extra.yml): {again.seconds:.1f} s, {again.calls} module call(s)")
    assert again.rc == 0 and again.changed() == 0 and again.calls == 1, again.output
    assert again.image() == default_image["image"]

    base = run_role(BUILD_IMAGE, artifacts)
    print(f"cached image (build_image.yml): {base.seconds:.1f} s, {base.calls} module call(s)")
    assert base.rc == 0 and base.changed() == 0 and base.calls == 1, base.output
    assert base.image() == default_image["base_image"]

    check = run_role(INSTALL_VM_EXTRA, artifacts, check=True)
    assert check.rc == 0 and check.changed() == 0, check.output
    assert again.seconds < 20


def test_a_cached_image_needs_no_build_tools_and_missing_ones_are_named(default_image, tmp_path, monkeypatch):
    """The module called directly with the role's inputs (from image.json) finds the session's image even
    where debootstrap, mkfs.ext4 and chroot are not on the PATH; a build there names what to install."""
    base, extras = default_image["base"]["inputs"], default_image["info"]["inputs"]
    params = {name: base[name] for name in ("suite", "mirror", "keyring", "packages", "python_packages",
                                            "hostname", "serial_autologin", "disabled_units", "files",
                                            "distro_kernel")}
    params.update(size=str(base["size"]), extra_packages=extras["extra_packages"],
                  state_dir=str(default_image["state_dir"]))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # not /usr/sbin: no debootstrap, mkfs.ext4, chroot
    found = run_module("guest_image", **params)
    assert not found.get("failed") and not found["changed"] and found["cached"], found
    assert found["image"] == str(default_image["image"])
    params["state_dir"] = str(tmp_path / "state")
    missing = run_module("guest_image", missing_packages="report", **params)
    assert {"debootstrap", "e2fsprogs"} <= set(missing["missing_packages"]), missing
    failed = run_module("guest_image", **params)
    assert failed.get("failed"), failed
    assert "apt-get install --no-install-recommends debootstrap" in failed["msg"]
    assert not (tmp_path / "state").exists()


def test_the_key_is_the_projects_own(default_image):
    key = default_image["state_dir"] / "ssh" / "id_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    public = " ".join((key.parent / "id_ed25519.pub").read_text().split()[:2])
    assert public.startswith("ssh-ed25519 ") and public == default_image["info"]["ssh_public_key"]
    for image in (default_image["image"], default_image["base_image"]):
        authorized = file_text(image, "/root/.ssh/authorized_keys")
        assert authorized.split()[:2] == public.split(), authorized
        assert re.search(r"Mode:\s+0600\b", debugfs(image, "stat /root/.ssh/authorized_keys"))
        assert re.search(r"Mode:\s+0700\b", debugfs(image, "stat /root/.ssh"))


def test_a_failed_build_leaves_no_image_but_a_key_of_its_own(tmp_path, default_image):
    """debootstrap fails against a mirror that does not exist: one line, no image, no temporary folder;
    the key made for this state folder is not the default state folder's."""
    state = tmp_path / "state"
    result = run_module("guest_image", state_dir=str(state), mirror="file:///nonexistent/debian",
                        suite="bookworm", nice=19)
    assert result.get("failed"), result
    print(result["msg"])
    assert result["msg"].startswith("debootstrap bookworm from file:///nonexistent/debian failed")
    assert "\n" not in result["msg"]
    images = state / "image"
    assert sorted(p.name for p in images.iterdir()) == ["cache", "last-failed-build.log"]
    key = state / "ssh" / "id_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    default = default_image["state_dir"] / "ssh" / "id_ed25519"
    assert key.read_text() != default.read_text()
    public = (key.parent / "id_ed25519.pub").read_text().split()[1]
    assert public != default_image["info"]["ssh_public_key"].split()[1]


def test_a_killed_builds_leftovers_go_without_harm_to_what_was_mounted_in_them(tmp_path, default_image):
    """A build killed half way leaves a temporary folder, maybe with debootstrap's mounts in it (its /dev
    can be the host's, bound): the next build unmounts them and removes the folder, and never deletes
    through a mount into the host's files."""
    state = tmp_path / "state"
    leftover = state / "image" / ".build-bookworm-base-000000000000.1"
    (leftover / "tree" / "dev").mkdir(parents=True)
    (leftover / "tree" / "etc").mkdir()
    (leftover / "tree" / "etc" / "hostname").write_text("half-made\n")
    hosts_files = tmp_path / "host-files"
    hosts_files.mkdir()
    (hosts_files / "precious").write_text("do not delete\n")
    subprocess.run(["mount", "--bind", str(hosts_files), str(leftover / "tree" / "dev")], check=True)
    try:
        result = run_module("guest_image", state_dir=str(state), mirror="file:///nonexistent/debian",
                            suite="bookworm", nice=19)
        assert result.get("failed") and "debootstrap bookworm" in result["msg"], result
        assert not leftover.exists()
        assert (hosts_files / "precious").read_text() == "do not delete\n"
    finally:
        subprocess.run(["umount", "-l", str(leftover / "tree" / "dev")], capture_output=True)
    assert not any(str(leftover) in line for line in Path("/proc/self/mountinfo").read_text().splitlines())


def test_the_image_holds_what_the_guest_needs(default_image):
    image, base_image = default_image["image"], default_image["base_image"]
    sb = superblock(image)
    assert sb["Filesystem volume name"] == "mpsocks-root"
    assert int(sb["Block count"]) * int(sb["Block size"]) == 2 << 30
    for path in ("/usr/sbin/sshd", "/usr/bin/python3.11", "/usr/sbin/ip", "/usr/sbin/nft", "/usr/bin/curl",
                 "/usr/bin/tcpdump", "/usr/lib/systemd/systemd", "/usr/sbin/danted", "/usr/sbin/redsocks",
                 "/usr/bin/mptcpize", "/etc/ssh/ssh_host_ed25519_key",
                 "/usr/local/lib/python3.11/dist-packages/pyroute2/__init__.py"):
        assert exists(image, path), path
    assert "python3.11" in debugfs(image, "stat /usr/bin/python3")  # the symlink's target
    assert not exists(base_image, "/usr/sbin/danted")  # the extras are a layer of their own
    assert exists(base_image, "/usr/local/lib/python3.11/dist-packages/pyroute2/__init__.py")
    compiled = names_in(image, "/usr/local/lib/python3.11/dist-packages/pyroute2/__pycache__")
    assert any(name.startswith("__init__.cpython-311") for name in compiled)

    assert file_text(image, "/etc/fstab").splitlines()[-1].split() == \
        ["/dev/vda", "/", "ext4", "defaults,errors=remount-ro", "0", "1"]
    assert file_text(image, "/etc/hostname").strip() == "mpsocks-guest"
    autologin = file_text(image, "/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf")
    assert "--autologin root" in autologin
    # and on the console, the serial login of a VM booted without udev (role guest_vm)
    autologin = file_text(image, "/etc/systemd/system/console-getty.service.d/autologin.conf")
    assert "--autologin root" in autologin and " - " in autologin
    assert "serial-getty@ttyS0.service" in names_in(image, "/etc/systemd/system/getty.target.wants")
    assert "PasswordAuthentication no" in file_text(image, "/etc/ssh/sshd_config.d/mpsocks.conf")
    assert "/dev/null" in debugfs(image, "stat /etc/systemd/network/99-default.link")  # eth0, eth1 ...
    assert "Storage=volatile" in file_text(image, "/etc/systemd/journald.conf.d/mpsocks.conf")
    # the config drive's boot script, its unit, and the first process that starts it before systemd
    assert "mpsocks-config-drive.service" in names_in(image, "/etc/systemd/system/multi-user.target.wants")
    assert "/usr/local/lib/mpsocks/config-drive.py --early" in file_text(image, "/usr/local/lib/mpsocks/init")
    assert "Mode:  0755" in debugfs(image, "stat /usr/local/lib/mpsocks/init")

    # sshd at boot, never waiting for the network to be "online"
    assert "ssh.service" in names_in(image, "/etc/systemd/system/multi-user.target.wants")
    unit = file_text(image, "/usr/lib/systemd/system/ssh.service")
    assert "network-online" not in unit and "After=network.target" in unit
    # what the guest does not need at boot is off
    enabled = set()
    for wants in ("timers", "multi-user", "getty", "sysinit"):
        enabled |= names_in(image, f"/etc/systemd/system/{wants}.target.wants")
    off = {"apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
           "fstrim.timer", "e2scrub_reap.service", "getty@tty1.service", "getty-static.service",
           "danted.service", "redsocks.service"}
    assert not enabled & off, enabled & off
    for unit in ("getty-static.service", "modprobe@loop.service", "danted.service"):  # masked: never started
        assert "/dev/null" in debugfs(image, f"stat /etc/systemd/system/{unit}"), unit
    # no package lists or .debs left in the image
    assert not {name for name in names_in(image, "/var/cache/apt/archives") if name.endswith(".deb")}
    assert not {name for name in names_in(image, "/var/lib/apt/lists") if name.endswith("_Packages")}

    info = default_image["info"]
    assert info["python_packages"]["pyroute2"] >= "0.9.7"
    assert info["host_key"] == " ".join(file_text(image, "/etc/ssh/ssh_host_ed25519_key.pub").split()[:2])
    assert info["kernel_release"]
    assert (image.parent / "vmlinuz").is_file() and (image.parent / "initrd.img").is_file()


# --- the image boots (TCG, its own Debian kernel) and answers ssh with the generated key -----------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_image_boots_under_tcg_and_answers_ssh_with_the_key(default_image, tmp_path):
    """Under TCG (KVM hangs here), with the image's own kernel and initrd; user-mode networking with a
    static address given on the command line (the image has no network configuration of its own: that is
    the guest roles' work), the disk opened with snapshot=on so the cached image is left unchanged."""
    image, info = default_image["image"], default_image["info"]
    port = free_port()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {info['host_key']}\n")
    serial = tmp_path / "serial.log"
    cmdline = ("root=/dev/vda rw console=ttyS0 systemd.wants=systemd-network-generator.service "
               "systemd.wants=systemd-networkd.service ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off")
    qemu = ["qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "2", "-nodefaults",
            "-no-user-config", "-display", "none", "-serial", f"file:{serial}",
            "-kernel", str(image.parent / "vmlinuz"),
            "-initrd", str(image.parent / "initrd.img"), "-append", cmdline,
            "-drive", f"file={image},format=raw,if=virtio,snapshot=on",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22", "-device", "virtio-net-pci,netdev=n0"]
    ssh = ["ssh", "-i", str(info["ssh_key"]), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
           "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes", "-p", str(port),
           "root@127.0.0.1"]
    before = image.stat().st_mtime
    start = time.monotonic()
    proc = subprocess.Popen(qemu, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        answer = None
        while time.monotonic() - start < BOOT_LIMIT and proc.poll() is None:
            got = subprocess.run(ssh + ["cat /proc/uptime; uname -r; systemctl is-system-running; "
                                        "systemd-analyze 2>&1 | head -1"], capture_output=True, text=True)
            if got.returncode == 0:
                answer = got.stdout
                break
            time.sleep(2)
        took = time.monotonic() - start
        tail = serial.read_text(errors="replace")[-1500:] if serial.exists() else ""
        state = "runs" if proc.poll() is None else f"exited {proc.returncode}"
        assert answer is not None, f"no ssh answer in {BOOT_LIMIT} s (qemu {state}); serial console:\n{tail}"
        print(f"TCG boot of {image.parent.name} with its kernel {info['kernel_release']}: ssh answered after "
              f"{took:.1f} s (qemu at the tests' niceness, the machine shared); guest says:\n{answer}")
        assert answer.splitlines()[1] == info["kernel_release"]
        deadline = time.monotonic() + 30
        while "root@mpsocks-guest" not in serial.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(1)
        assert "root@mpsocks-guest" in serial.read_text(errors="replace")  # autologin on the serial console
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert image.stat().st_mtime == before  # snapshot=on: the cached image is unchanged
    assert json.loads((image.parent / "image.json").read_text())["key"] == info["key"]
