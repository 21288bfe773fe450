"""The lab end to end through ``mpsocks-run lab``: rates, TTLs, servers, middleboxes, idempotence, residue.

Every lab here has a unique name, so its namespaces (NAME-host, NAME-isp0 ...) cannot collide with
another run's; all traffic stays inside them.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns import visiting
from mpsocks_testlib import (
    assert_unchanged,
    changed_count,
    kill_tree,
    mpsocks_run,
    netns_names,
    run_module,
    runner_env,
    sh,
    snapshot,
    start_capture,
    stop_capture,
    unique_name,
)

CLIENT = Path(__file__).with_name("lab_client.py")
RUN_ROOT = Path("/run/mpsocks/lab")


def lab_namespaces(name):
    return {netns for netns in netns_names() if netns.startswith(f"{name}-")}


def fetch(netns, url, *args):
    """Run the test client inside NETNS; returns its JSON answer."""
    proc = subprocess.run(["ip", "netns", "exec", netns, sys.executable, str(CLIENT), url, *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


class Capture:
    """tcpdump on one interface of a namespace, read back with tshark (the reference dissector)."""

    def __init__(self, netns, interface, path, bpf="tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack)"):
        self.path = path
        self.proc = start_capture(interface, path, bpf, netns)

    def synacks(self):
        """[(ttl, mss, wscale shift, source)] of the SYN/ACKs captured."""
        stop_capture(self.proc)
        out = subprocess.run(
            ["tshark", "-r", str(self.path), "-Y", "tcp.flags.syn == 1 && tcp.flags.ack == 1", "-T", "fields",
             "-e", "ip.ttl", "-e", "tcp.options.mss_val", "-e", "tcp.options.wscale.shift", "-e", "ip.src"],
            capture_output=True, text=True, check=True).stdout
        return [tuple(int(v) if v.isdigit() else v for v in line.split("\t")) for line in out.splitlines()]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@contextlib.contextmanager
def running_lab(artifacts, *args):
    """A lab made by ``mpsocks-run lab up ARGS`` as (name, status, output); down restores the machine."""
    name = unique_name("t")
    before = snapshot()
    rc, output = mpsocks_run("lab", "up", "--name", name, *args, artifacts=artifacts)
    try:
        assert rc == 0, output
        rc, status = mpsocks_run("lab", "status", "--name", name, "--json", artifacts=None)
        assert rc == 0, status
        yield name, json.loads(status), output
    finally:
        rc, down = mpsocks_run("lab", "down", "--name", name, artifacts=artifacts)
        assert rc == 0, down
        assert not lab_namespaces(name)
        assert not (RUN_ROOT / name).exists()
        assert_unchanged(before)


@pytest.fixture(scope="module")
def lab(artifacts):
    """Two uplinks shaped to 20 and 5 Mbit/s, twelve hops, no middlebox."""
    with running_lab(artifacts, "--rates", "20,5") as made:
        yield made


@pytest.fixture(scope="module")
def middlebox_lab(artifacts):
    """Three uplinks: an optimizer on 0, an option stripper on 1, an MPTCP SYN dropper on 2; four hops."""
    with running_lab(artifacts, "--rates", "20,20,20", "--hops", "4", "--middlebox", "0=optimizer",
                     "--middlebox", "1=strip", "--middlebox", "2=drop-mptcp") as made:
        yield made


def test_status_describes_the_lab(lab):
    name, status, _ = lab
    assert status["up"] is True and status["host_netns"] == f"{name}-host"
    assert [(u["name"], u["rate_mbit"], u["middlebox"]) for u in status["uplinks"]] == [
        ("lab0", 20, "none"), ("lab1", 5, "none")]
    assert status["servers"] == {"check": "http://198.19.0.10/", "download": "http://198.19.0.11/",
                                 "plain": "http://198.19.0.12/"}
    assert len(status["namespaces"]) == 1 + 2 + 11 + 1
    assert all(status["processes_up"].values())


def test_second_up_and_its_check_mode_change_nothing(lab, artifacts):
    name, _, _ = lab
    rc, output = mpsocks_run("lab", "up", "--name", name, "--rates", "20,5", artifacts=artifacts)
    assert rc == 0 and changed_count(output, "localhost") == 0, output
    rc, output = mpsocks_run("--check", "lab", "up", "--name", name, "--rates", "20,5", artifacts=artifacts)
    assert rc == 0 and changed_count(output, "localhost") == 0, output


@pytest.mark.parametrize("index", [0, 1])
def test_plain_download_over_one_uplink_reaches_its_rate(lab, index):
    name, status, _ = lab
    uplink = status["uplinks"][index]
    size = int(uplink["rate_mbit"] * 1e6 / 8 * 4)  # about four seconds at the configured rate
    got = fetch(status["host_netns"], f"{status['servers']['download']}bytes/{size}",
                "--bind", uplink["address"].split("/")[0])
    assert got["status"] == 200 and got["length"] == size
    assert got["sha256"] == got["headers"]["x-content-sha256"]
    rate = got["length"] * 8 / got["seconds"] / 1e6
    print(f"uplink {index}: {rate:.2f} Mbit/s of {uplink['rate_mbit']} ({rate / uplink['rate_mbit']:.0%})")
    assert 0.85 * uplink["rate_mbit"] <= rate <= 1.0 * uplink["rate_mbit"]


def test_server_synack_ttl_carries_the_hops(lab, tmp_path):
    name, status, _ = lab
    capture = Capture(status["host_netns"], "lab0", tmp_path / "ttl.pcap")
    fetch(status["host_netns"], status["servers"]["check"], "--bind", "198.18.0.2")
    synacks = capture.synacks()
    print(f"SYN/ACKs at the host: {synacks}")
    assert [s[0] for s in synacks] == [64 - status["hops"]] == [52]


def test_check_server_tells_mptcp_from_plain(lab):
    name, status, _ = lab
    host, check, plain = status["host_netns"], status["servers"]["check"], status["servers"]["plain"]
    mptcp = json.loads(fetch(host, check + "?format=json", "--mptcp")["body"])
    assert mptcp["mptcp"] is True and mptcp["subflows"] == 2, mptcp  # the lab host has a subflow endpoint
    assert mptcp["client"].startswith("198.18.0.2:")
    assert json.loads(fetch(host, check + "?format=json")["body"])["mptcp"] is False
    refused = fetch(host, plain + "?format=json", "--mptcp")
    assert json.loads(refused["body"])["mptcp"] is False and refused["mptcp"] is False
    text = fetch(host, check, "--mptcp")["body"]
    assert "MPTCP" in text and text.endswith("\n")


def dns_query(netns, name, server="198.19.0.53"):
    """(rcode, [A record addresses]) of one UDP query for NAME to SERVER, sent from NETNS."""
    with visiting(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(3)
        question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
        sock.sendto(struct.pack("!6H", 0x4D50, 0x0100, 1, 0, 0, 0) + question + struct.pack("!2H", 1, 1),
                    (server, 53))
        answer = sock.recv(4096)
    ident, flags, _questions, count, _authority, _additional = struct.unpack_from("!6H", answer)
    assert ident == 0x4D50 and flags & 0x8000, "not an answer to our query"
    offset, addresses = 12 + len(question) + 4, []
    for _ in range(count):
        offset += 2 if answer[offset] & 0xC0 else answer.index(b"\0", offset) + 1 - offset
        kind, _klass, _ttl, length = struct.unpack_from("!HHIH", answer, offset)
        offset += 10
        if kind == 1:
            addresses.append(socket.inet_ntoa(answer[offset:offset + length]))
        offset += length
    return flags & 0xF, addresses


@pytest.fixture(scope="module")
def lab_resolver(lab):
    """The lab host's resolv.conf (what ip netns exec mounts over /etc/resolv.conf): the lab's DNS server."""
    name, status, _ = lab
    etc = Path("/etc/netns") / status["host_netns"]
    etc.mkdir(parents=True)
    try:
        (etc / "resolv.conf").write_text(f"nameserver {status['dns']['address']}\n")
        yield status["host_netns"]
    finally:
        shutil.rmtree(etc)


def test_status_lists_the_lab_names(lab):
    _, status, _ = lab
    assert status["dns"] == {"address": "198.19.0.53", "domain": "lab.test", "names": {
        "check.lab.test": "198.19.0.10", "dns.lab.test": "198.19.0.53", "download.lab.test": "198.19.0.11",
        "plain.lab.test": "198.19.0.12"}}
    assert status["processes_up"]["dns"] is True
    rc, text = mpsocks_run("lab", "status", "--name", status["name"], artifacts=None)
    assert rc == 0, text
    assert "dns         198.19.0.53 (dnsmasq, in " in text and "  check.lab.test     198.19.0.10" in text


def test_status_probes_reality_and_names_what_is_broken(artifacts):
    """A link set down and a server killed behind mpsocks' back: status says which, with exit status 7
    (degraded), in text and JSON; lab up repairs it."""
    with running_lab(artifacts, "--hops", "3") as (name, status, _):
        assert status["state"] == "up" and status["schema_version"] == 1, status
        assert {check["kind"] for check in status["checks"]} == {"link", "hop", "process", "server"}
        assert all(check["ok"] for check in status["checks"]), status["checks"]
        assert {(link["netns"], link["interface"], link["up"]) for link in status["links"]} >= {
            (f"{name}-host", "lab0", True), (f"{name}-r2", "next", True)}
        assert not {"tables", "shapers", "mptcp_endpoints", "optimizer", "daemons"} & set(status)
        sh("ip", "link", "set", "next", "down", netns=f"{name}-r2")
        pid = int((RUN_ROOT / name / "plain.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        rc, text = mpsocks_run("lab", "status", "--name", name, artifacts=None)
        assert rc == 7 and text.startswith(f"lab {name}: DEGRADED ("), text
        assert f"FAIL {name}-r2:next - {name}-net:prev: {name}-r2:next is DOWN" in text, text
        assert f"FAIL {name}-net: 198.18.130.2 does not answer {name}-r2" in text, text
        assert "FAIL plain: not running (log: " in text and "FAIL check: http://198.19.0.10/" in text, text
        rc, text = mpsocks_run("lab", "status", "--name", name, "--json", artifacts=None)
        report = json.loads(text)
        assert rc == 7 and report["state"] == "degraded" and report["up"] is False
        failing = {(check["kind"], check["name"]) for check in report["checks"] if not check["ok"]}
        assert failing == {("link", f"{name}-r2:next - {name}-net:prev"), ("hop", f"{name}-net"),
                           ("process", "plain"), ("server", "check"), ("server", "download"),
                           ("server", "plain"), ("server", "dns")}
        rc, text = mpsocks_run("lab", "status", "--all", artifacts=None)
        assert rc == 7 and re.search(rf"^{name} +degraded ", text, re.M), text
        rc, output = mpsocks_run("lab", "up", "--name", name, "--hops", "3", artifacts=artifacts)
        assert rc == 0 and changed_count(output, "localhost") > 0, output
        rc, text = mpsocks_run("lab", "status", "--name", name, artifacts=None)
        assert rc == 0 and text.startswith(f"lab {name}: up"), text
    kept = sorted(artifacts.glob(f"*-lab-down-{name}"))[-1] / "kept"  # lab down kept the servers' logs
    assert {"check.log", "download.log", "plain.log", "dns.log"} <= {path.name for path in kept.iterdir()}


def test_exec_runs_in_a_node_through_mptcpize_if_asked(lab):
    name, status, _ = lab
    check = status["servers"]["check"]
    rc, text = mpsocks_run("lab", "exec", "--name", name, "host", "--mptcp", "--", "curl", "-s", check,
                           artifacts=None)
    assert rc == 0 and "You are using MPTCP with 2 subflows" in text, text
    rc, text = mpsocks_run("lab", "exec", "--name", name, "r3", "--", "sh", "-c", "ip -br addr; exit 7",
                           artifacts=None)
    assert rc == 7 and "198.18.131.1/24" in text, text  # the command's exit status, in router 3
    rc, text = mpsocks_run("lab", "exec", "--name", name, "r99", "--", "true", artifacts=None)
    assert rc == 5 and f"lab {name} has no node 'r99' (its nodes: host, isp0, isp1, r1," in text, text


def test_the_lab_inventory_reaches_every_namespace(lab, tmp_path):
    """The inventory lab status names, for a lab whose name is not the default, with ansible as written
    in the status line."""
    name, status, _ = lab
    assert status["inventory"] == str(RUN_ROOT / name / "inventory.yml")
    rc, text = mpsocks_run("lab", "status", "--name", name, artifacts=None)
    assert f"inventory   {status['inventory']} (ansible -i it lab_routers -m ping)" in text, text
    ansible = Path(sys.executable).with_name("ansible")
    proc = subprocess.run([str(ansible), "-i", status["inventory"], "all", "-m", "ping"], capture_output=True,
                          text=True, env=dict(runner_env(), HOME=str(tmp_path)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(re.findall(r"^(\S+) \| SUCCESS", proc.stdout, re.M)) == sorted(status["namespaces"])


def test_graph_draws_every_namespace_and_link(lab, tmp_path):
    name, status, _ = lab
    plan = json.loads((RUN_ROOT / name / "lab.json").read_text())
    rc, mermaid = mpsocks_run("lab", "graph", "--name", name, artifacts=None)
    assert rc == 0, mermaid
    ids = dict(re.findall(r'^  (n\d+)\["([^<]+)<br/>', mermaid, re.M))
    assert sorted(ids.values()) == sorted(status["namespaces"])
    edges = {(ids[a], ids[b]) for a, b in re.findall(r"^  (n\d+) ---\|.*\| (n\d+)$", mermaid, re.M)}
    assert edges == {(link["netns"], link["peer_netns"]) for link in plan["links"]}
    rc, text = mpsocks_run("lab", "graph", "--name", name, "--format", "png", "-o", str(tmp_path / "lab.png"),
                           artifacts=None)
    assert rc == 0, text
    assert (tmp_path / "lab.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lab_dns_answers_its_names_and_nothing_else(lab, lab_resolver):
    _, status, _ = lab
    host = status["host_netns"]
    for name, address in status["dns"]["names"].items():
        assert dns_query(host, name) == (0, [address]), name
        resolved = subprocess.run(["ip", "netns", "exec", host, "getent", "ahostsv4", name],
                                  capture_output=True, text=True, check=True).stdout.split()[0]
        assert resolved == address, name
    assert dns_query(host, "nothere.lab.test") == (3, [])  # NXDOMAIN: the lab's domain is the server's own
    assert dns_query(host, "example.com") == (5, [])  # REFUSED: no upstream, nothing leaves the lab
    got = fetch(host, "http://check.lab.test/?format=json", "--mptcp")
    assert json.loads(got["body"])["mptcp"] is True


def test_a_socks_proxy_resolves_lab_names(lab, lab_resolver, tmp_path):
    """curl --socks5-hostname and the mptcp_check module, through a dante (mptcpize run) on the lab host."""
    _, status, _ = lab
    host = status["host_netns"]
    conf = tmp_path / "danted.conf"
    conf.write_text("logoutput: stderr\ninternal: 127.0.0.1 port = 1080\nexternal: 198.18.0.2\n"
                    "socksmethod: none\nclientmethod: none\n"
                    "user.privileged: root\nuser.unprivileged: nobody\n"
                    "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }\n"
                    "socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }\n")
    dante = subprocess.Popen(["ip", "netns", "exec", host, "mptcpize", "run", "danted", "-f", str(conf)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while "127.0.0.1:1080 " not in subprocess.run(["ip", "netns", "exec", host, "ss", "-Hltn"],
                                                      capture_output=True, text=True).stdout:
            assert dante.poll() is None and time.monotonic() < deadline, "dante did not start"
            time.sleep(0.1)
        curl = subprocess.run(["ip", "netns", "exec", host, "curl", "-sS", "--socks5-hostname",
                               "127.0.0.1:1080", "http://check.lab.test/?format=json"],
                              capture_output=True, text=True, timeout=30)
        assert curl.returncode == 0, curl.stderr
        seen = json.loads(curl.stdout)
        assert (seen["mptcp"], seen["subflows"]) == (True, 2) and seen["client"].startswith("198.18.0.2:")
        result = run_module("mptcp_check", inside=host, url="http://check.lab.test/?format=json",
                            proxy="127.0.0.1:1080", uplinks=["lab0", "lab1"])
        print(f"mptcp_check through the lab host's dante: {result.get('msg') or result['answer']}")
        assert not result.get("failed") and (result["mptcp"], result["subflows"]) == (True, 2), result
        subflows = result["kernel"]["subflows"]
        assert [(s["interface"], s["uplink"]) for s in subflows] == [("lab0", 0), ("lab1", 1)]
    finally:
        os.killpg(dante.pid, signal.SIGKILL)
        dante.wait()


def test_optimizer_terminates_plain_tcp_only(middlebox_lab, tmp_path):
    name, status, _ = middlebox_lab
    host, check = status["host_netns"], status["servers"]["check"]
    plain_capture = Capture(host, "lab0", tmp_path / "plain.pcap")
    plain = json.loads(fetch(host, check + "?format=json", "--bind", "198.18.0.2")["body"])
    (ttl, mss, wscale, source), = plain_capture.synacks()
    print(f"optimizer, plain TCP: SYN/ACK ttl {ttl} mss {mss} wscale {wscale} from {source}; "
          f"server saw {plain}")
    optimizer = status["optimizer"]
    assert (ttl, mss, wscale) == (128, optimizer["mss"], optimizer["wscale"])  # the ISP is adjacent: 128 - 0
    assert plain["client"].startswith("198.18.64.2:"), "the ISP re-originated the connection"

    mptcp_capture = Capture(host, "lab0", tmp_path / "mptcp.pcap")
    mptcp = json.loads(fetch(host, check + "?format=json", "--bind", "198.18.0.2", "--mptcp")["body"])
    first = mptcp_capture.synacks()[0]
    print(f"optimizer, MPTCP: SYN/ACK {first}; server saw {mptcp}")
    assert first[0] == 64 - status["hops"] == 60
    assert first[1] != status["optimizer"]["mss"] and first[2] != wscale
    assert mptcp["mptcp"] is True and mptcp["client"].startswith("198.18.0.2:")


def test_strip_makes_mptcp_fall_back(middlebox_lab):
    name, status, _ = middlebox_lab
    got = fetch(status["host_netns"], status["servers"]["check"] + "?format=json", "--bind", "198.18.1.2",
                "--mptcp")
    assert json.loads(got["body"])["mptcp"] is False and got["mptcp"] is False


def test_drop_mptcp_connects_after_fallback(middlebox_lab):
    name, status, _ = middlebox_lab
    got = fetch(status["host_netns"], status["servers"]["check"] + "?format=json", "--bind", "198.18.2.2",
                "--mptcp")
    print(f"drop-mptcp: connected after {got['connect_seconds']:.1f} s without MPTCP")
    assert got["status"] == 200 and json.loads(got["body"])["mptcp"] is False
    assert got["connect_seconds"] > 0.9, "the MPTCP SYNs were dropped before the plain one went through"


def test_down_is_a_no_op_when_nothing_is_up(artifacts):
    before = snapshot()
    rc, output = mpsocks_run("lab", "down", "--name", unique_name("t"), artifacts=artifacts)
    assert rc == 0 and changed_count(output, "localhost") == 0, output
    assert_unchanged(before)


def test_check_mode_builds_nothing(artifacts):
    name = unique_name("t")
    before = snapshot()
    rc, output = mpsocks_run("--check", "lab", "up", "--name", name, "--hops", "2", artifacts=artifacts)
    assert rc == 0 and changed_count(output, "localhost") > 0, output
    assert not lab_namespaces(name) and not (RUN_ROOT / name).exists()
    assert_unchanged(before)


def test_bad_input_is_one_line_and_changes_nothing(artifacts):
    before = snapshot()
    for args, needle in ((["--rates", "20,fast"], "'fast' is not a rate"),
                         (["--middlebox", "2=optimizer"], "--middlebox: there is no uplink 2"),
                         (["--middlebox", "0=firewall"], "'0=firewall' is not UPLINK=KIND"),
                         (["--hops", "0"], "hops: 0 is outside 1..40"),
                         (["--optimizer-rate", "5"], "--optimizer-rate: no uplink has")):
        rc, output = mpsocks_run("lab", "up", "--name", unique_name("t"), *args, artifacts=artifacts)
        assert rc == 5 and needle in output and len(output.strip().splitlines()) == 1, output
    assert_unchanged(before)


def test_killed_up_then_down_leaves_the_machine_as_before(artifacts):
    name = unique_name("t")
    before = snapshot()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mpsocks", "lab", "up", "--name", name, "--middlebox", "1=optimizer",
         "--artifacts-dir", str(artifacts)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=runner_env(), start_new_session=True)
    try:
        seen, deadline = "", time.monotonic() + 300
        while not re.search(r"(changed|ok)\s+\[localhost\] mpsocks.mptcp.lab : Routes", seen):
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, seen
            seen += line
    finally:
        kill_tree(proc.pid)  # kill -9 of the runner and of everything it started, mid-play
        proc.wait(timeout=30)
        rc, output = mpsocks_run("lab", "down", "--name", name, artifacts=artifacts)
    assert "changed     [localhost] mpsocks.mptcp.lab : Remove the lab's namespaces" in output, output
    assert rc == 0, output
    assert not lab_namespaces(name) and not (RUN_ROOT / name).exists()
    assert_unchanged(before)
    leftovers = subprocess.run(["pgrep", "-f", f"{RUN_ROOT}/{name}/"], capture_output=True, text=True).stdout
    assert not leftovers.strip(), "processes of the killed lab are still there"


def test_lab_in_the_root_namespace_adds_only_its_own_objects(tmp_path):
    """Uplinks in the current namespace (the libvirt case): only lab links, rules and tables appear."""
    import fcntl  # one root-namespace lab per machine at a time: two would hold the same addresses

    from mpsocks_testlib import REPO, ansible_playbook

    with open("/run/lock/mpsocks-root-lab.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        name = unique_name("t")
        prefix = f"{name[:8]}u"
        settings = {"mpsocks_lab_name": name, "mpsocks_lab_host_netns": False, "mpsocks_lab_hops": 2,
                    "mpsocks_lab_uplink_prefix": prefix, "mpsocks_lab_table_base": 6680}
        before = snapshot()
        playbook, inventory = REPO / "playbooks" / "lab.yml", REPO / "inventory" / "localhost.yml"
        try:
            rc, output, recap = ansible_playbook(playbook, inventory, extravars=settings)
            assert rc == 0, output
            links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
            assert f"{prefix}0@" in links and f"{prefix}1@" in links
            rules = subprocess.run(["ip", "rule"], capture_output=True, text=True).stdout
            assert "to 198.18.0.0/15 lookup 6688" in rules and "from 198.18.1.2 lookup 6681" in rules
            got = fetch_here("http://198.19.0.10/?format=json")
            assert got["client"].startswith("198.18.0.2:")
            rc, output, recap = ansible_playbook(playbook, inventory, extravars=settings)
            assert rc == 0 and recap["localhost"]["changed"] == 0, output
            # Issue 7 #7: a change of mode (which may fail half way) must not hide root rules from down.
            ansible_playbook(playbook, inventory, extravars=dict(settings, mpsocks_lab_host_netns=True))
        finally:
            rc, output, recap = ansible_playbook(playbook, inventory,
                                                 extravars=dict(settings, mpsocks_lab_state="absent"))
            assert rc == 0, output
        assert_unchanged(before)
        assert not lab_namespaces(name)


def fetch_here(url):
    """The test client in the current namespace."""
    proc = subprocess.run([sys.executable, str(CLIENT), url], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    return json.loads(json.loads(proc.stdout)["body"])


def test_optimizer_rate_makes_plain_tcp_faster_then_reconfigure(artifacts, tmp_path):
    """The seed's "faster without MPTCP": terminated flows get a rate of their own. Then no optimizer:
    refused as a silent reshape, done from a topology file with --reconfigure, which then changes nothing."""
    lab_args = ("--rates", "5", "--hops", "2")
    optimizer = ("--middlebox", "0=optimizer", "--optimizer-rate", "20")
    with running_lab(artifacts, *lab_args, *optimizer) as (name, status, _):
        host, download = status["host_netns"], status["servers"]["download"]
        plain = fetch(host, f"{download}bytes/{20 * 10**6 // 8 * 3}")
        mptcp = fetch(host, f"{download}bytes/{5 * 10**6 // 8 * 3}", "--mptcp")
        plain_rate, mptcp_rate = (got["length"] * 8 / got["seconds"] / 1e6 for got in (plain, mptcp))
        print(f"optimizer at 20 Mbit/s on a 5 Mbit/s uplink: plain TCP {plain_rate:.2f} Mbit/s, "
              f"MPTCP {mptcp_rate:.2f} Mbit/s")
        assert mptcp["mptcp"] and 0.85 * 5 <= mptcp_rate <= 5
        assert 0.85 * 20 <= plain_rate <= 20

        before = snapshot(status["uplinks"][0]["isp_netns"])
        rc, output = mpsocks_run("lab", "up", "--name", name, *lab_args, artifacts=artifacts)
        refused = (f"lab {name} is up with another shape (uplink 0 middlebox optimizer, not none; "
                   "uplink 0 optimizer_rate_mbit 20, not unset): give --reconfigure")
        assert rc == 5 and refused in output, output
        assert_unchanged(before, status["uplinks"][0]["isp_netns"])
        topology = tmp_path / "plain.yml"
        topology.write_text(f"name: {name}\nhops: 2\nuplinks: [5]\n")
        rc, output = mpsocks_run("lab", "up", "-t", str(topology), artifacts=artifacts)
        assert rc == 5 and refused in output, output  # a file is no licence to reshape either
        assert_unchanged(before, status["uplinks"][0]["isp_netns"])
        rc, output = mpsocks_run("lab", "up", "-t", str(topology), "--reconfigure", artifacts=artifacts)
        assert rc == 0 and changed_count(output, "localhost") > 0, output
        isp = status["uplinks"][0]["isp_netns"]
        assert "mpsocks_lab" not in subprocess.run(["ip", "netns", "exec", isp, "nft", "list", "tables"],
                                                   capture_output=True, text=True, check=True).stdout
        rc, status_text = mpsocks_run("lab", "status", "--name", name, artifacts=None)
        assert rc == 0 and "middlebox none" in status_text and "optimizer" not in status_text, status_text
        assert not (RUN_ROOT / name / "optimizer-isp0.pid").exists()
        for same in (("-t", str(topology)), ("--name", name, *lab_args)):  # the file, or the same as flags
            rc, output = mpsocks_run("lab", "up", *same, artifacts=artifacts)
            assert rc == 0 and changed_count(output, "localhost") == 0, output


def test_down_touches_only_the_namespaces_the_lab_made(artifacts):
    """Issue 7 #1: a user's namespaces named like the lab's survive lab down, with their processes."""
    name = unique_name("t")
    yours = [f"{name}-netbob", f"{name}-host", f"{name}-r3"]  # a lookalike, and two exact plan names
    keepers = []
    try:
        for netns in yours:
            subprocess.run(["ip", "netns", "add", netns], check=True)
            keepers.append(subprocess.Popen(["ip", "netns", "exec", netns, "sleep", "1000"]))
        time.sleep(0.2)
        before = snapshot()
        rc, output = mpsocks_run("lab", "down", "--name", name, artifacts=artifacts)
        assert rc == 0 and changed_count(output, "localhost") == 0, output
        assert lab_namespaces(name) == set(yours) and all(p.poll() is None for p in keepers)
        rc, output = mpsocks_run("lab", "up", "--name", name, "--hops", "2", artifacts=artifacts)
        assert rc != 0 and f"namespace '{name}-host' exists but was not made by mpsocks" in output, output
        rc, output = mpsocks_run("lab", "down", "--name", name, artifacts=artifacts)
        assert rc == 0, output
        assert lab_namespaces(name) == set(yours) and all(p.poll() is None for p in keepers)
        assert_unchanged(before)
    finally:
        for keeper in keepers:
            keeper.kill()
        for netns in yours:
            subprocess.run(["ip", "netns", "del", netns], check=False)
