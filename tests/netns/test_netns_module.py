"""mpsocks.mptcp.netns against real named namespaces."""

import json
import os
import signal
import subprocess
import sys
import time

from mpsocks_testlib import COLLECTION, collections_root, netns_names, run_item, run_module, sh, unique_name


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
        predicted = run_item("netns", check=True, name=name)
        assert predicted["changed"] is True and predicted["netns"] == {"name": name, "owner": None}
        assert name not in netns_names() and not os.path.lexists(f"/run/netns/{name}")

        created = run_item("netns", name=name)
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

        again = run_item("netns", name=name)
        assert again["changed"] is False and ns_inode(name) == inode
        assert run_item("netns", check=True, name=name)["changed"] is False

        sh("ip", "link", "set", "lo", "down", netns=name)
        fixed = run_item("netns", name=name)
        assert fixed["changed"] is True and fixed["diff"]["before"]["lo_up"] is False
        assert "UP" in lo_flags(name) and ns_inode(name) == inode  # the same namespace, not a new one

        would = run_item("netns", check=True, name=name, state="absent")
        assert would["changed"] is True and would["stopped_pids"] == []
        assert name in netns_names()
        removed = run_item("netns", name=name, state="absent")
        assert removed["changed"] is True and removed["netns"] == {} and removed["stopped_pids"] == []
        assert name not in netns_names() and not os.path.lexists(f"/run/netns/{name}")
        assert run_item("netns", name=name, state="absent")["changed"] is False
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def test_absent_stops_only_the_processes_inside_and_takes_the_interfaces(netns):
    name = unique_name("mpstn")
    procs = []
    try:
        assert run_item("netns", name=name)["changed"] is True
        inside = start_in(name, "sleep", "300")
        outside = start_in(netns, "sleep", "300")
        procs += [inside, outside]
        sh("ip", "link", "add", "gone0", "type", "veth", "peer", "name", "gone0p", "netns", netns, netns=name)

        would = run_item("netns", check=True, name=name, state="absent")
        assert would["changed"] is True and would["stopped_pids"] == [inside.pid]
        assert would["diff"]["before"]["pids"] == [inside.pid]
        assert alive_in(inside.pid, name) and name in netns_names()

        removed = run_item("netns", name=name, state="absent")
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
        run_item("netns", name=name)
        # sh and the sleep it starts both ignore SIGTERM (an ignored signal survives exec).
        stubborn = start_in(name, "sh", "-c", "trap '' TERM; sleep 300; :")
        started = time.monotonic()
        removed = run_item("netns", name=name, state="absent")
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
        result = run_item("netns", name=bad)
        assert result.get("failed"), bad
        assert "\n" not in result["msg"] and "Traceback" not in result["msg"]
        assert result["msg"].startswith("name: "), result["msg"]
    # No netns option: the module manages namespaces rather than acting inside one.
    name = unique_name("mpstn")
    result = run_item("netns", name=name, netns="mpsocks-no-such-ns")
    assert result.get("failed") and "Unsupported parameters" in result["msg"] and "\n" not in result["msg"]
    # (Other test runs may add namespaces meanwhile, so look for ours only.)
    for made in [name, "a", "b", "x" * 65, "has space", "semi;colon", "ünïcode"]:
        assert not os.path.lexists(os.path.join("/run/netns", made)), made
    # 64 characters is the most a name may have.
    assert run_item("netns", check=True, name="n" * 64)["changed"] is True


def test_stale_file_is_reported_not_replaced():
    name = unique_name("mpstn")
    path = f"/run/netns/{name}"
    try:
        with open(path, "w"):
            pass
        for state in ("present", "absent"):
            result = run_item("netns", name=name, state=state)
            assert result.get("failed") and "not a network namespace" in result["msg"], result
            assert "\n" not in result["msg"]
            assert os.path.isfile(path) and os.path.getsize(path) == 0
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def test_a_namespace_mpsocks_did_not_make_is_neither_adopted_nor_deleted():
    """Issue 7 #13: whatever its name, a user's namespace survives every verb."""
    name = unique_name("mpstn")
    try:
        subprocess.run(["ip", "netns", "add", name], check=True)
        keeper = start_in(name, "sleep", "1000")
        for state in ("present", "absent"):
            result = run_item("netns", name=name, state=state)
            assert result.get("failed") and "not made by mpsocks" in result["msg"], result
        run_module("netns", state="overridden", config=[], owner=unique_name("own"))
        assert name in netns_names() and keeper.poll() is None
        # Another owner's namespace is not ours either.
        subprocess.run(["ip", "netns", "del", name], check=True)
        keeper.kill()
        assert run_item("netns", name=name, owner="lab:a")["changed"] is True
        result = run_item("netns", name=name, owner="lab:b", state="absent")
        assert result.get("failed") and "'mpsocks lab:a', not 'mpsocks lab:b'" in result["msg"], result
        assert name in netns_names()
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def test_overridden_deletes_exactly_the_unlisted_namespaces_of_its_owner():
    owner = unique_name("own")
    keep, stale, other = (unique_name("mpstn") for _ in range(3))
    try:
        made = run_module("netns", owner=owner, config=[{"name": keep}, {"name": stale}])
        assert made["changed"] and [r["changed"] for r in made["results"]] == [True, True]
        assert run_module("netns", owner="x" + owner, config=[{"name": other}])["changed"]
        predicted = run_module("netns", check=True, owner=owner, state="overridden", config=[{"name": keep}])
        assert [r["label"] for r in predicted["results"] if r["changed"]] == [f"netns {stale}"]
        assert {keep, stale, other} <= netns_names()
        done = run_module("netns", owner=owner, state="overridden", config=[{"name": keep}])
        kept = [r["netns"] for r in done["results"]]
        assert done["changed"] and kept == [{"name": keep, "owner": owner}, {}]
        assert keep in netns_names() and other in netns_names() and stale not in netns_names()
        again = run_module("netns", owner=owner, state="overridden", config=[{"name": keep}])
        assert again["changed"] is False
        gone = run_module("netns", owner=owner, state="overridden", config=[])
        assert gone["changed"] and keep not in netns_names() and other in netns_names()
    finally:
        for name in (keep, stale, other):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def test_a_bad_item_in_the_middle_of_the_list_changes_nothing():
    first, last = unique_name("mpstn"), unique_name("mpstn")
    result = run_module("netns", config=[{"name": first}, {"name": "bad/name"}, {"name": last}])
    assert result.get("failed") and result["msg"].startswith("config[1] (netns bad/name): name: "), result
    assert "\n" not in result["msg"] and first not in netns_names() and last not in netns_names()


def test_refuses_the_callers_own_namespace_and_the_hosts():
    """Issue 7 #2: a name bound to the caller's namespace (or the host's) is never deleted."""
    own, inside = unique_name("mpstn"), unique_name("mpstn")
    bystander = subprocess.Popen(["sleep", "1000"])
    try:
        subprocess.run(["ip", "netns", "attach", own, str(os.getpid())], check=True)
        for check in (True, False):
            result = run_item("netns", check=check, name=own, state="absent")
            assert result.get("failed") and "the namespace this module runs in" in result["msg"], result
            assert "\n" not in result["msg"]
        # From another namespace, the same name is the host's own namespace (kthreadd's, PID 2).
        subprocess.run(["ip", "netns", "add", inside], check=True)
        args = json.dumps({"ANSIBLE_MODULE_ARGS": {"config": [{"name": own, "state": "absent"}]}})
        proc = subprocess.run(["ip", "netns", "exec", inside, sys.executable,
                               str(COLLECTION / "plugins" / "modules" / "netns.py")],
                              input=args, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(collections_root())))
        result = json.loads(proc.stdout)
        assert result.get("failed") and "the host's own namespace" in result["msg"], result
        assert own in netns_names() and bystander.poll() is None
    finally:
        bystander.kill()
        for name in (own, inside):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
