# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Egress shaping of one interface with an HTB root qdisc.

Layout (all classes hang straight off the root, none borrows from another):

    htb 1: root, default class 1:ffff
      class 1:ffff  rate = ceil = rate_mbit      every unclassified packet
        tbf (10x the rate, burst = one frame)    cuts GSO super-packets into frames
      class 1:ID    rate = ceil = its rate_mbit  packets with skb->priority 0x1ID
        tbf

No tc filter is needed: HTB first looks skb->priority up as a class id of its
own (``htb_classify``), so a sender that sets ``SO_PRIORITY`` to
``0x10000 | ID`` lands in class 1:ID; any other priority goes to the default
class. The one exception is priority 0x10000 itself, the qdisc's handle: HTB
sends such packets straight out, unshaped.

Why a tbf leaf and not a pfifo: HTB charges a whole GSO/TSO super-packet at
once and lets it out if the class has any tokens left, so a local TCP sender
on a veth leaves in 64 KiB line-rate bursts (100 ms at 5 Mbit/s) and a 3 s
measurement ran up to 4 % over the rate. tbf splits every packet larger than
its burst into frames (``tbf_segment``); at ten times the class rate it never
holds traffic back itself, so HTB then meters frame by frame: measured on a
veth, one TCP flow gets a steady 95.7 % of the rate as goodput (the rest is
TCP/IP/Ethernet headers) at 5, 20 and 100 Mbit/s. Forwarded traffic already
comes in frames and passes the tbf untouched.

Reading back uses pyroute2's tc dump, not ``tc -j``: iproute2 6.1 prints HTB
classes as plain text even with ``-j``, while pyroute2 decodes TCA_HTB_PARMS
(rates in bytes/s, burst in scheduler ticks) and TCA_HTB_RATE64/CEIL64 as the
kernel sent them, so what we compare is exactly what the kernel holds.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math

from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.rtnl import (
    iproute,
    link_index,
    netlink_errors,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.validate import interface_name

try:
    from pyroute2.netlink.rtnl.tcmsg.common import calc_xmittime, tick_in_usec
except ImportError:  # reported by iproute() when a module actually runs
    calc_xmittime = None
    tick_in_usec = None

TC_H_ROOT = 0xFFFFFFFF
MAJOR = 1
HANDLE = MAJOR << 16  # 1:
DEFAULT_ID = 0xFFFF  # the default class is 1:ffff
MIN_RATE_MBIT = 0.001  # 1 kbit/s
MAX_RATE_MBIT = 10000.0  # 10 Gbit/s: the leaf tbf needs 10x that in a u32 of bytes/s (pyroute2 has no RATE64)
#: HTB burst = cburst = this much time at the class rate, but at least MIN_BURST bytes.
#: Measured on a veth with a pfifo leaf: 1600 bytes lost ~9 % at 1 Gbit/s, 1 ms worth ~4 %;
#: 10 ms keeps a class at its rate even when the CPU is late by a few ms.
BURST_SECONDS = 0.010
MIN_BURST = 2 * 1514
#: Classes never borrow (ceil = rate, no parent), so the quantum only orders
#: classes that may send at the same moment: one frame each round.
QUANTUM = 1514
#: Leaf tbf: this many times the class rate, so that it holds nothing back itself once HTB meters
#: frames (only right after an idle spell, when HTB spends its 10 ms burst at line rate, does the tbf
#: pause a moment; the kernel then logs "htb: tbf qdisc N: is non-work-conserving?" once per qdisc) ...
LEAF_SPEEDUP = 10
MAX_U32 = 2 ** 32 - 1
#: ... a burst just above the largest frame (MTU + link header + two VLAN tags), so that it lets
#: every frame through and splits anything larger ...
FRAME_SLACK = 32
#: ... and a queue of 100 ms at the class rate, but at least two 64 KiB super-packets, which one
#: local TCP sender keeps queued, and at most 32 MiB (the kernel's own leaf would take the device's
#: txqueuelen in packets: 1000 on a veth, or 1 where txqueuelen is 0).
QUEUE_SECONDS = 0.100
MIN_QUEUE_BYTES = 2 * 65536
MAX_QUEUE_BYTES = 32 * 1024 * 1024


def classid(minor):
    """``1:MINOR`` in tc's hex notation."""
    return "%x:%x" % (MAJOR, minor)


def handle_text(handle):
    """A 32-bit tc handle as ``MAJOR:`` or ``MAJOR:MINOR`` (hex), like tc prints it."""
    if handle == TC_H_ROOT:
        return "root"
    major, minor = handle >> 16, handle & 0xFFFF
    return "%x:" % major if minor == 0 else "%x:%x" % (major, minor)


def rate_bytes(rate_mbit):
    """Mbit/s to the kernel's unit, bytes per second."""
    return int(round(rate_mbit * 1e6 / 8))


def rate_mbit_of(bytes_per_second):
    return bytes_per_second * 8 / 1e6


def burst_for(rate):
    """HTB burst in bytes for RATE bytes/s."""
    return max(int(math.ceil(rate * BURST_SECONDS)), MIN_BURST)


def leaf_for(rate, mtu):
    """Rate (bytes/s), burst (bytes) and limit (bytes) of the tbf under a class of RATE bytes/s."""
    leaf_rate = min(rate * LEAF_SPEEDUP, MAX_U32)
    # pyroute2 (like tc) turns the burst into whole microseconds before ticks: give it whole ones,
    # one spare, so the kernel's max packet size (burst time x rate) stays above the frame size.
    micros = int((mtu + FRAME_SLACK) * 1e6 / leaf_rate) + 2
    burst = int(math.ceil(micros * leaf_rate / 1e6))
    limit = min(max(int(math.ceil(rate * QUEUE_SECONDS)), MIN_QUEUE_BYTES), MAX_QUEUE_BYTES)
    return leaf_rate, burst, limit


def ticks_to_bytes(ticks, rate):
    """HTB keeps burst as scheduler ticks at RATE; give it back in bytes."""
    return int(round(ticks / tick_in_usec / 1e6 * rate))


def _rate_option(value, option):
    """A rate in Mbit/s, as a float in range."""
    if isinstance(value, bool):
        raise MpsocksError("%s: %r is not a rate in Mbit/s" % (option, value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise MpsocksError("%s: %r is not a rate in Mbit/s" % (option, value)) from None
    if math.isnan(number) or math.isinf(number) or number <= 0:
        raise MpsocksError("%s: the rate must be a number of Mbit/s above 0, got %r" % (option, value))
    if not MIN_RATE_MBIT <= number <= MAX_RATE_MBIT:
        raise MpsocksError("%s: %r Mbit/s is out of range %g..%g"
                           % (option, value, MIN_RATE_MBIT, MAX_RATE_MBIT))
    return number


def _class_id(value):
    if isinstance(value, bool):
        raise MpsocksError("classes: id %r is not a class number" % (value,))
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise MpsocksError("classes: id %r is not a class number" % (value,)) from None
    if number != value and str(number) != str(value).strip():
        raise MpsocksError("classes: id %r is not a whole class number" % (value,))
    if number == DEFAULT_ID:
        raise MpsocksError("classes: id %d (0x%x) collides with the default class %s"
                           % (number, number, classid(DEFAULT_ID)))
    if not 1 <= number <= 0xFFFF:
        raise MpsocksError("classes: id %d is out of range 1..%d (0x%x is the default class)"
                           % (number, DEFAULT_ID - 1, DEFAULT_ID))
    return number


def wanted_class(minor, rate, mtu):
    """The dict read() gives for one of our classes at RATE bytes/s on a device of MTU."""
    burst = ticks_to_bytes(calc_xmittime(rate, burst_for(rate)), rate)
    leaf_rate, leaf_burst, leaf_limit = leaf_for(rate, mtu)
    return {
        "id": minor,
        "classid": classid(minor),
        "parent": "root",  # a class straight under the qdisc
        "rate_mbit": rate_mbit_of(rate),
        "ceil_mbit": rate_mbit_of(rate),
        "burst_bytes": burst,
        "cburst_bytes": burst,
        "quantum": QUANTUM,
        "prio": 0,
        "queue": {
            "kind": "tbf",
            "rate_mbit": rate_mbit_of(leaf_rate),
            "burst_bytes": ticks_to_bytes(calc_xmittime(leaf_rate, leaf_burst), leaf_rate),
            "limit_bytes": leaf_limit,
        },
    }


def _class_state(msg, leaves):
    """One HTB class message as a plain dict."""
    opts = msg.get_attr("TCA_OPTIONS")
    parms = opts.get_attr("TCA_HTB_PARMS")
    rate = opts.get_attr("TCA_HTB_RATE64") or parms["rate"]
    ceil = opts.get_attr("TCA_HTB_CEIL64") or parms["ceil"]
    minor = msg["handle"] & 0xFFFF
    state = {
        "id": minor,
        "classid": classid(minor),
        "parent": handle_text(msg["parent"]),
        "rate_mbit": rate_mbit_of(rate),
        "ceil_mbit": rate_mbit_of(ceil),
        "burst_bytes": ticks_to_bytes(parms["buffer"], rate) if rate else None,
        "cburst_bytes": ticks_to_bytes(parms["cbuffer"], ceil) if ceil else None,
        "quantum": parms["quantum"],
        "prio": parms["prio"],
        "queue": leaves.get(msg["handle"]),
    }
    if parms["level"]:
        state["level"] = parms["level"]  # an inner class: never one of ours
    return state


def _leaf_state(msg):
    kind = msg.get_attr("TCA_KIND")
    state = {"kind": kind}
    if kind == "tbf":
        parms = msg.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")
        state["rate_mbit"] = rate_mbit_of(parms["rate"])
        state["burst_bytes"] = ticks_to_bytes(parms["buffer"], parms["rate"]) if parms["rate"] else None
        state["limit_bytes"] = parms["limit"]
    elif kind in ("pfifo", "bfifo"):
        state["limit"] = msg.get_attr("TCA_OPTIONS")["limit"]
    return state


class Shaper(KernelObject):
    """HTB root qdisc 1: on one interface, with a default class and priority classes."""

    kind = "shaper"

    def label(self):
        dev = self.params.get("dev")
        plain = isinstance(dev, str) and dev.isprintable() and " " not in dev
        return "shaper %s" % (dev if plain else repr(dev))

    def validate(self):
        self.dev = interface_name(self.params.get("dev"), "dev")
        self.rate = None
        self.classes = {}
        if self.state != "present":
            return
        with iproute() as ipr:
            if link_index(ipr, self.dev) is None:
                raise MpsocksError("dev: no interface named %r in this namespace" % self.dev)
        if self.params.get("rate_mbit") is None:
            raise MpsocksError("rate_mbit: required when state is present")
        self.rate = rate_bytes(_rate_option(self.params["rate_mbit"], "rate_mbit"))
        for entry in self.params.get("classes") or []:
            if not isinstance(entry, dict) or "id" not in entry or entry.get("rate_mbit") is None:
                raise MpsocksError("classes: each entry needs id and rate_mbit, got %r" % (entry,))
            unknown = sorted(set(entry) - {"id", "rate_mbit"})
            if unknown:
                raise MpsocksError("classes: unknown key(s) %s in %r" % (", ".join(unknown), entry))
            minor = _class_id(entry["id"])
            if minor in self.classes:
                raise MpsocksError("classes: id %d is listed twice" % minor)
            option = "classes (id %d) rate_mbit" % minor
            self.classes[minor] = rate_bytes(_rate_option(entry["rate_mbit"], option))

    def read(self):
        with iproute() as ipr:
            index = link_index(ipr, self.dev)
            if index is None:
                if self.state == "present":
                    raise MpsocksError("dev: no interface named %r in this namespace" % self.dev)
                return None
            self.mtu = ipr.get_links(index)[0].get_attr("IFLA_MTU")
            with netlink_errors("reading the qdiscs of %s" % self.dev):
                qdiscs = list(ipr.get_qdiscs(index))
                root = [q for q in qdiscs if q["parent"] == TC_H_ROOT]
                if not root or root[0].get_attr("TCA_KIND") != "htb" or root[0]["handle"] != HANDLE:
                    return None
                classes = [c for c in ipr.get_classes(index)
                           if c.get_attr("TCA_KIND") == "htb" and c["handle"] >> 16 == MAJOR]
        default_id = root[0].get_attr("TCA_OPTIONS").get_attr("TCA_HTB_INIT")["defcls"]
        leaves = {q["parent"]: _leaf_state(q) for q in qdiscs if q["parent"] >> 16 == MAJOR}
        states = sorted((_class_state(c, leaves) for c in classes), key=lambda c: c["id"])
        default = [c for c in states if c["id"] == default_id]
        return {
            "dev": self.dev,
            "handle": handle_text(HANDLE),
            "rate_mbit": default[0]["rate_mbit"] if default else None,
            "default_class": default[0] if default else {"id": default_id},
            "classes": [c for c in states if c["id"] != default_id],
        }

    def wanted(self, current):
        return {
            "dev": self.dev,
            "handle": handle_text(HANDLE),
            "rate_mbit": rate_mbit_of(self.rate),
            "default_class": wanted_class(DEFAULT_ID, self.rate, self.mtu),
            "classes": [wanted_class(minor, self.classes[minor], self.mtu)
                        for minor in sorted(self.classes)],
        }

    def as_config(self, state):
        classes = [{"id": c["id"], "rate_mbit": c.get("rate_mbit")} for c in state["classes"]]
        return {"dev": state["dev"], "rate_mbit": state["rate_mbit"], "classes": classes,
                "netns": self.params.get("netns")}

    # -- applying -----------------------------------------------------------

    def apply(self, current, wanted):
        with iproute() as ipr:
            index = link_index(ipr, self.dev)
            if index is None:
                raise MpsocksError("dev: interface %r disappeared" % self.dev)
            if wanted is None:
                with netlink_errors("removing the htb root qdisc of %s" % self.dev):
                    ipr.tc("del", index=index, handle=HANDLE, parent=TC_H_ROOT)
                return
            if current is None or not self._adjustable(current, wanted):
                self._build(ipr, index, wanted)
                return
            self._adjust(ipr, index, current, wanted)

    @staticmethod
    def _adjustable(current, wanted):
        """Can CURRENT become WANTED class by class, keeping the qdisc?"""
        if current["default_class"]["id"] != wanted["default_class"]["id"]:
            return False  # HTB has no qdisc 'change': the default class is fixed at creation
        every = current["classes"] + [current["default_class"]]
        return all(c.get("parent", "root") == "root" and "level" not in c for c in every)

    def _build(self, ipr, index, wanted):
        """Replace whatever root qdisc there is with a fresh htb 1: and its classes."""
        roots = [q for q in ipr.get_qdiscs(index) if q["parent"] == TC_H_ROOT]
        if roots and roots[0]["handle"] == HANDLE:
            # Replacing a qdisc by one with the same handle would ask it to change in place.
            with netlink_errors("removing root qdisc %s of %s" % (handle_text(HANDLE), self.dev)):
                ipr.tc("del", index=index, handle=HANDLE, parent=TC_H_ROOT)
        with netlink_errors("adding htb root qdisc to %s" % self.dev):
            ipr.tc("replace", "htb", index, HANDLE, parent=TC_H_ROOT, default=wanted["default_class"]["id"])
        for cls in [wanted["default_class"]] + wanted["classes"]:
            if "classid" in cls:  # (when restoring a hand-made qdisc, its default may name no class)
                self._set_class(ipr, index, "add-class", cls)
                self._set_queue(ipr, index, cls)

    def _adjust(self, ipr, index, current, wanted):
        """Change only the classes and leaf queues that differ."""
        have = {c["id"]: c for c in current["classes"] + [current["default_class"]]}
        want = {c["id"]: c for c in wanted["classes"] + [wanted["default_class"]]}
        for minor in sorted(set(have) - set(want)):
            if "classid" not in have[minor]:
                continue  # a default class id that names no class
            with netlink_errors("removing class %s from %s" % (classid(minor), self.dev)):
                ipr.tc("del-class", index=index, handle=(MAJOR << 16) | minor, parent=HANDLE)
        for minor in sorted(want):
            cls, old = want[minor], have.get(minor)
            if "classid" not in cls:
                continue
            if old is None or "classid" not in old:
                self._set_class(ipr, index, "add-class", cls)
            elif _without_queue(old) != _without_queue(cls):
                self._set_class(ipr, index, "change-class", cls)
            if old is None or old.get("queue") != cls["queue"]:
                self._set_queue(ipr, index, cls)

    def _set_class(self, ipr, index, command, cls):
        rate = rate_bytes(cls["rate_mbit"])
        verb = "adding" if command == "add-class" else "changing"
        with netlink_errors("%s class %s on %s" % (verb, cls["classid"], self.dev)):
            ipr.tc(command, "htb", index, (MAJOR << 16) | cls["id"], parent=HANDLE,
                   rate=rate, ceil=rate, burst=burst_for(rate), cburst=burst_for(rate),
                   quantum=QUANTUM, prio=0)

    def _set_queue(self, ipr, index, cls):
        """Put the leaf tbf under the class (the kernel picks its handle)."""
        leaf_rate, burst, limit = leaf_for(rate_bytes(cls["rate_mbit"]), self.mtu)
        with netlink_errors("setting the queue of class %s on %s" % (cls["classid"], self.dev)):
            ipr.tc("replace", "tbf", index, 0, parent=(MAJOR << 16) | cls["id"],
                   rate=leaf_rate, burst=burst, limit=limit)


def _without_queue(cls):
    return {k: v for k, v in cls.items() if k != "queue"}
