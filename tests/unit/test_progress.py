"""Progress lines and the recap; the recap compared with what ansible-playbook itself prints."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "runner"))

from mpsocks.playbook_run import Play, RunOptions, run_playbook  # noqa: E402
from mpsocks.progress import (  # noqa: E402
    Progress,
    banner,
    diff_lines,
    failure_message,
    module_calls,
    recap_line,
    recap_lines,
    task_line,
)

RUNNER_TESTS = Path(__file__).resolve().parents[1] / "runner"
INVENTORY = RUNNER_TESTS / "inventory.yml"


def _event(kind: str, created: str = "2026-11-24T16:15:00+00:00", stdout: str = "", **data) -> dict:
    return {"event": kind, "created": created, "stdout": stdout, "event_data": data}


def _result(kind: str, second: int = 3, **data) -> dict:
    data = {"host": "localhost", "task": "Make taps"} | data
    return _event(kind, f"2026-11-24T16:15:{second:02d}.500000+00:00", **data)


@pytest.mark.parametrize(("event", "line"), [
    (_result("runner_on_ok", res={"changed": False}), "    3.5s ok          [localhost] Make taps"),
    (_result("runner_on_ok", res={"changed": True}), "    3.5s changed     [localhost] Make taps"),
    (_result("runner_on_failed", res={}), "    3.5s failed      [localhost] Make taps"),
    (_result("runner_on_failed", res={}, ignore_errors=True), "    3.5s ignored     [localhost] Make taps"),
    (_result("runner_on_unreachable", res={}), "    3.5s unreachable [localhost] Make taps"),
    (_result("runner_on_skipped"), "    3.5s skipped     [localhost] Make taps"),
])
def test_task_line_shows_status_host_and_task(event, line):
    assert task_line(event, 3.5) == line


def test_task_line_prefixes_the_role_as_ansible_does():
    short = _result("runner_on_ok", role="host_network")
    fqcn = _result("runner_on_ok", role="host_network", resolved_role="mpsocks.mptcp.host_network")
    assert task_line(short, 0).endswith("[localhost] host_network : Make taps")
    assert task_line(fqcn, 0).endswith("[localhost] mpsocks.mptcp.host_network : Make taps")


def test_failure_message_is_one_line():
    assert failure_message({"msg": "no such\n  device\n"}) == "no such device"
    assert failure_message({"stderr": "sleep: invalid time"}) == "sleep: invalid time"
    assert failure_message({}) == "no message"


def test_a_failed_loop_shows_the_first_failed_items_message():
    res = {"msg": "One or more items failed", "results": [
        {"failed": False, "item": "eth0"},
        {"failed": True, "msg": "no such\ndevice", "_ansible_item_label": "up0"},
        {"failed": True, "msg": "other", "item": "up1"},
    ]}
    assert failure_message(res) == "up0: no such device (and 1 more items)"
    assert failure_message({"results": [{"failed": True, "msg": "x", "item": "up1"}]}) == "up1: x"


def test_diff_lines_show_only_changed_loop_items():
    res = {"changed": True, "results": [
        {"changed": False, "diff": {"before": {"a": 1}, "after": {"a": 1}}},
        {"changed": True, "diff": {"before_header": "tap mptcp1", "after_header": "tap mptcp1",
                                   "before": {}, "after": {"name": "mptcp1"}}},
    ]}
    lines = [line.strip() for line in diff_lines(res)]
    assert lines[:2] == ["--- before: tap mptcp1", "+++ after: tap mptcp1"]
    assert '+  "name": "mptcp1"' in lines and "-{}" in lines
    assert not any('"a"' in line for line in lines)


def test_progress_prints_diffs_only_when_asked():
    event = {"event": "runner_on_ok", "created": "2026-11-24T10:00:00", "event_data": {
        "host": "h", "task": "t", "res": {"changed": True, "diff": {"before": "x\n", "after": "y\n"}}}}
    quiet, loud = Progress(io.StringIO()), Progress(io.StringIO(), diff=True)
    assert len(quiet.lines(event)) == 1
    assert [line.strip() for line in loud.lines(event)[-2:]] == ["-x", "+y"]


def test_recap_line_is_ansibles_format():
    stats = {"ok": {"h": 5}, "changed": {"h": 12}, "dark": {}, "failures": {"h": 1}, "skipped": {},
             "rescued": {}, "ignored": {"h": 2}}
    assert recap_line("h", stats) == (
        "h                          : ok=5    changed=12   unreachable=0    failed=1    "
        "skipped=0    rescued=0    ignored=2   ")


def test_banner_fills_the_width():
    assert banner("PLAY RECAP") == "PLAY RECAP " + "*" * 69
    assert banner("PLAY RECAP", 120) == "PLAY RECAP " + "*" * 110


def test_recap_lists_hosts_sorted():
    lines = recap_lines({"processed": {"b": 1, "a": 1}, "ok": {"a": 1, "b": 2}})
    assert lines[:2] == ["", banner("PLAY RECAP")]
    assert [line.split()[0] for line in lines[2:-1]] == ["a", "b"]
    assert lines[-1] == ""


def test_progress_prints_results_with_time_since_play_start_and_failure_message():
    out = io.StringIO()
    progress = Progress(out)
    for event in [
        _event("playbook_on_start"),
        _event("playbook_on_play_start", "2026-11-24T16:15:01+00:00", stdout="PLAY [x] ***"),
        _event("playbook_on_task_start", "2026-11-24T16:15:02+00:00", stdout="TASK [t] ***"),
        _event("warning", stdout="[WARNING]: noise"),
        _event("deprecated", stdout="[DEPRECATION WARNING]: noise"),
        _event("verbose", stdout="[WARNING]: noise"),
        _result("runner_item_on_ok", res={"changed": True}),
        _result("runner_on_failed", second=4, res={"msg": "no such\ndevice"}),
        _event("error", stdout="[ERROR]: it broke\r\nOrigin: x.yml:1"),
    ]:
        progress(event)
    assert out.getvalue().splitlines() == [
        "[WARNING]: noise",
        "[DEPRECATION WARNING]: noise",
        "[WARNING]: noise",
        "    3.5s failed      [localhost] Make taps",
        "         no such device",
        "[ERROR]: it broke",
    ]


def test_debug_messages_and_module_warnings_show_without_verbose():
    out = io.StringIO()
    progress = Progress(out)
    debug = {"msg": "check mode:\nnot predicted"}
    progress(_result("runner_on_ok", task_action="ansible.builtin.debug", res=debug))
    progress(_result("runner_on_ok", task_action="mpsocks.mptcp.tap", res={"warnings": ["odd"]}))
    assert out.getvalue().splitlines() == [
        "    0.0s ok          [localhost] Make taps",
        "         check mode: not predicted",
        "    0.0s ok          [localhost] Make taps",
        "         [WARNING]: odd",
    ]


def test_an_unreachable_loop_item_shows_its_own_message():
    res = {"msg": "All items completed", "results": [
        {"unreachable": True, "msg": "network namespace 'nosuchns' does not exist", "item": "lab0"}]}
    assert failure_message(res) == "lab0: network namespace 'nosuchns' does not exist"


def test_module_calls_count_loop_items_and_leave_out_controller_actions():
    events = [
        _result("runner_on_ok", task_action="mpsocks.mptcp.tap", res={}),
        _result("runner_on_ok", task_action="ansible.builtin.set_fact", res={}),
        _result("runner_on_ok", task_action="debug", res={}),
        _result("runner_on_skipped", task_action="mpsocks.mptcp.nat"),
        _result("runner_on_ok", task_action="ping", res={"results": [
            {"ansible_loop_var": "item"}, {"ansible_loop_var": "item"},
            {"ansible_loop_var": "item", "skipped": True}]}),
        _result("runner_on_ok", task_action="mpsocks.mptcp.tap", res={"results": [{"label": "tap a"}, {}]}),
        _result("runner_on_failed", second=9, task_action="mpsocks.mptcp.nat", res={}),
    ]
    progress = Progress(io.StringIO())
    for event in events:
        progress(event)
    assert [module_calls(event) for event in events] == [1, 0, 0, 0, 2, 1, 1]
    assert progress.summary() == "5 module calls in 6.0 s"


def test_a_long_task_gets_a_line_when_it_starts_taking_long():
    out = io.StringIO()
    progress = Progress(out, long_task=0.05)
    progress(_event("playbook_on_task_start", task="Build the VM", role="guest_vm"))
    time.sleep(0.3)
    progress(_result("runner_on_ok", second=9, res={}))
    progress(_event("playbook_on_task_start", task="Quick"))
    progress(_result("runner_on_ok", second=9, res={}))
    time.sleep(0.2)
    lines = out.getvalue().splitlines()
    assert lines[0] == "         running     guest_vm : Build the VM (more than 0.05 s)"
    assert len(lines) == 3 and "Quick" not in lines[2]


def test_a_stopped_display_prints_no_late_long_task_line():
    out = io.StringIO()
    progress = Progress(out, long_task=0.05)
    progress(_event("playbook_on_task_start", task="Cancelled half way"))
    progress.stop()  # the run ended: cancelled, or its last event came
    time.sleep(0.2)
    assert out.getvalue() == ""


def test_a_replay_gives_long_tasks_their_line_from_the_events_times():
    out = io.StringIO()
    progress = Progress(out, long_task=1, replay=True)
    progress(_event("playbook_on_play_start", "2026-11-24T16:15:00+00:00"))
    progress(_event("playbook_on_task_start", "2026-11-24T16:15:00+00:00", task="Slow"))
    progress(_result("runner_on_ok", second=3, task="Slow", res={}))
    progress(_event("playbook_on_task_start", "2026-11-24T16:15:03.600000+00:00", task="Quick"))
    progress(_result("runner_on_ok", second=4, task="Quick", res={}))
    progress(_event("playbook_on_task_start", "2026-11-24T16:15:05+00:00", task="Cancelled"))
    progress.end(datetime(2026, 11, 24, 16, 15, 7, tzinfo=UTC))
    assert out.getvalue().splitlines() == [
        "         running     Slow (more than 1 s)",
        "    3.5s ok          [localhost] Slow",
        "    4.5s ok          [localhost] Quick",
        "         running     Cancelled (more than 1 s)",
    ]


def test_verbose_progress_prints_ansibles_own_output():
    out = io.StringIO()
    progress = Progress(out, verbose=True)
    progress(_event("playbook_on_task_start", stdout="\r\nTASK [t] ***"))
    progress(_event("runner_on_start"))
    progress(_result("runner_on_ok", stdout="ok: [localhost] => {\r\n    \"msg\": 1\r\n}"))
    assert out.getvalue() == '\nTASK [t] ***\nok: [localhost] => {\n    "msg": 1\n}\n'


def _recap_block(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("PLAY RECAP"))
    end = lines.index("", start)
    return lines[start:end]


def test_recap_matches_ansible_playbooks_own(tmp_path):
    playbook = RUNNER_TESTS / "playbooks" / "recap.yml"
    ansible = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(INVENTORY), str(playbook)],
        capture_output=True, text=True, env=dict(os.environ, ANSIBLE_NOCOLOR="1"),
    )
    out = io.StringIO()
    result = run_playbook("recap", Play(playbook, INVENTORY), RunOptions(artifacts_dir=tmp_path),
                          display=Progress(out))

    assert ansible.returncode == result.rc == 2
    expected = _recap_block(ansible.stdout)
    assert len(expected) == 3, ansible.stdout
    assert _recap_block(out.getvalue()) == expected
