"""``mpsocks-run up`` when no other stack is up (one stack at a time): killed half way, then ``down``;
bad input refused with nothing changed."""

import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from mpsocks_testlib import (
    assert_unchanged,
    kill_tree,
    lab_name,
    mpsocks_run,
    runner_env,
    snapshot,
)


def test_killed_up_then_down_leaves_the_machine_as_before(tmp_path):
    artifacts = tmp_path / "runs"
    name = lab_name("k")
    before = snapshot()
    proc = subprocess.Popen([sys.executable, "-m", "mpsocks", "up", "--backend", "netns", "--lab", name,
                             "--artifacts-dir", str(artifacts)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=runner_env(), start_new_session=True)
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
            (["--uplinks", "eth0", "--accelerator", "kvm"], 5, "--accelerator kvm: for a VM guest only")):
        rc, output = mpsocks_run("up", "--backend", "netns", *args, artifacts=artifacts)
        assert rc == code and needle in output, (args, output)
        assert "Traceback" not in output
    assert not Path("/run/netns/mpsocks-guest").exists()
    assert_unchanged(before)


def test_a_check_url_that_does_not_answer_changes_nothing(tmp_path):
    artifacts = tmp_path / "runs"
    name = lab_name("c")
    rc, output = mpsocks_run("lab", "up", "--name", name, "--hops", "2", artifacts=artifacts)
    try:
        assert rc == 0, output
        before, lab_host = snapshot(), snapshot(f"{name}-host")
        bad = ("--check-url", "http://198.19.0.99/")
        rc, output = mpsocks_run("up", "--backend", "netns", "--lab", name, *bad, artifacts=artifacts)
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
    name = lab_name("f")
    before = snapshot()
    argv = [sys.executable, "-m", "mpsocks", "up", "--backend", "netns", "--lab", name, "--foreground",
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


def _rx_bytes(netns: str | None, interface: str) -> int:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    argv = prefix + ["ip", "-s", "-j", "link", "show", interface]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["stats64"]["rx"]["bytes"]


def _download(host: str, url: str, body: Path) -> str:
    """A download through the proxy into BODY; returns the sha256 the server announced."""
    argv = ["ip", "netns", "exec", host, "curl", "-sS", "--max-time", "120", "-D", "-", "-o", str(body),
            "--socks5-hostname", "10.66.6.2:1080", url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    return re.search(r"(?im)^x-content-sha256:\s*(\S+)", proc.stdout)[1]


def test_a_backup_uplink_carries_data_only_when_the_other_fails(tmp_path):
    artifacts = tmp_path / "runs"
    name = lab_name("b")
    before = snapshot()
    rc, output = mpsocks_run("up", "--backend", "netns", "--lab", name, "--uplinks", "lab0,lab1:backup",
                             artifacts=artifacts)
    try:
        assert rc == 0 and "MPTCP, 2 subflows" in output, output
        plan = json.loads((Path("/run/mpsocks/lab") / name / "lab.json").read_text())
        host, url = plan["host_netns"], f"{plan['servers']['download']}bytes/{20 * 10**6 // 8 * 3}"
        body = tmp_path / "body"
        quiet = _rx_bytes(host, "lab1")
        digest = _download(host, url, body)
        carried = _rx_bytes(host, "lab1") - quiet
        size = body.stat().st_size
        print(f"backup uplink while the other is up: {carried} bytes of a {size}-byte download")
        assert carried < body.stat().st_size / 100 and hashlib.sha256(body.read_bytes()).hexdigest() == digest

        isp0 = plan["uplinks"][0]["isp_netns"]
        cut = ["ip", "netns", "exec", isp0, "ip", "link", "set", "cust", "down"]
        cutter = threading.Timer(1.0, subprocess.run, [cut])
        quiet = _rx_bytes(host, "lab1")
        cutter.start()
        digest = _download(host, url, body)
        cutter.join()
        carried = _rx_bytes(host, "lab1") - quiet
        print(f"backup uplink after uplink 0 failed: {carried} bytes; download intact")
        assert hashlib.sha256(body.read_bytes()).hexdigest() == digest and carried > body.stat().st_size / 3
    finally:
        # The link back up before down: packets waiting for its gateway would otherwise have their ICMP
        # error sent from the machine's own namespace when the lab's devices go (their route dies with them).
        link_up = ["ip", "netns", "exec", f"{name}-isp0", "ip", "link", "set", "cust", "up"]
        subprocess.run(link_up, check=False)
        rc, output = mpsocks_run("down", artifacts=artifacts)
    assert rc == 0, output
    assert_unchanged(before)


def test_a_lab_whose_uplinks_end_in_the_root_namespace(tmp_path):
    """The VM's case: the host side in the machine's own namespace; down restores it exactly."""
    with open("/run/lock/mpsocks-root-lab.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        artifacts = tmp_path / "runs"
        name = lab_name("r")
        before = snapshot()
        rc, output = mpsocks_run("lab", "up", "--name", name, "--root-uplinks", "--hops", "2",
                                 artifacts=artifacts)
        try:
            assert rc == 0, output
            rc, output = mpsocks_run("up", "--backend", "netns", "--lab", name, artifacts=artifacts)
            assert rc == 0 and "MPTCP, 2 subflows" in output, output
            rules = subprocess.run(["ip", "rule"], capture_output=True, text=True).stdout
            assert "iif mptcp0 lookup 6606 proto 166" in rules, rules
            # Another lab numbers its tables alike, in its own host namespace: its up and down leave
            # the rules of the lab whose uplinks end here alone.
            other = lab_name("o")
            rc, output = mpsocks_run("lab", "up", "--name", other, "--hops", "2", artifacts=artifacts)
            assert rc == 0, output
            rc, output = mpsocks_run("lab", "down", "--name", other, artifacts=artifacts)
            assert rc == 0, output
            after = subprocess.run(["ip", "rule"], capture_output=True, text=True).stdout
            assert after == rules and "lookup 6658 proto 166" in after, after
        finally:
            rc, output = mpsocks_run("down", artifacts=artifacts)
            assert rc == 0, output
            rc, output = mpsocks_run("lab", "down", "--name", name, artifacts=artifacts)
            assert rc == 0, output
        assert_unchanged(before)
