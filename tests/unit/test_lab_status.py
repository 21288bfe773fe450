"""mpsocks-run lab status: the recorded plan, what is alive, text and JSON."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ansible_collections.mpsocks.mptcp.plugins.module_utils.lab import lab_plan

RUNNER = Path(__file__).resolve().parents[2] / "runner"
sys.path.insert(0, str(RUNNER))

from mpsocks import lab, lab_probe  # noqa: E402


def test_no_lab_is_reported_as_not_up(tmp_path):
    report = lab.status("nothere", str(tmp_path))
    assert report == {"schema_version": 1, "name": "nothere", "state": "not up", "up": False,
                      "run_dir": str(tmp_path / "nothere")}
    assert lab.format_status(report) == f"lab nothere: not up (no plan in {tmp_path / 'nothere'})"


def test_recorded_plan_with_nothing_running_is_degraded(tmp_path):
    plan = lab_plan({"name": "ghost", "run_root": str(tmp_path),
                     "uplinks": [20, {"rate_mbit": 5, "middlebox": "optimizer", "optimizer_rate_mbit": 30}]})
    (tmp_path / "ghost").mkdir()
    (tmp_path / "ghost" / "lab.json").write_text(json.dumps(plan))
    report = lab.status("ghost", str(tmp_path))
    assert report["up"] is False and report["state"] == "degraded"
    assert not any(report["processes_up"].values())
    assert not any(check["ok"] for check in report["checks"])
    assert [u["middlebox"] for u in report["uplinks"]] == ["none", "optimizer"]
    assert report["links"][0] == {"netns": "ghost-host", "interface": "lab0", "address": "198.18.0.2/24",
                                  "peer_netns": "ghost-isp0", "peer": "cust", "peer_address": "198.18.0.1/24",
                                  "up": False}
    assert not {"tables", "shapers", "mptcp_endpoints", "settings", "owner"} & set(report)
    text = lab.format_status(report)
    assert text.startswith(f"lab ghost: DEGRADED ({len(report['checks'])} of {len(report['checks'])} checks "
                           "fail)")
    assert ("    FAIL ghost-host:lab0 - ghost-isp0:cust: ghost-host:lab0 is missing; "
            "ghost-isp0:cust is missing") in text
    assert "uplink 1    lab1 198.18.1.2/24 gateway 198.18.1.1  5 Mbit/s  middlebox optimizer " \
           "(terminated flows 30 Mbit/s)" in text
    assert "hops        12 (a server's packets reach the host with TTL 52)" in text
    assert "  download  http://198.19.0.11/  (GET /bytes/N: N bytes)" in text
    assert report["dns"]["names"]["check.lab.test"] == "198.19.0.10"
    assert report["processes_up"]["dns"] is False
    assert "dns         198.19.0.53 (dnsmasq, in ghost-net)" in text
    assert "  check.lab.test     198.19.0.10" in text and "  dns.lab.test       198.19.0.53" in text


def test_plan_recorded_before_the_lab_had_dns_still_shows(tmp_path):
    plan = lab_plan({"name": "old", "run_root": str(tmp_path)})
    del plan["dns"]
    plan["daemons"] = [d for d in plan["daemons"] if d["name"] != "dns"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "lab.json").write_text(json.dumps(plan))
    text = lab.format_status(lab.status("old", str(tmp_path)))
    assert "  plain     http://198.19.0.12/" in text and "dns " not in text


def test_a_process_counts_only_in_its_namespace(tmp_path, netns):
    pid_file = tmp_path / "x.pid"
    inside = subprocess.Popen(["ip", "netns", "exec", netns, "sleep", "100"])
    try:
        deadline = time.monotonic() + 5
        while os.stat(f"/proc/{inside.pid}/ns/net").st_ino != os.stat(f"/run/netns/{netns}").st_ino:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        pid_file.write_text(f"{inside.pid}\n")
        assert lab_probe._alive(pid_file, netns) is True
        pid_file.write_text(f"{os.getpid()}\n")  # alive, but in another namespace
        assert lab_probe._alive(pid_file, netns) is False
        pid_file.write_text("not a pid\n")
        assert lab_probe._alive(pid_file, netns) is False
    finally:
        inside.kill()
        inside.wait()
