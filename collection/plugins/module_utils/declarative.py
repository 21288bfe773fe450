# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shape every mpsocks module shares.

A ``KernelObject`` reads one kernel object into a plain dict, says what the
dict should be, and applies the difference. ``converge()`` is one object's
whole life in a module: under the object's locks, read, compare (this
comparison *is* check mode's prediction), apply, read back and verify, so a
silent kernel refusal is an error, not a lie.

A module takes a list of objects (``config``, as Ansible's network resource
modules do), because each module call costs about half a second before it does
anything. ``run_module()`` validates every item first, so bad input anywhere
changes nothing, then converges the items in order, each in its own network
namespace.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import abc
import traceback

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.locking import hold, netns_key
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns import (
    current_netns_identity,
    switch_netns,
)

#: Top-level options that are not defaults for the items.
LIST_OPTIONS = ("config",)


def one_line(exc):
    """An exception as one line of text: its message, else its type."""
    return " ".join(str(exc).split()) or type(exc).__name__


class KernelObject(abc.ABC):
    """Base class: subclasses implement validate, read, wanted and apply."""

    #: Name of the result key holding the object's state, e.g. ``tap``.
    kind = "object"

    def __init__(self, params):
        self.params = params
        self.state = params.get("state") or "present"

    def label(self):
        """A short human name for messages and diff headers, e.g. ``tap mptcp0``."""
        return self.kind

    @abc.abstractmethod
    def validate(self):
        """Raise MpsocksError for bad input; runs before anything is changed."""

    @abc.abstractmethod
    def read(self):
        """Return the object as the kernel holds it (a dict), or None."""

    @abc.abstractmethod
    def wanted(self, current):
        """Return the dict ``read()`` must give once state is present."""

    @abc.abstractmethod
    def apply(self, current, wanted):
        """Change the kernel from CURRENT to WANTED (either may be None)."""

    def lock_keys(self):
        """The locks held from the first read to the read-back: the current namespace's."""
        return [netns_key(current_netns_identity())]

    def as_config(self, state):
        """STATE (a ``read()`` dict) as module input: feeding it back changes nothing."""
        return state

    @classmethod
    def strays(cls, params, declared):
        """For state overridden: objects (state absent) the project owns that DECLARED leaves out."""
        raise MpsocksError("state: overridden is not supported for %s" % cls.kind)

    def run(self, check_mode=False):
        """Validate, then converge: one object on its own."""
        self.validate()
        return self.converge(check_mode)

    def converge(self, check_mode=False):
        """Make the kernel match the declared state; return this object's result."""
        with hold(self.lock_keys(), self.label()):
            before = self.read()
            after = self.wanted(before) if self.state == "present" else None
            changed = before != after
            if changed and not check_mode:
                self._apply_or_restore(before, after)
                found = self.read()
                if found != after:
                    raise MpsocksError("%s: the kernel holds %r after the change, expected %r"
                                       % (self.label(), found, after))
        return self.result(before, after, changed)

    def result(self, before, after, changed):
        """This object's entry in ``results``: the diff of what read() sees, and the object as input."""
        return {
            "label": self.label(),
            "changed": changed,
            "diff": {
                "before_header": self.label(),
                "after_header": self.label(),
                "before": before or {},
                "after": after or {},
            },
            self.kind: self.config_of(after),
        }

    def config_of(self, state):
        """STATE as module input, with the namespace it is in (so it comes back to the same place)."""
        if not state:
            return {}
        config = self.as_config(state)
        if "netns" in self.params:
            config = dict(config, netns=self.params["netns"])
        return config

    def _apply_or_restore(self, before, after):
        """Apply; if that fails half way, put back what was there, and say if that fails too."""
        try:
            self.apply(before, after)
        except Exception as exc:
            try:
                current = self.read()
                if current != before:
                    self.apply(current, before)
            except Exception as again:
                raise MpsocksError("%s; putting the previous state back failed too (%s), so %s is left "
                                   "half-changed" % (one_line(exc), one_line(again), self.label())) from None
            raise


class UnexpectedError(MpsocksError):
    """An exception no one foresaw, worded as one line; the traceback goes with it for -vvv."""

    def __init__(self, message, details):
        super().__init__(message)
        self.details = details


def item_params(params, item):
    """One config ITEM with the module's top-level options as defaults for what it leaves out."""
    merged = {key: value for key, value in params.items() if key not in LIST_OPTIONS}
    if merged.get("state") == "overridden":
        merged["state"] = "present"
    merged.update((key, value) for key, value in item.items() if value is not None)
    return merged


class ObjectList:
    """The objects of one module call: build and validate them all, then converge them in order."""

    def __init__(self, object_class, params):
        self.object_class = object_class
        self.params = params
        self.objects = []
        self.results = []

    def _where(self, position, obj):
        """How errors name an item: its position and label when the list holds several."""
        if len(self.objects) <= 1 and position == 0:
            return ""
        try:
            label = one_line(obj.label())
        except Exception:  # a label from unvalidated input must not hide the real error
            label = obj.kind
        return "config[%d] (%s): " % (position, label)

    def prepare(self):
        """Build and validate every item (in its namespace) before anything changes."""
        items = self.params.get("config") or []
        self.objects = [self.object_class(item_params(self.params, item)) for item in items]
        for position, obj in enumerate(self.objects):
            self._in_place(position, obj, obj.validate)
        if self.params.get("state") == "overridden":
            switch_netns(self.params.get("netns"))
            self.objects += self.object_class.strays(self.params, self.objects)
        switch_netns(None)

    def converge(self, check_mode):
        for position, obj in enumerate(self.objects):
            self.results.append(self._in_place(position, obj, obj.converge, check_mode))
        switch_netns(None)
        return self.report()

    def _in_place(self, position, obj, action, *args):
        """ACTION(*ARGS) for item OBJ, in its namespace; errors name the item."""
        try:
            switch_netns(obj.params.get("netns"))
            return action(*args)
        except MpsocksError as exc:
            raise MpsocksError(self._where(position, obj) + one_line(exc)) from None
        except Exception as exc:
            raise UnexpectedError("%sunexpected %s: %s" % (self._where(position, obj) or obj.kind + ": ",
                                                           type(exc).__name__, one_line(exc)),
                                  traceback.format_exc()) from None

    def report(self):
        changed = [result for result in self.results if result["changed"]]
        return {
            "changed": bool(changed),
            "results": self.results,
            "diff": [result["diff"] for result in changed],
        }


def run_module(module, object_class):
    """The body of every list module's main(): validate all items, converge each, report."""
    objects = ObjectList(object_class, module.params)
    try:
        objects.prepare()
        result = objects.converge(module.check_mode)
    except UnexpectedError as exc:
        module.fail_json(msg=str(exc), exception=exc.details, **objects.report())
    except MpsocksError as exc:
        module.fail_json(msg=str(exc), **objects.report())
    except Exception as exc:  # the last resort: one line for the user, the traceback for -vvv
        module.fail_json(msg="%s: unexpected %s: %s" % (object_class.kind, type(exc).__name__, one_line(exc)),
                         exception=traceback.format_exc(), **objects.report())
    module.exit_json(**result)
