# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One nftables table: listed through the ``nft`` command, changed in kernel transactions.

A table mpsocks makes carries the comment ``ownership.NFT_TABLE_COMMENT``.
nft 1.0.6 neither prints nor takes a table's comment in JSON (it silently drops
it), so the table is created, and its mark read, in nft's text syntax; its
content is listed and added in JSON.

Every change is one transaction, all of it or nothing, and names what it
removes by the handle it was listed with, so a listing that went stale fails
the transaction instead of removing something else. Removals of chains and
tables go to the kernel directly over nfnetlink with ``NLM_F_NONREC``, which
nft does not send: the kernel then refuses (EBUSY) to delete a chain that still
holds a rule, or a table that still holds anything, rather than deleting
what was added since the listing along with it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import errno
import json
import os
import re
import shutil
import socket
import struct
import subprocess

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.ownership import NFT_TABLE_COMMENT

NFT_FALLBACK = "/usr/sbin/nft"  # not always on the PATH a module runs with
NFT_FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}\Z")
#: The first line of ``nft -a list table``: ``table inet NAME { # handle N``, maybe more after it.
TABLE_HEADER = re.compile(r"table \S+ \S+ \{ # handle ([0-9]+)(?: |\Z)")

#: What ``listing()`` returns: the table's handle, its comment (None without one), its objects.
Listing = collections.namedtuple("Listing", "handle mark objects")


def find_nft():
    """Path of the ``nft`` binary; MpsocksError when nftables is not installed."""
    found = shutil.which("nft")
    if found:
        return found
    if os.access(NFT_FALLBACK, os.X_OK):
        return NFT_FALLBACK
    raise MpsocksError("nft: command not found (neither on PATH nor %s); install the nftables package"
                       % NFT_FALLBACK)


def table_name(value, option="table"):
    """VALUE if it may name an nft table (the family is not part of it)."""
    words = str(value).split()
    if len(words) == 2 and words[0] in NFT_FAMILIES:
        raise MpsocksError("%s: give only the name (%r); the family is always inet" % (option, words[1]))
    if not isinstance(value, str) or not TABLE_NAME.match(value):
        raise MpsocksError("%s: %r is not a valid nft table name (a letter or _, then up to 63 "
                           "letters, digits, _ or -)" % (option, value))
    return value


def _one_line(stderr):
    """nft's error output on one line, without the ``^^^`` markers and JSON input positions."""
    lines = [re.sub(r"^internal:[0-9:-]+ ", "", line.strip()) for line in stderr.splitlines()]
    return " / ".join(line for line in lines if line.strip("^ ")) or "no error message"


def parse_head(text):
    """``(handle, comment)`` of a table from ``nft -a list table`` text; comment None when it has none."""
    lines = text.splitlines()
    header = TABLE_HEADER.match(lines[0]) if lines else None
    if not header:
        raise MpsocksError("nft list table: unexpected first line %r" % (lines[0] if lines else ""))
    comment = None
    for line in lines[1:]:  # nft prints the table's flags, then its comment, then its content
        if line.startswith('\tcomment "') and line.endswith('"'):
            comment = line[len('\tcomment "'):-1]
            break
        if not line.startswith("\tflags "):
            break
    return int(header.group(1)), comment


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

    def listing(self):
        """The table as it is now (a ``Listing``), or None when it does not exist.

        Its objects are what ``nft -j list table`` gives (``{"chain": ...}``, ``{"rule": ...}``, ...)
        without the table itself.
        """
        found, error = self._json(["list", "table", self.family, self.name])
        if error:
            if not self.exists():
                return None
            raise MpsocksError("nft list %s: %s" % (self.label(), error))
        handles = [obj["table"].get("handle") for obj in found if "table" in obj]
        proc = self._run(["-a", "-t", "list", "table", self.family, self.name])
        if proc.returncode:
            raise MpsocksError("nft list %s: %s" % (self.label(), _one_line(proc.stderr)))
        handle, mark = parse_head(proc.stdout)
        if handles != [handle]:
            raise MpsocksError("%s was replaced while it was being read; run again" % self.label())
        return Listing(handle, mark, [obj for obj in found if "metainfo" not in obj and "table" not in obj])

    def create(self):
        """Create the table with mpsocks' mark; fails if a table of that name exists meanwhile."""
        script = 'create table %s %s { comment "%s"; }\n' % (self.family, self.name, NFT_TABLE_COMMENT)
        proc = self._run(["-f", "-"], script)
        if proc.returncode:
            raise MpsocksError("nft: the kernel refused to create %s: %s"
                               % (self.label(), _one_line(proc.stderr)))

    def apply(self, commands):
        """Run COMMANDS (``{"add": ...}``, ``{"delete": ...}``) as one transaction."""
        proc = self._run(["-j", "-f", "-"], json.dumps({"nftables": commands}))
        if proc.returncode:
            raise MpsocksError("nft: the kernel refused the change to %s: %s"
                               % (self.label(), _one_line(proc.stderr)))

    def create_and_apply(self, commands):
        """Create the table, then apply COMMANDS in it; a failure takes the new table away again."""
        self.create()
        try:
            self.apply(commands)
        except MpsocksError:
            made = self.listing()
            if made is not None and made.mark == NFT_TABLE_COMMENT and not made.objects:
                self.delete([self.table_deletion(made.handle)])
            raise

    def rule_deletion(self, chain, handle):
        """Deleting rule HANDLE of CHAIN, for ``delete()``."""
        payload = (_attribute(NFTA_RULE_TABLE, _text(self.name)) + _attribute(NFTA_RULE_CHAIN, _text(chain))
                   + _attribute(NFTA_RULE_HANDLE, _handle(handle)))
        return NFT_MSG_DELRULE, 0, payload, "deleting rule %d of chain %s" % (handle, chain)

    def chain_deletion(self, chain, handle):
        """Deleting CHAIN (by its HANDLE), refused while it holds a rule, for ``delete()``."""
        payload = (_attribute(NFTA_CHAIN_TABLE, _text(self.name))
                   + _attribute(NFTA_CHAIN_HANDLE, _handle(handle)))
        return NFT_MSG_DELCHAIN, NLM_F_NONREC, payload, "deleting chain %s" % chain

    def table_deletion(self, handle):
        """Deleting the table (by its HANDLE), refused while it holds anything, for ``delete()``."""
        payload = _attribute(NFTA_TABLE_HANDLE, _handle(handle))
        return NFT_MSG_DELTABLE, NLM_F_NONREC, payload, "deleting the table"

    def delete(self, deletions):
        """Carry out DELETIONS (``rule_deletion()`` and friends) in one transaction."""
        refused = _nfnetlink_batch(FAMILY_NUMBERS[self.family], [deletion[:3] for deletion in deletions])
        if refused:
            position, code = min(refused)
            hint = {errno.EBUSY: " (it holds what was not there when the table was listed: another program "
                                 "changed the table meanwhile; run again)",
                    errno.ENOENT: " (it was there when the table was listed: another program changed the "
                                  "table meanwhile; run again)"}.get(code, "")
            raise MpsocksError("nft: the kernel refused the change to %s: %s: %s%s"
                               % (self.label(), deletions[position][3], os.strerror(code), hint))


# --- nfnetlink: deletions nft cannot ask for ------------------------------------------------------

NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK, NLM_F_NONREC = 0x1, 0x4, 0x100
NLMSG_ERROR = 2
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_DELTABLE, NFT_MSG_DELCHAIN, NFT_MSG_DELRULE = 2, 5, 8
NFTA_TABLE_HANDLE = 4
NFTA_CHAIN_TABLE, NFTA_CHAIN_HANDLE = 1, 2
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE = 1, 2, 3
FAMILY_NUMBERS = {"inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}
REPLY_TIMEOUT = 10.0


def _attribute(kind, payload):
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _text(value):
    return value.encode("utf-8") + b"\0"


def _handle(value):
    return struct.pack(">Q", value)


def _message(kind, flags, sequence, family, resource, payload=b""):
    body = struct.pack("=BBH", family, 0, socket.htons(resource)) + payload
    return struct.pack("=IHHII", 16 + len(body), kind, flags, sequence, 0) + body


def _replies(data):
    """``(sequence, errno)`` of every acknowledgement or error in one netlink datagram."""
    offset = 0
    while offset + 20 <= len(data):
        length, kind, _flags, sequence, _port = struct.unpack_from("=IHHII", data, offset)
        if kind == NLMSG_ERROR:
            yield sequence, -struct.unpack_from("=i", data, offset + 16)[0]
        offset += max(16, (length + 3) & ~3)


def _nfnetlink_batch(family, messages):
    """Send MESSAGES (``(type, flags, attributes)``) as one batch.

    Returns ``(position, errno)`` of every message the kernel refused; if any, none took effect.
    """
    batch = [_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, socket.AF_UNSPEC, NFNL_SUBSYS_NFTABLES)]
    for sequence, (kind, flags, payload) in enumerate(messages, 1):
        batch.append(_message((NFNL_SUBSYS_NFTABLES << 8) | kind, NLM_F_REQUEST | NLM_F_ACK | flags, sequence,
                              family, 0, payload))
    batch.append(_message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, len(messages) + 1, socket.AF_UNSPEC,
                          NFNL_SUBSYS_NFTABLES))
    waiting, refused = set(range(1, len(messages) + 1)), []
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
            sock.settimeout(REPLY_TIMEOUT)
            sock.bind((0, 0))
            sock.sendall(b"".join(batch))
            while waiting:
                for sequence, code in _replies(sock.recv(65536)):
                    if sequence in waiting:
                        waiting.discard(sequence)
                        if code:
                            refused.append((sequence - 1, code))
                    elif code:  # the batch itself was refused
                        raise MpsocksError("nfnetlink: the kernel refused the batch: %s" % os.strerror(code))
    except OSError as exc:
        raise MpsocksError("nfnetlink: %s" % (exc.strerror or exc)) from None
    return refused
