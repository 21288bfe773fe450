"""Role mpsocks.mptcp.socks_proxy: a real dante under mptcpize in a guest namespace, MPTCP over two uplinks.

The world (every namespace the test's own)::

    host H  mptcp0 10.66.6.1 ═ eth0 10.66.6.2  guest G: the role runs here (netns connection)
            mptcp1 10.66.7.1 ═ eth1 10.66.7.2     rule from 10.66.(6+n).2 -> table 6606+n, default via eth0,
                                                   endpoint 10.66.7.2 dev eth1 subflow, rp_filter loose
            up0 198.18.0.2 ═ 198.18.0.1 ─┐
            up1 198.18.1.2 ═ 198.18.1.1 ─┴ server S: 198.19.0.10:80, the lab's MPTCP check server
    H masquerades 10.66.(6+n).0/24 out of up n and routes what comes from mptcpN through up n.

G resolves ``check.test`` from /etc/netns/G/hosts (no DNS server). S also stands for a stranger on the
uplinks' side: it routes 10.66.0.0/16 to H, which forwards to G.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mpsocks_testlib import (
    COLLECTION,
    ansible_playbook,
    assert_unchanged,
    netns_inventory,
    sh,
    snapshot,
    unique_name,
)

SERVER_PROGRAM = COLLECTION / "roles" / "lab" / "files" / "mpsocks_lab_server.py"
CHECK = "198.19.0.10"
PAM_FILE = Path("/etc/pam.d/mpsocks-socks")
PLAYBOOK = """
- hosts: all
  gather_facts: false
  roles:
{roles}
"""
# A SOCKS5 client: greeting (with user name and password when given), CONNECT, one HTTP request.
SOCKS_CLIENT = r"""
import json, socket, struct, sys
proxy, port, target, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
host, _, path = target.partition("/")
def exact(sock, size):
    data = b""
    while len(data) < size:
        part = sock.recv(size - len(data))
        if not part:
            raise ConnectionError("closed by the proxy")
        data += part
    return data
try:
    sock = socket.create_connection((proxy, port), timeout=10)
    sock.sendall(b"\x05\x01\x02" if user else b"\x05\x01\x00")
    method = exact(sock, 2)[1]
    if method == 2:
        sock.sendall(bytes([1, len(user)]) + user.encode() + bytes([len(password)]) + password.encode())
        if exact(sock, 2)[1] != 0:
            raise ConnectionError("login refused")
    elif method != 0:
        raise ConnectionError("no acceptable method (%d)" % method)
    name = host.encode()
    sock.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", 80))
    reply = exact(sock, 10)
    if reply[1]:
        raise ConnectionError("request refused (%d)" % reply[1])
    sock.sendall(("GET /%s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, host)).encode())
    answer = b""
    while True:
        part = sock.recv(65536)
        if not part:
            break
        answer += part
    print(json.dumps({"body": answer.split(b"\r\n\r\n", 1)[1].decode()}))
except (OSError, ConnectionError) as exc:
    print(json.dumps({"error": str(exc) or type(exc).__name__}))
"""


@dataclass
class World:
    host: str
    guest: str
    server: str
    run_dir: Path
    folder: Path

    def play(self, *roles: str, extra: dict | None = None, check: bool = False) -> tuple[int, str, dict]:
        """Run ROLES on the guest (through the netns connection); returns (rc, output, recap of the guest)."""
        playbook = self.folder / "play.yml"
        listed = "".join(f"    - role: mpsocks.mptcp.{role}\n" for role in roles)
        playbook.write_text(PLAYBOOK.format(roles=listed))
        inventory = netns_inventory(self.folder / "inventory.json", self.guest)
        variables = dict({"mpsocks_uplinks": ["up0", "up1"], "mpsocks_guest_run_dir": str(self.run_dir)},
                         **(extra or {}))
        rc, output, recap = ansible_playbook(playbook, inventory, *(["--check"] if check else []),
                                             extravars=variables)
        return rc, output, recap.get(self.guest, {})

    def socks(self, target: str = f"{CHECK}/?format=json", user: str = "", password: str = "",
              netns: str | None = None, proxy: str = "10.66.6.2", port: int = 1080) -> dict:
        """A SOCKS5 CONNECT to TARGET's port 80 and one GET, from NETNS (the host by default)."""
        out = sh(sys.executable, "-c", SOCKS_CLIENT, proxy, str(port), target, user, password,
                 netns=netns or self.host)
        return json.loads(out)

    def listeners(self, port: int) -> list[str]:
        """``ADDRESS:PORT process`` of every TCP listener on PORT in the guest."""
        found = []
        for line in sh("ss", "-Htlnp", f"sport = :{port}", netns=self.guest).splitlines():
            process = re.search(r'users:\(\("([^"]+)"', line)
            found.append(f"{line.split()[3]} {process.group(1) if process else '?'}")
        return sorted(found)


def _setup(world: World) -> None:
    for netns in (world.host, world.guest, world.server):
        subprocess.run(["ip", "netns", "add", netns], check=True)
        sh("ip", "link", "set", "lo", "up", netns=netns)
    for n in (0, 1):
        sh("ip", "link", "add", f"mptcp{n}", "netns", world.host, "type", "veth", "peer", "name", f"eth{n}",
           "netns", world.guest)
        sh("ip", "link", "add", f"up{n}", "netns", world.host, "type", "veth", "peer", "name", f"isp{n}",
           "netns", world.server)
        for netns, dev, address in ((world.host, f"mptcp{n}", f"10.66.{6 + n}.1/24"),
                                    (world.guest, f"eth{n}", f"10.66.{6 + n}.2/24"),
                                    (world.host, f"up{n}", f"198.18.{n}.2/24"),
                                    (world.server, f"isp{n}", f"198.18.{n}.1/24")):
            sh("ip", "link", "set", dev, "addrgenmode", "none", netns=netns)
            sh("ip", "addr", "add", address, "dev", dev, netns=netns)
            sh("ip", "link", "set", dev, "up", netns=netns)
        sh("sysctl", "-qw", f"net.ipv4.conf.mptcp{n}.forwarding=1", f"net.ipv4.conf.up{n}.forwarding=1",
           netns=world.host)
        sh("ip", "rule", "add", "iif", f"mptcp{n}", "lookup", str(6606 + n), netns=world.host)
        sh("ip", "route", "add", "default", "via", f"198.18.{n}.1", "table", str(6606 + n), netns=world.host)
        sh("ip", "rule", "add", "from", f"10.66.{6 + n}.2", "lookup", str(6606 + n), netns=world.guest)
        sh("ip", "route", "add", "default", "via", f"10.66.{6 + n}.1", "table", str(6606 + n),
           netns=world.guest)
        sh("sysctl", "-qw", f"net.ipv4.conf.eth{n}.rp_filter=2", netns=world.guest)
    sh("nft", "add table inet world; add chain inet world post { type nat hook postrouting priority 100; }; "
       "add rule inet world post ip saddr 10.66.6.0/24 oifname up0 masquerade; "
       "add rule inet world post ip saddr 10.66.7.0/24 oifname up1 masquerade", netns=world.host)
    sh("ip", "route", "add", "default", "via", "198.18.0.1", netns=world.host)
    sh("ip", "route", "add", "default", "via", "10.66.6.1", netns=world.guest)
    sh("ip", "route", "add", "10.66.0.0/16", "via", "198.18.0.2", netns=world.server)
    for netns in (world.guest, world.server):
        sh("ip", "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "2", netns=netns)
    sh("ip", "mptcp", "endpoint", "add", "10.66.7.2", "dev", "eth1", "subflow", netns=world.guest)
    sh("ip", "addr", "add", f"{CHECK}/32", "dev", "lo", netns=world.server)
    etc = Path("/etc/netns") / world.guest
    etc.mkdir(parents=True)
    (etc / "hosts").write_text(f"127.0.0.1 localhost\n{CHECK} check.test\n")
    (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:1\n")
    deadline = time.monotonic() + 5
    namespaces = (world.host, world.guest, world.server)
    while any("NO-CARRIER" in sh("ip", "link", netns=netns) for netns in namespaces):
        assert time.monotonic() < deadline, "the links did not come up"
        time.sleep(0.05)


def _kill_all(netns: str) -> None:
    for pid in sh("ip", "netns", "pids", netns, check=False).split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


@pytest.fixture
def world(tmp_path):
    made = World(unique_name("mpsph"), unique_name("mpspg"), unique_name("mpsps"), tmp_path / "run", tmp_path)
    server = None
    try:
        _setup(made)
        server = subprocess.Popen(["ip", "netns", "exec", made.server, sys.executable, str(SERVER_PROGRAM),
                                   "http", "--listen", f"{CHECK}:80"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while f"{CHECK}:80 " not in sh("ss", "-Htln", netns=made.server):
            assert time.monotonic() < deadline, "the check server did not start"
            time.sleep(0.05)
        yield made
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for netns in (made.host, made.guest, made.server):
            _kill_all(netns)
            subprocess.run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(Path("/etc/netns") / made.guest, ignore_errors=True)
        PAM_FILE.unlink(missing_ok=True)


def assert_one_line_failure(rc: int, output: str, needle: str) -> None:
    assert rc != 0, output
    lines = [line for line in output.splitlines() if needle in line]
    assert lines, output
    assert "Traceback" not in output, output


# --- the proxy ---------------------------------------------------------------------------------------

def test_dante_serves_mptcp_over_both_uplinks_and_listens_only_on_the_socks_address(world):
    rc, output, recap = world.play("socks_proxy")
    assert rc == 0 and recap["changed"] > 0, output
    rc, output, recap = world.play("socks_proxy")
    assert rc == 0 and recap["changed"] == 0, output

    # The server's kernel sees MPTCP with one subflow per uplink; by address and by name (dante resolves).
    for target in (f"{CHECK}/?format=json", "check.test/?format=json"):
        answer = json.loads(world.socks(target)["body"])
        assert answer["mptcp"] is True and answer["subflows"] == 2, answer
        assert answer["client"].startswith("198.18.0.2:"), answer  # the first subflow left through uplink 0
    # ... and so does the guest's: dante holds an MPTCP socket (IPPROTO_MPTCP, what `ss -M` lists) with a
    # subflow from eth1's address.
    long = subprocess.Popen(["ip", "netns", "exec", world.host, "curl", "-s", "-o", "/dev/null", "--max-time",
                             "5", "--socks5", "10.66.6.2:1080", f"http://{CHECK}/bytes/500000000"])
    try:
        deadline = time.monotonic() + 5
        while True:
            mptcp = sh("ss", "-HMnp", "dst", CHECK, netns=world.guest)
            subflows = sh("ss", "-Htn", "dst", CHECK, netns=world.guest)
            if '"danted"' in mptcp and "10.66.6.2:" in subflows and "10.66.7.2%eth1:" in subflows:
                break
            assert time.monotonic() < deadline, mptcp + subflows
            time.sleep(0.1)
    finally:
        long.kill()
        long.wait()

    assert world.listeners(1080) == ["10.66.6.2:1080 danted"]
    log = (world.run_dir / "danted.log").read_text()
    assert "Dante/server[1/1] v1.4.2 running" in log and "Operation not supported" not in log, log


def test_not_an_open_proxy(world):
    assert world.play("socks_proxy")[0] == 0
    assert "body" in world.socks()
    # A stranger on the uplinks' side (its packets reach the guest through the host) is refused by dante.
    assert world.socks(netns=world.server)["error"] in ("closed by the proxy",
                                                        "[Errno 104] Connection reset by peer")
    # The guest's other addresses have no proxy.
    assert "Connection refused" in world.socks(proxy="10.66.7.2")["error"]
    # Never back into the guest itself, whoever asks.
    assert world.socks(target="10.66.6.2/")["error"] == "request refused (2)"
    assert world.socks(target="127.0.0.1/")["error"] == "request refused (2)"
    log = (world.run_dir / "danted.log").read_text()
    refused = r"info: block\(\d+\): tcp/accept \]: 198\.18\.0\.1\.\d+ 10\.66\.6\.2\.1080\n"
    assert re.search(refused, log), log


def test_users_log_in_with_their_own_passwords_and_the_system_accounts_are_untouched(world):
    passwd = Path("/etc/passwd").read_text()
    users = [{"name": "alice", "password": "s3cret pass"}, {"name": "bob", "password": "another"}]
    rc, output, _ = world.play("socks_proxy", extra={"mpsocks_socks_users": users})
    assert rc == 0, output
    assert "s3cret" not in output
    assert "body" in world.socks(user="alice", password="s3cret pass")
    assert "body" in world.socks(user="bob", password="another")
    # dante checks the password when it matches the request against its rules: no rule lets it through.
    refused = ("login refused", "request refused (2)")
    assert world.socks(user="alice", password="wrong")["error"] in refused
    assert world.socks(user="carol", password="another")["error"] in refused
    assert world.socks()["error"] == "no acceptable method (255)"
    users_file = world.run_dir / "socks-users"
    assert oct(users_file.stat().st_mode & 0o777) == "0o600"
    assert "s3cret" not in users_file.read_text()
    # SHA-512 crypt at its default 5000 rounds (so the hash names none): checked at every connection.
    assert users_file.read_text().startswith("alice:$6$") and "rounds=" not in users_file.read_text()
    assert f"pwdfile={users_file}" in PAM_FILE.read_text()
    assert world.play("socks_proxy", extra={"mpsocks_socks_users": users})[2]["changed"] == 0
    assert Path("/etc/passwd").read_text() == passwd

    # Without users: no authentication, and the users' files are gone.
    rc, output, _ = world.play("socks_proxy")
    assert rc == 0, output
    assert "body" in world.socks()
    assert not users_file.exists() and not PAM_FILE.exists()


def test_dante_comes_back_when_killed_and_restarts_with_a_new_configuration(world):
    assert world.play("socks_proxy")[0] == 0
    record = json.loads((world.run_dir / "danted.json").read_text())
    os.killpg(record["program"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while world.listeners(1080) != ["10.66.6.2:1080 danted"]:
        assert time.monotonic() < deadline, "dante was not restarted"
        time.sleep(0.1)
    assert "body" in world.socks()

    rc, output, recap = world.play("socks_proxy", extra={"mpsocks_socks_port": 1081})
    assert rc == 0 and recap["changed"] > 0, output
    assert world.listeners(1080) == [] and world.listeners(1081) == ["10.66.6.2:1081 danted"]
    assert "body" in world.socks(port=1081)
    assert world.play("socks_proxy", extra={"mpsocks_socks_port": 1081})[2]["changed"] == 0

    rc, output, _ = world.play("socks_proxy", extra={"mpsocks_state": "absent"})
    assert rc == 0, output
    assert world.listeners(1081) == []
    assert sorted(path.name for path in world.run_dir.iterdir()) == ["danted.log"]
    assert world.play("socks_proxy", extra={"mpsocks_state": "absent"})[2]["changed"] == 0


@contextlib.contextmanager
def squatter(netns: str, address: str, port: int):
    """Another program listening on ADDRESS:PORT in NETNS."""
    script = ("import socket, sys; s = socket.socket(); s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); "
              "print('ready', flush=True); sys.stdin.read()")
    proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", script, address, str(port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_port_in_use_and_bad_settings_fail_in_one_line_before_anything_changes(world):
    before = snapshot(world.guest)
    with squatter(world.guest, "0.0.0.0", 1080) as pid:
        rc, output, _ = world.play("socks_proxy")
        assert_one_line_failure(rc, output, "mpsocks_socks_port: TCP port 1080 is in use in the guest by ")
        assert f"(pid {pid}); stop it or choose another port" in output
    assert not world.run_dir.exists()
    cases = {
        "mpsocks_socks_port: 70000 is not a TCP port (1 to 65535)": {"mpsocks_socks_port": 70000},
        'mpsocks_socks_users: "al ice" is not a user name': {"mpsocks_socks_users": [{"name": "al ice",
                                                                                       "password": "x"}]},
        "mpsocks_socks_users: every user needs a password of one line": {
            "mpsocks_socks_users": [{"name": "alice", "password": "a\nb"}]},
        "mpsocks_socks_users: a user name is listed twice": {
            "mpsocks_socks_users": [{"name": "alice", "password": "x"}, {"name": "alice", "password": "y"}]},
        "mpsocks_socks_processes: 9 is not a number from 1 to 8": {"mpsocks_socks_processes": 9},
    }
    for needle, extra in cases.items():
        rc, output, _ = world.play("socks_proxy", extra=extra)
        assert_one_line_failure(rc, output, needle)
    assert not world.run_dir.exists()
    assert_unchanged(before, world.guest)
    # Ours on the port is no obstacle: a second run finds its own dante there.
    assert world.play("socks_proxy")[0] == 0
    assert world.play("socks_proxy", check=True)[2]["changed"] == 0


def test_check_mode_predicts_and_changes_nothing(world):
    before = snapshot(world.guest)
    rc, output, recap = world.play("socks_proxy", check=True)
    assert rc == 0 and recap["changed"] > 0, output
    assert_unchanged(before, world.guest)
    assert not world.run_dir.exists() or not any(world.run_dir.iterdir())
