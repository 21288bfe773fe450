"""The addressing plan: uplink n -> host link (tap or veth), addresses, subnet, table, backup flag."""

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.addressing import (
    guest_interfaces,
    host_plan,
    slot,
    uplink_plan,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError


def test_plan_follows_the_seed_addressing():
    plan = uplink_plan(["wlp1s0", {"name": "usb0", "gateway": "192.168.42.129"}])
    assert plan == [
        {"index": 0, "uplink": "wlp1s0", "gateway": "auto", "tap": "mptcp0", "subnet": "10.66.6.0/24",
         "host_address": "10.66.6.1/24", "guest_address": "10.66.6.2/24", "table": 6606, "backup": False,
         "rate_mbit": None},
        {"index": 1, "uplink": "usb0", "gateway": "192.168.42.129", "tap": "mptcp1", "subnet": "10.66.7.0/24",
         "host_address": "10.66.7.1/24", "guest_address": "10.66.7.2/24", "table": 6607, "backup": False,
         "rate_mbit": None},
    ]


def test_last_slot():
    assert slot(7)["subnet"] == "10.66.13.0/24" and slot(7)["table"] == 6613


@pytest.mark.parametrize("uplinks, needle", [
    (["wlp1s0", "wlp1s0"], "mpsocks_uplinks[1]: wlp1s0 is listed twice"),
    (["a-name-that-is-too-long"], "mpsocks_uplinks[0].name"),
    ([{"name": "eth1", "gateway": "10.0.0.256"}], "mpsocks_uplinks[0].gateway"),
    ([{"gateway": "10.0.0.1"}], "mpsocks_uplinks[0]: expected an interface name"),
    ([{"name": "eth1", "gw": "10.0.0.1"}], "unknown key(s) gw"),
    ([f"if{n}" for n in range(9)], "at most 8"),
    ("wlp1s0,usb0", "expected a list"),
    ([{"name": "wlp1s0", "backup": True}, "usb0"], "mpsocks_uplinks[0]: the first uplink"),
    (["wlp1s0", {"name": "usb0", "backup": "maybe"}], "mpsocks_uplinks[1].backup: expected true or false"),
    (["wlp1s0", {"name": "usb0", "backup": [True]}], "mpsocks_uplinks[1].backup"),
    (["wlp1s0", {"name": "usb0", "rate_mbit": 0}], "mpsocks_uplinks[1].rate_mbit: a rate must be above 0"),
    (["wlp1s0", {"name": "usb0", "rate_mbit": "fast"}], "mpsocks_uplinks[1].rate_mbit: expected a rate"),
])
def test_bad_uplinks_name_the_item(uplinks, needle):
    with pytest.raises(MpsocksError, match=None) as caught:
        uplink_plan(uplinks)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("given, backup", [(True, True), (False, False), ("yes", True), ("False", False),
                                           (None, False)])
def test_backup_uplinks(given, backup):
    plan = uplink_plan(["wlp1s0", {"name": "usb0", "backup": given}])
    assert [u["backup"] for u in plan] == [False, backup]


@pytest.mark.parametrize("rates, backup, expected", [
    ((20, 2), None, [False, True]),  # a tenth of the fastest: backup
    ((20, 5), None, [False, False]),  # a quarter: adds up, stays active
    ((20, 3.9), None, [False, True]),
    ((20, 2), False, [False, False]),  # backup set either way wins
    ((20, 20), True, [False, True]),
    ((2, 20), None, [False, False]),  # the first uplink is never a backup
    ((None, 2), None, [False, False]),  # no rate to compare with
])
def test_a_much_slower_uplink_is_a_backup_unless_set(rates, backup, expected):
    uplinks = [{"name": "wlp1s0", "rate_mbit": rates[0]}, {"name": "usb0", "rate_mbit": rates[1]}]
    if backup is not None:
        uplinks[1]["backup"] = backup
    assert [u["backup"] for u in uplink_plan(uplinks)] == expected


def test_tap_plan_makes_no_veth():
    plan = host_plan(["wlp1s0", "usb0"])
    assert [t["name"] for t in plan["taps"]] == ["mptcp0", "mptcp1"] and plan["veths"] == []
    assert plan["links"] == [f"mptcp{n}" for n in range(8)] and plan["tables"] == list(range(6606, 6614))


def test_veth_plan_pairs_each_slot_with_the_guest_interface():
    plan = host_plan(["wlp1s0", {"name": "usb0", "backup": True}], guest_link="veth", guest_netns="g1")
    assert plan["taps"] == []
    assert plan["veths"] == [
        {"name": "mptcp0", "addresses": ["10.66.6.1/24"], "forwarding": True,
         "peer": "eth0", "peer_netns": "g1"},
        {"name": "mptcp1", "addresses": ["10.66.7.1/24"], "forwarding": True,
         "peer": "eth1", "peer_netns": "g1"},
    ]
    assert [n["in_interface"] for n in plan["nat"]] == ["mptcp0", "mptcp1"]
    assert [r["iif"] for r in plan["policy_routes"]] == ["mptcp0", "mptcp1"]
    named = host_plan(["wlp1s0"], guest_link="veth", guest_netns="g1", guest_interface_names=["ens3", "ens4"])
    assert [v["peer"] for v in named["veths"]] == ["ens3"]


@pytest.mark.parametrize("options, needle", [
    ({"guest_link": "veth"}, "mpsocks_guest_netns: required with mpsocks_guest_link veth"),
    ({"guest_link": "veth", "guest_netns": "a/b"}, "mpsocks_guest_netns: 'a/b' is not a valid"),
    ({"guest_link": "vhost"}, "mpsocks_guest_link: 'vhost' is not one of tap, veth"),
    ({"guest_link": "veth", "guest_netns": "g", "guest_interface_names": ["eth0"]},
     "mpsocks_guest_interfaces: 1 interface(s) for 2 uplinks"),
])
def test_bad_guest_link_options(options, needle):
    with pytest.raises(MpsocksError) as caught:
        host_plan(["wlp1s0", "usb0"], **options)
    assert needle in str(caught.value)


def test_guest_interfaces():
    assert guest_interfaces([], 3) == ["eth0", "eth1", "eth2"]
    assert guest_interfaces(None, 1) == ["eth0"]
    assert guest_interfaces(["enp1s0", "enp2s0", "enp3s0"], 2) == ["enp1s0", "enp2s0"]
    for names, needle in [(["a", "a"], "mpsocks_guest_interfaces[1]: a is listed twice"),
                          ("eth0", "expected a list"),
                          (["eth0", "x" * 16], "mpsocks_guest_interfaces[1]")]:
        with pytest.raises(MpsocksError) as caught:
            guest_interfaces(names, 2)
        assert needle in str(caught.value)
