# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Integer sysctls under /proc/sys, read and written with a read-back check.

Paths rather than dotted names, because interface names may hold dots. After
a module entered a namespace, /proc/sys/net is that namespace's.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError


def read_value(path):
    """The integer in PATH, or None when it does not exist (e.g. the interface is gone)."""
    try:
        with open(path) as handle:
            return int(handle.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise MpsocksError("%s: cannot read: %s" % (path, exc)) from None


def write_value(path, value):
    """Set PATH to VALUE and check the kernel kept it; a PATH that does not exist is skipped."""
    if read_value(path) in (None, value):
        return
    try:
        with open(path, "w") as handle:
            handle.write("%d\n" % value)
    except OSError as exc:
        raise MpsocksError("%s: cannot write %d: %s" % (path, value, exc.strerror)) from None
    found = read_value(path)
    if found not in (None, value):
        raise MpsocksError("%s: wrote %d, the kernel holds %s" % (path, value, found))


def ipv4_forwarding_path(interface):
    """Where IPv4 forwarding of what arrives on INTERFACE is switched."""
    return "/proc/sys/net/ipv4/conf/%s/forwarding" % interface
