"""mpsocks.mptcp.virt_accelerator: its pure functions, and real probes with real QEMU on this machine.

On these machines /dev/kvm opens but a KVM guest hangs before its kernel prints anything
(/work/shared/ENVIRONMENT.md), so the module's automatic answer here is TCG. The probe's kernel is a copy
of the project's own bzImage under a folder of this test run, so that its path in a command line tells
this run's probe processes from any other QEMU on the machine.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils import accelerator as acc
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from mpsocks_testlib import run_module

KERNELS = "/var/lib/mpsocks/kernel/*/bzImage"
TIMEOUT = 8
HANG = f"a KVM guest's kernel printed nothing in {TIMEOUT} s"
WARNING = f"KVM does not work here ({HANG}): using TCG, about ten times slower"
SEABIOS = b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\nBooting from ROM..\x1bc"
BOOT = b"[    0.000000] Linux version 6.1.192 (root@vm) (gcc (Debian 12.2.0-14+deb12u1) 12.2.0) #2 SMP\r\n"


@pytest.fixture(scope="module")
def bzimage(tmp_path_factory) -> Path:
    """A copy of the project's kernel (built by mpsocks.mptcp.kernel_build), at a path of this run's own."""
    found = sorted(glob.glob(KERNELS))
    if not found:
        pytest.fail(f"no kernel matches {KERNELS}: build one first (mpsocks.mptcp.kernel_build, as the "
                    "kernel tests do); the probe needs a bzImage")
    copy = tmp_path_factory.mktemp("accelerator") / "bzImage"
    shutil.copyfile(found[-1], copy)
    return copy


def probe_processes(kernel: Path) -> dict[int, str]:
    """pid -> command line of every process whose command line names KERNEL (this run's copy)."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(kernel) in cmdline and "qemu" in cmdline:
                found[int(entry.name)] = cmdline
    return found


@pytest.fixture
def no_probe_left(bzimage):
    """Fails the test if a probe QEMU of this run outlives the call that started it (and kills it: the
    kernel path in its command line is this run's own)."""
    yield
    left = probe_processes(bzimage)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"probe processes left running: {left}"


def identity() -> dict:
    """This host's identity as the module computes it."""
    return acc.host_identity(shutil.which("qemu-system-x86_64"))


def accelerator(check=False, **params):
    """Run the module as Ansible would; return its result and how long the call took."""
    started = time.monotonic()
    result = run_module("virt_accelerator", check=check, **params)
    return result, time.monotonic() - started


def warnings(result) -> list[str]:
    """The texts of RESULT's warnings (ansible-core 2.19 gives each as a dict with an event)."""
    return [w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings", [])]


def assert_one_line_error(result, *needles):
    assert result.get("failed"), result
    message = result["msg"]
    assert "\n" not in message and "Traceback" not in message, message
    for needle in needles:
        assert needle in message, message


# --- pure functions, no QEMU ---------------------------------------------------------------------------


def test_cpu_model_and_identity(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                       "model name\t: Intel(R)  Xeon(R) Processor\n"
                       "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\n")
    assert acc.cpu_model(cpuinfo.read_text()) == "Intel(R) Xeon(R) Processor"
    assert acc.cpu_model("processor\t: 0\nBogoMIPS\t: 50.00\n") == "unknown"
    version = tmp_path / "qemu"
    version.write_text("#!/bin/sh\necho\necho 'QEMU emulator version 9.9.9'\necho 'Copyright (c) Bellard'\n")
    version.chmod(0o755)
    assert acc.host_identity(str(version), release="6.18.1-test", cpuinfo=str(cpuinfo)) == {
        "kernel_release": "6.18.1-test", "cpu_model": "Intel(R) Xeon(R) Processor",
        "qemu_version": "QEMU emulator version 9.9.9"}
    assert acc.host_identity(str(version), cpuinfo=str(tmp_path / "none"))["cpu_model"] == "unknown"
    assert acc.host_identity(str(version))["kernel_release"] == os.uname().release
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho 'no such option' >&2\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(MpsocksError, match="broken --version failed: no such option$"):
        acc.qemu_version(str(broken))


def test_cache_read_write(tmp_path):
    path = tmp_path / "deeper" / "accelerator.json"
    here = {"kernel_release": "1", "cpu_model": "c", "qemu_version": "q"}
    other = dict(here, kernel_release="2")
    assert acc.read_cache(str(path)) == []
    entries = acc.with_answer([], other, {"accelerator": "kvm", "reason": "booted"})
    entries = acc.with_answer(entries, here, {"accelerator": "tcg", "reason": "hung"})
    acc.write_cache(str(path), entries)
    assert [p.name for p in path.parent.iterdir()] == ["accelerator.json"]  # no temporary file left
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    read = acc.read_cache(str(path))
    assert read == entries
    assert acc.cached_answer(read, here)["accelerator"] == "tcg"
    assert acc.cached_answer(read, other)["accelerator"] == "kvm"
    assert acc.cached_answer(read, dict(here, qemu_version="q2")) is None
    # A new answer replaces its identity's, keeps the others, newest last, at most `keep`.
    again = acc.with_answer(read, here, {"accelerator": "kvm", "reason": "booted now"})
    assert [e["reason"] for e in again] == ["booted", "booted now"]
    many = []
    for n in range(12):
        many = acc.with_answer(many, dict(here, kernel_release=str(n)), {"accelerator": "tcg", "reason": "r"})
    assert [e["identity"]["kernel_release"] for e in many] == [str(n) for n in range(4, 12)]


@pytest.mark.parametrize("text", ["not json {", "[]", '{"format": 99, "answers": []}', '{"format": 1}'])
def test_cache_that_is_no_cache_holds_nothing(tmp_path, text):
    path = tmp_path / "accelerator.json"
    path.write_text(text)
    assert acc.read_cache(str(path)) == []


def test_cache_drops_malformed_entries(tmp_path):
    path = tmp_path / "accelerator.json"
    good = {"identity": {"kernel_release": "1"}, "accelerator": "tcg", "reason": "hung"}
    path.write_text(json.dumps({"format": 1, "answers": [
        good, {"identity": {}, "accelerator": "fast", "reason": "?"}, "junk", {"accelerator": "kvm"}]}))
    assert acc.read_cache(str(path)) == [good]


def test_cache_write_failure_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(MpsocksError) as caught:
        acc.write_cache(str(blocker / "accelerator.json"), [])
    assert str(caught.value).startswith(f"cannot write the accelerator cache {blocker}/accelerator.json: ")
    assert "\n" not in str(caught.value)


def test_output_scanning():
    scanner = acc.OutputScanner()
    assert not scanner.feed(SEABIOS)
    assert scanner.last_line() == "Booting from ROM.."
    assert scanner.feed(BOOT)
    # The marker split over chunks, down to one byte a chunk.
    for size in (1, 3, 7, 50):
        scanner = acc.OutputScanner()
        data = SEABIOS + BOOT
        results = [scanner.feed(data[i:i + size]) for i in range(0, len(data), size)]
        assert results[-1] and scanner.seen
    scanner = acc.OutputScanner()
    scanner.feed(b"qemu-system-x86_64: failed to initialize kvm: Permission denied\n\n")
    assert not scanner.seen
    assert scanner.last_line() == "qemu-system-x86_64: failed to initialize kvm: Permission denied"
    assert acc.OutputScanner().last_line() == ""


def test_kvm_device_problem(tmp_path):
    assert acc.kvm_device_problem(str(tmp_path / "kvm")) == f"there is no {tmp_path}/kvm"
    assert acc.kvm_device_problem(str(tmp_path)) == f"{tmp_path} cannot be opened read-write: Is a directory"
    device = tmp_path / "device"
    device.write_text("")
    assert acc.kvm_device_problem(str(device)) is None


def test_probe_command_and_warning():
    command = acc.probe_command("qemu-system-x86_64", "/k/bzImage")
    assert command[:3] == ["qemu-system-x86_64", "-accel", "kvm"]
    assert command[command.index("-kernel") + 1] == "/k/bzImage"
    assert "-no-reboot" in command and "console=ttyS0" in command[-1]
    assert acc.fallback_warning(HANG) == WARNING


@pytest.mark.parametrize("params, needle", [
    ({"accelerator": "fast"}, "accelerator: 'fast' is none of auto, kvm, tcg"),
    ({"accelerator": "tcg", "timeout": 0}, "timeout: 0 is not a number of seconds above 0"),
    ({}, "kernel: a kernel image (bzImage) to probe with is required for accelerator auto"),
])
def test_validate(params, needle):
    with pytest.raises(MpsocksError) as caught:
        acc.AcceleratorChoice(params).validate()
    assert str(caught.value) == needle


def test_no_kvm_device_is_tcg_without_a_probe(tmp_path, bzimage):
    cache = tmp_path / "accelerator.json"
    choice = acc.AcceleratorChoice({"kernel": str(bzimage), "cache": str(cache)},
                                   kvm_device=str(tmp_path / "kvm"))
    choice.validate()
    answer = choice.choose()
    assert answer == {"accelerator": "tcg", "domain_type": "qemu", "reason": f"there is no {tmp_path}/kvm",
                      "cached": False, "probe_seconds": None}
    assert choice.warnings == [f"KVM does not work here (there is no {tmp_path}/kvm): using TCG, about ten "
                               "times slower"]
    assert not cache.exists()


# --- real probes ---------------------------------------------------------------------------------------


def test_probe_sees_a_booting_kernel_and_kills_it(bzimage, no_probe_left):
    # TCG stands in for a KVM that works: the same probe, a guest that does print.
    found = acc.probe(str(bzimage), TIMEOUT, accel="tcg")
    assert found.works, found.reason
    assert found.seconds < TIMEOUT
    assert found.reason.startswith("a TCG guest printed its first boot line after")
    assert not Path(f"/proc/{found.pid}").exists()


def test_probe_of_a_hanging_kvm_guest_times_out_and_kills_it(bzimage, no_probe_left):
    found = acc.probe(str(bzimage), 3)
    assert not found.works
    assert found.reason == "a KVM guest's kernel printed nothing in 3 s"
    assert 3 <= found.seconds < 4
    assert not Path(f"/proc/{found.pid}").exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(found.pid, 0)


def test_probe_of_a_qemu_that_fails_quotes_it(tmp_path, no_probe_left):
    found = acc.probe(str(tmp_path / "no-kernel"), TIMEOUT)
    assert not found.works and found.seconds < TIMEOUT
    assert found.reason.startswith("qemu-system-x86_64 -accel kvm exited with status 1 before the guest's "
                                   "kernel printed anything: ")
    assert f"{tmp_path}/no-kernel" in found.reason and "\n" not in found.reason
    assert not Path(f"/proc/{found.pid}").exists()


# --- the module, as Ansible runs it --------------------------------------------------------------------


@pytest.mark.parametrize("forced, domain_type", [("kvm", "kvm"), ("tcg", "qemu")])
def test_forced_accelerator_is_returned_without_probing(tmp_path, forced, domain_type):
    cache = tmp_path / "accelerator.json"
    result, took = accelerator(accelerator=forced, cache=str(cache), timeout=TIMEOUT)
    assert not result.get("failed"), result
    assert result["accelerator"] == forced and result["domain_type"] == domain_type
    assert result["reason"] == f"accelerator {forced} was asked for (not probed)"
    assert result["cached"] is False and result["probe_seconds"] is None and result["changed"] is False
    assert not warnings(result)
    assert not cache.exists() and took < 5


def test_auto_probes_caches_and_refreshes(tmp_path, bzimage, no_probe_left):
    cache = tmp_path / "accelerator.json"
    elsewhere = dict(identity(), kernel_release="0.0.0-elsewhere")
    cache.write_text(json.dumps({"format": 1, "answers": [
        {"identity": elsewhere, "accelerator": "kvm", "reason": "it booted elsewhere"}]}))
    params = {"kernel": str(bzimage), "timeout": TIMEOUT, "cache": str(cache)}

    # The other identity's kvm is not used: the probe runs, and the guest hangs.
    first, took = accelerator(**params)
    assert not first.get("failed"), first
    assert {k: first[k] for k in ("accelerator", "domain_type", "reason", "cached", "changed")} == {
        "accelerator": "tcg", "domain_type": "qemu", "reason": HANG, "cached": False, "changed": False}
    assert TIMEOUT <= first["probe_seconds"] < TIMEOUT + 2 and took < TIMEOUT + 5
    assert warnings(first) == [WARNING]
    assert not probe_processes(bzimage)
    stored = json.loads(cache.read_text())["answers"]
    assert [e["identity"] for e in stored] == [elsewhere, identity()]
    assert stored[1]["accelerator"] == "tcg" and stored[1]["reason"] == HANG
    assert stored[1]["kernel"] == str(bzimage)

    # Same identity: the cached answer, at once (check mode too, which writes nothing).
    for check in (False, True):
        again, took = accelerator(check=check, **params)
        assert again["cached"] is True and again["accelerator"] == "tcg" and again["reason"] == HANG
        assert again["probe_seconds"] is None and warnings(again) == [WARNING]
        assert took < 3, took
    assert json.loads(cache.read_text())["answers"] == stored

    # refresh: probes again and replaces this identity's answer only.
    fresh, took = accelerator(refresh=True, **params)
    assert fresh["cached"] is False and fresh["accelerator"] == "tcg" and fresh["probe_seconds"] >= TIMEOUT
    assert warnings(fresh) == [WARNING]
    restored = json.loads(cache.read_text())["answers"]
    assert [e["identity"] for e in restored] == [elsewhere, identity()]
    assert restored[1]["probed_at"] >= stored[1]["probed_at"]
    assert not [p for p in tmp_path.iterdir() if p.name != "accelerator.json"]  # no temporary file left


def test_auto_in_check_mode_probes_but_writes_no_cache(tmp_path, bzimage, no_probe_left):
    cache = tmp_path / "sub" / "accelerator.json"
    result, _ = accelerator(check=True, kernel=str(bzimage), timeout=TIMEOUT, cache=str(cache))
    assert result["accelerator"] == "tcg" and result["reason"] == HANG and result["cached"] is False
    assert result["changed"] is False and warnings(result) == [WARNING]
    assert not cache.parent.exists()


@pytest.mark.parametrize("kernel, needle", [
    (None, "kernel: a kernel image (bzImage) to probe with is required for accelerator auto"),
    ("/nonexistent/bzImage", "kernel: /nonexistent/bzImage is not a file"),
    ("/var/lib", "kernel: /var/lib is not a file"),
])
def test_auto_without_a_kernel_fails_in_one_line(tmp_path, kernel, needle):
    params = {"cache": str(tmp_path / "accelerator.json"), "timeout": TIMEOUT}
    if kernel is not None:
        params["kernel"] = kernel
    result, took = accelerator(**params)
    assert_one_line_error(result, needle)
    assert not (tmp_path / "accelerator.json").exists() and took < 5
