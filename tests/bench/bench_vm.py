"""The VM guest (``--backend libvirt``): what it costs and what it gives. Printed figures, not pass/fail.

    .venv/bin/python tests/bench/bench_vm.py [--seconds 15] [--rounds 3]

In one lab with two 20 Mbit/s uplinks in the root namespace (where libvirtd opens the taps):
- the kernel's and the image's build times, from the records their builds left (a first build), and what
  a second ``build kernel`` / ``build image`` costs (cached: changed=0);
- ``up --lab --backend libvirt`` with kernel and image cached: seconds from its start until the guest
  answers ssh, until its SOCKS port answers, and until ``up`` ends (the check done), and its module calls;
- a second ``up`` (nothing to change): seconds and module calls;
- the VM's peak memory (VmHWM of its QEMU; its TCG translation cache is 128 MiB, QEMU's default 1 GiB);
- the aggregation through the VM: plain TCP over each uplink alone, then SOCKS through the VM over MPTCP.
Targets (issue 10): SOCKS answering <= 20 s after up starts under TCG (<= 3 s under KVM).
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS / "bench"))

from bench_aggregation import plain_rate, socks_rates  # noqa: E402
from mpsocks_testlib import lab_name, mpsocks_run  # noqa: E402

STATE_DIR = Path("/var/lib/mpsocks")
GUEST_ADDRESS = "10.66.6.2"
BOOT_TARGET = 20.0


def calls_and_seconds(output: str) -> tuple[int, float]:
    calls, seconds = re.search(r"(\d+) module calls? in ([0-9.]+) s", output).groups()
    return int(calls), float(seconds)


def routed_to_the_guest() -> bool:
    """Whether GUEST_ADDRESS is reached through the guest's tap (before up makes it, it would go out)."""
    route = subprocess.run(["ip", "-o", "route", "get", GUEST_ADDRESS], capture_output=True, text=True)
    return " dev mptcp0 " in route.stdout


def first_answer(port: int, start: float, stop: threading.Event, found: dict) -> None:
    """Record in FOUND[port] the seconds after START when GUEST_ADDRESS:PORT first accepts a connection
    (asked only once the address is routed to the guest's tap)."""
    while not stop.is_set():
        if not routed_to_the_guest():
            time.sleep(0.2)
            continue
        try:
            with socket.create_connection((GUEST_ADDRESS, port), timeout=0.5):
                found[port] = time.monotonic() - start
                return
        except OSError:
            time.sleep(0.2)


def qemu_peak_kib(guest: str) -> int | None:
    """VmHWM of the QEMU running domain GUEST."""
    pids = subprocess.run(["pgrep", "-f", f"qemu-system-x86_64 -name guest={guest},"], capture_output=True,
                          text=True).stdout.split()
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status)[1])
    return None


def builds(artifacts: Path) -> list[str]:
    lines = []
    for what, record, pattern in (("kernel", "kernel.json", "kernel/*/kernel.json"),
                                  ("image (its extras layer)", "image.json", "image/*-extras-*/image.json")):
        found = sorted(STATE_DIR.glob(pattern), key=lambda path: path.stat().st_mtime)
        first = json.loads(found[-1].read_text()).get("build_seconds") if found else None
        start = time.monotonic()
        rc, output = mpsocks_run("build", what.split()[0], artifacts=artifacts)
        assert rc == 0, output
        again = time.monotonic() - start
        changed = sum(int(m) for m in re.findall(r"changed=(\d+)", output))
        lines.append(f"{what}: built in {first if first is not None else '?'} s ({record}); "
                     f"a second build {again:.1f} s, changed={changed}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each download at its rate")
    parser.add_argument("--rounds", type=int, default=3, help="SOCKS downloads (the median is shown)")
    parser.add_argument("--artifacts", type=Path, default=Path("/tmp/mpsocks-bench-vm"))
    args = parser.parse_args()
    report = builds(args.artifacts)  # also makes sure both are cached before up is timed
    name = lab_name("w")
    rc, output = mpsocks_run("lab", "up", "--name", name, "--root-uplinks", "--rates", "20,20",
                             artifacts=args.artifacts)
    assert rc == 0, output
    try:
        stop, answered = threading.Event(), {}
        start = time.monotonic()
        watchers = [threading.Thread(target=first_answer, args=(port, start, stop, answered), daemon=True)
                    for port in (22, 1080)]
        for watcher in watchers:
            watcher.start()
        rc, output = mpsocks_run("up", "--lab", name, "--backend", "libvirt", artifacts=args.artifacts)
        took = time.monotonic() - start
        stop.set()
        assert rc == 0, output
        calls, _ = calls_and_seconds(output)
        ssh, socks = answered.get(22), answered.get(1080)
        verdict = "met" if socks is not None and socks <= BOOT_TARGET else "MISSED"
        report.append(f"up (TCG, kernel and image cached): ssh answers after {ssh:.1f} s, SOCKS after "
                      f"{socks:.1f} s (target <= {BOOT_TARGET:g} s: {verdict}), up done after {took:.1f} s, "
                      f"{calls} module calls")
        start = time.monotonic()
        rc, output = mpsocks_run("up", "--lab", name, "--backend", "libvirt", artifacts=args.artifacts)
        assert rc == 0, output
        calls, _ = calls_and_seconds(output)
        changed = sum(int(m) for m in re.findall(r"changed=(\d+)", output))
        report.append(f"second up (nothing to change): {time.monotonic() - start:.1f} s, {calls} module "
                      f"calls, changed={changed}")
        plan = json.loads((Path("/run/mpsocks/lab") / name / "lab.json").read_text())
        download = plan["servers"]["download"]
        singles = [plain_rate(None, f"{download}bytes/{int(u['rate_mbit'] * 1e6 / 8 * args.seconds)}",
                              u["address"].split("/")[0]) for u in plan["uplinks"]]
        size = int(sum(u["rate_mbit"] for u in plan["uplinks"]) * 1e6 / 8 * args.seconds)
        through = socks_rates(None, f"{download}bytes/{size}", args.rounds)
        rate = statistics.median(through)
        report.append(f"aggregation 20+20 through the VM: alone {' + '.join(f'{s:.2f}' for s in singles)} "
                      f"Mbit/s, SOCKS over MPTCP {rate:.2f} ({min(through):.1f}-{max(through):.1f}), "
                      f"{rate / sum(singles):.3f} of the sum")
        peak = qemu_peak_kib(f"{name}-guest")
        report.append(f"VM memory: {peak / 1024:.0f} MiB peak (QEMU VmHWM; guest RAM 512 MiB, TCG cache "
                      "128 MiB)" if peak else "VM memory: QEMU not found")
    finally:
        for verb in (("down",), ("lab", "down", "--name", name)):
            rc, output = mpsocks_run(*verb, artifacts=args.artifacts)
            if rc:
                print(output)
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
