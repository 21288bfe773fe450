"""Module trace_capture and playbooks/capture.yml: dumpcap on two uplinks of a namespace at once, one
pcapng that names each interface, counts that agree with tshark; check mode and bad input capture nothing."""

import json
import subprocess
import sys
import threading
import time

import pytest
from mpsocks_testlib import REPO, ansible_playbook, run_module, sh, unique_name

PEERS = (("up0", "10.81.0.1/24", "10.81.0.2"), ("up1", "10.81.1.1/24", "10.81.1.2"))
SEND = """
import socket, sys, time
for _ in range(int(sys.argv[1])):
    for device, address in (("up0", "10.81.0.2"), ("up1", "10.81.1.2")):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
            sock.sendto(b"mpsocks", (address, 9))
    time.sleep(0.05)
"""


@pytest.fixture
def uplinks():
    """Namespace HOST with uplinks up0 and up1, their far ends in namespace PEER."""
    host, peer = unique_name("mpscap"), unique_name("mpscpp")
    for ns in (host, peer):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for name, address, far in PEERS:
            sh("ip", "link", "add", name, "type", "veth", "peer", "name", f"far{name[-1]}", "netns", peer,
               netns=host)
            sh("ip", "addr", "add", address, "dev", name, netns=host)
            sh("ip", "link", "set", name, "up", netns=host)
            sh("ip", "addr", "add", f"{far}/24", "dev", f"far{name[-1]}", netns=peer)
            sh("ip", "link", "set", f"far{name[-1]}", "up", netns=peer)
        yield host
    finally:
        for ns in (host, peer):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def send_while(seconds: float, host: str) -> threading.Thread:
    """Datagrams out of both uplinks, for SECONDS, starting in a second (once dumpcap runs)."""
    def send():
        time.sleep(1.0)
        sh(sys.executable, "-c", SEND, str(int(seconds / 0.05)), netns=host)
    thread = threading.Thread(target=send)
    thread.start()
    return thread


def interface_counts(path) -> dict:
    proc = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.interface_name"],
                          capture_output=True, text=True, check=True)
    counts = {}
    for name in proc.stdout.split():
        counts[name] = counts.get(name, 0) + 1
    return counts


def test_the_playbook_captures_both_uplinks_into_one_file(uplinks, tmp_path):
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"children": {"mpsocks_host": {"hosts": {uplinks: {
        "ansible_connection": "mpsocks.mptcp.netns", "ansible_python_interpreter": sys.executable}}}}}}))
    output = tmp_path / "both.pcapng"
    sender = send_while(1.5, uplinks)
    rc, text, _recap = ansible_playbook(REPO / "playbooks" / "capture.yml", inventory, extravars={
        "mpsocks_uplinks": ["up0", "up1"], "mpsocks_capture_seconds": 4,
        "mpsocks_capture_output": str(output)})
    sender.join()
    assert rc == 0, text
    counts = interface_counts(output)
    assert counts.get("up0", 0) >= 20 and counts.get("up1", 0) >= 20, counts
    assert f"{output}: {sum(counts.values())} packets in" in text
    assert f"up0 {counts['up0']}, up1 {counts['up1']}" in text


def test_check_mode_and_bad_input_capture_nothing(uplinks, tmp_path):
    output = tmp_path / "none.pcapng"
    checked = run_module("trace_capture", check=True, inside=uplinks, interfaces=["up0", "up1"], seconds=1,
                         output=str(output))
    assert checked["changed"] and checked["packets"] == 0 and checked["path"] == str(output), checked
    for params, needle in (({"interfaces": ["up0", "nosuch0"]}, "interfaces: nosuch0 does not exist"),
                           ({"interfaces": ["up0", "up0"]}, "interfaces: up0 is given twice"),
                           ({"interfaces": ["up0"], "seconds": 0}, "seconds: 0 is not a duration"),
                           ({"interfaces": ["up0"], "snaplen": 20}, "snaplen: 20 is not a byte count"),
                           ({"interfaces": ["up0"], "output": str(tmp_path / "no" / "x.pcapng")},
                            "output: folder")):
        params = {"seconds": 1, "output": str(output), **params}
        result = run_module("trace_capture", inside=uplinks, **params)
        assert result.get("failed") and needle in result["msg"], (params, result)
        assert "\n" not in result["msg"], result
    assert not list(tmp_path.iterdir())


def test_a_capture_in_progress_is_never_taken_for_a_finished_one(uplinks, tmp_path):
    """While dumpcap writes, only OUTPUT.part exists; the module's result is the renamed, whole file."""
    output = tmp_path / "slow.pcapng"
    sender = send_while(1.0, uplinks)
    runner = threading.Thread(target=lambda: results.append(run_module(
        "trace_capture", inside=uplinks, interfaces=["up0"], seconds=3, output=str(output))))
    results = []
    runner.start()
    time.sleep(2.0)
    assert not output.exists() and output.with_name("slow.pcapng.part").exists()
    runner.join()
    sender.join()
    assert results[0]["changed"] and results[0]["interfaces"][0]["packets"] == interface_counts(output)["up0"]
