"""``mpsocks-run up --lab`` end to end: the proxy stack on a network-namespace guest, real dante and redsocks,
real MPTCP over the lab's two uplinks; check, status, socksified routes, failover, safety, and down.

One lab and one stack serve most tests (a module fixture); a second lab tests backup uplinks.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mpsocks_testlib import (
    assert_unchanged,
    changed_count,
    lab_name,
    mpsocks_run,
    runner_env,
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


def test_lab_status_checks_the_proxy_on_it(stack):
    rc, text = mpsocks_run("lab", "status", "--name", stack["name"], "--json", artifacts=None)
    report = json.loads(text)
    assert rc == 0 and report["state"] == "up", text
    assert report["stack"] == {"guest": f"{stack['name']}-guest", "backend": "netns", "proxy": PROXY}
    (proxy,) = [check for check in report["checks"] if check["kind"] == "proxy"]
    assert proxy == {"kind": "proxy", "name": PROXY, "ok": True, "detail": "MPTCP with 2 subflow(s)"}


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


def start_capture(*args: str) -> subprocess.Popen:
    """``mpsocks-run capture ARGS``, running once it has said on which interfaces it captures."""
    proc = subprocess.Popen([sys.executable, "-m", "mpsocks", "capture", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=runner_env())
    said = proc.stderr.readline()
    assert said.startswith("mpsocks-run: capturing on "), said + proc.stderr.read()
    return proc


def tshark_fields(path: Path, *fields: str, display_filter: str = "") -> list[list[str]]:
    argv = ["tshark", "-r", str(path), "-T", "fields", *[arg for field in fields for arg in ("-e", field)]]
    proc = subprocess.run(argv + (["-Y", display_filter] if display_filter else []), capture_output=True,
                          text=True, check=True)
    return [line.split("\t") for line in proc.stdout.splitlines()]


def test_capture_sees_one_subflow_on_each_uplink(stack, tmp_path):
    """A download through SOCKS while capture runs: one pcapng naming lab0, lab1 and the links to the
    guest; analyze finds the MPTCP connection with a subflow on each uplink; the packet counts capture
    prints are tshark's."""
    output = tmp_path / "uplinks.pcapng"
    proc = start_capture("--seconds", "6", "--snaplen", "120", "--guest-links", "-o", str(output), "--json")
    url = f"{stack['plan']['servers']['download']}bytes/2000000"
    download = in_netns(stack["host"], "curl", "-sS", "-o", "/dev/null", "--socks5-hostname", PROXY, url)
    assert download.returncode == 0, download.stderr
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert 6 <= result["seconds"] < 8, result  # dumpcap's duration, from when it says it captures
    assert result["path"] == str(output) and not output.with_name("uplinks.pcapng.part").exists()
    names = [item["name"] for item in result["interfaces"]]
    assert names == ["lab0", "lab1", "mptcp0", "mptcp1"]
    seen = {}
    for (name,) in tshark_fields(output, "frame.interface_name"):
        seen[name] = seen.get(name, 0) + 1
    assert {item["name"]: item["packets"] for item in result["interfaces"]} == seen
    assert result["packets"] == sum(seen.values())
    assert all(int(length) <= 120 for (length,) in tshark_fields(output, "frame.cap_len"))
    rc, text = mpsocks_run("analyze", "--json", str(output), artifacts=None)
    assert rc == 0, text
    report = json.loads(text)
    uplinks = [subflow["client"]["address"] for connection in report["connections"]
               for subflow in connection["subflows"]]
    assert {"198.18.0.2", "198.18.1.2"} <= set(uplinks), report["connections"]


def test_capture_ends_cleanly_on_ctrl_c(stack, tmp_path):
    output = tmp_path / "until-ctrl-c.pcapng"
    proc = start_capture("-o", str(output))
    curl_json(stack["host"], f"{stack['plan']['servers']['check']}?format=json", "--socks5-hostname", PROXY)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.startswith(f"{output}: ") and "mpsocks-run analyze" in out, out
    assert tshark_fields(output, "frame.interface_name", display_filter="tcp.flags.syn == 1")


def test_capture_refuses_bad_input_in_one_line(stack, tmp_path):
    for args, needle in ((["-o", str(tmp_path / "no" / "such.pcapng")], "output: folder"),
                         (["-o", str(tmp_path)], "is a directory"),
                         (["--snaplen", "40"], "snaplen: 40 is not a byte count")):
        rc, output = mpsocks_run("capture", "--seconds", "1", *args, artifacts=None)
        assert rc == 5 and output.count("\n") == 1 and needle in output, (args, output)
    assert not list(tmp_path.iterdir())


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
