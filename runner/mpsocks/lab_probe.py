"""What ``lab status`` probes: is each part of a lab really working, not just its namespace there?

Every probe gives ``{"kind", "name", "ok", "detail"}``:

- ``link``: both ends of every veth of the plan exist and are up;
- ``hop``: every box on the way (the ISPs, the routers, the server namespace) answers a ping from its
  neighbour towards the host, over the link between them;
- ``process``: every server, proxy and DNS daemon of the plan runs, in its namespace;
- ``server``: the check server answers (and says MPTCP, with a subflow per uplink, to an MPTCP client
  on the lab host), the download and plain servers answer HTTP, the DNS server answers its names;
- ``proxy``: when ``mpsocks-run up`` has put its stack on this lab, MPTCP through the SOCKS proxy with a
  subflow per uplink (as ``mpsocks-run check``).

Probes send traffic only inside the lab. A probe that cannot run (its namespace is gone) fails.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ansible_collections.mpsocks.mptcp.plugins.module_utils import mptcp_check
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns import visiting

NETNS_DIR = Path("/run/netns")
TIMEOUT = 2.0
#: What ``ip link`` reports for a veth end that passes traffic.
LINK_UP = ("UP", "UNKNOWN")


def probe(plan: dict, run_dir: Path, stack_on_lab=None) -> list[dict]:
    """Every probe of lab PLAN (recorded in RUN_DIR); STACK_ON_LAB is the stack up on it, or None."""
    jobs = [lambda: links(plan), lambda: hops(plan), lambda: processes(plan, run_dir), lambda: servers(plan)]
    if stack_on_lab is not None:
        jobs.append(lambda: [proxy(stack_on_lab)])
    with ThreadPoolExecutor(len(jobs)) as pool:
        return [item for found in pool.map(lambda job: job(), jobs) for item in found]


def _item(kind: str, name: str, ok: bool, detail: str) -> dict:
    return {"kind": kind, "name": name, "ok": bool(ok), "detail": detail}


def _exists(netns: str | None) -> bool:
    return netns is None or (NETNS_DIR / netns).exists()


def _link_states(netns: str | None) -> dict[str, str]:
    """{interface: operstate} in NETNS (None: this namespace); empty when it is gone."""
    if not _exists(netns):
        return {}
    argv = ["ip", "-j"] + (["-n", netns] if netns else []) + ["link", "show"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    try:
        return {link["ifname"]: link.get("operstate", "UNKNOWN") for link in json.loads(proc.stdout or "[]")}
    except ValueError:
        return {}


def links(plan: dict) -> list[dict]:
    states = {netns: _link_states(netns) for netns in {plan["host_netns"], *plan["namespaces"]}}
    found = []
    for link in plan["links"]:
        ends = [(link["netns"], link["name"]), (link["peer_netns"], link["peer"])]
        named = " - ".join(f"{netns or '(root)'}:{interface}" for netns, interface in ends)
        seen = [states[netns].get(interface) for netns, interface in ends]
        bad = [f"{netns or '(root)'}:{interface} is {state or 'missing'}"
               for (netns, interface), state in zip(ends, seen, strict=True) if state not in LINK_UP]
        found.append(_item("link", named, not bad, "; ".join(bad) or "up"))
    return found


def hops(plan: dict) -> list[dict]:
    """Every box answers an ICMP echo from its neighbour towards the host, over the link between them."""
    by_netns = {}
    for link in plan["links"]:
        by_netns.setdefault(link["netns"], []).append(link["peer_addresses"][0].split("/")[0])
    with ThreadPoolExecutor(len(by_netns)) as pool:
        answered = set().union(*pool.map(lambda item: _echo(*item) if _exists(item[0]) else set(),
                                         by_netns.items()))
    found = []
    for link in plan["links"]:
        address = link["peer_addresses"][0].split("/")[0]
        ok = address in answered
        verb = "answers" if ok else "does not answer"
        found.append(_item("hop", link["peer_netns"], ok, f"{address} {verb} {link['netns'] or '(root)'}"))
    return found


def _echo(netns: str | None, addresses: list[str]) -> set[str]:
    """The ADDRESSES that answer an ICMP echo request sent from NETNS within TIMEOUT (all at once)."""
    identifier = os.getpid() & 0xFFFF
    with visiting(netns), socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        for sequence, address in enumerate(addresses):
            header = struct.pack("!BBHHH", 8, 0, 0, identifier, sequence) + b"mpsocks"
            sock.sendto(header[:2] + struct.pack("!H", _checksum(header)) + header[4:], (address, 0))
        answered = set()
        deadline = time.monotonic() + TIMEOUT
        while len(answered) < len(set(addresses)) and time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                packet, (source, _port) = sock.recvfrom(1500)
            except TimeoutError:
                break
            icmp = packet[(packet[0] & 0x0F) * 4:]
            if len(icmp) >= 8 and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == identifier:
                answered.add(source)
    return answered


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of DATA."""
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def _alive(pid_file: Path, netns: str) -> bool:
    """Whether the process in PID_FILE runs, in namespace NETNS."""
    try:
        pid = int(pid_file.read_text().split()[0])
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(NETNS_DIR / netns).st_ino
    except (OSError, ValueError, IndexError):
        return False


def processes(plan: dict, run_dir: Path) -> list[dict]:
    found = []
    for daemon in plan["daemons"]:
        ok = _alive(run_dir / f"{daemon['name']}.pid", daemon["netns"])
        found.append(_item("process", daemon["name"], ok, f"runs in {daemon['netns']}" if ok
                           else f"not running (log: {run_dir / (daemon['name'] + '.log')})"))
    return found


def servers(plan: dict) -> list[dict]:
    host = plan["host_netns"]
    if not _exists(host):
        return [_item("server", role, False, f"namespace {host} is gone") for role in plan["servers"]]
    found = []
    for role, url in plan["servers"].items():
        address = url.split("/")[2]
        if role == "check":
            found.append(_check_server(plan, url))
        else:
            path = "/bytes/1" if role == "download" else "/"
            found.append(_item("server", role, *_http_answer(host, address, path)))
    if "dns" in plan:
        name = next(iter(plan["dns"]["names"]))
        found.append(_item("server", "dns", *_dns_answer(host, plan["dns"]["address"], name)))
    return found


#: The middleboxes that let MPTCP through (the others make it fall back to TCP, or kill the joins).
PASS_MPTCP = ("none", "optimizer")


def _check_server(plan: dict, url: str) -> dict:
    """The check server, fetched over MPTCP from the lab host: MPTCP with a subflow on every uplink whose
    ISP lets MPTCP through (none where uplink 0's does not)."""
    uplinks = plan["uplinks"]
    expected = sum(uplink["middlebox"] in PASS_MPTCP for uplink in uplinks) \
        if uplinks[0]["middlebox"] in PASS_MPTCP else 0
    timeout = TIMEOUT if uplinks[0]["middlebox"] != "drop-mptcp" else 3 * TIMEOUT  # the SYN retries first
    try:
        result = mptcp_check.run_check(url, None, [uplink["name"] for uplink in uplinks], timeout,
                                       client_netns=plan["host_netns"], kernel_netns=plan["host_netns"])
    except MpsocksError as exc:
        return _item("server", "check", False, str(exc))
    subflows = result.get("subflows", 0) if result.get("mptcp") else 0
    said = f"answers over MPTCP with {subflows} subflow(s)" if subflows else "answers over plain TCP"
    return _item("server", "check", subflows >= expected,
                 f"{said}, {expected} expected from the uplinks' middleboxes")


def _http_answer(netns: str | None, address: str, path: str) -> tuple[bool, str]:
    try:
        with visiting(netns), socket.create_connection((address, 80), timeout=TIMEOUT) as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
            status = sock.recv(64).split(b"\r\n", 1)[0].decode("ascii", "replace")
    except OSError as exc:
        return False, f"http://{address}{path}: {exc.strerror or exc}"
    return status.split(" ")[1:2] == ["200"], f"http://{address}{path}: {status or 'no answer'}"


def _dns_answer(netns: str | None, server: str, name: str) -> tuple[bool, str]:
    """Whether SERVER answers an A query for NAME with at least one address."""
    query = struct.pack("!6H", 0x6d70, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    query += struct.pack("!2H", 1, 1)
    try:
        with visiting(netns), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.sendto(query, (server, 53))
            answer = sock.recv(512)
    except OSError as exc:
        return False, f"{server}: no answer for {name} ({exc.strerror or exc})"
    answers = struct.unpack("!H", answer[6:8])[0] if len(answer) >= 12 else 0
    return answers > 0, f"{server}: {answers} answer(s) for {name}"


def proxy(recorded) -> dict:
    """MPTCP through the SOCKS proxy of the stack RECORDED, as ``mpsocks-run check``."""
    from mpsocks import guest_status

    try:
        result = guest_status.check(recorded.guest, recorded.guest_interfaces(), recorded.check_url,
                                    recorded.socks_address(), client_netns=recorded.host_netns) \
            if recorded.backend == "netns" else guest_status.check_in_guest(
                recorded.inventory(), recorded.guest, recorded.guest_interfaces(), recorded.check_url,
                recorded.socks_address())
    except MpsocksError as exc:
        return _item("proxy", recorded.socks_address(), False, str(exc))
    failure = guest_status.check_failure(result)
    return _item("proxy", recorded.socks_address(), failure is None,
                 failure or f"MPTCP with {result.get('subflows')} subflow(s)")
