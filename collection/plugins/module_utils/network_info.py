# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which uplink slots hold mpsocks objects, read from the kernel.

Teardown asks this instead of trusting the uplink list, so it also finds what
an interrupted run left behind. Each object is read by its own module's class,
which counts only what carries mpsocks' mark: a user's tap named ``mptcp0`` or
rule in table 6607 is not a slot of ours.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mpsocks.mptcp.plugins.module_utils.addressing import (
    MAX_UPLINKS,
    TAP_PREFIX,
    slot,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.nat import Nat
from ansible_collections.mpsocks.mptcp.plugins.module_utils.ownership import NotOurs
from ansible_collections.mpsocks.mptcp.plugins.module_utils.policy_route import PolicyRoute
from ansible_collections.mpsocks.mptcp.plugins.module_utils.tap import Tap


def _exists(object_class, params):
    """Whether mpsocks' object of that name exists (one not made by mpsocks does not count)."""
    managed = object_class(dict(params, state="absent"))
    managed.validate()
    try:
        return managed.read() is not None
    except NotOurs:
        return False


def used_slots(nft_table="mpsocks", tap_prefix=TAP_PREFIX):
    """Every slot in which a tap, a routing table or a NAT entry of mpsocks exists."""
    found = []
    for index in range(MAX_UPLINKS):
        entry = slot(index, tap_prefix)
        entry.update(
            tap_exists=_exists(Tap, {"name": entry["tap"]}),
            table_used=_exists(PolicyRoute, {"table": entry["table"]}),
            nat_used=_exists(Nat, {"name": entry["tap"], "table": nft_table}),
        )
        if entry["tap_exists"] or entry["table_used"] or entry["nat_used"]:
            found.append(entry)
    return found
