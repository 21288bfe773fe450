# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One sysctl of a network namespace (a key under ``net.``), set with a read-back check.

Names come dotted (``net.ipv4.conf.lab0.rp_filter``) or, as sysctl(8) also accepts,
with slashes (``net/ipv4/conf/eth0.100/rp_filter``). A dotted name whose interface
holds dots (``net.ipv4.conf.eth0.100.rp_filter``) is resolved against what exists
under /proc/sys. Values are compared with whitespace normalised, because /proc
prints vectors such as ``tcp_rmem`` with tabs.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import re

from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.sysctl import write_value

PROC_SYS = "/proc/sys"
INTEGER = re.compile(r"[+-]?[0-9]+")


def integers(text):
    """Whether TEXT (normalised) is one integer or several, separated by spaces."""
    return bool(text) and all(INTEGER.fullmatch(field) for field in text.split(" "))


def normalise(text):
    """VALUE with runs of whitespace made one space and integers written plainly ("01" -> "1")."""
    return " ".join(str(int(f)) if INTEGER.fullmatch(f) else f for f in str(text).split())


def _walk(directory, parts):
    """The file under DIRECTORY that PARTS name, letting a component hold dots; or None."""
    for count in range(1, len(parts) + 1):
        child = os.path.join(directory, ".".join(parts[:count]))
        if count == len(parts):
            if os.path.exists(child):
                return child
        elif os.path.isdir(child):
            found = _walk(child, parts[count:])
            if found:
                return found
    return None


def sysctl_path(name):
    """The /proc/sys path of network-namespace sysctl NAME; MpsocksError naming it otherwise."""
    text = str(name).strip()
    slashed = "/" in text
    parts = text.strip("/").split("/") if slashed else text.split(".")
    if not text or any(part in ("", ".", "..") or part != part.strip() for part in parts):
        raise MpsocksError("name: %r is not a sysctl name (e.g. net.ipv4.ip_forward)" % text)
    if parts[0] != "net":
        raise MpsocksError("name: %r is not under net.; only net.* sysctls belong to a network namespace"
                           % text)
    if slashed:
        path = os.path.join(PROC_SYS, *parts)
        path = path if os.path.exists(path) else None
    else:
        path = _walk(PROC_SYS, parts)
    if path is None:
        raise MpsocksError("name: unknown sysctl %r (nothing at %s in this network namespace)"
                           % (text, os.path.join(PROC_SYS, *parts)))
    if os.path.isdir(path):
        raise MpsocksError("name: %r is a group of sysctls, not one sysctl" % text)
    return path


def _read_text(path, name):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError as exc:
        raise MpsocksError("name: cannot read sysctl %r: %s" % (name, exc.strerror)) from None


def _write_text(path, name, value):
    try:
        with open(path, "w") as handle:
            handle.write(value + "\n")
    except OSError as exc:
        reason = exc.strerror
        if exc.errno in (errno.EACCES, errno.EPERM):
            reason += " (read-only sysctl?)"
        raise MpsocksError("value: the kernel refused %r for sysctl %r: %s" % (value, name, reason)) from None


class SysctlSetting(KernelObject):
    """A sysctl always exists: present is the only state, and read() never returns None.

    Validation reads the sysctl, in its namespace, so that a value it cannot take (words for an
    integer sysctl, any value for a read-only one) is refused before any item of the list changes.
    """

    kind = "sysctl"

    def label(self):
        name = str(self.params.get("name")).strip()
        return "sysctl %s" % (name if name.isprintable() and " " not in name else repr(name))

    def validate(self):
        self.name = str(self.params["name"]).strip()
        self.path = sysctl_path(self.name)
        value = self.params.get("value")
        if value is None:
            raise MpsocksError("value: required for sysctl %r" % self.name)
        if "\n" in str(value).strip():
            raise MpsocksError("value: one line only for sysctl %r" % self.name)
        self.value = normalise(value)
        if not os.stat(self.path).st_mode & 0o200:
            raise MpsocksError("value: sysctl %r is read-only" % self.name)
        current = normalise(_read_text(self.path, self.name))
        if integers(current) and not integers(self.value):
            raise MpsocksError("value: sysctl %r takes integers (it holds %r), not %r"
                               % (self.name, current, self.value))

    def read(self):
        return {"name": self.name, "value": normalise(_read_text(self.path, self.name))}

    def wanted(self, current):
        return {"name": self.name, "value": self.value}

    def as_config(self, state):
        return dict(state, netns=self.params.get("netns"))

    def apply(self, current, wanted):
        value = wanted["value"]
        if INTEGER.fullmatch(value) and INTEGER.fullmatch(current["value"]):
            try:
                write_value(self.path, int(value))
            except MpsocksError:
                # Try once more as text, so a refusal is worded with the sysctl's name.
                _write_text(self.path, self.name, value)
            return
        _write_text(self.path, self.name, value)
