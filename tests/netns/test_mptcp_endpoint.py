"""mpsocks.mptcp.mptcp_endpoint against the kernel's path manager in fresh namespaces."""

import json
import subprocess
import sys

from mpsocks_testlib import assert_unchanged, run_item, run_module, sh, snapshot, unique_name


def endpoints(netns):
    """The endpoints as iproute2 (not the module) shows them, keyed by address."""
    return {e["address"]: e for e in json.loads(sh("ip", "-j", "mptcp", "endpoint", "show", netns=netns))}


def add_veth(netns, name, address):
    """A veth pair NAME/NAMEp inside NETNS, NAME holding ADDRESS/24 (links stay down)."""
    sh("ip", "link", "add", name, "type", "veth", "peer", "name", name + "p", netns=netns)
    sh("ip", "addr", "add", address + "/24", "dev", name, netns=netns)


def test_create_read_back_idempotent_and_remove(netns):
    add_veth(netns, "up1", "10.199.1.2")
    before = snapshot(netns)
    args = dict(address="10.199.1.2", dev="up1", flags=["subflow"], netns=netns)

    predicted = run_item("mptcp_endpoint", check=True, **args)
    assert predicted["changed"] is True
    assert_unchanged(before, netns)

    created = run_item("mptcp_endpoint", **args)
    assert created["changed"] is True
    assert created["mptcp_endpoint"] == predicted["mptcp_endpoint"] == {
        "address": "10.199.1.2", "id": 1, "dev": "up1", "port": None, "flags": ["subflow"], "netns": netns}
    # The kernel really holds the device binding (pyroute2 0.9.7 dropped it).
    assert endpoints(netns) == {
        "10.199.1.2": {"address": "10.199.1.2", "id": 1, "subflow": True, "dev": "up1"}}

    assert run_item("mptcp_endpoint", **args)["changed"] is False
    assert run_item("mptcp_endpoint", check=True, **args)["changed"] is False

    absent = dict(address="10.199.1.2", state="absent", netns=netns)
    predicted = run_item("mptcp_endpoint", check=True, **absent)
    assert predicted["changed"] is True and predicted["mptcp_endpoint"] == {}
    assert "10.199.1.2" in endpoints(netns)
    removed = run_item("mptcp_endpoint", **absent)
    assert removed["changed"] is True and removed["mptcp_endpoint"] == {}
    assert removed["diff"]["before"]["dev"] == "up1"
    assert run_item("mptcp_endpoint", **absent)["changed"] is False
    assert_unchanged(before, netns)


def test_change_flags_dev_and_port(netns):
    add_veth(netns, "up0", "10.199.0.2")
    add_veth(netns, "up1", "10.199.1.2")
    run_item("mptcp_endpoint", address="10.199.1.2", dev="up1", flags=["subflow"], id=5, netns=netns)

    # backup alone: changed in place (SET_FLAGS), id and dev kept.
    change = dict(address="10.199.1.2", dev="up1", flags=["subflow", "backup"], netns=netns)
    predicted = run_item("mptcp_endpoint", check=True, **change)
    assert predicted["diff"]["before"]["flags"] == ["subflow"]
    changed = run_item("mptcp_endpoint", **change)
    assert changed["changed"] is True and changed["mptcp_endpoint"] == predicted["mptcp_endpoint"]
    assert endpoints(netns)["10.199.1.2"] == {
        "address": "10.199.1.2", "id": 5, "subflow": True, "backup": True, "dev": "up1"}

    # fullmesh on, backup off: in place too.
    change["flags"] = ["fullmesh", "subflow"]
    assert run_item("mptcp_endpoint", **change)["mptcp_endpoint"]["flags"] == ["fullmesh", "subflow"]
    assert endpoints(netns)["10.199.1.2"] == {
        "address": "10.199.1.2", "id": 5, "subflow": True, "fullmesh": True, "dev": "up1"}

    # Another dev, then signal with a port and no dev: replaced, id still kept.
    change = dict(address="10.199.1.2", dev="up0", flags=["subflow"], netns=netns)
    predicted = run_item("mptcp_endpoint", check=True, **change)
    assert run_item("mptcp_endpoint", **change)["mptcp_endpoint"] == predicted["mptcp_endpoint"]
    assert endpoints(netns)["10.199.1.2"] == {"address": "10.199.1.2", "id": 5, "subflow": True, "dev": "up0"}

    change = dict(address="10.199.1.2", flags=["signal"], port=8443, netns=netns)
    predicted = run_item("mptcp_endpoint", check=True, **change)
    changed = run_item("mptcp_endpoint", **change)
    assert changed["mptcp_endpoint"] == predicted["mptcp_endpoint"] == {
        "address": "10.199.1.2", "id": 5, "dev": None, "port": 8443, "flags": ["signal"], "netns": netns}
    assert endpoints(netns)["10.199.1.2"] == {"address": "10.199.1.2", "port": 8443, "id": 5, "signal": True}
    assert run_item("mptcp_endpoint", **change)["changed"] is False

    # No flags at all is an endpoint too (an id for the address).
    bare = run_item("mptcp_endpoint", address="10.199.1.2", netns=netns)
    assert bare["mptcp_endpoint"]["flags"] == [] and bare["mptcp_endpoint"]["port"] is None
    assert endpoints(netns)["10.199.1.2"] == {"address": "10.199.1.2", "id": 5}


def test_id_handling(netns):
    first = run_item("mptcp_endpoint", address="10.199.0.2", flags=["subflow"], netns=netns)
    assert first["mptcp_endpoint"]["id"] == 1
    assert run_item("mptcp_endpoint", address="10.199.1.2", id=3, flags=["subflow"],
                      netns=netns)["mptcp_endpoint"]["id"] == 3
    # Omitted: the lowest free id, predicted exactly by check mode.
    predicted = run_item("mptcp_endpoint", check=True, address="fd66::2", flags=["subflow"], netns=netns)
    made = run_item("mptcp_endpoint", address="fd66::2", flags=["subflow"], netns=netns)
    assert made["mptcp_endpoint"] == predicted["mptcp_endpoint"]
    assert made["mptcp_endpoint"]["id"] == 2
    assert endpoints(netns)["fd66::2"]["id"] == 2
    # An existing endpoint keeps its id when id is left out; giving it moves it.
    kept = run_item("mptcp_endpoint", address="10.199.1.2", flags=["subflow"], netns=netns)
    assert kept["changed"] is False
    moved = run_item("mptcp_endpoint", address="10.199.1.2", id=9, flags=["subflow"], netns=netns)
    assert moved["diff"]["before"]["id"] == 3 and moved["mptcp_endpoint"]["id"] == 9
    ids = {address: e["id"] for address, e in endpoints(netns).items()}
    assert ids == {"10.199.0.2": 1, "10.199.1.2": 9, "fd66::2": 2}

    # An endpoint made by iproute2 (the kernel picked its id) is adopted as it is.
    sh("ip", "mptcp", "endpoint", "add", "10.199.2.2", "subflow", netns=netns)
    kernel_id = endpoints(netns)["10.199.2.2"]["id"]
    adopted = run_item("mptcp_endpoint", address="10.199.2.2", flags=["subflow"], netns=netns)
    assert adopted["changed"] is False and adopted["mptcp_endpoint"]["id"] == kernel_id


def test_bad_input_fails_with_one_line_and_changes_nothing(netns):
    add_veth(netns, "up0", "10.199.0.2")
    run_item("mptcp_endpoint", address="10.199.0.2", id=4, flags=["subflow"], netns=netns)
    before = snapshot(netns)
    cases = [
        ("address", dict(address="10.199.0.300")),
        ("address", dict(address="10.199.0.0/24")),
        ("dev", dict(address="10.199.1.2", dev="nosuchdev0")),
        ("dev", dict(address="10.199.1.2", dev="a-name-much-too-long")),
        ("signal and fullmesh", dict(address="10.199.1.2", flags=["signal", "fullmesh"])),
        ("flags", dict(address="10.199.1.2", flags=["subflow", "bogus"])),
        ("id", dict(address="10.199.1.2", id=0)),
        ("id", dict(address="10.199.1.2", id=256)),
        ("port", dict(address="10.199.1.2", port=8443, flags=["subflow"])),
        ("port", dict(address="10.199.1.2", port=70000, flags=["signal"])),
        ("id: 4 is already used by the endpoint for 10.199.0.2", dict(address="10.199.1.2", id=4)),
        # Also when it is a change of an existing endpoint.
        ("signal and fullmesh", dict(address="10.199.0.2", flags=["signal", "fullmesh"])),
    ]
    for needle, args in cases:
        result = run_item("mptcp_endpoint", netns=netns, **args)
        assert result.get("failed"), args
        assert "\n" not in result["msg"] and "Traceback" not in result["msg"], result["msg"]
        assert needle in result["msg"], (needle, result["msg"])
    assert_unchanged(before, netns)


def test_kernel_refusal_mid_replace_puts_the_endpoint_back(netns):
    run_item("mptcp_endpoint", address="10.199.4.2", id=7, flags=["subflow", "backup"], netns=netns)
    before = snapshot(netns)
    # A signal port needs a local address (the kernel listens there); 10.199.4.2 is not one,
    # so the add after the delete fails and the old endpoint must come back.
    result = run_item("mptcp_endpoint", address="10.199.4.2", flags=["signal"], port=8443, netns=netns)
    assert result["failed"] and "\n" not in result["msg"]
    expected = f"adding mptcp endpoint 10.199.4.2 in netns {netns}: the kernel refused:"
    assert result["msg"].startswith(expected), result["msg"]
    assert_unchanged(before, netns)


def test_several_endpoints_for_one_address_are_refused(netns):
    add_veth(netns, "up3", "10.199.3.2")  # the kernel listens on a signal endpoint's port
    for port in ("8443", "8444"):
        sh("ip", "mptcp", "endpoint", "add", "10.199.3.2", "port", port, "signal", netns=netns)
    before = snapshot(netns)
    for state in ("present", "absent"):
        result = run_item("mptcp_endpoint", address="10.199.3.2", state=state, netns=netns)
        assert result["failed"] and result["msg"].startswith("address: the kernel holds 2 endpoints")
    assert_unchanged(before, netns)


def test_endpoints_in_two_namespaces_in_one_call(netns):
    other = unique_name("mpst")
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:
        for ns in (netns, other):
            add_veth(ns, "up1", "10.199.1.2")
            add_veth(ns, "up2", "10.199.2.2")
        sh("ip", "mptcp", "endpoint", "add", "10.199.9.2", "id", "2", "subflow", netns=other)  # taken: id 2
        config = [
            {"netns": netns, "address": "10.199.1.2", "dev": "up1", "flags": ["subflow"]},
            {"netns": netns, "address": "10.199.2.2", "dev": "up2", "flags": ["subflow", "backup"]},
            {"netns": other, "address": "10.199.1.2", "dev": "up1", "flags": ["subflow"]},
            {"netns": other, "address": "10.199.2.2", "flags": ["signal"]},
            {"netns": other, "address": "10.199.9.2", "state": "absent"},
            {"netns": other, "address": "fd66::2", "flags": ["subflow"]},
        ]
        before = {ns: snapshot(ns) for ns in (netns, other)}
        predicted = run_module("mptcp_endpoint", check=True, config=config)
        assert predicted["changed"] is True
        for ns, state in before.items():
            assert_unchanged(state, ns)
        # Check mode predicts the ids the kernel will hold: each item's lowest free id counts the
        # earlier items' (1, 2 here; 1, 3, then 2 once 10.199.9.2 has gone, there).
        assert [r["mptcp_endpoint"].get("id") for r in predicted["results"]] == [1, 2, 1, 3, None, 2]

        done = run_module("mptcp_endpoint", config=config)
        assert done["changed"] is True and not done.get("failed"), done.get("msg")
        assert [r["mptcp_endpoint"] for r in done["results"]] == [
            r["mptcp_endpoint"] for r in predicted["results"]]
        assert {a: (e["id"], e.get("dev")) for a, e in endpoints(netns).items()} == {
            "10.199.1.2": (1, "up1"), "10.199.2.2": (2, "up2")}
        assert {a: (e["id"], e.get("dev")) for a, e in endpoints(other).items()} == {
            "10.199.1.2": (1, "up1"), "10.199.2.2": (3, None), "fd66::2": (2, None)}
        assert run_module("mptcp_endpoint", config=config)["changed"] is False
        fed_back = run_module("mptcp_endpoint", config=[r["mptcp_endpoint"] for r in done["results"] if
                                                        r["mptcp_endpoint"]])
        assert fed_back["changed"] is False and not fed_back.get("failed"), fed_back.get("msg")

        # A bad item in the middle: refused, naming it, and nothing changes in either namespace.
        state = {ns: snapshot(ns) for ns in (netns, other)}
        changes = [dict(item, flags=["subflow", "fullmesh"]) for item in config[:3]]
        after = [dict(config[5], flags=["subflow", "backup"])]
        for bad, needle in (
                (dict(config[3], dev="nosuch0"), "dev: interface 'nosuch0' does not exist"),
                (dict(config[3], dev="up1\n"), "dev: 'up1\\n' is not a valid interface name"),
                (dict(config[3], flags=["signal", "fullmesh"]), "flags: signal and fullmesh cannot be")):
            for check in (True, False):
                result = run_module("mptcp_endpoint", check=check, config=changes + [bad] + after)
                assert result["failed"] and result["msg"].startswith(
                    f"config[3] (mptcp endpoint 10.199.2.2 in netns {other}): {needle}"), result["msg"]
                assert "\n" not in result["msg"]
        for ns, snap in state.items():
            assert_unchanged(snap, ns)

        gone = run_module("mptcp_endpoint", state="absent", config=[
            {"netns": item["netns"], "address": item["address"]} for item in config])
        assert gone["changed"] is True
        assert endpoints(netns) == {} and endpoints(other) == {}
    finally:
        subprocess.run(["ip", "netns", "del", other], check=False)


# The client: connect over MPTCP, wait (bounded) for the extra subflows the path
# manager opens, print mptcpi_subflows, then hold the connection until stdin closes.
# struct mptcp_info (linux/mptcp.h) begins with __u8 mptcpi_subflows: the number
# of subflows beyond the first.
CLIENT = r"""
import socket, sys, time
IPPROTO_MPTCP, SOL_MPTCP, MPTCP_INFO = 262, 284, 1
host, port, want, wait = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
sock.settimeout(5)
sock.connect((host, port))
sock.sendall(b"hello")
deadline = time.monotonic() + wait
while True:
    subflows = sock.getsockopt(SOL_MPTCP, MPTCP_INFO, 64)[0]
    if subflows >= want or time.monotonic() > deadline:
        break
    time.sleep(0.05)
print(subflows, flush=True)
sys.stdin.read()
"""

SERVER = r"""
import socket, sys
IPPROTO_MPTCP = 262
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind((sys.argv[1], int(sys.argv[2])))
sock.listen(4)
sock.settimeout(20)
print("ready", flush=True)
while True:
    conn, _ = sock.accept()
    conn.settimeout(20)
    while conn.recv(4096):
        pass
    conn.close()
"""


def _in_netns(netns, script, *argv):
    return subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", script, *map(str, argv)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _connect(client_ns, want, wait):
    """(mptcpi_subflows, established TCP subflows by source address) of one MPTCP connection."""
    client = _in_netns(client_ns, CLIENT, "10.199.20.1", 5201, want, wait)
    try:
        subflows = int(client.stdout.readline())
        ss = sh("ss", "-tnH", "state", "established", "dst", "10.199.20.1", netns=client_ns)
        sources = sorted(line.split()[2].rsplit(":", 1)[0] for line in ss.splitlines())
    finally:
        client.stdin.close()
        client.wait(timeout=10)
    return subflows, sources


def test_limits_and_endpoint_give_two_subflows(netns):
    """Client NETNS and a server namespace joined by two veth pairs (10.199.20/24, 10.199.21/24)."""
    client, server = netns, unique_name("mpsts")
    subprocess.run(["ip", "netns", "add", server], check=True)
    proc = None
    try:
        for n in (0, 1):
            sh("ip", "link", "add", f"c{n}", "netns", client, "type", "veth", "peer", "name", f"s{n}",
               "netns", server)
            for ns, side, host in ((client, "c", 2), (server, "s", 1)):
                sh("ip", "link", "set", f"{side}{n}", "addrgenmode", "none", netns=ns)
                sh("ip", "addr", "add", f"10.199.{20 + n}.{host}/24", "dev", f"{side}{n}", netns=ns)
                sh("ip", "link", "set", f"{side}{n}", "up", netns=ns)
        sh("ip", "link", "set", "lo", "up", netns=server)
        # The second path: from 10.199.21.2 over c1 to the server's first address.
        sh("ip", "route", "add", "10.199.20.1/32", "dev", "c1", "table", "100", netns=client)
        sh("ip", "rule", "add", "from", "10.199.21.2", "lookup", "100", netns=client)

        assert not run_item("mptcp_limits", subflows=2, add_addr_accepted=0, netns=server).get("failed")
        assert not run_item("mptcp_limits", subflows=0, netns=client).get("failed")
        assert not run_item("mptcp_endpoint", address="10.199.21.2", dev="c1", flags=["subflow"],
                              netns=client).get("failed")
        proc = _in_netns(server, SERVER, "10.199.20.1", 5201)
        assert proc.stdout.readline().strip() == "ready"

        # With the client's limit at 0 the endpoint is not used ...
        assert _connect(client, want=1, wait=1) == (0, ["10.199.20.2"])
        # ... with 2 it is: a second subflow from the endpoint's address, bound to its dev.
        assert run_item("mptcp_limits", subflows=2, netns=client)["mptcp_limits"]["subflows"] == 2
        assert _connect(client, want=1, wait=10) == (1, ["10.199.20.2", "10.199.21.2%c1"])
    finally:
        if proc:
            proc.kill()
            proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", server], check=False)

