# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    """The netns option every mpsocks module takes."""

    DOCUMENTATION = r"""
options:
  netns:
    description:
      - Name of a network namespace (as in C(ip netns list)) to act in instead of the current one,
        for every object that names none of its own.
      - The module enters it with C(setns) before it reads or changes an item, so every object
        of that item is that namespace's.
    type: str
"""
