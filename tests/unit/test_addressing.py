"""The addressing plan: uplink n -> tap, addresses, subnet, table."""

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.addressing import slot, uplink_plan
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError


def test_plan_follows_the_seed_addressing():
    plan = uplink_plan(["wlp1s0", {"name": "usb0", "gateway": "192.168.42.129"}])
    assert plan == [
        {"index": 0, "uplink": "wlp1s0", "gateway": "auto", "tap": "mptcp0", "subnet": "10.66.6.0/24",
         "host_address": "10.66.6.1/24", "guest_address": "10.66.6.2/24", "table": 6606},
        {"index": 1, "uplink": "usb0", "gateway": "192.168.42.129", "tap": "mptcp1", "subnet": "10.66.7.0/24",
         "host_address": "10.66.7.1/24", "guest_address": "10.66.7.2/24", "table": 6607},
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
])
def test_bad_uplinks_name_the_item(uplinks, needle):
    with pytest.raises(MpsocksError, match=None) as caught:
        uplink_plan(uplinks)
    assert needle in str(caught.value) and "\n" not in str(caught.value)
