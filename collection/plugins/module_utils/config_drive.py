# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A VM guest's config drive: the guest roles' module calls, made by the guest itself at boot, before sshd.

Under TCG every module call over ssh costs the guest about two seconds, and the guest answers ssh only
after it booted. The host knows at ``up`` which calls the guest roles will make (their arguments are data:
the guest plan, the daemons' argv and files), so it writes them, the steps, to a small read-only disk
together with the code that runs them (``drive_text``). The image's unit ``UNIT`` runs ``BOOTSTRAP``
(``BOOT_SCRIPT``) early at boot: it finds the disk by its serial and runs the drive's ``BOOT``, which
unpacks the code (with bytecode compiled on the controller, when the guest's Python takes it: compiling
costs seconds under TCG) and runs every step with the collection's own modules (``apply_steps``), as
Ansible would, writing what each did to ``RESULT``. Sooner still, with the kernel's ``init=INIT`` (role
guest_vm, with the role's kernel), the guest's first process starts ``BOOTSTRAP`` before it becomes
systemd, and the unit waits for that run and reports it. The SOCKS port answers before ssh does; when
every call succeeded, playbook ``boot_socks.yml`` leaves the guest roles out (they would find nothing to
change).

A step is ``{"module": NAME, "args": {...}}``, a module of this collection, or ``{"file": {"path",
"content", "mode"}}``, a file written as ``ansible.builtin.copy`` would.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ast
import base64
import contextlib
import importlib
import importlib.util
import io
import json
import marshal
import os
import re
import sys
import time

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError

#: The config drive's serial, by which the guest finds it.
SERIAL = "mpsocks-config"
#: Where the guest unpacks the drive's code.
CODE_DIR = "/run/mpsocks/config-drive"
#: What the steps did, in CODE_DIR ({"steps": [a line each], "failed": 0 or 1}): the guest play reads it.
RESULT = "result.json"
COLLECTION = "ansible_collections.mpsocks.mptcp"
MODULE_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
#: Packages whose every module goes onto the drive: Ansible imports them by name (its JSON profiles).
IMPORTED_BY_NAME = ("ansible.module_utils._internal._json._profiles",)
#: The config drive's size is a whole number of these (sectors).
BLOCK = 512

#: Where the image keeps BOOTSTRAP.
BOOT_SCRIPT = "/usr/local/lib/mpsocks/config-drive.py"
#: The pid of the run the guest's first process started (INIT_SCRIPT, before systemd runs).
EARLY_PID = "/run/mpsocks/config-drive.pid"
#: systemd's own socket: it takes requests (a daemon step's) once it exists.
SYSTEMD_SOCKET = "/run/systemd/private"
#: What the image runs at boot: finds the config drive, when the VM has one, and runs its own BOOT code; or
#: runs the drive file given as its argument (playbook boot_socks.yml: a running guest converges to this
#: run's drive in one go, not in a module call over ssh for each step).
BOOTSTRAP = rf"""# mpsocks: the config drive's calls (config_drive.py in mpsocks.mptcp): its disk, or a file
import json, os, sys, time
def run(path, early=False):
    with open(path, "rb") as handle:
        drive = json.loads(handle.read().rstrip(b" \0").decode("utf-8"))
    exec(compile(drive["boot"], "mpsocks-config-drive", "exec"),
         {{"drive": drive, "code_dir": "{CODE_DIR}", "early": early}})
def running(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
if len(sys.argv) > 1 and sys.argv[1] != "--early":
    run(sys.argv[1])
disk = None
for name in sorted(os.listdir("/sys/block")):
    try:
        with open("/sys/block/%s/serial" % name) as handle:
            if handle.read().strip() == "{SERIAL}":
                disk = "/dev/" + name
                break
    except OSError:
        continue
if disk is None:
    sys.exit(0)
if sys.argv[1:] == ["--early"]:
    run(disk, early=True)
# The unit: when the first process started a run, wait for it and say what it did (it writes its result
# last); if it ended without one, make the calls here.
try:
    with open("{EARLY_PID}") as handle:
        early = int(handle.read())
except (OSError, ValueError):
    early = None
result = os.path.join("{CODE_DIR}", "{RESULT}")
while early is not None and running(early) and not os.path.exists(result):
    time.sleep(0.05)
if early is not None and os.path.exists(result):
    with open(result) as handle:
        done = json.load(handle)
    print("\n".join(["made as the guest's first process started:"] + done["steps"]))
    sys.exit(done["failed"])
run(disk)
"""

#: The guest's first process with the role's kernel (``init=INIT``): it starts BOOTSTRAP, then becomes
#: systemd. Under TCG Python's start and imports take seconds, and systemd took 2-3 s to start the unit.
INIT = "/usr/local/lib/mpsocks/init"
INIT_SCRIPT = """#!/bin/sh
# mpsocks (config_drive.py in mpsocks.mptcp): the guest's first process (init=). The config drive's calls
# start now, beside systemd, which this script becomes; the unit waits for them and reports them.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mountpoint -q /proc || mount -t proc -o nosuid,nodev,noexec proc /proc
mountpoint -q /sys || mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mountpoint -q /run || mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
mkdir -p %s
/usr/bin/python3 %s --early </dev/null >/dev/console 2>&1 &
echo $! >%s
exec /sbin/init "$@"
""" % (os.path.dirname(EARLY_PID), BOOT_SCRIPT, EARLY_PID)
#: The drive's first code (globals drive, code_dir and early): unpack the code, and its bytecode when this
#: Python takes the controller's (no compiling under TCG), then run the steps.
BOOT = r"""
import base64, importlib.util, os, sys
def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
for path, text in drive["code"].items():
    write(os.path.join(code_dir, path), text.encode("utf-8"))
if drive["python"] == [importlib.util.MAGIC_NUMBER.hex(), sys.implementation.cache_tag]:
    for path, data in drive["compiled"].items():
        write(importlib.util.cache_from_source(os.path.join(code_dir, path)), base64.b64decode(data))
sys.path.insert(0, code_dir)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.config_drive import apply_steps
sys.exit(apply_steps(drive["steps"], code_dir, systemd_starting=globals().get("early", False)))
"""

#: The image's unit that runs BOOTSTRAP, once, before sshd (a failed step leaves the rest to Ansible).
UNIT = """\
[Unit]
Description=mpsocks: the guest's network and daemons from the config drive, before ssh
DefaultDependencies=no
After=systemd-remount-fs.service systemd-journald.socket
Before=ssh.service shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
TimeoutStartSec=120
ExecStart=/usr/bin/python3 %s

[Install]
WantedBy=multi-user.target
""" % BOOT_SCRIPT


def _collection_root():
    """This collection's folder (ansible_collections/mpsocks/mptcp) on the controller."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _module_file(dotted):
    """The source file of module DOTTED (ansible.* or this collection's), or None when it is neither."""
    if dotted == COLLECTION or dotted.startswith(COLLECTION + "."):
        base = os.path.join(_collection_root(), *dotted[len(COLLECTION) + 1:].split(".")) \
            if dotted != COLLECTION else _collection_root()
    elif dotted.startswith("ansible."):
        from ansible.module_utils import basic

        ansible_dir = os.path.dirname(os.path.dirname(os.path.abspath(basic.__file__)))
        base = os.path.join(ansible_dir, *dotted.split(".")[1:])
    else:
        return None
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def _statements(body):
    """Every statement in BODY and in the blocks nested in it (imports are statements: expressions,
    most of a module's nodes, are not looked into)."""
    for node in body:
        yield node
        for block in ("body", "orelse", "finalbody", "handlers", "cases"):
            inner = getattr(node, block, None)
            if isinstance(inner, list):
                yield from _statements(inner)


def _imports(dotted, source):
    """The modules SOURCE (module DOTTED) imports, anywhere in it: for ``from X import Y`` both X and X.Y."""
    package = dotted if source.is_package else dotted.rpartition(".")[0]
    for node in _statements(ast.parse(source.text).body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = parent + ("." + base if base else "")
            yield base
            for alias in node.names:
                yield base + "." + alias.name


class _Source:
    def __init__(self, path):
        self.is_package = os.path.basename(path) == "__init__.py"
        with open(path) as handle:
            self.text = handle.read()


def code_files(modules):
    """The code the guest needs to run MODULES (this collection's module names) and apply_steps: every
    file they import from Ansible and this collection, found in their sources, as {relative path: text}.
    Packages above them get empty ``__init__.py`` files, as in Ansible's own module zips."""
    wanted = ["%s.plugins.modules.%s" % (COLLECTION, name) for name in modules]
    wanted.append(COLLECTION + ".plugins.module_utils.config_drive")
    for package in IMPORTED_BY_NAME:
        path = _module_file(package)
        if path and path.endswith("__init__.py"):
            wanted.extend("%s.%s" % (package, name[:-3]) for name in os.listdir(os.path.dirname(path))
                          if name.endswith(".py") and name != "__init__.py")
    files, seen = {}, set()
    while wanted:
        dotted = wanted.pop()
        if dotted in seen:
            continue
        seen.add(dotted)
        path = _module_file(dotted)
        if path is None:
            continue
        source = _Source(path)
        relative = dotted.replace(".", "/") + ("/__init__.py" if source.is_package else ".py")
        files[relative] = source.text
        wanted.extend(_imports(dotted, source))
    for relative in list(files):
        parts = relative.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            init = "/".join(parts[:depth]) + "/__init__.py"
            files.setdefault(init, "")
    files["ansible/__init__.py"] = ""  # the real one imports the controller's vendored packages
    return files


def check_steps(steps):
    """STEPS as given, or an MpsocksError naming the first bad one."""
    if not isinstance(steps, list):
        raise MpsocksError("config drive: a list of steps is needed, got %r" % (type(steps).__name__,))
    for position, step in enumerate(steps):
        where = "steps[%d]" % position
        if not isinstance(step, dict):
            raise MpsocksError("%s: a step is a dict with module and args, or with file" % where)
        if "file" in step:
            item = step["file"]
            if not isinstance(item, dict) or not os.path.isabs(str(item.get("path", ""))) \
                    or not isinstance(item.get("content"), str):
                raise MpsocksError("%s: file needs an absolute path and a content" % where)
            if not re.match(r"0?[0-7]{3,4}\Z", str(item.get("mode", "0644"))):
                raise MpsocksError("%s: file mode %r is not an octal mode such as 0644"
                                   % (where, item["mode"]))
            continue
        module = step.get("module")
        if not isinstance(module, str) or not MODULE_NAME.match(module) \
                or _module_file("%s.plugins.modules.%s" % (COLLECTION, module)) is None:
            raise MpsocksError("%s: module %r is not a module of mpsocks.mptcp" % (where, module))
        if not isinstance(step.get("args", {}), dict):
            raise MpsocksError("%s: args of %s must be a dict" % (where, module))
    return steps


def unchecked_pyc(source, path):
    """SOURCE compiled as a pyc that Python loads without looking at the source again (PEP 552, an
    unchecked hash), PATH its file name in the guest."""
    code = compile(source, path, "exec", dont_inherit=True)
    flags = (0b01).to_bytes(4, "little")  # hash-based, unchecked
    return importlib.util.MAGIC_NUMBER + flags + importlib.util.source_hash(source.encode("utf-8")) \
        + marshal.dumps(code)


def drive_text(steps):
    """The config drive's content for STEPS: one JSON document (steps, code, the code compiled by this
    Python for a guest whose Python takes it, and BOOT), padded with spaces to whole sectors."""
    check_steps(steps)
    code = code_files(sorted({step["module"] for step in steps if "module" in step}))
    compiled = {path: base64.b64encode(unchecked_pyc(text, os.path.join(CODE_DIR, path))).decode("ascii")
                for path, text in code.items() if text}
    text = json.dumps({"steps": steps, "code": code, "compiled": compiled, "boot": BOOT,
                       "python": [importlib.util.MAGIC_NUMBER.hex(), sys.implementation.cache_tag]},
                      sort_keys=True)
    return text + " " * (-len(text.encode("utf-8")) % BLOCK)


def run_step(step, work_dir):
    """Run one STEP here, as Ansible would run its module (its arguments in a file in WORK_DIR, the module
    logging nothing: a file's content may be a password): its result dict."""
    if "file" in step:
        from ansible_collections.mpsocks.mptcp.plugins.module_utils.daemon import write_atomically

        item = step["file"]
        mode = int(str(item.get("mode", "0644")), 8)
        try:
            with open(item["path"]) as handle:
                same = handle.read() == item["content"] and (os.stat(item["path"]).st_mode & 0o7777) == mode
        except (OSError, UnicodeDecodeError):
            same = False
        if not same:
            write_atomically(item["path"], item["content"], mode)
        return {"changed": not same}
    from ansible.module_utils import basic

    module = importlib.import_module("%s.plugins.modules.%s" % (COLLECTION, step["module"]))
    basic._ANSIBLE_ARGS = None  # pylint: disable=protected-access
    output = io.StringIO()
    argv = sys.argv
    args = os.path.join(work_dir, "args.json")
    with open(args, "w") as handle:  # a module's arguments in a file, as when it is run by hand
        os.fchmod(handle.fileno(), 0o600)
        json.dump({"ANSIBLE_MODULE_ARGS": dict(step.get("args", {}), _ansible_no_log=True)}, handle)
    sys.argv = [step["module"], args]
    try:
        with contextlib.redirect_stdout(output):
            module.main()
    except SystemExit:
        pass
    finally:
        sys.argv = argv
        os.unlink(args)
    lines = [line for line in output.getvalue().splitlines() if line.startswith("{")]
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"failed": True, "msg": "no result: %s" % output.getvalue().strip()[-300:]}


def wait_for_systemd(timeout=60.0):
    """Until systemd takes requests (its socket exists), or TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(SYSTEMD_SOCKET) and time.monotonic() < deadline:
        time.sleep(0.05)


def apply_steps(steps, work_dir, out=None, systemd_starting=False):
    """Run STEPS in order, a line each on OUT (stdout: the guest's journal), and write what they did to
    WORK_DIR/RESULT (last, whole: a waiting unit reads it); 1 when one failed, else 0. A failed step does
    not stop the others: the guest roles, run over ssh, make the calls again and say why. While
    SYSTEMD_STARTING (the guest's first process started the run), a daemon step first waits for systemd."""
    out = out or sys.stdout
    status = 0
    done = []
    for step in steps:
        what = step["module"] if "module" in step else "file %s" % step["file"]["path"]
        if systemd_starting and step.get("module") == "daemon":
            wait_for_systemd()
        try:
            result = run_step(step, work_dir)
        except Exception as exc:  # one line for the journal; Ansible makes the call again and says why
            result = {"failed": True, "msg": "%s: %s" % (type(exc).__name__, exc)}
        if result.get("failed"):
            status = 1
            line = "%s: failed: %s" % (what, result.get("msg", ""))
        else:
            line = "%s: %s" % (what, "changed" if result.get("changed") else "ok")
        done.append(line)
        out.write(line + "\n")
        out.flush()
    from ansible_collections.mpsocks.mptcp.plugins.module_utils.daemon import write_atomically

    write_atomically(os.path.join(work_dir, RESULT), json.dumps({"steps": done, "failed": status}))
    return status
