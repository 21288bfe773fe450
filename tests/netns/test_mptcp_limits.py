"""mpsocks.mptcp.mptcp_limits against the kernel's path manager in fresh namespaces."""

import subprocess

from mpsocks_testlib import assert_unchanged, run_item, run_module, sh, snapshot, unique_name


def limits(netns):
    """Limits and net.mptcp.enabled as iproute2 and sysctl (not the module) show them."""
    # iproute2 6.1 ignores -j here: "add_addr_accepted 0 subflows 2".
    words = sh("ip", "mptcp", "limits", "show", netns=netns).split()
    shown = {key: int(value) for key, value in zip(words[::2], words[1::2], strict=True)}
    enabled = sh("sysctl", "-n", "net.mptcp.enabled", netns=netns).strip()
    return {"subflows": shown["subflows"], "add_addr_accepted": shown["add_addr_accepted"],
            "enabled": enabled == "1"}


def test_set_read_back_idempotent_and_restore(netns):
    start = limits(netns)
    before = snapshot(netns)
    args = dict(subflows=4, add_addr_accepted=3, enabled=False, netns=netns)

    predicted = run_item("mptcp_limits", check=True, **args)
    assert predicted["changed"] is True
    assert predicted["diff"]["before"] == start
    assert_unchanged(before, netns)

    changed = run_item("mptcp_limits", **args)
    assert changed["changed"] is True
    assert changed["mptcp_limits"] == predicted["mptcp_limits"] == {
        "subflows": 4, "add_addr_accepted": 3, "enabled": False, "netns": netns}
    assert dict(limits(netns), netns=netns) == changed["mptcp_limits"]

    assert run_item("mptcp_limits", **args)["changed"] is False
    assert run_item("mptcp_limits", check=True, **args)["changed"] is False

    # Options left out are not managed.
    partial = run_item("mptcp_limits", add_addr_accepted=8, netns=netns)
    assert partial["changed"] is True
    assert limits(netns) == {"subflows": 4, "add_addr_accepted": 8, "enabled": False}
    assert run_item("mptcp_limits", netns=netns)["changed"] is False
    only_enabled = run_item("mptcp_limits", enabled=True, netns=netns)
    assert only_enabled["mptcp_limits"] == {"subflows": 4, "add_addr_accepted": 8, "enabled": True,
                                            "netns": netns}
    assert dict(limits(netns), netns=netns) == only_enabled["mptcp_limits"]

    # Limits cannot be absent: putting the start values back leaves the namespace as it was.
    restored = run_item("mptcp_limits", netns=netns, **start)
    assert restored["changed"] is True and restored["mptcp_limits"] == dict(start, netns=netns)
    assert_unchanged(before, netns)


def test_zero_and_max_are_accepted(netns):
    result = run_item("mptcp_limits", subflows=0, add_addr_accepted=8, netns=netns)
    assert result["mptcp_limits"]["subflows"] == 0 and result["mptcp_limits"]["add_addr_accepted"] == 8
    assert limits(netns)["subflows"] == 0 and limits(netns)["add_addr_accepted"] == 8


def test_bad_input_fails_with_one_line_and_changes_nothing(netns):
    before = snapshot(netns)
    cases = [
        ("subflows: 9 is out of range 0..8", dict(subflows=9, add_addr_accepted=1)),
        ("add_addr_accepted: -1 is out of range 0..8", dict(subflows=3, add_addr_accepted=-1)),
        ("subflows", dict(subflows="many")),
        ("enabled", dict(enabled="maybe", subflows=3)),
    ]
    for needle, args in cases:
        result = run_item("mptcp_limits", netns=netns, **args)
        assert result.get("failed"), args
        assert "\n" not in result["msg"] and "Traceback" not in result["msg"], result["msg"]
        assert needle in result["msg"], (needle, result["msg"])
    assert_unchanged(before, netns)


def test_missing_namespace_is_a_clear_error():
    result = run_item("mptcp_limits", subflows=2, netns="mpsocks-no-such-ns")
    assert result["failed"] and "mpsocks-no-such-ns" in result["msg"]


def test_two_namespaces_in_one_call(netns):
    other = unique_name("mpst")
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:
        config = [{"netns": netns, "subflows": 8, "add_addr_accepted": 8, "enabled": True},
                  {"netns": other, "subflows": 1, "add_addr_accepted": 2, "enabled": False}]
        before = {ns: snapshot(ns) for ns in (netns, other)}
        predicted = run_module("mptcp_limits", check=True, config=config)
        assert predicted["changed"] is True and [r["changed"] for r in predicted["results"]] == [True, True]
        assert [r["label"] for r in predicted["results"]] == [
            f"mptcp limits in netns {ns}" for ns in (netns, other)]
        for ns, state in before.items():
            assert_unchanged(state, ns)

        done = run_module("mptcp_limits", config=config)
        assert done["changed"] is True and [r["mptcp_limits"] for r in done["results"]] == config
        assert [r["mptcp_limits"] for r in predicted["results"]] == config
        assert [dict(limits(item["netns"]), netns=item["netns"]) for item in config] == config
        assert run_module("mptcp_limits", config=config)["changed"] is False
        fed_back = run_module("mptcp_limits", config=[r["mptcp_limits"] for r in done["results"]])
        assert fed_back["changed"] is False and not fed_back.get("failed")

        # A bad item in the middle of a list: refused, naming it, and neither namespace changes.
        state = {ns: snapshot(ns) for ns in (netns, other)}
        changes = [dict(config[0], subflows=2), {"netns": other, "subflows": 12}, dict(config[1], subflows=3)]
        for check in (True, False):
            result = run_module("mptcp_limits", check=check, config=changes)
            expected = f"config[1] (mptcp limits in netns {other}): subflows: 12 is out of range 0..8"
            assert result["failed"] and result["msg"] == expected, result["msg"]
        for ns, snap in state.items():
            assert_unchanged(snap, ns)
    finally:
        subprocess.run(["ip", "netns", "del", other], check=False)
