# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which accelerator a guest should use: KVM only where a probe guest really boots under it, else TCG.

Where ``/dev/kvm`` opens, that is not proof that KVM works: on some machines a KVM guest hangs right
after the kernel's setup code. So the probe boots a kernel under ``qemu-system-x86_64 -accel kvm`` with
its serial console on a pipe and waits, up to a timeout, for the kernel's first line ("Linux version").
The kernel then panics (it has no root), which does not matter: it booted. Whatever happens, the probe's
process group is killed with SIGKILL and reaped before the answer is given.

A probe costs up to its timeout, so its answer is cached in a JSON file, per host identity: the host
kernel's release, the CPU model and QEMU's version. Another identity (a new kernel, another machine
with the same disk, a QEMU upgrade) probes anew.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import errno
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time

from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import one_line
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError

ACCELERATORS = ("auto", "kvm", "tcg")
#: libvirt's domain type for each accelerator.
DOMAIN_TYPES = {"kvm": "kvm", "tcg": "qemu"}
QEMU = "qemu-system-x86_64"
KVM_DEVICE = "/dev/kvm"
CPUINFO = "/proc/cpuinfo"
DEFAULT_CACHE = "/var/lib/mpsocks/accelerator.json"
DEFAULT_TIMEOUT = 20
#: The kernel's first printk, which every x86 kernel prints on its console.
MARKER = b"Linux version "
#: Version of the cache file's layout; a file of another layout is ignored (and replaced).
CACHE_FORMAT = 1
#: How many host identities the cache file keeps (the newest answers).
CACHE_KEEP = 8
#: Seconds to wait for a killed probe to be gone.
KILL_WAIT = 10
#: Seconds `qemu-system-x86_64 --version` may take.
VERSION_WAIT = 15
#: How much of the probe's output is kept to quote from when QEMU itself fails.
OUTPUT_TAIL = 4096
#: Terminal escape sequences (CSI ones, and two-byte ones like SeaBIOS's ESC c).
ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-~])")
SLOWER = "about ten times slower"


def first_line(text):
    """The first non-blank line of TEXT, stripped ('' when there is none)."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def cpu_model(cpuinfo_text):
    """The first ``model name`` of /proc/cpuinfo's text ('unknown' when it has none, as on ARM)."""
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name":
            return " ".join(value.split()) or "unknown"
    return "unknown"


def qemu_version(qemu=QEMU):
    """The first line of ``QEMU --version``."""
    try:
        proc = subprocess.run([qemu, "--version"], stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=VERSION_WAIT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MpsocksError("%s --version failed: %s" % (qemu, one_line(exc))) from None
    text = proc.stdout.decode("utf-8", "replace")
    if proc.returncode or not first_line(text):
        error = first_line(proc.stderr.decode("utf-8", "replace")) or "exit status %d" % proc.returncode
        raise MpsocksError("%s --version failed: %s" % (qemu, error))
    return first_line(text)


def host_identity(qemu=QEMU, release=None, cpuinfo=CPUINFO):
    """What a cached answer holds for: host kernel release, CPU model and QEMU version."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            model = cpu_model(handle.read())
    except OSError:
        model = "unknown"
    return {
        "kernel_release": release if release is not None else os.uname().release,
        "cpu_model": model,
        "qemu_version": qemu_version(qemu),
    }


def _valid_entry(entry):
    return (isinstance(entry, dict) and isinstance(entry.get("identity"), dict)
            and entry.get("accelerator") in DOMAIN_TYPES and isinstance(entry.get("reason"), str))


def read_cache(path):
    """The answers kept in cache file PATH, as a list of entries; a missing, unreadable or foreign file
    holds none (it is replaced at the next write)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(
            data.get("answers"), list):
        return []
    return [entry for entry in data["answers"] if _valid_entry(entry)]


def cached_answer(entries, identity):
    """The entry of ENTRIES for IDENTITY, or None."""
    for entry in entries:
        if entry["identity"] == identity:
            return entry
    return None


def with_answer(entries, identity, answer, keep=CACHE_KEEP):
    """ENTRIES with IDENTITY's answer replaced by ANSWER (a dict: accelerator, reason, probe_seconds...),
    the newest last, at most KEEP of them."""
    others = [entry for entry in entries if entry["identity"] != identity]
    entry = dict(answer, identity=identity)
    return (others + [entry])[-keep:]


def write_cache(path, entries):
    """Write ENTRIES to cache file PATH atomically (a temporary file beside it, then os.replace)."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, mode=0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"format": CACHE_FORMAT, "answers": entries}, handle, indent=1, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise MpsocksError("cannot write the accelerator cache %s: %s" % (path, one_line(exc))) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


class OutputScanner:
    """Watches a probe's console output, fed in chunks of any size, for the kernel's first line."""

    def __init__(self, marker=MARKER):
        self.marker = marker
        self.seen = False
        self.tail = b""

    def feed(self, chunk):
        """Add CHUNK; whether the marker has appeared (also across chunk boundaries)."""
        self.seen = self.seen or self.marker in self.tail[-(len(self.marker) - 1):] + chunk
        self.tail = (self.tail + chunk)[-OUTPUT_TAIL:]
        return self.seen

    def last_line(self):
        """The last non-blank line of the output, without terminal escapes (to quote QEMU's errors)."""
        text = ESCAPES.sub("", self.tail.decode("utf-8", "replace"))
        lines = [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]
        return lines[-1] if lines else ""


def kvm_device_problem(device=KVM_DEVICE):
    """Why KVM cannot work here without trying a guest (DEVICE missing or not openable read-write),
    or None."""
    try:
        fd = os.open(device, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return "there is no %s" % device
        return "%s cannot be opened read-write: %s" % (device, exc.strerror or one_line(exc))
    os.close(fd)
    return None


def probe_command(qemu, kernel, accel="kvm"):
    """QEMU's command line for a probe guest: KERNEL alone, its console on stdout, no devices, no reboot.

    ``rdinit=/nonexistent`` and no disk make the kernel panic soon after it starts; ``panic=-1`` and
    ``-no-reboot`` make QEMU exit then.
    """
    return [qemu, "-accel", accel, "-m", "64", "-smp", "1", "-nodefaults", "-no-reboot", "-nographic",
            "-serial", "stdio", "-kernel", kernel,
            "-append", "console=ttyS0 panic=-1 rdinit=/nonexistent"]


def stop_probe(proc, wait=KILL_WAIT):
    """SIGKILL the probe's process group, reap it and make sure nothing of the group is left."""
    pid = proc.pid
    if not isinstance(pid, int) or pid <= 1:
        raise MpsocksError("the accelerator probe has no valid process id (%r)" % (pid,))
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        raise MpsocksError("the accelerator probe (%s, pid %d) was still running %d s after SIGKILL"
                           % (QEMU, pid, wait)) from None
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    deadline = time.monotonic() + wait
    while True:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            raise MpsocksError("processes of the accelerator probe's group %d were still running %d s "
                               "after SIGKILL" % (pid, wait))
        time.sleep(0.05)


class ProbeResult:
    """What a probe found: whether the guest's kernel printed, why (one line), how long, and its pid."""

    def __init__(self, works, reason, seconds, pid):
        self.works = works
        self.reason = reason
        self.seconds = seconds
        self.pid = pid


def probe(kernel, timeout, qemu=QEMU, accel="kvm"):
    """Boot KERNEL under QEMU with ACCEL and wait up to TIMEOUT seconds for its first line.

    The probe runs in a process group of its own, which is always killed and reaped before this returns.
    """
    command = probe_command(qemu, kernel, accel)
    name = "a %s guest" % accel.upper()
    started = time.monotonic()
    try:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    except OSError as exc:
        raise MpsocksError("cannot start %s: %s" % (qemu, one_line(exc))) from None
    scanner = OutputScanner()
    ended = False
    try:
        fd = proc.stdout.fileno()
        deadline = started + timeout
        while not scanner.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready = select.select([fd], [], [], min(left, 0.5))[0]
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    ended = True
                    break
                scanner.feed(chunk)
        seconds = round(time.monotonic() - started, 2)
    finally:
        stop_probe(proc)
    if scanner.seen:
        return ProbeResult(True, "%s printed its first boot line after %.1f s" % (name, seconds), seconds,
                           proc.pid)
    if ended:
        said = scanner.last_line()
        reason = "%s -accel %s exited with status %s before the guest's kernel printed anything%s" % (
            qemu, accel, proc.returncode, (": " + said) if said else "")
        return ProbeResult(False, reason, seconds, proc.pid)
    return ProbeResult(False, "%s's kernel printed nothing in %s s" % (name, _seconds(timeout)), seconds,
                       proc.pid)


def _seconds(value):
    """VALUE seconds as people write them: 20, 2.5."""
    return ("%d" % value) if float(value).is_integer() else ("%g" % value)


def fallback_warning(reason):
    """The one warning line of an automatic fallback to TCG."""
    return "KVM does not work here (%s): using TCG, %s" % (reason, SLOWER)


class AcceleratorChoice:
    """The module's logic: validate the options, then answer from the override, the cache or a probe.

    PARAMS: accelerator, kernel, timeout, cache, refresh (as the module's options). Nothing on the
    system changes but the cache file, which check mode leaves alone.
    """

    def __init__(self, params, check_mode=False, qemu=QEMU, kvm_device=KVM_DEVICE):
        self.params = dict(params)
        self.check_mode = check_mode
        self.qemu = qemu
        self.kvm_device = kvm_device
        self.warnings = []
        self.qemu_path = None

    def validate(self):
        params = self.params
        accelerator = params.get("accelerator") or "auto"
        if accelerator not in ACCELERATORS:
            raise MpsocksError("accelerator: %r is none of %s" % (accelerator, ", ".join(ACCELERATORS)))
        params["accelerator"] = accelerator
        timeout = params.get("timeout")
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise MpsocksError("timeout: %r is not a number of seconds above 0" % (timeout,))
        params["timeout"] = timeout
        params["cache"] = params.get("cache") or DEFAULT_CACHE
        params["refresh"] = bool(params.get("refresh"))
        if accelerator != "auto":
            return
        kernel = params.get("kernel")
        if not kernel:
            raise MpsocksError("kernel: a kernel image (bzImage) to probe with is required for "
                               "accelerator auto")
        if not os.path.isfile(kernel):
            raise MpsocksError("kernel: %s is not a file" % kernel)
        if os.path.isdir(params["cache"]):
            raise MpsocksError("cache: %s is a directory, not a file" % params["cache"])
        self.qemu_path = shutil.which(self.qemu)
        if self.qemu_path is None:
            raise MpsocksError("%s is not installed (not found in PATH)" % self.qemu)

    def choose(self):
        """The answer as the module returns it: accelerator, domain_type, reason, cached, probe_seconds."""
        params = self.params
        accelerator = params["accelerator"]
        if accelerator != "auto":
            return self._answer(accelerator, "accelerator %s was asked for (not probed)" % accelerator)
        problem = kvm_device_problem(self.kvm_device)
        if problem is not None:
            return self._answer("tcg", problem)
        identity = host_identity(self.qemu_path)
        entries = read_cache(params["cache"])
        entry = None if params["refresh"] else cached_answer(entries, identity)
        if entry is not None:
            return self._answer(entry["accelerator"], entry["reason"], cached=True)
        found = probe(params["kernel"], params["timeout"], qemu=self.qemu_path)
        answer = self._answer("kvm" if found.works else "tcg", found.reason, seconds=found.seconds)
        if not self.check_mode:
            stored = {"accelerator": answer["accelerator"], "reason": answer["reason"],
                      "probe_seconds": found.seconds, "kernel": params["kernel"],
                      "probed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            try:
                write_cache(params["cache"], with_answer(entries, identity, stored))
            except MpsocksError as exc:
                self.warnings.append("%s; the next call probes again" % exc)
        return answer

    def _answer(self, accelerator, reason, cached=False, seconds=None):
        if accelerator == "tcg" and self.params["accelerator"] == "auto":
            self.warnings.insert(0, fallback_warning(reason))
        return {"accelerator": accelerator, "domain_type": DOMAIN_TYPES[accelerator], "reason": reason,
                "cached": cached, "probe_seconds": seconds}
