# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Move the current process into a named network namespace.

A module is a one-shot process: it enters the namespace once, before it
touches anything, and every netlink socket, ``/dev/net/tun`` ioctl, ``nft``
child and ``/proc/sys/net`` file it opens afterwards belongs to that namespace.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import os

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000


def netns_path(name):
    """Path of the bind mount ``ip netns add NAME`` made."""
    if not name or "/" in name or name in (".", ".."):
        raise MpsocksError("netns: %r is not a valid namespace name" % (name,))
    return os.path.join(NETNS_RUN_DIR, name)


def enter_netns(name):
    """Switch the calling process (one thread) into network namespace NAME."""
    path = netns_path(name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise MpsocksError("netns: namespace %r does not exist (no %s)" % (name, path)) from None
        raise MpsocksError("netns: cannot open %s: %s" % (path, exc.strerror)) from None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise MpsocksError("netns: cannot enter %r: %s" % (name, os.strerror(err)))
    finally:
        os.close(fd)
