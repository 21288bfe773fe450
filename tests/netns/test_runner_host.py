"""mpsocks-run host up/down end to end, on a namespace host (--netns)."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

from mpsocks_testlib import assert_unchanged, changed_count, mpsocks_run, runner_env, sh, snapshot


def test_up_up_down(netns, uplinks, tmp_path):
    before = snapshot(netns)
    up = ("host", "up", "--netns", netns, "--uplinks", "up0,up1=10.199.1.1")

    rc, output = mpsocks_run(*up, "--check", "--diff", artifacts=tmp_path / "runs")
    assert rc == 0 and changed_count(output, netns) == 3, output
    assert '+  "name": "mptcp1",' in output, "--diff shows what would change"
    assert_unchanged(before, netns)

    rc, output = mpsocks_run(*up, artifacts=tmp_path / "runs")
    assert rc == 0 and changed_count(output, netns) == 3, output
    assert f"changed     [{netns}] mpsocks.mptcp.host_network : Tap per uplink" in output
    assert "default via 10.199.1.1 dev up1" in sh("ip", "route", "show", "table", "6607", netns=netns)
    assert (tmp_path / "runs" / "latest" / "stdout").exists()

    rc, output = mpsocks_run(*up, artifacts=tmp_path / "runs")
    assert rc == 0 and changed_count(output, netns) == 0, output

    rc, output = mpsocks_run("host", "down", "--netns", netns, artifacts=tmp_path / "runs")
    assert rc == 0 and changed_count(output, netns) == 3, output
    assert_unchanged(before, netns)
    rc, output = mpsocks_run("host", "down", "--netns", netns, artifacts=tmp_path / "runs")
    assert rc == 0 and changed_count(output, netns) == 0, output


def test_failure_exit_code_and_message(netns, uplinks, tmp_path):
    before = snapshot(netns)
    rc, output = mpsocks_run("host", "up", "--netns", netns, "--uplinks", "up0,wlp9s9",
                             artifacts=tmp_path / "runs")
    assert rc == 2, output
    assert "routes[0].dev: interface 'wlp9s9' does not exist" in output
    assert "Traceback" not in output
    assert_unchanged(before, netns)


def test_ctrl_c_cancels_cleanly_and_down_cleans_up(netns, uplinks, tmp_path):
    before = snapshot(netns)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mpsocks", "host", "up", "--netns", netns, "--uplinks", "up0,up1",
         "--artifacts-dir", str(tmp_path / "runs")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=runner_env(), start_new_session=True)
    try:
        seen, deadline = "", time.monotonic() + 120
        while "Tap per uplink" not in seen:
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, seen
            seen += line
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        rest, _ = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    output = seen + rest
    assert proc.returncode == 99, output
    assert "cancelled" in output and "Traceback" not in output
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout
    assert not leftovers.strip(), "processes of the cancelled run are still there"

    rc, output = mpsocks_run("host", "down", "--netns", netns, artifacts=tmp_path / "runs")
    assert rc == 0, output
    assert_unchanged(before, netns)


def test_an_unreachable_namespace_says_why(uplinks, tmp_path):
    """Issue 7 #14: the cause is printed, not only "unreachable"."""
    rc, output = mpsocks_run("host", "up", "--uplinks", "lab0", "--netns", "mpsocks-no-such-ns",
                             artifacts=tmp_path / "runs")
    assert rc == 4, output
    cause = r"unreachable \[mpsocks-no-such-ns\].*\n +.*mpsocks-no-such-ns.*does not exist"
    assert re.search(cause, output), output


def test_two_runs_at_once_take_turns(netns, uplinks, tmp_path):
    """Issue 7 #3: two `host up` at once once left mptcp0 without its address; now the second waits."""
    up = [sys.executable, "-m", "mpsocks", "host", "up", "--netns", netns, "--uplinks", "up0",
          "--artifacts-dir", str(tmp_path / "runs")]
    for _ in range(3):
        runs = [subprocess.Popen(up, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=runner_env()) for _ in range(2)]
        outputs = [run.communicate(timeout=180) for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outputs
        assert sum("waiting for" in err for _, err in outputs) == 1, outputs
        assert "10.66.6.1/24" in sh("ip", "-o", "addr", "show", "mptcp0", netns=netns)
        assert sh("sysctl", "-n", "net.ipv4.conf.mptcp0.forwarding", netns=netns).strip() == "1"
        rc, output = mpsocks_run("host", "down", "--netns", netns, artifacts=tmp_path / "runs")
        assert rc == 0, output
