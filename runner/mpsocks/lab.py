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

__all__ = ["MIDDLEBOXES", "NAME_PATTERN", "MpsocksError", "format_status", "graph", "lab_settings",
           "node_netns", "recorded_plan", "status"]

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
    report = {key: value for key, value in plan.items()
              if key not in ("settings", "links", "routes", "inventory")}
    if (run_dir / "inventory.yml").exists():  # plans recorded before the lab wrote one have none
        report["inventory"] = str(run_dir / "inventory.yml")
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
    if "inventory" in report:
        lines.append(f"inventory   {report['inventory']} (ansible -i it lab_routers -m ping)")
    if "dns" in report:  # plans recorded before the lab had a DNS server have none
        dns = report["dns"]
        lines.append(f"dns         {dns['address']} (dnsmasq, in {report['server_netns']})")
        lines += [f"  {name:<18} {address}" for name, address in dns["names"].items()]
    return "\n".join(lines)


def recorded_plan(name: str, run_root: str = DEFAULTS["run_root"]) -> dict | None:
    """The plan lab NAME recorded when it was made, or None when it is not up."""
    try:
        return json.loads((Path(run_root) / name / "lab.json").read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise MpsocksError(f"{Path(run_root) / name / 'lab.json'}: not a lab plan ({exc})") from None


ROOT_NAMESPACE = "(root namespace)"


def _node_labels(plan: dict) -> dict[str, str]:
    """{namespace: what it is}, in the plan's order (the machine's own namespace as ROOT_NAMESPACE)."""
    labels = {plan["host_netns"] or ROOT_NAMESPACE: "host"}
    for uplink in plan["uplinks"]:
        middlebox = "" if uplink["middlebox"] == "none" else f", {uplink['middlebox']}"
        labels[uplink["isp_netns"]] = (f"ISP of uplink {uplink['index']}: {uplink['rate_mbit']:g} Mbit/s"
                                       f"{middlebox}")
    labels.update((router, "router") for router in plan["routers"])
    servers = [f"{role} {url.split('/')[2]}" for role, url in plan["servers"].items()]
    if "dns" in plan:
        servers.append(f"dns {plan['dns']['address']}")
    labels[plan["server_netns"]] = "servers: " + ", ".join(servers)
    return labels


def _edges(plan: dict) -> list[tuple[str, str, str, str]]:
    """(namespace, peer namespace, its end, the peer's end) of every link of PLAN; an end is the
    interface and its address (the servers' addresses are on their node)."""
    return [(link["netns"] or ROOT_NAMESPACE, link["peer_netns"] or ROOT_NAMESPACE,
             f"{link['name']} {link['addresses'][0]}", f"{link['peer']} {link['peer_addresses'][0]}")
            for link in plan["links"]]


def graph(plan: dict, fmt: str) -> str:
    """Lab PLAN as a Mermaid flowchart (FMT mermaid) or a Graphviz graph (dot): a node per namespace, an
    edge per link labelled with both ends' interfaces and addresses."""
    return (_mermaid if fmt == "mermaid" else _dot)(_node_labels(plan), _edges(plan), plan["name"])


def _mermaid(labels: dict, edges: list, _name: str) -> str:
    ids = {netns: f"n{index}" for index, netns in enumerate(labels)}
    lines = ["flowchart LR"]
    lines += [f'  {ids[netns]}["{netns}<br/>{label}"]' for netns, label in labels.items()]
    lines += [f'  {ids[a]} ---|"{end} : {peer_end}"| {ids[b]}' for a, b, end, peer_end in edges]
    return "\n".join(lines) + "\n"


def _dot(labels: dict, edges: list, name: str) -> str:
    def quoted(*lines: str) -> str:
        return '"' + "\\n".join(line.replace('"', '\\"') for line in lines) + '"'

    lines = [f"graph {quoted(name)} {{", "  rankdir=LR;", '  node [shape=box, fontname="Helvetica"];',
             '  edge [fontname="Helvetica", fontsize=9];']
    lines += [f"  {quoted(netns)} [label={quoted(netns, label)}];" for netns, label in labels.items()]
    lines += [f"  {quoted(a)} -- {quoted(b)} [label={quoted(end, peer_end)}];"
              for a, b, end, peer_end in edges]
    return "\n".join(lines + ["}"]) + "\n"


def node_netns(plan: dict, node: str) -> str:
    """The namespace of NODE in lab PLAN: a namespace's name, or its part after the lab's name (host,
    isp0, r1, net, and guest once mpsocks-run up --lab has made it)."""
    nodes = [*plan["namespaces"], f"{plan['name']}-guest"]
    for netns in nodes:
        if node in (netns, netns.removeprefix(f"{plan['name']}-")):
            return netns
    names = ", ".join(netns.removeprefix(f"{plan['name']}-") for netns in nodes)
    raise MpsocksError(f"lab {plan['name']} has no node {node!r} (its nodes: {names})")
