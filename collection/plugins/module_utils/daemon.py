# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A supervised program: started detached in a namespace and restarted when it exits.

There is no init system to lean on, so the module forks a small supervisor
(double fork, new session, stdin /dev/null, stdout/stderr into the log) that
runs the program in a process group of its own and restarts it when it exits.
The supervisor is a fork of the module process, never an exec of a file: under
Ansible the module's code lives in a temporary zip that is deleted as soon as
the module returns, so everything the supervisor needs is imported up here,
before any fork.

Files in ``run_dir``, all written by the supervisor itself (so a module killed
right after the fork still leaves a record that finds it): ``NAME.json`` (what
runs: argv, netns; the supervisor's identity, so that a reused pid is never
mistaken for it; and the program's process group with its start time, so that
what a killed supervisor left behind is found and a reused number is not),
``NAME.pid`` (the supervisor's pid) and ``NAME.log`` (kept when the daemon is
removed). The supervisor keeps the module's locks until its record is written.

Where the machine runs systemd (a VM guest), the same daemon can be a runtime
unit instead: ``/run/systemd/system/mpsocks-NAME.service``, which carries the
record as a comment and appends the program's output to the same log.

A daemon may own files (its configuration): they are written before it starts,
and a change to one restarts it, as a change to its argv does.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import contextlib
import ctypes
import gc
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import time

from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.locking import LOCK_DIR
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns import current_netns_identity

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
MAX_NAME = 200
DEFAULT_RUN_DIR = "/run/mpsocks"
SUPERVISORS = ("mpsocks", "systemd")
UNIT_DIR = "/run/systemd/system"
UNIT_RECORD = re.compile(r"^# mpsocks: (.*)$", re.M)
#: Every line the supervisor writes to the log carries this tag after the time stamp.
TAG = "mpsocks-daemon"
RESTART_DELAY = 1.0
GIVE_UP_EXITS = 5
GIVE_UP_WINDOW = 30.0
#: How long the program gets between SIGTERM and SIGKILL.
STOP_GRACE = 5.0
#: How long processes get to vanish after SIGKILL.
KILL_WAIT = 5.0
#: Without ready_port, the program must stay up this long for the start to count.
STARTUP_GRACE = 1.0
POLL = 0.05
TCP_LISTEN = "0A"
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
WATCHED = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
#: Set in the program's environment to RUN_DIR/NAME: finds a program that left its process group.
MARKER = "MPSOCKS_DAEMON"
#: Python ignores these; an exec'd program must get the default back.
RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGHUP)
EXIT_LINE = re.compile(r"program pid \d+ (exited with status -?\d+|was killed by signal \d+)")
GONE = ("Z", "X", "x")

ProcStat = collections.namedtuple("ProcStat", "state ppid pgrp session starttime")


# --- /proc ----------------------------------------------------------------------------------------

def proc_stat(pid):
    """The ProcStat of PID, or None when there is no such process."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    # fields[0] is stat field 3 (state); ppid is 4, pgrp 5, session 6, starttime 22.
    return ProcStat(fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))


def proc_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return [part.decode("utf-8", "replace") for part in data.split(b"\0")[:-1]]


def process_netns(pid):
    """(device, inode) of the network namespace of PID, or None."""
    try:
        found = os.stat("/proc/%d/ns/net" % pid)
    except OSError:
        return None
    return (found.st_dev, found.st_ino)


def boot_id():
    with open("/proc/sys/kernel/random/boot_id") as handle:
        return handle.read().strip()


def _processes():
    """(pid, ProcStat) of every live process."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = proc_stat(int(entry))
            if found is not None and found.state not in GONE:
                yield int(entry), found


def live(pid, starttime):
    """Whether process PID runs and is the one that started at STARTTIME (not a reused pid)."""
    found = proc_stat(pid) if isinstance(pid, int) and pid > 1 else None
    return found is not None and found.state not in GONE and found.starttime == starttime


def _gone(pid):
    found = proc_stat(pid)
    return found is None or found.state in GONE


def marked(marker):
    """Live processes whose environment holds MARKER=VALUE (MARKER given as that text)."""
    needle = b"\0" + marker.encode() + b"\0"
    found = []
    for pid, _stat in _processes():
        try:
            with open("/proc/%d/environ" % pid, "rb") as handle:
                environ = b"\0" + handle.read()
        except OSError:
            continue
        if needle in environ:
            found.append(pid)
    return found


def group_members(record):
    """Live members of the program's process group that RECORD names (empty if none is recorded).

    The group's number is its first program's pid, recorded with that program's start time and the
    supervisor's session. While that pid runs it must be the same process; once it has exited the
    number cannot be reused as long as a member is left, and a member must still be in the session
    and no older than the group.
    """
    program = record.get("program")
    if not isinstance(program, dict) or not isinstance(program.get("pid"), int) or program["pid"] <= 1 \
            or not isinstance(program.get("starttime"), int):
        return []
    try:
        if record.get("boot_id") != boot_id():
            return []
    except OSError:
        return []
    leader, started, session = program["pid"], program["starttime"], record.get("session")
    found = proc_stat(leader)
    if found is not None and found.state not in GONE and found.starttime != started:
        return []  # the number belongs to another process now
    return sorted(pid for pid, each in _processes()
                  if each.pgrp == leader and each.session == session and each.starttime >= started)


def listening_inodes(pid, port):
    """Socket inodes LISTENing on TCP PORT in the network namespace of PID."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, table)) as handle:
                lines = handle.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == TCP_LISTEN and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    return inodes


def socket_inodes(pid):
    """Inodes of the sockets process PID holds open."""
    found = set()
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def port_users(port, ours):
    """'COMM (pid N)' of every process but OURS (pids) that LISTENs on TCP PORT in this namespace."""
    inodes = listening_inodes(os.getpid(), port)
    found, seen = set(), set()
    for pid, _stat in _processes() if inodes else ():
        held = socket_inodes(pid) & inodes
        seen |= held
        if held and pid not in ours:
            try:
                with open("/proc/%d/comm" % pid) as handle:
                    found.add("%s (pid %d)" % (handle.read().strip(), pid))
            except OSError:
                continue
    if inodes - seen:
        found.add("a process this module cannot see")
    return sorted(found)


def write_atomically(path, text, mode=0o644):
    """Replace PATH by TEXT (permission bits MODE) in one step, readers seeing the old file or the new one,
    never half; its folder made when missing."""
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        os.makedirs(folder, 0o755)
    tmp = "%s.tmp%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(text)
    os.replace(tmp, path)


def content_state(data, mode):
    """How the record keeps a file: 'SHA1 MODE' of its bytes DATA and permission bits MODE."""
    return "%s %04o" % (hashlib.sha1(data).hexdigest(), mode)


def file_state(path):
    """File PATH as the record keeps it (content_state), or None when there is none."""
    try:
        with open(path, "rb") as handle:
            return content_state(handle.read(), stat.S_IMODE(os.fstat(handle.fileno()).st_mode))
    except FileNotFoundError:
        return None


def systemd_quote(arg):
    """ARG as one word of a systemd command line: quoted, with specifiers and variables escaped."""
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"%s"' % escaped.replace("%", "%%").replace("$", "$$")


def _is_lock(fd):
    """Whether descriptor FD is one of the module's lock files."""
    try:
        return os.readlink("/proc/self/fd/%d" % fd).startswith(LOCK_DIR + "/")
    except OSError:
        return False


# --- the supervisor (runs in the forked process) -------------------------------------------------

def describe_status(status):
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return "was killed by signal %d" % -code
    return "exited with status %d" % code


class Supervisor:
    """Runs one program and restarts it; lives in the detached grandchild of the module."""

    def __init__(self, daemon, env):
        self.name = daemon.name
        self.path = daemon.path
        self.argv = daemon.argv
        self.env = env
        self.state_file = daemon.state_file
        self.pid_file = daemon.pid_file
        self.record = {"name": daemon.name, "argv": daemon.argv, "netns": daemon.netns,
                       "run_dir": daemon.run_dir, "log": daemon.log_file, "files": daemon.files_wanted}
        self.program = None
        self.program_started = None
        self.exits = []
        self.locks = []
        self.libc = ctypes.CDLL(None, use_errno=True)

    def log(self, text):
        line = "%s %s %s: %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), TAG, self.name, text)
        with contextlib.suppress(OSError):
            os.write(2, line.encode("utf-8", "replace"))

    def detach_and_run(self, log_fd, null_fd, report_fd):
        """Become the supervisor: standard streams, the module's locks, no other descriptors; run()."""
        gc.disable()  # no finalizer may close a descriptor number reused below
        os.chdir("/")
        os.umask(0o022)
        os.dup2(null_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        for entry in os.listdir("/proc/self/fd"):
            fd = int(entry)
            if fd <= 2 or fd == report_fd:
                continue
            if _is_lock(fd):
                self.locks.append(fd)  # held until the record is written, even if the module dies
                continue
            with contextlib.suppress(OSError):
                os.close(fd)
        try:
            return self.run(report_fd)
        except BaseException as exc:  # the supervisor must leave a line, never a traceback
            self.log("supervisor failed: %r" % (exc,))
            self.stop()
            return 1

    def run(self, report_fd):
        self.libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self.libc.prctl(PR_SET_NAME, ctypes.c_char_p(("mpsd-" + self.name)[:15].encode()), 0, 0, 0)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        self.log("supervisor pid %d runs: %s" % (os.getpid(), shlex.join(self.argv)))
        me = proc_stat(os.getpid())
        self.record.update(pid=os.getpid(), starttime=me.starttime, session=me.session,
                           cmdline=proc_cmdline(os.getpid()), boot_id=boot_id())
        try:
            self.save()
        except OSError as exc:
            self.log("cannot write %s: %s" % (self.state_file, exc.strerror))
            return 1
        restart_at = None
        if not self.spawn():
            restart_at = self.count_exit()
        for fd in self.locks:
            os.close(fd)
        with contextlib.suppress(OSError):  # a module killed meanwhile: the record speaks for us
            os.write(report_fd, ("%d %d\n" % (os.getpid(), self.program or 0)).encode())
        os.close(report_fd)
        while True:
            timeout = 1.0 if restart_at is None else max(0.0, restart_at - time.monotonic())
            info = signal.sigtimedwait(WATCHED, timeout)
            if info is not None and info.si_signo in STOP_SIGNALS:
                self.log("received %s, stopping" % signal.Signals(info.si_signo).name)
                self.stop()
                self.log("stopped")
                return 0
            status = self.reap()
            if status is not None:
                self.log("program pid %d %s" % (self.program, describe_status(status)))
                self.kill_group(self.program, signal.SIGKILL)  # leftovers would hold its ports
                self.program = None
                self.remember()
                restart_at = self.count_exit()
            if restart_at is not None and self.program is None and time.monotonic() >= restart_at:
                restart_at = None
                if not self.spawn():
                    restart_at = self.count_exit()

    def save(self):
        """Write the record (with the program now running, if any) and the pid file."""
        self.record["program"] = None if self.program is None else {
            "pid": self.program, "starttime": self.program_started}
        write_atomically(self.state_file, json.dumps(self.record, indent=1) + "\n")
        write_atomically(self.pid_file, "%d\n" % os.getpid())

    def remember(self):
        """save(); a failure is logged and the program keeps running."""
        try:
            self.save()
        except OSError as exc:
            self.log("cannot update %s: %s" % (self.state_file, exc.strerror))

    def count_exit(self):
        """Record an exit; return when to restart, or end the supervisor after too many."""
        now = time.monotonic()
        self.exits = [t for t in self.exits if now - t < GIVE_UP_WINDOW] + [now]
        if len(self.exits) >= GIVE_UP_EXITS:
            self.log("giving up: the program exited %d times within %d s" % (len(self.exits), GIVE_UP_WINDOW))
            self.reap()
            os._exit(1)
        self.log("restarting in %g s" % RESTART_DELAY)
        return now + RESTART_DELAY

    def spawn(self):
        try:
            pid = os.fork()
        except OSError as exc:
            self.log("cannot fork: %s" % exc.strerror)
            return False
        if pid == 0:
            try:
                os.setpgid(0, 0)
                for number in RESET_SIGNALS:
                    signal.signal(number, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                os.execve(self.path, self.argv, self.env)
            except OSError as exc:
                # Written like the program's own last words: it is why the program is gone.
                message = "%s: cannot run %s: %s\n" % (TAG, self.path, exc.strerror)
                os.write(2, message.encode("utf-8", "replace"))
            finally:
                os._exit(127)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        found = proc_stat(pid)  # not reaped yet, so there even if it has exited
        self.program = pid
        self.program_started = found.starttime if found else None
        self.remember()
        self.log("started program pid %d" % pid)
        return True

    def reap(self):
        """Collect every exited child (orphans come to us too); the program's status or None."""
        status = None
        while True:
            try:
                pid, found = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return status
            if pid == 0:
                return status
            if pid == self.program:
                status = found

    def kill_group(self, pgid, number):
        try:
            os.killpg(pgid, number)
        except OSError:
            return False
        return True

    def group_exists(self, pgid):
        try:
            os.killpg(pgid, 0)
        except OSError:
            return False
        return True

    def stop(self):
        """SIGTERM the program's process group, SIGKILL it after STOP_GRACE seconds."""
        if self.program is None:
            self.reap()
            return
        pgid = self.program
        if not self.kill_group(pgid, signal.SIGTERM):
            with contextlib.suppress(OSError):
                os.kill(pgid, signal.SIGTERM)  # it left its process group
        deadline = time.monotonic() + STOP_GRACE
        killed = False
        while self.program is not None or self.group_exists(pgid):
            status = self.reap()
            if status is not None:
                self.log("program pid %d %s" % (self.program, describe_status(status)))
                self.program = None
                continue
            if time.monotonic() >= deadline:
                if killed:
                    break
                self.log("program did not stop within %g s, sending SIGKILL" % STOP_GRACE)
                self.kill_group(pgid, signal.SIGKILL)
                if self.program is not None:
                    with contextlib.suppress(OSError):
                        os.kill(self.program, signal.SIGKILL)
                killed = True
                deadline = time.monotonic() + 2.0
            time.sleep(POLL)
        self.reap()


# --- the module side ------------------------------------------------------------------------------

def _resolve(argv0):
    """Absolute path of the executable ARGV0 names (a path or a command on PATH)."""
    if "/" in argv0:
        if not os.path.isabs(argv0):
            raise MpsocksError("argv: %r must be a command on PATH or an absolute path" % argv0)
        path = argv0
    else:
        path = shutil.which(argv0)
        if path is None:
            raise MpsocksError("argv: %r not found on PATH (%s)"
                               % (argv0, os.environ.get("PATH", os.defpath)))
        path = os.path.abspath(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise MpsocksError("argv: %r not found: %s" % (argv0, exc.strerror)) from None
    if not stat.S_ISREG(mode) or not os.access(path, os.X_OK):
        raise MpsocksError("argv: %r is not an executable file" % path)
    return path


def _one_line(text, limit=300):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def is_record(record, name):
    """Whether RECORD (the parsed NAME.json) is daemon NAME's record, not some other JSON file."""
    return (isinstance(record, dict) and record.get("name") == name and isinstance(record.get("pid"), int)
            and "argv" in record)


class Daemon(KernelObject):
    """A program kept running by a supervisor, identified by name within run_dir."""

    kind = "daemon"

    def __init__(self, params):
        super().__init__(params)
        state = params.get("state") or "started"
        self.wanted_state = "started" if state == "present" else state  # present: an item of overridden
        self.state = "present" if self.wanted_state == "started" else "absent"
        self.record = None

    def label(self):
        name = self.params.get("name")
        return "daemon %s" % (name if isinstance(name, str) and NAME_PATTERN.fullmatch(name) else repr(name))

    # validate / read / wanted / apply

    def validate(self):
        name = self.params.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name in (".", "..") \
                or len(name) > MAX_NAME:
            raise MpsocksError("name: %r is not a valid daemon name (up to %d letters, digits, '_', '.', '-')"
                               % (name, MAX_NAME))
        self.name = name
        run_dir = self.params.get("run_dir") or DEFAULT_RUN_DIR
        if not os.path.isabs(run_dir):
            raise MpsocksError("run_dir: %r must be an absolute path" % run_dir)
        if os.path.exists(run_dir) and not os.path.isdir(run_dir):
            raise MpsocksError("run_dir: %r is not a directory" % run_dir)
        self.run_dir = os.path.normpath(run_dir)
        self.pid_file = os.path.join(self.run_dir, name + ".pid")
        self.state_file = os.path.join(self.run_dir, name + ".json")
        self.log_file = os.path.join(self.run_dir, name + ".log")
        self.marker = os.path.join(self.run_dir, name)
        self.netns = self.params.get("netns") or None
        if self.wanted_state not in ("started", "absent"):
            raise MpsocksError("state: %r must be started or absent" % self.wanted_state)
        self.supervisor = self.params.get("supervisor") or "mpsocks"
        if self.supervisor not in SUPERVISORS:
            raise MpsocksError("supervisor: %r must be one of %s" % (self.supervisor, ", ".join(SUPERVISORS)))
        self.unit = "mpsocks-%s.service" % name
        self.unit_file = os.path.join(UNIT_DIR, self.unit)
        if self.supervisor == "systemd":
            if self.netns:
                raise MpsocksError("netns: %r: a systemd unit runs in systemd's namespace, give no netns"
                                   % self.netns)
            if not os.path.isdir(UNIT_DIR) or shutil.which("systemctl") is None:
                raise MpsocksError("supervisor: systemd does not run this machine (no %s)" % UNIT_DIR)
        self._validate_files()
        self.argv = None
        self.ready_port = self.params.get("ready_port")
        self.ready_timeout = self.params.get("ready_timeout")
        if self.ready_timeout is None:
            self.ready_timeout = 10.0
        if self.wanted_state == "absent":
            return
        argv = self.params.get("argv")
        if argv is None:
            raise MpsocksError("argv: required when state is started")
        if not argv:
            raise MpsocksError("argv: must hold at least the program to run")
        argv = [str(arg) for arg in argv]
        if not argv[0] or any("\0" in arg for arg in argv):
            raise MpsocksError("argv: %r has an empty program name or a NUL character" % (argv,))
        self.argv = argv
        self.path = _resolve(argv[0])
        if self.ready_port is not None:
            port = str(self.ready_port)
            if not port.isdigit() or not 1 <= int(port) <= 65535:
                raise MpsocksError("ready_port: %r is not a TCP port (1-65535)" % (self.ready_port,))
            self.ready_port = int(port)
        if self.ready_port is not None and self.params.get("exclusive_port"):
            users = port_users(self.ready_port, set(marked("%s=%s" % (MARKER, self.marker))))
            if users:
                raise MpsocksError("ready_port: TCP port %d is in use by %s; stop it or choose another port"
                                   % (self.ready_port, ", ".join(users)))
        try:
            self.ready_timeout = float(self.ready_timeout)
        except (TypeError, ValueError):
            self.ready_timeout = -1.0
        if not self.ready_timeout > 0:
            raise MpsocksError("ready_timeout: %r must be more than 0 seconds"
                               % (self.params.get("ready_timeout"),))

    def _validate_files(self):
        """self.files: (path, content or None, mode) for every item of files; files_wanted their states."""
        self.files = []
        for index, item in enumerate(self.params.get("files") or []):
            where = "files[%d]" % index
            path = item.get("path")
            if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path:
                raise MpsocksError("%s.path: %r must be an absolute path" % (where, path))
            path = os.path.normpath(path)
            if path in [entry[0] for entry in self.files]:
                raise MpsocksError("%s.path: %s is listed twice" % (where, path))
            present = (item.get("state") or "present") == "present" and self.wanted_state == "started"
            content = item.get("content")
            if present and not isinstance(content, str):
                raise MpsocksError("%s.content: required for %s (state present)" % (where, path))
            mode = str(item.get("mode") or "0644")
            if not re.fullmatch(r"0?[0-7]{3}", mode):
                raise MpsocksError("%s.mode: %r is not an octal mode such as 0644" % (where, mode))
            self.files.append((path, content if present else None, int(mode, 8)))
        self.files_wanted = {
            path: None if content is None else content_state(content.encode(), mode)
            for path, content, mode in self.files}

    def lock_keys(self):
        """The namespace's lock and the daemon's own, so two runs never start or stop it at once."""
        return super().lock_keys() + ["daemon:" + os.path.realpath(self.marker)]

    def read(self):
        """The daemon as its record says, with its files: as it started them, or as they are now when
        they changed since (a change it has not seen). None when neither record nor file is there."""
        current = self._read_unit() if self.supervisor == "systemd" else self._read_record()
        on_disk = {path: file_state(path) for path in self.files_wanted}
        if current is None:
            if self.wanted_state == "absent" and any(on_disk.values()):
                return {"name": self.name, "files": on_disk}
            return None
        recorded = current.pop("recorded_files")
        current["files"] = recorded if on_disk == recorded else {
            path: found if found == recorded.get(path) else "%s (not what runs)" % found
            for path, found in on_disk.items()}
        return current

    def _read_record(self):
        self.record = self._load()
        if self.record is None:
            return None
        running = self._alive(self.record) and process_netns(self.record["pid"]) == current_netns_identity()
        return {
            "name": self.name,
            "argv": self.record.get("argv"),
            "netns": self.record.get("netns"),
            "run_dir": self.run_dir,
            "log": self.log_file,
            "running": running,
            "recorded_files": self.record.get("files") or {},
        }

    def _read_unit(self):
        try:
            with open(self.unit_file) as handle:
                text = handle.read()
        except FileNotFoundError:
            return None
        found = UNIT_RECORD.search(text)
        try:
            record = json.loads(found.group(1)) if found else {}
        except ValueError:
            record = {}
        if text != self._unit_text(record.get("argv") or [], record.get("files") or {}):
            record = {}  # changed by hand, or by another version: written anew
        return {
            "name": self.name,
            "argv": record.get("argv"),
            "netns": None,
            "run_dir": self.run_dir,
            "log": self.log_file,
            "running": self._systemctl("is-active", self.unit) == "active",
            "recorded_files": record.get("files") or {},
        }

    def wanted(self, current):
        return {"name": self.name, "argv": self.argv, "netns": self.netns, "run_dir": self.run_dir,
                "log": self.log_file, "running": True, "files": self.files_wanted}

    def apply(self, current, wanted):
        if self.supervisor == "systemd":
            self._apply_unit(current, wanted)
            return
        record = self.record or {}
        if current is not None:
            self._stop(record)
        self._kill_leftovers(record)
        if current is not None:
            self._remove_files()
        self._write_files(wanted is not None)
        if wanted is not None:
            self._start()

    def as_config(self, state):
        return {key: state[key] for key in ("name", "argv", "netns", "run_dir")}

    @classmethod
    def strays(cls, params, declared):
        """Every daemon recorded in the module's run_dir that DECLARED does not name."""
        run_dir = os.path.normpath(params.get("run_dir") or DEFAULT_RUN_DIR)
        names = {obj.name for obj in declared if obj.run_dir == run_dir}
        found = []
        for path in sorted(glob.glob(os.path.join(glob.escape(run_dir), "*.json"))):
            name = os.path.basename(path)[:-len(".json")]
            if name in names or not NAME_PATTERN.fullmatch(name):
                continue
            try:
                with open(path) as handle:
                    record = json.load(handle)
            except (OSError, ValueError):
                continue
            if is_record(record, name):
                found.append(cls({"name": name, "run_dir": run_dir, "state": "absent"}))
        for obj in found:
            obj.validate()
        return found

    def _apply_or_restore(self, before, after):
        # A failed start stops what it started and removes its files: nothing is left
        # running, and bringing back an old program would hide the failure.
        self.apply(before, after)

    def converge(self, check_mode=False):
        """The object's result, with the supervisor's and the program's pids and the log's path."""
        result = super().converge(check_mode)
        started = self.state == "present" and not (check_mode and result["changed"])
        if self.supervisor == "systemd":
            main = self._systemctl("show", "--property=MainPID", "--value", self.unit) if started else "0"
            pid, program = None, int(main) if main.isdigit() and int(main) else None
        else:
            pid, program = self._running_pids() if started else (None, None)
        result.update(pid=pid, program_pid=program, log=self.log_file)
        return result

    # helpers

    def _load(self):
        """The record; {} when only unusable files are there; None when there are none."""
        if not os.path.isdir(self.run_dir):
            return None
        try:
            with open(self.state_file) as handle:
                record = json.load(handle)
        except (OSError, ValueError):
            record = None
        try:
            with open(self.pid_file) as handle:
                pid_text = handle.read().strip()
        except OSError:
            pid_text = None
        if record is None and pid_text is None:
            return None
        if not is_record(record, self.name) or pid_text != str(record["pid"]):
            return {}
        return record

    def _alive(self, record):
        """Whether the recorded supervisor still runs: same pid, start time, command line and boot."""
        if not live(record.get("pid"), record.get("starttime")):
            return False
        try:
            same_boot = boot_id() == record.get("boot_id")
        except OSError:
            same_boot = False
        return same_boot and proc_cmdline(record["pid"]) == record.get("cmdline")

    def _running_pids(self):
        """(supervisor pid, program pid) from the last read; None for what does not run."""
        record = self.record
        if not record or not self._alive(record):
            return None, None
        program = record.get("program") or {}
        found = proc_stat(program["pid"]) if isinstance(program.get("pid"), int) else None
        if found is None or found.state in GONE or found.starttime != program.get("starttime") \
                or found.ppid != record["pid"]:
            return record["pid"], None
        return record["pid"], program["pid"]

    def _write_files(self, started):
        """Write the daemon's files (remove those of state absent; all of them when it is removed)."""
        for path, content, mode in self.files:
            try:
                if started and content is not None:
                    write_atomically(path, content, mode)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
            except OSError as exc:
                raise MpsocksError("files: cannot write %s: %s" % (path, exc.strerror)) from None

    # systemd

    def _systemctl(self, *args):
        """systemctl's output, stripped; fails with its message, but for a query or a stop that finds
        no unit."""
        found = subprocess.run(["systemctl"] + list(args), capture_output=True, text=True, check=False)
        if found.returncode and args[0] not in ("is-active", "stop", "reset-failed"):
            raise MpsocksError("%s: systemctl %s: %s" % (self.label(), " ".join(args),
                                                         _one_line(found.stderr or found.stdout)))
        return found.stdout.strip()

    def _load_unit_file(self):
        """Have systemd take the unit file as written: a daemon-reload (seconds under TCG) only when systemd
        holds an older version of the unit; one it never loaded it reads when first asked for (systemd 247
        and later; an older one says not-found, and gets the reload)."""
        shown = self._systemctl("show", "--property=LoadState,NeedDaemonReload", self.unit).split()
        if "LoadState=loaded" not in shown or "NeedDaemonReload=yes" in shown:
            self._systemctl("daemon-reload")

    def _unit_text(self, argv, files):
        record = json.dumps({"argv": argv, "files": files}, sort_keys=True)
        return "\n".join([
            "# Written by mpsocks (module mpsocks.mptcp.daemon), in /run: it lives as long as what it runs.",
            "# mpsocks: " + record,
            "[Unit]",
            "Description=mpsocks daemon %s" % self.name,
            "",
            "[Service]",
            "ExecStart=" + " ".join(systemd_quote(arg) for arg in argv),
            "Environment=%s" % systemd_quote("%s=%s" % (MARKER, self.marker)),
            "Restart=always",
            "RestartSec=1",
            "StandardOutput=append:%s" % self.log_file,
            "StandardError=append:%s" % self.log_file,
            "",
        ])

    def _apply_unit(self, current, wanted):
        """Write the files and the unit, then (re)start it and wait until it is ready; or remove it all."""
        if wanted is None:
            self._systemctl("stop", self.unit)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.unit_file)
            self._systemctl("daemon-reload")
            self._write_files(False)
            return
        self._write_files(True)
        text = self._unit_text(self.argv, self.files_wanted)
        try:
            with open(self.unit_file) as handle:
                unchanged = handle.read() == text
        except FileNotFoundError:
            unchanged = False
        if not unchanged:
            write_atomically(self.unit_file, text)
            self._load_unit_file()
        try:
            log_fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise MpsocksError("run_dir: cannot open %s: %s" % (self.log_file, exc.strerror)) from None
        offset = os.lseek(log_fd, 0, os.SEEK_END)
        os.close(log_fd)
        self._systemctl("reset-failed", self.unit)
        self._systemctl("restart", self.unit)
        problem = self._wait_unit_ready()
        if problem:
            self._systemctl("stop", self.unit)
            os.unlink(self.unit_file)
            self._systemctl("daemon-reload")
            raise MpsocksError("%s: %s; last log line: %s (log %s)"
                               % (self.label(), problem, self._last_line(offset), self.log_file))

    def _wait_unit_ready(self):
        """None once the unit is active (and listens on ready_port), else what went wrong."""
        waiting = self.ready_timeout if self.ready_port is not None else STARTUP_GRACE
        deadline = time.monotonic() + waiting
        while True:
            active = self._systemctl("is-active", self.unit)
            if active not in ("active", "activating"):
                return "unit %s is %s after its start" % (self.unit, active)
            ready = self.ready_port is not None and listening_inodes(os.getpid(), self.ready_port)
            if active == "active" and ready:
                return None
            if time.monotonic() >= deadline:
                if self.ready_port is None:
                    return None if active == "active" else "unit %s is still %s" % (self.unit, active)
                return "nothing listens on TCP port %d after %g s" % (self.ready_port, waiting)
            time.sleep(POLL * 4)

    def _remove_files(self):
        for path in (self.pid_file, self.state_file):
            for found in [path] + glob.glob(glob.escape(path) + ".tmp*"):  # a killed writer's half files
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(found)

    def _wait_gone(self, record, seconds):
        deadline = time.monotonic() + seconds
        while self._alive(record):
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL)
        return True

    def _stop(self, record):
        """SIGTERM the supervisor (it stops the program's group); SIGKILL it when that does not work."""
        if not record or not self._alive(record):
            return
        pid = record["pid"]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if self._wait_gone(record, STOP_GRACE + 3.0):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not self._wait_gone(record, 2.0):
            raise MpsocksError("%s: supervisor pid %d does not stop" % (self.label(), pid))

    def _kill_leftovers(self, record):
        """SIGKILL what a killed supervisor left: the recorded program group, and marked processes."""
        leftovers = set(group_members(record)) | set(marked("%s=%s" % (MARKER, self.marker)))
        leftovers.discard(os.getpid())
        for pid in leftovers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + KILL_WAIT
        while leftovers:
            leftovers = {pid for pid in leftovers if not _gone(pid)}
            if leftovers and time.monotonic() >= deadline:
                raise MpsocksError("%s: processes %s survive SIGKILL" % (self.label(), sorted(leftovers)))
            time.sleep(POLL)

    def _start(self):
        if not os.path.isdir(self.run_dir):
            try:
                os.makedirs(self.run_dir)
                os.chmod(self.run_dir, 0o755)
            except OSError as exc:
                raise MpsocksError("run_dir: cannot create %r: %s" % (self.run_dir, exc.strerror)) from None
        try:
            log_fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise MpsocksError("run_dir: cannot open %s: %s" % (self.log_file, exc.strerror)) from None
        offset = os.lseek(log_fd, 0, os.SEEK_END)
        null_fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        read_fd, report_fd = os.pipe()
        supervisor = Supervisor(self, dict(os.environ, **{MARKER: self.marker}))
        try:
            child = os.fork()
        except OSError as exc:
            for fd in (log_fd, null_fd, read_fd, report_fd):
                os.close(fd)
            raise MpsocksError("%s: cannot fork: %s" % (self.label(), exc.strerror)) from None
        if child == 0:
            status = 0
            try:
                os.close(read_fd)
                os.setsid()
                if os.fork() == 0:
                    status = supervisor.detach_and_run(log_fd, null_fd, report_fd)
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        for fd in (log_fd, null_fd, report_fd):
            os.close(fd)
        os.waitpid(child, 0)
        report = b""
        while True:
            chunk = os.read(read_fd, 4096)
            if not chunk:
                break
            report += chunk
        os.close(read_fd)
        try:
            pid, program = [int(part) for part in report.split()]
        except ValueError:
            raise MpsocksError("%s: the supervisor did not start; last log line: %s"
                               % (self.label(), self._last_line(offset))) from None
        record = self._load()
        if not record or record["pid"] != pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # it reported through our pipe: it is ours
            raise MpsocksError("%s: supervisor pid %d left no record in %s"
                               % (self.label(), pid, self.state_file))
        problem = self._wait_ready(record, program, offset)
        if problem:
            self._stop(record)
            self._kill_leftovers(record)
            self._remove_files()
            raise MpsocksError("%s: %s; last log line: %s (log %s)"
                               % (self.label(), problem, self._last_line(offset), self.log_file))

    def _program_up(self, pid, program):
        found = proc_stat(program) if program else None
        return found is not None and found.state not in GONE and found.ppid == pid

    def _listening(self, pid, program):
        inodes = listening_inodes(pid, self.ready_port)
        if not inodes:
            return False
        return any(found.pgrp == program and socket_inodes(member) & inodes
                   for member, found in _processes())

    def _wait_ready(self, record, program, offset):
        """None once the program is up (listening on ready_port), else what went wrong."""
        pid = record["pid"]
        waiting = self.ready_timeout if self.ready_port is not None else STARTUP_GRACE
        deadline = time.monotonic() + waiting
        while True:
            if not self._alive(record):
                return "the supervisor ended during start-up"
            if not self._program_up(pid, program):
                return "%s exited during start-up%s" % (self.argv[0], self._exit_note(offset))
            if self.ready_port is not None and self._listening(pid, program):
                return None
            if time.monotonic() >= deadline:
                if self.ready_port is None:
                    return None
                return "nothing listens on TCP port %d after %g s" % (self.ready_port, waiting)
            time.sleep(POLL)

    def _exit_note(self, offset):
        """' (exited with status N)' from the supervisor's line about the exit, once it is there."""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                with open(self.log_file, "rb") as handle:
                    handle.seek(offset)
                    found = EXIT_LINE.findall(handle.read().decode("utf-8", "replace"))
            except OSError:
                found = []
            if found:
                return " (%s)" % found[-1]
            time.sleep(POLL)
        return ""

    def _last_line(self, offset):
        """The program's last line in the log since OFFSET (else the supervisor's), on one line."""
        try:
            with open(self.log_file, "rb") as handle:
                handle.seek(offset)
                text = handle.read().decode("utf-8", "replace")
        except OSError as exc:
            return "(cannot read %s: %s)" % (self.log_file, exc.strerror)
        ours = re.compile(r"^\S+ \S+ %s %s: " % (re.escape(TAG), re.escape(self.name)))
        program, supervisor = [], []
        for line in text.splitlines():
            if not line.strip():
                continue
            if ours.match(line):
                if re.search(r"received SIG\w+, stopping\Z", line):
                    break  # what follows is our own stop
                supervisor.append(line)
            else:
                program.append(line)
        # The program's own last words; else how it ended; else the supervisor's last line.
        ends = [line for line in supervisor if EXIT_LINE.search(line) or "giving up" in line]
        for lines in (program, ends, supervisor):
            if lines:
                return _one_line(lines[-1])
        return "(the log is empty)"
