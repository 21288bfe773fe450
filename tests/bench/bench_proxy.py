"""Benchmark of the SOCKS path (issue 9): what dante costs per connection, and how MPTCP through SOCKS
aggregates the uplinks. It prints figures; it asserts no timing.

Everything runs in namespaces of its own (unique names, removed at the end)::

    host ─ mptcp0 10.66.6.1/24 ═ eth0 10.66.6.2/24 ─ guest: dante on 10.66.6.2:1080 under mptcpize
         ─ mptcp1 10.66.7.1/24 ═ eth1 10.66.7.2/24 ─
    host ─ up0 198.18.0.2/24 ═ 198.18.0.1/24 ─ server: 198.19.0.10 (MPTCP listeners)
         ─ up1 198.18.1.2/24 ═ 198.18.1.1/24 ─

The host masquerades 10.66.(6+n).0/24 out of up n and sends what arrives on mptcpN through up n
(``ip rule iif``), as host_network does. The guest has a routing table per interface with a ``from``
rule, its default route via eth0, an MPTCP ``subflow`` endpoint bound to eth1 and loose reverse-path
filtering, as guest_network does. Uplink rates are the lab's: the ``shaper`` module's HTB classes (100 ms
queues), in both directions. dante's configuration is the socks_proxy role's template with the role's
defaults, dante runs as the role runs it (``mptcpize run danted -f CONF``).

Overhead: short connections (connect, a one-byte request, a two-byte answer, the client closes) from the
host to the server, directly and through SOCKS (greeting, then CONNECT, as clients do it): connections/s
one after the other and with four clients at once, setup time (until the connection, or the SOCKS
reply, is there) p50/p99, dante's CPU time per connection, its open descriptors and the TCP connections
it holds before and after; then the role's defaults against each of the choices they make, undone, and
against MPTCP with no second subflow and plain TCP out (where MPTCP's cost goes), the best of interleaved
rounds (the machine is shared: the best round is the one least disturbed). The
host (the clients) has the whole port range, or tens of thousands of connections a minute to one
address run out of ports.

Aggregation where one uplink is ten times slower (20 + 2 Mbit/s; bench_aggregation.py measures the
defaults at every rate, in the lab): plain TCP over each uplink alone (from the guest, bound to the
uplink's address, both at once), then transfers through SOCKS (MPTCP, both uplinks), the median of a
few, with each setting tried alone: downloads, and uploads (the guest is then the MPTCP sender).

Two kernel behaviours (Linux 6.18) the measurements step around, and a user would meet:

- An MPTCP socket closed while data still arrives goes to FIN-WAIT-2 and keeps taking it in, so the
  server goes on sending (a download a client aborted through dante keeps the uplinks busy until the
  server stops). The bulk server here stops when the client says so, and the client reads to the end.
- A plain TCP client reusing a port towards an MPTCP listener that holds the previous connection in
  TIME_WAIT has its SYN dropped now and then (PAWS): 10 ms to 1 s more for that connection. The short
  server here lets the client close first, so the TIME_WAIT is the client's.

    sudo .venv/bin/python tests/bench/bench_proxy.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jinja2
import yaml

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from mpsocks_testlib import COLLECTION, run_module, unique_name  # noqa: E402

ROLE = COLLECTION / "roles" / "socks_proxy"
SOCKS_ADDRESS, SOCKS_PORT = "10.66.6.2", 1080
SERVER = "198.19.0.10"
SHORT_PORT, BULK_PORT, SINK_PORT = 80, 81, 82
UPLINKS = 2

SERVER_PROGRAM = r"""
import json, selectors, socket, threading, time
def listener(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)   # IPPROTO_MPTCP: a lab server
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((@SERVER@, port))
    sock.listen(4096)
    return sock
def stream(conn):
    # Until the client says stop: a download the client just closed would go on (an MPTCP socket closed
    # with data still arriving stays in FIN-WAIT-2 and takes it in), and disturb the next measurement.
    chunk = b"x" * 65536
    stop = threading.Event()
    def listen():
        conn.recv(1)
        stop.set()
    with conn:
        try:
            conn.recv(1)
            threading.Thread(target=listen, daemon=True).start()
            while not stop.is_set():
                conn.sendall(chunk)
        except OSError:
            pass
def bulk(sock):
    while True:
        threading.Thread(target=stream, args=(sock.accept()[0],), daemon=True).start()
def sink(conn):
    # An upload: the rate from 1.5 s after its first byte to its last, sent back once the client is done.
    buffer, marks, total = bytearray(1 << 20), [], 0
    with conn:
        while True:
            got = conn.recv_into(buffer)
            if not got:
                break
            total += got
            marks.append((time.perf_counter(), total))
        counted = [mark for mark in marks if mark[0] - marks[0][0] >= 1.5]
        (begin, first), (end, last) = counted[0], counted[-1]
        conn.sendall(json.dumps({"mbit": (last - first) * 8 / (end - begin) / 1e6}).encode())
def uploads(sock):
    while True:
        threading.Thread(target=sink, args=(sock.accept()[0],), daemon=True).start()
threading.Thread(target=bulk, args=(listener(@BULK_PORT@),), daemon=True).start()
threading.Thread(target=uploads, args=(listener(@SINK_PORT@),), daemon=True).start()
short = listener(@SHORT_PORT@)
short.setblocking(False)
selector = selectors.DefaultSelector()
selector.register(short, selectors.EVENT_READ)
print("ready", flush=True)
while True:   # one byte in, two out; the client closes first, so no TIME_WAIT is left on this side
    for key, _ in selector.select():
        if key.fileobj is short:
            while True:
                try:
                    conn = short.accept()[0]
                except BlockingIOError:
                    break
                conn.setblocking(False)
                selector.register(conn, selectors.EVENT_READ)
            continue
        conn = key.fileobj
        try:
            data = conn.recv(16)
        except OSError:
            data = b""
        if data:
            conn.send(b"ok")
        else:
            selector.unregister(conn)
            conn.close()
"""

SHORT_CLIENT = r"""
import json, socket, struct, sys, time
mode, count = sys.argv[1], int(sys.argv[2])
proxy, target = (@SOCKS_ADDRESS@, @SOCKS_PORT@), (@SERVER@, @SHORT_PORT@)
request = b"\x05\x01\x00\x01" + socket.inet_aton(target[0]) + struct.pack("!H", target[1])
def exact(sock, size):
    data = b""
    while len(data) < size:
        part = sock.recv(size - len(data))
        if not part:
            raise SystemExit("connection closed during the SOCKS handshake")
        data += part
    return data
def once():   # one connection; its setup time
    began = time.perf_counter()
    with socket.socket() as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if mode == "direct":
            sock.connect(target)
        else:   # as clients do it: the greeting, its answer, then the request
            sock.connect(proxy)
            sock.sendall(b"\x05\x01\x00")
            if exact(sock, 2) != b"\x05\x00":
                raise SystemExit("the proxy refused the greeting")
            sock.sendall(request)
            if exact(sock, 10)[1] != 0:
                raise SystemExit("the proxy refused the request")
        setup = time.perf_counter() - began
        sock.sendall(b"x")
        if exact(sock, 2) != b"ok":
            raise SystemExit("no answer")
    return setup
setups, resets = [], 0
start = time.perf_counter()
while len(setups) < count:
    try:
        setups.append(once())
    except ConnectionResetError:   # a port reused while the server's end of its last use was closing
        resets += 1
        if resets > count // 100:
            raise
print(json.dumps({"seconds": time.perf_counter() - start, "setups": setups, "resets": resets}))
"""

BULK_CLIENT = r"""
import json, socket, struct, sys, time
mode, seconds, warmup = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
if mode in ("socks", "upload"):
    sock = socket.create_connection((@SOCKS_ADDRESS@, @SOCKS_PORT@))
    sock.sendall(b"\x05\x01\x00")
    assert sock.recv(2) == b"\x05\x00"
    port = @BULK_PORT@ if mode == "socks" else @SINK_PORT@
    sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(@SERVER@) + struct.pack("!H", port))
    reply = b""
    while len(reply) < 10:
        reply += sock.recv(10 - len(reply))
    assert reply[1] == 0, reply
else:   # "tcp ADDRESS" or "mptcp ADDRESS": from the guest, bound to an uplink's address
    kind, address = mode.split()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262 if kind == "mptcp" else 0)
    sock.bind((address, 0))
    sock.connect((@SERVER@, @BULK_PORT@))
if mode == "upload":   # through SOCKS: send for warmup + seconds, then the server says what it got
    chunk, end = b"y" * 65536, time.perf_counter() + warmup + seconds
    while time.perf_counter() < end:
        sock.sendall(chunk)
    sock.shutdown(socket.SHUT_WR)
    print(sock.recv(1000).decode())
    sys.exit()
sock.sendall(b"g")
buffer = bytearray(1 << 20)
start = time.perf_counter()
counted, total = None, 0
while True:
    got = sock.recv_into(buffer)
    if not got:
        raise SystemExit("the server closed the download")
    now = time.perf_counter() - start
    if counted is None and now >= warmup:
        counted, total, begin = 0, 0, now
    if counted is not None:
        total += got
        if now - begin >= seconds:
            break
sock.sendall(b"s")   # stop, then take what is still on its way, so nothing goes on after this
while sock.recv_into(buffer):
    pass
sock.close()
print(json.dumps({"mbit": total * 8 / (now - begin) / 1e6}))
"""


def fill(program: str) -> str:
    """PROGRAM with the @NAME@ placeholders replaced by the addresses and ports above."""
    for name, value in (("SERVER", repr(SERVER)), ("SOCKS_ADDRESS", repr(SOCKS_ADDRESS)),
                        ("SOCKS_PORT", str(SOCKS_PORT)), ("SHORT_PORT", str(SHORT_PORT)),
                        ("BULK_PORT", str(BULK_PORT)), ("SINK_PORT", str(SINK_PORT))):
        program = program.replace(f"@{name}@", value)
    return program


SERVER_PROGRAM, SHORT_CLIENT, BULK_CLIENT = fill(SERVER_PROGRAM), fill(SHORT_CLIENT), fill(BULK_CLIENT)


def sh(*argv: str, netns: str | None = None) -> str:
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc.stdout


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


class Topology:
    """Host, guest and server namespaces joined as in the module docstring; dante and the servers in them."""

    def __init__(self):
        self.host, self.guest, self.server = unique_name("mpbh"), unique_name("mpbg"), unique_name("mpbs")
        self.folder = Path(tempfile.mkdtemp(prefix="mpsocks-bench-proxy-"))
        self.processes: list[subprocess.Popen] = []
        self.dante: subprocess.Popen | None = None

    def build(self) -> None:
        for netns in (self.host, self.guest, self.server):
            sh("ip", "netns", "add", netns)
            sh("ip", "link", "set", "lo", "up", netns=netns)
        for n in range(UPLINKS):
            host, guest, uplink = f"10.66.{6 + n}.1", f"10.66.{6 + n}.2", f"198.18.{n}"
            sh("ip", "link", "add", f"mptcp{n}", "netns", self.host, "type", "veth", "peer", "name",
               f"eth{n}", "netns", self.guest)
            sh("ip", "link", "add", f"up{n}", "netns", self.host, "type", "veth", "peer", "name", f"isp{n}",
               "netns", self.server)
            for netns, dev, address in ((self.host, f"mptcp{n}", f"{host}/24"),
                                        (self.guest, f"eth{n}", f"{guest}/24"),
                                        (self.host, f"up{n}", f"{uplink}.2/24"),
                                        (self.server, f"isp{n}", f"{uplink}.1/24")):
                sh("ip", "link", "set", dev, "addrgenmode", "none", netns=netns)
                sh("ip", "addr", "add", address, "dev", dev, netns=netns)
                sh("ip", "link", "set", dev, "up", netns=netns)
            # host_network: forwarding, source routing by incoming link, masquerade out of the uplink
            sh("sysctl", "-qw", f"net.ipv4.conf.mptcp{n}.forwarding=1", f"net.ipv4.conf.up{n}.forwarding=1",
               netns=self.host)
            sh("ip", "rule", "add", "iif", f"mptcp{n}", "lookup", str(6606 + n), netns=self.host)
            sh("ip", "route", "add", "default", "via", f"{uplink}.1", "dev", f"up{n}", "table", str(6606 + n),
               netns=self.host)
            # guest_network: a table per interface, loose reverse-path filter
            sh("ip", "rule", "add", "from", guest, "lookup", str(6606 + n), netns=self.guest)
            sh("ip", "route", "add", "default", "via", host, "dev", f"eth{n}", "table", str(6606 + n),
               netns=self.guest)
            sh("sysctl", "-qw", f"net.ipv4.conf.eth{n}.rp_filter=2", netns=self.guest)
        nat = [f"add rule inet bench post ip saddr 10.66.{6 + n}.0/24 oifname up{n} masquerade"
               for n in range(UPLINKS)]
        sh("nft", "\n".join(["add table inet bench",
                              "add chain inet bench post { type nat hook postrouting priority 100; }", *nat]),
           netns=self.host)
        # The clients open tens of thousands of short connections a minute, each leaving a port in
        # TIME_WAIT for a minute: the whole port range serves. (Reusing such ports, tcp_tw_reuse=1, has
        # the MPTCP server reset a new connection now and then.)
        sh("sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535", netns=self.host)
        sh("ip", "route", "add", "default", "via", "198.18.0.1", "dev", "up0", netns=self.host)
        sh("ip", "route", "add", "default", "via", "10.66.6.1", "dev", "eth0", netns=self.guest)
        sh("ip", "addr", "add", f"{SERVER}/32", "dev", "lo", netns=self.server)
        for netns in (self.guest, self.server):
            sh("ip", "mptcp", "limits", "set", "subflows", "8", "add_addr_accepted", "8", netns=netns)
        self.subflow_endpoints(True)
        self.start([sys.executable, "-c", SERVER_PROGRAM], self.server)

    def start(self, argv: list[str], netns: str, **popen) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdout=subprocess.PIPE, text=True,
                                **popen)
        self.processes.append(proc)
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"{argv[0]} did not start in {netns}")
        return proc

    def shape(self, rates: tuple[float, ...]) -> None:
        """Both directions of uplink n at RATES[n] Mbit/s, with the lab's shaper."""
        config = []
        for n, rate in enumerate(rates):
            config += [{"dev": f"isp{n}", "rate_mbit": rate, "netns": self.server},
                       {"dev": f"up{n}", "rate_mbit": rate, "netns": self.host}]
        result = run_module("shaper", config=config)
        if result.get("failed"):
            raise SystemExit(f"shaper: {result['msg']}")

    def subflow_endpoints(self, present: bool) -> None:
        """The guest's MPTCP ``subflow`` endpoints (uplinks 1 and on), as guest_network makes them, or none:
        then each connection keeps its first subflow only."""
        for n in range(1, UPLINKS):
            if present:
                sh("ip", "mptcp", "endpoint", "add", f"10.66.{6 + n}.2", "dev", f"eth{n}", "subflow",
                   netns=self.guest)
            else:
                sh("ip", "mptcp", "endpoint", "delete", "id", self.endpoint_id(n), netns=self.guest)

    def endpoint_backup(self, n: int, backup: bool) -> None:
        """Uplink n's MPTCP endpoint in the guest as a backup subflow, or not."""
        sh("ip", "mptcp", "endpoint", "change", "id", self.endpoint_id(n), "backup" if backup else "nobackup",
           netns=self.guest)

    def endpoint_id(self, n: int) -> str:
        for line in sh("ip", "mptcp", "endpoint", "show", netns=self.guest).splitlines():
            words = line.split()
            if words and words[0] == f"10.66.{6 + n}.2":
                return words[words.index("id") + 1]
        raise SystemExit(f"no MPTCP endpoint for uplink {n}")

    def sysctl(self, netns: str, **values: str) -> dict[str, str]:
        """Set sysctls (name with dots as __) in NETNS; returns what they were."""
        names = [name.replace("__", ".") for name in values]
        before = dict(zip(values, sh("sysctl", "-n", *names, netns=netns).splitlines(), strict=True))
        sh("sysctl", "-qw", *(f"{name}={value}" for name, value in zip(names, values.values(), strict=True)),
           netns=netns)
        return before

    # --- dante ---------------------------------------------------------------------------------------

    def run_dante(self, config: str, command: str) -> None:
        """Start dante in the guest with CONFIG (text) as COMMAND runs it; waits until it listens."""
        self.stop_dante()
        path = self.folder / "danted.conf"
        path.write_text(config)
        log = open(self.folder / "danted.log", "a")  # noqa: SIM115 (the process keeps it)
        self.dante = subprocess.Popen(["ip", "netns", "exec", self.guest, "/bin/sh", "-c",
                                       command.replace("CONF", shlex.quote(str(path)))],
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 10
        while f"{SOCKS_ADDRESS}:{SOCKS_PORT}" not in sh("ss", "-Htln", netns=self.guest):
            if self.dante.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dante did not start: {(self.folder / 'danted.log').read_text()[-500:]}")
            time.sleep(0.05)

    def stop_dante(self) -> None:
        if self.dante is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.dante.pid, 15)
            self.dante.wait()
            self.dante = None
            time.sleep(0.2)   # its children go with it

    def dante_processes(self) -> list[int]:
        """Pids of the dante processes (the process group started by run_dante)."""
        group = self.dante.pid
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    fields = stat[stat.rfind(")") + 2:].split()
                    if int(fields[2]) == group and "danted" in Path(f"/proc/{entry}/comm").read_text():
                        found.append(int(entry))
        return found

    def dante_fds(self) -> int:
        return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in self.dante_processes())

    def dante_connections(self) -> int:
        """TCP connections (not listeners) dante's processes hold open."""
        return sum(1 for line in sh("ss", "-Htanp", netns=self.guest).splitlines()
                   if '"danted"' in line and not line.startswith("LISTEN"))

    def dante_cpu(self) -> float:
        """CPU seconds dante's processes used so far, those that ended included."""
        ticks = 0
        for pid in self.dante_processes():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rfind(")") + 2:].split()
                ticks += sum(int(value) for value in fields[11:15])   # utime stime cutime cstime
        return ticks / os.sysconf("SC_CLK_TCK")

    # --- clients -------------------------------------------------------------------------------------

    def short_connections(self, mode: str, count: int, clients: int = 1) -> dict:
        """COUNT connections from the host (MODE direct or socks) by CLIENTS clients at once."""
        share = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
        start = time.perf_counter()
        procs = [subprocess.Popen(["ip", "netns", "exec", self.host, sys.executable, "-c", SHORT_CLIENT, mode,
                                   str(n)], stdout=subprocess.PIPE, text=True) for n in share]
        outputs = [proc.communicate()[0] for proc in procs]
        seconds = time.perf_counter() - start
        if any(proc.returncode for proc in procs):
            raise SystemExit(f"short connections ({mode}) failed")
        setups = [value for out in outputs for value in json.loads(out)["setups"]]
        resets = sum(json.loads(out)["resets"] for out in outputs)
        if resets:
            print(f"({mode}: {resets} connection(s) reset by the server's end and made again)", flush=True)
        if clients == 1:
            seconds = json.loads(outputs[0])["seconds"]
        return {"rate": count / seconds, "p50": percentile(setups, 0.5) * 1000,
                "p99": percentile(setups, 0.99) * 1000}

    def download(self, mode: str, seconds: float, warmup: float) -> float:
        """Mbit/s of one transfer: ``socks`` (a download) or ``upload`` from the host; ``tcp ADDR`` or
        ``mptcp ADDR`` (downloads) in the guest."""
        netns = self.host if mode in ("socks", "upload") else self.guest
        out = sh(sys.executable, "-c", BULK_CLIENT, mode, str(seconds), str(warmup), netns=netns)
        return json.loads(out)["mbit"]

    def downloads(self, modes: list[str], seconds: float, warmup: float) -> list[float]:
        """Several downloads at once (each on its own uplink), Mbit/s each."""
        procs = [subprocess.Popen(["ip", "netns", "exec", self.host if mode == "socks" else self.guest,
                                   sys.executable, "-c", BULK_CLIENT, mode, str(seconds), str(warmup)],
                                  stdout=subprocess.PIPE, text=True) for mode in modes]
        return [json.loads(proc.communicate()[0])["mbit"] for proc in procs]

    def close(self) -> None:
        self.stop_dante()
        for proc in self.processes:
            proc.kill()
            proc.wait()
        for netns in (self.host, self.guest, self.server):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        for path in self.folder.iterdir():
            path.unlink()
        self.folder.rmdir()


# --- the role's dante -----------------------------------------------------------------------------------

def role_defaults() -> dict:
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def role_config(**overrides) -> str:
    """danted.conf as the socks_proxy role writes it for two uplinks (its vars/main.yml computed here)."""
    context = dict(role_defaults(), mpsocks_uplinks=["up0", "up1"], **overrides)
    slots = range(6, 6 + UPLINKS)
    context.update(
        __mpsocks_socks_proxy_address=SOCKS_ADDRESS,
        __mpsocks_socks_proxy_guest_addresses=[f"10.66.{n}.2" for n in slots],
        __mpsocks_socks_proxy_clients=[f"10.66.{n}.0/24" for n in slots] + [f"{SOCKS_ADDRESS}/32"],
        __mpsocks_socks_proxy_pam_service="mpsocks-socks",
    )
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROLE / "templates")),
                                     undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                     trim_blocks=True)  # as Ansible renders templates
    return environment.get_template("danted.conf.j2").render(context)


def role_command(processes: int | None = None) -> str:
    """The role's shell command running dante (CONF stands for the configuration's path)."""
    role_vars = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
    environment.filters["quote"] = lambda value: "CONF"
    context = dict(role_defaults(), __mpsocks_socks_proxy_conf="CONF")
    if processes is not None:
        context["mpsocks_socks_processes"] = processes
    return environment.from_string(role_vars["__mpsocks_socks_proxy_command"]).render(context)


def overhead_settings() -> list[tuple[str, int, str, str, bool]]:
    """``(label, clients at once, danted.conf, command, subflow endpoints)``: the role's defaults, each of
    its choices undone, and where MPTCP's own cost goes."""
    config, command = role_config(), role_command()
    routed = config.replace("external: 10.66.6.2\n",
                            "external: eth0\nexternal: eth1\nexternal.rotation: route\n")
    every = "  command: connect\n  log: connect disconnect\n"
    logged = config.replace("  command: connect\n", every)
    unfiltered = command.split(" 2>&1 |")[0]
    return [
        ("role defaults", 1, config, command, True),
        ("external.rotation: route, eth0 + eth1", 1, routed, command, True),
        ("log: connect disconnect (every client)", 1, logged, command, True),
        ("MPTCP warning per connection in the log", 1, config, unfiltered, True),
        ("all three undone (an untuned dante)", 1, routed.replace("  command: connect\n", every), unfiltered,
         True),
        ("MPTCP, no second subflow: the join's cost", 1, config, command, False),
        ("plain TCP out (no mptcpize): MPTCP's cost", 1, config, command.replace("mptcpize run ", ""), True),
        ("role defaults, 4 clients at once", 4, config, command, True),
        ("danted -N 2, 4 clients at once", 4, config, role_command(processes=2), True),
    ]


def overhead(topology: Topology, count: int, rounds: int) -> None:
    print(f"\n== Proxy overhead: {count:,} short connections from the host, one after the other", flush=True)
    config, command = role_config(), role_command()
    topology.run_dante(config, command)
    topology.short_connections("socks", 300)   # dante's children are forked: start from where it runs
    direct = topology.short_connections("direct", count)
    fds_before, cpu_before = topology.dante_fds(), topology.dante_cpu()
    held_before = topology.dante_connections()
    socks = topology.short_connections("socks", count)
    cpu = (topology.dante_cpu() - cpu_before) / count * 1000
    deadline = time.monotonic() + 5   # the last clients' I/O children let go
    while topology.dante_connections() > held_before and time.monotonic() < deadline:
        time.sleep(0.1)
    fds_after, held_after = topology.dante_fds(), topology.dante_connections()
    parallel = {mode: topology.short_connections(mode, count // 2, clients=4) for mode in ("direct", "socks")}
    print(f"{'':28}{'conn/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'4 clients conn/s':>18}")
    for name, figures in (("direct", direct), ("through SOCKS (dante)", socks)):
        print(f"{name:28}{figures['rate']:>9,.0f}{figures['p50']:>9.2f}{figures['p99']:>9.2f}"
              f"{parallel[name.split()[0] if name == 'direct' else 'socks']['rate']:>18,.0f}")
    for clients, rate in (("one after the other", socks["rate"]),
                          ("with 4 clients", parallel["socks"]["rate"])):
        verdict = "met" if rate >= 1500 else "MISSED"
        print(f"SOCKS connections/s {clients} (target >= 1,500): {rate:,.0f}: {verdict}")
    gap = socks["p50"] - direct["p50"]
    print(f"setup p50 over direct (target <= 0.5 ms): {gap:+.2f} ms: {'met' if gap <= 0.5 else 'MISSED'}")
    print(f"dante: {cpu:.2f} ms of CPU per connection; open descriptors {fds_before} before, {fds_after} "
          "after "
          f"(more I/O children: {len(topology.dante_processes())} processes now); TCP connections held "
          f"{held_before} before, {held_after} after: {'no leak' if held_after <= held_before else 'LEAK'}")

    print(f"\nWhat each setting gives (best of {rounds} interleaved rounds of {count // 10:,} connections; "
          f"CPU: median)", flush=True)
    settings = overhead_settings()
    figures: dict[str, list[dict]] = {label: [] for label, *_ in settings}
    for _ in range(rounds):
        for label, clients, config, command, joins in settings:
            topology.run_dante(config, command)
            if not joins:
                topology.subflow_endpoints(False)
            topology.short_connections("socks", 300, clients)
            cpu_before = topology.dante_cpu()
            found = topology.short_connections("socks", count // 10, clients)
            if not joins:
                topology.subflow_endpoints(True)
            found["cpu"] = (topology.dante_cpu() - cpu_before) / (count // 10) * 1000
            log = topology.folder / "danted.log"
            found["log"] = log.stat().st_size
            log.unlink()
            figures[label].append(found)
    print(f"{'':46}{'conn/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms':>9}{'log B/conn':>11}")
    for label, found in figures.items():
        cpu = sorted(f["cpu"] for f in found)[len(found) // 2]
        print(f"{label:46}{max(f['rate'] for f in found):>9,.0f}{min(f['p50'] for f in found):>9.2f}"
              f"{min(f['p99'] for f in found):>9.2f}{cpu:>9.2f}"
              f"{min(f['log'] for f in found) / (count // 10 + 300):>11.0f}")
    topology.run_dante(config, command)


#: Settings tried where one uplink is much slower: (label, setting for with_setting()).
SLOW_UPLINK_SETTINGS = [
    ("role defaults (both subflows active)", {}),
    ("uplink 1 a backup subflow (the guest's endpoint)", {"backup": True}),
    ("server net.ipv4.tcp_notsent_lowat 16 KiB (the sender)",
     {"server": {"net__ipv4__tcp_notsent_lowat": "16384"}}),
]


def aggregation(topology: Topology, seconds: float, repeats: int, rates: tuple[float, float]) -> None:
    """Where one uplink is much slower (bench_aggregation.py measures the lab's defaults at every
    rate): what each setting gives, downloads and uploads."""
    print(f"\n== Aggregation with a much slower uplink: plain TCP over each uplink alone, then SOCKS over "
          f"MPTCP with both (median of {repeats} transfers of {seconds:g} s)", flush=True)
    topology.run_dante(role_config(), role_command())
    topology.shape(rates)
    alone = topology.downloads(["tcp 10.66.6.2", "tcp 10.66.7.2"], seconds, 1.5)
    total = sum(alone)
    print(f"\n{'+'.join(map(str, rates))} Mbit/s: plain TCP {alone[0]:.1f} over uplink 0 alone, "
          f"{alone[1]:.1f} over uplink 1 alone, sum {total:.1f}")
    without = role_config().replace("external.tcp.25: 16384\n", "")
    rows = [(label, setting, "socks") for label, setting in SLOW_UPLINK_SETTINGS]
    rows += [("upload, role defaults", {}, "upload"),
             ("upload, dante without TCP_NOTSENT_LOWAT 16 KiB", {"config": without}, "upload")]
    for label, setting, mode in rows:
        runs = sorted(with_setting(topology, setting, seconds, mode) for _ in range(repeats))
        found = runs[len(runs) // 2]
        each = " ".join(f"{r:.1f}" for r in runs)
        print(f"  {label:58}{found:>6.1f} Mbit/s{found / total:>7.3f}  ({each})", flush=True)


def with_setting(topology: Topology, setting: dict, seconds: float, mode: str = "socks") -> float:
    """One SOCKS transfer (Mbit/s) with SETTING: the guest's endpoint for uplink 1 as backup, sysctls, a
    configuration of dante's own."""
    if setting.get("config"):
        topology.run_dante(setting["config"], role_command())
    if setting.get("backup"):
        topology.endpoint_backup(1, True)
    undo = {netns: topology.sysctl(netns, **setting[role]) for role, netns in
            (("guest", topology.guest), ("server", topology.server)) if role in setting}
    try:
        return topology.download(mode, seconds, 1.5)
    finally:
        if setting.get("config"):
            topology.run_dante(role_config(), role_command())
        for netns, values in undo.items():
            topology.sysctl(netns, **values)
        if setting.get("backup"):
            topology.endpoint_backup(1, False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer connections and shorter downloads")
    args = parser.parse_args()
    if os.geteuid():
        raise SystemExit("run as root: the benchmark makes network namespaces")
    start = time.monotonic()
    topology = Topology()
    try:
        topology.build()
        topology.shape((20, 20))
        overhead(topology, 2000 if args.quick else 10_000, 2 if args.quick else 3)
        aggregation(topology, 3 if args.quick else 4, 1 if args.quick else 3, (20, 2))
    finally:
        topology.close()
    print(f"\n(benchmark took {time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
