# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One nftables table through the ``nft`` command, JSON in and out.

Reading lists only that table; every change is one ``nft -j -f -`` batch,
which the kernel applies as a single transaction: all of it or nothing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import shutil
import subprocess

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError

NFT_FALLBACK = "/usr/sbin/nft"  # not always on the PATH a module runs with


def find_nft():
    """Path of the ``nft`` binary; MpsocksError when nftables is not installed."""
    found = shutil.which("nft")
    if found:
        return found
    if os.access(NFT_FALLBACK, os.X_OK):
        return NFT_FALLBACK
    raise MpsocksError("nft: command not found (neither on PATH nor %s); install the nftables package"
                       % NFT_FALLBACK)


def _one_line(stderr):
    """nft's error output on one line, without the ``^^^`` markers and JSON input positions."""
    lines = [re.sub(r"^internal:[0-9:-]+ ", "", line.strip()) for line in stderr.splitlines()]
    return " / ".join(line for line in lines if line.strip("^ ")) or "no error message"


class Nft:
    """Table FAMILY NAME, e.g. ``inet mpsocks``."""

    def __init__(self, family, name):
        self.family, self.name = family, name
        self.binary = find_nft()

    def label(self):
        return "table %s %s" % (self.family, self.name)

    def _run(self, args, stdin=None):
        try:
            return subprocess.run([self.binary] + args, input=stdin, capture_output=True, text=True,
                                  check=False)
        except OSError as exc:
            raise MpsocksError("nft: cannot run %s: %s" % (self.binary, exc.strerror)) from None

    def _json(self, args):
        proc = self._run(["-j"] + args)
        if proc.returncode:
            return None, _one_line(proc.stderr)
        try:
            return json.loads(proc.stdout)["nftables"], None
        except (ValueError, KeyError):
            raise MpsocksError("nft %s: output is not nftables JSON" % " ".join(args)) from None

    def exists(self):
        """Whether the table exists."""
        tables, error = self._json(["list", "tables", self.family])
        if error:
            raise MpsocksError("nft list tables: %s" % error)
        return any(obj.get("table", {}).get("name") == self.name for obj in tables)

    def objects(self):
        """The table's contents as nft lists them (``{"chain": ...}``, ``{"rule": ...}``, ...).

        None when the table does not exist; the table object itself is left out.
        """
        found, error = self._json(["list", "table", self.family, self.name])
        if error:
            if not self.exists():
                return None
            raise MpsocksError("nft list %s: %s" % (self.label(), error))
        return [obj for obj in found if "metainfo" not in obj and "table" not in obj]

    def apply(self, commands):
        """Run COMMANDS (``{"add": ...}``, ``{"delete": ...}``) as one transaction."""
        proc = self._run(["-j", "-f", "-"], json.dumps({"nftables": commands}))
        if proc.returncode:
            raise MpsocksError("nft: the kernel refused the change to %s: %s"
                               % (self.label(), _one_line(proc.stderr)))
