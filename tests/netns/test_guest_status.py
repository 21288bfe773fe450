"""mpsocks-run status and check, as data and text, read from the host in a real namespace guest.

The guest (guest_topology.py) runs dante under mptcpize; a host application (curl in the far end)
downloads through it while the status looks at the guest's kernel.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.daemon import live
from guest_topology import CHECK, SOCKS, far_download, guest_with_dante
from mpsocks_testlib import run_module, unique_name

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "runner"))

from mpsocks import guest_status  # noqa: E402

RATE_MBIT = 20
INTERFACES = ["eth0", "eth1"]


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    with guest_with_dante(tmp_path_factory.mktemp("guest"), rate_mbit=RATE_MBIT) as made:
        yield made


@pytest.fixture
def download(guest):
    """A download through the proxy; yields the tokens of connections that were there before it (an
    earlier test's download may still be closing)."""
    earlier = {connection["token"]: connection["state"] for connection in _proxy_connections(guest)}
    if earlier:
        print(f"earlier connections, still there: {earlier}")
    client = far_download(guest, seconds=20)
    try:
        deadline = time.monotonic() + 10
        while not [c for c in _proxy_connections(guest) if c["token"] not in earlier]:
            assert client.poll() is None and time.monotonic() < deadline, "the download did not start"
            time.sleep(0.1)
        time.sleep(1)  # the second subflow joins and both fill up
        yield set(earlier)
    finally:
        client.kill()
        client.wait()


def _proxy_connections(guest):
    return guest_status.live_connections(guest_status.sample(guest.guest), guest_status.sample(guest.guest),
                                         INTERFACES, {})


def test_status_shows_the_download_spread_over_both_uplinks(guest, download):
    report = guest_status.status(guest.guest, INTERFACES, str(guest.run_dir), interval=1.0)
    json.dumps(report)  # --json prints it as it is
    assert report["exists"] and report["up"], report
    assert [(link["name"], link["uplink"], link["state"], link["addresses"]) for link in report["links"]] == [
        ("eth0", 0, "UP", ["10.66.6.2/24"]), ("eth1", 1, "UP", ["10.66.7.2/24"])]
    assert report["mptcp"]["enabled"] is True and report["mptcp"]["limits"] == {"subflows": 2,
                                                                                 "add_addr_accepted": 2}
    assert [(e["address"], e["dev"], e["flags"]) for e in report["mptcp"]["endpoints"]] == [
        ("10.66.7.2", "eth1", ["subflow"])]
    assert [(d["name"], d["up"]) for d in report["daemons"]] == [("danted", True)]
    (connection,) = report["connections"]  # the curl -> dante connection was accepted: not listed
    assert connection["program"] == "danted" and connection["remote"] == f"{CHECK}:80"
    assert not connection["fallback"] and connection["state"] == "ESTABLISHED"
    assert [(s["uplink"], s["interface"], s["backup"]) for s in connection["subflows"]] == [
        (0, "eth0", False), (1, "eth1", False)]
    rates = [s["rate_received_bps"] / 1e6 for s in connection["subflows"]]
    total = connection["rate_received_bps"] / 1e6
    print(f"status over {report['interval']} s: {total:.2f} Mbit/s = "
          + " + ".join(f"{rate:.2f}" for rate in rates) + f" (each uplink shaped to {RATE_MBIT} Mbit/s)")
    assert all(rate > 1 for rate in rates), "both uplinks carry the download"
    assert total == pytest.approx(sum(rates)) and total < 2 * RATE_MBIT * 1.25
    assert all(s["bytes_received"] > 0 for s in connection["subflows"])
    text = guest_status.format_status(report)
    print(text)
    lines = text.splitlines()
    assert lines[0] == f"guest {guest.guest}: up (MPTCP enabled; limits: subflows 2, add_addr_accepted 2)"
    assert lines[1].startswith("  uplink 0  eth0     UP      10.66.6.2/24")
    assert lines[2].startswith("  uplink 1  eth1     UP      10.66.7.2/24  endpoint 1 subflow")
    assert lines[3].startswith("  daemons   danted up (pid ")
    assert lines[4].startswith("MPTCP connections through the proxy: 1 (rates over ")
    assert lines[5].startswith(f"  danted {connection['local']} -> {CHECK}:80  ESTABLISHED  2 subflows  rx ")
    assert lines[6].startswith("    uplink 0 eth0     10.66.6.2:") and "received " in lines[6]
    assert lines[7].startswith("    uplink 1 eth1     10.66.7.2:")


def test_watch_gives_a_frame_per_interval_with_rates_since_the_last(guest, download):
    frames = guest_status.watch(guest.guest, INTERFACES, str(guest.run_dir), interval=0.5)
    started = time.monotonic()
    reports = [next(frames) for _ in range(3)]
    elapsed = time.monotonic() - started
    print(f"3 frames in {elapsed:.2f} s, intervals {[r['interval'] for r in reports]}")
    assert all(0.4 < report["interval"] < 1.5 for report in reports)
    ours = [[c for c in report["connections"] if c["token"] not in download] for report in reports]
    assert all(len(connections) == 1 and connections[0]["rate_received_bps"] > 0 for connections in ours)
    frame = guest_status.redraw(guest_status.format_status(reports[-1]))
    assert frame.startswith("\x1b[H\x1b[2J" + f"guest {guest.guest}: up") and frame.endswith("\n")


def test_check_from_the_host_side_and_its_exit_rule(guest):
    good = guest_status.check(guest.guest, INTERFACES, "http://check.test/?format=json", SOCKS,
                              client_netns=guest.far)
    assert guest_status.check_failure(good) is None
    assert good["client"].startswith("10.66.6.2:") and good["kernel"]["local"] == good["client"]
    text = guest_status.format_check(good)
    print(text)
    lines = text.splitlines()
    assert lines[0] == f"http://check.test/?format=json through {SOCKS}: MPTCP, 2 subflows"
    assert lines[1].startswith("  uplink 0  eth0     1 subflow  10.66.6.2:")
    assert lines[1].endswith(f" -> {CHECK}:80")
    assert lines[2].startswith("  uplink 1  eth1     1 subflow  10.66.7.2:")

    bad = guest_status.check(guest.guest, INTERFACES, "http://plain.test/", SOCKS, client_netns=guest.far)
    reason = guest_status.check_failure(bad)
    assert reason.startswith("not MPTCP: the server says TCP; the guest's connection fell back")
    assert guest_status.format_check(bad).splitlines()[0] == (
        f"http://plain.test/ through {SOCKS}: not MPTCP -- FAILED: {reason}")


def test_a_daemon_that_is_down_shows_with_its_last_log_line(guest):
    probe = {"name": "probe", "argv": ["sh", "-c", "echo probe says hello; exec sleep 600"]}
    result = run_module("daemon", inside=guest.guest, run_dir=str(guest.run_dir), config=[probe])
    assert not result.get("failed"), result
    record = json.loads((guest.run_dir / "probe.json").read_text())
    try:
        log, deadline = guest.run_dir / "probe.log", time.monotonic() + 10
        while "probe says hello" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)  # the program has said its line (a loaded machine takes its time)
        os.kill(record["pid"], signal.SIGKILL)  # the supervisor first, so nothing restarts the program
        os.kill(record["program"]["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 10  # a loaded machine takes its time to end them
        while live(record["program"]["pid"], record["program"]["starttime"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        report = guest_status.guest_state(guest.guest, INTERFACES, str(guest.run_dir))
    finally:
        guest.stop_daemon("probe")
    assert report["up"] is False
    assert [(d["name"], d["up"]) for d in report["daemons"]] == [("danted", True), ("probe", False)]
    text = guest_status.format_status(dict(report, connections=[], interval=0))
    assert text.splitlines()[0].startswith(f"guest {guest.guest}: DEGRADED")
    assert "probe DOWN" in text and "    probe: probe says hello (" in text


def test_no_guest():
    name = unique_name("mpsgone")
    report = guest_status.status(name, INTERFACES, "/nonexistent", interval=0.1)
    assert report == {"guest": name, "exists": False, "interfaces": INTERFACES, "up": False, "links": [],
                      "mptcp": None, "daemons": [], "connections": []}
    assert guest_status.format_status(report) == f"guest {name}: not up (no namespace {name})"
