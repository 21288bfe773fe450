"""A fake kernel source: a Makefile that answers the kbuild targets the kernel_build module runs.

``make tinyconfig``/``defconfig`` writes a base ``.config``; ``make olddefconfig`` keeps the last value
of each symbol that the fake Kconfig defines and whose ``depends on`` holds (as kconfig does for these
simple cases); ``make bzImage`` prints a ``CC`` line per object (CONFIG_FAKE_OBJECTS of them, one every
CONFIG_FAKE_DELAY seconds), fails with a compiler-like error when CONFIG_FAKE_FAIL is set, and writes
``arch/x86/boot/bzImage`` and ``include/config/kernel.release``. Builds take seconds, not minutes.
"""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

ROLE_FRAGMENT = Path(__file__).resolve().parents[2] / "collection" / "roles" / "mptcp_kernel" / "files" / \
    "mpsocks.config"
RELEASE = "6.1.0-fake"

MAKEFILE = """\
O ?= .
ARCH ?= x86_64
.PHONY: tinyconfig defconfig olddefconfig bzImage kernelrelease
tinyconfig defconfig:
\tmkdir -p $(O)
\tprintf 'CONFIG_BASE_$@=y\\nCONFIG_FAKE_OBJECTS=5\\nCONFIG_FAKE_DELAY="0.05"\\n' > $(O)/.config
olddefconfig:
\tpython3 scripts/olddefconfig.py $(O)/.config Kconfig
bzImage:
\tsh scripts/build.sh $(O)
kernelrelease:
\t@echo %(release)s
"""

OLDDEFCONFIG = r'''
import re, sys
config, kconfig = sys.argv[1], sys.argv[2]
known, depends, name = {}, {}, None
for line in open(kconfig):
    m = re.match(r"\s*config\s+(\w+)", line)
    if m:
        name = m.group(1); known[name] = True
    m = re.match(r"\s*depends on\s+(\w+)", line)
    if m and name:
        depends[name] = m.group(1)
values = {}
for line in open(config):
    line = line.strip()
    m = re.match(r"CONFIG_(\w+)=(.*)", line)
    if m:
        values[m.group(1)] = m.group(2)
    m = re.match(r"# CONFIG_(\w+) is not set", line)
    if m:
        values.pop(m.group(1), None)
changed = True
while changed:
    changed = False
    for sym in list(values):
        if sym not in known or (sym in depends and depends[sym] not in values):
            del values[sym]; changed = True
with open(config, "w") as out:
    out.write("# fake kernel configuration\n")
    for sym in sorted(values):
        out.write("CONFIG_%s=%s\n" % (sym, values[sym]))
'''

BUILD = r'''
set -e
out=$1
count=$(sed -n 's/^CONFIG_FAKE_OBJECTS=//p' "$out/.config")
delay=$(sed -n 's/^CONFIG_FAKE_DELAY="\(.*\)"/\1/p' "$out/.config")
mkdir -p "$out/arch/x86/boot" "$out/include/config"
echo "  HOSTCC  scripts/basic/fixdep"
i=0
while [ "$i" -lt "${count:-5}" ]; do
    i=$((i + 1))
    sleep "${delay:-0.05}"
    echo "  CC      fake/object$i.o"
done
if grep -q '^CONFIG_FAKE_FAIL=y' "$out/.config"; then
    echo "fake/broken.c:12:5: error: 'mptcp' undeclared (first use in this function)"
    echo "make[2]: *** [scripts/Makefile.build:250: fake/broken.o] Error 1"
    exit 2
fi
echo "  AS      fake/entry.o"
{ printf 'fake bzImage '; sha256sum < "$out/.config"; } > "$out/arch/x86/boot/bzImage"
echo "%(release)s" > "$out/include/config/kernel.release"
echo "Kernel: arch/x86/boot/bzImage is ready  (#1)"
'''

#: Symbols of the fake Kconfig beyond those of the role's fragment.
EXTRA = """\
config BASE_tinyconfig
\tbool
config BASE_defconfig
\tbool
config FAKE_OBJECTS
\tint "objects the fake build makes"
config FAKE_DELAY
\tstring "seconds per object"
config FAKE_FAIL
\tbool "fail the build"
config MISSING_DEP
\tbool "a dependency nobody sets"
config NEEDS_MISSING
\tbool "an option whose dependency is unset"
\tdepends on MISSING_DEP
config MODULES
\tbool "modules"
"""


def role_symbols() -> list[str]:
    text = ROLE_FRAGMENT.read_text()
    return sorted(set(re.findall(r"^(?:# )?CONFIG_(\w+)", text, re.M)))


def kconfig() -> str:
    lines = ["mainmenu \"fake\"", ""]
    lines += [f"config {name}\n\tbool \"{name}\"" for name in role_symbols()]
    return "\n".join(lines) + "\n" + EXTRA


def files() -> dict[str, str]:
    return {
        "Makefile": MAKEFILE % {"release": RELEASE},
        "Kconfig": kconfig(),
        "scripts/olddefconfig.py": OLDDEFCONFIG,
        "scripts/build.sh": BUILD % {"release": RELEASE},
    }


def write_tree(root: Path) -> Path:
    """The fake source as a folder ROOT."""
    for name, text in files().items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def write_tarball(path: Path, top: str = "linux-fake", salt: str = "") -> Path:
    """The fake source as a .tar.gz with one top folder; SALT makes a tarball of another identity."""
    with tarfile.open(path, "w:gz") as tar:
        content = dict(files(), **({"SALT": salt} if salt else {}))
        for name, text in sorted(content.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return path
