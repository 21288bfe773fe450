"""Role mptcp_kernel through playbooks/build_kernel.yml as mpsocks-run runs it: first on the fake source
(progress, cache, check mode in seconds), then the real default kernel (one build per session)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import fake_kernel
import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.build_cache import read_json
from ansible_collections.mpsocks.mptcp.plugins.module_utils.kernel_build import (
    job_running,
    parse_config,
    parse_fragment,
)
from kernel_testlib import DEFAULT_STATE_DIR, NICE, kernel_keys, run_role

KERNEL_LINE = re.compile(r"kernel (\S+): (/\S+/bzImage)$", re.M)
RETRY = re.compile(r"^\s*\d+\.\ds retrying    \[localhost\] (?:mpsocks\.mptcp\.)?mptcp_kernel : "
                   r"Compile the kernel: (\d+) (?:of about \d+ )?objects built in (?:\d+m)?\d+s$", re.M)
ROLE_FRAGMENT = parse_fragment(fake_kernel.ROLE_FRAGMENT.read_text(), "role")


def image_of(output: str) -> tuple[str, Path]:
    found = KERNEL_LINE.search(output)
    assert found, output
    return found.group(1), Path(found.group(2))


# --- the fake source -----------------------------------------------------------------------------

@pytest.fixture
def fake(tmp_path, build_tools):
    return {"mpsocks_state_dir": str(tmp_path / "state"), "mpsocks_kernel_poll_seconds": 1,
            "mpsocks_kernel_tarball": str(fake_kernel.write_tarball(tmp_path / "linux-fake.tar.xz"))}


def test_progress_shows_objects_built_then_a_rerun_changes_nothing(tmp_path, fake):
    slow = ["CONFIG_FAKE_OBJECTS=40", 'CONFIG_FAKE_DELAY="0.1"']
    first = run_role(tmp_path / "runs", mpsocks_kernel_fragment=slow, **fake)
    print(first.output)
    assert first.rc == 0 and first.changed() == 2, first.output
    counts = [int(n) for n in RETRY.findall(first.output)]
    assert counts and counts == sorted(counts) and counts[-1] <= 41, first.output
    release, image = image_of(first.output)
    assert release == fake_kernel.RELEASE and image.is_file()

    again = run_role(tmp_path / "runs", mpsocks_kernel_fragment=slow, **fake)
    print(f"cached (fake) kernel: {again.seconds:.1f} s, {again.calls} module call(s)")
    assert again.rc == 0 and again.changed() == 0 and again.calls == 1, again.output
    assert image_of(again.output) == (release, image)


def test_a_fragment_file_on_the_host_is_merged_last(tmp_path, fake):
    fragment = tmp_path / "mine.config"
    fragment.write_text("# CONFIG_NET_SCH_NETEM is not set\nCONFIG_FAKE_OBJECTS=2\n")
    run = run_role(tmp_path / "runs", mpsocks_kernel_fragment=str(fragment), **fake)
    assert run.rc == 0, run.output
    config = parse_config((image_of(run.output)[1].parent / "config").read_text())
    assert "CONFIG_NET_SCH_NETEM" not in config and config["CONFIG_FAKE_OBJECTS"] == "2"
    assert config["CONFIG_MPTCP"] == "y"


def test_check_mode_on_new_inputs_predicts_a_build_and_builds_nothing_fake(tmp_path, fake):
    run = run_role(tmp_path / "runs", check=True, **fake)
    assert run.rc == 0 and run.changed() == 1, run.output
    assert "would configure and build a kernel from linux-fake.tar.xz" in run.output
    assert not Path(fake["mpsocks_state_dir"]).exists()


# --- the real default kernel (built once per session, into the default state folder) -------------

def test_default_kernel_build(default_kernel):
    """The session's build: its time, and the progress lines it showed."""
    run = default_kernel["run"]
    release, image = image_of(run.output)
    info = json.loads((image.parent / "kernel.json").read_text())
    print(f"default kernel {release} ({info['source']['label']}): make -j{info['jobs']} bzImage took "
          f"{info['build_seconds']} s at nice {NICE} for {info['objects']} objects, "
          f"{info['image_bytes']} bytes; "
          f"this run {'built it' if default_kernel['built'] else 'found it cached'} in {run.seconds:.1f} s")
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "linux-source-6.1"],
                             capture_output=True, text=True, check=True).stdout
    assert info["source"]["kind"] == "package" and info["source"]["package"] == "linux-source-6.1"
    assert info["source"]["version"] == version and info["key"].startswith(f"linux-source-6.1_{version}-")
    assert release.startswith("6.1.")
    assert image.parent.parent == DEFAULT_STATE_DIR / "kernel" and image.parent.name == info["key"]
    if default_kernel["built"]:
        counts = [int(n) for n in RETRY.findall(run.output)]
        assert counts and counts == sorted(counts) and counts[-1] > 100, run.output


def test_second_run_changes_nothing_in_seconds(default_kernel):
    run = run_role(default_kernel["artifacts"])
    print(f"no-op run of build_kernel.yml: {run.seconds:.1f} s, {run.calls} module call(s)")
    assert run.rc == 0 and run.changed() == 0, run.output
    assert run.calls == 1 and run.seconds < 20, run.output
    assert image_of(run.output) == image_of(default_kernel["run"].output)


def test_final_config_holds_every_option_the_role_asks(default_kernel):
    image = image_of(default_kernel["run"].output)[1]
    config = parse_config((image.parent / "config").read_text())
    for option, value in ROLE_FRAGMENT.items():
        assert config.get(option, "n") == value, option
    for option in ("CONFIG_MPTCP", "CONFIG_MPTCP_IPV6", "CONFIG_BLOCK", "CONFIG_VIRTIO_BLK", "CONFIG_EXT4_FS",
                   "CONFIG_VIRTIO_NET", "CONFIG_IP_MULTIPLE_TABLES", "CONFIG_NFT_NAT", "CONFIG_NFT_REDIR",
                   "CONFIG_NFT_MASQ", "CONFIG_NET_SCH_TBF", "CONFIG_NET_SCH_NETEM", "CONFIG_DEVTMPFS_MOUNT",
                   "CONFIG_SERIAL_8250_CONSOLE"):
        assert config.get(option) == "y", option
    assert "CONFIG_MODULES" not in config and "CONFIG_BLK_DEV_INITRD" not in config


def test_the_image_is_an_x86_boot_executable(default_kernel):
    release, image = image_of(default_kernel["run"].output)
    described = subprocess.run(["file", "-b", str(image)], capture_output=True, text=True, check=True).stdout
    assert described.startswith("Linux kernel x86 boot executable bzImage"), described
    assert f"version {release} " in described


def test_the_kernel_boots_under_qemu_to_the_root_mount(default_kernel):
    release, image = image_of(default_kernel["run"].output)
    start = time.monotonic()
    proc = subprocess.run(["qemu-system-x86_64", "-accel", "tcg", "-M", "pc", "-m", "256",
                           "-kernel", str(image), "-append", "console=ttyS0 panic=-1", "-nographic",
                           "-no-reboot", "-nodefaults", "-serial", "stdio"],
                          capture_output=True, text=True, timeout=120)
    took = time.monotonic() - start
    serial = proc.stdout
    print(f"qemu (TCG, pc) boot to the root-mount panic: {took:.1f} s")
    assert f"Linux version {release} " in serial, serial[-3000:]
    assert "MPTCP token hash table entries" in serial, serial[-3000:]
    assert "VFS: Unable to mount root fs" in serial, serial[-3000:]


def test_an_unknown_option_fails_before_compiling_and_caches_nothing(default_kernel):
    before = kernel_keys(DEFAULT_STATE_DIR)
    run = run_role(default_kernel["artifacts"], mpsocks_kernel_fragment=["CONFIG_DOES_NOT_EXIST=y"])
    assert run.rc != 0, run.output
    assert re.fullmatch(r"CONFIG_DOES_NOT_EXIST \(fragment mpsocks_kernel_fragment\): no such option in the "
                        r"Kconfig files of linux-source-6\.1 \S+", run.failure()), run.output
    assert kernel_keys(DEFAULT_STATE_DIR) == before
    assert not any(job_running(read_json(job)) for job in DEFAULT_STATE_DIR.glob("build/*/job.json"))


def test_an_option_olddefconfig_drops_fails_naming_it(default_kernel):
    before = kernel_keys(DEFAULT_STATE_DIR)
    run = run_role(default_kernel["artifacts"], mpsocks_kernel_fragment=["CONFIG_SCSI_VIRTIO=y"])
    print(run.failure())
    assert run.rc != 0, run.output
    assert re.fullmatch(r"CONFIG_SCSI_VIRTIO=y was asked but the final \.config has it unset "
                        r"\(drivers/scsi/Kconfig:\d+: .*unset: .*\bSCSI\b.*\)", run.failure()), run.output
    assert kernel_keys(DEFAULT_STATE_DIR) == before
    assert not any(job_running(read_json(job)) for job in DEFAULT_STATE_DIR.glob("build/*/job.json"))


def config_times() -> dict:
    return {path: path.stat().st_mtime_ns for path in DEFAULT_STATE_DIR.glob("build/*/out/.config")}


def test_check_mode_on_a_fresh_key_predicts_a_build_and_builds_nothing(default_kernel):
    before = kernel_keys(DEFAULT_STATE_DIR)
    configs = config_times()
    run = run_role(default_kernel["artifacts"], check=True, mpsocks_kernel_fragment=["CONFIG_NET_SCH_PRIO=y"])
    assert run.rc == 0 and run.changed() == 1, run.output
    assert "would configure and build a kernel from linux-source-6.1" in run.output
    assert kernel_keys(DEFAULT_STATE_DIR) == before
    assert config_times() == configs
    assert not any(job_running(read_json(job)) for job in DEFAULT_STATE_DIR.glob("build/*/job.json"))
