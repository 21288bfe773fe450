"""The kernel's build time: the mptcp_kernel role's config against the seed's, from the same source on
the same machine, one after the other (a benchmark that prints figures, not a test).

    .venv/bin/python tests/bench/bench_kernel.py [--jobs N] [--nice N] [--tarball PATH] [--keep DIR]

Both are built from Debian's linux-source-6.1 tarball (or --tarball) unpacked once, each into its own
output folder with ``make -jN bzImage``, timed from a clean output folder:

- role: ``make tinyconfig``, the role's fragment (collection/roles/mptcp_kernel/files/mpsocks.config)
  appended, ``make olddefconfig``: what the role builds (its cache is left alone);
- seed: ``make x86_64_defconfig kvm_guest.config``, how the seed configured its kernel.

The issue's target: role / seed <= 0.25. Needs about 5 GB in the work folder (a temporary one unless
--keep names one) and, on 2 CPUs, some 4 + 10 minutes (371 s and 981 s on a slow day, 0.38).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FRAGMENT = REPO / "collection" / "roles" / "mptcp_kernel" / "files" / "mpsocks.config"
TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
TARGET = 0.25
OBJECT = re.compile(r"^\s+(?:CC|AS)\s+\S+\.o\s*$", re.M)


def make(src: Path, out: Path, *targets: str, jobs: int = 1, nice: int = 0, log: Path | None = None) -> None:
    cmd = ["nice", "-n", str(nice), "make", f"O={out}", "ARCH=x86_64", f"-j{jobs}", *targets]
    with open(log or os.devnull, "ab") as handle:
        proc = subprocess.run(cmd, cwd=src, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log}")


def unpack(tarball: Path, into: Path) -> Path:
    subprocess.run(["tar", "-x", "-f", str(tarball), "-C", str(into)], check=True)
    (top,) = [p for p in into.iterdir() if p.is_dir()]
    return top


def configure_role(src: Path, out: Path, nice: int) -> None:
    make(src, out, "tinyconfig", nice=nice, log=out.parent / f"{out.name}.log")
    with open(out / ".config", "a") as config:
        config.write("\n" + FRAGMENT.read_text())
    make(src, out, "olddefconfig", nice=nice, log=out.parent / f"{out.name}.log")


def configure_seed(src: Path, out: Path, nice: int) -> None:
    make(src, out, "x86_64_defconfig", "kvm_guest.config", nice=nice, log=out.parent / f"{out.name}.log")


def build(name: str, src: Path, work: Path, configure, jobs: int, nice: int) -> dict:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    configure(src, out, nice)
    log = work / f"{name}-build.log"
    log.unlink(missing_ok=True)
    print(f"{name}: make -j{jobs} bzImage (nice {nice}), log {log} ...", flush=True)
    start = time.monotonic()
    make(src, out, "bzImage", jobs=jobs, nice=nice, log=log)
    seconds = time.monotonic() - start
    image = out / "arch" / "x86" / "boot" / "bzImage"
    config = (out / ".config").read_text().splitlines()
    options = sum(1 for line in config if re.match(r"CONFIG_\w+=[ym]$", line))
    result = {"seconds": seconds, "objects": len(OBJECT.findall(log.read_text(errors="replace"))),
              "image": image.stat().st_size, "options": options}
    print(f"{name}: {seconds:.0f} s, {result['objects']} objects, {options} options =y/=m, "
          f"bzImage {result['image'] / 1e6:.1f} MB", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="make -j (default: CPUs)")
    parser.add_argument("--nice", type=int, default=0, help="niceness of the builds (default 0)")
    parser.add_argument("--tarball", type=Path, default=TARBALL, help=f"kernel source (default {TARBALL})")
    parser.add_argument("--keep", type=Path, help="work folder to use and keep (default: a temporary one)")
    args = parser.parse_args()
    if not args.tarball.is_file():
        return f"{args.tarball}: no such file (apt-get install linux-source-6.1)"
    work = args.keep or Path(tempfile.mkdtemp(prefix="mpsocks-bench-kernel-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        src_parent = work / "src"
        shutil.rmtree(src_parent, ignore_errors=True)
        src_parent.mkdir()
        src = unpack(args.tarball, src_parent)
        print(f"source {args.tarball.name}, {args.jobs} jobs, nice {args.nice}, {os.cpu_count()} CPUs",
              flush=True)
        role = build("role", src, work, configure_role, args.jobs, args.nice)
        seed = build("seed", src, work, configure_seed, args.jobs, args.nice)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    ratio = role["seconds"] / seed["seconds"]
    print(f"kernel build time, role's config (tinyconfig + mpsocks.config) / seed's (x86_64_defconfig + "
          f"kvm_guest.config): {role['seconds']:.0f} s / {seed['seconds']:.0f} s = {ratio:.2f} "
          f"(target <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
