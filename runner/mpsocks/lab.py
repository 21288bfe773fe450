"""``mpsocks-run lab``: the lab's settings from the command line or a topology file, its status, graph and
nodes.

The plan itself is the collection's (``module_utils/lab.py``): the CLI validates with it before running
the playbook (and refuses to reshape a running lab unasked), ``status`` reads the plan the role recorded
and probes what runs (``lab_probe``), ``graph`` draws it.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.lab import (
    DEFAULTS,
    MIDDLEBOXES,
    NAME_PATTERN,
    lab_plan,
)

from mpsocks import lab_probe, runs, stack
from mpsocks.playbook_run import KEPT, default_artifacts_dir

#: Re-exported for the CLI, with what this module defines.
__all__ = ["DEFAULTS", "MIDDLEBOXES", "NAME_PATTERN", "MpsocksError"]

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


#: What ``lab status --json`` reports of the plan; the rest (tables, shapers, nft, endpoints ...) is the
#: role's business, not the user's.
REPORTED = ("name", "run_dir", "hops", "server_ttl_at_host", "host_netns", "server_netns", "routers",
            "namespaces", "servers", "dns")
UPLINK_KEYS = ("index", "name", "address", "gateway", "rate_mbit", "middlebox", "optimizer_rate_mbit",
               "delay_ms", "isp_netns")
STATUS_SCHEMA = 1


def status(name: str = DEFAULTS["name"], run_root: str = DEFAULTS["run_root"]) -> dict:
    """Lab NAME as recorded, with every probe of what runs (lab_probe) and the verdict ``state``: up (all
    probes pass), degraded (some fail), not up (no recorded plan)."""
    run_dir = Path(run_root) / name
    plan = recorded_plan(name, run_root)
    if plan is None:
        report = {"schema_version": STATUS_SCHEMA, "name": name, "state": "not up", "up": False,
                  "run_dir": str(run_dir)}
        return report | ({"last_logs": str(logs)} if (logs := last_logs(name)) else {})
    recorded = stack.load()
    on_lab = recorded if recorded is not None and recorded.lab == name and stack.is_up(recorded) else None
    checks = lab_probe.probe(plan, run_dir, on_lab)
    state = "up" if all(check["ok"] for check in checks) else "degraded"
    report = {"schema_version": STATUS_SCHEMA, "name": name, "state": state, "up": state == "up"}
    report |= {key: plan[key] for key in REPORTED if key in plan}
    report["uplinks"] = [{key: uplink[key] for key in UPLINK_KEYS if uplink.get(key) is not None}
                         for uplink in plan["uplinks"]]
    if any(uplink["middlebox"] == "optimizer" for uplink in plan["uplinks"]):
        report["optimizer"] = plan["optimizer"]
    up = {check["name"]: check["ok"] for check in checks if check["kind"] == "link"}
    report["links"] = [{"netns": link["netns"], "interface": link["name"], "address": link["addresses"][0],
                        "peer_netns": link["peer_netns"], "peer": link["peer"],
                        "peer_address": link["peer_addresses"][0],
                        "up": up.get(f"{link['netns'] or '(root)'}:{link['name']} - "
                                     f"{link['peer_netns'] or '(root)'}:{link['peer']}", False)}
                       for link in plan["links"]]
    if (run_dir / "inventory.yml").exists():  # plans recorded before the lab wrote one have none
        report["inventory"] = str(run_dir / "inventory.yml")
    if on_lab is not None:
        report["stack"] = {"guest": on_lab.guest, "backend": on_lab.backend, "proxy": on_lab.socks_address()}
    report["namespaces_up"] = {netns: (NETNS_DIR / netns).exists() for netns in plan["namespaces"]}
    report["processes_up"] = {check["name"]: check["ok"] for check in checks if check["kind"] == "process"}
    report["checks"] = checks
    return report


def last_logs(name: str, base: Path | None = None) -> Path | None:
    """Where the last ``lab down`` of lab NAME kept its server logs (in its run folder), if it did."""
    try:
        kept = runs.find_run(base or default_artifacts_dir(), f"lab-down-{name}") / KEPT
    except runs.UnknownRun:
        return None
    return kept if kept.is_dir() else None


def all_labs(run_root: str = DEFAULTS["run_root"]) -> list[str]:
    """The names of the labs recorded on this machine."""
    return sorted(path.parent.name for path in Path(run_root).glob("*/lab.json"))


#: The probes' kinds as status shows them, with the word for a passing item.
CHECK_KINDS = (("link", "links", "up"), ("hop", "hops", "answer"), ("process", "processes", "run"),
               ("server", "servers", "answer"), ("proxy", "proxy", "MPTCP"))


def format_status(report: dict) -> str:
    """REPORT as the lines ``mpsocks-run lab status`` prints."""
    if report["state"] == "not up":
        logs = f"; the server logs of its last lab down are in {report['last_logs']}" \
            if "last_logs" in report else ""
        return f"lab {report['name']}: not up (no plan in {report['run_dir']}){logs}"
    failing = [check for check in report["checks"] if not check["ok"]]
    lines = [
        f"lab {report['name']}: " + ("up" if not failing else f"DEGRADED ({len(failing)} of "
                                                                f"{len(report['checks'])} checks fail)"),
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
        lines.append(f"  {role:<9} {url}" + ("  (GET /bytes/N: N bytes)" if role == "download" else ""))
    if "dns" in report:  # plans recorded before the lab had a DNS server have none
        dns = report["dns"]
        lines.append(f"dns         {dns['address']} (dnsmasq, in {report['server_netns']})")
        lines += [f"  {name:<18} {address}" for name, address in dns["names"].items()]
    if "inventory" in report:
        lines.append(f"inventory   {report['inventory']} (ansible -i it lab_routers -m ping)")
    if "stack" in report:
        lines.append(f"stack       guest {report['stack']['guest']} ({report['stack']['backend']}), "
                     f"SOCKS5 {report['stack']['proxy']}")
    lines.append("checks")
    for kind, title, word in CHECK_KINDS:
        items = [check for check in report["checks"] if check["kind"] == kind]
        if items:
            passing = sum(check["ok"] for check in items)
            lines.append(f"  {title:<10} {passing}/{len(items)} {word}")
            lines += [f"    FAIL {check['name']}: {check['detail']}" for check in items if not check["ok"]]
    lines.append(f"run folder  {report['run_dir']} (server logs: *.log)")
    return "\n".join(lines)


def format_all(reports: list[dict]) -> str:
    """``lab status --all``: a line per lab."""
    if not reports:
        return "no lab on this machine"
    lines = [f"{'LAB':<11} {'STATE':<9} {'UPLINKS':<18} {'HOPS':>4}  HOST"]
    for report in reports:
        uplinks = ",".join(f"{uplink['rate_mbit']:g}" + ("*" if uplink["middlebox"] != "none" else "")
                           for uplink in report.get("uplinks", []))
        lines.append(f"{report['name']:<11} {report['state']:<9} {uplinks or '-':<18} "
                     f"{report.get('hops', '-'):>4}  {report.get('host_netns') or '-'}")
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


#: The keys of a topology file (``lab up -t FILE``).
TOPOLOGY_KEYS = ("name", "uplinks", "hops", "root_uplinks")
SHAPE_KEYS = ("rate_mbit", "middlebox", "optimizer_rate_mbit", "delay_ms")


def topology_settings(path: Path, name: str | None = None) -> dict:
    """The lab's settings from topology file PATH (YAML: name, uplinks, hops, root_uplinks); NAME, when
    given, overrides the file's. Raises MpsocksError naming the file and the bad key."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise MpsocksError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise MpsocksError(f"{path}: not YAML" + (f" (line {mark.line + 1})" if mark else "")) from None
    if not isinstance(data, dict):
        raise MpsocksError(f"{path}: a topology is a mapping of {', '.join(TOPOLOGY_KEYS)}")
    unknown = sorted(set(data) - set(TOPOLOGY_KEYS))
    if unknown:
        raise MpsocksError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(TOPOLOGY_KEYS)})")
    root_uplinks = data.get("root_uplinks", False)
    if not isinstance(root_uplinks, bool):
        raise MpsocksError(f"{path}: root_uplinks: {root_uplinks!r} is not true or false")
    settings = {"name": name or data.get("name", DEFAULTS["name"]), "uplinks": data.get("uplinks", [{}, {}]),
                "hops": data.get("hops", DEFAULTS["hops"]), "host_netns": not root_uplinks}
    try:
        lab_plan(settings)
    except MpsocksError as exc:
        raise MpsocksError(f"{path}: {exc}") from None
    return settings


def shape_differences(recorded: dict, wanted: dict) -> list[str]:
    """How lab settings WANTED differ from the RECORDED ones of a running lab (its plan's ``settings``),
    as phrases ``what it is, not what is asked``; empty when they give the same lab."""
    new = lab_plan(wanted)["settings"]
    found = []
    if recorded["hops"] != new["hops"]:
        found.append(f"hops {recorded['hops']}, not {new['hops']}")
    if recorded["host_netns"] != new["host_netns"]:
        found.append("uplinks in " + ("a lab host namespace, not the root namespace" if recorded["host_netns"]
                                      else "the root namespace, not a lab host namespace"))
    if len(recorded["uplinks"]) != len(new["uplinks"]):
        found.append(f"{len(recorded['uplinks'])} uplinks, not {len(new['uplinks'])}")
    for index, (old, asked) in enumerate(zip(recorded["uplinks"], new["uplinks"], strict=False)):
        found += [f"uplink {index} {key} {_shown(old.get(key))}, not {_shown(asked.get(key))}"
                  for key in SHAPE_KEYS if old.get(key) != asked.get(key)]
    return found


def _shown(value) -> str:
    return "unset" if value is None else str(value)
