"""``mpsocks-run up`` when no other stack is up (one stack at a time): killed half way, then ``down``;
bad input refused with nothing changed."""

import os
import signal
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


def test_bad_input_is_one_line_and_changes_nothing(tmp_path):
    artifacts = tmp_path / "runs"
    before = snapshot()
    for args, code, needle in (
            (["--uplinks", "nosuch0"], 2, "interface 'nosuch0' does not exist"),
            (["--uplinks", "eth0,eth0"], 5, "interface 'eth0' is given twice"),
            (["--lab", "--backend", "libvirt"], 5, "--backend libvirt: not available yet")):
        rc, output = mpsocks_run("up", *args, artifacts=artifacts)
        assert rc == code and needle in output, (args, output)
        assert "Traceback" not in output
    assert not Path("/run/netns/mpsocks-guest").exists()
    assert_unchanged(before)


def test_a_check_url_that_does_not_answer_changes_nothing(tmp_path):
    artifacts = tmp_path / "runs"
    name = unique_name("c")[:10].replace("x", "y")
    rc, output = mpsocks_run("lab", "up", "--name", name, "--hops", "2", artifacts=artifacts)
    try:
        assert rc == 0, output
        before, lab_host = snapshot(), snapshot(f"{name}-host")
        bad = ("--check-url", "http://198.19.0.99/")
        rc, output = mpsocks_run("up", "--lab", name, *bad, artifacts=artifacts)
        assert rc == 2 and "http://198.19.0.99/" in output, output
        assert not Path(f"/run/netns/{name}-guest").exists()
        assert_unchanged(before)
        assert_unchanged(lab_host, f"{name}-host")
    finally:
        mpsocks_run("down", artifacts=artifacts)
        rc, output = mpsocks_run("lab", "down", "--name", name, artifacts=artifacts)
        assert rc == 0, output


def test_foreground_stays_up_and_ctrl_c_takes_it_all_down(tmp_path):
    """The seed's boot_socks: up, then Ctrl-C ends it, leaving the machine as it was."""
    name = unique_name("f")[:10].replace("x", "y")
    before = snapshot()
    argv = [sys.executable, "-m", "mpsocks", "up", "--lab", name, "--foreground",
            "--artifacts-dir", str(tmp_path / "runs")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=runner_env(),
                            start_new_session=True)
    try:
        said = proc.stderr.readline()
        assert "Ctrl-C takes it all down" in said, said + proc.stdout.read()
        assert Path(f"/run/netns/{name}-guest").exists()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        kill_tree(proc.pid)
    assert proc.returncode == 0, out + err
    assert "Remove the lab's namespaces" in out
    assert not Path(f"/run/netns/{name}-guest").exists() and not Path("/run/mpsocks/up.json").exists()
    assert_unchanged(before)
