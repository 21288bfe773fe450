"""``mpsocks-run lab``: the lab's settings from the command line, and its status.

The plan itself is the collection's (``module_utils/lab.py``): the CLI validates with it before running
the playbook, and ``status`` reads the plan the role recorded and checks what is alive.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.lab import (
    DEFAULTS,
    MIDDLEBOXES,
    NAME_PATTERN,
    lab_plan,
)

__all__ = ["MIDDLEBOXES", "NAME_PATTERN", "MpsocksError", "format_status", "lab_settings", "status"]

NETNS_DIR = Path("/run/netns")


def lab_settings(
    name: str,
    rates: list[float],
    middleboxes: dict[int, str],
    optimizer_rate: float | None,
    hops: int,
    host_netns: bool,
) -> dict:
    """The role's settings from command-line values; raises MpsocksError (one line) when they don't fit."""
    for index in middleboxes:
        if not 0 <= index < len(rates):
            raise MpsocksError(f"--middlebox: there is no uplink {index} (uplinks 0..{len(rates) - 1})")
    uplinks = []
    for index, rate in enumerate(rates):
        uplink = {"rate_mbit": rate, "middlebox": middleboxes.get(index, "none")}
        if optimizer_rate is not None and uplink["middlebox"] == "optimizer":
            uplink["optimizer_rate_mbit"] = optimizer_rate
        uplinks.append(uplink)
    if optimizer_rate is not None and "optimizer" not in middleboxes.values():
        raise MpsocksError("--optimizer-rate: no uplink has --middlebox N=optimizer")
    settings = {"name": name, "uplinks": uplinks, "hops": hops, "host_netns": host_netns}
    lab_plan(settings)  # validates
    return settings


def _alive(pid_file: Path, netns: str) -> bool:
    """Whether the process in PID_FILE runs, in namespace NETNS."""
    try:
        pid = int(pid_file.read_text().split()[0])
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(NETNS_DIR / netns).st_ino
    except (OSError, ValueError, IndexError):
        return False


def status(name: str = DEFAULTS["name"], run_root: str = DEFAULTS["run_root"]) -> dict:
    """The recorded plan of lab NAME with what is up, or ``{"name": NAME, "up": False}`` if none."""
    run_dir = Path(run_root) / name
    try:
        plan = json.loads((run_dir / "lab.json").read_text())
    except FileNotFoundError:
        return {"name": name, "up": False, "run_dir": str(run_dir)}
    except ValueError as exc:
        raise MpsocksError(f"{run_dir / 'lab.json'}: not a lab plan ({exc})") from None
    namespaces = {netns: (NETNS_DIR / netns).exists() for netns in plan["namespaces"]}
    processes = {
        daemon["name"]: _alive(run_dir / f"{daemon['name']}.pid", daemon["netns"])
        for daemon in plan["daemons"]
    }
    report = {key: value for key, value in plan.items() if key not in ("settings", "links", "routes")}
    report.update(
        up=all(namespaces.values()) and all(processes.values()),
        namespaces_up=namespaces,
        processes_up=processes,
    )
    return report


def format_status(report: dict) -> str:
    """REPORT as the lines ``mpsocks-run lab status`` prints."""
    if "uplinks" not in report:
        return f"lab {report['name']}: not up (no plan in {report['run_dir']})"
    down = [name for name, up in {**report["namespaces_up"], **report["processes_up"]}.items() if not up]
    lines = [
        f"lab {report['name']}: " + ("up" if report["up"] else "DEGRADED, missing: " + ", ".join(down)),
        f"host        {report['host_netns'] or 'the current namespace (uplinks in it)'}",
    ]
    for uplink in report["uplinks"]:
        middlebox = uplink["middlebox"]
        if uplink.get("optimizer_rate_mbit"):
            middlebox += f" (terminated flows {uplink['optimizer_rate_mbit']:g} Mbit/s)"
        lines.append(
            f"uplink {uplink['index']}    {uplink['name']} {uplink['address']} "
            f"gateway {uplink['gateway']}  {uplink['rate_mbit']:g} Mbit/s  middlebox {middlebox}  "
            f"isp {uplink['isp_netns']}"
        )
    lines.append(
        f"hops        {report['hops']} (a server's packets reach the host with TTL "
        f"{report['server_ttl_at_host']})"
    )
    lines.append(f"servers     in {report['server_netns']}")
    for role, url in report["servers"].items():
        path = "bytes/N" if role == "download" else ""
        lines.append(f"  {role:<9} {url}{path}")
    if "dns" in report:  # plans recorded before the lab had a DNS server have none
        dns = report["dns"]
        lines.append(f"dns         {dns['address']} (dnsmasq, in {report['server_netns']})")
        lines += [f"  {name:<18} {address}" for name, address in dns["names"].items()]
    return "\n".join(lines)
