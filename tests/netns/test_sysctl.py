"""mpsocks.mptcp.sysctl against /proc/sys/net of fresh namespaces (read with cat, not the module)."""

import subprocess

import pytest
from mpsocks_testlib import assert_unchanged, run_item, run_module, sh, snapshot, unique_name


def proc(netns, path):
    """The raw text of /proc/sys/PATH as the namespace's kernel prints it."""
    return sh("cat", f"/proc/sys/{path}", netns=netns)


def test_integer_setting_check_mode_diff_read_back_and_idempotence(netns):
    assert proc(netns, "net/ipv4/ip_forward") == "0\n"
    root_before = proc(None, "net/ipv4/ip_forward")
    args = dict(name="net.ipv4.ip_forward", value="1", netns=netns)

    predicted = run_item("sysctl", check=True, **args)
    assert predicted["changed"] is True
    assert predicted["diff"]["before"] == {"name": "net.ipv4.ip_forward", "value": "0"}
    assert predicted["diff"]["after"] == {"name": "net.ipv4.ip_forward", "value": "1"}
    assert predicted["sysctl"] == {"name": "net.ipv4.ip_forward", "value": "1", "netns": netns}
    assert proc(netns, "net/ipv4/ip_forward") == "0\n"

    done = run_item("sysctl", **args)
    assert done["changed"] is True and done["sysctl"] == predicted["sysctl"]
    assert proc(netns, "net/ipv4/ip_forward") == "1\n"
    assert proc(None, "net/ipv4/ip_forward") == root_before  # only the namespace's copy changed
    assert run_item("sysctl", **args)["changed"] is False
    assert run_item("sysctl", check=True, **args)["changed"] is False
    # The integer is compared as a number: " 01 " is 1.
    assert run_item("sysctl", name="net.ipv4.ip_forward", value=" 01 ", netns=netns)["changed"] is False

    back = run_item("sysctl", name="net.ipv4.ip_forward", value="0", netns=netns)
    assert back["changed"] is True and proc(netns, "net/ipv4/ip_forward") == "0\n"


def test_interface_keys_even_when_the_name_holds_dots(netns):
    for name in ("lab0", "lab0.7"):
        sh("ip", "link", "add", name, "type", "veth", "peer", "name", f"p{name}", netns=netns)
    assert proc(netns, "net/ipv4/conf/lab0.7/rp_filter").strip() != "2"
    lab0_before = proc(netns, "net/ipv4/conf/lab0/rp_filter")

    done = run_item("sysctl", name="net.ipv4.conf.lab0.7.rp_filter", value="2", netns=netns)
    assert done["changed"] is True and done["sysctl"]["value"] == "2"
    assert proc(netns, "net/ipv4/conf/lab0.7/rp_filter") == "2\n"
    assert proc(netns, "net/ipv4/conf/lab0/rp_filter") == lab0_before
    # The slash form of sysctl(8) names the same key.
    slashed = run_item("sysctl", name="net/ipv4/conf/lab0.7/rp_filter", value="2", netns=netns)
    assert slashed["changed"] is False and slashed["sysctl"]["value"] == "2"

    assert run_item("sysctl", name="net.ipv4.conf.lab0.rp_filter", value="2", netns=netns)["changed"]
    assert proc(netns, "net/ipv4/conf/lab0/rp_filter") == "2\n"


def test_vector_values_compare_with_whitespace_normalised(netns):
    root_before = proc(None, "net/ipv4/tcp_rmem")
    wanted = "4096 65536 4194304"
    assert " ".join(proc(netns, "net/ipv4/tcp_rmem").split()) != wanted

    predicted = run_item("sysctl", check=True, name="net.ipv4.tcp_rmem", value="4096  65536 4194304",
                         netns=netns)
    assert predicted["changed"] is True and predicted["sysctl"]["value"] == wanted
    done = run_item("sysctl", name="net.ipv4.tcp_rmem", value="4096  65536 4194304", netns=netns)
    assert done["changed"] is True and done["sysctl"] == predicted["sysctl"]
    assert proc(netns, "net/ipv4/tcp_rmem") == "4096\t65536\t4194304\n"  # /proc prints tabs
    again = run_item("sysctl", name="net.ipv4.tcp_rmem", value="4096\t65536\t4194304", netns=netns)
    assert again["changed"] is False
    assert proc(None, "net/ipv4/tcp_rmem") == root_before


def test_bad_names_and_values_fail_with_one_line_and_change_nothing(netns):
    before = snapshot(netns)
    rmem_before = proc(netns, "net/ipv4/tcp_rmem")
    ttl_before = proc(netns, "net/ipv4/ip_default_ttl")
    cases = [
        ("not under net.", dict(name="kernel.hostname", value="x")),
        ("not under net.", dict(name="vm.swappiness", value="10")),
        ("'net.ipv4.no_such_key'", dict(name="net.ipv4.no_such_key", value="1")),
        ("'net.ipv4.conf.nosuch0.rp_filter'", dict(name="net.ipv4.conf.nosuch0.rp_filter", value="1")),
        ("group of sysctls", dict(name="net.ipv4.conf", value="1")),
        ("not a sysctl name", dict(name="net..ip_forward", value="1")),
        ("not a sysctl name", dict(name="net/ipv4/../../kernel/hostname", value="x")),
        ("not a sysctl name", dict(name="net.ipv4.conf.lo\n.rp_filter", value="1")),
        ("value: sysctl 'net.ipv4.ip_forward' takes integers (it holds '0'), not 'yes'",
         dict(name="net.ipv4.ip_forward", value="yes")),
        ("value: sysctl 'net.ipv4.tcp_rmem' takes integers",
         dict(name="net.ipv4.tcp_rmem", value="4096 lots 4194304")),
        ("value: the kernel refused '300' for sysctl 'net.ipv4.ip_default_ttl'",
         dict(name="net.ipv4.ip_default_ttl", value="300")),
        ("read-only", dict(name="net.ipv4.tcp_available_congestion_control", value="reno")),
        ("value: one line", dict(name="net.ipv4.ip_forward", value="1\n0")),
    ]
    for needle, args in cases:
        result = run_item("sysctl", netns=netns, **args)
        assert result.get("failed"), args
        assert needle in result["msg"], result["msg"]
        assert "\n" not in result["msg"] and "Traceback" not in result["msg"], result["msg"]
    assert_unchanged(before, netns)
    assert proc(netns, "net/ipv4/tcp_rmem") == rmem_before
    assert proc(netns, "net/ipv4/ip_default_ttl") == ttl_before


def test_missing_namespace_is_a_clear_error():
    result = run_item("sysctl", name="net.ipv4.ip_forward", value="1", netns="mpsocks-no-such-ns")
    assert result["failed"] and "mpsocks-no-such-ns" in result["msg"]


@pytest.fixture
def namespaces():
    """Three more fresh namespaces, deleted afterwards."""
    names = [unique_name("mpsts") for _ in range(3)]
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False)


def test_a_list_across_namespaces_in_one_call(netns, namespaces):
    """As the lab does: forwarding in every router, a reverse-path filter on the host, in one call."""
    routers = namespaces
    sh("ip", "link", "add", "lab0", "type", "veth", "peer", "name", "plab0", netns=netns)
    config = [{"netns": router, "name": "net.ipv4.ip_forward", "value": "1"} for router in routers]
    config.append({"name": "net.ipv4.conf.lab0.rp_filter", "value": "2"})  # in the module's netns
    before = {ns: snapshot(ns) for ns in routers + [netns]}

    predicted = run_module("sysctl", check=True, netns=netns, config=config)
    assert predicted["changed"] is True and len(predicted["results"]) == 4
    assert [r["changed"] for r in predicted["results"]] == [True] * 4
    for ns in routers + [netns]:
        assert_unchanged(before[ns], ns)

    done = run_module("sysctl", netns=netns, config=config)
    assert done["changed"] is True
    assert [r["sysctl"] for r in done["results"]] == [r["sysctl"] for r in predicted["results"]]
    assert [r["diff"] for r in done["results"]] == [r["diff"] for r in predicted["results"]]
    assert len(done["diff"]) == 4
    assert all(proc(router, "net/ipv4/ip_forward") == "1\n" for router in routers)
    assert proc(netns, "net/ipv4/ip_forward") == "0\n"  # only the routers forward
    assert proc(netns, "net/ipv4/conf/lab0/rp_filter") == "2\n"

    assert run_module("sysctl", netns=netns, config=config)["changed"] is False
    # What the module returned, fed back as its input, changes nothing: each item names its netns.
    returned = [result["sysctl"] for result in done["results"]]
    assert {item["netns"] for item in returned} == set(routers) | {netns}
    again = run_module("sysctl", config=returned)
    assert again["changed"] is False and [r["sysctl"] for r in again["results"]] == returned


def test_a_bad_item_in_the_middle_changes_nothing(netns, namespaces):
    good = [{"netns": ns, "name": "net.ipv4.ip_forward", "value": "1"} for ns in namespaces]
    bad_items = [
        ({"netns": netns, "name": "net.ipv4.ip_forward", "value": "yes"}, "takes integers"),
        ({"netns": netns, "name": "net.ipv4.conf.nosuch0.rp_filter", "value": "1"}, "unknown sysctl"),
        ({"netns": "mpsocks-no-such-ns", "name": "net.ipv4.ip_forward", "value": "1"}, "mpsocks-no-such-ns"),
        ({"netns": netns, "name": "kernel.hostname", "value": "x"}, "not under net."),
    ]
    before = {ns: snapshot(ns) for ns in namespaces + [netns]}
    for bad, needle in bad_items:
        for check in (True, False):
            result = run_module("sysctl", check=check, config=good[:2] + [bad] + good[2:])
            assert result.get("failed") and result["changed"] is False, result
            assert result["msg"].startswith("config[2] (sysctl "), result["msg"]
            assert needle in result["msg"] and "\n" not in result["msg"], result["msg"]
            for ns in namespaces + [netns]:
                assert_unchanged(before[ns], ns)
