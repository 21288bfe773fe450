"""Real ansible-runner runs of the test playbooks: exit codes, modes, artifacts, cancel."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from itertools import count
from pathlib import Path

import pytest
from mpsocks_testlib import runner_env

RUNNER = Path(__file__).resolve().parents[2] / "runner"
sys.path.insert(0, str(RUNNER))

from mpsocks import playbook_run  # noqa: E402
from mpsocks.playbook_run import Play, RunOptions, data_file, new_run_dir, run_playbook  # noqa: E402
from mpsocks.progress import RESULT_EVENTS  # noqa: E402

PLAYBOOKS = Path(__file__).resolve().parents[1] / "runner" / "playbooks"
INVENTORY = PLAYBOOKS.parent / "inventory.yml"
_SLEEPS = count()


def _run(tmp_path: Path, playbook: str, extravars: dict | None = None, **options):
    """Run test PLAYBOOK; returns the result and the events it displayed."""
    events: list[dict] = []
    play = Play(PLAYBOOKS / f"{playbook}.yml", INVENTORY, extravars or {})
    result = run_playbook(f"test-{playbook}", play, RunOptions(artifacts_dir=tmp_path, **options),
                          display=events.append)
    return result, events


def _results(events: list[dict]) -> list[dict]:
    return [event for event in events if event["event"] in RESULT_EVENTS]


def test_success_is_exit_code_0_with_artifacts_in_a_named_run_folder(tmp_path):
    result, events = _run(tmp_path, "ok")
    assert (result.status, result.rc, result.exit_code) == ("successful", 0, 0)
    assert result.artifacts.parent == tmp_path
    assert result.artifacts.name.endswith("Z-test-ok-host")
    assert (tmp_path / "latest").resolve() == result.artifacts
    assert (result.artifacts / "status").read_text() == "successful"
    assert "\x1b" not in (result.artifacts / "stdout").read_text()
    assert [event["event"] for event in _results(events)] == [
        "runner_on_ok", "runner_on_ok", "runner_on_ok", "runner_on_skipped"]


def test_a_failing_task_is_a_non_zero_exit_code(tmp_path):
    result, events = _run(tmp_path, "fail")
    assert (result.status, result.rc, result.exit_code) == ("failed", 2, 2)
    assert _results(events)[-1]["event_data"]["res"]["msg"] == "broken on purpose\nsecond line"


def test_check_diff_verbosity_and_the_callers_environment_reach_ansible(tmp_path, monkeypatch):
    monkeypatch.setenv("MPSOCKS_TEST_MARK", "passed through")
    result, events = _run(tmp_path, "modes", check=True, diff=True, verbosity=2)
    assert result.exit_code == 0
    assert _results(events)[0]["event_data"]["res"]["msg"] == {
        "check": True, "diff": True, "env": "passed through"}
    command = json.loads((result.artifacts / "command").read_text())["command"]
    assert command[0] == str(Path(sys.executable).parent / "ansible-playbook")
    assert {"--check", "--diff", "-vv"} <= set(command)


def test_no_modes_by_default(tmp_path):
    _, events = _run(tmp_path, "modes")
    assert _results(events)[0]["event_data"]["res"]["msg"]["check"] is False


def test_a_generated_inventory_is_written_into_the_run(tmp_path):
    inventory = {"all": {"hosts": {"generated": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}
    events: list[dict] = []
    play = Play(PLAYBOOKS / "target.yml", inventory, {"mpsocks_target": "generated"})
    result = run_playbook("generated", play, RunOptions(artifacts_dir=tmp_path), display=events.append)
    assert result.exit_code == 0
    assert _results(events)[0]["event_data"]["res"]["msg"] == "generated"
    assert json.loads((result.artifacts / "inventory" / "hosts.json").read_text()) == inventory


def test_runs_in_the_same_second_get_their_own_folders(tmp_path):
    first, second = new_run_dir(tmp_path, "same"), new_run_dir(tmp_path, "same")
    assert first != second and first.is_dir() and second.is_dir()
    assert (tmp_path / "latest").resolve() == second


def test_only_the_newest_runs_are_kept(tmp_path):
    old = [tmp_path / f"2000010{day}T0000{n:02d}Z-old" for day in (1, 2) for n in range(15)]
    for path in old:
        path.mkdir()
    (tmp_path / "notes.txt").write_text("not a run")
    newest = new_run_dir(tmp_path, "new")
    left = sorted(path for path in tmp_path.iterdir() if path.name.endswith(("-old", "-new")))
    assert left == sorted(old[-19:] + [newest])
    assert (tmp_path / "notes.txt").exists()


def test_default_artifacts_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert playbook_run.default_artifacts_dir() == tmp_path / "mpsocks" / "runs"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert playbook_run.default_artifacts_dir() == Path.home() / ".local" / "state" / "mpsocks" / "runs"


def test_shipped_files_resolve_from_the_checkout():
    assert data_file("playbooks/host_network.yml") == RUNNER.parent / "playbooks" / "host_network.yml"
    assert data_file("inventory/localhost.yml") == RUNNER.parent / "inventory" / "localhost.yml"
    with pytest.raises(FileNotFoundError, match="playbooks/nope.yml"):
        data_file("playbooks/nope.yml")


# Cancel ------------------------------------------------------------------------------------------


def _processes(program: str, arg: str) -> list[list[str]]:
    """The command lines of running PROGRAMs (a path's last part) given ARG."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(Path(word).name == program for word in argv[:2]) and arg in argv:
            found.append(argv)
    return found


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _seconds() -> str:
    """A sleep duration that names one test's sleep process."""
    return f"30.{os.getpid() % 1000:03d}{next(_SLEEPS):03d}"


def _left(artifacts: Path, seconds: str) -> list[list[str]]:
    """Any sleep SECONDS, and any ansible-playbook using a run folder in ARTIFACTS."""
    extravars = f"@{(artifacts / 'latest').resolve() / 'env' / 'extravars'}"
    return _processes("sleep", seconds) + _processes("ansible-playbook", extravars)


def _wait_until_nothing_left(artifacts: Path, seconds: str) -> None:
    deadline = time.monotonic() + 15
    while left := _left(artifacts, seconds):
        assert time.monotonic() < deadline, f"still running 15 s after the cancel: {left}"
        time.sleep(0.05)


def test_cancel_stops_ansible_playbook_and_its_commands(tmp_path):
    seconds = _seconds()
    cancel = threading.Event()
    cancelled_at: list[float] = []

    def cancel_once_sleeping():
        _wait_for(lambda: _processes("sleep", seconds))
        cancelled_at.append(time.monotonic())
        cancel.set()

    threading.Thread(target=cancel_once_sleeping, daemon=True).start()
    play = Play(PLAYBOOKS / "sleep.yml", INVENTORY, {"seconds": seconds})
    result = run_playbook("sleep", play, RunOptions(artifacts_dir=tmp_path), cancel=cancel)

    assert time.monotonic() - cancelled_at[0] < 8
    assert (result.status, result.exit_code) == ("canceled", 99)
    _wait_until_nothing_left(tmp_path, seconds)


def test_cancel_ends_a_command_that_ignores_ctrl_c(tmp_path):
    seconds = _seconds()
    cancel = threading.Event()
    threading.Thread(target=lambda: (_wait_for(lambda: _processes("sleep", seconds)), cancel.set()),
                     daemon=True).start()
    play = Play(PLAYBOOKS / "sleep_ignoring_ctrl_c.yml", INVENTORY, {"seconds": seconds})
    result = run_playbook("sleep", play, RunOptions(artifacts_dir=tmp_path), cancel=cancel)
    assert (result.status, result.exit_code) == ("canceled", 99)
    assert not _processes("sleep", seconds), "the sleep outlived the cancel"


def test_cancel_before_the_playbook_starts(tmp_path):
    cancel = threading.Event()
    cancel.set()
    started = time.monotonic()
    seconds = _seconds()
    play = Play(PLAYBOOKS / "sleep.yml", INVENTORY, {"seconds": seconds})
    result = run_playbook("sleep", play, RunOptions(artifacts_dir=tmp_path), cancel=cancel)
    assert (result.status, result.exit_code) == ("canceled", 99)
    assert time.monotonic() - started < 8
    _wait_until_nothing_left(tmp_path, seconds)


_SIGINT_SCRIPT = """
import sys
from pathlib import Path
from mpsocks import cli
from mpsocks.playbook_run import Play, RunOptions

playbook, inventory, seconds, artifacts = sys.argv[1:]
with cli.cancel_on_sigint() as cancel:
    play = Play(Path(playbook), Path(inventory), {"seconds": seconds})
    sys.exit(cli.run("sleep", play, RunOptions(artifacts_dir=Path(artifacts)), cancel))
"""


def test_ctrl_c_cancels_cleanly(tmp_path):
    seconds = _seconds()
    proc = subprocess.Popen(
        [sys.executable, "-c", _SIGINT_SCRIPT, str(PLAYBOOKS / "sleep.yml"), str(INVENTORY), seconds,
         str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=runner_env(), start_new_session=True,
    )
    try:
        _wait_for(lambda: _processes("sleep", seconds))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=8)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the wrapper and whatever it started
    assert proc.returncode == 99
    artifacts = re.escape(str((tmp_path / "latest").resolve()))
    assert re.fullmatch(rf"\d+ module calls? in [0-9.]+ s; artifacts: {artifacts}", out.splitlines()[-1]), out
    assert err.splitlines()[-1] == "cancelled"
    assert "Traceback" not in err + out
    _wait_until_nothing_left(tmp_path, seconds)


def test_run_module_gives_the_modules_result_or_says_the_host_is_unreachable():
    inventory = {"all": {"hosts": {
        "here": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        "nowhere": {"ansible_host": "127.0.0.1", "ansible_port": 9,
                    "ansible_ssh_common_args": "-o ConnectTimeout=5"},
    }}}
    assert playbook_run.run_module(inventory, "here", "ansible.builtin.ping", {"data": "hi"})["ping"] == "hi"
    failed = playbook_run.run_module(inventory, "here", "mpsocks.mptcp.mptcp_check",
                                     {"url": "http://127.0.0.1:9/"})
    assert failed["msg"] == "http://127.0.0.1:9/ does not answer: Connection refused"
    unreachable = r"^nowhere: .*port 9: Connection refused"
    with pytest.raises(playbook_run.ModuleUnreachable, match=unreachable) as raised:
        playbook_run.run_module(inventory, "nowhere", "ansible.builtin.ping", {})
    assert "\n" not in str(raised.value)
