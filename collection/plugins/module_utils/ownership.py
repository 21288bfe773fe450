# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How mpsocks marks what it makes, so that teardown removes only its own objects.

A name alone proves nothing: a user may have a tap called ``mptcp0`` (the seed's
bash library made exactly that) or a rule in table 6607. So every object carries
a mark the kernel keeps with it:

- links (taps, veths, a namespace's ``lo``): the interface alias (``ip link set
  IF alias mpsocks``), optionally naming an owner (``mpsocks lab mpslab``);
- routes and rules: their rtnetlink ``protocol`` (``ip route ... proto 166``);
- nft tables: the table's comment.

A present object without the mark is not adopted: the module fails, naming it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError

#: The alias of every link mpsocks makes, and the start of an owner's mark.
MARK = "mpsocks"
#: rtnetlink protocol of the routes and rules mpsocks adds (free in /etc/iproute2/rt_protos).
RT_PROTOCOL = 166
#: Comment of every nft table mpsocks makes.
NFT_TABLE_COMMENT = "managed by mpsocks"
OWNER_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")


def owner_mark(owner=None):
    """The alias text for OWNER (``mpsocks`` alone, or ``mpsocks lab:mpslab``)."""
    if owner is None:
        return MARK
    if not isinstance(owner, str) or not OWNER_PATTERN.match(owner):
        raise MpsocksError("owner: %r must be 1 to 64 characters out of A-Z a-z 0-9 _ . : -" % (owner,))
    return "%s %s" % (MARK, owner)


class NotOurs(MpsocksError):
    """An object with the name mpsocks would use, but not made by it (or by another owner)."""


def not_ours(what, found_mark, wanted_mark):
    """The error for an object that exists under our name but without our mark."""
    if found_mark:
        return NotOurs("%s exists but is marked %r, not %r: mpsocks neither adopts nor removes it"
                       % (what, found_mark, wanted_mark))
    return NotOurs("%s exists but was not made by mpsocks (no %r mark): mpsocks neither adopts "
                   "nor removes it; rename or remove it yourself" % (what, wanted_mark))
