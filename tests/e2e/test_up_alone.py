"""``mpsocks-run up --lab`` killed half way, then ``down``: the machine is as before (its own file, so that
no other stack is up meanwhile: one stack at a time)."""

import subprocess
import sys
import time
from pathlib import Path

from mpsocks_testlib import assert_unchanged, kill_tree, mpsocks_run, runner_env, snapshot, unique_name


def test_killed_up_then_down_leaves_the_machine_as_before(tmp_path):
    artifacts = tmp_path / "runs"
    name = unique_name("k")[:10].replace("x", "y")
    before = snapshot()
    proc = subprocess.Popen([sys.executable, "-m", "mpsocks", "up", "--lab", name, "--artifacts-dir",
                             str(artifacts)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=runner_env(), start_new_session=True)
    try:
        seen, deadline = "", time.monotonic() + 300
        while "guest_network" not in seen:
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, seen
            seen += line
    finally:
        kill_tree(proc.pid)
        proc.wait(timeout=30)
        rc, output = mpsocks_run("down", artifacts=artifacts)
    assert rc == 0, output
    assert_unchanged(before)
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert not [netns for netns in names if netns.startswith(f"{name}-")], names
    assert not Path(f"/run/mpsocks/guests/{name}-guest").exists()
    assert not Path(f"/run/mpsocks/lab/{name}").exists()
    assert not Path("/run/mpsocks/up.json").exists()
