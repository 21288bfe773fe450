"""mpsocks-run's command line: uplinks, bad input, help, option placement, what the verbs run."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.locking import Lock
from mpsocks_testlib import SEED_TRACES, lab_name, runner_env

RUNNER = Path(__file__).resolve().parents[2] / "runner"
sys.path.insert(0, str(RUNNER))

from mpsocks import capture, cli, stack  # noqa: E402


def test_uplinks_are_names_or_name_and_gateway():
    assert cli.parse_uplinks("wlp1s0,usb0=192.168.42.129") == [
        "wlp1s0", {"name": "usb0", "gateway": "192.168.42.129"}]
    assert cli.parse_uplinks(" eth0 , wwan0=fe80::1 ") == ["eth0", {"name": "wwan0", "gateway": "fe80::1"}]


@pytest.mark.parametrize(("text", "named"), [
    ("", "no interface"),
    (" , ", "no interface"),
    ("eth0,,usb0", "'eth0,,usb0'"),
    ("a-very-long-name0", "'a-very-long-name0'"),
    ("usb0=192.168.42.300", "'192.168.42.300'"),
    ("usb0=", "''"),
    ("=192.168.42.1", "empty interface name"),
    ("eth/0", "'eth/0'"),
    ("eth0,eth0", "'eth0'"),
])
def test_bad_uplinks_name_the_input(text, named):
    with pytest.raises(argparse.ArgumentTypeError, match=named):
        cli.parse_uplinks(text)


def test_fifteen_characters_is_the_limit():
    assert cli.parse_uplinks("abcdefghijklmno") == ["abcdefghijklmno"]


@pytest.mark.parametrize(("argv", "named"), [
    (["host", "up", "--uplinks", ""], "--uplinks"),
    (["host", "up", "--uplinks", "eth0,a-very-long-name0"], "a-very-long-name0"),
    (["host", "up", "--uplinks", "usb0=gateway"], "'gateway'"),
    (["host", "up"], "--uplinks"),
    (["host", "up", "--uplinks", "eth0", "--netns", "a/b"], "'a/b'"),
    (["host", "sideways"], "sideways"),
    (["frobnicate"], "frobnicate"),
    (["--bogus", "host", "down"], "--bogus"),
    ([], "VERB"),
])
def test_bad_input_is_one_line_exit_5_and_nothing_run(argv, named, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert cli.main([*argv, "--artifacts-dir", str(runs)]) == 5
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("mpsocks-run: error: ") and named in err
    assert not runs.exists()


def test_unexpected_errors_are_one_line_too(tmp_path, capsys):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    assert cli.main(["host", "down", "--artifacts-dir", str(not_a_folder)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mpsocks-run: error: ") and err.count("\n") == 1


@pytest.mark.parametrize("argv", [[], ["host"], ["host", "up"], ["host", "down"]])
def test_help_at_every_level_explains_with_an_example(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out and "mpsocks-run host" in out


def test_python_dash_m_is_the_cli():
    proc = subprocess.run([sys.executable, "-m", "mpsocks", "host", "up", "--uplinks", "x" * 16],
                          capture_output=True, text=True, env=runner_env())
    assert proc.returncode == 5
    assert proc.stderr.startswith("mpsocks-run: error: argument --uplinks: interface name 'xxxx")


@pytest.mark.parametrize("argv", [
    ["-vv", "--check", "--diff", "--artifacts-dir", "/a", "host", "up", "--uplinks", "eth0"],
    ["host", "up", "--uplinks", "eth0", "-vv", "--check", "--diff", "--artifacts-dir", "/a"],
    ["-v", "--check", "host", "up", "--diff", "-v", "--uplinks", "eth0", "--artifacts-dir", "/a"],
])
def test_run_options_go_before_or_after_the_verb(argv):
    args = cli.build_parser().parse_args(argv)
    assert (args.check, args.diff, args.artifacts_dir, args.run_name) == (True, True, Path("/a"), "host-up")
    assert cli.run_options(args).verbosity == 2


def test_verbosity_before_and_after_the_verb_adds_up():
    assert cli.run_options(cli.build_parser().parse_args(["-v", "host", "down", "-vv"])).verbosity == 3
    assert cli.run_options(cli.build_parser().parse_args(["host", "down"])).verbosity == 0


def test_options_are_offered_only_where_they_apply(capsys):
    assert cli.main(["lab", "status", "--check"]) == 5
    assert "unrecognized arguments: --check" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["lab", "status", "--help"])
    assert "--check" not in capsys.readouterr().out


def test_version_names_mpsocks_ansible_core_and_the_kernels_mptcp(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    out = capsys.readouterr().out.splitlines()
    assert exit_.value.code == 0 and len(out) == 3
    assert out[0].startswith("mpsocks-run (mpsocks) ") and out[1].startswith("ansible-core 2.")
    assert out[2].startswith("kernel ") and "MPTCP available (net.mptcp.enabled=1)" in out[2]


def test_help_documents_every_exit_code(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for code in (0, 1, 2, 4, 5, 6, 7, 99, 124):
        assert re.search(rf"^  {code} +\S", out, re.M), code


def test_run_options_default_off():
    args = cli.build_parser().parse_args(["host", "down"])
    assert (args.check, args.diff, args.verbose, args.artifacts_dir, args.run_name) == (
        False, False, 0, None, "host-down")


@pytest.fixture(autouse=True)
def no_stack_up(tmp_path, monkeypatch):
    """up's record in a folder of the test's own, so that a stack up on this machine changes nothing here."""
    monkeypatch.setattr(stack, "STATE_FILE", tmp_path / "up.json")


def _play(argv: list[str]):
    args = cli.build_parser().parse_args(argv)
    return args.play(args)


def test_host_up_runs_host_network_on_the_real_host():
    play = _play(["host", "up", "--uplinks", "wlp1s0,usb0=192.168.42.129"])
    assert play.playbook == RUNNER.parent / "playbooks" / "host_network.yml"
    assert play.inventory == RUNNER.parent / "inventory" / "localhost.yml"
    assert play.extravars == {
        "mpsocks_uplinks": ["wlp1s0", {"name": "usb0", "gateway": "192.168.42.129"}],
        "mpsocks_state": "present",
    }


def test_host_down_in_a_namespace():
    play = _play(["host", "down", "--netns", "DOES-NOT-MATTER"])
    assert play.playbook.name == "host_network.yml"
    assert play.extravars == {
        "mpsocks_target": "DOES-NOT-MATTER", "mpsocks_uplinks": [], "mpsocks_state": "absent"}
    assert play.inventory == {"all": {"hosts": {"DOES-NOT-MATTER": {
        "ansible_connection": "mpsocks.mptcp.netns",
        "ansible_host": "DOES-NOT-MATTER",
        "ansible_python_interpreter": sys.executable,
    }}}}


def test_lab_up_passes_the_settings_to_the_lab_playbook():
    play = _play(["lab", "up", "--name", "demo", "--rates", "20,5", "--middlebox", "1=optimizer",
                  "--optimizer-rate", "40", "--hops", "6"])
    assert play.playbook == RUNNER.parent / "playbooks" / "lab.yml"
    assert play.inventory == RUNNER.parent / "inventory" / "localhost.yml"
    assert play.extravars == {
        "mpsocks_lab_state": "present", "mpsocks_lab_name": "demo", "mpsocks_lab_hops": 6,
        "mpsocks_lab_host_netns": True,
        "mpsocks_lab_uplinks": [{"rate_mbit": 20.0, "middlebox": "none"},
                                {"rate_mbit": 5.0, "middlebox": "optimizer", "optimizer_rate_mbit": 40.0}],
    }


def test_lab_defaults_and_down():
    up = _play(["lab", "up"])
    assert up.extravars["mpsocks_lab_name"] == "mpslab" and up.extravars["mpsocks_lab_hops"] == 12
    assert [u["rate_mbit"] for u in up.extravars["mpsocks_lab_uplinks"]] == [20.0, 20.0]
    assert _play(["lab", "up", "--root-uplinks"]).extravars["mpsocks_lab_host_netns"] is False
    assert _play(["lab", "down", "--name", "x1"]).extravars == {"mpsocks_lab_state": "absent",
                                                                "mpsocks_lab_name": "x1"}


@pytest.mark.parametrize(("argv", "named"), [
    (["lab", "up", "--rates", "20,"], "'' is not a rate"),
    (["lab", "up", "--rates", "0"], "rate 0 is outside"),
    (["lab", "up", "--middlebox", "one=strip"], "'one=strip' is not UPLINK=KIND"),
    (["lab", "up", "--middlebox", "5=strip"], "--middlebox: there is no uplink 5"),
    (["lab", "up", "--hops", "99"], "hops: 99 is outside 1..40"),
    (["lab", "up", "--name", "Big"], "'Big' is not a lab name"),
    (["lab", "status", "--name", "a-b"], "'a-b' is not a lab name"),
])
def test_bad_lab_input_is_one_line_exit_5(argv, named, tmp_path, capsys):
    assert cli.main([*argv, "--artifacts-dir", str(tmp_path / "runs")]) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv", [["lab"], ["lab", "up"], ["lab", "down"], ["lab", "status"]])
def test_lab_help_has_an_example(argv, capsys):
    with pytest.raises(SystemExit):
        cli.main([*argv, "--help"])
    assert "mpsocks-run lab" in capsys.readouterr().out


def test_one_run_per_target_no_wait_fails_at_once(capsys):
    name = lab_name("lk")
    lock = Lock(f"run-lab-{name}", purpose="a test holding the lab")
    assert lock.acquire(wait=0)
    try:
        assert cli.main(["--no-wait", "lab", "down", "--name", name]) == 6
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"lab-{name} is busy: pid {os.getpid()} a test holding the lab" in err
    finally:
        lock.release()


def test_a_second_run_waits_for_the_first_and_says_so(tmp_path):
    name = lab_name("lk")
    lock = Lock(f"run-lab-{name}", purpose="a test holding the lab")
    assert lock.acquire(wait=0)
    proc = subprocess.Popen([sys.executable, "-m", "mpsocks", "lab", "down", "--name", name,
                             "--artifacts-dir", str(tmp_path)], env=runner_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        waiting = proc.stderr.readline()
        expected = f"mpsocks-run: waiting for pid {os.getpid()} a test holding the lab"
        assert waiting.startswith(expected), waiting
        assert proc.poll() is None
    finally:
        lock.release()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert "changed=0" in out





def test_analyze_is_a_verb_of_mpsocks_run(capsys, tmp_path):
    assert cli.main(["analyze", *sorted(str(p) for p in SEED_TRACES.iterdir())]) == 0
    assert "Middlebox verdict: terminating-proxy" in capsys.readouterr().out
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    assert cli.main(["analyze", str(empty)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and str(empty) in err


def test_up_needs_uplinks_or_a_lab(capsys):
    for argv, needle in ((["up"], "give --uplinks IF,IF... (your uplinks) or --lab"),
                         (["up", "--backend", "netns", "--uplinks", "eth0", "--kernel", "distro"],
                          "--kernel distro: for a VM guest only (--backend libvirt)"),
                         (["up", "--backend", "netns", "--uplinks", "eth0", "--accelerator", "kvm"],
                          "--accelerator kvm: for a VM guest only (--backend libvirt)"),
                         (["up", "--lab", "--uplinks", "eth0"], "eth0 is not an uplink of lab mpslab"),
                         (["up", "--lab", "--via-guest", "198.19.0.0/33"],
                          "'198.19.0.0/33' is not a destination")):
        assert cli.main(argv) == 5
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err


def test_up_on_uplinks_of_the_real_host():
    play = _play(["up", "--backend", "netns", "--uplinks", "wlp1s0,usb0=192.168.42.129:backup",
                  "--via-guest", "198.19.0.0/24"])
    assert play.playbook.name == "boot_socks.yml" and play.target == "stack"
    assert play.extravars["mpsocks_uplinks"] == [
        "wlp1s0", {"name": "usb0", "backup": True, "gateway": "192.168.42.129"}]
    assert play.extravars["mpsocks_via_guest"] == ["198.19.0.0/24"]
    assert play.extravars["mpsocks_guest_netns"] == "mpsocks-guest"
    groups = play.inventory["all"]["children"]
    assert list(groups["mpsocks_host"]["hosts"]) == ["localhost"]
    assert groups["mpsocks_guest"]["hosts"]["mpsocks-guest"]["ansible_connection"] == "mpsocks.mptcp.netns"


def test_up_on_a_vm_reaches_it_over_ssh_through_the_first_tap():
    play = _play(["up", "--uplinks", "wlp1s0,usb0"])  # the default backend
    assert play.extravars["mpsocks_backend"] == "libvirt"
    assert play.extravars["mpsocks_guest_run_dir"] == "/run/mpsocks/guest"  # the VM's own /run
    guest = play.inventory["all"]["children"]["mpsocks_guest"]["hosts"]["mpsocks-guest"]
    assert guest["ansible_connection"] == "ssh" and guest["ansible_host"] == "10.66.6.2"
    assert guest["ansible_ssh_private_key_file"] == "/var/lib/mpsocks/ssh/id_ed25519"
    known_hosts = "UserKnownHostsFile=/var/lib/mpsocks/guests/mpsocks-guest/known_hosts"
    assert known_hosts in guest["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in guest["ansible_ssh_common_args"] and guest["ansible_ssh_pipelining"]


def test_a_vm_boots_the_built_kernel_or_the_images_own():
    assert _play(["up", "--uplinks", "eth0", "--backend", "libvirt"]).extravars["mpsocks_vm_kernel_source"] \
        == "built"
    play = _play(["up", "--uplinks", "eth0", "--backend", "libvirt", "--kernel", "distro"])
    assert play.extravars["mpsocks_vm_kernel_source"] == "distro"
    netns = _play(["up", "--backend", "netns", "--uplinks", "eth0"])
    assert "mpsocks_vm_kernel_source" not in netns.extravars


def test_down_purge_also_removes_what_the_vm_backend_keeps():
    assert "mpsocks_purge" not in _play(["down"]).extravars
    assert _play(["down", "--purge"]).extravars["mpsocks_purge"] is True


def test_a_vm_needs_a_lab_with_its_uplinks_in_the_root_namespace(tmp_path):
    name = lab_name("u")
    (tmp_path / name).mkdir()
    (tmp_path / name / "lab.json").write_text(json.dumps({
        "host_netns": f"{name}-host", "uplinks": [], "servers": {"check": "http://198.19.0.10/"}}))
    with pytest.raises(stack.MpsocksError, match=f"lab {name} has its uplinks in namespace {name}-host, "
                       "where libvirtd cannot give the VM taps: mpsocks-run lab down --name"):
        stack.lab_stack(name, [], run_root=str(tmp_path), backend="libvirt")
    built, running = stack.lab_stack(name, [], run_root=str(tmp_path))
    assert running and built.host_netns == f"{name}-host"
    # Not up yet: the lab up makes has its uplinks in the root namespace.
    built, running = stack.lab_stack(f"{name}z", [], run_root=str(tmp_path), backend="libvirt")
    assert not running and built.host_netns is None and built.backend == "libvirt"


def test_up_in_a_lab_that_is_not_up_brings_it_up_first():
    name = lab_name("u")
    play = _play(["up", "--backend", "netns", "--lab", name])
    assert play.extravars["mpsocks_lab_name"] == name
    assert play.extravars["mpsocks_uplinks"] == [{"name": "lab0", "gateway": "198.18.0.1", "rate_mbit": 20},
                                                 {"name": "lab1", "gateway": "198.18.1.1", "rate_mbit": 20}]
    assert play.extravars["mpsocks_guest_netns"] == f"{name}-guest"
    assert list(play.inventory["all"]["children"]["mpsocks_host"]["hosts"]) == [f"{name}-host"]
    backup = _play(["up", "--backend", "netns", "--lab", name, "--uplinks", "lab0,lab1:backup"])
    assert backup.extravars["mpsocks_uplinks"] == [
        {"gateway": "198.18.0.1", "name": "lab0", "rate_mbit": 20},
        {"gateway": "198.18.1.1", "name": "lab1", "rate_mbit": 20, "backup": True}]


def test_up_rates_go_with_the_uplinks_in_order():
    play = _play(["up", "--uplinks", "wlp1s0,usb0:active", "--rates", "20,2"])
    assert play.extravars["mpsocks_uplinks"] == [{"name": "wlp1s0", "rate_mbit": 20.0},
                                                 {"name": "usb0", "backup": False, "rate_mbit": 2.0}]
    assert _play(["up", "--uplinks", "usb0=fe80::1:backup"]).extravars["mpsocks_uplinks"] == [
        {"name": "usb0", "backup": True, "gateway": "fe80::1"}]


@pytest.mark.parametrize("argv, message", [
    (["up", "--uplinks", "wlp1s0,usb0", "--rates", "20"], "--rates: 1 rate(s) for 2 uplinks"),
    (["up", "--lab", "--rates", "20,2"], "--rates: a lab's uplinks have the rates the lab was made with"),
    (["up", "--uplinks", "wlp1s0", "--rates", "0"], "rate 0 is outside"),
])
def test_up_rates_that_do_not_fit_are_usage_errors(argv, message, capsys):
    assert cli.main(argv) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_build_verbs_run_their_playbooks(tmp_path):
    kernel = _play(["build", "kernel", "--git", "https://example.invalid/linux.git@v6.6", "--option",
                    "CONFIG_MPTCP=y"])
    assert kernel.playbook.name == "build_kernel.yml" and kernel.target == "build-kernel"
    assert kernel.extravars == {"mpsocks_kernel_base": "tinyconfig",
                                "mpsocks_kernel_git_repo": "https://example.invalid/linux.git",
                                "mpsocks_kernel_git_ref": "v6.6",
                                "mpsocks_kernel_fragment": ["CONFIG_MPTCP=y"]}
    assert _play(["build", "image"]).playbook.name == "install_vm_extra.yml"
    assert _play(["build", "image", "--base"]).playbook.name == "build_image.yml"


def test_capture_needs_a_stack_that_is_up(capsys, tmp_path):
    assert cli.main(["capture", "--seconds", "1"]) == 3
    err = capsys.readouterr().err
    assert err == "mpsocks-run: error: nothing is up: mpsocks-run up first, then capture its uplinks\n"
    stack.save(stack.Stack(guest=lab_name("gone"), uplinks=["eth0"]))  # recorded, but its guest is gone
    assert cli.main(["capture", "--seconds", "1"]) == 3
    assert cli.main(["capture", "--seconds", "0"]) == 5
    assert "--seconds: '0' is not a whole number of at least 1" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.pcapng*"))


def test_capture_takes_the_uplinks_and_with_guest_links_the_links_to_the_guest():
    recorded = stack.Stack(uplinks=["wlp1s0", {"name": "usb0", "backup": True}])
    assert capture.interfaces_of(recorded, guest_links=False) == ["wlp1s0", "usb0"]
    assert capture.interfaces_of(recorded, guest_links=True) == ["wlp1s0", "usb0", "mptcp0", "mptcp1"]


def test_every_verb_has_a_help_that_prints(capsys):
    """argparse reads help texts as %-templates: each verb's --help must print, not raise."""
    def walk(parser, argv):
        yield argv
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, [*argv, name])

    for argv in walk(cli.build_parser(), []):
        with pytest.raises(SystemExit) as done:
            cli.main([*argv, "--help"])
        assert done.value.code == 0, argv
        assert capsys.readouterr().out.startswith("usage: mpsocks-run"), argv
