"""lab up from a topology file, and never a silent reshape: what differs from the running lab is named."""

import re
import sys
from pathlib import Path

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.lab import lab_plan

RUNNER = Path(__file__).resolve().parents[2] / "runner"
sys.path.insert(0, str(RUNNER))

from mpsocks import cli, lab  # noqa: E402

TOPOLOGY = """\
name: topo
hops: 6
uplinks:
  - 20
  - {rate_mbit: 5, middlebox: optimizer, optimizer_rate_mbit: 40}
"""


def _play(argv):
    args = cli.build_parser().parse_args(argv)
    return args.play(args)


def test_a_topology_file_gives_what_the_flags_give(tmp_path):
    (tmp_path / "lab.yml").write_text(TOPOLOGY)
    from_file = _play(["lab", "up", "-t", str(tmp_path / "lab.yml")])
    from_flags = _play(["lab", "up", "--name", "topo", "--hops", "6", "--rates", "20,5", "--middlebox",
                        "1=optimizer", "--optimizer-rate", "40"])
    assert from_file.target == from_flags.target == "lab-topo"
    settings = {key.removeprefix("mpsocks_lab_"): value for key, value in from_file.extravars.items()}
    del settings["state"]
    assert lab.shape_differences(lab_plan(settings)["settings"],
                                 {key.removeprefix("mpsocks_lab_"): value for key, value
                                  in from_flags.extravars.items() if key != "mpsocks_lab_state"}) == []
    assert _play(["lab", "up", "-t", str(tmp_path / "lab.yml"), "--name", "other"]).target == "lab-other"


@pytest.mark.parametrize(("text", "message"), [
    ("hops: [", "not YAML (line 1)"),
    ("- 20\n", "a topology is a mapping of name, uplinks, hops, root_uplinks"),
    ("hops: 3\nrouters: 2\n", "unknown key 'routers' (known: name, uplinks, hops, root_uplinks)"),
    ("hops: 99\n", "hops: 99 is outside 1..40"),
    ("uplinks: [20, {middlebox: firewall}]\n", "uplinks[1].middlebox: 'firewall' is not one of"),
    ("root_uplinks: maybe\n", "root_uplinks: 'maybe' is not true or false"),
])
def test_a_bad_topology_is_one_line_naming_the_file_and_key(tmp_path, capsys, text, message):
    path = tmp_path / "lab.yml"
    path.write_text(text)
    assert cli.main(["lab", "up", "-t", str(path)]) == 5
    err = capsys.readouterr().err
    assert f"{path}: {message}" in err and len(err.strip().splitlines()) == 1, err


def test_a_topology_file_and_shape_flags_do_not_mix(tmp_path, capsys):
    (tmp_path / "lab.yml").write_text(TOPOLOGY)
    assert cli.main(["lab", "up", "-t", str(tmp_path / "lab.yml"), "--hops", "3"]) == 5
    assert "--hops: -t " in capsys.readouterr().err


def test_a_running_lab_is_never_reshaped_unasked(tmp_path, monkeypatch, capsys):
    running = lab_plan({"name": "shaped", "hops": 3, "uplinks": [20, 5]})
    monkeypatch.setattr(lab, "recorded_plan", lambda name: running if name == "shaped" else None)
    assert _play(["lab", "up", "--name", "shaped", "--hops", "3", "--rates", "20,5"]).target == "lab-shaped"
    assert cli.main(["--check", "lab", "up", "--name", "shaped"]) == 5
    err = capsys.readouterr().err
    assert ("lab shaped is up with another shape (hops 3, not 12; uplink 1 rate_mbit 5, not 20): give "
            "--reconfigure to reshape it, or mpsocks-run lab down --name shaped first") in err, err
    play = _play(["lab", "up", "--name", "shaped", "--reconfigure", "--middlebox", "0=strip"])
    assert play.extravars["mpsocks_lab_uplinks"][0]["middlebox"] == "strip"


def test_shape_differences_name_every_change():
    recorded = lab_plan({"hops": 4, "uplinks": [20, {"rate_mbit": 5, "middlebox": "optimizer"}]})["settings"]
    assert lab.shape_differences(recorded, {"hops": 4, "uplinks": [20, 5, 5], "host_netns": False}) == [
        "uplinks in a lab host namespace, not the root namespace", "2 uplinks, not 3",
        "uplink 1 middlebox optimizer, not none"]
    assert lab.shape_differences(recorded, recorded) == []


@pytest.mark.parametrize(("argv", "message"), [
    (["--middlebox", "1=strip", "--middlebox", "1=optimizer"],
     "--middlebox: uplink 1 is given twice (1=strip, 1=optimizer)"),
    (["--rates", "0"], "argument --rates: rate 0 is outside 0.1..10000 Mbit/s"),
    (["--optimizer-rate", "20000"], "argument --optimizer-rate: rate 20000 is outside 0.1..10000 Mbit/s"),
    (["--hops", "0"], "argument --hops: 0 is outside 1..40"),
])
def test_flag_errors_name_the_flag_and_its_real_range(capsys, argv, message):
    assert cli.main(["lab", "up", "--name", "flags", *argv]) == 5
    assert message in capsys.readouterr().err


def test_middlebox_help_lists_every_kind_and_how_uplinks_count(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # no line wrapped inside drop-mptcp
    with pytest.raises(SystemExit):
        cli.main(["lab", "up", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(none, optimizer, strip, drop-mptcp) on the ISP of uplink N, counting from 0" in text


def test_the_readme_topology_is_valid(tmp_path):
    readme = (RUNNER.parent / "README.md").read_text()
    blocks = re.findall(r"^```yaml\n(.*?)^```$", readme, re.M | re.S)
    (text,) = [block for block in blocks if block.startswith("name: ")]
    (tmp_path / "lab.yml").write_text(text)
    settings = lab.topology_settings(tmp_path / "lab.yml")
    plan = lab_plan(settings)
    assert (plan["name"], plan["hops"], [u["middlebox"] for u in plan["uplinks"]]) == (
        "demo", 6, ["none", "optimizer"])
