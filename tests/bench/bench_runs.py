"""What a run costs on this machine, optionally against an older commit in the same run: a benchmark
that prints figures (wall time and module calls), not a pass/fail test.

    .venv/bin/python tests/bench/bench_runs.py [--before [COMMIT]]

For the default lab (two uplinks, twelve hops; a unique name): ``lab up`` from nothing, ``lab up``
again with nothing to change, ``lab down``; ``up --lab`` (namespace guest) twice and ``down``; and
``host up``/``host down`` with two uplinks in a namespace. With ``--before``, "before" is the checkout
at COMMIT (default: the last commit before the list modules), run from a copy with its own
collection, and "after" this checkout (CI leaves it out: it adds about three minutes). Module calls
are counted from each run's ansible-runner events, the same way for both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
sys.path[:0] = [str(TESTS), str(REPO / "runner")]

from mpsocks.progress import module_calls  # noqa: E402
from mpsocks_testlib import delete_uplinks, make_uplinks, unique_name  # noqa: E402

BEFORE = "c16c869"  # mpsocks-run: lab names checked with the plan's own pattern (one module call per object)
#: The issue's targets: seconds, and module calls for the no-op run.
TARGETS = {"lab up": "<= 30 s", "lab up again": "<= 10 s, 20 calls", "lab down": "<= 10 s",
           "up --lab": "<= 60 s", "up --lab again": "<= 15 s, 30 calls"}


def checkout(commit: str, into: Path) -> Path:
    """A copy of the tree at COMMIT, with a collections root pointing at its collection."""
    tree = into / "tree"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def collections_root(tree: Path, into: Path) -> Path:
    root = into / "collections"
    (root / "ansible_collections" / "mpsocks").mkdir(parents=True)
    (root / "ansible_collections" / "mpsocks" / "mptcp").symlink_to(tree / "collection")
    return root


def calls_of(run_dir: Path) -> int:
    """Module calls of one run, from its ansible-runner events."""
    total = 0
    for path in (run_dir / "job_events").glob("*.json"):
        event = json.loads(path.read_text())
        if event.get("event", "").startswith("runner_on_") and event["event"] != "runner_on_start":
            total += module_calls(event)
    return total


def mpsocks_run(tree: Path, collections: Path, artifacts: Path, *args: str, netns: str | None = None):
    """One mpsocks-run of TREE; returns (seconds, module calls, exit code)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree / "runner"), str(collections)]),
               ANSIBLE_COLLECTIONS_PATH=str(collections))
    argv = [sys.executable, "-m", "mpsocks", *args, "--artifacts-dir", str(artifacts)]
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    took = time.monotonic() - started
    if proc.returncode:
        print(f"  {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return took, calls_of((artifacts / "latest").resolve()), proc.returncode


def measure(tree: Path, collections: Path, work: Path) -> dict[str, tuple[float, int, int]]:
    artifacts = work / "runs"
    lab = unique_name("b")
    figures = {}
    steps = (("lab up", ("lab", "up", "--name", lab)), ("lab up again", ("lab", "up", "--name", lab)),
             ("lab down", ("lab", "down", "--name", lab)))
    for label, args in steps:
        figures[label] = mpsocks_run(tree, collections, artifacts, *args)
    if (tree / "playbooks" / "boot_socks.yml").exists():  # the proxy stack, lab included (issue 9)
        stacked = unique_name("u")
        # The namespace guest in both trees: the default since the VM backend (issue 10) is a VM.
        netns = ("--backend", "netns") if (tree / "collection" / "roles" / "guest_vm").exists() else ()
        figures["up --lab"] = mpsocks_run(tree, collections, artifacts, "up", *netns, "--lab", stacked)
        figures["up --lab again"] = mpsocks_run(tree, collections, artifacts, "up", *netns, "--lab", stacked)
        figures["down (and lab)"] = mpsocks_run(tree, collections, artifacts, "down")
    netns = unique_name("bnch")
    subprocess.run(["ip", "netns", "add", netns], check=True)
    uplinks = []
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        uplinks = make_uplinks(netns, 2)
        up = ("host", "up", "--uplinks", "up0,up1")
        figures["host up"] = mpsocks_run(tree, collections, artifacts, *up, netns=netns)
        figures["host up again"] = mpsocks_run(tree, collections, artifacts, *up, netns=netns)
        figures["host down"] = mpsocks_run(tree, collections, artifacts, "host", "down", netns=netns)
    finally:
        delete_uplinks(uplinks)
        subprocess.run(["ip", "netns", "del", netns], check=False)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", nargs="?", const=BEFORE, metavar="COMMIT",
                        help=f"also measure this older commit (default {BEFORE}, before the list modules)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="mpsocks-bench-") as tmp:
        work = Path(tmp)
        runs = {"after": (REPO, None)}
        known = args.before and subprocess.run(
            ["git", "-C", str(REPO), "cat-file", "-e", f"{args.before}^{{commit}}"],
            capture_output=True).returncode == 0
        if known:
            (work / "before").mkdir()
            old = checkout(args.before, work / "before")
            runs = {"before": (old, collections_root(old, work / "before")), **runs}
        elif args.before:
            print(f"commit {args.before} is not in this clone (a shallow clone?): 'before' left out")
        for label, (tree, collections) in runs.items():
            if collections is None:
                (work / label).mkdir()
                collections = collections_root(tree, work / label)
            print(f"measuring {label} ({tree}) ...", flush=True)
            results[label] = measure(tree, collections, work / label)
    print()
    header = f"{'run':<15}" + "".join(f"{label:>22}" for label in results) + f"{'target':>20}"
    print(header)
    print("-" * len(header))
    for step in results["after"]:
        cells = "".join(f"{f'{took:.1f} s, {calls} calls' + ('' if rc == 0 else ' (FAILED)'):>22}"
                        if step in results[label] else f"{'-':>22}"
                        for label in results for took, calls, rc in [results[label].get(step, (0, 0, 0))])
        print(f"{step:<15}{cells}{TARGETS.get(step, ''):>20}")
    failed = [step for step, (_took, _calls, rc) in results["after"].items() if rc]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
