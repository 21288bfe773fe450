"""The guest's plan (addresses, tables, endpoints, limits) and the host's resolvers as a guest gets them."""

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.guest import (
    guest_plan,
    host_resolvers,
    resolv_conf,
)


def test_two_uplinks_the_second_a_backup():
    plan = guest_plan(["wlp1s0", {"name": "usb0", "backup": True}], dns_servers=["192.0.2.53"])
    assert plan["interfaces"] == [{"name": "eth0", "addresses": ["10.66.6.2/24"], "up": True},
                                  {"name": "eth1", "addresses": ["10.66.7.2/24"], "up": True}]
    assert plan["sysctls"] == [{"name": "net.ipv4.tcp_notsent_lowat", "value": "16384"},
                               {"name": "net.ipv4.conf.eth0.rp_filter", "value": "2"},
                               {"name": "net.ipv4.conf.eth1.rp_filter", "value": "2"}]
    assert plan["policy_routes"] == [
        {"table": 6606, "source": "10.66.6.2/32", "routes": [{"via": "10.66.6.1", "dev": "eth0"}]},
        {"table": 6607, "source": "10.66.7.2/32", "routes": [{"via": "10.66.7.1", "dev": "eth1"}]},
    ]
    assert plan["tables"] == list(range(6606, 6614))
    assert plan["routes"] == [{"to": "default", "via": "10.66.6.1", "dev": "eth0"}]
    assert plan["mptcp_limits"] == [{"subflows": 1, "add_addr_accepted": 1, "enabled": True}]
    present = [e for e in plan["mptcp_endpoints"] if e.get("state") != "absent"]
    assert present == [{"address": "10.66.7.2", "dev": "eth1", "flags": ["subflow", "backup"]}]
    assert [e["address"] for e in plan["mptcp_endpoints"] if e.get("state") == "absent"] == [
        f"10.66.{n}.2" for n in range(8, 14)]
    assert plan["socks_address"] == "10.66.6.2"
    assert plan["resolv_conf"].endswith("\nnameserver 192.0.2.53\n")


def test_one_uplink_named_interfaces_no_resolvers():
    plan = guest_plan(["wlp1s0"], interfaces=["enp1s0", "enp2s0"])
    assert [i["name"] for i in plan["interfaces"]] == ["enp1s0"]
    assert plan["mptcp_limits"] == [{"subflows": 0, "add_addr_accepted": 0, "enabled": True}]
    assert all(e["state"] == "absent" for e in plan["mptcp_endpoints"])
    assert plan["resolv_conf"] is None


def test_three_uplinks_subflow_endpoints_on_every_interface_but_the_first():
    plan = guest_plan(["a", "b", "c"])
    assert [(e["address"], e["dev"], e["flags"]) for e in plan["mptcp_endpoints"][:2]] == [
        ("10.66.7.2", "eth1", ["subflow"]), ("10.66.8.2", "eth2", ["subflow"])]
    assert plan["mptcp_limits"][0]["subflows"] == 2


@pytest.mark.parametrize("uplinks, options, needle", [
    ([], {}, "mpsocks_uplinks: give at least one uplink"),
    ([{"name": "a", "backup": True}], {}, "mpsocks_uplinks[0]: the first uplink"),
    (["a", "b"], {"interfaces": ["eth0"]}, "mpsocks_guest_interfaces: 1 interface(s) for 2 uplinks"),
    (["a"], {"dns_servers": ["192.0.2.1", "dns.example"]}, "mpsocks_dns_servers[1]: 'dns.example' is not"),
    (["a"], {"dns_servers": "192.0.2.1"}, "mpsocks_dns_servers: expected a list"),
])
def test_bad_input_names_the_item(uplinks, options, needle):
    with pytest.raises(MpsocksError) as caught:
        guest_plan(uplinks, **options)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_resolv_conf_text():
    assert resolv_conf(["192.0.2.53", "2001:db8::53"]).splitlines()[1:] == [
        "nameserver 192.0.2.53", "nameserver 2001:db8::53"]


def write(path, text):
    path.write_text(text)
    return str(path)


def test_plain_resolvers_in_order_once(tmp_path):
    conf = write(tmp_path / "resolv.conf", "# comment\nsearch example.org\nnameserver 192.0.2.1\n"
                 "nameserver 2001:db8::1\nnameserver 192.0.2.1\nnameserver bogus\noptions edns0\n")
    assert host_resolvers(conf, str(tmp_path / "none")) == ["192.0.2.1", "2001:db8::1"]


def test_a_local_stub_is_replaced_by_its_upstream_servers(tmp_path):
    conf = write(tmp_path / "resolv.conf", "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n")
    upstream = write(tmp_path / "upstream.conf", "nameserver 192.0.2.7\nnameserver 127.0.0.1\n"
                     "nameserver fe80::1%wlp1s0\nnameserver 198.51.100.7\n")
    assert host_resolvers(conf, upstream) == ["192.0.2.7", "198.51.100.7"]
    mixed = write(tmp_path / "mixed.conf", "nameserver 192.0.2.9\nnameserver 127.0.0.53\nnameserver ::1\n")
    assert host_resolvers(mixed, upstream) == ["192.0.2.9", "192.0.2.7", "198.51.100.7"]
    assert host_resolvers(mixed, str(tmp_path / "none")) == ["192.0.2.9"]


@pytest.mark.parametrize("text, upstream, needle", [
    ("nameserver 127.0.0.53\n", None, "names only resolvers the guest cannot reach (127.0.0.53), and "),
    ("nameserver 127.0.0.53\n", "nameserver 127.0.0.1\n", "lists no upstream server; set mpsocks_dns"),
    ("search example.org\n", None, "names no nameserver; set mpsocks_dns_servers"),
])
def test_no_reachable_resolver_is_a_clear_error(tmp_path, text, upstream, needle):
    conf = write(tmp_path / "resolv.conf", text)
    stub = write(tmp_path / "upstream.conf", upstream) if upstream else str(tmp_path / "none")
    with pytest.raises(MpsocksError) as caught:
        host_resolvers(conf, stub)
    assert needle in str(caught.value) and conf in str(caught.value)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(MpsocksError) as caught:
        host_resolvers(str(tmp_path / "nope"))
    assert "cannot read the host's resolvers" in str(caught.value)
