# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Input checks shared by the modules; each raises MpsocksError naming the option."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError

IFNAMSIZ = 16
# 0 unspec, 252 compat, 253 default, 254 main, 255 local.
RESERVED_TABLES = {0: "unspec", 252: "compat", 253: "default", 254: "main", 255: "local"}
MAX_TABLE = 2 ** 32 - 1


def interface_name(value, option):
    """Return VALUE if the kernel would accept it as an interface name."""
    if not isinstance(value, str) or not value:
        raise MpsocksError("%s: an interface name is required" % option)
    if len(value) >= IFNAMSIZ:
        raise MpsocksError(
            "%s: interface name %r is %d characters long, the kernel allows %d"
            % (option, value, len(value), IFNAMSIZ - 1))
    if value in (".", "..") or any(c in "/:\0" or c.isspace() for c in value):
        raise MpsocksError("%s: %r is not a valid interface name" % (option, value))
    return value


def nft_interface_name(value, option):
    """Return VALUE if it is an interface name that an nft name match (iifname/oifname) takes literally.

    nft reads ``*`` as a wildcard and ``"``/``\\`` as quoting, so names holding them are refused.
    """
    name = interface_name(value, option)
    for char in '*"\\':
        if char in name:
            raise MpsocksError("%s: %r holds %r, which nft would not take literally in a name match"
                               % (option, name, char))
    return name


def interface_address(value, option):
    """Parse ``ADDR/PREFIX`` (prefix required) into an ipaddress interface."""
    text = str(value)
    if "/" not in text:
        raise MpsocksError("%s: %r needs a prefix length, e.g. 10.66.6.1/24" % (option, text))
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        raise MpsocksError("%s: %r is not a valid address/prefix" % (option, text)) from None


def ip_address(value, option):
    """Parse a bare IPv4 or IPv6 address."""
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        raise MpsocksError("%s: %r is not an IP address" % (option, value)) from None


def ip_network(value, option):
    """Parse a subnet; host bits are cleared (10.66.6.1/24 -> 10.66.6.0/24)."""
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise MpsocksError("%s: %r is not a valid subnet" % (option, value)) from None


def table_id(value, option):
    """A routing table id the project may own: 1..2^32-1 but not the kernel's own."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise MpsocksError("%s: %r is not a routing table number" % (option, value)) from None
    if number in RESERVED_TABLES:
        raise MpsocksError("%s: table %d is the kernel's %r table; use another number"
                           % (option, number, RESERVED_TABLES[number]))
    if not 1 <= number <= MAX_TABLE:
        raise MpsocksError("%s: table %d is out of range 1..%d" % (option, number, MAX_TABLE))
    return number
