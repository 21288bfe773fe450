"""Role mpsocks.mptcp.host_network through playbooks/host_network.yml on a namespace host."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mpsocks_testlib import REPO, ansible_playbook, assert_unchanged, netns_inventory, sh, snapshot

PLAYBOOK = REPO / "playbooks" / "host_network.yml"


def play(netns, tmp_path, *extra, **extravars):
    inventory = netns_inventory(tmp_path / "inventory.json", netns)
    return ansible_playbook(PLAYBOOK, inventory, *extra, extravars=dict(extravars, mpsocks_target=netns))


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
