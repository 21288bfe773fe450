"""``mpsocks-run up/down``: what the proxy stack is made of, where it is, and what ``up`` left for ``down``.

The stack is a guest (a network namespace, the netns backend, or a VM with its own MPTCP kernel, the
libvirt backend) joined to the host by one link per uplink (a veth, or a tap the VM reads), with NAT and
source routing on the host side and dante and redsocks in the guest. The host is the real host, or a
lab's host namespace with ``--lab`` (the libvirt backend needs the lab's uplinks in the root namespace,
where libvirtd opens the taps). ``up`` records the stack in
STATE_FILE before it changes anything, so ``down`` finds it even after a killed ``up``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.lab import DEFAULTS as LAB_DEFAULTS

STATE_FILE = Path("/run/mpsocks/up.json")
GUEST = "mpsocks-guest"
BACKENDS = ("netns", "libvirt")
#: A checker of upstream MPTCP (v1) on the internet; the lab's own check server in a lab.
CHECK_URL = "http://check.mptcp.dev/"
SOCKS_ADDRESS = "10.66.6.2"
GUESTS_RUN_ROOT = "/run/mpsocks/guests"
#: Where mpsocks keeps what it builds (kernel, image, ssh key) and each VM guest's folder.
STATE_DIR = Path("/var/lib/mpsocks")
#: The run folder of the daemons inside a VM guest (its own /run).
VM_RUN_DIR = "/run/mpsocks/guest"


@dataclass(frozen=True)
class Stack:
    """Where the proxy stack is: the guest, the host namespace (None: the real host), the uplinks."""

    guest: str = GUEST
    host_netns: str | None = None
    uplinks: list = field(default_factory=list)
    lab: str | None = None
    lab_made: bool = False  # up made the lab, so down removes it
    via_guest: list = field(default_factory=list)
    check_url: str = CHECK_URL
    dns_servers: list | None = None  # None: the host's
    backend: str = "netns"
    kernel: str = "built"  # a VM's kernel: mpsocks' own build, or the image's (distro)
    accelerator: str = "auto"  # a VM's: kvm, tcg, or auto (KVM where a probe guest boots under it)

    def inventory(self) -> dict:
        """The host (local, or its namespace) and the guest (its namespace, or the VM over ssh), as groups
        of the playbooks."""
        python = {"ansible_python_interpreter": "{{ ansible_playbook_python }}"}
        netns = {"ansible_connection": "mpsocks.mptcp.netns", **python}
        host = {"localhost": {}} if self.host_netns is None else {self.host_netns: dict(netns)}
        guest = dict(netns) if self.backend == "netns" else self.vm_connection()
        return {"all": {
            "hosts": {"localhost": {"ansible_connection": "local", **python}},
            "children": {
                "mpsocks_host": {"hosts": host},
                "mpsocks_guest": {"hosts": {self.guest: guest}},
            },
        }}

    def vm_dir(self) -> Path:
        """A VM guest's folder on the host: its disk overlay, serial console log, known_hosts."""
        return STATE_DIR / "guests" / self.guest

    def vm_connection(self) -> dict:
        """How Ansible reaches a VM guest: ssh as root with the project's key, the image's host key only,
        pipelining (every module call costs the guest a Python start); and that the image runs systemd,
        so that the guest roles need not look."""
        ssh_options = (f"-o UserKnownHostsFile={self.vm_dir() / 'known_hosts'} -o StrictHostKeyChecking=yes "
                       "-o ConnectTimeout=10")
        return {
            "ansible_connection": "ssh",
            "ansible_host": SOCKS_ADDRESS,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(STATE_DIR / "ssh" / "id_ed25519"),
            "ansible_ssh_common_args": ssh_options,
            "ansible_ssh_pipelining": True,
            "ansible_python_interpreter": "/usr/bin/python3",
            "mpsocks_supervisor": "systemd",
        }

    def extravars(self, lab_settings: dict | None = None) -> dict:
        """The playbooks' variables; LAB_SETTINGS (the lab role's) when up must bring the lab up first."""
        extravars = {
            "mpsocks_guest_netns": self.guest,
            "mpsocks_guest_run_dir": self.run_dir(),
            "mpsocks_uplinks": self.uplinks,
            "mpsocks_via_guest": self.via_guest,
            "mpsocks_check_url": self.check_url,
            "mpsocks_backend": self.backend,
            "mpsocks_guest_name": self.guest,
        }
        if self.backend == "libvirt":
            extravars["mpsocks_vm_kernel_source"] = self.kernel
            extravars["mpsocks_vm_accelerator"] = self.accelerator
        if self.dns_servers is not None:
            extravars["mpsocks_dns_servers"] = self.dns_servers
        for key, value in (lab_settings or {}).items():
            extravars[f"mpsocks_lab_{key}"] = value
        return extravars

    def socks_address(self) -> str:
        return f"{SOCKS_ADDRESS}:1080"

    def run_dir(self) -> str:
        """The guest daemons' folder: configuration, pid files, logs (a netns guest keeps it on our disk)."""
        return f"{GUESTS_RUN_ROOT}/{self.guest}" if self.backend == "netns" else VM_RUN_DIR

    def guest_interfaces(self) -> list[str]:
        """The guest's interface of each uplink, in order (ethN: the far end of the host's mptcpN)."""
        return [f"eth{index}" for index in range(len(self.uplinks))]


def lab_stack(name: str, via_guest: list, run_root: str = LAB_DEFAULTS["run_root"],
              backend: str = "netns") -> tuple[Stack, bool]:
    """The stack on lab NAME's uplinks, and whether that lab is up already (from its recorded plan). A
    VM guest (BACKEND libvirt) needs a lab whose uplinks are in the root namespace."""
    try:
        plan = json.loads((Path(run_root) / name / "lab.json").read_text())
    except FileNotFoundError:
        from ansible_collections.mpsocks.mptcp.plugins.module_utils.lab import lab_plan

        plan, running = lab_plan({"name": name, "host_netns": backend == "netns"}), False
    except ValueError as exc:
        raise MpsocksError(f"{Path(run_root) / name / 'lab.json'}: not a lab plan ({exc})") from None
    else:
        running = True
        if backend == "libvirt" and plan["host_netns"] is not None:
            raise MpsocksError(f"lab {name} has its uplinks in namespace {plan['host_netns']}, where "
                               f"libvirtd cannot give the VM taps: mpsocks-run lab down --name {name} first "
                               "(up --lab --backend libvirt then makes it with its uplinks in the root "
                               "namespace)")
    # Gateways given: a lab whose uplinks end in this namespace routes nothing of this namespace there.
    uplinks = [{"name": uplink["name"], "gateway": uplink["gateway"]}
               | ({"rate_mbit": uplink["rate_mbit"]} if uplink.get("rate_mbit") else {})
               for uplink in plan["uplinks"]]
    dns = plan.get("dns")
    stack = Stack(guest=f"{name}-guest", host_netns=plan["host_netns"], uplinks=uplinks, lab=name,
                  lab_made=not running, via_guest=via_guest, check_url=plan["servers"]["check"],
                  dns_servers=[dns["address"]] if dns else None, backend=backend)
    return stack, running


def save(stack: Stack, path: Path | None = None) -> None:
    """Record STACK before up changes anything (an earlier record of a lab up made stays so)."""
    path = path or STATE_FILE
    earlier = load(path)
    if earlier is not None and earlier.lab == stack.lab and earlier.lab_made:
        stack = replace(stack, lab_made=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(asdict(stack), indent=1) + "\n")
    os.replace(tmp, path)


def load(path: Path | None = None) -> Stack | None:
    """The recorded stack, or None when up has not run (or down has removed it)."""
    path = path or STATE_FILE
    try:
        return Stack(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise MpsocksError(f"{path}: not an mpsocks up record ({exc}); remove it to start afresh") from None


def is_up(recorded: Stack) -> bool:
    """Whether anything of RECORDED is there: its guest, or the lab up made for it."""
    lab_run_dir = Path(LAB_DEFAULTS["run_root"]) / recorded.lab if recorded.lab else None
    guest = Path(f"/run/netns/{recorded.guest}") if recorded.backend == "netns" else recorded.vm_dir()
    return guest.exists() or bool(
        recorded.lab_made and lab_run_dir is not None and lab_run_dir.exists())


def forget(path: Path | None = None) -> None:
    path = path or STATE_FILE
    path.unlink(missing_ok=True)
