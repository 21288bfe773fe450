"""mpsocks.mptcp.netns against real named namespaces."""

import json
import os
import signal
import subprocess
import time

from mpsocks_testlib import netns_names, run_module, sh, unique_name


def ns_inode(name):
    return os.stat(f"/run/netns/{name}").st_ino


def lo_flags(name):
    return json.loads(sh("ip", "-j", "link", "show", "lo", netns=name))[0]["flags"]


def alive_in(pid, name):
    """Whether process PID exists and is in namespace NAME (not a zombie)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == ns_inode(name)
    except OSError:
        return False


def start_in(name, *argv):
    proc = subprocess.Popen(["ip", "netns", "exec", name, *argv])
    deadline = time.monotonic() + 5
    while not alive_in(proc.pid, name):  # `ip netns exec` execs the command in the same pid
        assert proc.poll() is None and time.monotonic() < deadline, f"{argv} did not start in {name}"
        time.sleep(0.02)
    return proc


def test_create_like_ip_netns_add_idempotent_and_delete():
    name = unique_name("mpstn")
    try:
        predicted = run_module("netns", check=True, name=name)
        assert predicted["changed"] is True and predicted["netns"] == {"name": name, "lo_up": True}
        assert name not in netns_names() and not os.path.lexists(f"/run/netns/{name}")

        created = run_module("netns", name=name)
        assert created["changed"] is True and created["netns"] == predicted["netns"]
        assert name in netns_names()
        # A bind mount of a network namespace other than ours, usable by ip netns exec.
        with open("/proc/self/mountinfo") as handle:
            mounts = [line.split() for line in handle]
        assert any(f[4] == f"/run/netns/{name}" and f[f.index("-") + 1] == "nsfs" for f in mounts)
        assert ns_inode(name) != os.stat("/proc/self/ns/net").st_ino
        assert "UP" in lo_flags(name)
        assert "127.0.0.1/8" in sh("ip", "-o", "addr", "show", "lo", netns=name)
        inode = ns_inode(name)

        again = run_module("netns", name=name)
        assert again["changed"] is False and ns_inode(name) == inode
        assert run_module("netns", check=True, name=name)["changed"] is False

        sh("ip", "link", "set", "lo", "down", netns=name)
        fixed = run_module("netns", name=name)
        assert fixed["changed"] is True and fixed["diff"]["before"]["lo_up"] is False
        assert "UP" in lo_flags(name) and ns_inode(name) == inode  # the same namespace, not a new one

        would = run_module("netns", check=True, name=name, state="absent")
        assert would["changed"] is True and would["stopped_pids"] == []
        assert name in netns_names()
        removed = run_module("netns", name=name, state="absent")
        assert removed["changed"] is True and removed["netns"] == {} and removed["stopped_pids"] == []
        assert name not in netns_names() and not os.path.lexists(f"/run/netns/{name}")
        assert run_module("netns", name=name, state="absent")["changed"] is False
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def test_absent_stops_only_the_processes_inside_and_takes_the_interfaces(netns):
    name = unique_name("mpstn")
    procs = []
    try:
        assert run_module("netns", name=name)["changed"] is True
        inside = start_in(name, "sleep", "300")
        outside = start_in(netns, "sleep", "300")
        procs += [inside, outside]
        sh("ip", "link", "add", "gone0", "type", "veth", "peer", "name", "gone0p", "netns", netns, netns=name)

        would = run_module("netns", check=True, name=name, state="absent")
        assert would["changed"] is True and would["stopped_pids"] == [inside.pid]
        assert would["diff"]["before"]["pids"] == [inside.pid]
        assert alive_in(inside.pid, name) and name in netns_names()

        removed = run_module("netns", name=name, state="absent")
        assert removed["changed"] is True and removed["stopped_pids"] == [inside.pid]
        assert inside.wait(timeout=5) == -signal.SIGTERM
        assert outside.poll() is None and alive_in(outside.pid, netns)
        assert name not in netns_names()
        # The veth's far end goes with the namespace (the kernel cleans up asynchronously).
        deadline = time.monotonic() + 5
        while "gone0p" in sh("ip", "link", netns=netns):
            assert time.monotonic() < deadline, "veth peer survived its namespace"
            time.sleep(0.05)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def test_absent_kills_what_ignores_sigterm():
    name = unique_name("mpstn")
    stubborn = None
    try:
        run_module("netns", name=name)
        # sh and the sleep it starts both ignore SIGTERM (an ignored signal survives exec).
        stubborn = start_in(name, "sh", "-c", "trap '' TERM; sleep 300; :")
        started = time.monotonic()
        removed = run_module("netns", name=name, state="absent")
        took = time.monotonic() - started
        print(f"netns absent with a SIGTERM-proof shell took {took:.1f} s")
        assert removed["changed"] is True and stubborn.pid in removed["stopped_pids"]
        assert len(removed["stopped_pids"]) == 2  # the shell and its sleep
        assert stubborn.wait(timeout=5) == -signal.SIGKILL
        assert 5 <= took < 15
        assert name not in netns_names()
    finally:
        if stubborn is not None and stubborn.poll() is None:
            stubborn.kill()
            stubborn.wait()
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def test_bad_input_fails_with_one_line_and_creates_nothing():
    bad_names = ["", "a/b", "..", "has space", "semi;colon", "x" * 65, "ünïcode"]
    for bad in bad_names:
        result = run_module("netns", name=bad)
        assert result.get("failed"), bad
        assert "\n" not in result["msg"] and "Traceback" not in result["msg"]
        assert result["msg"].startswith("name: "), result["msg"]
    # No netns option: the module manages namespaces rather than acting inside one.
    name = unique_name("mpstn")
    result = run_module("netns", name=name, netns="mpsocks-no-such-ns")
    assert result.get("failed") and "Unsupported parameters" in result["msg"] and "\n" not in result["msg"]
    # (Other test runs may add namespaces meanwhile, so look for ours only.)
    for made in [name, "a", "b", "x" * 65, "has space", "semi;colon", "ünïcode"]:
        assert not os.path.lexists(os.path.join("/run/netns", made)), made
    # 64 characters is the most a name may have.
    assert run_module("netns", check=True, name="n" * 64)["changed"] is True


def test_stale_file_is_reported_not_replaced():
    name = unique_name("mpstn")
    path = f"/run/netns/{name}"
    try:
        with open(path, "w"):
            pass
        for state in ("present", "absent"):
            result = run_module("netns", name=name, state=state)
            assert result.get("failed") and "not a network namespace" in result["msg"], result
            assert "\n" not in result["msg"]
            assert os.path.isfile(path) and os.path.getsize(path) == 0
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
