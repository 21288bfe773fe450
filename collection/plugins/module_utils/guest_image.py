# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The guest's disk image: a Debian tree made with debootstrap, as an ext4 file, cached by its inputs.

An image is built in layers, each a folder ``STATE_DIR/image/KEY/`` whose KEY is the hash of everything
the layer is made of:

``base``
    ``debootstrap --variant=minbase`` of the suite and mirror (the host's apt sources by default) with
    the packages asked for, Python packages from the host's pip (pure-Python wheels, such as pyroute2,
    which the guest's modules need and Debian's bookworm has too old), the guest's root ssh key, hostname,
    ``/etc/fstab`` for ``/dev/vda``, a serial console on ``ttyS0``, sshd on at boot, the unit that runs a
    config drive's calls before sshd (``config_drive``), the code cache of ``zip_code_cache`` for every
    Python of the guest, units the guest does not need masked, and the files asked for. It keeps its tree
    as ``rootfs.tar`` for the layer above.
``extras``
    The base tree with more Debian packages (``apt-get install`` in a chroot of it), when some are asked.

Each layer holds ``disk.img`` (a sparse ext4 file made with ``mkfs.ext4 -d``, so nothing is ever
loop-mounted), ``image.json`` (what it is), ``build.log`` and, with the distro kernel, ``vmlinuz`` and
``initrd.img``. A layer is built in a temporary folder renamed to KEY at the end, so a folder named
KEY is always whole; a build that died leaves a temporary folder the next build removes.

The ssh key pair (ed25519) is made once per state folder, never shipped: its public half is part of the
key of every layer. ``GuestImage`` holds the logic and needs no Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import inspect
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time

from ansible_collections.mpsocks.mptcp.plugins.module_utils import config_drive, zip_code_cache
from ansible_collections.mpsocks.mptcp.plugins.module_utils.build_cache import (
    duration,
    read_json,
    sha256_text,
    write_json,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.locking import hold

DEBOOTSTRAP_SCRIPTS = "/usr/share/debootstrap/scripts"
APT_SOURCES = "/etc/apt/sources.list"
APT_SOURCES_DIR = "/etc/apt/sources.list.d"
#: Suites of a Debian release that are not the release itself (debootstrap needs the release).
NOT_A_RELEASE = re.compile(r"-(security|updates|backports|backports-sloppy|proposed-updates)$|/")
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+\Z")
UNIT_NAME = re.compile(r"[A-Za-z0-9:_.@\\-]+\.(service|socket|timer|target|path|mount)\Z")
HOSTNAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
PIP_REQUIREMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?"
                             r"\s*([<>=!~]=?[^;\s]+\s*,?\s*)*\Z")
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.I)
UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MIN_SIZE = 256 << 20
#: Room a layer's build needs besides the image itself: the tree (about 0.5 GB), its tar, the .debs.
BUILD_ROOM = 1536 << 20
#: A tree may fill at most this share of the image: ext4's metadata and journal need the rest.
FILL_LIMIT = 0.85
DISTRO_KERNEL = "linux-image-cloud-amd64"
#: What the distro kernel's initrd loads to find /dev/vda (ext4 is built in): a small initrd boots faster.
INITRD_MODULES = ("virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net", "virtio_console")
IMAGE = "disk.img"
CONFIG_DRIVE_UNIT = "mpsocks-config-drive.service"
INFO = "image.json"
TAR = "rootfs.tar"
LOG = "build.log"
FAILED_LOG = "last-failed-build.log"
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
              "DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true"}
#: The host's tools, and the Debian package of each.
TOOLS = (("debootstrap", "debootstrap"), ("mkfs.ext4", "e2fsprogs"), ("ssh-keygen", "openssh-client"),
         ("tar", "tar"), ("chroot", "coreutils"))
TAR_OPTIONS = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"]

SSHD_CONFIG = """\
# Written by mpsocks (module guest_image): root logs in with the key mpsocks made, nothing else.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""
AUTOLOGIN = """\
# Written by mpsocks (module guest_image): root is logged in on the serial console.
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 %I $TERM
"""
#: The same for console-getty, the serial login of a VM booted without udev (role guest_vm with the role's
#: kernel: serial-getty@ttyS0 would wait for a device unit that only udev makes).
CONSOLE_AUTOLOGIN = """\
# Written by mpsocks (module guest_image): root is logged in on the console (ttyS0 in the VM).
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud - 115200,38400,9600 $TERM
"""
FSTAB = """\
# Written by mpsocks (module guest_image): the guest's disk is its root.
/dev/vda / ext4 defaults,errors=remount-ro 0 1
"""
JOURNALD = """\
# Written by mpsocks (module guest_image): the journal in memory only, so that the guest boots faster
# (no flush to /var/log/journal); its console output goes to the serial log. A later drop-in can change it.
[Journal]
Storage=volatile
"""
RESOLV_CONF = "# The guest's resolvers are written when it comes up (role mpsocks.mptcp.guest_network).\n"
POLICY_RC_D = "#!/bin/sh\n# mpsocks: no service starts while the image is built\nexit 101\n"


def source_of(module):
    """MODULE's source (also when it was imported from Ansible's zip)."""
    try:
        return inspect.getsource(module)
    except (OSError, TypeError):
        return module.__name__


def code_hash():
    """A hash of this file and of what it puts into images: a change to how images are built makes new
    images."""
    return sha256_text(source_of(sys.modules[__name__]) + source_of(zip_code_cache) + config_drive.BOOTSTRAP
                       + config_drive.UNIT + config_drive.INIT_SCRIPT)[:16]


def human(size):
    """SIZE bytes as people read them (binary units)."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return "%.1f %s" % (size / factor, unit)
    return "%d bytes" % size


def parse_size(value):
    """Bytes of a size such as 2G, 2GiB, 1536M or a number of bytes."""
    if isinstance(value, int):
        size = value
    else:
        found = SIZE.match(str(value))
        if not found:
            raise MpsocksError("size %r: a number of bytes or one with a unit, such as 2G or 1536M"
                               % (value,))
        size = int(float(found.group(1)) * UNITS[found.group(2).lower()])
    if size < MIN_SIZE:
        raise MpsocksError("size %s is too small: an image needs at least %s" % (value, human(MIN_SIZE)))
    return size


def one_line(text, limit=300):
    return " ".join(str(text).split())[:limit]


# --- the host's apt sources ----------------------------------------------------------------------

def _one_line_sources(text):
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        options = {}
        found = re.match(r"^(deb|deb-src)\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)(.*)$", line)
        if not found:
            continue
        if found.group(2):
            for option in found.group(2).strip()[1:-1].split():
                name, dummy, value = option.partition("=")
                options[name.lower()] = value
        yield {"type": found.group(1), "uri": found.group(3), "suite": found.group(4),
               "components": found.group(5).split(), "signed_by": options.get("signed-by", ""),
               "enabled": True}


def _deb822_sources(text):
    for paragraph in re.split(r"\n\s*\n", text):
        fields, name = {}, None
        for raw in paragraph.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and name:
                fields[name] += "\n" + raw.strip()
                continue
            name, sep, value = raw.partition(":")
            if not sep:
                name = None
                continue
            name = name.strip().lower()
            fields[name] = value.strip()
        if "uris" not in fields or "suites" not in fields:
            continue
        signed_by = fields.get("signed-by", "")
        enabled = fields.get("enabled", "yes").strip().lower() not in ("no", "false", "0")
        for kind in fields.get("types", "deb").split():
            for uri in fields["uris"].split():
                for suite in fields["suites"].split():
                    yield {"type": kind, "uri": uri, "suite": suite,
                           "components": fields.get("components", "").split(),
                           "signed_by": signed_by if "\n" not in signed_by else "", "enabled": enabled}


def apt_source_files(main=APT_SOURCES, folder=APT_SOURCES_DIR):
    """The files apt reads its sources from, in its order."""
    files = [main] if os.path.isfile(main) else []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        names = []
    return files + [os.path.join(folder, name) for name in names if name.endswith((".list", ".sources"))]


def host_sources(files=None):
    """Every enabled ``deb`` source of the host, in apt's order."""
    found = []
    for path in apt_source_files() if files is None else files:
        try:
            with open(path) as handle:
                text = handle.read()
        except OSError:
            continue
        parse = _deb822_sources if path.endswith(".sources") else _one_line_sources
        found += [source for source in parse(text) if source["type"] == "deb" and source["enabled"]]
    return found


def debootstrap_knows(suite, scripts=DEBOOTSTRAP_SCRIPTS):
    return bool(suite) and "/" not in suite and os.path.isfile(os.path.join(scripts, suite))


def host_release_source(sources, scripts=DEBOOTSTRAP_SCRIPTS):
    """The first host source that is a release debootstrap can install (not -security, -updates ...).

    Before debootstrap is installed (no SCRIPTS folder), the first that looks like Debian's.
    """
    candidates = [source for source in sources if not NOT_A_RELEASE.search(source["suite"])
                  and re.match(r"^(https?|ftp|file)://", source["uri"])]
    if os.path.isdir(scripts):
        return next((source for source in candidates if debootstrap_knows(source["suite"], scripts)), None)
    debian = [source for source in candidates if "main" in source["components"] and "debian" in source["uri"]]
    return (debian or candidates or [None])[0]


# --- paths inside a tree -------------------------------------------------------------------------

def in_tree(tree, path, depth=0):
    """The host path of PATH inside TREE, following the tree's symlinks as a chroot would."""
    if depth > 40:
        raise MpsocksError("%s: too many levels of symbolic links in the image" % path)
    parts = [part for part in path.split("/") if part not in ("", ".")]
    current = tree
    for position, part in enumerate(parts):
        if part == "..":
            current = os.path.dirname(current) if current != tree else tree
            continue
        candidate = os.path.join(current, part)
        if os.path.islink(candidate):
            target = os.readlink(candidate)
            rest = "/".join(parts[position + 1:])
            if target.startswith("/"):
                base = target
            else:
                base = os.path.join("/" + os.path.relpath(current, tree), target)
            return in_tree(tree, os.path.normpath(base + ("/" + rest if rest else "")), depth + 1)
        current = candidate
    return current


def write_in_tree(tree, path, content, mode=0o644, dir_mode=0o755):
    """Write CONTENT to PATH of TREE (root-owned), making missing folders."""
    target = in_tree(tree, path)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        os.makedirs(folder, mode=dir_mode)
    if os.path.islink(target) or os.path.isdir(target):
        raise MpsocksError("%s in the image is a %s, not a file" % (
            path, "symbolic link" if os.path.islink(target) else "folder"))
    tmp = target + ".mpsocks-tmp"
    with open(tmp, "wb") as handle:
        handle.write(content.encode("utf-8") if isinstance(content, str) else content)
    os.chown(tmp, 0, 0)
    os.chmod(tmp, mode)
    os.replace(tmp, target)


# --- removing trees safely -----------------------------------------------------------------------

def _unescape(field):
    return re.sub(r"\\([0-7]{3})", lambda found: chr(int(found.group(1), 8)), field)


def mounts_under(path):
    """Mount points at or below PATH, deepest first."""
    path = os.path.realpath(path)
    points = []
    try:
        with open("/proc/self/mountinfo") as handle:
            for line in handle:
                point = _unescape(line.split()[4])
                if point == path or point.startswith(path + "/"):
                    points.append(point)
    except OSError:
        pass
    return sorted(points, key=len, reverse=True)


def remove_tree(path):
    """Remove PATH; what debootstrap mounted in it (proc, sys, a bound /dev) is unmounted first, and
    ``rm --one-file-system`` never follows anything into another file system."""
    if not os.path.lexists(path):
        return
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    left = mounts_under(path)
    if left:
        raise MpsocksError("cannot remove %s: %s is still mounted" % (path, left[0]))
    subprocess.run(["rm", "-rf", "--one-file-system", "--", path], capture_output=True, check=False)
    if os.path.lexists(path):
        raise MpsocksError("cannot remove %s" % path)


def tree_bytes(tree):
    """The space the files of TREE take (each inode once)."""
    total, seen = 0, set()
    for folder, dirs, files in os.walk(tree):
        for name in dirs + files:
            try:
                info = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
    return total


def free_bytes(path):
    """Free space (for root) of the file system PATH, or its nearest existing folder, is on."""
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize, path


def missing_tools():
    return [package for tool, package in TOOLS if not shutil.which(tool)]


# --- the image -----------------------------------------------------------------------------------

class GuestImage:
    """One module call: plan the layers, find them cached or build what is missing."""

    def __init__(self, params):
        self.params = params
        self.state_dir = os.path.abspath(params.get("state_dir") or "/var/lib/mpsocks")
        self.images = os.path.join(self.state_dir, "image")
        self.ssh_key = os.path.abspath(params.get("ssh_key")
                                       or os.path.join(self.state_dir, "ssh", "id_ed25519"))
        self.nice = int(params.get("nice") or 0)
        self.suite = self.mirror = self.keyring = None
        self.mirror_from = None
        self.log = None

    # -- planning -------------------------------------------------------------------------------

    def validate(self, check_suite=True):
        params = self.params
        self.size = parse_size(params.get("size") or "2G")
        self.hostname = params.get("hostname") or "mpsocks-guest"
        if not HOSTNAME.match(self.hostname):
            raise MpsocksError("hostname %r: 1 to 63 of a-z, 0-9 and -, not starting or ending with -"
                               % self.hostname)
        self.packages = self.package_list("packages", params.get("packages"))
        self.distro_kernel = bool(params.get("distro_kernel"))
        if self.distro_kernel and DISTRO_KERNEL not in self.packages:
            self.packages = sorted(self.packages + [DISTRO_KERNEL])
        self.extra_packages = self.package_list("extra_packages", params.get("extra_packages"))
        self.python_packages = [str(req).strip() for req in params.get("python_packages") or []]
        for requirement in self.python_packages:
            if not PIP_REQUIREMENT.match(requirement):
                raise MpsocksError("python_packages: %r is not a requirement such as pyroute2>=0.9.7"
                                   % requirement)
        if self.python_packages and "python3" not in self.packages:
            raise MpsocksError("python_packages need python3 in packages")
        self.disabled_units = sorted(set(params.get("disabled_units") or []))
        for unit in self.disabled_units:
            if not UNIT_NAME.match(unit):
                raise MpsocksError("disabled_units: %r is not a systemd unit name such as apt-daily.timer"
                                   % unit)
        self.serial_autologin = bool(params.get("serial_autologin", True))
        self.files = []
        for position, item in enumerate(params.get("files") or []):
            path = item.get("path") or ""
            if not path.startswith("/") or ".." in path.split("/") or path.endswith("/"):
                raise MpsocksError("files[%d]: path %r is not an absolute file path" % (position, path))
            mode = item.get("mode") or "0644"
            try:
                mode_number = int(str(mode), 8)
            except ValueError:
                raise MpsocksError("files[%d] (%s): mode %r is not an octal mode such as 0644"
                                   % (position, path, mode)) from None
            if not 0 <= mode_number <= 0o7777:
                raise MpsocksError("files[%d] (%s): mode %r is not a file mode" % (position, path, mode))
            self.files.append({"path": path, "content": item.get("content") or "",
                               "mode": "%04o" % mode_number})
        self.resolve_source(check_suite)

    def package_list(self, name, packages):
        packages = sorted({str(package).strip() for package in packages or [] if str(package).strip()})
        for package in packages:
            if not PACKAGE_NAME.match(package):
                raise MpsocksError("%s: %r is not a Debian package name" % (name, package))
        return packages

    def resolve_source(self, check_suite=True):
        """Suite, mirror and keyring: as given, else from the host's apt sources."""
        suite = (self.params.get("suite") or "").strip()
        mirror = (self.params.get("mirror") or "").strip().rstrip("/")
        keyring = (self.params.get("keyring") or "").strip()
        host = None
        if not suite or not mirror:
            files = apt_source_files()
            host = host_release_source(host_sources(files))
            if host is None:
                raise MpsocksError("cannot tell a Debian release and mirror from the host's apt sources "
                                   "(%s): set suite and mirror" % (", ".join(files) or "none found"))
        if not suite:
            suite = host["suite"]
        if not mirror:
            mirror = host["uri"].rstrip("/")
            self.mirror_from = "the host's apt sources"
            if not keyring and host["signed_by"].startswith("/") and os.path.isfile(host["signed_by"]):
                keyring = host["signed_by"]
        if check_suite and not debootstrap_knows(suite):
            raise MpsocksError("suite %r: debootstrap knows no such release (no script %s/%s); name one "
                               "such as bookworm or trixie" % (suite, DEBOOTSTRAP_SCRIPTS, suite))
        if not re.match(r"^(https?|ftp|file)://[^\s]+$", mirror):
            raise MpsocksError("mirror %r: a URL such as http://deb.debian.org/debian" % mirror)
        if keyring and not os.path.isfile(keyring):
            raise MpsocksError("keyring %s: no such file" % keyring)
        self.suite, self.mirror, self.keyring = suite, mirror, keyring or None

    def public_key(self, write=True):
        """The ssh key's public half (type and key, no comment), or None when there is no key yet; a
        missing ``.pub`` file is made from the private half (when WRITE)."""
        if not os.path.exists(self.ssh_key):
            return None
        pub = self.ssh_key + ".pub"
        try:
            with open(pub) as handle:
                text = handle.read()
        except OSError:
            text = self.command(["ssh-keygen", "-y", "-f", self.ssh_key],
                                what="reading ssh key %s" % self.ssh_key)
            if write:
                with open(pub, "w") as handle:
                    handle.write(text)
        fields = text.split()
        if len(fields) < 2 or not fields[0].startswith("ssh-"):
            raise MpsocksError("%s holds no ssh public key" % pub)
        return " ".join(fields[:2])

    def layer_inputs(self, public_key):
        """[(layer, key, inputs)] of the layers the image is made of, base first."""
        base = {"layer": "base", "suite": self.suite, "mirror": self.mirror, "keyring": self.keyring,
                "packages": self.packages, "python_packages": self.python_packages, "size": self.size,
                "hostname": self.hostname, "serial_autologin": self.serial_autologin,
                "disabled_units": self.disabled_units, "files": self.files,
                "distro_kernel": self.distro_kernel, "ssh_public_key": public_key, "code": code_hash()}
        layers = [("base", self.key_of(base), base)]
        if self.extra_packages:
            extras = {"layer": "extras", "base": layers[0][1], "extra_packages": self.extra_packages,
                      "disabled_units": self.disabled_units, "size": self.size, "code": base["code"]}
            layers.append(("extras", self.key_of(extras), extras))
        return layers

    def key_of(self, inputs):
        digest = sha256_text(json.dumps(inputs, sort_keys=True))[:12]
        return "%s-%s-%s" % (self.suite, inputs["layer"], digest)

    def folder(self, key):
        return os.path.join(self.images, key)

    def cached(self, key):
        """image.json of the finished layer KEY, or None."""
        info = read_json(os.path.join(self.folder(key), INFO))
        if info and info.get("key") == key and os.path.isfile(os.path.join(self.folder(key), IMAGE)):
            return info
        return None

    def need(self, layers):
        return len(layers) * self.size + BUILD_ROOM

    def check_space(self, layers):
        need = self.need(layers)
        free, where = free_bytes(self.images)
        if free < need:
            raise MpsocksError("not enough disk space for the guest image in %s: it needs %s (%s for %s, "
                               "which the guest may fill, and %s to build it), %s is free"
                               % (where, human(need), human(self.size * len(layers)),
                                  "the image" if len(layers) == 1 else "%d images" % len(layers),
                                  human(BUILD_ROOM), human(free)))

    # -- the module's answer ---------------------------------------------------------------------

    def answer(self, info, changed, built=()):
        folder = self.folder(info["key"])
        kernel = os.path.join(folder, "vmlinuz")
        initrd = os.path.join(folder, "initrd.img")
        if changed:
            msg = "built image %s (%s) in %s" % (info["key"], ", ".join(built),
                                                 duration(info["total_seconds"]))
        else:
            msg = "image %s is cached" % info["key"]
        return {"changed": changed, "cached": not changed, "key": info["key"], "image_dir": folder,
                "image": os.path.join(folder, IMAGE), "ssh_key": self.ssh_key,
                "ssh_public_key": info["ssh_public_key"], "host_key": info.get("host_key", ""),
                "kernel": kernel if os.path.isfile(kernel) else "",
                "initrd": initrd if os.path.isfile(initrd) else "",
                "info": info, "built": list(built), "missing_packages": [], "msg": msg}

    def run(self, check_mode=False, report_missing=False):
        """Find the image, or build it: the module's result. A cached image needs none of the tools."""
        missing = missing_tools()
        self.validate(check_suite="debootstrap" not in missing)
        public_key = self.public_key(write=not check_mode and not missing)
        layers = self.layer_inputs(public_key)
        if public_key is not None:
            info = self.cached(layers[-1][1])
            if info:
                return self.answer(info, False)
        if missing:
            if report_missing:
                return {"changed": bool(check_mode), "cached": False, "missing_packages": missing,
                        "ssh_key": self.ssh_key, "msg": "missing packages: %s" % " ".join(missing)}
            raise MpsocksError("building the guest image needs Debian packages that are not installed: %s "
                               "(apt-get install --no-install-recommends %s)"
                               % (" ".join(missing), " ".join(missing)))
        self.check_space([layer for layer in layers if not self.cached(layer[1])])
        if check_mode:
            todo = [name for name, key, _inputs in layers if public_key is None or not self.cached(key)]
            return {"changed": True, "cached": False, "missing_packages": [], "ssh_key": self.ssh_key,
                    "msg": "would %sbuild the %s image layer%s of %s from %s"
                           % ("make ssh key %s and " % self.ssh_key if public_key is None else "",
                              " and ".join(todo), "s" if len(todo) > 1 else "", self.suite, self.mirror)}
        with hold(["guest-image:" + self.state_dir], "guest image build in %s" % self.images):
            return self.build()

    # -- building --------------------------------------------------------------------------------

    def build(self):
        started = time.monotonic()
        public_key = self.public_key() or self.make_key()
        layers = self.layer_inputs(public_key)
        info = self.cached(layers[-1][1])
        if info:  # another run built it while this one waited for the lock
            return self.answer(info, False)
        os.makedirs(self.images, mode=0o755, exist_ok=True)
        self.remove_leftovers()
        self.check_space([layer for layer in layers if not self.cached(layer[1])])
        built = []
        parent = None
        for name, key, inputs in layers:
            info = self.cached(key)
            if info is None:
                layer_started = time.monotonic()
                info = self.build_layer(name, key, inputs, parent, public_key)
                built.append("%s %s" % (name, duration(time.monotonic() - layer_started)))
            parent = info
        info = dict(parent, total_seconds=round(time.monotonic() - started, 1))
        return self.answer(info, True, built)

    def make_key(self):
        """A new ed25519 key pair for the guest's root, private half 0600, folder 0700."""
        folder = os.path.dirname(self.ssh_key)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        tmp = os.path.join(folder, ".new-key.%d" % os.getpid())
        for path in (tmp, tmp + ".pub"):
            if os.path.lexists(path):
                os.unlink(path)
        comment = "mpsocks-guest-root@%s" % socket.gethostname()
        self.command(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", tmp],
                     what="ssh-keygen")
        os.chmod(tmp, 0o600)
        os.replace(tmp + ".pub", self.ssh_key + ".pub")
        os.replace(tmp, self.ssh_key)
        return self.public_key()

    def remove_leftovers(self):
        """Temporary folders of builds that died (this run holds the lock, so no build is running)."""
        for path in glob.glob(os.path.join(self.images, ".build-*")):
            remove_tree(path)

    def command(self, argv, what=None, chroot=None, env=None, niced=False):
        """Run ARGV (inside CHROOT), its output to the build log; a failure is one line naming WHAT."""
        if chroot:
            argv = ["chroot", chroot] + list(argv)
            env = dict(CHROOT_ENV, **(env or {}))
        if niced and self.nice:
            argv = ["nice", "-n", str(self.nice)] + list(argv)
        if self.log:
            with open(self.log, "ab") as out:
                out.write(("$ %s\n" % shlex.join(argv)).encode())
                out.flush()
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                      env=env, check=False)
            output = ""
        else:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                                  check=False)
            output = proc.stdout
        if proc.returncode:
            detail = self.log_error() if self.log else one_line(proc.stderr or proc.stdout)
            raise MpsocksError("%s failed (exit %d): %s" % (what or argv[0], proc.returncode,
                                                            detail or "no message"))
        return output

    def log_error(self):
        """The line of the build log that says best what went wrong."""
        try:
            with open(self.log, errors="replace") as handle:
                lines = [line.strip() for line in handle if line.strip() and not line.startswith("$ ")]
        except OSError:
            return ""
        for pattern in (r"^E: ", r"^(W: Failure|ERROR|Error|error)\b", r"\b(error|failed|cannot)\b"):
            found = [line for line in lines if re.search(pattern, line, re.I if "|" in pattern else 0)]
            if found:
                return one_line(found[-1] if pattern == r"^E: " else found[0])
        return one_line(lines[-1]) if lines else ""

    def build_layer(self, name, key, inputs, parent, public_key):
        """Build layer NAME into a temporary folder renamed to KEY at the end; return its image.json."""
        tmp = os.path.join(self.images, ".build-%s.%d" % (key, os.getpid()))
        tree = os.path.join(tmp, "tree")
        os.makedirs(tmp, mode=0o755)
        self.log = os.path.join(tmp, LOG)
        started = time.monotonic()
        try:
            with open(self.log, "w") as handle:
                handle.write("mpsocks guest image, layer %s (%s)\n" % (name, key))
            if name == "base":
                self.debootstrap(tree)
                self.configure_base(tree, public_key)
            else:
                os.makedirs(tree)
                self.command(["tar", "-x", "-p", "-f", os.path.join(self.folder(parent["key"]), TAR),
                              "-C", tree] + TAR_OPTIONS, what="unpacking the base layer", niced=True)
                self.install_extras(tree)
            self.disable_units(tree)
            details = self.describe(tree)
            if name == "base":
                self.command(["tar", "-c", "-f", os.path.join(tmp, TAR), "-C", tree] + TAR_OPTIONS + ["."],
                             what="archiving the tree", niced=True)
            self.export_kernel(tree, tmp, parent)
            used = self.make_filesystem(tree, os.path.join(tmp, IMAGE))
            remove_tree(tree)
            info = {"key": key, "layer": name, "parent": parent["key"] if parent else None,
                    "inputs": inputs, "suite": self.suite, "mirror": self.mirror,
                    "packages": self.packages + (self.extra_packages if name == "extras" else []),
                    "size": self.size, "used_bytes": used, "ssh_public_key": public_key,
                    "ssh_key": self.ssh_key, "hostname": self.hostname,
                    "root_device": "/dev/vda", "console": "ttyS0", "interfaces": "eth0, eth1 ...",
                    "serial_autologin": self.serial_autologin,
                    "build_seconds": round(time.monotonic() - started, 1),
                    "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            info.update(details)
            write_json(os.path.join(tmp, INFO), info)
            self.log = None
            final = self.folder(key)
            if os.path.lexists(final):
                remove_tree(final)  # an incomplete leftover: a finished one was returned before
            os.rename(tmp, final)
            return info
        except BaseException:
            if self.log and os.path.exists(self.log):
                shutil.copyfile(self.log, os.path.join(self.images, FAILED_LOG))
            self.log = None
            remove_tree(tmp)
            raise

    def debootstrap(self, tree):
        cache = os.path.join(self.images, "cache", "debs")
        os.makedirs(cache, mode=0o755, exist_ok=True)
        argv = ["debootstrap", "--variant=minbase", "--cache-dir=%s" % cache]
        if self.packages:
            argv.append("--include=%s" % ",".join(self.packages))
        if self.keyring:
            argv.append("--keyring=%s" % self.keyring)
        self.command(argv + [self.suite, tree, self.mirror],
                     what="debootstrap %s from %s" % (self.suite, self.mirror), niced=True)
        for point in mounts_under(tree):  # debootstrap unmounts them; make sure
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    def configure_base(self, tree, public_key):
        write_in_tree(tree, "/etc/hostname", self.hostname + "\n")
        write_in_tree(tree, "/etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost "
                      "ip6-loopback\n" % self.hostname)
        write_in_tree(tree, "/etc/fstab", FSTAB)
        write_in_tree(tree, "/etc/resolv.conf", RESOLV_CONF)
        ssh_dir = in_tree(tree, "/root/.ssh")
        if not os.path.isdir(ssh_dir):
            os.makedirs(ssh_dir)
        os.chmod(ssh_dir, 0o700)
        write_in_tree(tree, "/root/.ssh/authorized_keys", "%s mpsocks\n" % public_key, mode=0o600)
        write_in_tree(tree, "/etc/ssh/sshd_config.d/mpsocks.conf", SSHD_CONFIG)
        write_in_tree(tree, "/etc/systemd/journald.conf.d/mpsocks.conf", JOURNALD)
        if self.has_systemd(tree):
            # The kernel's names (eth0, eth1 ... in PCI order, the order of the domain's taps), not udev's
            # predictable ones: the guest roles' default interface names.
            link = in_tree(tree, "/etc/systemd/network/99-default.link")
            if not os.path.lexists(link):
                os.makedirs(os.path.dirname(link), mode=0o755, exist_ok=True)
                os.symlink("/dev/null", link)
            if self.serial_autologin:
                write_in_tree(tree, "/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf",
                              AUTOLOGIN)
                write_in_tree(tree, "/etc/systemd/system/console-getty.service.d/autologin.conf",
                              CONSOLE_AUTOLOGIN)
            units = ["serial-getty@ttyS0.service"]
            if os.path.lexists(in_tree(tree, "/usr/bin/python3")):
                # The config drive's steps at boot, before sshd (module_utils/config_drive.py).
                write_in_tree(tree, config_drive.BOOT_SCRIPT, config_drive.BOOTSTRAP)
                write_in_tree(tree, config_drive.INIT, config_drive.INIT_SCRIPT, mode=0o755)
                write_in_tree(tree, "/etc/systemd/system/%s" % CONFIG_DRIVE_UNIT, config_drive.UNIT)
                units.append(CONFIG_DRIVE_UNIT)
            self.command(["systemctl", "enable"] + units, chroot=tree,
                         what="enabling the serial console and the config drive's unit")
        if os.path.lexists(in_tree(tree, "/usr/bin/python3")):
            self.install_zip_code_cache(tree)
        if self.python_packages:
            self.install_python_packages(tree)
        if self.distro_kernel:
            write_in_tree(tree, "/etc/initramfs-tools/conf.d/mpsocks.conf",
                          "# mpsocks: only the modules listed in ../modules, so that the initrd is small;\n"
                          "# the root file system is ext4 (mkfs.ext4 -d), which update-initramfs cannot see\n"
                          "MODULES=list\nFSTYPE=ext4\nCOMPRESS=gzip\n")
            modules = in_tree(tree, "/etc/initramfs-tools/modules")
            with open(modules) as handle:
                listed = handle.read()
            write_in_tree(tree, "/etc/initramfs-tools/modules", listed.rstrip("\n") + "\n# mpsocks\n"
                          + "".join("%s\n" % module for module in INITRD_MODULES))
            self.command(["update-initramfs", "-u", "-k", "all"], chroot=tree, what="update-initramfs",
                         niced=True)
        for item in self.files:
            write_in_tree(tree, item["path"], item["content"], mode=int(item["mode"], 8))
        self.clean_apt(tree)

    @staticmethod
    def site_packages(tree):
        """The image's folder for Python packages not from Debian, and its Python's version."""
        python = os.path.basename(os.path.realpath(in_tree(tree, "/usr/bin/python3")))
        version = python[len("python"):]
        if not re.match(r"^3\.\d+$", version):
            raise MpsocksError("cannot tell the image's Python version (/usr/bin/python3 is %s)" % python)
        return "/usr/local/lib/python%s/dist-packages" % version, version

    def install_zip_code_cache(self, tree):
        """Every Python of the guest keeps the code it compiles from Ansible's zips (zip_code_cache)."""
        target, dummy = self.site_packages(tree)
        module = "%s/%s.py" % (target, zip_code_cache.MODULE_NAME)
        write_in_tree(tree, module, source_of(zip_code_cache))
        write_in_tree(tree, "%s/%s.pth" % (target, zip_code_cache.MODULE_NAME), zip_code_cache.PTH_LINE)
        self.command(["python3", "-m", "py_compile", module], chroot=tree, what="compiling %s" % module)

    def install_python_packages(self, tree):
        target, version = self.site_packages(tree)
        pip = [sys.executable, "-m", "pip"]
        probe = subprocess.run(pip + ["--version"], capture_output=True, text=True, check=False)
        if probe.returncode:
            raise MpsocksError("python_packages are installed with pip, which %s lacks (apt-get install "
                               "python3-pip, or run the module with a virtualenv's Python)" % sys.executable)
        self.command(pip + ["install", "--no-input", "--disable-pip-version-check",
                            "--no-warn-script-location", "--target", in_tree(tree, target),
                            "--only-binary=:all:", "--python-version", version, "--implementation", "py",
                            "--abi", "none", "--platform", "any"] + self.python_packages,
                     what="pip install %s into the image" % " ".join(self.python_packages), niced=True)
        remove_tree(os.path.join(in_tree(tree, target), "bin"))
        self.command(["python3", "-m", "compileall", "-q", target], chroot=tree,
                     what="compiling %s" % target, niced=True)

    def install_extras(self, tree):
        policy = "/usr/sbin/policy-rc.d"
        write_in_tree(tree, policy, POLICY_RC_D, mode=0o755)
        shutil.copyfile("/etc/resolv.conf", in_tree(tree, "/etc/resolv.conf"))
        try:
            self.command(["apt-get", "update", "-q"], chroot=tree, what="apt-get update in the image",
                         niced=True)
            self.command(["apt-get", "install", "-y", "-q", "--no-install-recommends"] + self.extra_packages,
                         chroot=tree, what="apt-get install %s in the image" % " ".join(self.extra_packages),
                         niced=True)
        finally:
            os.unlink(in_tree(tree, policy))
            write_in_tree(tree, "/etc/resolv.conf", RESOLV_CONF)
        self.clean_apt(tree)

    def clean_apt(self, tree):
        """No .debs or package lists in the image (the guest runs apt-get update when it needs them)."""
        for pattern in ("/var/cache/apt/archives/*.deb", "/var/cache/apt/*.bin", "/var/lib/apt/lists/*_*"):
            for path in glob.glob(in_tree(tree, os.path.dirname(pattern)) + "/" + os.path.basename(pattern)):
                os.unlink(path)

    @staticmethod
    def has_systemd(tree):
        return os.path.lexists(in_tree(tree, "/bin/systemctl"))

    def disable_units(self, tree):
        """Disable and mask the units asked for: a static unit (getty-static, modprobe@...) can only be
        masked, and nothing that wants a masked unit starts it."""
        if not self.has_systemd(tree):
            return
        present = [unit for unit in self.disabled_units if self.unit_file(tree, unit)]
        for verb in ("disable", "mask"):
            if present:
                self.command(["systemctl", verb] + present, chroot=tree, what="systemctl %s" % verb)

    @staticmethod
    def unit_file(tree, unit):
        names = [unit]
        if "@" in unit:
            names.append(re.sub(r"@[^.]*\.", "@.", unit))
        return any(os.path.lexists(in_tree(tree, os.path.join(folder, name)))
                   for folder in ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
                   for name in names)

    def describe(self, tree):
        """What image.json says of the tree: host key, versions, Python packages."""
        details = {"host_key": "", "kernel_release": "", "python_packages": {}}
        try:
            with open(in_tree(tree, "/etc/ssh/ssh_host_ed25519_key.pub")) as handle:
                details["host_key"] = " ".join(handle.read().split()[:2])
        except OSError:
            pass
        kernels = sorted(glob.glob(in_tree(tree, "/boot") + "/vmlinuz-*"))
        if kernels:
            details["kernel_release"] = os.path.basename(kernels[-1])[len("vmlinuz-"):]
        for info in glob.glob(in_tree(tree, "/usr/local/lib") + "/python3*/dist-packages/*.dist-info"):
            name, dummy, version = os.path.basename(info)[:-len(".dist-info")].partition("-")
            details["python_packages"][name] = version
        try:
            with open(in_tree(tree, "/etc/debian_version")) as handle:
                details["debian_version"] = handle.read().strip()
        except OSError:
            details["debian_version"] = ""
        return details

    def export_kernel(self, tree, tmp, parent):
        """The distro kernel and its initrd beside the image, for direct kernel boot."""
        kernels = sorted(glob.glob(in_tree(tree, "/boot") + "/vmlinuz-*"))
        if not kernels:
            return
        release = os.path.basename(kernels[-1])[len("vmlinuz-"):]
        initrd = in_tree(tree, "/boot/initrd.img-" + release)
        for source, name in ((kernels[-1], "vmlinuz"), (initrd, "initrd.img")):
            if os.path.isfile(source):
                shutil.copyfile(source, os.path.join(tmp, name))
                os.chmod(os.path.join(tmp, name), 0o644)

    def make_filesystem(self, tree, image):
        used = tree_bytes(tree)
        if used > self.size * FILL_LIMIT:
            raise MpsocksError("size %s is too small for the image's %s of files: give it at least %s"
                               % (human(self.size), human(used), human(int(used / FILL_LIMIT) + (64 << 20))))
        with open(image, "wb") as handle:
            handle.truncate(self.size)
        self.command(["mkfs.ext4", "-q", "-F", "-L", "mpsocks-root", "-m", "1", "-d", tree, image],
                     what="mkfs.ext4 -d", niced=True)
        os.chmod(image, 0o644)
        return used
