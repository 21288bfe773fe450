"""The README's commands, run exactly as written: a line a new user copies must work.

Each ``sh`` block of the README sections named below is run line by line with ``bash -c``; a line
that is not a command is the output the command before it must print (client ports may differ).
The host's quick start runs inside a namespace holding uplinks named as in the README (wlp1s0, and
usb0 with its gateway 192.168.42.129), so the machine's own network is never touched; the lab runs
where the README runs it. mpsocks-run comes from the test virtualenv (PATH), as install.sh links it.
"""

import fcntl
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mpsocks_testlib import REPO, assert_unchanged, sh, snapshot, unique_name

COMMANDS = ("mpsocks-run", "ip", "ansible-playbook", "runner/install.sh")
LAB_LOCK = "/run/lock/mpsocks-readme-lab.lock"  # the README's lab has one name: one such test at a time
STUDY_LOCK = "/run/lock/mpsocks-readme-study.lock"  # so has the study's lab, and its output folder


def blocks(section: str, kind: str = "sh") -> list[list[str]]:
    """The lines of every KIND code block (``sh``, or '' for plain) under README heading SECTION."""
    text = (REPO / "README.md").read_text()
    body = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert body, f"README has no section {section!r}"
    found, current, language = [], None, None
    for line in body[1].splitlines():
        if line.startswith("```") and current is None:
            current, language = [], line[3:].strip()
        elif line.startswith("```"):
            if language == kind:
                found.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return found


def steps(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) in order."""
    found = []
    for line in lines:
        if line.split(" ", 1)[0] in COMMANDS:
            found.append((line, []))
        else:
            assert found, f"output before any command: {line!r}"
            found[-1][1].append(line)
    return found


def expected_pattern(line: str) -> str:
    """An output line as a pattern: a client's port may be any port."""
    return re.sub(r":\d+", r":\\d+", re.escape(line))


def run_steps(found, env, netns=None, timeout=600):
    for command, output in found:
        argv = ["bash", "-c", command]
        if netns:
            argv = ["ip", "netns", "exec", netns] + argv
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
        print(f"$ {command}\n{proc.stdout[-2000:]}")
        assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
        for line in output:
            assert re.search(expected_pattern(line), proc.stdout), f"{command}: no {line!r} in\n{proc.stdout}"


@pytest.fixture
def readme_env(tmp_path):
    bin_dir = str(Path(sys.executable).parent)
    return {"PATH": f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(tmp_path), "LANG": "C.UTF-8"}


@pytest.fixture
def readme_uplinks(netns):
    """wlp1s0 (gateway 10.199.0.1, the default route) and usb0 (gateway 192.168.42.129) inside NETNS."""
    gateways = []
    try:
        for name, address, gateway in (("wlp1s0", "10.199.0.2/24", "10.199.0.1"),
                                       ("usb0", "192.168.42.204/24", "192.168.42.129")):
            gw_ns = unique_name("mpstg")
            subprocess.run(["ip", "netns", "add", gw_ns], check=True)
            gateways.append(gw_ns)
            sh("ip", "link", "add", name, "netns", netns, "type", "veth", "peer", "name", "gw",
               "netns", gw_ns)
            sh("ip", "link", "set", name, "addrgenmode", "none", netns=netns)
            sh("ip", "addr", "add", address, "dev", name, netns=netns)
            sh("ip", "link", "set", name, "up", netns=netns)
            sh("ip", "addr", "add", f"{gateway}/24", "dev", "gw", netns=gw_ns)
            sh("ip", "link", "set", "gw", "up", netns=gw_ns)
            metric = "100" if name == "wlp1s0" else "200"
            sh("ip", "route", "add", "default", "via", gateway, "dev", name, "metric", metric, netns=netns)
        yield netns
    finally:
        for gw_ns in gateways:
            subprocess.run(["ip", "netns", "del", gw_ns], check=False)


def test_host_quick_start_as_written(readme_uplinks, readme_env):
    before = snapshot(readme_uplinks)
    (quick_start,) = blocks("The host side alone")
    found = steps(quick_start)
    assert [command.split("#")[0].split()[:3] for command, _ in found][-1] == ["mpsocks-run", "host", "down"]
    try:
        run_steps(found, readme_env, netns=readme_uplinks)
    finally:
        subprocess.run(["ip", "netns", "exec", readme_uplinks, "bash", "-c", "mpsocks-run host down"],
                       env=readme_env, capture_output=True, cwd=REPO)
    assert_unchanged(before, readme_uplinks)


def test_own_playbooks_as_written(readme_uplinks, readme_env):
    before = snapshot(readme_uplinks)
    section = "Using the collection from your own playbooks"
    found = [step for block in blocks(section) for step in steps(block)]
    assert [command.split()[0] for command, _ in found] == ["ansible-playbook", "ansible-playbook"]
    run_steps(found, dict(readme_env, ANSIBLE_NOCOLOR="1"), netns=readme_uplinks)
    assert_unchanged(before, readme_uplinks)


def test_vm_guest_main_command_and_the_stack_as_written(readme_env):
    """The VM section (build the kernel and the image, up --lab --backend libvirt, check), then the
    main command (install, up --lab: the same stack, so nothing to change) and the stack's check, status,
    via-guest and down, all as written: one VM boot for the three sections. Down, the last line of both
    the VM section and the stack, leaves the root namespace as it was."""
    vm = "The guest as a VM with its own MPTCP kernel"
    vm_steps = steps(blocks(vm)[0])
    assert [command.split("#")[0].split()[1:3] for command, _ in vm_steps] == [
        ["build", "kernel"], ["build", "image"], ["up", "--lab"], ["check"], ["down"]]
    vm_steps[2] = (vm_steps[2][0], blocks(vm, kind="")[0])  # what up ends with
    setup = "Set-up on a fresh Debian 12 machine"
    # (Its second command needs real uplinks and the internet's check server; its third is tests/run.)
    main_command, _own_uplinks, _tests = blocks(setup)
    shown = blocks(setup, kind="")[0]
    stack_steps = steps(blocks("MPTCP for every application: up, check, status, down")[0])
    assert all(found[-1][0].startswith("mpsocks-run down") for found in (vm_steps, stack_steps))
    with open(LAB_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = snapshot()
        try:
            run_steps(vm_steps[:-1], readme_env, timeout=1800)  # a first kernel build takes minutes
            run_steps([(main_command[0], shown)], readme_env, timeout=1800)
            assert_completion_and_manual_installed(readme_env)
            run_steps(stack_steps, readme_env)
        finally:
            subprocess.run(["bash", "-c", "mpsocks-run down"], env=readme_env, capture_output=True, cwd=REPO)
        capture = Path("/tmp/uplinks.pcapng")  # what the stack's capture line wrote
        assert capture.stat().st_size > 0
        capture.unlink()
        assert_unchanged(before)
        assert not Path("/run/netns/mpslab-host").exists()


def assert_completion_and_manual_installed(env):
    """What install.sh (in the main command) installed: bash completes mpsocks-run from the system's
    completion folder, and man finds and renders its page."""
    script = ('source /usr/share/bash-completion/completions/mpsocks-run; COMP_WORDS=(mpsocks-run la); '
              'COMP_CWORD=1; COMP_LINE="mpsocks-run la"; COMP_POINT=${#COMP_LINE}; _mpsocks_run; '
              'echo "${COMPREPLY[*]}"')
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
    assert proc.stdout.split() == ["lab"], proc
    for path in ("/usr/local/share/zsh/site-functions/_mpsocks-run",
                 "/usr/share/fish/vendor_completions.d/mpsocks-run.fish"):
        assert Path(path).read_text().strip(), path
    page = subprocess.run(["man", "mpsocks-run"], capture_output=True, text=True,
                          env=dict(env, MANWIDTH="80"))
    assert page.returncode == 0 and "MPSOCKS-RUN(1)" in page.stdout and "lab experiment" in page.stdout, page


def test_lab_quick_start_as_written(readme_env):
    """The default lab, by its README name: one such test at a time on a machine."""
    with open(LAB_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = snapshot()
        (lab,) = blocks("The lab: a hermetic internet on one machine")
        found = steps(lab)
        assert found[0][0].startswith("mpsocks-run lab up")
        assert found[-2][0].startswith("mpsocks-run lab down") and found[-1][0].startswith("mpsocks-run runs")
        try:
            run_steps(found, readme_env)
        finally:
            subprocess.run(["bash", "-c", "mpsocks-run lab down"], env=readme_env, capture_output=True,
                           cwd=REPO)
        assert_unchanged(before)


def test_analyze_as_written(readme_env):
    ((command, output),) = steps(blocks("Looking at the wire: capture and analyze")[0])
    shown = blocks("Looking at the wire: capture and analyze", kind="")[0]
    assert not output and shown
    run_steps([(command, shown)], readme_env)


def test_net_neutrality_study_as_written(readme_env):
    """The study from one command in its own lab, the play on what --keep left (changed=0: the report is
    there), down; the report agrees with tshark and shows the seed's findings."""
    sys.path.insert(0, str(REPO / "tests" / "unit"))
    from test_net_neutrality import assert_report_matches_tshark, assert_seed_findings

    found = steps(blocks("The seed's net-neutrality study, from one command")[0])
    assert [command.split()[:3] for command, _ in found] == [
        ["mpsocks-run", "lab", "experiment"], ["ansible-playbook", "-i", "inventory/localhost.yml"],
        ["mpsocks-run", "down"]]
    folder = Path(found[0][0].split(" -o ")[1].split()[0])
    with open(STUDY_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = snapshot()
        shutil.rmtree(folder, ignore_errors=True)
        try:
            run_steps(found, dict(readme_env, ANSIBLE_NOCOLOR="1"))
            report = json.loads((folder / "report.json").read_text())
            assert_report_matches_tshark(folder, report)
            assert_seed_findings(report)
        finally:
            subprocess.run(["bash", "-c", "mpsocks-run down"], env=readme_env, capture_output=True, cwd=REPO)
            shutil.rmtree(folder, ignore_errors=True)
        assert_unchanged(before)


def test_completion_and_manual_lines_as_written(readme_env):
    """Each line of the README's completion block, as written, in the shell it names: the shell then
    completes mpsocks-run, and the manual page renders."""
    (block,) = [block for block in blocks("The host side alone", kind="") if block[0].startswith("source <(")]
    commands = {line.split("#")[1].split(",")[0].split()[0]: line.split("#")[0].strip() for line in block}
    assert sorted(commands) == ["bash", "fish", "the", "zsh"], commands
    bash = subprocess.run(["bash", "-c", f"{commands['bash']}; complete -p mpsocks-run"],
                          capture_output=True, text=True, env=readme_env)
    assert bash.stdout.strip() == "complete -F _mpsocks_run mpsocks-run", bash
    zsh = subprocess.run(["zsh", "-f", "-c", f"autoload -U compinit && compinit -u; {commands['zsh']}; "
                          "print -r -- $_comps[mpsocks-run]"], capture_output=True, text=True, env=readme_env)
    assert zsh.stdout.strip() == "_mpsocks-run", zsh
    fish = subprocess.run(["fish", "-c", f"{commands['fish']}; complete -C 'mpsocks-run la'"],
                          capture_output=True, text=True, env=readme_env)
    assert fish.stdout.split()[:1] == ["lab"], fish
    manual = subprocess.run(["bash", "-c", commands["the"]], capture_output=True, text=True,
                            env=dict(readme_env, MANWIDTH="80"))
    assert manual.returncode == 0 and "MPSOCKS-RUN(1)" in manual.stdout, manual
