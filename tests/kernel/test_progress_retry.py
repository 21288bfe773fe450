"""mpsocks-run's display shows each retry of an ``until`` task with its message (the kernel build's
object count comes that way), and counts each attempt as a module call."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from mpsocks_testlib import REPO

sys.path.insert(0, str(REPO / "runner"))

from mpsocks.playbook_run import Play, RunOptions, run_playbook  # noqa: E402
from mpsocks.progress import Progress, retry_line  # noqa: E402

INVENTORY = REPO / "inventory" / "localhost.yml"

PLAYBOOK = Path(__file__).resolve().parent / "playbooks" / "retry.yml"


def _retry(res: dict, **data) -> dict:
    data = {"host": "localhost", "task": "Compile the kernel", "role": "mptcp_kernel",
            "task_action": "mpsocks.mptcp.kernel_build", "res": res, **data}
    return {"event": "runner_retry", "created": "2026-11-24T16:17:05.500000+00:00",
            "stdout": "FAILED - RETRYING: [localhost]: Compile the kernel (99 retries left).",
            "event_data": data}


def test_a_retry_line_carries_the_attempts_message():
    event = _retry({"msg": "812 objects built\nin 1m32s", "attempts": 9})
    assert retry_line(event, 95.1) == ("   95.1s retrying    [localhost] mptcp_kernel : Compile the kernel: "
                                       "812 objects built in 1m32s")
    from_stdout = retry_line(_retry({"stdout": "a\n3 objects built"}), 1)
    assert from_stdout.endswith("Compile the kernel: 3 objects built")
    assert retry_line(_retry({}), 1).endswith("[localhost] mptcp_kernel : Compile the kernel")


def test_progress_prints_retries_and_counts_them_as_module_calls():
    out = io.StringIO()
    progress = Progress(out, long_task=3600)
    progress({"event": "playbook_on_play_start", "created": "2026-11-24T16:15:00+00:00", "event_data": {}})
    progress(_retry({"msg": "10 objects built in 5s"}))
    progress(_retry({"msg": "controller"}, task_action="ansible.builtin.debug"))
    assert out.getvalue().splitlines()[0] == (
        "  125.5s retrying    [localhost] mptcp_kernel : Compile the kernel: 10 objects built in 5s")
    assert progress.calls == 1


def test_a_real_until_task_shows_each_retry(tmp_path):
    out = io.StringIO()
    progress = Progress(out, long_task=3600)
    play = Play(PLAYBOOK, INVENTORY, {"counter": str(tmp_path / "counter")})
    result = run_playbook("retry", play, RunOptions(artifacts_dir=tmp_path / "runs"), display=progress)
    lines = out.getvalue().splitlines()
    assert result.rc == 0, out.getvalue()
    retries = [line.split("] ", 1)[1] for line in lines if " retrying " in line]
    assert retries == ["Count objects: 1 objects built", "Count objects: 2 objects built"], lines
    assert any(line.endswith("ok          [localhost] Count objects") for line in lines), lines
    assert progress.calls == 3
