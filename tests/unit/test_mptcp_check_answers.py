"""The MPTCP check's reading of servers' answers and its verdict, from data (the live check: tests/netns)."""

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.mptcp_check import (
    failure,
    parse_url,
    server_verdict,
    uplink_report,
)


@pytest.mark.parametrize("body, verdict", [
    (b'{"mptcp": true, "subflows": 2, "client": "198.18.0.2:40312"}', (True, 2, "198.18.0.2:40312")),
    (b'{"mptcp": false, "subflows": 1, "client": "198.18.0.2:1"}', (False, 1, "198.18.0.2:1")),
    (b"You are using MPTCP with 2 subflows (client 198.18.0.2:40312)\n", (True, 2, "198.18.0.2:40312")),
    (b"You are not using MPTCP (client 198.18.0.2:40312)\n", (False, 1, "198.18.0.2:40312")),
    (b"You are using MPTCP.\n", (True, None, None)),  # a checker that gives no count
    (b"You are not using MPTCP.\n", (False, 1, None)),
    (b"<html><body>Hello</body></html>", (None, None, None)),
    (b'{"status": "ok"}', (None, None, None)),
])
def test_answers_of_check_servers(body, verdict):
    assert server_verdict(body) == verdict


@pytest.mark.parametrize("url, parts", [
    ("http://check.lab.test/?format=json", ("http", "check.lab.test", 80, "/?format=json", "check.lab.test")),
    ("http://198.19.0.10", ("http", "198.19.0.10", 80, "/", "198.19.0.10")),
    ("https://check.mptcp.dev:8443/x", ("https", "check.mptcp.dev", 8443, "/x", "check.mptcp.dev:8443")),
    ("http://[2001:db8::10]/", ("http", "2001:db8::10", 80, "/", "[2001:db8::10]")),
])
def test_urls(url, parts):
    found = parse_url(url)
    assert (found["scheme"], found["host"], found["port"], found["target"], found["host_header"]) == parts


@pytest.mark.parametrize("url", ["check.lab.test", "ftp://check.lab.test/", "http:///x", "http://a:99999/",
                                 None])
def test_bad_urls_are_one_line(url):
    with pytest.raises(MpsocksError) as error:
        parse_url(url)
    assert str(error.value).startswith(f"url: {url!r} is not ") and "\n" not in str(error.value)


def _subflow(interface, state="ESTABLISHED"):
    return {"interface": interface, "state": state}


def _result(mptcp=True, kernel=None, uplinks=()):
    return {"url": "http://check.lab.test/", "mptcp": mptcp, "answer": "x", "kernel": kernel,
            "uplinks": list(uplinks)}


def test_uplinks_count_live_subflows_and_backups():
    kernel = {"subflows": [_subflow("eth0"), _subflow("eth2"), _subflow("eth1", "SYN-SENT")]}
    assert uplink_report(kernel, ["eth0", "eth1", "eth2"], ["eth2"]) == [
        {"index": 0, "interface": "eth0", "backup": False, "subflows": 1},
        {"index": 1, "interface": "eth1", "backup": False, "subflows": 0},
        {"index": 2, "interface": "eth2", "backup": True, "subflows": 1}]


def test_verdicts():
    ok = [{"index": 0, "interface": "eth0", "backup": False, "subflows": 1},
          {"index": 1, "interface": "eth1", "backup": True, "subflows": 0}]
    view = {"fallback": False, "plain_tcp": False}
    assert failure(_result(kernel=view, uplinks=ok)) is None
    assert failure(_result(kernel=None, uplinks=[])) is None  # nothing required, the server says MPTCP
    missing = [dict(ok[0], subflows=0), dict(ok[1], backup=False)]
    assert failure(_result(kernel=view, uplinks=missing)) == (
        "MPTCP, but no subflow on uplink 0 (eth0), uplink 1 (eth1)")
    assert failure(_result(kernel=None, uplinks=ok)).startswith(
        "MPTCP, but the kernel here shows no connection")
    assert failure(_result(mptcp=False, kernel=None)) == "not MPTCP: the server says TCP"
    assert failure(_result(mptcp=False, kernel=dict(view, fallback=True))).startswith(
        "not MPTCP: the server says TCP; the guest's connection fell back to TCP")
    assert failure(_result(mptcp=None)) == ("http://check.lab.test/: the answer does not say whether the "
                                            "connection is MPTCP: 'x'")
