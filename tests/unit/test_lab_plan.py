"""The lab's plan: names, addresses, hops, shapers, middleboxes, servers, and bad settings."""

import ipaddress
from pathlib import Path

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.lab import lab_plan


def test_default_lab_is_two_uplinks_twelve_hops_in_namespaces():
    plan = lab_plan({})
    assert plan["host_netns"] == "mpslab-host"
    assert plan["namespaces"] == (["mpslab-host", "mpslab-isp0", "mpslab-isp1"]
                                  + [f"mpslab-r{j}" for j in range(1, 12)] + ["mpslab-net"])
    uplinks = [(u["name"], u["address"], u["gateway"], u["rate_mbit"], u["middlebox"])
               for u in plan["uplinks"]]
    assert uplinks == [
        ("lab0", "198.18.0.2/24", "198.18.0.1", 20, "none"),
        ("lab1", "198.18.1.2/24", "198.18.1.1", 20, "none")]
    assert plan["server_ttl_at_host"] == 52 and plan["owner"] == "lab:mpslab"
    assert [r["netns"] for r in plan["policy_routes"]] == ["mpslab-host", "mpslab-host"]
    assert plan["servers"] == {"check": "http://198.19.0.10/", "download": "http://198.19.0.11/",
                               "plain": "http://198.19.0.12/"}
    assert [m["kind"] for m in plan["middleboxes"]] == ["none", "none"]
    assert {d["name"] for d in plan["daemons"]} == {"check", "download", "plain", "dns"}
    assert plan["daemons"][0]["argv"][:2] == ["python3", "/run/mpsocks/lab/mpslab/mpsocks_lab_server.py"]
    assert plan["namespace_config"] == [{"name": netns} for netns in plan["namespaces"]]
    assert plan["mptcp_endpoints"] == [{"netns": "mpslab-host", "address": "198.18.1.2", "dev": "lab1",
                                        "flags": ["subflow"]}]
    assert [limits["netns"] for limits in plan["mptcp_limits"]] == ["mpslab-net", "mpslab-host"]


def test_every_list_is_its_modules_config():
    """The role hands each list to one module call: its items hold that module's options only."""
    options = {
        "links": {"netns", "name", "addresses", "peer_netns", "peer", "peer_addresses"},
        "sysctls": {"netns", "name", "value"},
        "routes": {"netns", "to", "via", "dev", "metric"},
        "policy_routes": {"netns", "table", "source", "destination", "routes"},
        "shapers": {"netns", "dev", "rate_mbit", "classes"},
        "middleboxes": {"netns", "interface", "kind", "proxy_port"},
        "mptcp_limits": {"netns", "subflows", "add_addr_accepted", "enabled"},
        "mptcp_endpoints": {"netns", "address", "dev", "flags"},
        "daemons": {"netns", "name", "argv", "ready_port"},
    }
    for settings in ({}, {"host_netns": False, "uplinks": [20, {"middlebox": "optimizer"}]}):
        plan = lab_plan(settings)
        for key, allowed in options.items():
            assert all(set(item) <= allowed for item in plan[key]), (key, plan[key])


def _sides(link):
    """Both ends of a veth as (netns, addresses), each with the other end."""
    near, far = (link["netns"], link["addresses"]), (link["peer_netns"], link["peer_addresses"])
    return ((near, far), (far, near))


def _next_hop(plan, netns, destination):
    """The namespace a packet to DESTINATION goes to from NETNS (None: delivered), from the plan alone."""
    dest = ipaddress.ip_address(destination)
    ends = [(here, there) for link in plan["links"] for here, there in _sides(link) if here[0] == netns]
    if any(dest in ipaddress.ip_interface(a).network for here, _ in ends for a in here[1]):
        return None  # on a connected subnet (or the namespace's own address)
    matching = [r for r in plan["routes"] if r["netns"] == netns
                and (r["to"] == "default" or dest in ipaddress.ip_network(r["to"]))]
    best = max(
        matching, key=lambda r: -1 if r["to"] == "default" else ipaddress.ip_network(r["to"]).prefixlen)
    gateway = ipaddress.ip_address(best["via"])
    for _, there in ends:
        if any(ipaddress.ip_interface(a).ip == gateway for a in there[1]):
            return there[0]
    raise AssertionError(f"{netns}: no neighbour holds {gateway}")


@pytest.mark.parametrize("hops", [1, 2, 12])
def test_a_packet_crosses_exactly_hops_routers_each_way(hops):
    plan = lab_plan({"hops": hops, "uplinks": [20, 20, 20]})
    server_netns = plan["server_netns"]
    for uplink in plan["uplinks"]:
        # towards the server: the host hands to its ISP (source routing), then routes
        path, netns = [], uplink["isp_netns"]
        while netns is not None:
            path.append(netns)
            netns = _next_hop(plan, netns, "198.19.0.10")
        assert path[-1] == server_netns and len(path) - 1 == hops
        # back to the host's uplink address
        path, netns = [], server_netns
        while netns is not None:
            path.append(netns)
            netns = _next_hop(plan, netns, uplink["address"].split("/")[0])
        assert path[-1] == uplink["isp_netns"] and len(path) - 1 == hops  # the ISP delivers to the host


def test_dns_server_names_every_server_and_answers_only_them():
    plan = lab_plan({"hops": 3})
    dns = plan["dns"]
    assert dns == {"address": "198.19.0.53", "domain": "lab.test", "names": {
        "check.lab.test": "198.19.0.10", "download.lab.test": "198.19.0.11", "plain.lab.test": "198.19.0.12",
        "dns.lab.test": "198.19.0.53"}}
    listening = {d["argv"][d["argv"].index("--listen") + 1]: d["name"] for d in plan["daemons"]
                 if "--listen" in d["argv"]}
    for name, address in dns["names"].items():
        server = name.split(".")[0]
        assert listening.get(f"{address}:80", "dns") == server, name
        assert plan["servers"].get(server, f"http://{address}/") == f"http://{address}/"
    (daemon,) = [d for d in plan["daemons"] if d["name"] == "dns"]
    assert daemon["netns"] == plan["server_netns"] and daemon["ready_port"] == 53
    argv = daemon["argv"]
    assert argv[:2] == ["dnsmasq", "--keep-in-foreground"]
    assert {"--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--listen-address=198.19.0.53",
            "--local=/lab.test/"} <= set(argv)
    assert not [arg for arg in argv if arg.startswith(("--dhcp", "--server", "--interface"))]
    assert sorted(arg.split("=", 1)[1] for arg in argv if arg.startswith("--host-record=")) == sorted(
        f"{name},{address}" for name, address in dns["names"].items())
    # the address is the server namespace's, and every ISP's packets get there
    assert "198.19.0.53/32" in [a for link in plan["links"] if link["peer_netns"] == plan["server_netns"]
                                for a in link["peer_addresses"]]
    for uplink in plan["uplinks"]:
        netns, hops = uplink["isp_netns"], 0
        while netns is not None and hops < 10:
            last, netns, hops = netns, _next_hop(plan, netns, "198.19.0.53"), hops + 1
        assert last == plan["server_netns"]


def test_addresses_are_unique_and_inside_the_benchmarking_block():
    plan = lab_plan({"uplinks": [1] * 8, "hops": 40})
    addresses = [a for link in plan["links"] for a in link["addresses"] + link["peer_addresses"]]
    assert len(addresses) == len(set(addresses))
    block = ipaddress.ip_network("198.18.0.0/15")
    assert all(ipaddress.ip_interface(a).ip in block for a in addresses)
    assert len(plan["namespaces"]) == len(set(plan["namespaces"])) == 1 + 8 + 39 + 1


def test_middleboxes_optimizer_rate_and_shapers():
    plan = lab_plan({"uplinks": [20, {"rate_mbit": 5, "middlebox": "optimizer", "optimizer_rate_mbit": 40},
                                 {"middlebox": "strip"}]})
    assert [(m["netns"], m["kind"]) for m in plan["middleboxes"]] == [
        ("mpslab-isp0", "none"), ("mpslab-isp1", "optimizer"), ("mpslab-isp2", "strip")]
    shaper = [s for s in plan["shapers"] if s["netns"] == "mpslab-isp1" and s["dev"] == "cust"][0]
    assert shaper["rate_mbit"] == 5 and shaper["classes"] == [{"id": 0x20, "rate_mbit": 40}]
    optimizer = [d for d in plan["daemons"] if d["name"] == "optimizer-isp1"][0]
    assert optimizer["netns"] == "mpslab-isp1" and "--priority" in optimizer["argv"]
    assert optimizer["argv"][optimizer["argv"].index("--priority") + 1] == str(0x10020)
    assert len(plan["shapers"]) == 6  # both directions of each uplink


def test_root_mode_adds_only_lab_interfaces_rules_and_tables():
    plan = lab_plan({"host_netns": False, "uplink_prefix": "tlab", "table_base": 7000})
    assert plan["host_netns"] is None and "mpslab-host" not in plan["namespaces"]
    assert [link["name"] for link in plan["links"] if link["netns"] is None] == ["tlab0", "tlab1"]
    assert [route for route in plan["routes"] if route["netns"] is None] == []  # main table untouched
    assert [(rule["table"], rule["netns"]) for rule in plan["policy_routes"]] == [
        (7000, None), (7001, None), (7008, None)]
    assert plan["policy_routes"][-1]["destination"] == "198.18.0.0/15"
    assert plan["mptcp_endpoints"] == [] and plan["tables"] == list(range(7000, 7009))


@pytest.mark.parametrize("settings, needle", [
    ({"name": "Lab"}, "name: 'Lab'"),
    ({"name": "a-b"}, "name: 'a-b'"),
    ({"uplinks": []}, "uplinks: give 1 to 8"),
    ({"uplinks": [20] * 9}, "uplinks: give 1 to 8"),
    ({"uplinks": [0]}, "uplinks[0].rate_mbit: 0 is outside"),
    ({"uplinks": ["fast"]}, "uplinks[0].rate_mbit: 'fast' is not a number"),
    ({"uplinks": [{"middlebox": "nat"}]}, "uplinks[0].middlebox: 'nat' is not one of"),
    ({"uplinks": [{"optimizer_rate_mbit": 5}]}, "only an optimizer uplink"),
    ({"uplinks": [{"speed": 5}]}, "uplinks[0]: unknown setting 'speed'"),
    ({"hops": 0}, "hops: 0 is outside 1..40"),
    ({"hops": 2.5}, "hops: 2.5 is not an integer"),
    ({"host_netns": "yes"}, "host_netns: 'yes' is not a boolean"),
    ({"uplink_prefix": "eth"}, None),
    ({"uplink_prefix": "averylongprefix"}, "uplink_prefix"),
    ({"run_root": "relative"}, "run_root: 'relative' is not an absolute path"),
    ({"colour": "red"}, "lab: unknown setting 'colour'"),
])
def test_bad_settings_give_one_line_naming_the_setting(settings, needle):
    if needle is None:
        lab_plan(settings)
        return
    with pytest.raises(MpsocksError) as error:
        lab_plan(settings)
    assert needle in str(error.value) and "\n" not in str(error.value)


def test_lab_inventory_names_the_default_labs_namespaces():
    import yaml

    inventory = yaml.safe_load((Path(__file__).parents[2] / "inventory" / "lab.yml").read_text())
    hosts = {host for group in inventory["all"]["children"].values() for host in group["hosts"]}
    plan = lab_plan({})
    assert hosts == set(plan["namespaces"]) | {"mpslab-guest"}  # the guest of mpsocks-run up --lab
    generated = plan["inventory"]["all"]["children"]  # what the lab writes into its run folder
    assert {group: set(generated[group]["hosts"]) for group in generated} == {
        group: set(inventory["all"]["children"][group]["hosts"]) for group in generated}
    assert inventory["all"]["vars"]["ansible_connection"] == "mpsocks.mptcp.netns"
