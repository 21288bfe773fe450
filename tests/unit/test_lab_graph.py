"""mpsocks-run lab graph and exec, and the lab's own inventory: drawn and derived from the plan alone."""

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.lab import lab_plan

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "runner"))

from mpsocks import cli, lab  # noqa: E402

SHAPES = [
    {"name": "gdemo", "hops": 3, "uplinks": [20, {"rate_mbit": 5, "middlebox": "optimizer"}]},
    {"name": "groot", "hops": 2, "host_netns": False, "uplinks": [10, 10, 10]},
]


@pytest.mark.parametrize("settings", SHAPES, ids=[shape["name"] for shape in SHAPES])
def test_mermaid_has_every_namespace_and_link(settings):
    plan = lab_plan(settings)
    text = lab.graph(plan, "mermaid")
    ids = dict(re.findall(r'^  (n\d+)\["([^<]+)<br/>', text, re.M))
    root = [] if plan["host_netns"] else [lab.ROOT_NAMESPACE]
    assert sorted(ids.values()) == sorted(plan["namespaces"] + root)
    edges = [(ids[a], ids[b]) for a, b in re.findall(r"^  (n\d+) ---\|.*\| (n\d+)$", text, re.M)]
    assert edges == [(link["netns"] or lab.ROOT_NAMESPACE, link["peer_netns"]) for link in plan["links"]]
    for link in plan["links"]:
        assert f'"{link["name"]} {link["addresses"][0]} : {link["peer"]} {link["peer_addresses"][0]}"' in text


@pytest.mark.parametrize("settings", SHAPES, ids=[shape["name"] for shape in SHAPES])
def test_graphviz_reads_the_dot_graph(settings):
    plan = lab_plan(settings)
    svg = subprocess.run(["dot", "-Tsvg"], input=lab.graph(plan, "dot"), capture_output=True, text=True,
                         check=True)
    for netns in plan["namespaces"]:
        assert f"<title>{html.escape(netns).replace('-', '&#45;')}</title>" in svg.stdout
    assert svg.stdout.count('class="edge"') == len(plan["links"])


def test_the_readme_shows_the_default_lab():
    readme = (REPO / "README.md").read_text()
    (shown,) = re.findall(r"^```mermaid\n(.*?)^```$", readme, re.M | re.S)
    assert shown == lab.graph(lab_plan({}), "mermaid")


def test_nodes_are_named_as_in_the_lab():
    plan = lab_plan({"name": "gdemo", "hops": 3})
    assert [lab.node_netns(plan, node) for node in ("host", "isp1", "r2", "net", "guest", "gdemo-r1")] == [
        "gdemo-host", "gdemo-isp1", "gdemo-r2", "gdemo-net", "gdemo-guest", "gdemo-r1"]
    with pytest.raises(lab.MpsocksError, match=r"^lab gdemo has no node 'r3' \(its nodes: host, isp0, isp1, "
                                               r"r1, r2, net, guest\)$"):
        lab.node_netns(plan, "r3")


@pytest.mark.parametrize("settings", SHAPES, ids=[shape["name"] for shape in SHAPES])
def test_the_inventory_groups_every_namespace(settings):
    plan = lab_plan(settings)
    groups = plan["inventory"]["all"]["children"]
    hosts = [host for group in groups.values() for host in group["hosts"]]
    assert sorted(hosts) == sorted(plan["namespaces"] + ([] if plan["host_netns"] else ["localhost"]))
    assert list(groups["lab_routers"]["hosts"]) == plan["routers"]
    assert list(groups["lab_servers"]["hosts"]) == [plan["server_netns"]]


def test_inspect_is_status_for_containerlab_hands(capsys):
    assert cli.main(["lab", "inspect", "--name", "nolabhere"]) == 3
    assert capsys.readouterr().out.startswith("lab nolabhere: not up (no plan in /run/mpsocks/lab/nolabhere)")
    assert cli.main(["lab", "graph", "--name", "nolabhere"]) == 3
    assert "lab nolabhere is not up: mpsocks-run lab up --name nolabhere first" in capsys.readouterr().err
