# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Exclusive locks that serialise mpsocks runs touching the same objects.

A module holds the locks of an object (its network namespace, by identity, and
whatever else it names) from its first read to its read-back, so that two runs
can neither interleave their changes nor restore over each other. Locks are
``flock`` on files under LOCK_DIR: the kernel drops them when the holder dies,
so a killed run never leaves a stale lock behind.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import time

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError

LOCK_DIR = "/run/lock/mpsocks"
#: How long a module waits for a lock another run holds before it gives up.
WAIT_SECONDS = 300.0
POLL = 0.05
SAFE_KEY = re.compile(r"[A-Za-z0-9_.-]{1,100}\Z")


def lock_path(key):
    """The lock file of KEY; keys that are not plain names are hashed."""
    if not SAFE_KEY.match(key):
        key = "h-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return os.path.join(LOCK_DIR, key + ".lock")


def holder(path):
    """What the lock file says about its holder (pid and what it runs), or ''."""
    try:
        with open(path) as handle:
            return " ".join(handle.read().split())[:200]
    except OSError:
        return ""


class Lock:
    """One exclusive lock; ``acquire(wait)`` returns False when WAIT is 0 and another holds it."""

    def __init__(self, key, purpose=""):
        self.key = key
        self.path = lock_path(key)
        self.purpose = purpose
        self.fd = None

    def acquire(self, wait=WAIT_SECONDS):
        try:
            os.makedirs(LOCK_DIR, mode=0o755, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise MpsocksError("cannot open lock file %s: %s" % (self.path, exc.strerror)) from None
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise MpsocksError("cannot lock %s: %s" % (self.path, exc.strerror)) from None
            if time.monotonic() >= deadline:
                os.close(fd)
                if wait:
                    raise MpsocksError("gave up after %g s waiting for lock %s, held by %s"
                                       % (wait, self.path, holder(self.path) or "another run"))
                return False
            time.sleep(POLL)
        os.ftruncate(fd, 0)
        os.write(fd, ("pid %d %s\n" % (os.getpid(), self.purpose)).encode("utf-8", "replace"))
        self.fd = fd
        return True

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


@contextlib.contextmanager
def hold(keys, purpose=""):
    """Hold the locks of KEYS (in sorted order, so two holders never deadlock) while inside."""
    held = []
    try:
        for key in sorted(set(keys)):
            lock = Lock(key, purpose)
            lock.acquire()
            held.append(lock)
        yield
    finally:
        for lock in reversed(held):
            lock.release()


def netns_key(identity):
    """The lock key of the network namespace with (st_dev, st_ino) IDENTITY."""
    return "netns-%d-%d" % tuple(identity)
