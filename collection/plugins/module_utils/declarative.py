# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shape every mpsocks module shares.

A ``KernelObject`` reads one kernel object into a plain dict, says what the
dict should be, and applies the difference. ``run()`` is the whole module:
validate, read, compare (this comparison *is* check mode's prediction), apply,
read back and verify, so a silent kernel refusal is an error, not a lie.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import abc

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns import enter_netns


class KernelObject(abc.ABC):
    """Base class: subclasses implement validate, read, wanted and apply."""

    #: Name of the result key holding the object's state, e.g. ``tap``.
    kind = "object"

    def __init__(self, params):
        self.params = params
        self.state = params.get("state", "present")

    def label(self):
        """A short human name for diff headers, e.g. ``tap mptcp0``."""
        return self.kind

    @abc.abstractmethod
    def validate(self):
        """Raise MpsocksError for bad input; runs before the kernel is read."""

    @abc.abstractmethod
    def read(self):
        """Return the object as the kernel holds it (a dict), or None."""

    @abc.abstractmethod
    def wanted(self, current):
        """Return the dict ``read()`` must give once state is present."""

    @abc.abstractmethod
    def apply(self, current, wanted):
        """Change the kernel from CURRENT to WANTED (either may be None)."""

    def run(self, check_mode=False):
        """Make the kernel match the declared state; return the module result."""
        self.validate()
        before = self.read()
        after = self.wanted(before) if self.state == "present" else None
        changed = before != after
        if changed and not check_mode:
            self._apply_or_restore(before, after)
            found = self.read()
            if found != after:
                raise MpsocksError("%s: the kernel holds %r after the change, expected %r"
                                   % (self.label(), found, after))
        return {
            "changed": changed,
            "diff": {
                "before_header": self.label(),
                "after_header": self.label(),
                "before": before or {},
                "after": after or {},
            },
            self.kind: after or {},
        }

    def _apply_or_restore(self, before, after):
        """Apply; if the kernel refuses half way, put back what was there."""
        try:
            self.apply(before, after)
        except MpsocksError:
            try:
                current = self.read()
                if current != before:
                    self.apply(current, before)
            except MpsocksError:
                pass
            raise


def run_module(module, object_class):
    """The body of every module's main(): enter the netns, run, report."""
    try:
        if module.params.get("netns"):
            enter_netns(module.params["netns"])
        result = object_class(module.params).run(check_mode=module.check_mode)
    except MpsocksError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)
