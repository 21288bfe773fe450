"""A network-namespace guest with two uplinks, a real dante and real MPTCP servers, for the check and status.

::

    guest G                                   far end F (host, ISPs and internet in one)
      eth0 10.66.6.2/24  <══ veth ══>  mptcp0 10.66.6.1/24
      eth1 10.66.7.2/24  <══ veth ══>  mptcp1 10.66.7.1/24
      rule from 10.66.(6+n).2 -> table n      lo: 198.19.0.10 MPTCP check server (the lab's program)
      endpoint 10.66.7.2 dev eth1 subflow         198.19.0.12 the same, plain TCP (--tcp)
      danted 10.66.6.2:1080 (mptcpize run, supervised by the daemon module, started through
      `ip netns exec G`, so it resolves names with /etc/netns/G/hosts: check.test, plain.test, and
      no other: /etc/netns/G/resolv.conf names no server)

The guest side is what the guest roles make (addresses, source routing, an endpoint per extra uplink,
loose rp_filter, dante under mptcpize); the far end stands for the host, the ISPs and the servers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mpsocks_testlib import COLLECTION, run_module, sh, unique_name

SERVER_PROGRAM = COLLECTION / "roles" / "lab" / "files" / "mpsocks_lab_server.py"
CHECK, PLAIN = "198.19.0.10", "198.19.0.12"
SOCKS = "10.66.6.2:1080"
NAMES = {"check.test": CHECK, "plain.test": PLAIN}
DANTE_CONF = """logoutput: stderr
internal: 10.66.6.2 port = {port}
external: 10.66.6.2
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {{ from: 10.66.0.0/16 to: 0.0.0.0/0 }}
socks pass {{ from: 10.66.0.0/16 to: 0.0.0.0/0 }}
"""


@dataclass
class Guest:
    guest: str
    far: str
    run_dir: Path
    interfaces: tuple = ("eth0", "eth1")

    def sh(self, *argv: str, check: bool = True) -> str:
        return sh(*argv, netns=self.guest, check=check)

    def far_sh(self, *argv: str, check: bool = True) -> str:
        return sh(*argv, netns=self.far, check=check)

    def dante(self, name: str, port: int, mptcp: bool = True) -> None:
        """A supervised dante in the guest on 10.66.6.2:PORT, its sockets MPTCP unless MPTCP is false."""
        conf = self.run_dir / f"{name}.conf"
        conf.write_text(DANTE_CONF.format(port=port))
        argv = (["mptcpize", "run"] if mptcp else []) + ["danted", "-f", str(conf)]
        result = run_module("daemon", inside=self.guest, run_dir=str(self.run_dir),
                            config=[{"name": name, "argv": argv, "ready_port": port}])
        assert not result.get("failed"), result

    def stop_daemon(self, name: str) -> None:
        result = run_module("daemon", inside=self.guest, run_dir=str(self.run_dir),
                            config=[{"name": name, "state": "absent"}])
        assert not result.get("failed"), result


def _wait_listening(netns: str, address: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while f"{address}:{port} " not in sh("ss", "-Hltn", netns=netns) + " ":
        assert time.monotonic() < deadline, f"nothing listens on {address}:{port} in {netns}"
        time.sleep(0.05)


def _kill_all(netns: str) -> None:
    """SIGKILL every process in NETNS (what a failed test may leave)."""
    for pid in sh("ip", "netns", "pids", netns, check=False).split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


@contextlib.contextmanager
def guest_with_dante(tmp_path: Path, rate_mbit: int | None = None):
    """The topology above, up with dante on 1080; everything removed afterwards.

    RATE_MBIT: shape each uplink's download direction (the far end's egress) with tbf to that rate.
    """
    made = Guest(unique_name("mpsg"), unique_name("mpsf"), tmp_path / "run")
    made.run_dir.mkdir()
    etc = Path("/etc/netns") / made.guest
    servers = []
    try:
        for netns in (made.guest, made.far):
            subprocess.run(["ip", "netns", "add", netns], check=True)
            sh("ip", "link", "set", "lo", "up", netns=netns)
        for n in (0, 1):
            sh("ip", "link", "add", f"eth{n}", "netns", made.guest, "type", "veth",
               "peer", "name", f"mptcp{n}", "netns", made.far)
            made.sh("ip", "addr", "add", f"10.66.{6 + n}.2/24", "dev", f"eth{n}")
            made.sh("ip", "link", "set", f"eth{n}", "up")
            made.far_sh("ip", "addr", "add", f"10.66.{6 + n}.1/24", "dev", f"mptcp{n}")
            made.far_sh("ip", "link", "set", f"mptcp{n}", "up")
            made.sh("ip", "route", "add", "default", "via", f"10.66.{6 + n}.1", "table", str(6606 + n))
            made.sh("ip", "rule", "add", "from", f"10.66.{6 + n}.2", "lookup", str(6606 + n))
            if rate_mbit:
                made.far_sh("tc", "qdisc", "add", "dev", f"mptcp{n}", "root", "tbf",
                            "rate", f"{rate_mbit}mbit", "burst", "32kb", "latency", "100ms")
        made.sh("ip", "route", "add", "default", "via", "10.66.6.1")
        made.sh("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=2")
        made.sh("ip", "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "2")
        made.sh("ip", "mptcp", "endpoint", "add", "10.66.7.2", "dev", "eth1", "subflow")
        made.far_sh("ip", "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "2")
        for address, extra in ((CHECK, []), (PLAIN, ["--tcp"])):
            made.far_sh("ip", "addr", "add", f"{address}/32", "dev", "lo")
            servers.append(subprocess.Popen(
                ["ip", "netns", "exec", made.far, sys.executable, str(SERVER_PROGRAM), "http", "--listen",
                 f"{address}:80", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            _wait_listening(made.far, address, 80)
        etc.mkdir(parents=True)
        (etc / "hosts").write_text("127.0.0.1 localhost\n"
                                   + "".join(f"{address} {name}\n" for name, address in NAMES.items()))
        # No DNS server: another name fails at once, and no query leaves for the machine's resolver.
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:1\n")
        made.dante("danted", 1080)
        yield made
    finally:
        for server in servers:
            server.kill()
            server.wait()
        for netns in (made.guest, made.far):
            _kill_all(netns)
            subprocess.run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(etc, ignore_errors=True)


def far_download(made: Guest, seconds: float) -> subprocess.Popen:
    """curl in the far end (where a host's application is) downloading through the guest's SOCKS proxy,
    by name, for SECONDS."""
    return subprocess.Popen(
        ["ip", "netns", "exec", made.far, "curl", "-s", "-o", "/dev/null", "--max-time", str(seconds),
         "--socks5-hostname", SOCKS, "http://check.test/bytes/200000000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

