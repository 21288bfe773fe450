"""``mpsocks-run status`` of a VM guest (the libvirt backend), seen from the host: the domain's state,
its accelerator and the kernel it boots, and whether the guest answers ssh and SOCKS."""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.libvirt_domain import (
    STATE_NAMES,
    connect,
    definition_of,
    libvirt,
    libvirt_message,
)

URI = "qemu:///system"
ADDRESS = "10.66.6.2"
PORTS = {"ssh": 22, "socks": 1080}  # redsocks takes only what the guest's nft redirects to it


def answers(address: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP connection to ADDRESS:PORT is accepted."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def kernel_release(kernel: str | None) -> str | None:
    """The release of KERNEL from the record its build left beside it (mptcp_kernel's kernel.json, or the
    image's image.json for the image's own kernel)."""
    if not kernel:
        return None
    folder = Path(kernel).parent
    for record, key in (("kernel.json", "release"), ("image.json", "kernel_release")):
        try:
            return json.loads((folder / record).read_text())[key]
        except (OSError, ValueError, KeyError):
            continue
    return None


def status(guest: str, uri: str = URI) -> dict:
    """The domain GUEST and what answers in it."""
    report = {"guest": guest, "backend": "libvirt", "domain": None, "accelerator": None, "kernel": None,
              "kernel_release": None, "memory_mib": None, "interfaces": [], "console_log": None,
              "answers": {name: False for name in PORTS}}
    try:
        domain = connect(uri).lookupByName(guest)
        root = ET.fromstring(domain.XMLDesc(0))
        state = STATE_NAMES.get(domain.state()[0], "unknown")
    except MpsocksError as exc:
        return dict(report, domain=f"unknown ({exc})", up=False)
    except libvirt.libvirtError as exc:
        return dict(report, domain=f"absent ({libvirt_message(exc)})", up=False)
    definition = definition_of(root)
    report.update(domain=state, accelerator="kvm" if definition["type"] == "kvm" else "tcg",
                  kernel=definition["kernel"], kernel_release=kernel_release(definition["kernel"]),
                  memory_mib=definition["memory"], interfaces=definition["interfaces"],
                  console_log=definition["serial_log"])
    if state == "running":
        report["answers"] = {name: answers(ADDRESS, port) for name, port in PORTS.items()}
    return dict(report, up=state == "running" and all(report["answers"].values()))


def format_status(report: dict) -> str:
    """REPORT as the lines ``mpsocks-run status`` prints for a VM guest."""
    lines = [f"guest {report['guest']} (VM): {'up' if report['up'] else 'NOT UP'}, domain {report['domain']}"]
    if report["kernel"]:
        lines.append(f"  accelerator {report['accelerator']}, {report['memory_mib']} MiB, kernel "
                     f"{report['kernel_release'] or '?'} ({report['kernel']})")
        lines.append(f"  interfaces on taps {', '.join(report['interfaces']) or '-'}; serial console "
                     f"{report['console_log'] or '-'}")
        answers = report["answers"].items()
        lines.append("  answers: " + ", ".join(f"{name} {ADDRESS}:{PORTS[name]} {'yes' if ok else 'NO'}"
                                               for name, ok in answers))
    return "\n".join(lines)
