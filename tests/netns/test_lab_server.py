"""The lab's server program (roles/lab/files/mpsocks_lab_server.py), run for real in namespaces.

Topology (all made here, all deleted afterwards): client --a0 (198.18.1.0/24)-- middle
--s0 (198.18.3.0/24)-- server, plus a second path client --b0 (198.18.2.0/24)-- middle for
MPTCP's second subflow; the middle namespace forwards.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import py_compile
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mpsocks_testlib import REPO, sh, unique_name

SCRIPT = REPO / "collection" / "roles" / "lab" / "files" / "mpsocks_lab_server.py"
CLIENT_A, CLIENT_B, MIDDLE_A, MIDDLE_B = "198.18.1.2", "198.18.2.2", "198.18.1.1", "198.18.2.1"
MIDDLE_S, SERVER = "198.18.3.1", "198.18.3.2"
MPTCP_PORT, TCP_PORT, ECHO_PORT, PROXY_PORT = 8080, 8081, 8082, 3129


def _load_script():
    """The script as a module, without leaving a __pycache__ in the role."""
    spec = importlib.util.spec_from_file_location("mpsocks_lab_server", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    keep, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = keep
    return module


lab = _load_script()

# A client run inside a namespace: one request on a fresh socket, then a JSON summary.
CLIENT = r"""
import hashlib, json, socket, struct, sys
a = json.loads(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262 if a["mptcp"] else 0)
s.settimeout(30)
s.connect((a["host"], a["port"]))
out = {"local": "%s:%d" % s.getsockname()[:2]}
if a.get("raw") is not None:
    s.sendall(a["raw"].encode())
else:
    s.sendall(("%s %s HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
               % (a.get("method", "GET"), a["path"])).encode())
data = b""
while b"\r\n\r\n" not in data:
    piece = s.recv(65536)
    if not piece:
        break
    data += piece
head, _, body = data.partition(b"\r\n\r\n")
lines = head.decode("latin-1").split("\r\n")
out["status_line"] = lines[0]
out["headers"] = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
digest, length, keep = hashlib.sha256(body), len(body), body[:4096]
stop = a.get("reset_after")
while stop is None or length < stop:
    piece = s.recv(1 << 20)
    if not piece:
        break
    digest.update(piece)
    length += len(piece)
    if len(keep) < 4096:
        keep += piece[:4096 - len(keep)]
out["client_is_mptcp"] = s.getsockopt(socket.SOL_TCP, 43)
if out["client_is_mptcp"]:
    info = s.getsockopt(284, 1, 256)
    out["client_subflows"] = info[80] if len(info) > 80 else info[0] + 1
if stop is not None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
out.update(length=length, sha256=digest.hexdigest(), body=keep.decode("latin-1"))
print(json.dumps(out))
"""

# Half-close through the proxy: the client sends, shuts its sending side, reads the answer.
HALF_CLOSE_SERVER = r"""
import hashlib, socket, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2]))); l.listen(); print("ready", flush=True)
c, peer = l.accept(); c.settimeout(30); h = hashlib.sha256(); n = 0
while True:
    d = c.recv(65536)
    if not d:
        break
    h.update(d); n += len(d)
c.sendall(("%d %s %s\n" % (n, h.hexdigest(), peer[0])).encode()); c.close()
"""
HALF_CLOSE_CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
s.sendall(bytes(range(256)) * 8192)
s.shutdown(socket.SHUT_WR)
reply = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    reply += d
print(reply.decode().strip())
"""


def in_ns(netns: str, *argv: str, timeout: float = 60) -> str:
    proc = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{argv} failed: {proc.stderr}"
    return proc.stdout


def request(netns: str, path: str = "/", port: int = MPTCP_PORT, mptcp: bool = False, **extra) -> dict:
    args = dict(host=SERVER, port=port, path=path, mptcp=mptcp, **extra)
    return json.loads(in_ns(netns, sys.executable, "-c", CLIENT, json.dumps(args)))


def start(netns: str, log: Path, *args: str) -> subprocess.Popen:
    """The script in NETNS with ARGS, once its first log line says it listens."""
    handle = log.open("w")
    proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, str(SCRIPT), *args],
                            stdout=subprocess.DEVNULL, stderr=handle)
    handle.close()
    deadline = time.monotonic() + 10
    while "listening on" not in log.read_text():
        assert proc.poll() is None, f"{args} exited: {log.read_text()}"
        assert time.monotonic() < deadline, f"{args} did not start: {log.read_text()}"
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def topo():
    """client, middle and server namespaces joined by veths; removed afterwards."""
    names = {role: unique_name(f"mpsl{role[0]}") for role in ("client", "middle", "server")}
    client, middle, server = names["client"], names["middle"], names["server"]
    try:
        for ns in names.values():
            subprocess.run(["ip", "netns", "add", ns], check=True)
            sh("ip", "link", "set", "lo", "up", netns=ns)
        for link, near, far in (("a0", client, middle), ("b0", client, middle), ("s0", middle, server)):
            sh("ip", "link", "add", link, "netns", near, "type", "veth", "peer", "name", link, "netns", far)
        for ns, link, address in ((client, "a0", CLIENT_A), (client, "b0", CLIENT_B),
                                  (middle, "a0", MIDDLE_A), (middle, "b0", MIDDLE_B),
                                  (middle, "s0", MIDDLE_S), (server, "s0", SERVER)):
            sh("ip", "addr", "add", f"{address}/24", "dev", link, netns=ns)
            sh("ip", "link", "set", link, "up", netns=ns)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=middle)
        sh("ip", "route", "add", "default", "via", MIDDLE_A, "dev", "a0", netns=client)
        sh("ip", "route", "add", "default", "via", MIDDLE_B, "dev", "b0", "table", "102", netns=client)
        sh("ip", "rule", "add", "from", CLIENT_B, "table", "102", netns=client)
        sh("ip", "route", "add", "default", "via", MIDDLE_S, netns=server)
        sh("ip", "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "0", netns=server)
        sh("ip", "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "0", netns=client)
        yield names
    finally:
        for ns in names.values():
            subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.fixture(scope="module")
def servers(topo, tmp_path_factory):
    """The MPTCP server on SERVER:8080 and the plain-TCP one on :8081; their logs."""
    logs = tmp_path_factory.mktemp("labserver")
    procs = []
    try:
        procs.append(start(topo["server"], logs / "mptcp.log", "http", "--listen", f"{SERVER}:{MPTCP_PORT}"))
        procs.append(start(topo["server"], logs / "tcp.log", "http", "--listen", f"{SERVER}:{TCP_PORT}",
                           "--tcp"))
        yield {"mptcp": logs / "mptcp.log", "tcp": logs / "tcp.log", "procs": procs}
    finally:
        for proc in procs:
            stop(proc)


def test_check_tells_mptcp_from_plain_tcp_and_fallback(topo, servers):
    client = topo["client"]
    mptcp = request(client, "/?format=json", mptcp=True)
    assert mptcp["status_line"] == "HTTP/1.1 200 OK"
    assert mptcp["headers"]["content-type"] == "application/json"
    assert mptcp["client_is_mptcp"] == 1
    assert json.loads(mptcp["body"]) == {"mptcp": True, "subflows": 1, "client": mptcp["local"]}
    assert mptcp["local"].startswith(CLIENT_A + ":")

    plain = request(client, "/anything?format=json", mptcp=False)
    assert json.loads(plain["body"]) == {"mptcp": False, "subflows": 1, "client": plain["local"]}

    fallback = request(client, "/?format=json", port=TCP_PORT, mptcp=True)
    assert fallback["client_is_mptcp"] == 0  # the client fell back too: the kernel agrees
    assert json.loads(fallback["body"]) == {"mptcp": False, "subflows": 1, "client": fallback["local"]}

    text = request(client, "/", mptcp=True)
    assert text["headers"]["content-type"].startswith("text/plain")
    assert text["body"] == f"You are using MPTCP with 1 subflow (client {text['local']})\n"
    text = request(client, "/", port=TCP_PORT, mptcp=True)
    assert text["body"] == f"You are not using MPTCP (client {text['local']})\n"

    log = servers["mptcp"].read_text()
    assert f'{mptcp["local"]} "GET /?format=json HTTP/1.1" 200' in log
    assert f'{plain["local"]} "GET /anything?format=json HTTP/1.1" 200' in log


def test_two_paths_give_two_subflows(topo, servers):
    client = topo["client"]
    sh("ip", "mptcp", "endpoint", "add", CLIENT_B, "dev", "b0", "subflow", netns=client)
    try:
        for _ in range(3):
            answer = request(client, "/?format=json", mptcp=True)
            assert json.loads(answer["body"]) == {"mptcp": True, "subflows": 2, "client": answer["local"]}
            assert answer["client_subflows"] == 2
        text = request(client, "/", mptcp=True)
        assert text["body"] == f"You are using MPTCP with 2 subflows (client {text['local']})\n"
        plain = request(client, "/?format=json", mptcp=False)
        assert json.loads(plain["body"])["subflows"] == 1
    finally:
        sh("ip", "mptcp", "endpoint", "flush", netns=client)


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 2**20 + 7, 16 * 2**20, 40_000_123])
def test_bytes_match_header_and_content_function(topo, servers, size):
    answer = request(topo["client"], f"/bytes/{size}", mptcp=size % 2 == 1)
    assert answer["status_line"] == "HTTP/1.1 200 OK"
    assert answer["headers"]["content-length"] == str(size)
    assert answer["headers"]["content-type"] == "application/octet-stream"
    assert answer["length"] == size
    assert answer["headers"]["x-content-sha256"] == answer["sha256"] == lab.content_sha256(size)
    # The content function, independently of the server's digest cache.
    block = lab.content_block()
    expected = hashlib.sha256()
    for _ in range(size // len(block)):
        expected.update(block)
    expected.update(block[: size % len(block)])
    assert answer["sha256"] == expected.hexdigest()
    assert answer["body"].encode("latin-1") == lab.content_bytes(min(size, 4096))


def test_content_is_fixed_pseudo_random_data():
    block = lab.content_block()
    assert len(block) == lab.BLOCK_SIZE == 65536
    assert len(set(block)) == 256 and block[:32] != block[32:64]
    assert hashlib.sha256(block).hexdigest() == lab.content_sha256(65536)
    assert lab.content_bytes(100_000) == (block * 2)[:100_000]
    assert lab.content_sha256(0) == hashlib.sha256(b"").hexdigest()


def test_bytes_with_curl_head_and_bad_sizes(topo, servers, tmp_path):
    client = topo["client"]
    body = tmp_path / "body"
    headers = in_ns(client, "curl", "-sS", "-D", "-", "-o", str(body), f"http://{SERVER}:{MPTCP_PORT}/bytes/123457")
    assert f"x-content-sha256: {lab.content_sha256(123457)}" in headers.lower()
    assert body.read_bytes() == lab.content_bytes(123457)

    head = request(client, "/bytes/5000", method="HEAD")
    assert head["status_line"] == "HTTP/1.1 200 OK" and head["length"] == 0
    assert head["headers"]["content-length"] == "5000"
    assert head["headers"]["x-content-sha256"] == lab.content_sha256(5000)

    for bad in (str(lab.MAX_BYTES + 1), "-1", "abc", "1e3", "", "12/3"):
        answer = request(client, f"/bytes/{bad}")
        assert answer["status_line"] == "HTTP/1.1 400 Bad Request", bad
        assert "x-content-sha256" not in answer["headers"]


def test_bad_requests_and_resets_do_not_stop_the_server(topo, servers):
    client = topo["client"]
    garbage = request(client, raw="NONSENSE\r\n\r\n")
    assert garbage["status_line"] == "HTTP/1.1 400 Bad request syntax ('NONSENSE')"
    put = request(client, "/", method="PUT")
    assert put["status_line"] == "HTTP/1.1 501 Unsupported method ('PUT')"
    cut = request(client, f"/bytes/{2**30}", mptcp=True, reset_after=2**20)
    assert 2**20 <= cut["length"] < 2**30
    # The server wrote the reset off in one log line and still answers.
    deadline = time.monotonic() + 10
    log = servers["mptcp"]
    while "client went away" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    assert "Traceback" not in log.read_text()
    assert all(proc.poll() is None for proc in servers["procs"])
    assert json.loads(request(client, "/?format=json")["body"])["mptcp"] is False


# ---------------------------------------------------------------------------------- optimizer


def syn_acks(pcap: Path) -> dict[int, dict]:
    """SYN/ACKs in an Ethernet pcap, by destination port: TTL and TCP options."""
    data = pcap.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    assert struct.unpack_from(endian + "I", data, 20)[0] == 1, "not an Ethernet capture"
    found, offset = {}, 24
    while offset + 16 <= len(data):
        caplen = struct.unpack_from(endian + "I", data, offset + 8)[0]
        frame = data[offset + 16: offset + 16 + caplen]
        offset += 16 + caplen
        if len(frame) < caplen or len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
            continue
        ip = frame[14:]
        tcp = ip[(ip[0] & 0x0F) * 4:]
        if tcp[13] & 0x12 != 0x12:
            continue
        options, kinds, i = tcp[20:(tcp[12] >> 4) * 4], {}, 0
        while i < len(options) and options[i] != 0:
            if options[i] == 1:
                i += 1
                continue
            kinds[options[i]] = options[i + 2:i + options[i + 1]]
            i += options[i + 1]
        found[struct.unpack_from("!H", tcp, 2)[0]] = {
            "ttl": ip[8],
            "mss": struct.unpack("!H", kinds[2])[0] if 2 in kinds else None,
            "wscale": kinds[3][0] if 3 in kinds else None,
            "mptcp": 30 in kinds,
        }
    return found


def htb_sent(netns: str, classid: str) -> int:
    text = sh("tc", "-s", "class", "show", "dev", "a0", netns=netns)
    match = re.search(rf"class htb {classid} .*?\n\s*Sent (\d+) bytes", text)
    assert match, text
    return int(match[1])


NFT_REDIRECT = """
table ip mpsocks_test_pep {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        iifname { "a0", "b0" } meta l4proto tcp tcp option mptcp missing redirect to :%d
    }
}
"""


def test_optimizer_terminates_plain_tcp_and_passes_mptcp(topo, servers, tmp_path):
    client, middle, server = topo["client"], topo["middle"], topo["server"]
    normal_wscale = int(in_ns(server, sys.executable, str(SCRIPT), "optimizer", "--print-wscale",
                              "--window-clamp", "0"))
    proxy_wscale = int(in_ns(middle, sys.executable, str(SCRIPT), "optimizer", "--print-wscale"))
    print(f"wscale: normal host {normal_wscale}, optimizer {proxy_wscale}")
    assert proxy_wscale == lab.DEFAULT_WSCALE != normal_wscale

    nft = tmp_path / "redirect.nft"
    nft.write_text(NFT_REDIRECT % PROXY_PORT)
    sh("nft", "-f", str(nft), netns=middle)
    # HTB on the client-facing link: the proxy's SO_PRIORITY 1:0x20 picks class 1:20.
    sh("tc", "qdisc", "add", "dev", "a0", "root", "handle", "1:", "htb", "default", "10", netns=middle)
    for classid in ("1:10", "1:20"):
        sh("tc", "class", "add", "dev", "a0", "parent", "1:", "classid", classid, "htb", "rate", "10gbit",
           "quantum", "60000", netns=middle)
    procs = []
    capture = tmp_path / "client.pcap"
    dump = subprocess.Popen(["ip", "netns", "exec", client, "tcpdump", "-i", "a0", "--immediate-mode", "-U",
                             "-s", "200", "-w", str(capture), "tcp[tcpflags] & tcp-syn != 0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    procs.append(dump)
    try:
        assert "listening on" in dump.stderr.readline()
        procs.append(start(middle, tmp_path / "optimizer.log", "optimizer", "--listen",
                           f"0.0.0.0:{PROXY_PORT}", "--mss", "1300", "--priority", "0x10020"))

        plain = request(client, "/?format=json", mptcp=False)
        answer = json.loads(plain["body"])
        assert answer["mptcp"] is False and answer["client"].startswith(MIDDLE_S + ":")  # terminated

        mptcp = request(client, "/?format=json", mptcp=True)
        assert json.loads(mptcp["body"]) == {"mptcp": True, "subflows": 1, "client": mptcp["local"]}

        before = htb_sent(middle, "1:20")
        size = 5_000_000
        data = request(client, f"/bytes/{size}", mptcp=False)
        assert data["length"] == size
        assert data["headers"]["x-content-sha256"] == data["sha256"] == lab.content_sha256(size)
        assert htb_sent(middle, "1:20") - before >= size  # --priority reached the qdisc
        before = htb_sent(middle, "1:20")
        assert request(client, f"/bytes/{size}", mptcp=True)["length"] == size
        assert htb_sent(middle, "1:20") - before < size / 10  # not through the proxy

        # Half-close passes both ways: the server sees the FIN, the client gets the answer.
        echo = subprocess.Popen(["ip", "netns", "exec", server, sys.executable, "-c", HALF_CLOSE_SERVER,
                                 SERVER, str(ECHO_PORT)], stdout=subprocess.PIPE, text=True)
        procs.append(echo)
        assert echo.stdout.readline().strip() == "ready"
        reply = in_ns(client, sys.executable, "-c", HALF_CLOSE_CLIENT, SERVER, str(ECHO_PORT)).split()
        sent = bytes(range(256)) * 8192
        assert reply == [str(len(sent)), hashlib.sha256(sent).hexdigest(), MIDDLE_S]
        assert echo.wait(timeout=10) == 0

        # A client's reset mid-download is passed on and the proxy keeps serving.
        cut = request(client, f"/bytes/{2**30}", reset_after=2**20)
        assert 2**20 <= cut["length"] < 2**30
        assert procs[1].poll() is None
        again = json.loads(request(client, "/?format=json")["body"])
        assert again["client"].startswith(MIDDLE_S + ":")

        port = {"plain": int(plain["local"].rsplit(":", 1)[1]),
                "mptcp": int(mptcp["local"].rsplit(":", 1)[1])}
        deadline = time.monotonic() + 5
        while not set(port.values()) <= set(syn_acks(capture)) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        for proc in reversed(procs):
            if proc is dump and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            stop(proc)
        subprocess.run(["ip", "netns", "exec", middle, "nft", "delete", "table", "ip", "mpsocks_test_pep"],
                       check=False)
        subprocess.run(["ip", "netns", "exec", middle, "tc", "qdisc", "del", "dev", "a0", "root"],
                       check=False)

    log = (tmp_path / "optimizer.log").read_text()
    print(log)
    assert "Traceback" not in log
    assert f"{plain['local']} -> {SERVER}:{MPTCP_PORT} via {MIDDLE_S}:" in log
    assert re.search(rf"{re.escape(cut['local'])} -> .* done .*(reset|Connection|Broken)", log), log

    seen = syn_acks(capture)
    print("SYN/ACKs at the client:", {name: seen.get(p) for name, p in port.items()})
    assert seen[port["plain"]] == {"ttl": 128, "mss": 1300, "wscale": lab.DEFAULT_WSCALE, "mptcp": False}
    assert seen[port["mptcp"]] == {"ttl": 63, "mss": 1460, "wscale": normal_wscale, "mptcp": True}


def test_print_wscale_follows_the_clamp(netns):
    def wscale(*extra):
        return int(in_ns(netns, sys.executable, str(SCRIPT), "optimizer", "--print-wscale", *extra))

    rmem = max(int(sh("sysctl", "-n", "net.ipv4.tcp_rmem", netns=netns).split()[2]),
               int(sh("sysctl", "-n", "net.core.rmem_max", netns=netns)))
    assert wscale() == lab.DEFAULT_WSCALE == 5
    assert wscale("--window-clamp", "262144") == 3
    assert wscale("--window-clamp", "0") == min(14, rmem.bit_length() - 1 - 15)


def test_command_line(tmp_path):
    run = [sys.executable, str(SCRIPT)]
    for extra in ([], ["http"], ["optimizer"]):
        proc = subprocess.run(run + extra + ["--help"], capture_output=True, text=True)
        assert proc.returncode == 0 and proc.stdout.startswith("usage:"), proc.stderr
    for bad in (["http", "--listen", "198.18.0.1"], ["http", "--listen", "nonsense:80"],
                ["http", "--listen", "198.18.0.1:70000"], ["optimizer"], ["optimizer", "--ttl", "0"],
                ["optimizer", "--listen", "0.0.0.0:1", "--mss", "x"], []):
        proc = subprocess.run(run + bad, capture_output=True, text=True)
        assert proc.returncode == 2, bad
        assert "Traceback" not in proc.stderr and "error:" in proc.stderr.strip().splitlines()[-1]
    # The managed host may have Python 3.9: no newer syntax.
    ast.parse(SCRIPT.read_text(), feature_version=(3, 9))
    py_compile.compile(str(SCRIPT), cfile=str(tmp_path / "server.pyc"), doraise=True)
