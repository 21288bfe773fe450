"""``mpsocks-run up --lab --backend libvirt`` end to end: the proxy stack on a VM booting the kernel role
``mptcp_kernel`` built, from the image role ``guest_image`` built (both built here when not cached yet),
under TCG, on taps of a lab whose uplinks are in the root namespace; real libvirtd, dante and redsocks
in the guest under its systemd, real MPTCP over the lab's two uplinks.

One stack serves every test (a module fixture, up once with ``--via-guest``); its teardown checks that
``down`` leaves no domain, tap, rule, route, nft table or process behind, and stops the libvirtd and
virtlogd it started.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from mpsocks_testlib import assert_unchanged, changed_count, lab_name, mpsocks_run, snapshot

pytestmark = pytest.mark.root

PROXY = "10.66.6.2:1080"
SERVERS = "198.19.0.0/24"  # the lab internet, routed through the guest (--via-guest)
STATE_DIR = Path("/var/lib/mpsocks")


def libvirt_domains() -> list[str]:
    """Every domain libvirtd knows ([] when it does not run)."""
    proc = subprocess.run(["virsh", "-q", "-c", "qemu:///system", "list", "--all", "--name"],
                          capture_output=True, text=True)
    return proc.stdout.split() if proc.returncode == 0 else []


def daemons(guest: str) -> dict[str, list[str]]:
    """The pids of libvirtd, virtlogd and the QEMU of domain GUEST."""
    found = {name: ["pgrep", "-x", name] for name in ("libvirtd", "virtlogd")}
    found["qemu"] = ["pgrep", "-f", f"qemu-system-x86_64 -name guest={guest},"]
    return {name: subprocess.run(argv, capture_output=True, text=True).stdout.split()
            for name, argv in found.items()}


def guest(*command: str, name: str) -> str:
    """COMMAND's output in the guest, over ssh with the project's key and the image's host key only."""
    proc = subprocess.run(
        ["ssh", "-i", str(STATE_DIR / "ssh" / "id_ed25519"), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
         "-o", f"UserKnownHostsFile={STATE_DIR / 'guests' / name / 'known_hosts'}",
         "-o", "StrictHostKeyChecking=yes", "root@10.66.6.2", *command],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def curl_json(url: str, *options: str) -> dict:
    proc = subprocess.run(["curl", "-sS", "--max-time", "30", *options, url], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def vm_stack(artifacts):
    """A lab with its uplinks in the root namespace and the stack on a VM guest; down restores the machine."""
    name = lab_name("v")
    before, kvm_before, daemons_before = snapshot(), Path("/dev/kvm").stat(), daemons(f"{name}-guest")
    command = ("up", "--lab", name, "--backend", "libvirt", "--via-guest", SERVERS)
    rc, output = mpsocks_run(*command, artifacts=artifacts)
    try:
        assert rc == 0, output
        plan = json.loads((Path("/run/mpsocks/lab") / name / "lab.json").read_text())
        yield {"name": name, "guest": f"{name}-guest", "plan": plan, "command": command, "output": output}
    finally:
        rc, down = mpsocks_run("down", artifacts=artifacts)
        assert rc == 0, down
        assert f"{name}-guest" not in libvirt_domains()
        assert not (STATE_DIR / "guests" / f"{name}-guest").exists()
        # down stops the VM, and libvirtd and virtlogd when up started them
        assert daemons(f"{name}-guest") == daemons_before
        kvm_after = Path("/dev/kvm").stat()
        assert (kvm_after.st_gid, kvm_after.st_mode) == (kvm_before.st_gid, kvm_before.st_mode)
        assert_unchanged(before)


def test_up_ends_with_the_socks_address_and_the_check(vm_stack):
    output = vm_stack["output"]
    assert re.search(r"SOCKS5 proxy 10\.66\.6\.2:1080: MPTCP, 2 subflows", output), output
    # KVM hangs on these machines: the probe says so once, and the VM runs under TCG.
    assert "KVM does not work here" in output or "using TCG" in output, output
    calls, seconds = re.search(r"(\d+) module calls? in ([0-9.]+) s", output).groups()
    boot = re.search(r"([0-9.]+)s ok +\[localhost\] mpsocks\.mptcp\.guest_vm : Wait for the guest's sshd",
                     output)
    print(f"up --lab --backend libvirt (TCG): {calls} module calls in {seconds} s; "
          f"domain defined to ssh answering: {boot.group(1) if boot else '?'} s into the role")


def test_the_guest_made_the_roles_calls_itself_at_boot(vm_stack):
    """The config drive's steps ran before sshd, so the guest roles over ssh found nothing to change."""
    assert changed_count(vm_stack["output"], vm_stack["guest"]) == 0, vm_stack["output"]
    lines = guest("journalctl", "-b", "-o", "cat", "-u", "mpsocks-config-drive.service",
                  name=vm_stack["guest"])
    steps = [line for line in lines.splitlines() if re.match(r"^[a-z_]+: |^file /", line)]
    print("the guest's boot calls:", "; ".join(steps))
    assert [step.split(":")[0] for step in steps] == [
        "interface", "sysctl", "policy_route", "route", "mptcp_limits", "mptcp_endpoint",
        "file /etc/resolv.conf", "daemon", "daemon", "redirect"], lines
    assert not [step for step in steps if ": failed" in step], lines


def test_the_guest_runs_the_kernel_the_role_built(vm_stack):
    xml = subprocess.run(["virsh", "-c", "qemu:///system", "dumpxml", vm_stack["guest"]], capture_output=True,
                         text=True, check=True).stdout
    kernel = Path(re.search(r"<kernel>([^<]+)</kernel>", xml).group(1))
    assert kernel.parent.parent == STATE_DIR / "kernel", kernel
    built = json.loads((kernel.parent / "kernel.json").read_text())
    assert guest("uname", "-r", name=vm_stack["guest"]).strip() == built["release"]
    assert xml.startswith("<domain type='qemu'")  # TCG (KVM hangs on these machines)
    assert guest("nproc", name=vm_stack["guest"]).strip() == "2"  # found in ACPI's tables


def test_check_says_mptcp_with_two_subflows(vm_stack):
    rc, output = mpsocks_run("check", "--json", artifacts=None)
    assert rc == 0, output
    report = json.loads(output)
    assert report["mptcp"] is True and report["subflows"] == 2, report


def test_socks_and_the_socksifier_from_the_host(vm_stack):
    check = vm_stack["plan"]["servers"]["check"]
    for url in (f"{check}?format=json", "http://check.lab.test/?format=json"):
        answer = curl_json(url, "--socks5-hostname", PROXY)
        assert answer["mptcp"] is True and answer["subflows"] == 2, (url, answer)
    # No proxy option: the host routes the lab internet via the guest, whose redsocks takes it.
    answer = curl_json(f"{check}?format=json")
    assert answer["mptcp"] is True and answer["subflows"] == 2, answer


def test_status_shows_the_domain_the_accelerator_and_the_kernel(vm_stack):
    rc, output = mpsocks_run("status", "--json", artifacts=None)
    assert rc == 0, output
    report = json.loads(output)
    built = json.loads((Path(report["kernel"]).parent / "kernel.json").read_text())
    assert (report["domain"], report["accelerator"], report["kernel_release"]) == ("running", "tcg",
                                                                                  built["release"])
    assert report["answers"] == {"ssh": True, "socks": True}
    rc, text = mpsocks_run("status", artifacts=None)
    assert rc == 0 and text.startswith(f"guest {vm_stack['guest']} (VM): up, domain running\n"), text
    assert f"accelerator tcg, 512 MiB, kernel {built['release']}" in text, text


def test_dante_and_redsocks_run_under_the_guests_systemd(vm_stack):
    states = guest("systemctl", "is-active", "mpsocks-danted.service", "mpsocks-redsocks.service",
                   name=vm_stack["guest"])
    assert states.split() == ["active", "active"], states


def test_the_guest_keeps_the_code_of_ansibles_module_zips(vm_stack):
    """The image's zip_code_cache is live in the guest: the module calls of up left compiled code there."""
    entries = guest("ls", "/var/cache/mpsocks/pycache", name=vm_stack["guest"]).split()
    assert len(entries) >= 20, entries


def test_second_up_changes_nothing(vm_stack, artifacts):
    rc, output = mpsocks_run(*vm_stack["command"], artifacts=artifacts)
    assert rc == 0, output
    for host in ("localhost", vm_stack["guest"]):
        assert changed_count(output, host) == 0, (host, output)
    # The running VM made this run's calls in one go, from the config drive's file; no role ran over ssh.
    assert "calls itself in one go: interface: ok;" in output, output
    assert re.search(r"skipped +\[\S+\] The guest roles, unless the VM made all", output), output
    calls, seconds = re.search(r"(\d+) module calls? in ([0-9.]+) s", output).groups()
    print(f"second up --lab --backend libvirt: {calls} module calls in {seconds} s")


def test_up_repairs_what_changed_in_the_running_guest(vm_stack, artifacts):
    """What someone changed in the guest is put back by the next up, from the same config drive."""
    name = vm_stack["guest"]
    conf = "/run/mpsocks/guest/danted.conf"
    guest(f"echo '# edited by hand' >> {conf}; ip mptcp endpoint flush", name=name)
    rc, output = mpsocks_run(*vm_stack["command"], artifacts=artifacts)
    assert rc == 0 and changed_count(output, name) == 1, output
    assert "mptcp_endpoint: changed;" in output and "daemon: changed;" in output, output
    assert "edited by hand" not in guest("cat", conf, name=name)
    assert guest("systemctl", "is-active", "mpsocks-danted.service", name=name).strip() == "active"
    assert "subflow dev eth1" in guest("ip", "mptcp", "endpoint", "show", name=name)
    assert re.search(r"SOCKS5 proxy 10\.66\.6\.2:1080: MPTCP, 2 subflows", output), output


def test_up_repairs_a_stopped_socksifier_the_check_url_goes_through(vm_stack, artifacts):
    """With --via-guest covering the check server, its URL goes through the guest's redsocks: stopped, the
    check before anything is made cannot reach the URL, and up goes on (saying so) and starts it again."""
    name = vm_stack["guest"]
    guest("systemctl", "stop", "mpsocks-redsocks.service", name=name)
    check = vm_stack["plan"]["servers"]["check"]
    refused = subprocess.run(["curl", "-sS", "--max-time", "10", check], capture_output=True, text=True)
    assert refused.returncode != 0, refused.stdout
    rc, output = mpsocks_run(*vm_stack["command"], artifacts=artifacts)
    assert rc == 0 and "it may go through the guest (mpsocks_via_guest)" in output, output
    assert "daemon: changed;" in output, output
    assert guest("systemctl", "is-active", "mpsocks-redsocks.service", name=name).strip() == "active"
    answer = curl_json(f"{check}?format=json")
    assert answer["mptcp"] is True and answer["subflows"] == 2, answer
