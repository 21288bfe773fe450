"""Role mpsocks.mptcp.guest_network on a guest namespace joined to a host namespace by veths.

The world: host namespace H with uplinks up0/up1 whose gateways are namespaces of their own; both
gateways route to a server namespace S holding 10.199.100.1; the guest G is joined to H by the veths
of role host_network. An MPTCP client in G reaching S must get one subflow per uplink.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mpsocks_testlib import (
    REPO,
    ansible_playbook,
    assert_unchanged,
    netns_inventory,
    sh,
    snapshot,
    unique_name,
)
from test_host_network_role import count_calls  # noqa: F401 (a fixture)

HOST_PLAYBOOK = REPO / "playbooks" / "host_network.yml"
GUEST_PLAYBOOK = """
- hosts: all
  gather_facts: false
  roles:
    - role: mpsocks.mptcp.guest_network
"""
SERVER = "10.199.100.1"
HOST_RESOLV_CONF = Path("/etc/resolv.conf")

# An MPTCP server: accepts one connection, waits until SUBFLOWS subflows carry it (struct mptcp_info),
# prints them, then waits for a line on stdin before it answers the client and exits.
SERVER_SCRIPT = r"""
import json, socket, struct, sys, time
address, port, wanted = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((address, port))
listener.listen(1)
print("listening", flush=True)
listener.settimeout(20)
conn, peer = listener.accept()
deadline = time.monotonic() + 10
extra = 0
while time.monotonic() < deadline:
    extra = conn.getsockopt(284, 1, 256)[0]  # SOL_MPTCP, MPTCP_INFO: mptcpi_subflows (beyond the first)
    if extra + 1 >= wanted:
        break
    time.sleep(0.05)
print(json.dumps({"subflows": extra + 1, "client": "%s:%d" % peer}), flush=True)
sys.stdin.readline()
conn.sendall(b"done")
conn.close()
"""

# An MPTCP client: connects, sends a byte every 50 ms until the server answers.
CLIENT_SCRIPT = r"""
import select, socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
sock.settimeout(20)
sock.connect((sys.argv[1], int(sys.argv[2])))
while True:
    sock.sendall(b"x")
    if select.select([sock], [], [], 0.05)[0]:
        sys.exit(0 if sock.recv(16) == b"done" else 1)
"""


def new_netns(name):
    subprocess.run(["ip", "netns", "add", name], check=True)
    sh("ip", "link", "set", "lo", "up", netns=name)


@pytest.fixture
def world(netns, uplinks):
    """H (netns) with uplinks, a server namespace beyond both gateways, and an empty guest namespace."""
    server, guest = unique_name("mpsts"), unique_name("mpstq")
    resolver_dir = Path("/etc/netns") / guest
    made_parent = not resolver_dir.parent.exists()
    try:
        for name in (server, guest):
            new_netns(name)
        sh("ip", "addr", "add", f"{SERVER}/32", "dev", "lo", netns=server)
        for n, uplink in enumerate(uplinks):
            gateway = uplink["gateway_netns"]
            sh("ip", "link", "add", "core", "type", "veth", "peer", "name", f"via{n}", "netns", server,
               netns=gateway)
            sh("ip", "addr", "add", f"10.199.{10 + n}.1/24", "dev", "core", netns=gateway)
            sh("ip", "link", "set", "core", "up", netns=gateway)
            sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=gateway)
            sh("ip", "route", "add", f"{SERVER}/32", "via", f"10.199.{10 + n}.2", netns=gateway)
            sh("ip", "addr", "add", f"10.199.{10 + n}.2/24", "dev", f"via{n}", netns=server)
            sh("ip", "link", "set", f"via{n}", "up", netns=server)
            sh("ip", "route", "add", f"10.199.{n}.0/24", "via", f"10.199.{10 + n}.1", netns=server)
        # What role guest_netns does for a namespace guest: its own resolver file, empty.
        resolver_dir.mkdir(parents=True)
        (resolver_dir / "resolv.conf").write_text("")
        yield {"host": netns, "guest": guest, "server": server, "resolv_conf": resolver_dir / "resolv.conf"}
    finally:
        for name in (guest, server):
            subprocess.run(["ip", "netns", "del", name], check=False)
        for path in resolver_dir.glob("*"):
            path.unlink()
        for folder in (resolver_dir, resolver_dir.parent) if made_parent else (resolver_dir,):
            with contextlib.suppress(OSError):  # /etc/netns stays if something else put a file there
                folder.rmdir()


def host_up(world, tmp_path, uplinks):
    """Role host_network with veths to the guest; returns once the guest's IPv6 addresses settled."""
    inventory = netns_inventory(tmp_path / "host.json", world["host"])
    rc, output, _ = ansible_playbook(HOST_PLAYBOOK, inventory, extravars={
        "mpsocks_target": world["host"], "mpsocks_uplinks": uplinks, "mpsocks_guest_link": "veth",
        "mpsocks_guest_netns": world["guest"]})
    assert rc == 0, output
    deadline = time.monotonic() + 10
    while "tentative" in sh("ip", "addr", netns=world["guest"]) and time.monotonic() < deadline:
        time.sleep(0.1)  # duplicate address detection: snapshots taken after it do not blur


def guest_play(world, tmp_path, *extra, **extravars):
    playbook = tmp_path / "guest.yml"
    playbook.write_text(GUEST_PLAYBOOK)
    inventory = netns_inventory(tmp_path / "guest.json", world["guest"])
    return ansible_playbook(playbook, inventory, *extra, extravars=extravars)


def mptcp_connection(world, port=4242, subflows=2):
    """Connect from the guest to the server with MPTCP.

    Returns the server's view, the local addresses of the guest's subflows and the peer addresses of the
    server's, and the guest kernel's ``ss -ti`` flags of each subflow by local address.
    """
    server = subprocess.Popen(["ip", "netns", "exec", world["server"], sys.executable, "-c", SERVER_SCRIPT,
                               SERVER, str(port), str(subflows)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    client = None
    try:
        assert server.stdout.readline().strip() == "listening"
        client = subprocess.Popen(["ip", "netns", "exec", world["guest"], sys.executable, "-c", CLIENT_SCRIPT,
                                   SERVER, str(port)])
        seen = json.loads(server.stdout.readline())
        # The kernel's own view of the connection's TCP subflows, from both ends.
        local = tcp_peers(world["guest"], f"dst {SERVER}:{port}", "local")
        remote = tcp_peers(world["server"], f"src {SERVER}:{port}", "peer")
        flags = subflow_flags(world["guest"], f"dst {SERVER}:{port}")
        server.stdin.write("\n")
        server.stdin.flush()
        assert client.wait(timeout=20) == 0
        assert server.wait(timeout=20) == 0
        return seen, local, remote, flags
    finally:
        for proc in (client, server):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def tcp_peers(netns, selector, side):
    """The local or peer addresses of the established TCP sockets (MPTCP subflows included) SELECTOR picks."""
    column = 2 if side == "local" else 3
    lines = sh("ss", "-tnH", "state", "established", selector, netns=netns).splitlines()
    return sorted(line.split()[column].rsplit(":", 1)[0] for line in lines)


def subflow_flags(netns, selector):
    """{local address: ``tcp-ulp-mptcp flags:`` letters} of the subflows SELECTOR picks (b: local backup)."""
    found = {}
    listing = sh("ss", "-tinH", "state", "established", selector, netns=netns).strip()
    for entry in re.split(r"\n(?=\S)", listing):
        local = entry.split()[2].rsplit(":", 1)[0]
        match = re.search(r"tcp-ulp-mptcp flags:(\S+)", entry)
        found[local] = match.group(1) if match else ""
    return found


def endpoints(netns):
    return sh("ip", "mptcp", "endpoint", "show", netns=netns)


def test_guest_network_gives_mptcp_a_subflow_per_uplink(world, uplinks, tmp_path, count_calls):  # noqa: F811
    host_bytes = HOST_RESOLV_CONF.read_bytes()
    resolv_inode = os.stat(world["resolv_conf"]).st_ino
    host_up(world, tmp_path, ["up0", "up1"])
    guest = world["guest"]
    # The default resolvers: the controller's, with its local stub replaced by the stub's upstreams.
    (tmp_path / "host-resolv.conf").write_text("nameserver 127.0.0.53\noptions edns0 trust-ad\n")
    (tmp_path / "stub-resolv.conf").write_text("nameserver 192.0.2.53\nnameserver 198.51.100.53\n")
    options = {"mpsocks_uplinks": ["up0", "up1"],
               "mpsocks_host_resolv_conf": str(tmp_path / "host-resolv.conf"),
               "mpsocks_host_stub_resolv_conf": str(tmp_path / "stub-resolv.conf")}
    before = snapshot(guest)

    rc, output, recap = guest_play(world, tmp_path, "--check", **options)
    assert rc == 0 and recap[guest]["changed"] == 7, output
    assert_unchanged(before, guest)
    assert world["resolv_conf"].read_text() == ""

    started = time.monotonic()
    rc, output, recap = guest_play(world, tmp_path, **options)
    assert rc == 0 and recap[guest]["changed"] == 7, output
    seconds = time.monotonic() - started
    print(f"guest_network from nothing: {count_calls(output)} module calls in {seconds:.1f} s")
    assert count_calls(output) == 7
    started = time.monotonic()
    rc, output, recap = guest_play(world, tmp_path, **options)
    assert rc == 0 and recap[guest]["changed"] == 0, output
    seconds = time.monotonic() - started
    print(f"guest_network again: {count_calls(output)} module calls in {seconds:.1f} s")

    assert "10.66.6.2/24" in sh("ip", "-o", "addr", "show", "eth0", netns=guest)
    assert "10.66.7.2/24" in sh("ip", "-o", "addr", "show", "eth1", netns=guest)
    rules = sh("ip", "rule", netns=guest)
    assert "from 10.66.6.2 lookup 6606" in rules and "from 10.66.7.2 lookup 6607" in rules
    assert "default via 10.66.7.1 dev eth1" in sh("ip", "route", "show", "table", "6607", netns=guest)
    assert "default via 10.66.6.1 dev eth0" in sh("ip", "route", "show", "table", "main", netns=guest)
    for name in ("eth0", "eth1"):
        assert sh("sysctl", "-n", f"net.ipv4.conf.{name}.rp_filter", netns=guest).strip() == "2"
    assert sh("sysctl", "-n", "net.mptcp.enabled", netns=guest).strip() == "1"
    assert "subflows 1" in sh("ip", "mptcp", "limits", "show", netns=guest)
    shown = endpoints(guest).split()
    assert shown[:1] == ["10.66.7.2"] and "subflow" in shown and "dev" in shown and "eth1" in shown
    assert "backup" not in shown

    seen, local, remote, flags = mptcp_connection(world)
    print(f"server saw {seen}; guest subflows from {local} (flags {flags}); server subflows from {remote}")
    assert seen["subflows"] == 2
    assert local == ["10.66.6.2", "10.66.7.2%eth1"]  # one subflow from each guest interface, bound to it ...
    assert remote == ["10.199.0.2", "10.199.1.2"]  # ... and each left the host through its own uplink

    # The resolvers went to the guest's own file, written in place; the host's file is untouched.
    text = world["resolv_conf"].read_text()
    assert text.splitlines()[1:] == ["nameserver 192.0.2.53", "nameserver 198.51.100.53"], text
    assert os.stat(world["resolv_conf"]).st_ino == resolv_inode
    assert sh("cat", "/etc/resolv.conf", netns=guest) == text
    assert HOST_RESOLV_CONF.read_bytes() == host_bytes


def test_backup_uplink_then_fewer_uplinks(world, uplinks, tmp_path):
    """A backup uplink gives a backup subflow; fewer uplinks leave none of theirs; a user's objects stay."""
    guest = world["guest"]
    host_bytes = HOST_RESOLV_CONF.read_bytes()
    with_backup = ["up0", {"name": "up1", "backup": True}]
    host_up(world, tmp_path, with_backup)
    # A user's endpoint, and a rule of theirs pointing at one of mpsocks' tables.
    sh("ip", "mptcp", "endpoint", "add", "10.66.50.2", "id", "50", "signal", netns=guest)
    sh("ip", "rule", "add", "from", "10.66.50.2", "lookup", "6607", "priority", "6650", netns=guest)
    dns = {"mpsocks_dns_servers": ["192.0.2.1"]}
    rc, output, recap = guest_play(world, tmp_path, mpsocks_uplinks=with_backup, **dns)
    assert rc == 0, output
    shown = endpoints(guest)
    assert "10.66.7.2" in shown and "subflow backup" in shown and "dev eth1" in shown, shown
    seen, local, remote, flags = mptcp_connection(world, port=4243)
    print(f"with a backup uplink the server saw {seen}; guest subflows from {local} (flags {flags})")
    assert seen["subflows"] == 2 and local == ["10.66.6.2", "10.66.7.2%eth1"]
    assert "b" in flags["10.66.7.2%eth1"] and "b" not in flags["10.66.6.2"]  # the kernel's backup subflow

    # The backup flag alone changes in place; then down to one uplink: its table, endpoint and limits go.
    rc, output, recap = guest_play(world, tmp_path, mpsocks_uplinks=["up0", "up1"], **dns)
    assert rc == 0 and recap[guest]["changed"] == 1, output
    assert "backup" not in endpoints(guest)
    host_up(world, tmp_path, ["up0"])
    rc, output, recap = guest_play(world, tmp_path, mpsocks_uplinks=["up0"], **dns)
    assert rc == 0, output
    assert [line.split()[0] for line in endpoints(guest).splitlines()] == ["10.66.50.2"]
    rules = sh("ip", "rule", netns=guest)
    assert "from 10.66.7.2" not in rules and "from 10.66.50.2 lookup 6607" in rules
    assert sh("ip", "route", "show", "table", "6607", netns=guest).strip() == ""
    assert "subflows 0" in sh("ip", "mptcp", "limits", "show", netns=guest)
    assert HOST_RESOLV_CONF.read_bytes() == host_bytes


def test_no_resolver_file_of_its_own_stops_before_anything_changes(world, uplinks, tmp_path):
    """Without /etc/netns/GUEST/resolv.conf the guest's /etc/resolv.conf is the host's: never written."""
    guest = world["guest"]
    host_bytes = HOST_RESOLV_CONF.read_bytes()
    host_up(world, tmp_path, ["up0", "up1"])
    world["resolv_conf"].unlink()
    before = snapshot(guest)
    rc, output, recap = guest_play(world, tmp_path, mpsocks_uplinks=["up0", "up1"],
                                   mpsocks_dns_servers=["192.0.2.1"])
    assert rc != 0 and recap[guest]["failed"] == 1, output
    assert f"/etc/netns/{guest}/resolv.conf does not exist" in output, output
    assert_unchanged(before, guest)
    assert HOST_RESOLV_CONF.read_bytes() == host_bytes

    # With no resolvers to write, the rest is done and no file is touched.
    rc, output, recap = guest_play(world, tmp_path, mpsocks_uplinks=["up0", "up1"], mpsocks_dns_servers=[])
    assert rc == 0, output
    assert not world["resolv_conf"].exists() and HOST_RESOLV_CONF.read_bytes() == host_bytes


def test_bad_input_changes_nothing(world, uplinks, tmp_path):
    guest = world["guest"]
    host_up(world, tmp_path, ["up0", "up1"])
    before = snapshot(guest)
    cases = [
        ({"mpsocks_uplinks": []}, "mpsocks_uplinks: give at least one uplink"),
        ({"mpsocks_uplinks": [{"name": "up0", "backup": True}, "up1"]}, "mpsocks_uplinks[0]: the first"),
        ({"mpsocks_guest_interfaces": ["eth0"]}, "mpsocks_guest_interfaces: 1 interface(s) for 2"),
        ({"mpsocks_guest_interfaces": ["eth0", "eth9"]}, "config[1] (interface eth9): name: no interface"),
        ({"mpsocks_dns_servers": ["192.0.2.1", "resolver"]}, "mpsocks_dns_servers[1]: 'resolver' is not"),
        ({"mpsocks_host_resolv_conf": str(tmp_path / "missing")}, "cannot read the host's resolvers"),
    ]
    for options, needle in cases:
        rc, output, recap = guest_play(world, tmp_path, **{"mpsocks_uplinks": ["up0", "up1"], **options})
        assert rc != 0 and recap[guest]["failed"] == 1, output
        assert needle in output, output
        assert "Traceback" not in output
        assert_unchanged(before, guest)
    assert world["resolv_conf"].read_text() == ""
