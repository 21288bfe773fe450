"""``mpsocks-run status`` and ``check``: the guest and its live MPTCP connections, read from the host.

Everything comes from the guest's kernel (sock_diag, rtnetlink, the MPTCP path manager), read by
entering the guest's namespace (``netns.visiting``), and from the records the ``daemon`` module keeps
in the guest's run folder. A connection's rates come from two samples of its subflows' byte counters.
The check is the ``mptcp_check`` module's own code, with the client socket opened where the host is.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ansible_collections.mpsocks.mptcp.plugins.module_utils import mptcp_check, mptcp_sockets
from ansible_collections.mpsocks.mptcp.plugins.module_utils.daemon import is_record, live
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.mptcp_pm import flag_names, path_manager
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns import (
    netns_identity,
    netns_members,
    visiting,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.rtnl import iproute, managed_addresses

from mpsocks.playbook_run import ModuleUnreachable, run_module

DEFAULT_RUN_DIR = "/run/mpsocks/guest"
MPTCP_ENABLED = "/proc/sys/net/mptcp/enabled"
#: Clears a terminal and puts the cursor top left: ``--watch`` draws each frame after it.
CLEAR = "\x1b[H\x1b[2J"
_LOG_TAIL = 4096


def _links() -> list[dict]:
    """The current namespace's links but lo: name, operational state, addresses."""
    with iproute() as ipr:
        return [{"name": link.get_attr("IFLA_IFNAME"), "index": link["index"],
                 "state": link.get_attr("IFLA_OPERSTATE") or "UNKNOWN",
                 "addresses": managed_addresses(ipr, link["index"])}
                for link in ipr.get_links() if link.get_attr("IFLA_IFNAME") != "lo"]


def _path_manager_view(names: dict[int, str]) -> dict:
    """MPTCP in the current namespace: enabled, limits, endpoints (their interface by name)."""
    with open(MPTCP_ENABLED) as handle:
        enabled = handle.read().strip() == "1"
    with path_manager() as pm:
        subflows, add_addr_accepted = pm.limits()
        endpoints = [{"id": endpoint["id"], "address": endpoint["address"],
                      "dev": names.get(endpoint["ifindex"]), "port": endpoint["port"],
                      "flags": flag_names(endpoint["flags"])} for endpoint in pm.endpoints()]
    return {"enabled": enabled, "limits": {"subflows": subflows, "add_addr_accepted": add_addr_accepted},
            "endpoints": sorted(endpoints, key=lambda endpoint: endpoint["id"])}


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - _LOG_TAIL))
            lines = handle.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def daemons(run_dir: str = DEFAULT_RUN_DIR) -> list[dict]:
    """The daemons the ``daemon`` module keeps in RUN_DIR: up (supervisor and program alive), pid, log."""
    found = []
    for path in sorted(Path(run_dir).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not is_record(record, path.stem):
            continue
        program = record.get("program") or {}
        up = (live(record["pid"], record.get("starttime"))
              and live(program.get("pid"), program.get("starttime")))
        found.append({"name": record["name"], "up": bool(up), "pid": program.get("pid") if up else None,
                      "netns": record.get("netns"), "argv": record["argv"], "log": record.get("log"),
                      "last_log_line": _last_line(record["log"]) if record.get("log") else ""})
    return found


def guest_state(guest: str, interfaces: list[str], run_dir: str = DEFAULT_RUN_DIR) -> dict:
    """The guest namespace GUEST: links (uplink n is INTERFACES[n]), MPTCP settings, daemons, up or not."""
    report = {"guest": guest, "exists": netns_identity(guest) is not None, "interfaces": list(interfaces)}
    if not report["exists"]:
        return dict(report, up=False, links=[], mptcp=None, daemons=daemons(run_dir))
    with visiting(guest):
        links = _links()
        mptcp = _path_manager_view({link["index"]: link["name"] for link in links})
        backup = mptcp_check.backup_interfaces(interfaces)
    for link in links:
        link["uplink"] = _position(link["name"], interfaces)
        link["backup"] = link["name"] in backup
    running = daemons(run_dir)
    uplinks_up = all(any(link["name"] == name and link["state"] == "UP" for link in links)
                     for name in interfaces)
    return dict(report, up=uplinks_up and mptcp["enabled"] and all(d["up"] for d in running),
                links=links, mptcp=mptcp, daemons=running)


def _position(name: str | None, interfaces: list[str]) -> int | None:
    """Which uplink interface NAME is (its position in INTERFACES), or None."""
    return interfaces.index(name) if name in interfaces else None


def sample(guest: str) -> dict:
    """One look at the guest's MPTCP sockets, with the time it was taken."""
    with visiting(guest):
        return {"time": time.monotonic(), "sockets": mptcp_sockets.snapshot()}


def _socket_programs(guest: str) -> dict[int, str]:
    """{socket inode: program name} of the processes in namespace GUEST."""
    programs = {}
    for pid in netns_members(netns_identity(guest)):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    programs[int(target[8:-1])] = comm
        except OSError:
            continue  # gone meanwhile
    return programs


def _rate(now: int | None, then: int | None, seconds: float) -> float | None:
    """Bits per second between two byte counters (a counter that did not exist before counts from 0)."""
    if now is None or seconds <= 0:
        return None
    return max(0, now - (then or 0)) * 8 / seconds


def live_connections(before: dict, after: dict, interfaces: list[str],
                     programs: dict[int, str]) -> list[dict]:
    """The outgoing MPTCP connections of sample AFTER with their subflows and rates since sample BEFORE.

    Connections the guest accepted (a client's, to the proxy) are left out: what goes through the
    proxy is the connections it opens.
    """
    seconds = after["time"] - before["time"]
    earlier = {connection["token"]: connection for connection in before["sockets"]["connections"]}
    found = []
    for connection in after["sockets"]["connections"]:
        if mptcp_sockets.is_inbound(connection, after["sockets"]["listeners"]):
            continue
        old = earlier.get(connection["token"], {"subflows": []})
        old_subflows = {(subflow["local"], subflow["remote"]): subflow for subflow in old["subflows"]}
        subflows = []
        for subflow in connection["subflows"]:
            then = old_subflows.get((subflow["local"], subflow["remote"]), {})
            subflows.append({
                "local": subflow["local"], "remote": subflow["remote"], "state": subflow["state"],
                "interface": subflow["interface"],
                "uplink": _position(subflow["interface"], interfaces),
                "backup": subflow["backup"], "join": subflow["join"], "rtt_ms": subflow["rtt_ms"],
                "bytes_sent": subflow["bytes_sent"], "bytes_received": subflow["bytes_received"],
                "rate_sent_bps": _rate(subflow["bytes_sent"], then.get("bytes_sent"), seconds),
                "rate_received_bps": _rate(subflow["bytes_received"], then.get("bytes_received"), seconds),
            })
        found.append({
            "token": connection["token"], "local": connection["local"], "remote": connection["remote"],
            "state": connection["state"], "fallback": connection["fallback"],
            "program": programs.get(connection["inode"]),
            "bytes_sent": connection["bytes_sent"], "bytes_received": connection["bytes_received"],
            "rate_sent_bps": _sum(subflow["rate_sent_bps"] for subflow in subflows),
            "rate_received_bps": _sum(subflow["rate_received_bps"] for subflow in subflows),
            "subflows": subflows,
        })
    return found


def _sum(rates) -> float | None:
    known = [rate for rate in rates if rate is not None]
    return sum(known) if known else None


def _report(guest: str, interfaces: list[str], run_dir: str, before: dict | None) -> tuple[dict, dict | None]:
    """The status report with rates since sample BEFORE (none without it), and the sample it ends with."""
    report = guest_state(guest, interfaces, run_dir)
    report["connections"] = []
    if not report["exists"]:
        return report, None
    after = sample(guest)
    before = before or after
    report["connections"] = live_connections(before, after, interfaces, _socket_programs(guest))
    report["interval"] = round(after["time"] - before["time"], 3)
    return report, after


def _first_sample(guest: str) -> dict | None:
    return sample(guest) if netns_identity(guest) is not None else None


def status(guest: str, interfaces: list[str], run_dir: str = DEFAULT_RUN_DIR, interval: float = 1.0) -> dict:
    """Guest state and its live connections, with rates over INTERVAL seconds (``mpsocks-run status``)."""
    before = _first_sample(guest)
    if before is not None:
        time.sleep(interval)
    return _report(guest, interfaces, run_dir, before)[0]


def watch(guest: str, interfaces: list[str], run_dir: str = DEFAULT_RUN_DIR,
          interval: float = 1.0) -> Iterator[dict]:
    """A status report every INTERVAL seconds, each with the rates since the one before (``--watch``)."""
    before = _first_sample(guest)
    while True:
        time.sleep(interval if before is None else max(0.0, interval - (time.monotonic() - before["time"])))
        report, before = _report(guest, interfaces, run_dir, before)
        yield report


def _bits(rate: float | None) -> str:
    return "-" if rate is None else f"{rate / 1e6:.2f} Mbit/s"


def _bytes(count: int | None) -> str:
    if count is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def format_status(report: dict) -> str:
    """REPORT as the lines ``mpsocks-run status`` prints (and ``--watch`` redraws)."""
    guest = report["guest"]
    if not report["exists"]:
        return f"guest {guest}: not up (no namespace {guest})"
    mptcp = report["mptcp"]
    limits = mptcp["limits"]
    lines = [f"guest {guest}: {'up' if report['up'] else 'DEGRADED'} (MPTCP "
             f"{'enabled' if mptcp['enabled'] else 'DISABLED'}; limits: subflows {limits['subflows']}, "
             f"add_addr_accepted {limits['add_addr_accepted']})"]
    endpoints = {endpoint["dev"]: endpoint for endpoint in mptcp["endpoints"]}
    uplinks_first = sorted(report["links"], key=lambda link: (link["uplink"] is None, link["uplink"] or 0,
                                                              link["name"]))
    for link in uplinks_first:
        where = f"uplink {link['uplink']}" if link["uplink"] is not None else "link    "
        endpoint = endpoints.pop(link["name"], None)
        text = f"  {where}  {link['name']:<8} {link['state']:<7} {' '.join(link['addresses']) or '-'}"
        if endpoint:
            text += f"  endpoint {endpoint['id']} {','.join(endpoint['flags'])}"
        lines.append(text + ("  (backup)" if link["backup"] else ""))
    for endpoint in endpoints.values():
        lines.append(f"  endpoint {endpoint['id']} {endpoint['address']} {','.join(endpoint['flags'])}")
    for name in report["interfaces"]:
        if not any(link["name"] == name for link in report["links"]):
            lines.append(f"  uplink {report['interfaces'].index(name)}  {name:<8} MISSING")
    running = [f"{d['name']} " + (f"up (pid {d['pid']})" if d["up"] else "DOWN") for d in report["daemons"]]
    lines.append("  daemons   " + (", ".join(running) or "none"))
    for daemon in report["daemons"]:
        if not daemon["up"] and daemon["last_log_line"]:
            lines.append(f"    {daemon['name']}: {daemon['last_log_line']} ({daemon['log']})")
    connections = report["connections"]
    lines.append(f"MPTCP connections through the proxy: {len(connections)}"
                 + (f" (rates over {report['interval']:g} s)" if connections else ""))
    for connection in connections:
        kind = "fell back to TCP" if connection["fallback"] else f"{len(connection['subflows'])} subflows"
        lines.append(f"  {connection['program'] or '?'} {connection['local']} -> {connection['remote']}  "
                     f"{connection['state']}  {kind}  rx {_bits(connection['rate_received_bps'])}  "
                     f"tx {_bits(connection['rate_sent_bps'])}")
        for subflow in connection["subflows"]:
            where = f"uplink {subflow['uplink']}" if subflow["uplink"] is not None else "uplink ?"
            rtt = "-" if subflow["rtt_ms"] is None else f"{subflow['rtt_ms']:.2f} ms"
            lines.append(
                f"    {where} {subflow['interface'] or '?':<8} {subflow['local']:<21} "
                f"rx {_bits(subflow['rate_received_bps']):>14} tx {_bits(subflow['rate_sent_bps']):>14}  "
                f"received {_bytes(subflow['bytes_received'])}, sent {_bytes(subflow['bytes_sent'])}, "
                f"rtt {rtt}" + ("  backup" if subflow["backup"] else ""))
    return "\n".join(lines)


def redraw(text: str) -> str:
    """TEXT as a ``--watch`` frame: the terminal cleared first, so each frame replaces the last."""
    return CLEAR + text + "\n"


def check(guest: str, interfaces: list[str], url: str, proxy: str, client_netns: str | None = None,
          timeout: float = 10.0, username: str | None = None, password: str | None = None) -> dict:
    """The ``mptcp_check`` module's result for URL through PROXY, the client in CLIENT_NETNS (None: here).

    The kernel view is the guest's (INTERFACES: its uplink interfaces in order). Raises MpsocksError
    (one line naming URL) when no answer comes.
    """
    return mptcp_check.run_check(url, proxy, interfaces, timeout, username, password,
                                 client_netns=client_netns, kernel_netns=guest)


def check_in_guest(inventory: dict, guest: str, interfaces: list[str], url: str, proxy: str) -> dict:
    """check()'s result for a guest of its own kernel (a VM): the ``mptcp_check`` module run in GUEST of
    INVENTORY, the client there too. Raises MpsocksError (one line) when the guest or URL does not answer."""
    try:
        result = run_module(inventory, guest, "mpsocks.mptcp.mptcp_check",
                            {"url": url, "proxy": proxy, "uplinks": interfaces})
    except ModuleUnreachable as exc:
        raise MpsocksError(f"guest {exc}") from None
    if "mptcp" not in result:
        raise MpsocksError(result.get("msg", f"{url}: no answer"))
    return {key: value for key, value in result.items()
            if not key.startswith("_ansible") and key not in ("changed", "failed", "msg", "invocation")}


def check_failure(result: dict) -> str | None:
    """None when RESULT is MPTCP with a subflow on every uplink that is not a backup, else why not.

    ``mpsocks-run check`` exits 0 only when this is None.
    """
    return mptcp_check.failure(result)


def format_check(result: dict) -> str:
    """RESULT as the lines ``mpsocks-run check`` prints: the verdict, then subflows per uplink."""
    via = f" through {result['proxy']}" if result["proxy"] else ""
    failure = check_failure(result)
    if result["mptcp"]:
        count = result["subflows"]
        verdict = "MPTCP" + (f", {count} subflow{'' if count == 1 else 's'}" if count is not None else "")
    else:
        verdict = "not MPTCP"
    lines = [f"{result['url']}{via}: {verdict}" + (f" -- FAILED: {failure}" if failure else "")]
    subflows = result["kernel"]["subflows"] if result["kernel"] else []
    for uplink in result["uplinks"]:
        own = [subflow for subflow in subflows if subflow["interface"] == uplink["interface"]]
        where = ", ".join(f"{subflow['local']} -> {subflow['remote']}" for subflow in own)
        lines.append(f"  uplink {uplink['index']}  {uplink['interface']:<8} {uplink['subflows']} subflow"
                     f"{'' if uplink['subflows'] == 1 else 's'}" + ("  (backup)" if uplink["backup"] else "")
                     + (f"  {where}" if where else ""))
    return "\n".join(lines)
