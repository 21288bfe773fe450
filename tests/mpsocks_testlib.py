"""Helpers the tests share: run a module for real, make namespaces, snapshot state."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLLECTION = REPO / "collection"
#: The seed project's three real captures: beside the checkout in ../shared, as in every work area.
_SEED_PLACES = (REPO.parent / "shared" / "seed-traces", Path("/work/shared/seed-traces"))
SEED_TRACES = next((path for path in _SEED_PLACES if path.is_dir()), _SEED_PLACES[0])
_counter = itertools.count()
#: Every name unique_name() handed out in this test run.
CREATED: set[str] = set()


def collections_root() -> Path:
    """A folder whose ansible_collections/mpsocks/mptcp is this checkout's collection: one per checkout,
    so that test runs of two checkouts on one machine never point each other's plays elsewhere."""
    checkout = hashlib.sha256(str(REPO).encode()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / f"mpsocks-tests-{os.getuid()}" / f"collections-{checkout}"
    link = root / "ansible_collections" / "mpsocks" / "mptcp"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink() or link.resolve() != COLLECTION:
        tmp = link.with_name(f".mptcp-{os.getpid()}")
        tmp.symlink_to(COLLECTION)
        os.replace(tmp, link)
    return root


def unique_name(prefix: str) -> str:
    """A name no other test run on this machine uses at the same time."""
    name = f"{prefix}{os.getpid() % 100000}x{next(_counter)}"
    CREATED.add(name)
    return name


def lab_name(prefix: str) -> str:
    """A unique name that is also a valid lab name (at most 10 lower-case letters or digits), with
    room left for one more letter: the pid in four base-36 digits, then the counter in base 36."""
    def base36(number: int) -> str:
        digits = ""
        while True:
            number, digit = divmod(number, 36)
            digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
            if not number:
                return digits
    name = f"{prefix}{base36(os.getpid() % 36**4):0>4}{base36(next(_counter))}"
    CREATED.add(name)
    return name


def sh(*argv: str, netns: str | None = None, check: bool = True) -> str:
    """Run a command (inside NETNS if given) and return its stdout."""
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc.stdout


def run_module(module: str, /, check: bool = False, diff: bool = True, inside: str | None = None,
               **params) -> dict:
    """Run collection MODULE as Ansible would (a fresh Python process) with PARAMS.

    INSIDE: the module process starts in that namespace (as through the netns connection plugin).
    """
    args = {"ANSIBLE_MODULE_ARGS": dict(params, _ansible_check_mode=check, _ansible_diff=diff)}
    prefix = ["ip", "netns", "exec", inside] if inside else []
    with tempfile.NamedTemporaryFile("w", suffix=".json") as handle:
        json.dump(args, handle)
        handle.flush()
        proc = subprocess.run(
            prefix + [sys.executable, str(COLLECTION / "plugins" / "modules" / f"{module}.py"), handle.name],
            capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=str(collections_root())),
        )
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"module {module} printed no JSON: {proc.stdout}{proc.stderr}") from None


def run_item(module: str, /, check: bool = False, diff: bool = True, **params) -> dict:
    """Run list MODULE with PARAMS as its one config item; its result flattened as a one-object module's.

    ``state`` and ``netns`` stay per item (the module's defaults for items are left alone).
    """
    raw = run_module(module, check=check, diff=diff, config=[params])
    results = raw.pop("results", None) or [{}]
    raw.pop("diff", None)
    return dict(results[0], **raw)


def netns_names() -> set[str]:
    """Names of the namespaces ``ip netns`` knows."""
    return {line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.strip()}


def created_namespaces() -> set[str]:
    """Namespaces named by this test run: unique_name()s, and a lab's NAME-host, NAME-isp0 ..."""
    return {netns for netns in netns_names()
            if netns in CREATED or netns.split("-", 1)[0] in CREATED}


#: Sysctls that change by themselves (with the traffic), not by a test.
VOLATILE_SYSCTLS = re.compile(r"^net\.netfilter\.nf_conntrack_count ", re.M)


def _sysctls(netns: str | None) -> str:
    """Every net.* sysctl of the namespace but the counters."""
    text = sh("sh", "-c", "sysctl -a 2>/dev/null | grep '^net\\.' | sort", netns=netns)
    return "\n".join(line for line in text.splitlines() if not VOLATILE_SYSCTLS.match(line))


def _proc_entries():
    """(pid, network namespace inode, comm, command line) of every process."""
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            inode = os.stat(entry / "ns" / "net").st_ino
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        yield entry.name, inode, comm, cmdline


def _processes(netns: str | None) -> str:
    """The processes in namespace NETNS as sorted ``pid comm`` lines ('' for the root namespace, where
    other runs' processes come and go: leaked_processes() looks there for this run's)."""
    if netns is None:
        return ""
    wanted = os.stat(f"/run/netns/{netns}").st_ino
    return "\n".join(sorted(f"{pid} {comm}" for pid, inode, comm, _ in _proc_entries() if inode == wanted))


def leaked_processes() -> list[str]:
    """mpsocks processes (supervisors, lab servers) of this test run's labs and daemons still running."""
    return [f"{pid} {cmdline}" for pid, _inode, comm, cmdline in _proc_entries()
            if (comm.startswith("mpsd-") or "mpsocks_lab_server" in cmdline)
            and any(name in cmdline for name in CREATED)]


def snapshot(netns: str | None = None) -> dict:
    """Everything the project could change in a namespace, as comparable text."""
    return {
        "links": sh("ip", "-d", "link", "show", netns=netns),
        "addresses": sh("ip", "addr", "show", netns=netns),
        "rules": sh("ip", "rule", "show", netns=netns) + sh("ip", "-6", "rule", "show", netns=netns),
        "routes": sh("ip", "route", "show", "table", "all", netns=netns)
        + sh("ip", "-6", "route", "show", "table", "all", netns=netns),
        "nft": sh("nft", "list", "ruleset", netns=netns),
        "mptcp": sh("ip", "mptcp", "endpoint", "show", netns=netns)
        + sh("ip", "mptcp", "limits", "show", netns=netns),
        "qdiscs": sh("tc", "qdisc", "show", netns=netns),
        "sysctl": _sysctls(netns),
        "processes": _processes(netns),
    }


def assert_unchanged(before: dict, netns: str | None = None) -> None:
    """Fail with a readable diff if NETNS differs from the BEFORE snapshot."""
    after = snapshot(netns)
    problems = []
    for key in before:
        if after[key] != before[key]:
            diff = difflib.unified_diff(before[key].splitlines(), after[key].splitlines(), lineterm="", n=0)
            problems.append(f"{key}:\n" + "\n".join(list(diff)[2:]))
    assert not problems, f"namespace {netns or 'root'} changed:\n" + "\n".join(problems)


def make_uplinks(netns: str, count: int = 2) -> list[dict]:
    """Veth "uplinks" up0, up1... in NETNS, each with a gateway and a default route.

    Uplink n holds 10.199.n.2/24; its gateway 10.199.n.1 is the veth peer, which
    lives in a namespace of its own (NETNS + "g" + n) so the gateway answers ARP.
    """
    uplinks = []
    try:
        for n in range(count):
            name, gw_ns = f"up{n}", unique_name("mpstg")
            subprocess.run(["ip", "netns", "add", gw_ns], check=True)
            uplinks.append({"name": name, "gateway": f"10.199.{n}.1", "gateway_netns": gw_ns})
            sh("ip", "link", "add", name, "netns", netns, "type", "veth", "peer", "name", "gw",
               "netns", gw_ns)
            # No IPv6 autoconfiguration: its addresses appear late and would blur snapshots.
            sh("ip", "link", "set", name, "addrgenmode", "none", netns=netns)
            sh("ip", "addr", "add", f"10.199.{n}.2/24", "dev", name, netns=netns)
            sh("ip", "link", "set", name, "up", netns=netns)
            sh("ip", "addr", "add", f"10.199.{n}.1/24", "dev", "gw", netns=gw_ns)
            sh("ip", "link", "set", "gw", "up", netns=gw_ns)
            sh("ip", "route", "add", "default", "via", f"10.199.{n}.1", "dev", name, "metric", str(100 + n),
               netns=netns)
    except BaseException:
        delete_uplinks(uplinks)  # a failure half way leaves no gateway namespace behind
        raise
    return uplinks


def delete_uplinks(uplinks: list[dict]) -> None:
    """Remove the gateway namespaces make_uplinks() created (the veths go with them)."""
    for uplink in uplinks:
        subprocess.run(["ip", "netns", "del", uplink["gateway_netns"]], check=False)


def netns_inventory(path: Path, *namespaces: str) -> Path:
    """An inventory file whose hosts are the given namespaces (mpsocks.mptcp.netns)."""
    hosts = {
        ns: {"ansible_connection": "mpsocks.mptcp.netns", "ansible_python_interpreter": sys.executable}
        for ns in namespaces
    }
    path.write_text(json.dumps({"all": {"hosts": hosts}}))
    return path


RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def ansible_playbook(playbook: Path, inventory: Path, *extra: str, extravars: dict | None = None):
    """Run the venv's ansible-playbook; return (returncode, output, {host: recap counts})."""
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory), str(playbook)]
    if extravars is not None:
        cmd += ["-e", json.dumps(extravars)]
    proc = subprocess.run(cmd + list(extra), capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    recap = {m[0]: dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m[1:]), strict=True))
             for m in RECAP.findall(output)}
    return proc.returncode, output, recap


def runner_env() -> dict:
    """Environment that runs ``python -m mpsocks`` from this checkout."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "runner"), str(collections_root())]))


def mpsocks_run(*args: str, artifacts: Path | None) -> tuple[int, str]:
    """The CLI from this checkout, as a user runs it; returns (exit code, stdout + stderr).

    ARTIFACTS: where a verb that runs a play keeps its run folders (None for one that runs none).
    """
    where = ["--artifacts-dir", str(artifacts)] if artifacts is not None else []
    proc = subprocess.run([sys.executable, "-m", "mpsocks", *args, *where],
                          capture_output=True, text=True, env=runner_env())
    return proc.returncode, proc.stdout + proc.stderr


def changed_count(output: str, host: str) -> int:
    """The changed= figure of HOST in Ansible's recap within OUTPUT."""
    counts = {m[0]: int(m[2]) for m in RECAP.findall(output)}
    assert host in counts, f"no recap line for {host}:\n{output}"
    return counts[host]


def kill_tree(pid: int) -> None:
    """SIGKILL process PID and every descendant (what a killed terminal session leaves behind)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for child in children:
        kill_tree(int(child))


def start_capture(interface: str, path: Path, bpf: str, netns: str | None = None) -> subprocess.Popen:
    """tcpdump on INTERFACE (inside NETNS) into PATH, running once this returns.

    Root keeps the file (``-Z root``: pytest's folders are private), every packet is handed over at once
    (``--immediate-mode``, else a short capture loses what is still in the kernel's buffer) and the
    interface's promiscuity is left alone (``-p``: it shows in ``ip -d link``).
    """
    cmd = ["tcpdump", "-Z", "root", "--immediate-mode", "-p", "-n", "-U", "-i", interface, "-w", str(path),
           bpf]
    proc = subprocess.Popen((["ip", "netns", "exec", netns] if netns else []) + cmd,
                            stderr=subprocess.PIPE, text=True)
    started = proc.stderr.readline()
    assert "listening" in started, f"cannot capture on {interface}: {started}"
    return proc


def stop_capture(proc: subprocess.Popen) -> None:
    """Stop a capture started by start_capture(); its file is complete afterwards."""
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)


@dataclass
class RoleRun:
    """A playbook run through mpsocks' runner, and what its progress display printed."""

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


def run_with_progress(playbook: Path, artifacts: Path, extravars: dict, check: bool = False,
                      run_class: type = RoleRun) -> RoleRun:
    """PLAYBOOK on inventory/localhost.yml through mpsocks' runner and progress display (what mpsocks-run
    shows), as a RUN_CLASS."""
    import io

    sys.path.insert(0, str(REPO / "runner"))
    from mpsocks.playbook_run import Play, RunOptions, run_playbook
    from mpsocks.progress import Progress

    out = io.StringIO()
    display = Progress(out, long_task=3600)
    start = time.monotonic()
    result = run_playbook(playbook.stem, Play(playbook, REPO / "inventory" / "localhost.yml", extravars),
                          RunOptions(check=check, artifacts_dir=artifacts), display=display)
    return run_class(result.rc, out.getvalue(), time.monotonic() - start, display.calls)
