"""mpsocks.mptcp.mptcp_check on a namespace guest: real dante under mptcpize, real MPTCP servers, two uplinks.

The module runs inside the guest (through ``ip netns exec``, as the netns connection plugin runs it);
see guest_topology.py for the namespaces.
"""

import json

import pytest
from guest_topology import CHECK, SOCKS, guest_with_dante
from mpsocks_testlib import ansible_playbook, netns_inventory, run_module


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    with guest_with_dante(tmp_path_factory.mktemp("guest")) as made:
        yield made


BOTH = dict(url="http://check.test/?format=json", proxy=SOCKS, uplinks=["eth0", "eth1"])


def check(guest, **params):
    return run_module("mptcp_check", inside=guest.guest, **params)


def one_line(result):
    assert result.get("failed") and "\n" not in result["msg"], result
    return result["msg"]


def test_through_the_proxy_by_name_both_uplinks_carry_a_subflow(guest):
    result = check(guest, **BOTH)
    assert not result.get("failed") and result["changed"] is False, result
    assert (result["mptcp"], result["subflows"]) == (True, 2)
    kernel = result["kernel"]
    assert kernel["mptcp"] and not kernel["fallback"] and kernel["remote"] == f"{CHECK}:80"
    assert kernel["local"] == result["client"], "the server's client is the proxy's outgoing connection"
    assert [(s["interface"], s["uplink"], s["join"], s["backup"]) for s in kernel["subflows"]] == [
        ("eth0", 0, False, False), ("eth1", 1, True, False)]
    assert [s["local"].split(":")[0] for s in kernel["subflows"]] == ["10.66.6.2", "10.66.7.2"]
    assert kernel["subflows"][0]["bytes_sent"] > 0 and kernel["subflows"][0]["bytes_received"] > 0
    assert [(u["index"], u["interface"], u["backup"], u["subflows"]) for u in result["uplinks"]] == [
        (0, "eth0", False, 1), (1, "eth1", False, 1)]


def test_a_text_answer_by_address_says_the_same(guest):
    result = check(guest, url=f"http://{CHECK}/", proxy=SOCKS, uplinks=["eth0", "eth1"])
    assert not result.get("failed"), result
    assert result["answer"].startswith("You are using MPTCP with 2 subflows")
    assert (result["mptcp"], result["subflows"], len(result["kernel"]["subflows"])) == (True, 2, 2)


def test_direct_from_the_guest_over_an_mptcp_socket(guest):
    result = check(guest, url="http://check.test/?format=json", uplinks=["eth0", "eth1"])
    assert not result.get("failed") and result["proxy"] is None, result
    assert (result["mptcp"], result["subflows"]) == (True, 2)
    assert result["kernel"]["local"] == result["client"]


def test_check_mode_runs_the_check_and_changes_nothing(guest):
    result = run_module("mptcp_check", check=True, inside=guest.guest, url="http://check.test/?format=json",
                        proxy=SOCKS, uplinks=["eth0", "eth1"])
    assert not result.get("failed") and result["changed"] is False and result["subflows"] == 2, result


def test_server_that_speaks_tcp_fails_naming_the_fallback(guest):
    result = check(guest, url="http://plain.test/?format=json", proxy=SOCKS, uplinks=["eth0", "eth1"])
    msg = one_line(result)
    print(msg)
    assert msg.startswith("not MPTCP: the server says TCP; the guest's connection fell back to TCP")
    assert (result["mptcp"], result["subflows"]) == (False, 1)
    assert result["kernel"]["fallback"] is True and result["kernel"]["mptcp"] is False


def test_option_stripped_on_the_way_fails_naming_the_fallback(guest):
    """A middlebox on uplink 0 strips MP_CAPABLE from SYNs: the server sees TCP, the guest falls back."""
    guest.far_sh("nft", "add table ip strip { chain pre { type filter hook prerouting priority -300; "
                 "iifname mptcp0 tcp flags syn reset tcp option mptcp; }; }")
    try:
        result = check(guest, **BOTH)
    finally:
        guest.far_sh("nft", "delete table ip strip")
    msg = one_line(result)
    assert msg.startswith("not MPTCP: the server says TCP; the guest's connection fell back"), msg
    assert result["kernel"]["fallback"] is True and result["kernel"]["subflows"][0]["interface"] == "eth0"


def test_proxy_without_mptcp_sockets_fails_naming_plain_tcp(guest):
    guest.dante("plaindante", 1081, mptcp=False)
    try:
        result = check(guest, url="http://check.test/?format=json", proxy="10.66.6.2:1081")
    finally:
        guest.stop_daemon("plaindante")
    msg = one_line(result)
    print(msg)
    assert msg == ("not MPTCP: the server says TCP; the guest's connection to the server is plain TCP "
                   "(the proxy does not open MPTCP sockets)")
    assert result["kernel"]["plain_tcp"] is True and result["kernel"]["local"] == result["client"]


def test_uplink_without_a_subflow_fails_naming_it(guest):
    guest.sh("ip", "mptcp", "endpoint", "flush")
    try:
        result = check(guest, **BOTH)
    finally:
        guest.sh("ip", "mptcp", "endpoint", "add", "10.66.7.2", "dev", "eth1", "subflow")
    assert one_line(result) == "MPTCP, but no subflow on uplink 1 (eth1)"
    assert (result["mptcp"], result["subflows"]) == (True, 1)
    assert [u["subflows"] for u in result["uplinks"]] == [1, 0]


def test_backup_uplink_is_reported_and_needs_no_subflow(guest):
    guest.sh("ip", "mptcp", "endpoint", "flush")
    guest.sh("ip", "mptcp", "endpoint", "add", "10.66.7.2", "dev", "eth1", "subflow", "backup")
    try:
        carried = check(guest, **BOTH)
        guest.far_sh("nft", "add table ip nojoin { chain pre { type filter hook prerouting priority 0; "
                     "iifname mptcp1 tcp flags syn drop; }; }")
        try:
            missing = check(guest, **BOTH)
        finally:
            guest.far_sh("nft", "delete table ip nojoin")
    finally:
        guest.sh("ip", "mptcp", "endpoint", "flush")
        guest.sh("ip", "mptcp", "endpoint", "add", "10.66.7.2", "dev", "eth1", "subflow")
    assert not carried.get("failed"), carried
    assert [(s["interface"], s["backup"]) for s in carried["kernel"]["subflows"]] == [
        ("eth0", False), ("eth1", True)]
    assert not missing.get("failed"), missing  # a backup uplink without a subflow is no failure
    assert [(u["backup"], u["subflows"]) for u in missing["uplinks"]] == [(False, 1), (True, 0)]


def test_url_or_proxy_that_does_not_answer_is_one_line_naming_it(guest):
    cases = (
        (dict(url=f"http://{CHECK}:81/", proxy=SOCKS),
         f"http://{CHECK}:81/ does not answer through proxy {SOCKS}: the proxy could not connect to "
         f"{CHECK}:81: "),
        (dict(url="http://nothere.test/", proxy=SOCKS),
         f"http://nothere.test/ does not answer through proxy {SOCKS}: the proxy could not connect to "
         "nothere.test:80: "),
        (dict(url=f"http://{CHECK}:81/"), f"http://{CHECK}:81/ does not answer: Connection refused"),
        (dict(url=f"http://{CHECK}/", proxy="10.66.6.2:1099"),
         f"http://{CHECK}/ does not answer through proxy 10.66.6.2:1099: the proxy cannot be reached: "
         "Connection refused"),
        (dict(url="http://198.19.0.99/", timeout=1),
         "http://198.19.0.99/ does not answer: no answer within 1 s"),
    )
    for params, start in cases:
        msg = one_line(check(guest, **params))
        print(msg)
        assert msg.startswith(start), msg


@pytest.mark.parametrize("params, needle", [
    (dict(url="ftp://check.test/"), "url: 'ftp://check.test/' is not an http:// or https:// URL"),
    (dict(url="http://check.test:99999/"), "url: 'http://check.test:99999/' is not a URL"),
    (dict(url="http://check.test/", proxy="10.66.6.2"), "proxy: '10.66.6.2' is not HOST:PORT"),
    (dict(url="http://check.test/", proxy=SOCKS, uplinks=["eth0", "bad/name"]),
     "uplinks[1]: 'bad/name' is not a valid interface name"),
])
def test_bad_input_is_one_line_naming_it(guest, params, needle):
    assert needle in one_line(check(guest, **params))


def test_through_the_netns_connection_plugin(guest, tmp_path):
    """As the check playbook runs it: a guest host reached with mpsocks.mptcp.netns, a failure on one line."""
    playbook = tmp_path / "check.yml"
    playbook.write_text(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "check", "mpsocks.mptcp.mptcp_check": {
            "url": "http://check.test/?format=json", "proxy": SOCKS, "uplinks": ["eth0", "eth1"]},
         "register": "good"},
        {"name": "plain", "mpsocks.mptcp.mptcp_check": {"url": "http://plain.test/", "proxy": SOCKS},
         "register": "bad", "ignore_errors": True},
        {"name": "report", "ansible.builtin.debug": {
            "msg": "{{ good.subflows }} {{ good.kernel.subflows | map(attribute='interface') | join(',') }} "
                   "/ {{ bad.msg }}"}},
    ]}]))
    rc, output, recap = ansible_playbook(playbook, netns_inventory(tmp_path / "inventory.json", guest.guest))
    assert rc == 0 and recap[guest.guest]["failed"] == 0, output
    assert '"msg": "2 eth0,eth1 / not MPTCP: the server says TCP; the guest\'s connection fell back' in output
