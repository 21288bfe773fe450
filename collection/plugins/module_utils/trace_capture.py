# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Capturing on several interfaces at once into one pcapng file: every uplink, one subflow each.

The seed ran one ``tcpdump`` per uplink and merged the files with ``mergecap``. This runs ``dumpcap``
(Wireshark's capture engine, which tshark runs too) once with every interface: it writes a single
pcapng in time order with an interface block per interface that names it, so the merged file still says
which uplink carried each packet. The capture is written to ``OUTPUT.part`` and renamed to OUTPUT when
dumpcap has closed it: a file named OUTPUT is always whole. ``TraceCapture`` holds the logic and needs
no Ansible; the CLI's ``capture`` verb and the ``trace_capture`` module both use it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import time

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns import netns_path, visiting

DUMPCAP = "dumpcap"
DEFAULT_SNAPLEN = 262144
#: The seed captured with -s 120; less than this cuts the TCP options off.
MIN_SNAPLEN = 96
MAX_SECONDS = 7 * 24 * 3600
INTERFACE_NAME = re.compile(r"[^/\s:]{1,15}\Z")
#: dumpcap's last words for each interface.
STATS = re.compile(r"Packets received/dropped on interface '([^']+)': (\d+)/(\d+)")
#: How long dumpcap may take to open the interfaces, and to close the file once asked to stop.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 30.0
#: dumpcap says it captures a moment before it does, and it reads what the kernel holds for it every
#: 250 ms and drops the rest when it is stopped: after it has started, and before it is stopped, wait
#: a second, so that neither the first packets nor the last are lost.
SETTLE = 1.0
PR_SET_PDEATHSIG = 1


def _on_its_own():
    """In dumpcap before it starts: its own process group (a Ctrl-C in the terminal reaches the caller,
    which stops dumpcap once the last packets are read), and SIGINT when its parent dies (never an
    orphan capture)."""
    os.setpgrp()
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGINT)


class TraceCapture:
    """One capture: ``start()``, then ``wait()`` until it ends by itself or is stopped; ``stop()`` ends it
    (dumpcap closes the file as on Ctrl-C). ``run()`` does all three."""

    def __init__(self, params):
        self.interfaces = list(params.get("interfaces") or [])
        self.netns = params.get("netns") or None
        self.seconds = params.get("seconds")
        self.snaplen = params.get("snaplen") or DEFAULT_SNAPLEN
        self.output = os.path.abspath(params["output"]) if params.get("output") else None
        self.process = None
        self.started = None
        self._errors = None

    @property
    def part(self):
        return self.output + ".part"

    def validate(self):
        """Refuse bad input, naming it, before anything is made."""
        if not self.interfaces:
            raise MpsocksError("interfaces: give at least one interface to capture on")
        for name in self.interfaces:
            if not isinstance(name, str) or not INTERFACE_NAME.match(name):
                raise MpsocksError("interfaces: %r is not an interface name" % (name,))
        twice = sorted({name for name in self.interfaces if self.interfaces.count(name) > 1})
        if twice:
            raise MpsocksError("interfaces: %s is given twice" % twice[0])
        if self.seconds is not None and not (isinstance(self.seconds, (int, float)) and 0 < self.seconds
                                             <= MAX_SECONDS):
            raise MpsocksError("seconds: %r is not a duration from 1 s to a week" % (self.seconds,))
        if not (isinstance(self.snaplen, int) and MIN_SNAPLEN <= self.snaplen <= DEFAULT_SNAPLEN):
            raise MpsocksError("snaplen: %r is not a byte count from %d to %d (less cuts off the TCP options)"
                               % (self.snaplen, MIN_SNAPLEN, DEFAULT_SNAPLEN))
        if not self.output:
            raise MpsocksError("output: give the file to write the capture to")
        folder = os.path.dirname(self.output)
        if os.path.isdir(self.output):
            raise MpsocksError("output: %s is a directory; give a file name in it" % self.output)
        if not os.path.isdir(folder):
            raise MpsocksError("output: folder %s does not exist" % folder)
        if not os.access(folder, os.W_OK):
            raise MpsocksError("output: folder %s is not writable" % folder)
        if self.netns and not os.path.exists(netns_path(self.netns)):
            raise MpsocksError("netns: namespace %r does not exist" % self.netns)
        with visiting(self.netns):
            missing = [name for name in self.interfaces if not interface_exists(name)]
        if missing:
            raise MpsocksError("interfaces: %s does not exist%s" % (
                missing[0], " in namespace %s" % self.netns if self.netns else ""))
        if not shutil.which(DUMPCAP):
            raise MpsocksError("dumpcap not found (Debian package wireshark-common, which tshark brings)")

    def argv(self):
        argv = [shutil.which(DUMPCAP) or DUMPCAP, "-q", "-s", str(self.snaplen), "-w", self.part]
        for name in self.interfaces:
            argv += ["-i", name]
        if self.seconds is not None:
            argv += ["-a", "duration:%d" % max(1, round(self.seconds))]
        return argv

    def start(self):
        """Start dumpcap in the namespace and return once it captures on every interface."""
        if os.path.lexists(self.part):
            os.unlink(self.part)  # what a killed capture left
        with visiting(self.netns):
            self.process = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE, text=True, preexec_fn=_on_its_own)
        said = []
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            said.append(line.strip())
            if line.startswith("Capturing on"):
                self.started = time.monotonic()
                time.sleep(SETTLE)
                return
        self.stop(kill=True)
        raise MpsocksError("dumpcap did not start capturing: %s" % (_last(said) or "it said nothing"))

    def wait(self, cancel=None, poll=0.2):
        """Until dumpcap ends by itself (its duration) or CANCEL (a threading.Event) is set."""
        while self.process.poll() is None:
            if cancel is not None and cancel.is_set():
                return
            time.sleep(poll)

    def stop(self, kill=False):
        """End the capture (SIGINT: dumpcap closes the file) and return what it holds."""
        process = self.process
        if process.poll() is None and not kill:
            time.sleep(SETTLE)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGINT)
        try:
            rest = process.communicate(timeout=STOP_TIMEOUT)[1] or ""
        except subprocess.TimeoutExpired:
            process.kill()
            rest = process.communicate()[1] or ""
        if kill:
            if os.path.lexists(self.part):
                os.unlink(self.part)
            return None
        lines = [line.strip() for line in rest.splitlines() if line.strip()]
        # dumpcap names an interface by its description when it has one: 'Loopback: lo'.
        counts = {match.group(1).split(": ")[-1]: (int(match.group(2)), int(match.group(3)))
                  for match in map(STATS.search, lines) if match}
        if process.returncode not in (0, -signal.SIGINT) or not os.path.exists(self.part):
            if os.path.lexists(self.part):
                os.unlink(self.part)
            raise MpsocksError("dumpcap failed (exit %s): %s"
                               % (process.returncode, _last(lines) or "no message"))
        os.rename(self.part, self.output)
        interfaces = [{"name": name, "packets": counts.get(name, (0, 0))[0],
                       "dropped": counts.get(name, (0, 0))[1]} for name in self.interfaces]
        seconds = round(time.monotonic() - self.started, 1) if self.started else 0.0
        return {"path": self.output, "seconds": seconds, "interfaces": interfaces,
                "packets": sum(item["packets"] for item in interfaces)}

    def run(self, cancel=None):
        """Validate, capture until the duration ends or CANCEL is set, and return the result."""
        self.validate()
        self.start()
        try:
            self.wait(cancel)
        except BaseException:
            self.stop(kill=True)
            raise
        return self.stop()


def interface_exists(name):
    """Whether interface NAME exists in the thread's namespace."""
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


def _last(lines):
    return lines[-1] if lines else ""


def _dropped(item):
    return " (%d dropped)" % item["dropped"] if item["dropped"] else ""


def format_result(result):
    """One line: the file, its packets in all and per interface, and what to do with it."""
    per_interface = ", ".join("%s %d%s" % (item["name"], item["packets"], _dropped(item))
                              for item in result["interfaces"])
    return "%s: %d packets in %.1f s (%s); mpsocks-run analyze %s" % (
        result["path"], result["packets"], result["seconds"], per_interface, result["path"])
