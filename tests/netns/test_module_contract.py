"""One contract, every module, its list form: what check mode, a real run, absent and a round trip promise.

For each module a list of two objects (in two namespaces where the module allows it):
check mode reports changed and leaves the namespaces untouched; the real run changes exactly what
check mode predicted; check mode afterwards reports unchanged; feeding the returned objects back as
input changes nothing; absent removes them (a sysctl, the MPTCP limits or an interface's settings,
which always exist, are set back instead); absent again is a no-op; the namespaces are as they were.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

import pytest
from mpsocks_testlib import assert_unchanged, run_module, sh, snapshot, unique_name


@dataclass
class Case:
    """How to exercise one module: its objects, how to remove them, and what they need first."""

    module: str
    config: list[dict]
    absent: list[dict]  # the config that removes (or sets back) the objects
    top: dict = field(default_factory=dict)  # top-level options for every call
    absent_top: dict = field(default_factory=lambda: {"state": "absent"})


def links(netns: str, *names: str) -> None:
    """Veth pairs NAME/NAMEp in NETNS, up, NAME holding 10.66.(90+n).1/24 (down links for the shaper)."""
    for n, name in enumerate(names):
        sh("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p", netns=netns)
        sh("ip", "link", "set", name, "addrgenmode", "none", netns=netns)
        sh("ip", "addr", "add", f"10.66.{90 + n}.1/24", "dev", name, netns=netns)
        sh("ip", "link", "set", name, "up", netns=netns)


def cases(a: str, b: str, run_dir: str) -> dict[str, Case]:
    """Every module's case, for namespaces A and B (both with links c0 and c1)."""
    owner = unique_name("own")
    return {
        "tap": Case("tap", [{"name": "ct0", "addresses": ["10.66.99.1/24"], "netns": a},
                            {"name": "ct1", "netns": b}],
                    [{"name": "ct0", "netns": a}, {"name": "ct1", "netns": b}]),
        "veth": Case("veth", [{"name": "cv0", "peer": "cv0p", "addresses": ["10.66.98.1/24"], "netns": a},
                              {"name": "cv1", "peer": "cv1", "peer_netns": b, "netns": a}],
                     [{"name": "cv0", "peer": "cv0p", "netns": a},
                      {"name": "cv1", "peer": "cv1", "peer_netns": b, "netns": a}]),
        "netns": Case("netns", [{"name": unique_name("mpstc")}, {"name": unique_name("mpstc")}], [],
                      top={"owner": owner}, absent_top={"owner": owner, "state": "overridden"}),
        "route": Case("route", [{"to": "198.51.100.0/24", "via": "10.66.90.2", "netns": a},
                                {"to": "203.0.113.0/24", "dev": "c1", "table": 100, "netns": b}],
                      [{"to": "198.51.100.0/24", "netns": a},
                       {"to": "203.0.113.0/24", "table": 100, "netns": b}]),
        "policy_route": Case("policy_route",
                             [{"table": 101, "source": "10.66.90.0/24", "routes": [{"dev": "c0"}],
                               "netns": a},
                              {"table": 102, "iif": "c1", "routes": [{"via": "10.66.91.2", "dev": "c1"}],
                               "netns": b}],
                             [{"table": 101, "netns": a}, {"table": 102, "netns": b}]),
        "sysctl": Case("sysctl", [{"name": "net.ipv4.ip_forward", "value": "1", "netns": a},
                                  {"name": "net.ipv4.conf.c1.rp_filter", "value": "2", "netns": b}],
                       [{"name": "net.ipv4.ip_forward", "value": "0", "netns": a},
                        {"name": "net.ipv4.conf.c1.rp_filter", "value": "0", "netns": b}], absent_top={}),
        "mptcp_limits": Case("mptcp_limits", [{"subflows": 3, "add_addr_accepted": 4, "netns": a},
                                              {"subflows": 5, "netns": b}],
                             [{"subflows": 2, "add_addr_accepted": 0, "netns": a},
                              {"subflows": 2, "netns": b}], absent_top={}),
        "mptcp_endpoint": Case("mptcp_endpoint",
                               [{"address": "10.66.90.1", "dev": "c0", "flags": ["subflow"], "netns": a},
                                {"address": "10.66.91.1", "flags": ["signal", "backup"], "netns": b}],
                               [{"address": "10.66.90.1", "netns": a},
                                {"address": "10.66.91.1", "netns": b}]),
        "shaper": Case("shaper", [{"dev": "c0", "rate_mbit": 10, "netns": a},
                                  {"dev": "c1", "rate_mbit": 5, "classes": [{"id": 32, "rate_mbit": 2}],
                                   "netns": b}],
                       [{"dev": "c0", "netns": a}, {"dev": "c1", "netns": b}]),
        "middlebox": Case("middlebox", [{"interface": "c0", "kind": "strip", "netns": a},
                                        {"interface": "c1", "kind": "optimizer", "proxy_port": 3130,
                                         "netns": b}],
                          [{"interface": "c0", "kind": "none", "netns": a},
                           {"interface": "c1", "kind": "none", "netns": b}]),
        "nat": Case("nat", [{"name": "n0", "source": "10.66.97.0/24", "out_interface": "c0", "netns": a},
                            {"name": "n1", "source": "10.66.96.0/24", "out_interface": "c1",
                             "in_interface": "c0", "netns": b}],
                    [{"name": "n0", "netns": a}, {"name": "n1", "netns": b}]),
        "interface": Case("interface", [{"name": "c0", "addresses": ["10.66.88.1/24"], "mtu": 1400,
                                         "netns": a},
                                        {"name": "c1", "up": False, "netns": b}],
                          [{"name": "c0", "addresses": ["10.66.90.1/24"], "mtu": 1500, "netns": a},
                           {"name": "c1", "up": True, "netns": b}], absent_top={}),
        "redirect": Case("redirect", [{"interfaces": ["c0"], "sources": ["10.66.90.0/24"],
                                       "to_address": "10.66.90.1", "to_port": 12345, "netns": a},
                                      {"interfaces": ["c0", "c1"], "sources": ["10.66.91.0/24"],
                                       "to_address": "10.66.91.1", "to_port": 12346, "netns": b}],
                         [{"netns": a}, {"netns": b}]),
        "daemon": Case("daemon", [{"name": "d0", "argv": ["sleep", "1000"], "netns": a},
                                  {"name": "d1", "argv": ["sleep", "1001"], "netns": b}],
                       [{"name": "d0", "netns": a}, {"name": "d1", "netns": b}],
                       top={"run_dir": run_dir}, absent_top={"run_dir": run_dir, "state": "absent"}),
    }


MODULES = ["tap", "veth", "netns", "route", "policy_route", "sysctl", "mptcp_limits", "mptcp_endpoint",
           "shaper", "middlebox", "nat", "daemon", "interface", "redirect"]


@pytest.mark.parametrize("module", MODULES)
def test_the_contract(module, netns, tmp_path):
    other = unique_name("mpstc")
    subprocess.run(["ip", "netns", "add", other], check=True)
    case = cases(netns, other, str(tmp_path / "run"))[module]
    made_namespaces = [item["name"] for item in case.config] if module == "netns" else []
    try:
        sh("ip", "link", "set", "lo", "up", netns=other)
        links(netns, "c0", "c1")
        links(other, "c0", "c1")
        before = {ns: snapshot(ns) for ns in (netns, other)}

        def call(config, check=False, top=None):
            # Started inside NETNS: an object that forgot its namespace lands there, never on the host.
            # (Not netns: it makes namespaces, which must be made from the host's mount namespace.)
            inside = None if module == "netns" else netns
            result = run_module(module, check=check, inside=inside, config=config,
                                **(case.top if top is None else top))
            assert not result.get("failed"), result
            return result

        predicted = call(case.config, check=True)
        assert [r["changed"] for r in predicted["results"]] == [True, True], predicted
        for ns in (netns, other):
            assert_unchanged(before[ns], ns)
        assert not set(made_namespaces) & set(sh("ip", "netns", "list").split())

        done = call(case.config)
        assert [r[module] for r in done["results"]] == [r[module] for r in predicted["results"]], done
        assert [r["diff"]["after"] for r in done["results"]] == [r["diff"]["after"]
                                                                for r in predicted["results"]]
        assert done["changed"] and len(done["diff"]) == 2
        changed = [ns for ns in (netns, other) if snapshot(ns) != before[ns]]
        assert changed or made_namespaces, "the real run changed nothing"

        assert call(case.config, check=True)["changed"] is False
        round_trip = call([r[module] for r in done["results"]])
        assert round_trip["changed"] is False, round_trip

        removed = call(case.absent, top=case.absent_top)
        assert removed["changed"], removed
        assert call(case.absent, top=case.absent_top)["changed"] is False
        for ns in (netns, other):
            assert_unchanged(before[ns], ns)
        assert not set(made_namespaces) & set(sh("ip", "netns", "list").split())
    finally:
        for name in [other, *made_namespaces]:
            subprocess.run(["ip", "netns", "del", name], check=False)
