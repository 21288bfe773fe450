"""``mpsocks-run runs list|show|replay``: the run folders of past runs, newest last."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from mpsocks.playbook_run import (
    EXIT_OK,
    EXIT_USAGE,
    RECORD,
    RUN_NAME,
    RUN_TIME_FORMAT,
    RunResult,
    default_artifacts_dir,
)
from mpsocks.progress import LONG_TASK, Progress, ansible_columns, recap_lines

PROG = "mpsocks-run"
_RUN_HELP = ("a run folder's name; its end, such as lab-up-mpslab (the newest run of that verb and target); "
             "a unique start of it; latest (the default); or -N, the Nth newest (-1 is the newest)")
_EXAMPLES = """\
examples:
  mpsocks-run runs list
  mpsocks-run runs show -2
  mpsocks-run runs replay lab-up-mpslab
  MPSOCKS_KEEP_RUNS=100 mpsocks-run lab up      # keep the 100 newest runs instead of 20"""
_COLUMNS = ("run", "started", "verb", "target", "status", "exit_code", "duration", "module_calls")
_HEADINGS = ("RUN", "STARTED (UTC)", "VERB", "TARGET", "STATUS", "EXIT", "TOOK", "CALLS")
_EVENT_FILE = re.compile(r"(\d+)-.+\.json")


class UnknownRun(Exception):
    """RUN names no kept run, or several."""


def add_parser(verbs) -> None:
    """Register the ``runs`` verb on the subparsers object VERBS."""
    parser = verbs.add_parser(
        "runs", help="the kept runs: list them, show one, replay its progress lines",
        description="The run folders of past runs: ansible-runner's files and what mpsocks-run recorded of "
                    "each run.\nThey are in $XDG_STATE_HOME/mpsocks/runs unless --artifacts-dir says "
                    "otherwise; the newest\n$MPSOCKS_KEEP_RUNS of them (default: 20) are kept.",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    listing = _action(actions, "list", list_command, "a line per kept run, newest last: its start, verb, "
                      "target, status, exit status, duration and module calls",
                      "mpsocks-run runs list --json")
    listing.add_argument("--json", action="store_true", help="print the runs as a JSON list")
    for name, command, summary, example in (
        ("show", show_command, "one run: its command line, playbook, inventory, extra vars, how it ended, "
         "Ansible's recap and where its files are", "mpsocks-run runs show -2"),
        ("replay", replay_command, "print the progress lines a run printed, from its saved events: the same "
         "task lines, times and recap", "mpsocks-run runs replay lab-up-mpslab"),
    ):
        _action(actions, name, command, summary, example).add_argument(
            "run", nargs="?", default="latest", metavar="RUN", help=_RUN_HELP)


def _action(actions, name: str, command, summary: str, example: str) -> argparse.ArgumentParser:
    """Register action NAME of ``runs``, run as COMMAND(args), with --artifacts-dir; returns its parser."""
    parser = actions.add_parser(name, help=summary, description=f"{summary[0].upper()}{summary[1:]}.",
                                epilog=f"example:\n  {example}",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts-dir", type=Path, metavar="DIR", default=argparse.SUPPRESS,
                        help="base folder of the run folders (default: $XDG_STATE_HOME/mpsocks/runs)")
    parser.set_defaults(command=command)
    return parser


def list_command(args: argparse.Namespace) -> int:
    """``runs list``: a table (or JSON) of the kept runs."""
    summaries = [run_summary(run_dir) for run_dir in run_dirs(_base(args))]
    print(json.dumps(summaries, indent=2) if args.json else format_runs(summaries), flush=True)
    return EXIT_OK


def show_command(args: argparse.Namespace) -> int:
    """``runs show [RUN]``: one run in detail."""
    return _with_run(args, lambda run_dir: print(format_run(run_dir), flush=True))


def replay_command(args: argparse.Namespace) -> int:
    """``runs replay [RUN]``: the run's progress lines, as it printed them."""
    return _with_run(args, lambda run_dir: replay(run_dir, sys.stdout))


def _with_run(args: argparse.Namespace, action) -> int:
    try:
        run_dir = find_run(_base(args), args.run)
    except UnknownRun as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    action(run_dir)
    return EXIT_OK


def _base(args: argparse.Namespace) -> Path:
    return (args.artifacts_dir or default_artifacts_dir()).absolute()


# Finding runs -----------------------------------------------------------------------------------


def run_dirs(base: Path) -> list[Path]:
    """The run folders in BASE, oldest first."""
    if not base.is_dir():
        return []
    return sorted(path for path in base.iterdir()
                  if RUN_NAME.fullmatch(path.name) and path.is_dir() and not path.is_symlink())


def find_run(base: Path, run: str) -> Path:
    """The run folder RUN names in BASE: a folder name, the end of one (the newest run of that verb and
    target, e.g. ``lab-up-mpslab``), a unique start of one, ``latest``, or ``-N`` (the Nth newest);
    UnknownRun otherwise."""
    runs = run_dirs(base)
    if not runs:
        raise UnknownRun(f"no runs in {base}")
    if run == "latest":
        link = base / "latest"
        named = base / os.readlink(link) if link.is_symlink() else None
        return named if named in runs else runs[-1]
    if re.fullmatch(r"-\d+", run):
        if not 1 <= -int(run) <= len(runs):
            raise UnknownRun(f"run {run}: there are {len(runs)} runs in {base}")
        return runs[int(run)]
    ends = [path for path in runs if path.name.endswith(run)]
    if ends:  # a folder name, or its verb and target: the newest of them
        return ends[-1]
    matches = [path for path in runs if path.name.startswith(run)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UnknownRun(f"no run {run!r} in {base} (mpsocks-run runs list shows them)")
    raise UnknownRun(f"{run!r} matches {len(matches)} runs: {', '.join(path.name for path in matches)}")


# What a run folder says -------------------------------------------------------------------------


def record(run_dir: Path) -> dict:
    """What run_playbook recorded of the run ({} for a run from before it did)."""
    return _json(run_dir / RECORD) or {}


def run_summary(run_dir: Path) -> dict:
    """A run's line of ``runs list``: its name, start (UTC, ISO 8601), verb, target, status, exit code,
    duration in seconds and module calls (None where not known)."""
    recorded = record(run_dir)
    started = _time(recorded.get("started")) or datetime.strptime(
        run_dir.name[:16], RUN_TIME_FORMAT).replace(tzinfo=UTC)
    finished = _time(recorded.get("finished")) or _modified(run_dir / "status")  # written at the end
    status = run_status(run_dir, recorded)
    rc = _text(run_dir / "rc")
    exit_code = recorded.get("exit_code")
    if exit_code is None and rc is not None and rc.lstrip("-").isdigit():
        exit_code = RunResult(status, int(rc), run_dir).exit_code
    return {
        "run": run_dir.name,
        "path": str(run_dir),
        "started": started.isoformat(),
        "verb": recorded.get("name", run_dir.name[17:]),
        "target": recorded.get("target"),
        "status": status,
        "exit_code": exit_code,
        "duration": round((finished - started).total_seconds(), 1) if finished else None,
        "module_calls": recorded.get("module_calls"),
    }


def run_status(run_dir: Path, recorded: dict) -> str:
    """How the run ended (successful, failed, canceled, timeout), else ``running`` while its mpsocks-run
    process lives, ``interrupted`` when that process went without finishing it."""
    status = recorded.get("status") or _text(run_dir / "status")
    if status:
        return status
    pid = recorded.get("pid")
    if pid is None:
        return "unknown"
    return "running" if Path(f"/proc/{pid}").exists() else "interrupted"


def format_runs(summaries: list[dict]) -> str:
    """``runs list``'s table."""
    rows = [_HEADINGS, *(tuple(_cell(column, run[column]) for column in _COLUMNS) for run in summaries)]
    widths = [max(len(row[n]) for row in rows) for n in range(len(_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def _cell(column: str, value) -> str:
    if value is None:
        return "-"
    if column == "started":
        return f"{datetime.fromisoformat(value):%Y-%m-%d %H:%M:%S}"
    if column == "duration":
        return f"{value:.1f} s"
    return str(value)


def format_run(run_dir: Path) -> str:
    """``runs show``'s text: command, playbook, inventory, extra vars, status, recap and files."""
    recorded, summary = record(run_dir), run_summary(run_dir)
    command = (_json(run_dir / "command") or {}).get("command") or []
    argv = recorded.get("argv")
    exit_code = summary["exit_code"]
    lines = [
        f"run:        {run_dir.name}",
        f"command:    {shlex.join([Path(argv[0]).name, *argv[1:]]) if argv else '-'}",
        f"verb:       {summary['verb']}" + (f" (target {summary['target']})" if summary["target"] else ""),
        f"playbook:   {command[1] if len(command) > 1 else '-'}",
        f"inventory:  {_after(command, '-i') or '-'}",
        f"extra vars: {json.dumps(_json(run_dir / 'env' / 'extravars') or {})}",
    ]
    modes = [arg for arg in command[2:] if arg in ("--check", "--diff") or re.fullmatch(r"-v+", arg)]
    if recorded.get("timeout"):
        modes += ["--timeout", f"{recorded['timeout']:g}"]
    if modes:
        lines.append(f"options:    {' '.join(modes)}")
    took = f", took {summary['duration']:.1f} s" if summary["duration"] is not None else ""
    calls = f", {summary['module_calls']} module calls" if summary["module_calls"] is not None else ""
    lines += [
        f"status:     {summary['status']}" + (f", exit code {exit_code}" if exit_code is not None else ""),
        f"started:    {_cell('started', summary['started'])} UTC{took}{calls}",
        f"files:      {run_dir} ({', '.join(_entries(run_dir))})",
    ]
    stats = [event for event in saved_events(run_dir) if event["event"] == "playbook_on_stats"]
    if stats:
        lines += recap_lines(stats[-1]["event_data"], ansible_columns(sys.stdout))[:-1]
    return "\n".join(lines)


def _entries(run_dir: Path) -> list[str]:
    """The names of RUN_DIR's files and folders/, hidden ones left out."""
    return sorted(path.name + ("/" if path.is_dir() else "") for path in run_dir.iterdir()
                  if not path.name.startswith("."))


def _after(words: list[str], option: str) -> str | None:
    return words[words.index(option) + 1] if option in words[:-1] else None


# Replay -----------------------------------------------------------------------------------------


def saved_events(run_dir: Path) -> list[dict]:
    """The events ansible-runner saved of the run (job_events/COUNTER-UUID.json), in counter order."""
    found = []
    for path in (run_dir / "job_events").glob("*.json"):
        match = _EVENT_FILE.fullmatch(path.name)
        if match and not path.name.endswith("-partial.json"):
            found.append((int(match[1]), path))
    return [json.loads(path.read_text()) for _counter, path in sorted(found)]


def replay(run_dir: Path, out: TextIO, long_task: float = LONG_TASK) -> None:
    """Print to OUT what the run's display printed, from its saved events (those it got before a cancel),
    and then the summary line mpsocks-run printed after it."""
    recorded = record(run_dir)
    command = (_json(run_dir / "command") or {}).get("command") or []
    verbose = any(re.fullmatch(r"-v+", arg) for arg in command)
    progress = Progress(out, verbose=verbose, diff="--diff" in command, long_task=long_task, replay=True)
    shown = recorded.get("events_shown")
    for event in saved_events(run_dir):
        if shown is not None and event["counter"] > shown:
            break
        progress(event)
    finished = _time(recorded.get("finished"))
    if finished is not None:
        progress.end(finished)
    print(f"{progress.summary()}; artifacts: {run_dir}", file=out, flush=True)


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _modified(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
