# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Move the current process into a named network namespace; create and delete them.

A module is a one-shot process: it enters the namespace once, before it
touches anything, and every netlink socket, ``/dev/net/tun`` ioctl, ``nft``
child and ``/proc/sys/net`` file it opens afterwards belongs to that namespace.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import signal
import time

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
        _setns(fd, "netns: cannot enter %r" % name)
    finally:
        os.close(fd)


def _setns(fd, what):
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        raise MpsocksError("%s: %s" % (what, os.strerror(ctypes.get_errno())))


#: The namespace the process started in, opened on first use: where ``netns: null`` means.
_HOME = []


def _home_fd():
    if not _HOME:
        _HOME.append(os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC))
    return _HOME[0]


def home_netns_identity():
    """(st_dev, st_ino) of the namespace the process started in (the caller's)."""
    found = os.fstat(_home_fd())
    return (found.st_dev, found.st_ino)


def switch_netns(name):
    """Enter namespace NAME, or go back to the one the process started in when NAME is None.

    A module working on a list of objects in several namespaces switches before each one.
    """
    home = _home_fd()  # opened before the first switch: it must be where the process started
    if name is None:
        _setns(home, "netns: cannot return to the namespace the module started in")
    else:
        enter_netns(name)


@contextlib.contextmanager
def visiting(name):
    """While inside, the thread is in namespace NAME (None: where it is); then back where it was.

    A netlink socket opened inside stays bound to NAME after the thread has left it.
    """
    if name is None:
        yield
        return
    _home_fd()
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter_netns(name)
        yield
    finally:
        try:
            _setns(saved, "netns: cannot leave %r" % name)
        finally:
            os.close(saved)


# Creating, inspecting and deleting named namespaces (the mpsocks.mptcp.netns module).
# These mirror iproute2's ``ip netns add/del``; the KernelObject lives in netns_object.py
# because declarative.py imports this file (enter_netns) before it defines KernelObject.

NETNS_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
MNT_DETACH = 0x2
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 0x100000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3): the CLONE_NEW* type of a namespace file


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _last_error():
    return os.strerror(ctypes.get_errno())


def valid_netns_name(value, option):
    """Return VALUE if it may name a namespace: 1-64 characters out of A-Z a-z 0-9 _ . -"""
    if not isinstance(value, str) or not NETNS_NAME.match(value) or value in (".", ".."):
        raise MpsocksError("%s: %r is not a valid namespace name (1 to 64 characters out of "
                           "A-Z a-z 0-9 _ . -)" % (option, value))
    return value


def netns_identity(name, option="name"):
    """(st_dev, st_ino) of namespace NAME, or None if /run/netns/NAME does not exist."""
    path = netns_path(name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MpsocksError("%s: cannot open %s: %s" % (option, path, exc.strerror)) from None
    try:
        try:
            nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:
            nstype = None
        if nstype != CLONE_NEWNET:
            raise MpsocksError("%s: %s exists but is not a network namespace (a stale file? "
                               "'ip netns del %s' removes it)" % (option, path, name))
        found = os.fstat(fd)
        return (found.st_dev, found.st_ino)
    finally:
        os.close(fd)


def current_netns_identity():
    """(st_dev, st_ino) of the calling thread's network namespace."""
    found = os.stat("/proc/thread-self/ns/net")
    return (found.st_dev, found.st_ino)


def create_netns(name):
    """``ip netns add NAME``: a new namespace bind-mounted on /run/netns/NAME."""
    path = netns_path(name)
    libc = _libc()
    run_dir = NETNS_RUN_DIR.encode()
    os.makedirs(NETNS_RUN_DIR, mode=0o755, exist_ok=True)
    # Like iproute2: make the directory a shared mount (bind it on itself first if it is
    # not a mount point), so that deleting a namespace unmounts it in every mount namespace.
    made_mount_point = False
    while libc.mount(b"", run_dir, b"none", MS_SHARED | MS_REC, None) != 0:
        if ctypes.get_errno() != errno.EINVAL or made_mount_point:
            raise MpsocksError("netns %s: mount --make-shared %s failed: %s"
                               % (name, NETNS_RUN_DIR, _last_error()))
        if libc.mount(run_dir, run_dir, b"none", MS_BIND | MS_REC, None) != 0:
            raise MpsocksError("netns %s: mount --bind %s %s failed: %s"
                               % (name, NETNS_RUN_DIR, NETNS_RUN_DIR, _last_error()))
        made_mount_point = True
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except OSError as exc:
        raise MpsocksError("netns %s: cannot create %s: %s" % (name, path, exc.strerror)) from None
    try:
        _unshare_and_bind(libc, name, path)
    except MpsocksError:
        delete_netns(name)
        raise


def _unshare_and_bind(libc, name, path):
    """Give this thread a new network namespace, bind it on PATH, and come back."""
    own = "/proc/thread-self/ns/net"
    saved = os.open(own, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            raise MpsocksError("netns %s: cannot create a network namespace: %s" % (name, _last_error()))
        try:
            if libc.mount(own.encode(), path.encode(), b"none", MS_BIND, None) != 0:
                raise MpsocksError("netns %s: cannot bind the namespace on %s: %s"
                                   % (name, path, _last_error()))
        finally:
            if libc.setns(saved, CLONE_NEWNET) != 0:
                raise MpsocksError("netns %s: cannot return to the original namespace: %s"
                                   % (name, _last_error()))
    finally:
        os.close(saved)


def delete_netns(name):
    """``ip netns del NAME``: unmount and remove /run/netns/NAME.

    The namespace (and its interfaces) goes away once no process or socket holds it.
    """
    path = netns_path(name)
    _libc().umount2(path.encode(), MNT_DETACH)  # fails harmlessly if it is not mounted
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise MpsocksError("netns %s: cannot remove %s: %s" % (name, path, exc.strerror)) from None


def netns_members(identity):
    """Pids of the processes (other than this one) with a thread in namespace IDENTITY."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            tasks = os.listdir("/proc/%s/task" % entry)
        except OSError:
            continue  # gone meanwhile
        for task in tasks:
            try:
                found = os.stat("/proc/%s/task/%s/ns/net" % (entry, task))
            except OSError:
                continue  # exited, or a zombie: no namespace any more
            if (found.st_dev, found.st_ino) == identity:
                members.append(int(entry))
                break
    return sorted(members)


def stop_members(identity, grace=5.0, poll=0.05):
    """SIGTERM every process in namespace IDENTITY, SIGKILL what is left after GRACE seconds.

    Returns the sorted pids that were signalled; fails if any survives SIGKILL.
    """
    stopped = set()

    def signal_until_gone(signum):
        """Send SIGNUM to each member (once per pid, late arrivals too) until none is left."""
        sent = set()
        deadline = time.monotonic() + grace
        while True:
            left = netns_members(identity)
            if not left or time.monotonic() >= deadline:
                return left
            for pid in left:
                if pid not in sent:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signum)
                    sent.add(pid)
                    stopped.add(pid)
            time.sleep(poll)

    if signal_until_gone(signal.SIGTERM) and signal_until_gone(signal.SIGKILL):
        raise MpsocksError("processes %s are still in the namespace after SIGKILL"
                           % ", ".join(map(str, netns_members(identity))))
    return sorted(stopped)
