"""Run a playbook through ansible-runner: one artifacts folder per run, live events, a clean cancel."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mpsocks.progress import event_calls

KEEP_RUNS = 20  # run folders kept unless $MPSOCKS_KEEP_RUNS says otherwise
KEEP_RUNS_VARIABLE = "MPSOCKS_KEEP_RUNS"
CANCEL_GRACE = 5.0  # seconds ansible-playbook gets to stop its workers before it is killed
NO_COLOUR = {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
RUN_NAME = re.compile(r"\d{8}T\d{6}Z-.+")
RUN_TIME_FORMAT = "%Y%m%dT%H%M%SZ"  # the UTC start time a run folder's name begins with
#: What run_playbook records of a run in its folder, beside ansible-runner's files.
RECORD = "mpsocks-run.json"
_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = Path(__file__).resolve().parents[2]


#: Exit codes, ansible-playbook's where it has one.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_FAILED = 2  # a task failed
EXIT_NOT_UP = 3  # status or check: not up, or not all of it
EXIT_UNREACHABLE = 4  # a host could not be reached
EXIT_USAGE = 5  # bad command-line input; nothing was run
EXIT_BUSY = 6  # another run holds the target and --no-wait was given
EXIT_CANCELLED = 99  # Ctrl-C
EXIT_TIMEOUT = 124  # ran longer than --timeout (as GNU timeout says it)


@dataclass(frozen=True)
class Play:
    """What to run: a playbook, an inventory (a file, or a dict written into the run), extra vars, and
    the target it changes (one run at a time per target)."""

    playbook: Path
    inventory: Path | dict
    extravars: dict = field(default_factory=dict)
    target: str = "host"
    # Bookkeeping of the verb, done only when the run may change things (not --check), under the target's
    # lock: before the playbook starts, and after it succeeded.
    before_run: Callable[[], None] | None = None
    after_success: Callable[[], None] | None = None
    # Files copied into the run folder's KEPT before the playbook starts: the logs of what it removes.
    keep: tuple[Path, ...] = ()


def keep_runs() -> int:
    """How many run folders to keep: $MPSOCKS_KEEP_RUNS, else KEEP_RUNS; ValueError unless a whole number
    of at least 1."""
    text = os.environ.get(KEEP_RUNS_VARIABLE, "").strip()
    if not text:
        return KEEP_RUNS
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{KEEP_RUNS_VARIABLE}={text!r} is not a number of runs to keep "
                         "(a whole number, at least 1)")
    return int(text)


@dataclass(frozen=True)
class RunOptions:
    """How to run it: ansible-playbook's --check, --diff and -v, the base folder of the runs, a time
    limit, and how many runs to keep (read from $MPSOCKS_KEEP_RUNS when the options are made)."""

    check: bool = False
    diff: bool = False
    verbosity: int = 0
    artifacts_dir: Path | None = None  # None: default_artifacts_dir()
    timeout: float | None = None  # seconds the play may run before it is cancelled
    keep_runs: int = field(default_factory=keep_runs)


@dataclass(frozen=True)
class RunResult:
    """How a run ended: ansible-runner's status, ansible-playbook's rc and the run's folder."""

    status: str  # successful, failed, canceled or timeout
    rc: int | None
    artifacts: Path

    @property
    def exit_code(self) -> int:
        """0 only for a successful play; EXIT_CANCELLED when cancelled, EXIT_TIMEOUT when it ran too long;
        else ansible-playbook's rc."""
        if self.status == "canceled":
            return EXIT_CANCELLED
        if self.status == "timeout":
            return EXIT_TIMEOUT
        if self.status == "successful" and self.rc == 0:
            return EXIT_OK
        return self.rc or EXIT_ERROR


def data_file(relative: str) -> Path:
    """A file the project ships, e.g. ``playbooks/host_network.yml``: package data, else the checkout."""
    for base in (_PACKAGE, _CHECKOUT):
        if (base / relative).is_file():
            return base / relative
    raise FileNotFoundError(f"{relative} is neither in {_PACKAGE} nor in {_CHECKOUT}")


def default_artifacts_dir() -> Path:
    """``$XDG_STATE_HOME/mpsocks/runs``, XDG_STATE_HOME defaulting to ``~/.local/state``."""
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "mpsocks" / "runs"


def run_label(name: str, target: str) -> str:
    """A run folder's name after its timestamp: the verb NAME, then the TARGET without the verb's first
    word (``lab-up``, ``lab-mpslab`` -> ``lab-up-mpslab``; ``up``, ``stack`` -> ``up-stack``), or NAME
    alone when it ends with that already (``build-kernel``)."""
    rest = target.removeprefix(f"{name.split('-')[0]}-")
    return name if name == rest or name.endswith(f"-{rest}") else f"{name}-{rest}"


def new_run_dir(base: Path, name: str, keep: int = KEEP_RUNS) -> Path:
    """A new ``<UTC timestamp>-<name>`` folder in BASE, linked as ``latest``; all but the KEEP newest
    runs go."""
    base.mkdir(parents=True, exist_ok=True)
    stem = f"{datetime.now(UTC):{RUN_TIME_FORMAT}}-{name}"
    for n in itertools.count():
        run_dir = base / (f"{stem}-{n}" if n else stem)
        with contextlib.suppress(FileExistsError):
            run_dir.mkdir(mode=0o700)
            break
    _prune(base, keep)
    link = base / f".latest-{os.getpid()}"
    link.unlink(missing_ok=True)
    link.symlink_to(run_dir.name)
    os.replace(link, base / "latest")
    return run_dir


def _prune(base: Path, keep: int) -> None:
    """Delete all but the KEEP newest run folders in BASE."""
    runs = sorted(p for p in base.iterdir() if RUN_NAME.fullmatch(p.name) and not p.is_symlink())
    for old in runs[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


#: The folder of a run that holds the files its play kept (Play.keep).
KEPT = "kept"


def keep_files(run_dir: Path, paths: tuple[Path, ...]) -> None:
    """Copy PATHS that exist into RUN_DIR/KEPT."""
    found = [path for path in paths if path.is_file()]
    if found:
        (run_dir / KEPT).mkdir()
        for path in found:
            shutil.copy2(path, run_dir / KEPT / path.name)


def run_playbook(
    name: str,
    play: Play,
    options: RunOptions | None = None,
    *,
    display: Callable[[dict], None] | None = None,
    cancel: threading.Event | None = None,
) -> RunResult:
    """Run PLAY in a new run folder named after NAME and the play's target (run_label).

    DISPLAY gets every ansible-runner event as it comes (none after a cancel); setting CANCEL
    stops ansible-playbook and its workers. A play running longer than the options' timeout is
    cancelled the same way (CANCEL is set), says so on stderr and ends with status ``timeout``.
    The run's RECORD says what ran, from where, how it ended and how many events DISPLAY got.
    """
    import ansible_runner  # here, so that the caller's Ctrl-C handling already covers the import

    options = options or RunOptions()
    cancel = cancel if cancel is not None else threading.Event()
    base = (options.artifacts_dir or default_artifacts_dir()).absolute()
    run_dir = new_run_dir(base, run_label(name, play.target), options.keep_runs)
    record = {"name": name, "target": play.target, "argv": sys.argv, "pid": os.getpid(),
              "timeout": options.timeout, "started": datetime.now(UTC).isoformat()}
    _write_record(run_dir, record)
    keep_files(run_dir, play.keep)
    stopper = _Stopper(cancel)
    shown = {"events_shown": 0, "module_calls": 0}  # what DISPLAY got (its summary counts the same calls)

    def on_event(event: dict) -> bool:
        stopper.watch(event)
        if not cancel.is_set():
            shown["events_shown"] += 1
            shown["module_calls"] += event_calls(event)
            if display is not None:
                display(event)
        return True  # ansible-runner keeps only the events its handler returns True for

    with _time_limit(options.timeout, cancel) as timed_out:
        runner = ansible_runner.run(
            private_data_dir=str(run_dir),
            artifact_dir=str(run_dir.parent),
            ident=run_dir.name,
            binary=_ansible_playbook(),
            cmdline=shlex.join(_playbook_args(play, options)),
            inventory=play.inventory if isinstance(play.inventory, dict) else str(play.inventory),
            extravars=play.extravars,
            verbosity=options.verbosity,
            envvars=NO_COLOUR,
            settings={"pexpect_timeout": 0.2},  # how often ansible-runner asks the cancel callback
            quiet=True,
            event_handler=on_event,
            cancel_callback=stopper,
        )
    if cancel.is_set():
        stopper.finish()
    status = "timeout" if timed_out.is_set() else "canceled" if cancel.is_set() else runner.status
    result = RunResult(status, runner.rc, run_dir)
    _write_record(run_dir, record | shown | {
        "finished": datetime.now(UTC).isoformat(), "status": status, "rc": runner.rc,
        "exit_code": result.exit_code})
    if timed_out.is_set():
        print(f"mpsocks-run: error: timed out after {options.timeout:g} s", file=sys.stderr, flush=True)
    return result


@contextlib.contextmanager
def _time_limit(seconds: float | None, cancel: threading.Event) -> Iterator[threading.Event]:
    """While inside, set CANCEL once SECONDS (None: no limit) have passed, unless it is set already;
    the yielded event tells whether that happened."""
    timed_out = threading.Event()

    def time_out() -> None:
        if not cancel.is_set():
            timed_out.set()
            cancel.set()

    timer = threading.Timer(seconds, time_out) if seconds else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield timed_out
    finally:
        if timer is not None:
            timer.cancel()


def _write_record(run_dir: Path, record: dict) -> None:
    """Write RECORD as the run folder's RECORD file, whole or not at all."""
    partial = run_dir / f".{RECORD}.tmp"
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, run_dir / RECORD)


def run_module(inventory: dict, host: str, module: str, args: dict) -> dict:
    """Run MODULE with ARGS once on HOST of INVENTORY (``ansible`` ad hoc, its run folder thrown away) and
    return its result; raises ModuleUnreachable with Ansible's message when HOST cannot be reached."""
    import ansible_runner

    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
    with tempfile.TemporaryDirectory(prefix="mpsocks-module.") as private:
        runner = ansible_runner.run(  # its ``ansible``: the one beside this Python (the virtualenv's) first
            private_data_dir=private, inventory=inventory, host_pattern=host, module=module,
            module_args=json.dumps(args) if args else None, envvars={**NO_COLOUR, "PATH": path}, quiet=True)
        for event in runner.events:
            result = event.get("event_data", {}).get("res")
            if event["event"] == "runner_on_unreachable":
                message = (result or {}).get("msg", "unreachable")
                raise ModuleUnreachable(f"{host}: {' '.join(message.split())}")
            if event["event"] in ("runner_on_ok", "runner_on_failed"):
                return result
    raise ModuleUnreachable(f"{host}: {module} gave no result (ansible exit status {runner.rc})")


class ModuleUnreachable(Exception):
    """run_module() got no result from its host."""


def _ansible_playbook() -> str:
    """The ansible-playbook next to this Python (the virtualenv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.exists() else "ansible-playbook"


def _playbook_args(play: Play, options: RunOptions) -> list[str]:
    """The playbook and the mode flags (ansible-runner adds -i, -e and -v)."""
    args = [str(play.playbook)]
    if options.check:
        args.append("--check")
    if options.diff:
        args.append("--diff")
    return args


class _Stopper:
    """ansible-runner's cancel_callback: once CANCEL is set, SIGINT ansible-playbook, as Ctrl-C would.

    ansible-playbook then ends its workers and their commands, which run in sessions of their own
    out of reach of ansible-runner's SIGKILL to ansible-playbook's process group. That kill comes
    only after CANCEL_GRACE seconds, or at once if ansible-playbook has not started the playbook.
    `finish` then kills whatever of the workers' process groups outlived the grace (a command that
    ignores SIGINT, or a worker that was killed before it passed the signal on).
    """

    def __init__(self, cancel: threading.Event):
        self.cancel = cancel
        self.pid: int | None = None
        self.since: float | None = None
        self.groups: set[int] = set()

    def watch(self, event: dict) -> None:
        """Learn ansible-playbook's pid from its first callback event."""
        if event.get("event") == "playbook_on_start":
            self.pid = event.get("pid")

    def __call__(self) -> bool:
        if not self.cancel.is_set():
            return False
        if self.pid is None:
            return True
        if self.since is None:
            self.since = time.monotonic()
            self.groups = _descendant_groups(self.pid) - {os.getpgrp()}
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)
        return time.monotonic() - self.since > CANCEL_GRACE

    def finish(self) -> None:
        """Wait out the grace for the workers' process groups, then SIGKILL those still there."""
        alive = _wait_gone(self.groups, (self.since or time.monotonic()) + CANCEL_GRACE)
        for group in alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        _wait_gone(alive, time.monotonic() + 2)  # a kill takes effect a moment after it is sent


def _wait_gone(groups: set[int], deadline: float) -> set[int]:
    """Wait until no process of GROUPS runs, or until DEADLINE; return the groups still running."""
    while (groups := {group for group in groups if _group_alive(group)}) and time.monotonic() < deadline:
        time.sleep(0.02)
    return groups


def _process_table() -> dict[int, tuple[int, int, str]]:
    """Every process's parent, process group and state, from /proc."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            table[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def _descendant_groups(pid: int) -> set[int]:
    """The process groups of PID and of all its descendants."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _group, _state) in table.items():
        children.setdefault(parent, []).append(child)
    groups, todo = set(), [pid]
    while todo:
        current = todo.pop()
        if current in table:
            groups.add(table[current][1])
        todo.extend(children.get(current, []))
    return groups


def _group_alive(group: int) -> bool:
    """Whether a process of GROUP is still running (zombies, whose parent went, do not count)."""
    return any(g == group and state != "Z" for _parent, g, state in _process_table().values())
