"""ansible-runner events as lines: one per task result, a failure's message, warnings and debug
messages, a line per retry of an ``until`` task with its message, a line when a task takes long,
Ansible's recap, and what the run cost."""

from __future__ import annotations

import difflib
import json
import os
import sys
import threading
from datetime import datetime
from typing import TextIO

RESULT_EVENTS = ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped")
#: An attempt of an ``until`` task that will be tried again (Ansible's "FAILED - RETRYING").
RETRY_EVENT = "runner_retry"
ANSIBLE_COLUMNS = 79  # Ansible's banner width when its output is not a terminal (and its minimum)
_RECAP_FIELDS = (
    ("ok", "ok"),
    ("changed", "changed"),
    ("unreachable", "dark"),
    ("failed", "failures"),
    ("skipped", "skipped"),
    ("rescued", "rescued"),
    ("ignored", "ignored"),
)
_INDENT = " " * 9
#: Seconds a task may run before a line says it is still running.
LONG_TASK = 3.0
#: Actions Ansible runs on the controller alone: no module call on the managed host.
CONTROLLER_ACTIONS = {
    name for short in ("set_fact", "debug", "assert", "fail", "meta", "include_tasks", "import_tasks",
                       "include_role", "import_role", "include_vars", "add_host", "group_by", "set_stats",
                       "pause", "validate_argument_spec")
    for name in (short, f"ansible.builtin.{short}")
}
DEBUG_ACTIONS = {"debug", "ansible.builtin.debug"}
WARNING_PREFIXES = ("[WARNING]", "[DEPRECATION WARNING]")


def task_status(event: dict) -> str:
    """ok, changed, failed, ignored (a failure under ignore_errors), unreachable or skipped."""
    kind, data = event["event"], event["event_data"]
    if kind == "runner_on_ok":
        return "changed" if (data.get("res") or {}).get("changed") else "ok"
    if kind == "runner_on_failed" and data.get("ignore_errors"):
        return "ignored"
    return kind.removeprefix("runner_on_")


def task_title(data: dict) -> str:
    """The task's name as Ansible shows it: ``role : task`` for a task of a role."""
    role = data.get("resolved_role") or data.get("role")
    return f"{role} : {data.get('task')}" if role else str(data.get("task"))


def task_line(event: dict, elapsed: float) -> str:
    """``   12.3s changed     [host] role : task``."""
    data = event["event_data"]
    return f"{elapsed:7.1f}s {task_status(event):<11} [{data.get('host')}] {task_title(data)}"


def retry_line(event: dict, elapsed: float) -> str:
    """``  95.1s retrying    [localhost] role : task: MESSAGE``, MESSAGE the attempt's msg (else the last
    line of its stdout)."""
    data = event["event_data"]
    res = data.get("res") or {}
    stdout = str(res.get("stdout") or "").splitlines()
    message = " ".join(str(res.get("msg") or (stdout[-1] if stdout else "")).split())
    line = f"{elapsed:7.1f}s {'retrying':<11} [{data.get('host')}] {task_title(data)}"
    return f"{line}: {message}" if message else line


def failure_message(res: dict) -> str:
    """The module's msg (else its stderr) on one line; for a loop, the first failed or unreachable item's."""
    failed = [item for item in res.get("results") or []
              if isinstance(item, dict) and (item.get("failed") or item.get("unreachable"))]
    if not failed:
        return " ".join(str(res.get("msg") or res.get("stderr") or "no message").split())
    first = failed[0]
    more = f" (and {len(failed) - 1} more items)" if len(failed) > 1 else ""
    return f"{first.get('_ansible_item_label', first.get('item'))}: {failure_message(first)}{more}"


def diff_lines(res: dict) -> list[str]:
    """Unified diffs of what a changed result (or each changed loop item) reports, indented."""
    if res.get("results"):
        return [line for item in res["results"] if isinstance(item, dict) and item.get("changed")
                for line in diff_lines(item)]
    diffs = res.get("diff") or []
    lines = []
    for diff in diffs if isinstance(diffs, list) else [diffs]:
        before, after = _diff_text(diff.get("before")), _diff_text(diff.get("after"))
        if before == after:
            continue
        lines += difflib.unified_diff(before, after, lineterm="", n=99,
                                      fromfile=f"before: {diff.get('before_header', '')}",
                                      tofile=f"after: {diff.get('after_header', '')}")
    return [_INDENT + line for line in lines]


def _diff_text(value) -> list[str]:
    if isinstance(value, (dict, list)):
        return json.dumps(value, indent=2, sort_keys=True).splitlines()
    return str(value or "").splitlines()


def recap_line(host: str, stats: dict) -> str:
    """HOST's line of the recap, as Ansible's default callback prints it without colour."""
    counts = " ".join(f"{label}={(stats.get(key) or {}).get(host, 0)!s:<4}" for label, key in _RECAP_FIELDS)
    return f"{host:<26} : {counts}"


def banner(title: str, columns: int = ANSIBLE_COLUMNS) -> str:
    """Ansible's ``TITLE ****`` header, stars up to COLUMNS."""
    return f"{title} {'*' * max(3, columns - len(title))}"


def recap_lines(stats: dict, columns: int = ANSIBLE_COLUMNS) -> list[str]:
    """Ansible's PLAY RECAP block (blank line, banner, a line per host, blank line) from the stats event."""
    hosts = sorted(stats.get("processed") or {})
    return ["", banner("PLAY RECAP", columns), *(recap_line(host, stats) for host in hosts), ""]


def ansible_columns(out: TextIO) -> int:
    """The banner width Ansible would use writing to OUT: a terminal's width less one, at least 79."""
    try:
        width = os.get_terminal_size(out.fileno()).columns
    except (AttributeError, OSError, ValueError):
        width = 0
    return max(ANSIBLE_COLUMNS, width - 1)


def module_calls(event: dict) -> int:
    """How many module calls a task result stands for: one per loop item, none for controller actions."""
    data = event["event_data"]
    if event["event"] == "runner_on_skipped" or data.get("task_action") in CONTROLLER_ACTIONS:
        return 0
    items = (data.get("res") or {}).get("results")
    looped = [item for item in items if isinstance(item, dict) and "ansible_loop_var" in item] \
        if isinstance(items, list) else []
    if looped:  # a loop (a list module's own ``results`` are one call)
        return sum(1 for item in looped if not item.get("skipped"))
    return 1


def event_calls(event: dict) -> int:
    """How many module calls EVENT stands for: a task result's (module_calls), one for an attempt of an
    ``until`` task that will be tried again (the last one comes as the result)."""
    kind = event.get("event")
    if kind in RESULT_EVENTS:
        return module_calls(event)
    if kind == RETRY_EVENT and event["event_data"].get("task_action") not in CONTROLLER_ACTIONS:
        return 1
    return 0


class Progress:
    """An event display for run_playbook: task lines and the recap, or (VERBOSE) Ansible's own output.

    With DIFF, a changed result is followed by the diff its module reported. Warnings and the
    messages of debug tasks always show; a task that runs longer than LONG_TASK seconds gets a
    line saying so; the last line says how many module calls the run made and how long it took.
    An error outside a task result always shows (its first line).

    A REPLAY of saved events prints the same lines: a task's long-task line comes when the next
    event was created more than LONG_TASK seconds after the task started (or, for the last task,
    when `end` says the display ended that late).
    """

    def __init__(self, out: TextIO | None = None, verbose: bool = False, diff: bool = False,
                 long_task: float = LONG_TASK, replay: bool = False):
        self.out = out or sys.stdout
        self.verbose = verbose
        self.diff = diff
        self.long_task = long_task
        self.replay = replay
        self.play_start: datetime | None = None
        self.first: datetime | None = None
        self.last: datetime | None = None
        self.calls = 0
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._long_task_line: tuple[datetime, str] | None = None  # replay: when the task started, its line

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        created = _created(event) if event.get("created") else None
        if created is not None:
            self.first = self.first or created
            self.last = created
        if kind == "playbook_on_play_start":
            self.play_start = created
        self.calls += event_calls(event)
        if kind in ("playbook_on_task_start", "playbook_on_stats") or kind in RESULT_EVENTS:
            self._watch(event)
        self._print(self.lines(event))

    def _print(self, lines: list[str]) -> None:
        if lines:
            with self._lock:
                print(*lines, sep="\n", file=self.out, flush=True)

    def _watch(self, event: dict) -> None:
        """Forget the last task's long-task line (a replay prints it if EVENT came late enough); for a task
        that starts, say so if it runs long."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._long_task_line is not None:
            self.end(_created(event))
        if event["event"] == "playbook_on_task_start" and not self.verbose:
            title = task_title(event["event_data"])
            line = f"{'':8} {'running':<11} {title} (more than {self.long_task:g} s)"
            if self.replay:
                self._long_task_line = (_created(event), line)
            else:
                self._timer = threading.Timer(self.long_task, self._print, [[line]])
                self._timer.daemon = True
                self._timer.start()

    def stop(self) -> None:
        """No more events come (the run ended or was cancelled): a pending long-task line is dropped."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def end(self, at: datetime) -> None:
        """Replay: nothing came of the started task until AT; print its long-task line if that is late."""
        if self._long_task_line is not None:
            started, line = self._long_task_line
            self._long_task_line = None
            if (at - started).total_seconds() > self.long_task:
                self._print([line])

    def summary(self) -> str:
        """``12 module calls in 8.3 s``: what the run cost, from the events' own times."""
        took = (self.last - self.first).total_seconds() if self.first and self.last else 0.0
        return f"{self.calls} module call{'s' if self.calls != 1 else ''} in {took:.1f} s"

    def lines(self, event: dict) -> list[str]:
        """What to print for EVENT."""
        kind, stdout = event.get("event"), event.get("stdout") or ""
        if self.verbose:
            return [stdout.replace("\r\n", "\n")] if stdout else []
        if kind in RESULT_EVENTS:
            return self._result_lines(event)
        if kind == RETRY_EVENT:
            return [retry_line(event, self._since_play_start(event))]
        if kind == "playbook_on_stats":
            return recap_lines(event["event_data"], ansible_columns(self.out))
        if kind == "error" or (kind == "verbose" and stdout.startswith(("[ERROR]", "ERROR!"))):
            return stdout.splitlines()[:1]
        if stdout.lstrip().startswith(WARNING_PREFIXES):
            return [" ".join(stdout.split())]
        return []

    def _since_play_start(self, event: dict) -> float:
        created = _created(event)
        return (created - (self.play_start or created)).total_seconds()

    def _result_lines(self, event: dict) -> list[str]:
        lines = [task_line(event, self._since_play_start(event))]
        data = event["event_data"]
        res = data.get("res") or {}
        if event["event"] in ("runner_on_failed", "runner_on_unreachable"):
            lines.append(_INDENT + failure_message(res))
        elif data.get("task_action") in DEBUG_ACTIONS and "msg" in res:
            lines.append(_INDENT + " ".join(str(res["msg"]).split()))
        elif self.diff and res.get("changed"):
            lines += diff_lines(res)
        lines += [f"{_INDENT}[WARNING]: {' '.join(str(text).split())}" for text in res.get("warnings") or []]
        return lines


def _created(event: dict) -> datetime:
    return datetime.fromisoformat(event["created"])
