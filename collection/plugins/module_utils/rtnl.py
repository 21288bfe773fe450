# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pyroute2 access shared by the modules: one import guard, one error wrapper."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import importlib
import importlib.util
import ipaddress
import sys
import traceback

from ansible.module_utils.basic import missing_required_lib
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError


def _pyroute2_without_its_init():
    """Let ``import pyroute2.a.b`` load only a.b and what it needs, not all of pyroute2.

    pyroute2's ``__init__`` imports every netlink family it knows (conntrack, nftables,
    wireguard, ipdb, ndb, ...): about 45 ms of the 115 ms pyroute2 adds to every module
    call here. The package is registered without running that file; the first time
    someone asks it for a name that is not a submodule (``from pyroute2 import IPRoute``),
    the file runs after all, so such code keeps working.
    """
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return  # not installed: the import below fails and says so
    package = importlib.util.module_from_spec(spec)

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        if importlib.util.find_spec("pyroute2." + name) is not None:
            return importlib.import_module("pyroute2." + name)
        del package.__getattr__
        spec.loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = __getattr__
    sys.modules["pyroute2"] = package


try:
    _pyroute2_without_its_init()
    from pyroute2.iproute.linux import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
except ImportError:
    IPRoute = None
    PYROUTE2_IMPORT_ERROR = traceback.format_exc()

    class NetlinkError(Exception):
        """Stand-in so ``except NetlinkError`` stays valid without pyroute2."""

else:
    PYROUTE2_IMPORT_ERROR = None


def iproute():
    """An rtnetlink socket in the current network namespace."""
    if IPRoute is None:
        raise MpsocksError(missing_required_lib("pyroute2") + ": " +
                           PYROUTE2_IMPORT_ERROR.strip().splitlines()[-1])
    return IPRoute()


@contextlib.contextmanager
def netlink_errors(action):
    """Turn a kernel refusal into a one-line MpsocksError saying what was tried."""
    try:
        yield
    except NetlinkError as exc:
        reason = exc.args[-1] if exc.args else exc
        raise MpsocksError("%s: the kernel refused: %s" % (action, reason)) from None


def link_index(ipr, name):
    """Index of interface NAME, or None."""
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def link_kind(link):
    """The rtnetlink kind of a link message ('veth', 'tun', ...), or None."""
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info else None


def managed_addresses(ipr, index):
    """Addresses on the link as sorted ``addr/prefix`` strings, link-local IPv6 left out."""
    found = set()
    for msg in ipr.get_addr(index=index):
        iface = ipaddress.ip_interface("%s/%d" % (msg.get_attr("IFA_ADDRESS"), msg["prefixlen"]))
        if not (iface.version == 6 and iface.ip.is_link_local):
            found.add(str(iface))
    return sorted(found, key=address_order)


def address_order(text):
    """Sort key of an ``addr/prefix`` string: IPv4 before IPv6, then by address."""
    iface = ipaddress.ip_interface(text)
    return (iface.version, iface)


def in_netns(params):
    """`` in netns NAME`` when PARAMS name a namespace, else '': how labels say where an object is."""
    return " in netns %s" % params["netns"] if params.get("netns") else ""
