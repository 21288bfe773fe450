"""Benchmark of the capture analyzer: it prints figures, it asserts no timing.

Makes a capture of at least 1,000,000 packets in two network namespaces of its own (one unshaped veth pair
with a 600-byte MTU and no segmentation offload, so that every segment is a packet; parallel MPTCP
downloads; ``tcpdump -s 96``), then measures, one run each:

- time: the analyzer against ``tshark -T fields`` extracting the same handshake fields (targets: the
  analyzer at least twice as fast, and at least 100,000 packets/s);
- memory: the analyzer's peak RSS (``ru_maxrss`` of a subprocess) on that file and on its first tenth
  (targets: within 10 % of each other, under 100 MB).

Everything it made (namespaces, processes, capture files) is gone at the end. Run as root::

    sudo .venv/bin/python tests/bench/bench_analyzer.py [--packets N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpsocks_testlib import collections_root  # noqa: E402

PORT = 8080
CLIENT_ADDRESS, SERVER_ADDRESS = "10.199.230.1", "10.199.230.2"
MTU, SNAPLEN = 600, 96
PARALLEL, BYTES_PER_CONNECTION = 4, 30_000_000
#: A conservative size of one record in the capture: pcap header + snaplen.
RECORD_BYTES = 16 + SNAPLEN
HANDSHAKE_FIELDS = ["ip.src", "tcp.srcport", "ip.dst", "tcp.dstport", "tcp.flags.ack", "ip.ttl",
                    "tcp.options.mss_val", "tcp.options.wscale.shift", "tcp.options.mptcp.subtype"]

SERVER = r"""
import socket, struct, threading
def serve(conn):
    with conn:
        size = struct.unpack("!Q", conn.recv(8))[0]
        chunk = b"x" * 65536
        while size > 0:
            size -= conn.send(chunk[:size])
with socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262) as server:
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", %d))
    server.listen()
    print("ready", flush=True)
    while True:
        threading.Thread(target=serve, args=(server.accept()[0],), daemon=True).start()
"""

CLIENT = r"""
import socket, struct, sys, threading
address, port, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def fetch():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262) as sock:
        sock.connect((address, port))
        sock.sendall(struct.pack("!Q", size))
        while sock.recv(1 << 20):
            pass
threads = [threading.Thread(target=fetch) for _ in range(count)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""

ANALYZER = r"""
import json, sys, time
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_analysis import analyze
start = time.perf_counter()
report = analyze([sys.argv[1]])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "frames": report["files"][0]["frames"],
                  "mptcp": sum(len(c["subflows"]) for c in report["connections"]),
                  "syns": sorted([h["client"]["port"], h["syn"]["ttl"], h["syn"]["mss"], h["syn"]["wscale"],
                                  h["syn"]["attempts"]] for h in report["handshakes"])}))
"""


def sh(*argv, netns=None):
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
    subprocess.run(cmd, check=True, capture_output=True)


def measured(argv, env=None):
    """Run ARGV; returns (stdout, wall seconds, peak RSS in MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{argv[0]} failed with exit status {proc.returncode}")
    return out, time.perf_counter() - start, usage.ru_maxrss / 1024


def make_capture(folder: Path, packets: int) -> tuple[Path, float]:
    """A capture of at least PACKETS packets of MPTCP downloads; returns it and the seconds it took."""
    tag = os.getpid() % 100000
    client, server = f"mpsb{tag}c", f"mpsb{tag}s"
    path = folder / "big.pcap"
    processes = []
    start = time.perf_counter()
    try:
        for netns in (client, server):
            sh("ip", "netns", "add", netns)
            sh("ip", "link", "set", "lo", "up", netns=netns)
        sh("ip", "link", "add", "c0", "netns", client, "type", "veth", "peer", "name", "s0", "netns", server)
        for netns, name, address in ((client, "c0", CLIENT_ADDRESS), (server, "s0", SERVER_ADDRESS)):
            sh("ip", "addr", "add", f"{address}/24", "dev", name, netns=netns)
            sh("ip", "link", "set", name, "mtu", str(MTU), "gso_max_segs", "1", "up", netns=netns)
        serving = subprocess.Popen(["ip", "netns", "exec", server, sys.executable, "-c", SERVER % PORT],
                                   stdout=subprocess.PIPE, text=True)
        processes.append(serving)
        assert serving.stdout.readline().strip() == "ready"
        capture = subprocess.Popen(
            ["ip", "netns", "exec", client, "tcpdump", "-Z", "root", "-p", "-n", "-U", "-B", "262144", "-s",
             str(SNAPLEN), "-i", "c0", "-w", str(path), f"tcp port {PORT}"],
            stderr=subprocess.PIPE, text=True)
        processes.append(capture)
        while "listening" not in capture.stderr.readline():
            pass
        while not path.exists() or path.stat().st_size < packets * RECORD_BYTES:
            sh(sys.executable, "-c", CLIENT, SERVER_ADDRESS, str(PORT), str(PARALLEL),
               str(BYTES_PER_CONNECTION), netns=client)
        capture.send_signal(signal.SIGINT)
        capture.wait(timeout=30)
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for netns in (client, server):
            subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)
    return path, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=1_000_000, help="packets in the big capture")
    args = parser.parse_args()
    if os.geteuid():
        raise SystemExit("run as root: the benchmark makes network namespaces")
    folder = Path(tempfile.mkdtemp(prefix="mpsocks-bench-"))
    env = dict(os.environ, PYTHONPATH=str(collections_root()))
    try:
        big, making = make_capture(folder, args.packets)
        analyzer_out, analyzer_wall, analyzer_rss = measured([sys.executable, "-c", ANALYZER, str(big)], env)
        analyzer = json.loads(analyzer_out)
        frames = analyzer["frames"]
        small = folder / "small.pcap"
        subprocess.run(["editcap", "-r", str(big), str(small), f"1-{frames // 10}"], check=True,
                       capture_output=True)
        print(f"capture: {frames:,} packets of {analyzer['mptcp']} MPTCP connections, "
              f"{big.stat().st_size / 1e6:.0f} MB (snaplen {SNAPLEN}), made in {making:.0f} s; "
              f"the small one: its first {frames // 10:,}", flush=True)
        tshark_argv = ["tshark", "-n", "-r", str(big), "-Y", "tcp.flags.syn == 1", "-T", "fields"]
        for field in HANDSHAKE_FIELDS:
            tshark_argv += ["-e", field]
        tshark_out, tshark_wall, tshark_rss = measured(tshark_argv)
        small_out, small_wall, small_rss = measured([sys.executable, "-c", ANALYZER, str(small)], env)
        small_frames = json.loads(small_out)["frames"]

        syns = sorted([int(row[1]), int(row[5]), int(row[6]), int(row[7])]
                      for row in (line.split("\t") for line in tshark_out.splitlines()) if row[4] == "0")
        agree = syns == [[port, ttl, mss, wscale] for port, ttl, mss, wscale, _ in analyzer["syns"]]

        rows = [("analyzer", frames, analyzer_wall, analyzer_rss),
                ("tshark -T fields", frames, tshark_wall, tshark_rss),
                ("analyzer, 1/10 file", small_frames, small_wall, small_rss)]
        print(f"\n{'':22}{'packets':>11}{'seconds':>9}{'packets/s':>11}{'peak RSS':>10}")
        for name, count, seconds, rss in rows:
            print(f"{name:22}{count:>11,}{seconds:>9.1f}{count / seconds:>11,.0f}{rss:>8.1f}MB")
        speedup = tshark_wall / analyzer_wall
        growth = (analyzer_rss - small_rss) / small_rss * 100
        print(f"\nanalyzer vs tshark: {speedup:.1f}x faster (target >= 2x): "
              f"{'met' if speedup >= 2 else 'MISSED'}")
        rate = frames / analyzer_wall
        print(f"analyzer: {rate:,.0f} packets/s, {frames / analyzer['seconds']:,.0f} without interpreter "
              f"start-up (target >= 100,000): {'met' if rate >= 100_000 else 'MISSED'}")
        met = abs(growth) <= 10 and analyzer_rss < 100
        print(f"peak memory: {analyzer_rss:.1f} MB for the file, {small_rss:.1f} MB for a tenth of it, "
              f"{growth:+.1f} % (target within 10 %, under 100 MB): {'met' if met else 'MISSED'}")
        print(f"handshakes ({len(syns)} SYNs: port, TTL, MSS, window scale) as tshark's: "
              f"{'yes' if agree else 'NO'}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
