# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A libvirt domain for the guest: direct kernel boot, a disk (made as a copy-on-write overlay of an image
when missing), a read-only config drive (see ``config_drive``; written when given its content), one
interface per tap, a serial log.

The domain is read from the definition libvirt keeps (``XMLDesc(VIR_DOMAIN_XML_INACTIVE)``) into a
plain dict of the parts mpsocks manages, so that comparing dicts is the idempotence check and check
mode's prediction, and the dicts are the diff. A redefinition keeps the domain's UUID and the MAC
address of every tap it keeps. A running domain whose definition changed runs the old one until its
next start: ``restart_pending`` says so (read from the live XML), and ``restart_on_change`` restarts it.

The domain carries an owner element in its ``<metadata>``; a domain of the same name without it is
not ours, and is neither changed nor undefined.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import re
import subprocess
import time
import traceback
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

from ansible.module_utils.basic import missing_required_lib
from ansible_collections.mpsocks.mptcp.plugins.module_utils.config_drive import SERIAL as CONFIG_DRIVE_SERIAL
from ansible_collections.mpsocks.mptcp.plugins.module_utils.daemon import (
    content_state,
    file_state,
    write_atomically,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject, one_line
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.ownership import MARK, not_ours
from ansible_collections.mpsocks.mptcp.plugins.module_utils.validate import interface_name

try:
    import libvirt
except ImportError:
    libvirt = None
    LIBVIRT_IMPORT_ERROR = traceback.format_exc()
else:
    LIBVIRT_IMPORT_ERROR = None

#: Namespace of the owner element in a domain's <metadata>.
OWNER_NS = "https://mpsocks.invalid/owner"
OWNER_TAG = "{%s}owner" % OWNER_NS
ET.register_namespace("mpsocks", OWNER_NS)

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
DOMAIN_TYPES = ("kvm", "qemu")
DISK_FORMATS = ("raw", "qcow2")
#: What a new domain gets for an option left out.
NEW_DOMAIN = {"type": "qemu", "memory": 512, "vcpus": 1, "tcg_cache": None, "initrd": None, "cmdline": "",
              "disk_format": "raw", "config_drive": None, "interfaces": [], "serial_log": None}
#: The keys of read() that the definition holds (the rest is the domain's run state).
DEFINITION = ("name", "type", "memory", "vcpus", "tcg_cache", "kernel", "initrd", "cmdline", "disk",
              "disk_format", "config_drive", "interfaces", "serial_log")

#: The first bytes of a qcow2 image (any other backing image is taken as raw).
QCOW2_MAGIC = b"QFI\xfb"
#: Permission bits of a config drive the module writes (its steps may hold passwords).
CONFIG_DRIVE_MODE = 0o600

#: virDomainState numbers as people say them; "blocked" is a running domain waiting for something.
STATE_NAMES = {0: "no state", 1: "running", 2: "running", 3: "paused", 4: "shutting down", 5: "shut off",
               6: "crashed", 7: "suspended"}
SHUT_OFF = "shut off"
UNITS = {"b": 1, "bytes": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024 ** 2, "mib": 1024 ** 2,
         "mb": 1000 ** 2, "g": 1024 ** 3, "gib": 1024 ** 3, "gb": 1000 ** 3, "t": 1024 ** 4, "tib": 1024 ** 4,
         "tb": 1000 ** 4}
POLL = 0.2
IFF_TAP = 0x0002

#: One connection per URI for the whole module run.
_CONNECTIONS = {}


def _ignore_libvirt_error(_context, _error):
    """libvirt prints every error on stderr by default; ours reach the user through the exception."""


def libvirt_message(exc):
    """libvirt's own message of EXC, as one line."""
    message = exc.get_error_message() if hasattr(exc, "get_error_message") else None
    return one_line(message or exc)


def connect(uri):
    """The open connection to URI (one per module run)."""
    if libvirt is None:
        raise MpsocksError(missing_required_lib("libvirt-python") + ": "
                           + LIBVIRT_IMPORT_ERROR.strip().splitlines()[-1])
    if uri not in _CONNECTIONS:
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        try:
            _CONNECTIONS[uri] = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise MpsocksError("cannot connect to %s: %s" % (uri, libvirt_message(exc))) from None
    return _CONNECTIONS[uri]


def is_local(uri):
    """Whether URI reaches the libvirtd of this machine (so files and taps can be checked here)."""
    try:
        return not urlsplit(uri).hostname
    except ValueError:
        return False


def memory_mib(element):
    """A <memory> element (any unit) in MiB."""
    unit = (element.get("unit") or "KiB").lower()
    return int(element.text.strip()) * UNITS.get(unit, 1024) // UNITS["mib"]


def _attribute(element, path, name):
    """Attribute NAME of the element at PATH under ELEMENT, or None."""
    found = element.find(path) if element is not None else None
    return found.get(name) if found is not None else None


def _serial_log(serial):
    """The file virtlogd writes a pty serial port's output to (any other kind of port has none)."""
    if serial is None or serial.get("type") != "pty":
        return None
    return _attribute(serial, "log", "file")


def definition_of(root):
    """The parts of domain XML ROOT mpsocks manages, as a dict (the first disk and serial port)."""
    os_element = root.find("os")
    if os_element is None:
        os_element = ET.Element("os")
    disks = root.findall("devices/disk[@device='disk']")
    drives = [disk for disk in disks if disk.findtext("serial") == CONFIG_DRIVE_SERIAL]
    disk = next((disk for disk in disks if disk not in drives), None)
    interfaces = []
    for interface in root.findall("devices/interface"):
        tap = _attribute(interface, "target", "dev")
        interfaces.append(tap if interface.get("type") == "ethernet" and tap
                          else "(%s interface)" % interface.get("type"))
    memory = root.find("memory")
    vcpus = root.find("vcpu")
    tcg_cache = root.find("features/tcg/tb-cache")
    return {
        "name": root.findtext("name"),
        "type": root.get("type"),
        "memory": memory_mib(memory) if memory is not None else None,
        "vcpus": int(vcpus.text) if vcpus is not None else None,
        "tcg_cache": memory_mib(tcg_cache) if tcg_cache is not None else None,
        "kernel": os_element.findtext("kernel"),
        "initrd": os_element.findtext("initrd"),
        "cmdline": os_element.findtext("cmdline") or "",
        "disk": _attribute(disk, "source", "file"),
        "disk_format": _attribute(disk, "driver", "type"),
        "config_drive": _attribute(drives[0], "source", "file") if drives else None,
        "interfaces": interfaces,
        "serial_log": _serial_log(root.find("devices/serial")),
    }


def macs_of(root):
    """The MAC address of each tap in domain XML ROOT, by tap name."""
    macs = {}
    for interface in root.findall("devices/interface[@type='ethernet']"):
        target, mac = interface.find("target"), interface.find("mac")
        if target is not None and mac is not None:
            macs.setdefault(target.get("dev"), mac.get("address"))
    return macs


def _sub(parent, tag, text=None, **attributes):
    element = ET.SubElement(parent, tag, {key: str(value) for key, value in attributes.items()})
    if text is not None:
        element.text = str(text)
    return element


def domain_xml(definition, uuid=None, macs=None):
    """The XML that defines DEFINITION (a definition_of() dict), keeping UUID and the taps' MACS."""
    macs = macs or {}
    root = ET.Element("domain", {"type": definition["type"]})
    _sub(root, "name", definition["name"])
    if uuid:
        _sub(root, "uuid", uuid)
    _sub(_sub(root, "metadata"), OWNER_TAG, MARK)
    _sub(root, "memory", definition["memory"], unit="MiB")
    _sub(root, "vcpu", definition["vcpus"])
    os_element = _sub(root, "os")
    _sub(os_element, "type", "hvm")
    _sub(os_element, "kernel", definition["kernel"])
    if definition["initrd"]:
        _sub(os_element, "initrd", definition["initrd"])
    if definition["cmdline"]:
        _sub(os_element, "cmdline", definition["cmdline"])
    features = _sub(root, "features")
    _sub(features, "acpi")  # a graceful shutdown is an ACPI power button press
    if definition["tcg_cache"] and definition["type"] == "qemu":
        _sub(_sub(features, "tcg"), "tb-cache", definition["tcg_cache"], unit="MiB")
    # The guest's clock is the TSC (kvm-clock under KVM): no emulated HPET for the kernel to probe.
    _sub(_sub(root, "clock", offset="utc"), "timer", name="hpet", present="no")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    devices = _sub(root, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type=definition["disk_format"])
    _sub(disk, "source", file=definition["disk"])
    _sub(disk, "target", dev="vda", bus="virtio")
    if definition["config_drive"]:
        drive = _sub(devices, "disk", type="file", device="disk")
        _sub(drive, "driver", name="qemu", type="raw")
        _sub(drive, "source", file=definition["config_drive"])
        _sub(drive, "target", dev="vdb", bus="virtio")
        _sub(drive, "serial", CONFIG_DRIVE_SERIAL)
        _sub(drive, "readonly")
    for tap in definition["interfaces"]:
        interface = _sub(devices, "interface", type="ethernet")
        if macs.get(tap):
            _sub(interface, "mac", address=macs[tap])
        _sub(interface, "target", dev=tap, managed="no")  # the tap is made, and removed, by others
        _sub(interface, "model", type="virtio")
    serial = _sub(devices, "serial", type="pty")
    if definition["serial_log"]:
        _sub(serial, "log", file=definition["serial_log"], append="off")
    _sub(serial, "target", port=0)
    _sub(_sub(devices, "console", type="pty"), "target", type="serial", port=0)
    # Entropy from the host at once: without it, boot under TCG waits a second or more for the guest's
    # random numbers. No USB controller and no memory balloon (libvirt adds both unless told): fewer
    # devices for the firmware and the kernel to set up.
    _sub(_sub(devices, "rng", model="virtio"), "backend", "/dev/urandom", model="random")
    _sub(devices, "controller", type="usb", model="none")
    _sub(devices, "memballoon", model="none")
    return ET.tostring(root, encoding="unicode")


def _absolute_path(value, option, allow_empty=False):
    """VALUE if it is an absolute path (or '' where that means none)."""
    if value is None:
        return None
    text = str(value)
    if allow_empty and text == "":
        return text
    if not text.startswith("/") or "\0" in text or "\n" in text:
        raise MpsocksError("%s: %r must be an absolute path" % (option, text))
    return os.path.normpath(text)


class LibvirtDomain(KernelObject):
    """One guest domain of a libvirtd, and whether it runs."""

    kind = "domain"

    def __init__(self, params):
        super().__init__(params)
        # KernelObject converges to wanted() unless the state is absent; running and stopped are
        # "present" with a run state, which wanted() takes from the goal.
        self.goal = self.state
        self.state = "absent" if self.goal == "absent" else "present"
        self.uuid = None
        self.macs = {}

    def label(self):
        return "domain %s" % self.params["name"]

    # -- input

    @contextlib.contextmanager
    def _named(self):
        """Every error says which domain; libvirt's own errors become one line, never a traceback."""
        try:
            yield
        except MpsocksError as exc:
            text = str(exc)
            if text.startswith(self.label() + " ") or text.startswith(self.label() + ":"):
                raise
            raise MpsocksError("%s: %s" % (self.label(), text)) from None
        except Exception as exc:
            if libvirt is None or not isinstance(exc, libvirt.libvirtError):
                raise
            raise MpsocksError("%s: %s" % (self.label(), libvirt_message(exc))) from None

    def validate(self):
        with self._named():
            self._validate()

    def converge(self, check_mode=False):
        with self._named():
            return super().converge(check_mode)

    def _validate(self):
        params = self.params
        name = params["name"]
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise MpsocksError("name: %r must be 1 to 64 characters out of A-Z a-z 0-9 _ . -, "
                               "starting with a letter or digit" % (name,))
        self.name = name
        self.uri = params.get("uri") or "qemu:///system"
        if self.goal not in ("present", "running", "stopped", "absent"):
            raise MpsocksError("state: %r is not one of present, running, stopped, absent" % (self.goal,))
        if params.get("type") is not None and params["type"] not in DOMAIN_TYPES:
            raise MpsocksError("type: %r is not one of %s" % (params["type"], ", ".join(DOMAIN_TYPES)))
        if params.get("disk_format") is not None and params["disk_format"] not in DISK_FORMATS:
            raise MpsocksError("disk_format: %r is not one of %s"
                               % (params["disk_format"], ", ".join(DISK_FORMATS)))
        for option, least in (("memory", 1), ("vcpus", 1), ("tcg_cache", 0)):
            value = params.get(option)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise MpsocksError("%s: %r must be a whole number of at least %d" % (option, value, least))
        self.given = {
            "type": params.get("type"),
            "memory": params.get("memory"),
            "vcpus": params.get("vcpus"),
            "tcg_cache": params.get("tcg_cache"),
            "kernel": _absolute_path(params.get("kernel"), "kernel"),
            "initrd": _absolute_path(params.get("initrd"), "initrd", allow_empty=True),
            "cmdline": params.get("cmdline"),
            "disk": _absolute_path(params.get("disk"), "disk"),
            "disk_format": params.get("disk_format"),
            "config_drive": _absolute_path(params.get("config_drive"), "config_drive", allow_empty=True),
            "interfaces": None,
            "serial_log": _absolute_path(params.get("serial_log"), "serial_log", allow_empty=True),
        }
        self.disk_backing = _absolute_path(params.get("disk_backing"), "disk_backing")
        if self.disk_backing and (params.get("disk_format") or "qcow2") != "qcow2":
            raise MpsocksError("disk_backing: the overlay is a qcow2 image; disk_format must be qcow2")
        if self.disk_backing and not is_local(self.uri):
            raise MpsocksError("disk_backing: the overlay is made on this machine; %s is not local"
                               % self.uri)
        self.drive_content = params.get("config_drive_content")
        if self.drive_content is not None and not self.given["config_drive"]:
            raise MpsocksError("config_drive_content: needs config_drive, the path to write it to")
        if self.given["cmdline"] is not None and "\n" in self.given["cmdline"]:
            raise MpsocksError("cmdline: must be one line")
        taps = params.get("interfaces")
        if taps is not None:
            taps = [interface_name(tap, "interfaces") for tap in taps]
            if len(set(taps)) != len(taps):
                raise MpsocksError("interfaces: %s names a tap twice" % ", ".join(taps))
            self.given["interfaces"] = taps
        timeout = params.get("shutdown_timeout")
        self.shutdown_timeout = 60 if timeout is None else timeout
        if isinstance(self.shutdown_timeout, bool) or not isinstance(self.shutdown_timeout, (int, float)) \
                or self.shutdown_timeout < 0:
            raise MpsocksError("shutdown_timeout: %r must be 0 or more seconds" % (timeout,))
        self.restart_on_change = bool(params.get("restart_on_change"))
        # What libvirt holds decides the rest (is it ours, does it exist, what would change): look
        # now, so that a list with one bad item changes nothing. converge() looks again, locked.
        current = self.read()
        if self.state == "present":
            wanted = self.wanted(current)
            if current is None or self._definition(current) != self._definition(wanted) \
                    or wanted["state"] == "running":
                self._check_host(wanted)

    def _check_host(self, wanted):
        """On this machine's libvirtd: the files exist and the taps are taps (libvirt would only say so
        at start, after defining the domain)."""
        if not is_local(self.uri):
            return
        for option in ("kernel", "initrd", "disk", "config_drive"):
            path = wanted[option]
            if option == "config_drive" and self.drive_content is not None:
                continue  # written before the start
            if option == "disk" and self.disk_backing and not os.path.exists(path):
                option, path = "disk_backing", self.disk_backing  # the overlay is made of it
            if path and not os.path.isfile(path):
                problem = "not a file" if os.path.exists(path) else "no such file"
                raise MpsocksError("%s: %s: %s" % (option, path, problem))
        for tap in wanted["interfaces"]:
            try:
                with open("/sys/class/net/%s/tun_flags" % tap) as handle:
                    flags = int(handle.read().strip(), 16)
            except OSError:
                if os.path.exists("/sys/class/net/%s" % tap):
                    raise MpsocksError("interfaces: %s is not a tap" % tap) from None
                raise MpsocksError("interfaces: tap %s does not exist (make it first, e.g. with "
                                   "mpsocks.mptcp.tap)" % tap) from None
            if not flags & IFF_TAP:
                raise MpsocksError("interfaces: %s is a tun, not a tap" % tap)

    # -- libvirt

    def lock_keys(self):
        """The domain's own lock: it is not in a network namespace."""
        return ["libvirt-domain-%s" % self.name]

    def _conn(self):
        return connect(self.uri)

    def _lookup(self):
        conn = self._conn()  # outside the try: without libvirt-python there is no libvirtError
        try:
            return conn.lookupByName(self.name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise self._error("cannot look it up", exc) from None

    def _error(self, doing, exc):
        return MpsocksError("%s: %s" % (doing, libvirt_message(exc)))

    def _xml(self, domain, flags):
        try:
            return ET.fromstring(domain.XMLDesc(flags))
        except libvirt.libvirtError as exc:
            raise self._error("cannot read its XML", exc) from None

    def read(self):
        domain = self._lookup()
        if domain is None:
            self.uuid, self.macs = None, {}
            return None
        root = self._xml(domain, libvirt.VIR_DOMAIN_XML_INACTIVE)
        owner = root.find("metadata/" + OWNER_TAG)
        found_mark = owner.text.strip() if owner is not None and owner.text else None
        if found_mark != MARK:
            raise not_ours("%s on %s" % (self.label(), self.uri), found_mark, MARK)
        definition = definition_of(root)
        try:
            state = STATE_NAMES.get(domain.state()[0], "unknown")
            active = bool(domain.isActive())
        except libvirt.libvirtError as exc:
            raise self._error("cannot read its state", exc) from None
        pending = active and definition_of(self._xml(domain, 0)) != definition
        self.uuid = domain.UUIDString()
        self.macs = macs_of(root)
        drive = file_state(definition["config_drive"]) if definition["config_drive"] else None
        return dict(definition, state=state if active else SHUT_OFF, restart_pending=pending,
                    config_drive_file=drive, disk_file=self._disk_file(definition["disk"]))

    @staticmethod
    def _definition(state):
        return {key: state[key] for key in DEFINITION}

    def wanted(self, current):
        if current:
            base = self._definition(current)
        else:
            base = dict(NEW_DOMAIN, name=self.name, kernel=None, disk=None)
        definition = dict(base)
        for key, value in self.given.items():
            if value is not None:
                definition[key] = value
        definition["initrd"] = definition["initrd"] or None
        # QEMU's own translation cache size (0 here) is no setting; KVM has no translation cache.
        definition["tcg_cache"] = definition["tcg_cache"] if definition["type"] == "qemu" else None
        definition["tcg_cache"] = definition["tcg_cache"] or None
        definition["serial_log"] = definition["serial_log"] or None
        definition["config_drive"] = definition["config_drive"] or None
        missing = [key for key in ("kernel", "disk") if not definition[key]]
        if missing:
            raise MpsocksError("%s does not exist on %s; to define it, give %s"
                               % (self.label(), self.uri, " and ".join(missing)))
        active = current is not None and current["state"] != SHUT_OFF
        pending = active and (current["restart_pending"] or definition != base)
        restart = pending and self.restart_on_change and self.goal != "stopped"
        if self.goal == "stopped":
            state = SHUT_OFF
        elif self.goal == "running" or restart:
            state = "running"
        else:
            state = current["state"] if current else SHUT_OFF
        pending = bool(pending and not restart and state != SHUT_OFF)
        if self.drive_content is not None:
            drive = content_state(self.drive_content.encode("utf-8"), CONFIG_DRIVE_MODE)
        else:
            drive = file_state(definition["config_drive"]) if definition["config_drive"] else None
        disk = "made" if self.disk_backing else self._disk_file(definition["disk"])
        return dict(definition, state=state, restart_pending=pending, config_drive_file=drive, disk_file=disk)

    def _disk_file(self, path):
        """Whether the disk at PATH exists, as far as this machine can tell ("made", "missing" or None)."""
        if not is_local(self.uri):
            return None
        return "made" if os.path.exists(path) else "missing"

    def _make_overlay(self, disk):
        """DISK as a qcow2 overlay of disk_backing, its folder made when missing."""
        with open(self.disk_backing, "rb") as handle:
            backing_format = "qcow2" if handle.read(4) == QCOW2_MAGIC else "raw"
        os.makedirs(os.path.dirname(disk), 0o755, exist_ok=True)
        made = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", backing_format,
                               "-b", self.disk_backing, disk], capture_output=True, text=True, check=False)
        if made.returncode != 0:
            raise MpsocksError("disk: cannot make %s an overlay of %s: %s"
                               % (disk, self.disk_backing, one_line(made.stderr or made.stdout)))

    def apply(self, current, wanted):
        domain = self._lookup()
        if wanted is None:
            if domain is not None:
                self._stop(domain)
                try:
                    domain.undefine()
                except libvirt.libvirtError as exc:
                    raise self._error("cannot undefine it", exc) from None
            return
        if self.disk_backing and not os.path.exists(wanted["disk"]):
            self._make_overlay(wanted["disk"])
        if wanted["serial_log"] and is_local(self.uri):
            os.makedirs(os.path.dirname(wanted["serial_log"]), 0o755, exist_ok=True)
        drive = wanted["config_drive_file"]
        if self.drive_content is not None and (current or {}).get("config_drive_file") != drive:
            # A running guest reads a new drive at its next start (restart_on_change restarts it only for a
            # new definition).
            write_atomically(wanted["config_drive"], self.drive_content, CONFIG_DRIVE_MODE)
        if current is None or self._definition(current) != self._definition(wanted):
            try:
                domain = self._conn().defineXML(domain_xml(self._definition(wanted), self.uuid, self.macs))
            except libvirt.libvirtError as exc:
                raise self._error("cannot define it", exc) from None
        active = bool(domain.isActive())
        if wanted["state"] == SHUT_OFF:
            if active:
                self._stop(domain)
        elif wanted["state"] == "running":
            restart = active and current is not None and (current["restart_pending"] or self._definition(
                current) != self._definition(wanted)) and not wanted["restart_pending"]
            if restart:
                self._stop(domain)
                active = False
            try:
                if not active:
                    domain.create()
                elif domain.state()[0] in (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED):
                    domain.resume()
            except libvirt.libvirtError as exc:
                raise self._error("cannot start it", exc) from None

    def _stop(self, domain):
        """Ask the guest to power off (ACPI), wait up to shutdown_timeout seconds, then pull the plug."""
        try:
            if not domain.isActive():
                return
            if self.shutdown_timeout > 0:
                # It may have stopped meanwhile, or ignore ACPI: destroy decides below.
                with contextlib.suppress(libvirt.libvirtError):
                    domain.shutdown()
                deadline = time.monotonic() + self.shutdown_timeout
                while domain.isActive() and time.monotonic() < deadline:
                    time.sleep(POLL)
            if domain.isActive():
                domain.destroy()
        except libvirt.libvirtError as exc:
            try:
                still = domain.isActive()
            except libvirt.libvirtError:
                still = True
            if still:
                raise self._error("cannot stop it", exc) from None

    # -- the result

    def as_config(self, state):
        config = {key: value for key, value in state.items() if key not in ("config_drive_file", "disk_file")}
        return dict(config, uuid=self.uuid, macs=[self.macs.get(tap) for tap in state["interfaces"]])

    def result(self, before, after, changed):
        result = super().result(before, after, changed)
        if after and after.get("restart_pending"):
            result["note"] = ("%s runs its previous definition until its next start (restart_on_change: "
                              "true restarts it)" % self.label())
        return result
