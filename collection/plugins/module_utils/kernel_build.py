# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A kernel built from source with a small config, cached by what it is made of.

Two steps, so that a play can show the compile's progress:

``start``
    Resolves the source (Debian's ``linux-source-X`` package, a tarball or a git tree and ref) to an
    identity (package version, tarball sha256, git commit). When a kernel was already built from the
    same inputs (identity, base, fragments, compiler), that is the answer, without touching the source.
    Otherwise the source is unpacked (once per identity) into a build folder, configured (the base
    ``make tinyconfig`` or ``defconfig``, the fragments appended, ``make olddefconfig``), and every option
    the fragments ask for is checked in the final ``.config``; an option the source does not know fails
    before that, one the configuration dropped fails after it. The kernel's key is the source identity
    plus the final ``.config``'s sha256: a kernel of that key is the answer. Else ``make bzImage`` starts
    in the background (its log in the build folder) and the step returns.

``wait``
    Waits a few seconds for that compile and says how many objects it has built; once make is done,
    installs the kernel: ``bzImage``, ``config`` and ``kernel.json`` (release, source, config hash,
    build time) go into a temporary folder renamed to ``STATE_DIR/kernel/KEY`` at the end, so no
    half-made kernel ever looks finished.

A compile that nobody waits for any more (the play was cancelled) stops itself after
``abandon_after`` seconds. ``KernelBuild`` holds the logic and needs no Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

from ansible_collections.mpsocks.mptcp.plugins.module_utils.build_cache import (
    duration,
    read_json,
    sha256_file,
    sha256_text,
    write_json,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.locking import hold

ARCH = "x86_64"
IMAGE = "arch/x86/boot/bzImage"
BASES = ("tinyconfig", "defconfig")
DEFAULT_PACKAGE = "linux-source-6.1"
#: The tools a build runs, and the Debian package of each (a header file stands for its -dev package).
TOOLS = (
    ("make", "make"),
    ("gcc", "gcc"),
    ("/usr/include/stdio.h", "libc6-dev"),
    ("bison", "bison"),
    ("flex", "flex"),
    ("bc", "bc"),
    ("perl", "perl"),
    ("/usr/include/gelf.h", "libelf-dev"),  # objtool
    ("tar", "tar"),
)
TARBALL_TOOLS = {".xz": ("xz", "xz-utils"), ".bz2": ("bzip2", "bzip2"), ".zst": ("zstd", "zstd")}
#: defconfig signs with a trusted keyring: certs/extract-cert needs OpenSSL's headers.
DEFCONFIG_TOOLS = (("/usr/include/openssl/opensslv.h", "libssl-dev"),)
#: A line of make's output for one object built.
OBJECT_LINE = re.compile(r"^\s+(?:CC|AS)\s+\S+\.o\s*$", re.M)
SET_LINE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
UNSET_LINE = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
KCONFIG_ENTRY = re.compile(r"^\s*(?:menu)?config\s+([A-Za-z0-9_]+)\s*$")
KCONFIG_SYMBOL = re.compile(r"\b([A-Z][A-Z0-9_]+)\b")
ERROR_LINE = re.compile(r"(?:\berror\b:|\*\*\*|Error \d)")
SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")
JOB = "job.json"
SOURCE_MARK = ".mpsocks-source.json"

RUN_SCRIPT = """# Written by mpsocks.mptcp.kernel_build: make bzImage in the background. Whoever waits for the
# build touches HEARTBEAT; when nobody has for ABANDON seconds, the build is stopped. SIGTERM stops it.
import os, signal, subprocess, sys, time

SRC, OUT, ARCH, JOBS, NICE, ABANDON = %(src)r, %(out)r, %(arch)r, %(jobs)d, %(nice)d, %(abandon)d
LOG, RC, HEARTBEAT = %(log)r, %(rc)r, %(heartbeat)r
start = time.time()
status = None


def stop(why):
    global status
    status = why
    try:
        os.killpg(make.pid, signal.SIGTERM)  # make's own process group: make and the compilers
    except OSError:
        pass


with open(LOG, "ab") as log:
    make = subprocess.Popen(["nice", "-n", str(NICE), "make", "O=" + OUT, "ARCH=" + ARCH,
                             "-j%%d" %% JOBS, "bzImage"], cwd=SRC, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
signal.signal(signal.SIGTERM, lambda number, frame: stop("stopped"))
while make.poll() is None and status is None:
    time.sleep(1)
    try:
        beat = os.stat(HEARTBEAT).st_mtime
    except OSError:
        beat = 0
    if status is None and time.time() - beat > ABANDON:
        with open(LOG, "a") as log:
            log.write("mpsocks: nobody waited for this build for %%d s: stopping it\\n" %% ABANDON)
        stop("abandoned")
code = make.wait()
with open(RC + ".tmp", "w") as handle:
    handle.write("%%s %%d\\n" %% (status or code, time.time() - start))
os.replace(RC + ".tmp", RC)
"""


def run(argv, cwd=None, what=None, log=None):
    """Run ARGV; its output goes to LOG (a path) or is returned. A failure is one line naming WHAT."""
    try:
        if log:
            with open(log, "ab") as out:
                out.write(("$ %s\n" % shlex.join(argv)).encode())
                out.flush()
                proc = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, check=False)
            output = ""
        else:
            proc = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, check=False)
            output = proc.stdout
    except OSError as exc:
        raise MpsocksError("%s: cannot run %s: %s" % (what or argv[0], argv[0], exc.strerror)) from None
    if proc.returncode:
        detail = first_error(log) if log else " ".join((proc.stderr or proc.stdout).split())[-300:]
        where = " (log: %s)" % log if log else ""
        raise MpsocksError("%s failed (exit %d): %s%s"
                           % (what or shlex.join(argv), proc.returncode, detail or "no message", where))
    return output


def first_error(log, limit=300):
    """The line of a build log that says best what went wrong: the first error, else the last line."""
    try:
        with open(log, errors="replace") as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError:
        return ""
    for pattern in (re.compile(r"\berror\b:", re.I), ERROR_LINE):
        found = [line for line in lines if pattern.search(line) and not line.startswith("$ ")]
        if found:
            return " ".join(found[0].split())[:limit]
    return " ".join(lines[-1].split())[:limit] if lines else ""


def count_objects(log):
    """How many objects (``CC``/``AS`` of a ``.o``) the build log shows."""
    try:
        with open(log, errors="replace") as handle:
            return len(OBJECT_LINE.findall(handle.read()))
    except OSError:
        return 0


# --- config fragments ----------------------------------------------------------------------------

def parse_fragment(text, name):
    """{CONFIG_X: value} a fragment asks for ('n' for ``# CONFIG_X is not set``), in order."""
    asked = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        unset = UNSET_LINE.match(line)
        if unset:
            asked[unset.group(1)] = "n"
            continue
        if not line or line.startswith("#"):
            continue
        found = SET_LINE.match(line)
        if not found:
            raise MpsocksError("fragment %s, line %d: %r is neither CONFIG_NAME=VALUE nor "
                               "'# CONFIG_NAME is not set'" % (name, number, line[:80]))
        asked[found.group(1)] = found.group(2).strip()
    return asked


def parse_config(text):
    """{CONFIG_X: value} of a .config (options that are not set are left out)."""
    values = {}
    for line in text.splitlines():
        found = SET_LINE.match(line.strip())
        if found:
            values[found.group(1)] = found.group(2)
    return values


def kconfig_entries(src):
    """{symbol: (file, line, [conditions])} of every ``config``/``menuconfig`` in SRC's Kconfig files.

    The conditions are the entry's own ``depends on`` lines and the ``if`` blocks around it in its file.
    """
    entries = {}
    for folder, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("Kconfig"):
                path = os.path.join(folder, name)
                _scan_kconfig(path, os.path.relpath(path, src), entries)
    return entries


def _scan_kconfig(path, relative, entries):
    try:
        with open(path, errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return
    ifs, current = [], None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        entry = KCONFIG_ENTRY.match(line)
        if entry:
            current = (relative, number, ["if " + cond for cond in ifs])
            entries.setdefault(entry.group(1), current)
        elif stripped.startswith("if ") and not line[0].isspace():
            ifs.append(stripped[3:].strip())
            current = None
        elif stripped == "endif" or stripped.startswith("endif "):
            if ifs:
                ifs.pop()
            current = None
        elif stripped.startswith("depends on") and current is not None:
            current[2].append(stripped)
        elif stripped.split(" ", 1)[0] in ("choice", "endchoice", "menu", "endmenu", "comment", "source"):
            current = None


def why_unset(option, entries, final):
    """What an entry's conditions say about why OPTION is unset: its place and the unset symbols."""
    symbol = option[len("CONFIG_"):]
    entry = entries.get(symbol)
    if entry is None:
        return "does it exist in this source?"
    relative, number, conditions = entry
    unset = sorted({name for cond in conditions for name in KCONFIG_SYMBOL.findall(cond)
                    if name not in ("y", "n", "m") and "CONFIG_" + name not in final})
    text = "%s:%d" % (relative, number)
    if conditions:
        text += ": " + "; ".join(conditions)
    if unset:
        text += "; unset: " + ", ".join(unset)
    return text


def check_config(asked, final, entries, modules):
    """The options of ASKED the FINAL .config does not hold as asked, each as one sentence."""
    dropped = []
    for option, value in asked.items():
        have = final.get(option, "n")
        if have == value or (value == "m" and have == "y" and not modules):
            continue
        if value == "n":
            dropped.append("%s is not set was asked but the final .config has %s=%s" % (option, option, have))
        elif have == "n":
            dropped.append("%s=%s was asked but the final .config has it unset (%s)"
                           % (option, value, why_unset(option, entries, final)))
        else:
            dropped.append("%s=%s was asked but the final .config has %s=%s" % (option, value, option, have))
    return dropped


# --- processes -----------------------------------------------------------------------------------

def proc_start(pid):
    """The start time (clock ticks after boot) of process PID, or None when it does not run."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            data = handle.read()
    except (OSError, TypeError):
        return None
    fields = data[data.rfind(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def job_running(job):
    """Whether the background build JOB describes still runs (the same process, not a reused pid)."""
    pid = (job or {}).get("pid")
    return isinstance(pid, int) and pid > 1 and proc_start(pid) == job.get("starttime")


def missing_tools(base, tarball=None, git=False):
    """The Debian packages whose tools a build lacks, in a stable order."""
    wanted = list(TOOLS)
    if base == "defconfig":
        wanted += DEFCONFIG_TOOLS
    if tarball:
        wanted += [tool for ext, tool in TARBALL_TOOLS.items() if tarball.endswith(ext)]
    if git:
        wanted.append(("git", "git"))
    missing = []
    for tool, package in wanted:
        present = os.path.exists(tool) if tool.startswith("/") else shutil.which(tool)
        if not present and package not in missing:
            missing.append(package)
    return missing


# --- the source ----------------------------------------------------------------------------------

class Source:
    """Where the kernel comes from, and what it is: ``identity`` names it exactly."""

    def __init__(self, params):
        self.package = params.get("package") or DEFAULT_PACKAGE
        self.tarball = params.get("tarball")
        self.git_repo = params.get("git_repo")
        self.git_ref = params.get("git_ref") or "HEAD"
        if self.tarball and self.git_repo:
            raise MpsocksError("tarball and git_repo are mutually exclusive: name one source")
        self.kind = "git" if self.git_repo else "tarball" if self.tarball else "package"
        self.identity = None

    def archive(self):
        """The tarball a package or tarball source unpacks."""
        if self.kind == "package":
            return "/usr/src/%s.tar.xz" % self.package
        return self.tarball

    def package_version(self):
        """The installed version of the source package, or None."""
        try:
            proc = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Version}", self.package],
                                  capture_output=True, text=True, check=False)
        except OSError:
            return None
        fields = proc.stdout.split()
        if proc.returncode or len(fields) != 2 or fields[0] != "ii":
            return None
        return fields[1]

    def resolve(self):
        """The identity dict; a source that does not exist fails here, in one line."""
        if self.kind == "package":
            version = self.package_version()
            if version is None:
                raise MpsocksError("package %s is not installed (apt-get install %s), or name a tarball "
                                   "or a git tree" % (self.package, self.package))
            if not os.path.isfile(self.archive()):
                raise MpsocksError("package %s %s is installed but %s is missing"
                                   % (self.package, version, self.archive()))
            identity = {"kind": "package", "package": self.package, "version": version,
                        "tarball": self.archive(), "label": "%s %s" % (self.package, version),
                        "slug": "%s_%s" % (self.package, version)}
        elif self.kind == "tarball":
            if not os.path.isfile(self.tarball):
                raise MpsocksError("tarball %s: no such file" % self.tarball)
            try:
                digest = sha256_file(self.tarball)
            except OSError as exc:
                raise MpsocksError("tarball %s: %s" % (self.tarball, exc.strerror)) from None
            identity = {"kind": "tarball", "tarball": os.path.abspath(self.tarball), "sha256": digest,
                        "label": "%s (sha256 %s)" % (os.path.basename(self.tarball), digest[:12]),
                        "slug": "tarball-%s" % digest[:16]}
        else:
            commit = self.git_commit()
            identity = {"kind": "git", "git_repo": os.path.abspath(self.git_repo), "git_ref": self.git_ref,
                        "commit": commit, "label": "%s %s (%s)" % (self.git_repo, self.git_ref, commit[:12]),
                        "slug": "git-%s" % commit[:16]}
        identity["slug"] = SLUG_UNSAFE.sub("_", identity["slug"])
        self.identity = identity
        return identity

    def git_commit(self):
        if not os.path.isdir(self.git_repo):
            raise MpsocksError("git tree %s: no such directory" % self.git_repo)
        if not shutil.which("git"):
            raise MpsocksError("git tree %s: git is not installed (apt-get install git)" % self.git_repo)
        proc = subprocess.run(["git", "-C", self.git_repo, "rev-parse", "--verify", "--quiet",
                               "%s^{commit}" % self.git_ref], capture_output=True, text=True, check=False)
        if proc.returncode:
            inside = subprocess.run(["git", "-C", self.git_repo, "rev-parse", "--git-dir"],
                                    capture_output=True, text=True, check=False)
            if inside.returncode:
                raise MpsocksError("git tree %s: not a git repository" % self.git_repo)
            raise MpsocksError("git tree %s: no commit %r (a branch, tag or commit of that tree)"
                               % (self.git_repo, self.git_ref))
        return proc.stdout.strip()

    def unpack(self, dest, log):
        """The source tree, whole, at DEST (made under a temporary name, renamed at the end)."""
        tmp = "%s.tmp%d" % (dest, os.getpid())
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        try:
            if self.kind == "git":
                archive = subprocess.Popen(["git", "-C", self.git_repo, "archive", "--format=tar",
                                            self.identity["commit"]], stdout=subprocess.PIPE,
                                           stderr=subprocess.DEVNULL)
                try:
                    self._untar_stream(archive, tmp, log)
                finally:
                    archive.wait()
                if archive.returncode:
                    raise MpsocksError("git archive of %s failed (exit %d)"
                                       % (self.identity["label"], archive.returncode))
            else:
                run(["tar", "-x", "-f", self.archive(), "-C", tmp],
                    what="unpacking %s" % self.identity["label"], log=log)
            entries = os.listdir(tmp)
            root = os.path.join(tmp, entries[0]) if len(entries) == 1 and os.path.isdir(
                os.path.join(tmp, entries[0])) else tmp
            if not all(os.path.isfile(os.path.join(root, name)) for name in ("Makefile", "Kconfig")):
                raise MpsocksError("%s holds no kernel source (no top-level Makefile and Kconfig)"
                                   % self.identity["label"])
            write_json(os.path.join(root, SOURCE_MARK), self.identity)
            shutil.rmtree(dest, ignore_errors=True)
            os.rename(root, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _untar_stream(self, archive, dest, log):
        with open(log, "ab") as out:
            proc = subprocess.run(["tar", "-x", "-C", dest], stdin=archive.stdout, stdout=out,
                                  stderr=subprocess.STDOUT, check=False)
        archive.stdout.close()
        if proc.returncode:
            raise MpsocksError("unpacking %s failed (exit %d): %s (log: %s)"
                               % (self.identity["label"], proc.returncode, first_error(log), log))


# --- the build -----------------------------------------------------------------------------------

class KernelBuild:
    """One module call: the ``start`` or the ``wait`` step (see the module's documentation)."""

    def __init__(self, params):
        self.params = params
        self.state_dir = os.path.abspath(params.get("state_dir") or "/var/lib/mpsocks")
        self.kernels = os.path.join(self.state_dir, "kernel")
        self.base = params.get("base") or "tinyconfig"
        self.jobs = int(params.get("jobs") or 0) or os.cpu_count() or 1
        self.nice = int(params.get("nice") or 0)
        self.abandon_after = int(params.get("abandon_after") or 120)
        self.source = None
        self.fragments = []

    # -- shared ---------------------------------------------------------------------------------

    def lock_key(self):
        """One configure or install at a time per state folder."""
        return "kernel-build:" + self.state_dir

    def kernel_dir(self, key):
        return os.path.join(self.kernels, key)

    def build_dir(self, slug):
        return os.path.join(self.state_dir, "build", slug)

    def cached(self, key):
        """kernel.json of the finished kernel KEY, or None."""
        if not key:
            return None
        info = read_json(os.path.join(self.kernel_dir(key), "kernel.json"))
        if info and os.path.isfile(os.path.join(self.kernel_dir(key), "bzImage")):
            return info
        return None

    def answer(self, info, changed, **extra):
        """The module result for the finished kernel INFO."""
        folder = self.kernel_dir(info["key"])
        result = {"changed": changed, "done": True, "building": False, "cached": not changed,
                  "key": info["key"], "image": os.path.join(folder, "bzImage"),
                  "config": os.path.join(folder, "config"), "release": info["release"],
                  "kernel": info,
                  "msg": "kernel %s (%s) %s" % (info["release"], info["source"]["label"],
                                                "built in %s" % duration(info["build_seconds"]) if changed
                                                else "is cached")}
        result.update(extra)
        return result

    # -- start ----------------------------------------------------------------------------------

    def validate(self):
        if self.base not in BASES:
            raise MpsocksError("base %r: one of %s" % (self.base, ", ".join(BASES)))
        if os.uname().machine != ARCH:
            raise MpsocksError("this host is %s: mpsocks builds x86_64 kernels only, on x86_64"
                               % os.uname().machine)
        self.source = Source(self.params)
        self.fragments = []
        for position, fragment in enumerate(self.params.get("fragments") or []):
            name = fragment.get("name") or fragment.get("path") or "#%d" % position
            given = [key for key in ("text", "lines", "path") if fragment.get(key) is not None]
            if len(given) > 1:
                raise MpsocksError("fragment %s: give one of text, lines and path, not %s"
                                   % (name, " and ".join(given)))
            text = fragment.get("text")
            if fragment.get("lines") is not None:
                text = "\n".join(str(line) for line in fragment["lines"])
            if fragment.get("path"):
                try:
                    with open(fragment["path"]) as handle:
                        text = handle.read()
                except OSError as exc:
                    raise MpsocksError("fragment %s: %s" % (fragment["path"], exc.strerror)) from None
            text = text or ""
            self.fragments.append({"name": str(name), "text": text, "asked": parse_fragment(text, name)})

    def asked(self):
        """Every option the fragments ask for; a later fragment wins."""
        merged = {}
        for fragment in self.fragments:
            merged.update(fragment["asked"])
        return merged

    def compiler(self):
        """The compiler's version line: part of the inputs (the .config records it too)."""
        try:
            proc = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=False)
        except OSError:
            return ""
        return (proc.stdout.splitlines() or [""])[0]

    def inputs_hash(self, identity):
        inputs = {"identity": {k: v for k, v in identity.items() if k != "label"}, "base": self.base,
                  "arch": ARCH, "compiler": self.compiler(),
                  "fragments": [fragment["text"] for fragment in self.fragments]}
        return sha256_text(json.dumps(inputs, sort_keys=True))

    def inputs_file(self, inputs):
        return os.path.join(self.kernels, "inputs", inputs + ".json")

    def start(self, check_mode=False, report_missing=False):
        self.validate()
        if self.source.kind == "package" and self.source.package_version() is None:
            return self.missing([self.source.package], check_mode, report_missing)
        identity = self.source.resolve()
        inputs = self.inputs_hash(identity)
        known = read_json(self.inputs_file(inputs)) or {}
        info = self.cached(known.get("key"))
        if info:
            return self.answer(info, False, missing_packages=[])
        git = self.source.kind == "git"
        missing = missing_tools(self.base, tarball=None if git else self.source.archive(), git=git)
        if missing:
            return self.missing(missing, check_mode, report_missing)
        work = self.build_dir(identity["slug"])
        if check_mode:
            return self.predict(identity, work)
        with hold([self.lock_key()], "kernel build in %s" % work):
            return self.configure_and_start(identity, inputs, work)

    def missing(self, packages, check_mode, report):
        """The result, or the error, when Debian PACKAGES are missing (the source's, or tools)."""
        if check_mode or report:
            packages = packages + [package for package in missing_tools(self.base) if package not in packages]
        if report:
            return {"changed": bool(check_mode), "done": False, "building": False, "cached": False,
                    "missing_packages": packages, "msg": "missing packages: %s" % " ".join(packages)}
        names = " ".join(packages)
        raise MpsocksError("the kernel build needs Debian packages that are not installed: %s "
                           "(apt-get install --no-install-recommends %s)" % (names, names))

    def predict(self, identity, work):
        """Check mode on inputs no kernel was built from: say a build would run; check names if we can."""
        src = os.path.join(work, "src")
        if (read_json(os.path.join(src, SOURCE_MARK)) or {}).get("slug") == identity["slug"]:
            self.unknown_options(kconfig_entries(src), identity)
        return {"changed": True, "done": False, "building": False, "cached": False, "missing_packages": [],
                "msg": "would configure and build a kernel from %s (%s, %d fragments)"
                       % (identity["label"], self.base, len(self.fragments))}

    def unknown_options(self, entries, identity):
        unknown = [option for option in self.asked() if option[len("CONFIG_"):] not in entries]
        if unknown:
            where = {option: fragment["name"] for fragment in self.fragments for option in fragment["asked"]}
            raise MpsocksError("%s: no such option in the Kconfig files of %s" % (
                ", ".join("%s (fragment %s)" % (option, where[option]) for option in unknown),
                identity["label"]))

    def configure_and_start(self, identity, inputs, work):
        os.makedirs(work, exist_ok=True)
        job = read_json(os.path.join(work, JOB))
        if job_running(job):
            if job.get("inputs") == inputs:
                return self.started(job, work, attached=True)
            raise MpsocksError("another kernel build (%s) is running in %s (pid %d): wait for it to end"
                               % (job.get("key"), work, job["pid"]))
        src, out = os.path.join(work, "src"), os.path.join(work, "out")
        log = os.path.join(work, "configure.log")
        with open(log, "w"):
            pass
        if (read_json(os.path.join(src, SOURCE_MARK)) or {}).get("slug") != identity["slug"]:
            self.forget_other_trees(work)
            self.source.unpack(src, log)
        entries = kconfig_entries(src)
        self.unknown_options(entries, identity)
        os.makedirs(out, exist_ok=True)
        make = ["make", "O=%s" % out, "ARCH=%s" % ARCH]
        run(make + [self.base], cwd=src, what="make %s" % self.base, log=log)
        config = os.path.join(out, ".config")
        with open(config) as handle:
            base = handle.read()
        with open(config, "w") as handle:
            handle.write(base)
            for fragment in self.fragments:
                handle.write("\n# mpsocks fragment: %s\n%s\n" % (fragment["name"], fragment["text"]))
        run(make + ["olddefconfig"], cwd=src, what="make olddefconfig", log=log)
        with open(config, "rb") as handle:
            final_bytes = handle.read()
        final = parse_config(final_bytes.decode("utf-8", "replace"))
        dropped = check_config(self.asked(), final, entries, modules="CONFIG_MODULES" in final)
        if dropped:
            raise MpsocksError("; ".join(dropped))
        config_hash = hashlib.sha256(final_bytes).hexdigest()
        key = "%s-%s" % (identity["slug"], sha256_text(identity["slug"] + "\n" + config_hash)[:12])
        info = self.cached(key)
        if info:
            write_json(self.inputs_file(inputs), {"key": key})
            return self.answer(info, False, missing_packages=[])
        if job and job.get("key") == key and self.finished_ok(work, job):
            return self.install(work, job)  # built, but nobody was left to install it
        return self.launch(work, identity, inputs, key, config_hash)

    def forget_other_trees(self, keep):
        """Remove the build folders of other sources (1-2 GB each) unless a build runs there."""
        parent = os.path.dirname(keep)
        for name in os.listdir(parent):
            other = os.path.join(parent, name)
            if other == keep or not os.path.isdir(other):
                continue
            if not job_running(read_json(os.path.join(other, JOB))):
                shutil.rmtree(other, ignore_errors=True)

    def finished_ok(self, work, job):
        status = self.status(work)
        return status is not None and status[0] == "0" and self.config_unchanged(work, job)

    def config_unchanged(self, work, job):
        try:
            return sha256_file(os.path.join(work, "out", ".config")) == job.get("config_sha256")
        except OSError:
            return False

    def launch(self, work, identity, inputs, key, config_hash):
        names = {name: os.path.join(work, name) for name in ("build.log", "rc", "heartbeat", "run.py")}
        for name in ("rc", "rc.tmp"):
            if os.path.exists(os.path.join(work, name)):
                os.unlink(os.path.join(work, name))
        with open(names["build.log"], "w"):
            pass
        with open(names["heartbeat"], "w"):
            pass
        script = RUN_SCRIPT % {"src": os.path.join(work, "src"), "out": os.path.join(work, "out"),
                               "arch": ARCH, "jobs": self.jobs, "nice": self.nice,
                               "abandon": self.abandon_after, "log": names["build.log"], "rc": names["rc"],
                               "heartbeat": names["heartbeat"]}
        with open(names["run.py"], "w") as handle:
            handle.write(script)
        with open(os.devnull, "rb") as null, open(names["build.log"], "ab") as out:
            proc = subprocess.Popen([sys.executable or "python3", names["run.py"]], cwd=work, stdin=null,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    close_fds=True)
        job = {"key": key, "inputs": inputs, "source": identity, "config_sha256": config_hash,
               "base": self.base, "fragments": [fragment["name"] for fragment in self.fragments],
               "jobs": self.jobs, "pid": proc.pid, "starttime": proc_start(proc.pid), "started": time.time()}
        write_json(os.path.join(work, JOB), job)
        return self.started(job, work, attached=False)

    def started(self, job, work, attached):
        return {"changed": True, "done": False, "building": True, "cached": False, "key": job["key"],
                "build_dir": work, "log": os.path.join(work, "build.log"), "missing_packages": [],
                "msg": "%s the build of %s (%s, make -j%d bzImage; log %s)"
                       % ("joined" if attached else "started", job["key"], job["base"], job["jobs"],
                          os.path.join(work, "build.log"))}

    # -- wait -----------------------------------------------------------------------------------

    def status(self, work):
        """(status, seconds) make's wrapper recorded, or None while it runs."""
        try:
            with open(os.path.join(work, "rc")) as handle:
                fields = handle.read().split()
        except OSError:
            return None
        return (fields[0], int(fields[1])) if len(fields) == 2 else (fields[0] if fields else "?", 0)

    def wait(self, wait_seconds=10, timeout=None):
        work = self.params.get("build_dir")
        key = self.params.get("key")
        if not work or not key:
            raise MpsocksError("step wait needs key and build_dir (the start step's result)")
        job = read_json(os.path.join(work, JOB))
        if not job or job.get("key") != key:
            info = self.cached(key)
            if info:
                return self.answer(info, False)
            raise MpsocksError("no build of %s in %s" % (key, work))
        log = os.path.join(work, "build.log")
        deadline = time.monotonic() + max(0, wait_seconds)
        while True:
            os.utime(os.path.join(work, "heartbeat"))
            status = self.status(work)
            if status is not None:
                break
            if not job_running(job):
                time.sleep(0.5)  # the wrapper may have just written rc
                status = self.status(work)
                if status is None:
                    raise MpsocksError("the build of %s stopped without a word: see %s" % (key, log))
                break
            elapsed = time.time() - job["started"]
            if timeout and elapsed > timeout:
                self.stop(job)
                raise MpsocksError("the build of %s took longer than %d s: stopped (log %s)"
                                   % (key, timeout, log))
            if time.monotonic() >= deadline:
                objects = count_objects(log)
                about = self.last_objects(job)
                return {"changed": False, "done": False, "building": True, "key": key, "build_dir": work,
                        "objects": objects, "seconds": int(elapsed),
                        "msg": "%d%s objects built in %s" % (objects, " of about %d" % about if about else "",
                                                             duration(elapsed))}
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        code, _seconds = status
        if code == "abandoned":
            raise MpsocksError("the build of %s was stopped: nobody waited for it for %d s (log %s)"
                               % (key, self.abandon_after, log))
        if code != "0":
            raise MpsocksError("make bzImage failed (exit %s): %s (log %s)" % (code, first_error(log), log))
        with hold([self.lock_key()], "installing kernel %s" % key):
            info = self.cached(key)
            if info:
                return self.answer(info, False)
            return self.install(work, job)

    def last_objects(self, job):
        """How many objects the newest kernel built from the same base took, as an estimate; or None."""
        try:
            names = os.listdir(self.kernels)
        except OSError:
            return None
        infos = [read_json(os.path.join(self.kernels, name, "kernel.json")) for name in names]
        same = [info for info in infos
                if isinstance(info, dict) and info.get("base") == job.get("base") and info.get("objects")]
        return max(same, key=lambda info: info.get("built", ""))["objects"] if same else None

    def stop(self, job):
        """Stop a running build: its wrapper stops make's process group and records why."""
        if job_running(job):
            with contextlib.suppress(OSError):
                os.kill(job["pid"], signal.SIGTERM)

    def install(self, work, job):
        """Put the built kernel into STATE_DIR/kernel/KEY: a temporary folder renamed at the end."""
        key, out = job["key"], os.path.join(work, "out")
        if not self.config_unchanged(work, job):
            raise MpsocksError("the .config of %s changed during its build (%s): run again"
                               % (key, os.path.join(out, ".config")))
        image = os.path.join(out, IMAGE)
        if not os.path.isfile(image):
            raise MpsocksError("make bzImage succeeded but %s is missing" % image)
        try:
            with open(os.path.join(out, "include", "config", "kernel.release")) as handle:
                release = handle.read().strip()
        except OSError:
            release = run(["make", "-s", "O=%s" % out, "ARCH=%s" % ARCH, "kernelrelease"],
                          cwd=os.path.join(work, "src"), what="make kernelrelease").strip()
        status = self.status(work) or ("0", 0)
        info = {"key": key, "release": release, "source": job["source"],
                "config_sha256": job["config_sha256"], "base": job["base"], "fragments": job["fragments"],
                "build_seconds": status[1],
                "objects": count_objects(os.path.join(work, "build.log")), "jobs": job.get("jobs"),
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "image_bytes": os.path.getsize(image)}
        os.makedirs(os.path.join(self.kernels, "inputs"), exist_ok=True)
        final = self.kernel_dir(key)
        tmp = os.path.join(self.kernels, ".%s.tmp%d" % (key, os.getpid()))
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        try:
            shutil.copyfile(image, os.path.join(tmp, "bzImage"))
            shutil.copyfile(os.path.join(out, ".config"), os.path.join(tmp, "config"))
            write_json(os.path.join(tmp, "kernel.json"), info)
            if os.path.isdir(final):
                shutil.rmtree(final)  # an incomplete leftover: a finished one returned above
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        write_json(self.inputs_file(job["inputs"]), {"key": key})
        return self.answer(info, True, objects=info["objects"])
