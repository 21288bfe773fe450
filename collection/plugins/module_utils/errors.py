# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one exception type: its message is the one-line error the user sees."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class MpsocksError(Exception):
    """Bad input or a kernel refusal, worded for the user, naming the input."""
