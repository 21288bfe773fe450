"""Run history on real runs of the test playbooks: run folder names, MPSOCKS_KEEP_RUNS, --timeout, and
``mpsocks-run runs list|show|replay``."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from mpsocks_testlib import runner_env

RUNNER = Path(__file__).resolve().parents[2] / "runner"
sys.path.insert(0, str(RUNNER))

from mpsocks import cli, lab, runs  # noqa: E402
from mpsocks.playbook_run import (  # noqa: E402
    EXIT_TIMEOUT,
    RECORD,
    Play,
    RunOptions,
    run_label,
    run_playbook,
)
from mpsocks.progress import Progress  # noqa: E402

PLAYBOOKS = Path(__file__).resolve().parents[1] / "runner" / "playbooks"
INVENTORY = PLAYBOOKS.parent / "inventory.yml"
#: A lab-like target of this test process's own: the runs take its lock, no real target's.
TARGET = f"lab-t{os.getpid()}"


def _live(tmp_path: Path, capsys, playbook: str, extravars: dict | None = None, **options) -> tuple:
    """Run test PLAYBOOK as mpsocks-run runs a verb (cli.run); returns its exit code, stdout and stderr."""
    play = Play(PLAYBOOKS / f"{playbook}.yml", INVENTORY, extravars or {}, target=TARGET)
    code = cli.run("lab-up", play, RunOptions(artifacts_dir=tmp_path, **options), threading.Event())
    return code, *capsys.readouterr()


def _runs(capsys, tmp_path: Path, *argv: str) -> tuple:
    """``mpsocks-run runs ARGV --artifacts-dir TMP_PATH``: its exit code, stdout and stderr."""
    code = cli.main(["runs", *argv, "--artifacts-dir", str(tmp_path)])
    return code, *capsys.readouterr()


def _folders(tmp_path: Path) -> list[str]:
    return sorted(path.name for path in tmp_path.iterdir() if path.name != "latest")


@pytest.mark.parametrize(("name", "target", "label"), [
    ("lab-up", "lab-mpslab", "lab-up-mpslab"),
    ("lab-down", "lab-mpslab", "lab-down-mpslab"),
    ("up", "stack", "up-stack"),
    ("host-up", "host", "host-up-host"),
    ("host-down", "host-netns-ns1", "host-down-netns-ns1"),
    ("build-kernel", "build-kernel", "build-kernel"),
    ("lab-experiment-net-neutrality", "lab-mpsnn", "lab-experiment-net-neutrality-mpsnn"),
    ("lab-experiment-down", "stack", "lab-experiment-down-stack"),
])
def test_run_labels_name_the_verb_and_the_target_without_stutter(name, target, label):
    assert run_label(name, target) == label


def test_a_run_folder_is_named_after_its_verb_and_target_and_linked_as_latest(tmp_path, capsys):
    code, out, _ = _live(tmp_path, capsys, "ok")
    [folder] = _folders(tmp_path)
    assert code == 0
    assert re.fullmatch(rf"\d{{8}}T\d{{6}}Z-lab-up-t{os.getpid()}", folder)
    assert os.readlink(tmp_path / "latest") == folder
    assert re.fullmatch(rf"1 module call in [0-9.]+ s; artifacts: {re.escape(str(tmp_path / folder))}",
                        out.splitlines()[-1])


@pytest.mark.parametrize(("playbook", "options"), [
    ("ok", {}),
    ("fail", {}),
    ("recap", {}),
    ("modes", {"check": True, "diff": True}),
    ("ok", {"verbosity": 1}),
])
def test_replay_prints_what_the_run_printed(tmp_path, capsys, playbook, options):
    live_code, live, _ = _live(tmp_path, capsys, playbook, **options)
    code, replayed, err = _runs(capsys, tmp_path, "replay")
    assert (live_code != 0) == (playbook in ("fail", "recap"))
    assert (code, err) == (0, "")
    assert replayed == live
    assert "PLAY RECAP" in live


def test_replay_shows_a_long_tasks_line_where_the_run_did(tmp_path):
    live = io.StringIO()
    play = Play(PLAYBOOKS / "sleep.yml", INVENTORY, {"seconds": "1.5"}, target=TARGET)
    display = Progress(live, long_task=0.5)
    result = run_playbook("test-up", play, RunOptions(artifacts_dir=tmp_path), display=display)
    replayed = io.StringIO()
    runs.replay(result.artifacts, replayed, long_task=0.5)
    assert "         running     Sleep (more than 0.5 s)" in live.getvalue().splitlines()
    assert replayed.getvalue() == f"{live.getvalue()}{display.summary()}; artifacts: {result.artifacts}\n"


def test_runs_list_says_how_each_run_went_newest_last(tmp_path, capsys):
    _live(tmp_path, capsys, "ok")
    _live(tmp_path, capsys, "fail")
    code, out, err = _runs(capsys, tmp_path, "list", "--json")
    listed = json.loads(out)
    assert (code, err) == (0, "")
    assert [run["run"] for run in listed] == _folders(tmp_path)
    assert [(run["verb"], run["target"], run["status"], run["exit_code"], run["module_calls"])
            for run in listed] == [("lab-up", TARGET, "successful", 0, 1), ("lab-up", TARGET, "failed", 2, 0)]
    for run in listed:
        assert datetime.fromisoformat(run["started"]).strftime("%Y%m%dT%H%M%SZ") == run["run"][:16]
        assert 0 < run["duration"] < 60
        assert run["path"] == str(tmp_path / run["run"])

    code, out, _ = _runs(capsys, tmp_path, "list")
    header, *lines = out.splitlines()
    assert header.split()[:3] == ["RUN", "STARTED", "(UTC)"]
    assert [line.split()[0] for line in lines] == _folders(tmp_path)
    assert lines[1].split()[3:8] == ["lab-up", TARGET, "failed", "2", f"{listed[1]['duration']:.1f}"]


def test_runs_show_gives_the_command_playbook_status_recap_and_files(tmp_path, capsys):
    _live(tmp_path, capsys, "ok")
    _live(tmp_path, capsys, "fail")
    first, second = _folders(tmp_path)
    code, out, _ = _runs(capsys, tmp_path, "show")
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == f"run:        {second}"
    assert lines[1].startswith("command:    ")
    assert f"playbook:   {PLAYBOOKS / 'fail.yml'}" in lines
    assert f"inventory:  {INVENTORY}" in lines
    assert "status:     failed, exit code 2" in lines
    assert f"verb:       lab-up (target {TARGET})" in lines
    assert any(line.startswith(f"files:      {tmp_path / second} (") and "job_events/" in line
               and RECORD in line for line in lines)
    recap = lines[lines.index(next(line for line in lines if line.startswith("PLAY RECAP"))) + 1]
    assert recap.startswith("localhost") and "failed=1" in recap
    for name in ("-2", first):
        assert _runs(capsys, tmp_path, "show", name)[1].splitlines()[0] == f"run:        {first}"
    assert _runs(capsys, tmp_path, "show", "-1")[1].splitlines()[0] == f"run:        {second}"


def test_runs_show_takes_a_unique_prefix_or_suffix(tmp_path, capsys):
    _live(tmp_path, capsys, "ok")
    [folder] = _folders(tmp_path)
    for name in (folder[:8], f"up-t{os.getpid()}", "latest"):
        assert _runs(capsys, tmp_path, "show", name)[1].splitlines()[0] == f"run:        {folder}"


def test_a_verb_and_target_name_the_newest_of_their_runs(tmp_path, capsys):
    (tmp_path / "20260101T000000Z-lab-up-mpslab").mkdir()
    (tmp_path / "20260101T000001Z-lab-up-mpslab").mkdir()
    (tmp_path / "20260101T000002Z-lab-down-mpslab").mkdir()
    shown = _runs(capsys, tmp_path, "show", "lab-up-mpslab")[1].splitlines()[0]
    assert shown == "run:        20260101T000001Z-lab-up-mpslab"


@pytest.mark.parametrize(("argv", "message"), [
    (["show", "nosuchrun"], "no run 'nosuchrun' in "),
    (["replay", "-3"], "run -3: there are 2 runs in "),
    (["show", "2"], "'2' matches 2 runs: "),
])
def test_an_unknown_run_is_one_line_exit_5(tmp_path, capsys, argv, message):
    (tmp_path / "20260101T000000Z-old-a").mkdir()
    (tmp_path / "20260101T000001Z-old-b").mkdir()
    code, out, err = _runs(capsys, tmp_path, *argv)
    assert (code, out) == (5, "")
    assert err.count("\n") == 1 and err.startswith(f"mpsocks-run: error: {message}")


def test_no_runs_at_all_is_one_line_exit_5(tmp_path, capsys):
    code, out, err = _runs(capsys, tmp_path / "none", "show")
    assert (code, out, err) == (5, "", f"mpsocks-run: error: no runs in {tmp_path / 'none'}\n")
    assert _runs(capsys, tmp_path / "none", "list") == (0, "RUN  STARTED (UTC)  VERB  TARGET  STATUS  EXIT  "
                                                           "TOOK  CALLS\n", "")


def test_a_run_without_an_end_is_running_while_its_process_lives(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    for pid, status in ((os.getpid(), "running"), (gone.pid, "interrupted")):
        run_dir = tmp_path / f"20260101T000000Z-lab-up-{status}"
        run_dir.mkdir()
        (run_dir / RECORD).write_text(json.dumps({"name": "lab-up", "pid": pid,
                                                  "started": "2026-01-01T00:00:00+00:00"}))
        assert runs.run_summary(run_dir)["status"] == status
        assert runs.run_summary(run_dir)["exit_code"] is None


def test_only_mpsocks_keep_runs_runs_are_kept(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MPSOCKS_KEEP_RUNS", "2")
    made = []
    for _ in range(3):
        _live(tmp_path, capsys, "ok")
        made.append(os.readlink(tmp_path / "latest"))
    assert _folders(tmp_path) == made[1:]
    assert [run["run"] for run in json.loads(_runs(capsys, tmp_path, "list", "--json")[1])] == made[1:]


@pytest.mark.parametrize("value", ["0", "-3", "many", "2.5"])
def test_a_bad_mpsocks_keep_runs_is_one_line_before_anything_runs(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("MPSOCKS_KEEP_RUNS", value)
    monkeypatch.setattr(cli, "run", lambda *args, **kwargs: pytest.fail("a run started"))
    assert cli.main(["host", "down", "--artifacts-dir", str(tmp_path / "runs")]) == 5
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"mpsocks-run: error: MPSOCKS_KEEP_RUNS={value!r} is not a number of runs to keep")
    with pytest.raises(ValueError, match="MPSOCKS_KEEP_RUNS"):
        run_playbook("test-up", Play(PLAYBOOKS / "ok.yml", INVENTORY), RunOptions(artifacts_dir=tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["--timeout", "2", "host", "down"], ["host", "down", "--timeout", "2"]])
def test_timeout_goes_before_or_after_the_verb(argv):
    assert cli.run_options(cli.build_parser().parse_args(argv)).timeout == 2.0
    assert cli.run_options(cli.build_parser().parse_args(["host", "down"])).timeout is None


@pytest.mark.parametrize("seconds", ["0", "-1", "soon", "inf"])
def test_a_bad_timeout_is_one_line_exit_5(tmp_path, capsys, monkeypatch, seconds):
    monkeypatch.setattr(cli, "run", lambda *args, **kwargs: pytest.fail("a run started"))
    assert cli.main(["host", "down", "--timeout", seconds, "--artifacts-dir", str(tmp_path)]) == 5
    err = capsys.readouterr().err
    assert err == f"mpsocks-run: error: argument --timeout: {seconds!r} is not a number of seconds above 0 " \
                  "(see 'mpsocks-run host down --help')\n"


_TIMEOUT_SCRIPT = """
import sys
from pathlib import Path
from mpsocks import cli
from mpsocks.playbook_run import Play, RunOptions

playbook, inventory, seconds, artifacts, target = sys.argv[1:]
with cli.cancel_on_sigint() as cancel:
    play = Play(Path(playbook), Path(inventory), {"seconds": seconds}, target=target)
    sys.exit(cli.run("test-up", play, RunOptions(artifacts_dir=Path(artifacts), timeout=2), cancel))
"""


def test_a_play_running_longer_than_its_timeout_is_cancelled(tmp_path, capsys):
    seconds = f"30.{os.getpid() % 1000:03d}777"
    started = time.monotonic()
    argv = [sys.executable, "-c", _TIMEOUT_SCRIPT, str(PLAYBOOKS / "sleep.yml"), str(INVENTORY), seconds,
            str(tmp_path), TARGET]
    proc = subprocess.run(argv, capture_output=True, text=True, env=runner_env(), timeout=60)
    took = time.monotonic() - started
    assert proc.returncode == EXIT_TIMEOUT, proc.stdout + proc.stderr
    assert took < 8, took
    assert proc.stderr.splitlines()[-1] == "mpsocks-run: error: timed out after 2 s"
    assert "cancelled" not in proc.stderr
    run_dir = tmp_path / os.readlink(tmp_path / "latest")
    assert re.fullmatch(rf"\d+ module calls? in [0-9.]+ s; artifacts: {re.escape(str(run_dir))}",
                        proc.stdout.splitlines()[-1])
    assert not subprocess.run(["pgrep", "-f", f"sleep {seconds}"], capture_output=True).stdout
    [listed] = json.loads(_runs(capsys, tmp_path, "list", "--json")[1])
    assert (listed["status"], listed["exit_code"]) == ("timeout", EXIT_TIMEOUT)
    assert 2 <= listed["duration"] < 8
    assert "options:    --timeout 2" in _runs(capsys, tmp_path, "show")[1].splitlines()
    assert _runs(capsys, tmp_path, "replay")[1] == proc.stdout


def test_a_play_keeps_the_logs_of_what_it_removes(tmp_path, capsys):
    """lab down and down keep the logs of the servers they stop in their run folder; lab status of a lab
    that is down names them."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "check.log").write_text("check: listening\n")
    runs_dir = tmp_path / "runs"
    play = Play(PLAYBOOKS / "ok.yml", INVENTORY, {}, target=f"lab-t{os.getpid()}",
                keep=(logs / "check.log", logs / "gone.log"))
    assert cli.run("lab-down", play, RunOptions(artifacts_dir=runs_dir), threading.Event()) == 0
    capsys.readouterr()
    [folder] = _folders(runs_dir)
    assert sorted(p.name for p in (runs_dir / folder / "kept").iterdir()) == ["check.log"]
    assert (runs_dir / folder / "kept" / "check.log").read_text() == "check: listening\n"
    assert lab.last_logs(f"t{os.getpid()}", runs_dir) == runs_dir / folder / "kept"
    assert lab.last_logs("never", runs_dir) is None
    cli_play = cli.build_parser().parse_args(["lab", "down", "--name", "never"])
    assert cli_play.play(cli_play).keep == ()
