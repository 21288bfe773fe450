"""mpsocks.mptcp.tap against real tap devices in a fresh namespace."""

import json
import os
import random
import subprocess
import sys
import time

from mpsocks_testlib import (
    COLLECTION,
    assert_unchanged,
    collections_root,
    run_item,
    run_module,
    sh,
    snapshot,
    unique_name,
)


def tun_info(netns, name):
    """What iproute2 (not the module) says about the tap."""
    link = json.loads(sh("ip", "-j", "-d", "link", "show", name, netns=netns))[0]
    return link["linkinfo"]["info_data"] | {"flags": link["flags"]}


def test_create_read_back_idempotent_and_remove(netns):
    before = snapshot(netns)
    args = dict(name="mptcp0", owner="65534", group="100", addresses=["10.66.6.1/24", "fd66::1/64"],
                netns=netns)

    predicted = run_item("tap", check=True, **args)
    assert predicted["changed"] is True
    assert_unchanged(before, netns)

    created = run_item("tap", **args)
    assert created["changed"] is True
    assert created["tap"] == predicted["tap"]
    info = tun_info(netns, "mptcp0")
    assert (info["type"], info["user"], info["group"], info["pi"]) == ("tap", "nobody", "users", False)
    assert "UP" in info["flags"]
    addrs = sh("ip", "-o", "addr", "show", "dev", "mptcp0", netns=netns)
    assert "10.66.6.1/24" in addrs and "fd66::1/64" in addrs

    again = run_item("tap", **args)
    assert again["changed"] is False
    assert run_item("tap", check=True, **args)["changed"] is False

    assert run_item("tap", check=True, name="mptcp0", state="absent", netns=netns)["changed"]
    assert "mptcp0" in sh("ip", "link", netns=netns)
    removed = run_item("tap", name="mptcp0", state="absent", netns=netns)
    assert removed["changed"] is True and removed["tap"] == {}
    assert run_item("tap", name="mptcp0", state="absent", netns=netns)["changed"] is False
    assert_unchanged(before, netns)


def test_update_addresses_state_and_owner(netns):
    run_item("tap", name="mptcp1", addresses=["10.66.7.1/24"], netns=netns)
    change = dict(name="mptcp1", owner="65534", addresses=["10.66.7.9/24"], up=False, netns=netns)
    predicted = run_item("tap", check=True, **change)
    assert predicted["diff"]["before"]["addresses"] == ["10.66.7.1/24"]
    changed = run_item("tap", **change)
    assert changed["changed"] is True and changed["tap"] == predicted["tap"]
    assert changed["tap"] == {"name": "mptcp1", "owner": "65534", "group": None,
                              "addresses": ["10.66.7.9/24"], "up": False, "forwarding": False, "netns": netns}
    info = tun_info(netns, "mptcp1")
    assert info["user"] == "nobody" and "UP" not in info["flags"]
    # Options left out are not managed: owner and addresses stay as they are.
    kept = run_item("tap", name="mptcp1", up=False, netns=netns)
    assert kept["changed"] is False


def test_forwarding_follows_the_option_and_the_namespace_default(netns):
    def forwarding(name):
        return sh("sysctl", "-n", f"net.ipv4.conf.{name}.forwarding", netns=netns).strip()

    assert forwarding("default") == "0"
    assert run_item("tap", name="mptcp0", netns=netns)["tap"]["forwarding"] is False
    predicted = run_item("tap", check=True, name="mptcp0", forwarding=True, netns=netns)
    assert predicted["changed"] and forwarding("mptcp0") == "0"
    done = run_item("tap", name="mptcp0", forwarding=True, netns=netns)
    assert done["tap"] == predicted["tap"] and forwarding("mptcp0") == "1"
    assert forwarding("all") == "0" and forwarding("default") == "0"
    assert run_item("tap", name="mptcp0", netns=netns)["changed"] is False  # left out: kept

    sh("sysctl", "-qw", "net.ipv4.conf.default.forwarding=1", netns=netns)
    created = run_item("tap", name="mptcp1", netns=netns)
    assert created["tap"]["forwarding"] is True and forwarding("mptcp1") == "1"


def test_bad_input_fails_with_one_line_and_changes_nothing(netns):
    sh("ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink0p", netns=netns)
    before = snapshot(netns)
    cases = {
        "name": dict(name="a-very-long-tap-name0"),
        "addresses": dict(name="mptcp0", addresses=["10.66.6.1/33"]),
        "not an address": dict(name="mptcp0", addresses=["10.66.6.300/24"]),
        "owner": dict(name="mptcp0", owner="no-such-user-here"),
        "already exists as a veth": dict(name="uplink0"),
    }
    for needle, args in cases.items():
        result = run_item("tap", netns=netns, **args)
        assert result.get("failed"), args
        assert "\n" not in result["msg"] and "Traceback" not in result["msg"]
        assert needle.split()[0] in result["msg"] or needle in result["msg"], result["msg"]
    assert_unchanged(before, netns)


def test_missing_namespace_is_a_clear_error():
    result = run_item("tap", name="mptcp0", netns="mpsocks-no-such-ns")
    assert result["failed"] and "mpsocks-no-such-ns" in result["msg"]


def test_overridden_scope_is_the_namespace_the_module_started_in(netns):
    """The first item may be elsewhere: the scope of overridden stays where the module runs."""
    other = unique_name("mpstt")
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:
        assert run_item("tap", name="ta0", netns=netns)["changed"]
        assert run_item("tap", name="tb0", netns=other)["changed"]
        done = run_module("tap", inside=netns, state="overridden", config=[{"name": "tb0", "netns": other}])
        changes = [(r["label"], r["changed"]) for r in done["results"]]
        assert changes == [("tap tb0", False), ("tap ta0", True)], done
        assert "ta0" not in sh("ip", "link", netns=netns) and "tb0" in sh("ip", "link", netns=other)
    finally:
        subprocess.run(["ip", "netns", "del", other], check=False)


def test_concurrent_runs_never_restore_over_each_other(netns, tmp_path):
    """Issue 7 #3: two runs of the same tap at once, 150 times with 0-20 ms jitter (the old code lost the
    tap 5 times in 150: one run's restore deleted what the other had made while it reported ok)."""
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"netns": netns, "config": [
        {"name": "tq0", "addresses": ["10.66.6.1/24"]}]}}))
    module = [sys.executable, str(COLLECTION / "plugins" / "modules" / "tap.py"), str(args)]
    env = dict(os.environ, PYTHONPATH=str(collections_root()))
    rng = random.Random(7)
    for iteration in range(150):
        runs = []
        for _ in range(2):
            runs.append(subprocess.Popen(module, stdout=subprocess.PIPE, text=True, env=env))
            time.sleep(rng.uniform(0, 0.02))
        results = [json.loads(run.communicate()[0]) for run in runs]
        assert all(not result.get("failed") for result in results), (iteration, results)
        assert sorted(r["changed"] for r in results) == [False, True], (iteration, results)
        assert "10.66.6.1/24" in sh("ip", "-o", "addr", "show", "tq0", netns=netns), iteration
        sh("ip", "link", "del", "tq0", netns=netns)
    print("150 racing pairs: each time one made the tap, the other found it made")
