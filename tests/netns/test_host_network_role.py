"""Role mpsocks.mptcp.host_network through playbooks/host_network.yml on a namespace host."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mpsocks_testlib import (
    REPO,
    ansible_playbook,
    assert_unchanged,
    netns_inventory,
    sh,
    snapshot,
    unique_name,
)

PLAYBOOK = REPO / "playbooks" / "host_network.yml"

#: A callback that prints how many module calls a run made (a task on the controller alone makes none).
CALL_COUNTER = """
from ansible.plugins.callback import CallbackBase

CONTROLLER_ACTIONS = {"set_fact", "debug", "assert", "fail", "meta", "include_tasks", "import_tasks",
                      "include_role", "import_role", "validate_argument_spec"}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "mpsocks_module_calls"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def _count(self, result, *args, **kwargs):
        if result._task.action.rsplit(".", 1)[-1] not in CONTROLLER_ACTIONS:
            self.calls += 1

    v2_runner_on_ok = v2_runner_on_failed = _count

    def v2_playbook_on_stats(self, stats):
        self._display.display("MODULE CALLS: %d" % self.calls)
"""


@pytest.fixture
def count_calls(tmp_path_factory, monkeypatch):
    """Make every ansible-playbook of the test print ``MODULE CALLS: N``; returns the parser of N."""
    folder = tmp_path_factory.mktemp("callbacks")
    (folder / "mpsocks_module_calls.py").write_text(CALL_COUNTER)
    monkeypatch.setenv("ANSIBLE_CALLBACK_PLUGINS", str(folder))
    monkeypatch.setenv("ANSIBLE_CALLBACKS_ENABLED", "mpsocks_module_calls")
    return lambda output: int(re.search(r"^MODULE CALLS: (\d+)$", output, re.M).group(1))


def play(netns, tmp_path, *extra, **extravars):
    inventory = netns_inventory(tmp_path / "inventory.json", netns)
    return ansible_playbook(PLAYBOOK, inventory, *extra, extravars=dict(extravars, mpsocks_target=netns))


@pytest.fixture
def guest():
    """An empty namespace for the guest end of the veths, deleted afterwards."""
    name = unique_name("mpstq")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_up_twice_then_down_leaves_the_namespace_as_it_was(netns, uplinks, tmp_path):
    before = snapshot(netns)
    main_table = sh("ip", "route", "show", "table", "main", netns=netns)
    names = [u["name"] for u in uplinks]

    # The recap counts tasks: taps, NAT entries, tables.
    rc, output, recap = play(netns, tmp_path, "--check", mpsocks_uplinks=names)
    assert rc == 0 and recap[netns]["changed"] == 3, output
    assert_unchanged(before, netns)

    rc, output, recap = play(netns, tmp_path, mpsocks_uplinks=names)
    assert rc == 0, output
    assert recap[netns]["changed"] == 3, output

    links = {link["ifname"]: link for link in json.loads(sh("ip", "-j", "-d", "link", netns=netns))}
    assert links["mptcp0"]["linkinfo"]["info_data"]["type"] == "tap"
    assert "10.66.7.1/24" in sh("ip", "-o", "addr", "show", "mptcp1", netns=netns)
    rules = sh("ip", "rule", netns=netns)
    assert "iif mptcp0 lookup 6606" in rules and "iif mptcp1 lookup 6607" in rules
    assert "default via 10.199.0.1 dev up0" in sh("ip", "route", "show", "table", "6606", netns=netns)
    assert "default via 10.199.1.1 dev up1" in sh("ip", "route", "show", "table", "6607", netns=netns)
    ruleset = sh("nft", "list", "table", "inet", "mpsocks", netns=netns)
    assert 'ip saddr 10.66.6.0/24 oifname "up0" masquerade' in ruleset
    assert 'ip saddr 10.66.7.0/24 oifname "up1" masquerade' in ruleset
    assert sh("sysctl", "-n", "net.ipv4.conf.up1.forwarding", netns=netns).strip() == "1"
    # The main table keeps every route and gains only the taps' own connected routes.
    now = set(sh("ip", "route", "show", "table", "main", netns=netns).splitlines())
    assert set(main_table.splitlines()) <= now
    assert {" ".join(line.split()[:3]) for line in now - set(main_table.splitlines())} == {
        "10.66.6.0/24 dev mptcp0", "10.66.7.0/24 dev mptcp1"}

    rc, output, recap = play(netns, tmp_path, mpsocks_uplinks=names)
    assert rc == 0 and recap[netns]["changed"] == 0, output

    rc, output, recap = play(netns, tmp_path, mpsocks_uplinks=names[:1])
    assert rc == 0 and recap[netns]["changed"] == 3, output  # slot 1's table, NAT entry and tap go
    assert "mptcp1" not in sh("ip", "link", netns=netns)

    rc, output, recap = play(netns, tmp_path, mpsocks_state="absent")
    assert rc == 0 and recap[netns]["changed"] == 3, output
    assert_unchanged(before, netns)
    rc, output, recap = play(netns, tmp_path, mpsocks_state="absent")
    assert rc == 0 and recap[netns]["changed"] == 0, output


def test_links_then_routing_as_boot_socks_makes_them(netns, uplinks, tmp_path, count_calls):
    """mpsocks_host_parts: the links alone (one module call, nothing routed), then the routing alone; then
    both find nothing to change."""
    before = snapshot(netns)
    names = [u["name"] for u in uplinks]

    rc, output, recap = play(netns, tmp_path, mpsocks_uplinks=names, mpsocks_host_parts=["links"])
    assert rc == 0 and recap[netns]["changed"] == 1 and count_calls(output) == 1, output
    assert "10.66.7.1/24" in sh("ip", "-o", "addr", "show", "mptcp1", netns=netns)
    assert "lookup 6606" not in sh("ip", "rule", netns=netns)
    assert subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "inet", "mpsocks"],
                          capture_output=True).returncode != 0

    rc, output, recap = play(netns, tmp_path, mpsocks_uplinks=names, mpsocks_host_parts=["routing"])
    assert rc == 0 and recap[netns]["changed"] == 2 and count_calls(output) == 2, output
    assert "iif mptcp1 lookup 6607" in sh("ip", "rule", netns=netns)
    assert 'oifname "up1" masquerade' in sh("nft", "list", "table", "inet", "mpsocks", netns=netns)

    rc, output, recap = play(netns, tmp_path, mpsocks_uplinks=names)
    assert rc == 0 and recap[netns]["changed"] == 0, output
    rc, output, recap = play(netns, tmp_path, mpsocks_uplinks=names, mpsocks_host_parts=["bridges"])
    assert rc != 0 and "mpsocks_host_parts" in output, output
    rc, output, recap = play(netns, tmp_path, mpsocks_state="absent")
    assert rc == 0, output
    assert_unchanged(before, netns)


def test_explicit_gateway(netns, uplinks, tmp_path):
    uplink = {"name": "up1", "gateway": "10.199.1.7"}
    rc, output, _ = play(netns, tmp_path, mpsocks_uplinks=[uplink])
    assert rc == 0, output
    assert "default via 10.199.1.7 dev up1" in sh("ip", "route", "show", "table", "6606", netns=netns)
    rc, output, _ = play(netns, tmp_path, mpsocks_state="absent")
    assert rc == 0, output


def test_bad_input_fails_before_anything_changes(netns, uplinks, tmp_path):
    sh("ip", "link", "add", "nogw", "type", "veth", "peer", "name", "nogwp", netns=netns)
    cases = [
        (["up0", "wlp9s9"], "config[1] (policy route table 6607): routes[0].dev: interface 'wlp9s9'"),
        (["up0", "nogw"], "nogw has no default route"),
        (["up0", "an-uplink-name-too-long"], "mpsocks_uplinks[1].name"),
        (["up0", {"name": "up1", "gateway": "10.199.1.300"}], "mpsocks_uplinks[1].gateway"),
        ("up0", "mpsocks_uplinks"),
        (["up0", "up1"], "config[1] (tap mptcp1): name: 'mptcp1' already exists as a veth interface"),
    ]
    for uplinks_value, needle in cases:
        if "mptcp1" in needle:
            sh("ip", "link", "add", "mptcp1", "type", "veth", "peer", "name", "mptcp1p", netns=netns)
        before = snapshot(netns)
        rc, output, recap = play(netns, tmp_path, mpsocks_uplinks=uplinks_value)
        assert rc != 0 and recap[netns]["failed"] == 1, output
        assert needle in output, output
        assert "Traceback" not in output
        assert_unchanged(before, netns)


def test_down_after_a_killed_up_removes_everything(netns, uplinks, tmp_path):
    before = snapshot(netns)
    inventory = netns_inventory(tmp_path / "inventory.json", netns)
    extravars = json.dumps({"mpsocks_target": netns, "mpsocks_uplinks": ["up0", "up1"]})
    playbook_bin = str(Path(sys.executable).with_name("ansible-playbook"))
    proc = subprocess.Popen([playbook_bin, "-i", str(inventory), str(PLAYBOOK), "-e", extravars],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        seen = ""
        deadline = time.monotonic() + 120
        while "TASK [mpsocks.mptcp.host_network : NAT out of each uplink" not in seen:
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, seen
            seen += line
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # half way: routing and taps made, NAT maybe not yet
        proc.wait()
    assert "mptcp0" in sh("ip", "link", netns=netns)

    rc, output, _ = play(netns, tmp_path, mpsocks_state="absent")
    assert rc == 0, output
    assert_unchanged(before, netns)


def test_down_removes_only_what_mpsocks_made(netns, uplinks, tmp_path):
    """Issue 7 #13: a user's tap named like ours, and their rule and route in our table, survive."""
    sh("ip", "tuntap", "add", "mode", "tap", "name", "mptcp3", netns=netns)
    sh("ip", "rule", "add", "from", "10.1.2.3", "lookup", "6607", "priority", "6607", netns=netns)
    sh("ip", "route", "add", "10.1.2.0/24", "dev", "up0", "table", "6607", netns=netns)
    before = snapshot(netns)
    rc, output, recap = play(netns, tmp_path, mpsocks_uplinks=["up0", "up1"])
    assert rc == 0 and recap[netns]["changed"] == 3, output
    assert "from 10.1.2.3 lookup 6607" in sh("ip", "rule", netns=netns)
    for state in ("absent", "absent"):
        rc, output, recap = play(netns, tmp_path, mpsocks_state=state)
        assert rc == 0, output
    assert_unchanged(before, netns)
    # A user's tap with the very name of slot 0 is neither adopted nor removed.
    sh("ip", "tuntap", "add", "mode", "tap", "name", "mptcp0", netns=netns)
    mine = snapshot(netns)
    rc, output, recap = play(netns, tmp_path, mpsocks_uplinks=["up0"])
    assert rc != 0 and "tap 'mptcp0' exists but was not made by mpsocks" in output, output
    rc, output, recap = play(netns, tmp_path, mpsocks_state="absent")
    assert rc == 0 and recap[netns]["changed"] == 0, output
    assert_unchanged(mine, netns)


def test_veth_links_to_a_guest_namespace(netns, uplinks, guest, tmp_path, count_calls):
    """Issue 9: veth mptcpN, its peer ethN in the guest; up twice, shrink, down; a user's objects survive."""
    sh("ip", "link", "add", "mptcp3", "type", "veth", "peer", "name", "mine3", netns=netns)  # a user's veth
    sh("ip", "tuntap", "add", "mode", "tap", "name", "mptcp5", netns=netns)  # a user's tap in a slot
    sh("ip", "link", "add", "eth7", "type", "veth", "peer", "name", "mine7", netns=guest)  # a user's
    before, before_guest = snapshot(netns), snapshot(guest)
    names = ["up0", {"name": "up1", "backup": True}]
    veth = {"mpsocks_guest_link": "veth", "mpsocks_guest_netns": guest}

    rc, output, recap = play(netns, tmp_path, "--check", mpsocks_uplinks=names, **veth)
    assert rc == 0 and recap[netns]["changed"] == 3, output
    assert_unchanged(before, netns)
    assert_unchanged(before_guest, guest)

    rc, output, recap = play(netns, tmp_path, mpsocks_uplinks=names, **veth)
    assert rc == 0 and recap[netns]["changed"] == 3, output
    print(f"host_network veth up from nothing: {count_calls(output)} module calls")
    assert count_calls(output) == 4
    links = {link["ifname"]: link for link in json.loads(sh("ip", "-j", "-d", "link", netns=netns))}
    for n in (0, 1):
        assert links[f"mptcp{n}"]["linkinfo"]["info_kind"] == "veth"
        assert links[f"mptcp{n}"]["ifalias"] == "mpsocks"
        assert f"10.66.{6 + n}.1/24" in sh("ip", "-o", "addr", "show", f"mptcp{n}", netns=netns)
        assert sh("sysctl", "-n", f"net.ipv4.conf.mptcp{n}.forwarding", netns=netns).strip() == "1"
    peers = {link["ifname"]: link for link in json.loads(sh("ip", "-j", "-d", "link", netns=guest))}
    assert {"eth0", "eth1"} <= set(peers) and peers["eth1"]["linkinfo"]["info_kind"] == "veth"
    rules = sh("ip", "rule", netns=netns)
    assert "iif mptcp0 lookup 6606" in rules and "iif mptcp1 lookup 6607" in rules
    assert "default via 10.199.1.1 dev up1" in sh("ip", "route", "show", "table", "6607", netns=netns)
    ruleset = sh("nft", "list", "table", "inet", "mpsocks", netns=netns)
    assert 'ip saddr 10.66.7.0/24 oifname "up1" masquerade' in ruleset

    rc, output, recap = play(netns, tmp_path, mpsocks_uplinks=names, **veth)
    assert rc == 0 and recap[netns]["changed"] == 0, output
    print(f"host_network veth up again: {count_calls(output)} module calls")

    rc, output, recap = play(netns, tmp_path, mpsocks_uplinks=names[:1], **veth)
    assert rc == 0 and recap[netns]["changed"] == 3, output  # slot 1's table, NAT entry and veth go
    assert "mptcp1" not in sh("ip", "link", netns=netns) and "eth1" not in sh("ip", "link", netns=guest)
    assert "mptcp3" in sh("ip", "link", netns=netns) and "eth7" in sh("ip", "link", netns=guest)

    rc, output, recap = play(netns, tmp_path, mpsocks_state="absent", mpsocks_guest_link="veth")
    assert rc == 0 and recap[netns]["changed"] == 3, output
    print(f"host_network veth down: {count_calls(output)} module calls")
    assert count_calls(output) == 3
    assert_unchanged(before, netns)
    assert_unchanged(before_guest, guest)
    rc, output, recap = play(netns, tmp_path, mpsocks_state="absent", mpsocks_guest_link="veth")
    assert rc == 0 and recap[netns]["changed"] == 0, output


def test_veth_bad_input_changes_nothing(netns, uplinks, guest, tmp_path):
    sh("ip", "link", "add", "eth1", "type", "veth", "peer", "name", "mine1", netns=guest)  # slot 1 peer
    before, before_guest = snapshot(netns), snapshot(guest)
    cases = [
        ({"mpsocks_guest_link": "veth"}, "mpsocks_guest_netns: required with mpsocks_guest_link veth"),
        ({"mpsocks_guest_link": "veth", "mpsocks_guest_netns": "mpsocks-no-such-ns"},
         "config[0] (veth mptcp0): peer_netns: namespace 'mpsocks-no-such-ns' does not exist"),
        ({"mpsocks_guest_link": "veth", "mpsocks_guest_netns": guest},
         f"config[1] (veth mptcp1): peer: an interface 'eth1' (veth) already exists in namespace '{guest}'"),
        ({"mpsocks_guest_link": "vde"}, "mpsocks_guest_link"),
        ({"mpsocks_uplinks": [{"name": "up0", "backup": True}, "up1"]}, "mpsocks_uplinks[0]: the first"),
        ({"mpsocks_uplinks": ["up0", {"name": "up1", "backup": "sometimes"}]}, "mpsocks_uplinks[1].backup"),
    ]
    for options, needle in cases:
        rc, output, recap = play(netns, tmp_path, **dict({"mpsocks_uplinks": ["up0", "up1"]}, **options))
        assert rc != 0 and recap[netns]["failed"] == 1, output
        assert needle in output, output
        assert "Traceback" not in output
        assert_unchanged(before, netns)
        assert_unchanged(before_guest, guest)
