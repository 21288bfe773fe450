"""``mpsocks-run up --lab`` end to end: the proxy stack on a network-namespace guest, real dante and redsocks,
real MPTCP over the lab's two uplinks; check, status, socksified routes, failover, safety, and down.

One lab and one stack serve most tests (a module fixture); a second lab tests backup uplinks.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from mpsocks_testlib import (
    assert_unchanged,
    changed_count,
    lab_name,
    mpsocks_run,
    snapshot,
)

CLIENT = Path(__file__).with_name("lab_client.py")
PROXY = "10.66.6.2:1080"


def in_netns(netns: str, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    argv = ["ip", "netns", "exec", netns, *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def curl_json(netns: str, url: str, *options: str) -> dict:
    proc = in_netns(netns, "curl", "-sS", "--max-time", "30", *options, url)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def stack(artifacts):
    """A lab (two 20 Mbit/s uplinks, four hops) and the proxy stack on it; down restores the machine."""
    name = lab_name("s")
    before = snapshot()
    rc, output = mpsocks_run("up", "--backend", "netns", "--lab", name, artifacts=artifacts)
    try:
        assert rc == 0, output
        plan = json.loads((Path("/run/mpsocks/lab") / name / "lab.json").read_text())
        yield {"name": name, "plan": plan, "host": plan["host_netns"], "output": output}
    finally:
        rc, down = mpsocks_run("down", artifacts=artifacts)
        assert rc == 0, down
        assert not any(ns.startswith(f"{name}-") for ns in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
        assert_unchanged(before)


def test_up_ends_with_the_socks_address_and_the_check(stack):
    assert re.search(r"SOCKS5 proxy 10\.66\.6\.2:1080: MPTCP, 2 subflows", stack["output"]), stack["output"]


def test_socks_to_the_check_server_by_address_and_by_name(stack):
    check = stack["plan"]["servers"]["check"]
    for url in (f"{check}?format=json", "http://check.lab.test/?format=json"):
        answer = curl_json(stack["host"], url, "--socks5-hostname", PROXY)
        assert answer["mptcp"] is True and answer["subflows"] == 2, (url, answer)


def test_check_says_the_same(stack, artifacts):
    rc, output = mpsocks_run("check", "--json", artifacts=None)
    assert rc == 0, output
    report = json.loads(output)
    assert report["mptcp"] is True and report["subflows"] == 2, report


def test_second_up_changes_nothing_fast(stack, artifacts):
    rc, output = mpsocks_run("up", "--backend", "netns", "--lab", stack["name"], artifacts=artifacts)
    assert rc == 0, output
    for host in ("localhost", stack["host"], f"{stack['name']}-guest"):
        assert changed_count(output, host) == 0, (host, output)
    calls, seconds = re.search(r"(\d+) module calls? in ([0-9.]+) s", output).groups()
    print(f"second up --lab: {calls} module calls in {seconds} s")
    assert int(calls) <= 30


def test_via_guest_socksifies_a_plain_client(stack, artifacts):
    via = ("--via-guest", "198.19.0.0/24")
    rc, output = mpsocks_run("up", "--backend", "netns", "--lab", stack["name"], *via, artifacts=artifacts)
    try:
        assert rc == 0, output
        answer = curl_json(stack["host"], stack["plan"]["servers"]["check"] + "?format=json")
        assert answer["mptcp"] is True and answer["subflows"] == 2, answer
    finally:
        rc, output = mpsocks_run("up", "--backend", "netns", "--lab", stack["name"], artifacts=artifacts)
        assert rc == 0, output
    answer = curl_json(stack["host"], stack["plan"]["servers"]["check"] + "?format=json")
    assert answer["mptcp"] is False, "without --via-guest the lab host goes straight out again"


def test_one_stack_at_a_time(stack, artifacts):
    rc, output = mpsocks_run("up", "--backend", "netns", "--lab", lab_name("s"), artifacts=artifacts)
    expected = f"another stack is up (guest {stack['name']}-guest, lab {stack['name']})"
    assert rc == 5 and expected in output, output


def test_not_an_open_proxy(stack):
    host = stack["host"]
    # From the lab host but from an address outside the host subnets: dante refuses.
    refused = in_netns(host, "curl", "-sS", "--max-time", "10", "--interface", "198.18.0.2",
                       "--socks5-hostname", PROXY, stack["plan"]["servers"]["check"])
    assert refused.returncode != 0, refused.stdout
    # Nothing of the guest listens on another address; the uplinks do not reach it.
    listening = in_netns(f"{stack['name']}-guest", "ss", "-Htln").stdout.split("\n")
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening if line.strip()}
    assert addresses <= {"10.66.6.2"}, addresses
    isp = stack["plan"]["uplinks"][0]["isp_netns"]
    assert in_netns(isp, "curl", "-s", "--max-time", "3", f"http://{PROXY}/").returncode != 0


def test_failover_a_download_survives_its_first_uplink(stack):
    """Uplink 0's ISP link goes down in the middle of a download through the proxy: it completes, intact."""
    plan, host = stack["plan"], stack["host"]
    size = 40 * 10**6 // 8 * 4  # about four seconds at 40 Mbit/s
    url = f"{plan['servers']['download']}bytes/{size}"
    isp = plan["uplinks"][0]["isp_netns"]
    body = Path(f"/tmp/{stack['name']}-failover")

    def cut():
        time.sleep(1.5)
        subprocess.run(["ip", "netns", "exec", isp, "ip", "link", "set", "cust", "down"], check=True)

    cutter = threading.Thread(target=cut)
    cutter.start()
    try:
        proc = in_netns(host, "curl", "-sS", "--max-time", "120", "-D", "-", "-o", str(body),
                        "--socks5-hostname", PROXY, url, timeout=180)
        cutter.join()
        assert proc.returncode == 0, proc.stderr
        digest = re.search(r"(?im)^x-content-sha256:\s*(\S+)", proc.stdout)[1]
        data = body.read_bytes()
        assert len(data) == size and hashlib.sha256(data).hexdigest() == digest
        print(f"failover: {size} bytes, sha256 matches, uplink 0 cut 1.5 s in")
    finally:
        cutter.join()
        subprocess.run(["ip", "netns", "exec", isp, "ip", "link", "set", "cust", "up"], check=False)
        body.unlink(missing_ok=True)
