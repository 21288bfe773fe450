"""mpsocks.mptcp.libvirt_domain against a real libvirtd (qemu:///system, TCG) and real taps."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import time
import xml.etree.ElementTree as ET

import libvirt
import pytest
from mpsocks_testlib import run_module, sh, unique_name

OWNER = "{https://mpsocks.invalid/owner}owner"


@pytest.fixture
def conn(libvirtd):
    """A libvirt connection of the test's own, to look at what the module did."""
    connection = libvirt.open(libvirtd)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def names(conn):
    """unique_name() for domains; every domain named is destroyed and undefined afterwards."""
    made = []

    def name():
        made.append(unique_name("mpsvd"))
        return made[-1]

    yield name
    for domain_name in made:
        with contextlib.suppress(libvirt.libvirtError):
            domain = conn.lookupByName(domain_name)
            if domain.isActive():
                domain.destroy()
            domain.undefine()


@pytest.fixture
def taps():
    """make(n): n taps in the root namespace (no addresses, no routes), deleted afterwards."""
    made = []

    def make(count=1):
        for _ in range(count):
            made.append(unique_name("mpsvt"))
            sh("ip", "tuntap", "add", "mode", "tap", "name", made[-1])
        return made[-count:]

    yield make
    for tap in made:
        subprocess.run(["ip", "tuntap", "del", "mode", "tap", "name", tap], check=False)


@pytest.fixture
def disk(workdir):
    """An empty (sparse) raw disk image."""
    path = workdir / "disk.img"
    with open(path, "wb") as handle:
        handle.truncate(16 * 1024 * 1024)
    return path


def domain(name, kernel, disk, **options):
    """One config item: a domain booting KERNEL from DISK under TCG."""
    return {"name": name, "type": "qemu", "kernel": str(kernel), "disk": str(disk), "memory": 128,
            "cmdline": "console=ttyS0", **options}


def call(*items, check=False, **top):
    """Run the module on ITEMS; return its result and the items' results."""
    result = run_module("libvirt_domain", check=check, config=list(items), **top)
    return result, result.get("results", [])


def defined(conn, name):
    """The domain's inactive XML as libvirt keeps it, or None."""
    try:
        return ET.fromstring(conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    except libvirt.libvirtError:
        return None


def assert_one_line_error(result, *needles):
    assert result.get("failed"), result
    message = result["msg"]
    assert "\n" not in message and "Traceback" not in message, message
    for needle in needles:
        assert needle in message, message


def test_define_check_mode_idempotence_and_diff(conn, names, taps, kernel, disk, workdir):
    name, tap = names(), taps(1)[0]
    item = domain(name, kernel, disk, interfaces=[tap], serial_log=str(workdir / "serial.log"))

    predicted, [one] = call(item, check=True)
    assert predicted["changed"] and one["changed"], predicted
    assert one["diff"]["before"] == {} and one["diff"]["after"]["memory"] == 128
    assert one["domain"]["uuid"] is None
    assert defined(conn, name) is None

    done, [one] = call(item)
    assert done["changed"] and one["changed"], done
    # What check mode predicted, but for what only libvirt makes up: the UUID and the MACs.
    assert one["domain"] | {"uuid": None, "macs": [None]} == predicted["results"][0]["domain"]
    assert one["domain"]["state"] == "shut off" and one["domain"]["interfaces"] == [tap]
    assert done["diff"] == [one["diff"]] and one["diff"]["after"]["kernel"] == str(kernel)

    root = defined(conn, name)
    assert root.get("type") == "qemu" and root.findtext("uuid") == one["domain"]["uuid"]
    assert root.find(f"metadata/{OWNER}").text == "mpsocks"
    assert root.findtext("os/kernel") == str(kernel) and root.find("os/initrd") is None
    interface = root.find("devices/interface")
    assert interface.get("type") == "ethernet"
    assert interface.find("target").attrib == {"dev": tap, "managed": "no"}
    assert interface.find("model").get("type") == "virtio"
    assert interface.find("mac").get("address") == one["domain"]["macs"][0]
    assert root.find("devices/disk/target").attrib == {"dev": "vda", "bus": "virtio"}
    assert root.find("devices/serial/log").get("file") == str(workdir / "serial.log")
    # Entropy from the host at boot; no USB controller, memory balloon or HPET for the guest to set up.
    assert root.find("devices/rng[@model='virtio']/backend").text == "/dev/urandom"
    assert root.find("devices/controller[@type='usb']").get("model") == "none"
    assert root.find("devices/memballoon").get("model") == "none"
    assert root.find("clock/timer[@name='hpet']").get("present") == "no"

    again, [same] = call(item)
    assert again["changed"] is False and same["changed"] is False and again["diff"] == []
    assert same["domain"] == one["domain"]
    assert call(item, check=True)[0]["changed"] is False
    # Options left out keep what the domain has; feeding the result back changes nothing.
    assert call({"name": name})[0]["changed"] is False
    fed_back = {key: value for key, value in one["domain"].items()
                if key not in ("uuid", "macs", "state", "restart_pending")}
    assert call(fed_back)[0]["changed"] is False


def test_change_redefines_keeping_uuid_and_macs(conn, names, taps, kernel, disk):
    name, (tap0, tap1) = names(), taps(2)
    first, [made] = call(domain(name, kernel, disk, interfaces=[tap0]))
    assert first["changed"], first

    change = domain(name, kernel, disk, memory=192, vcpus=2, interfaces=[tap0, tap1])
    predicted, [diff] = call(change, check=True)
    assert diff["changed"], predicted
    assert (diff["diff"]["before"]["memory"], diff["diff"]["after"]["memory"]) == (128, 192)
    assert diff["diff"]["after"]["interfaces"] == [tap0, tap1]
    assert int(defined(conn, name).findtext("memory")) == 128 * 1024

    done, [changed] = call(change)
    assert changed["changed"] and changed["domain"] == {**predicted["results"][0]["domain"],
                                                        "macs": changed["domain"]["macs"]}
    assert changed["domain"]["uuid"] == made["domain"]["uuid"]
    assert changed["domain"]["macs"][0] == made["domain"]["macs"][0]  # the kept tap keeps its MAC
    root = defined(conn, name)
    assert int(root.findtext("memory")) == 192 * 1024 and root.findtext("vcpu") == "2"
    assert root.findtext("uuid") == made["domain"]["uuid"]
    assert call(change)[0]["changed"] is False


def test_config_drive_content_is_written_before_the_definition(conn, names, kernel, disk, workdir):
    """The module writes the drive it is given (0600, its SHA1 in the diff, never its text); the same text
    changes nothing; a new text rewrites only the file."""
    name, drive = names(), workdir / "drive" / "config-drive.json"
    item = domain(name, kernel, disk, config_drive=str(drive), config_drive_content="secret-steps-1")

    predicted, [one] = call(item, check=True)
    assert predicted["changed"] and not drive.exists() and defined(conn, name) is None
    done, [one] = call(item)
    assert done["changed"] and drive.read_text() == "secret-steps-1", done
    assert drive.stat().st_mode & 0o777 == 0o600
    assert one["diff"]["after"]["config_drive_file"] == hashlib.sha1(b"secret-steps-1").hexdigest() + " 0600"
    assert "secret-steps" not in json.dumps(done)
    assert defined(conn, name).find("devices/disk[serial='mpsocks-config']/source").get("file") == str(drive)
    assert call(item)[0]["changed"] is False

    newer = dict(item, config_drive_content="secret-steps-2")
    uuid = one["domain"]["uuid"]
    changed, [after] = call(newer)
    assert changed["changed"] and drive.read_text() == "secret-steps-2", changed
    assert after["diff"]["before"]["config_drive_file"] != after["diff"]["after"]["config_drive_file"]
    assert after["domain"]["uuid"] == uuid and call(newer)[0]["changed"] is False

    result, _ = call(domain(names(), kernel, disk, config_drive_content="steps"))
    assert_one_line_error(result, "config_drive_content", "config_drive")


def test_disk_backing_makes_a_missing_disk_an_overlay(conn, names, kernel, disk, workdir):
    """A missing disk is made, folder and all, as a qcow2 overlay of the image; an existing one is kept."""
    name, overlay = names(), workdir / "guest" / "disk.qcow2"
    item = domain(name, kernel, str(overlay), disk_format="qcow2", disk_backing=str(disk))

    predicted, [one] = call(item, check=True)
    assert predicted["changed"] and not overlay.exists(), predicted
    assert (one["diff"]["before"], one["diff"]["after"]["disk_file"]) == ({}, "made")
    done, _ = call(item)
    assert done["changed"] and overlay.exists(), done
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", str(overlay)],
                                     capture_output=True, text=True, check=True).stdout)
    assert (info["format"], info["backing-filename"], info["backing-filename-format"]) == \
        ("qcow2", str(disk), "raw")
    made = overlay.stat().st_mtime_ns
    assert call(item)[0]["changed"] is False and overlay.stat().st_mtime_ns == made

    overlay.unlink()  # gone behind the module's back: made again
    again, [remade] = call(item)
    assert again["changed"] and remade["diff"]["before"]["disk_file"] == "missing" and overlay.exists()

    for bad, needles in ((dict(disk_format="raw"), ("disk_backing", "qcow2")),
                         (dict(disk=str(workdir / "new.qcow2"), disk_backing=str(workdir / "no-such.img")),
                          ("disk_backing", "no such file"))):
        result, _ = call(dict(item, name=names(), **bad))
        assert_one_line_error(result, *needles)
    assert not (workdir / "new.qcow2").exists()


def serial_lines(path, needle, timeout=30.0):
    """Wait until the serial log at PATH holds NEEDLE; return its text."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def test_boot_restart_stop_and_remove(conn, names, taps, kernel, disk, workdir):
    """A real boot under TCG: the kernel panics without a root fs, but runs and logs to the serial file."""
    name, tap = names(), taps(1)[0]
    log = workdir / "console.log"
    item = domain(name, kernel, disk, interfaces=[tap], serial_log=str(log))

    predicted, [one] = call(item, check=True, state="running")
    assert predicted["changed"] and one["domain"]["state"] == "running" and defined(conn, name) is None

    started, [one] = call(item, state="running")
    assert started["changed"] and one["domain"]["state"] == "running", started
    assert conn.lookupByName(name).isActive()
    text = serial_lines(log, "Kernel command line: console=ttyS0")
    assert "Linux version" in text and "Kernel command line: console=ttyS0" in text, text[-2000:]
    assert call(item, state="running")[0]["changed"] is False
    assert call(item)[0]["changed"] is False  # present leaves it running

    # A new definition of a running domain: kept for its next start, and said so.
    newer = dict(item, cmdline="console=ttyS0 mpsocks_test=1")
    pending, [later] = call(newer, state="running")
    assert pending["changed"] and later["domain"]["restart_pending"] is True, pending
    assert "next start" in later["note"]
    assert defined(conn, name).findtext("os/cmdline") == "console=ttyS0 mpsocks_test=1"
    assert "mpsocks_test" not in conn.lookupByName(name).XMLDesc(0)
    assert call(newer, state="running")[0]["changed"] is False

    # restart_on_change restarts it (the panicked kernel ignores ACPI: the short timeout, then destroy).
    restarted, [now] = call(newer, state="running", restart_on_change=True, shutdown_timeout=1)
    assert restarted["changed"] and now["domain"]["restart_pending"] is False, restarted
    assert now["domain"]["state"] == "running" and "note" not in now
    assert "mpsocks_test=1" in serial_lines(log, "mpsocks_test=1")

    began = time.monotonic()
    stopped, [off] = call(newer, state="stopped", shutdown_timeout=2)
    took = time.monotonic() - began
    assert stopped["changed"] and off["domain"]["state"] == "shut off", stopped
    assert took >= 2, "the graceful wait was skipped"
    assert not conn.lookupByName(name).isActive()
    assert call(newer, state="stopped")[0]["changed"] is False

    predicted, [gone] = call({"name": name}, check=True, state="absent")
    assert predicted["changed"] and gone["domain"] == {} and defined(conn, name) is not None
    removed, [gone] = call({"name": name}, state="absent")
    assert removed["changed"] and defined(conn, name) is None
    assert call({"name": name}, state="absent")[0]["changed"] is False
    assert tap in sh("ip", "link", "show", tap)  # the tap is not the domain's to remove
    assert disk.exists() and log.exists()


def test_absent_stops_a_running_domain(conn, names, kernel, disk):
    name = names()
    assert call(domain(name, kernel, disk), state="running")[0]["changed"]
    removed, [gone] = call({"name": name}, state="absent", shutdown_timeout=0)
    assert removed["changed"] and gone["diff"]["before"]["state"] == "running", removed
    assert defined(conn, name) is None


def test_missing_tap_fails_before_anything_is_defined(conn, names, taps, kernel, disk):
    good, bad, tap = names(), names(), taps(1)[0]
    missing = unique_name("mpsvx")
    result, _ = call(domain(good, kernel, disk, interfaces=[tap]),
                     domain(bad, kernel, disk, interfaces=[tap, missing]))
    assert_one_line_error(result, bad, missing, "does not exist")
    assert defined(conn, good) is None and defined(conn, bad) is None


def test_missing_kernel_is_named(conn, names, kernel, disk, workdir):
    name = names()
    absent_kernel = workdir / "no-such-vmlinuz"
    result, _ = call(domain(name, absent_kernel, disk))
    assert_one_line_error(result, name, str(absent_kernel), "no such file")
    assert defined(conn, name) is None
    result, _ = call({"name": name, "kernel": str(kernel)})  # a new domain needs a disk too
    assert_one_line_error(result, name, "disk")
    assert defined(conn, name) is None


def test_bad_input_fails_with_one_line_and_changes_nothing(conn, names, kernel, disk):
    name = names()
    cases = {
        "name": dict(name="bad/name"),
        "memory": dict(memory=0),
        "vcpus": dict(vcpus=0),
        "absolute": dict(disk="relative/disk.img"),
        "initrd": dict(initrd="vmlinuz.initrd"),
    }
    for needle, bad in cases.items():
        item = {**domain(name, kernel, disk), **bad}
        result, _ = call(item)
        assert_one_line_error(result, needle)
    assert defined(conn, name) is None


def test_a_domain_mpsocks_did_not_make_is_left_alone(conn, names, kernel, disk):
    name = names()
    foreign = (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
               f"<os><type>hvm</type><kernel>{kernel}</kernel></os></domain>")
    conn.defineXML(foreign)
    before = conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    for state in ("present", "running", "stopped", "absent"):
        result, _ = call(domain(name, kernel, disk), state=state)
        assert_one_line_error(result, name, "not made by mpsocks")
    after = conn.lookupByName(name)
    assert after.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == before and not after.isActive()


def test_unreachable_libvirtd_is_one_line(kernel, disk):
    uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    name = unique_name("mpsvd")
    result, _ = call(domain(name, kernel, disk), uri=uri)
    assert_one_line_error(result, name, f"cannot connect to {uri}", "/nonexistent/libvirt-sock")
