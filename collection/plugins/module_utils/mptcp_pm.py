# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kernel's MPTCP path manager over generic netlink (family ``mptcp_pm``).

pyroute2 0.9.7 has a message class for this family, but it types
MPTCP_PM_ADDR_ATTR_IF_IDX as ``hex``: an interface index cannot be sent, and
an endpoint loses its ``dev``. ``MptcpPmMsg`` below follows the uapi header
(linux/mptcp.h), where IF_IDX is an s32, and is what we bind ``mptcp_pm`` to.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import socket
import traceback

from ansible.module_utils.basic import missing_required_lib
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.rtnl import NetlinkError

try:
    from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, genlmsg, nla
    from pyroute2.netlink.generic import GenericNetlinkSocket
except ImportError:
    # Stand-ins so the classes below still define (ansible-test's import test).
    genlmsg = nla = GenericNetlinkSocket = object
    NLM_F_ACK = NLM_F_DUMP = NLM_F_REQUEST = 0
    PYROUTE2_IMPORT_ERROR = traceback.format_exc()
else:
    PYROUTE2_IMPORT_ERROR = None

MPTCP_PM_NAME = "mptcp_pm"
MPTCP_PM_VER = 1
CMD_ADD_ADDR = 1
CMD_DEL_ADDR = 2
CMD_GET_ADDR = 3
CMD_SET_LIMITS = 5
CMD_GET_LIMITS = 6
CMD_SET_FLAGS = 7

# The kernel's MPTCP_PM_ADDR_MAX: the most subflows or accepted ADD_ADDRs a
# connection may have. Not exported to user space, so hard-coded here.
MPTCP_PM_ADDR_MAX = 8
MAX_ENDPOINT_ID = 255

FLAGS = {"signal": 1, "subflow": 2, "backup": 4, "fullmesh": 8}
# Set by the kernel alone, for an address a subflow uses without an endpoint.
FLAG_IMPLICIT = 16


class MptcpPmMsg(genlmsg):
    """A ``mptcp_pm`` request or reply; attribute types as in linux/mptcp.h."""

    prefix = "MPTCP_PM_ATTR_"
    nla_map = (
        ("MPTCP_PM_ATTR_UNSPEC", "none"),
        ("MPTCP_PM_ATTR_ADDR", "pm_addr|nested"),
        ("MPTCP_PM_ATTR_RCV_ADD_ADDRS", "uint32"),
        ("MPTCP_PM_ATTR_SUBFLOWS", "uint32"),
    )

    class pm_addr(nla):  # the name nla_map refers to
        """The nested endpoint address."""

        prefix = "MPTCP_PM_ADDR_ATTR_"
        nla_map = (
            ("MPTCP_PM_ADDR_ATTR_UNSPEC", "none"),
            ("MPTCP_PM_ADDR_ATTR_FAMILY", "uint16"),
            ("MPTCP_PM_ADDR_ATTR_ID", "uint8"),
            ("MPTCP_PM_ADDR_ATTR_ADDR4", "ip4addr"),
            ("MPTCP_PM_ADDR_ATTR_ADDR6", "ip6addr"),
            ("MPTCP_PM_ADDR_ATTR_PORT", "uint16"),
            ("MPTCP_PM_ADDR_ATTR_FLAGS", "uint32"),
            ("MPTCP_PM_ADDR_ATTR_IF_IDX", "int32"),
        )


def flag_bits(names):
    """The kernel's flag word for flag NAMES; refuses what the kernel would."""
    unknown = sorted(set(names) - set(FLAGS))
    if unknown:
        raise MpsocksError("flags: unknown flag(s) %s; choose from %s"
                           % (", ".join(unknown), ", ".join(sorted(FLAGS))))
    bits = 0
    for name in names:
        bits |= FLAGS[name]
    if bits & FLAGS["signal"] and bits & FLAGS["fullmesh"]:
        raise MpsocksError("flags: signal and fullmesh cannot be combined (the kernel refuses it); "
                           "fullmesh goes with subflow")
    return bits


def flag_names(bits):
    """Sorted names of the flag word BITS; bits without a name show as hex."""
    names = [name for name, bit in FLAGS.items() if bits & bit]
    if bits & FLAG_IMPLICIT:
        names.append("implicit")
    rest = bits & ~(sum(FLAGS.values()) | FLAG_IMPLICIT)
    if rest:
        names.append("0x%x" % rest)
    return sorted(names)


def endpoint_attr(address=None, endpoint_id=None, flags=None, ifindex=None, port=None):
    """The nested MPTCP_PM_ATTR_ADDR attribute; what is None is left out."""
    attrs = []
    if address is not None:
        parsed = ipaddress.ip_address(address)
        family = socket.AF_INET if parsed.version == 4 else socket.AF_INET6
        attrs.append(("MPTCP_PM_ADDR_ATTR_FAMILY", family))
        attrs.append(("MPTCP_PM_ADDR_ATTR_ADDR%d" % parsed.version, str(parsed)))
    for name, value in (("ID", endpoint_id), ("FLAGS", flags), ("IF_IDX", ifindex), ("PORT", port)):
        if value is not None:
            attrs.append(("MPTCP_PM_ADDR_ATTR_" + name, value))
    return ("MPTCP_PM_ATTR_ADDR", {"attrs": attrs})


class PathManager(GenericNetlinkSocket):
    """A generic netlink socket bound to ``mptcp_pm`` in the current namespace."""

    def __init__(self):
        # ext_ack: kernel refusals come with the kernel's own reason.
        super().__init__(ext_ack=True)
        self.bind(MPTCP_PM_NAME, MptcpPmMsg)

    def request(self, cmd, attrs=(), flags=NLM_F_REQUEST | NLM_F_ACK):
        msg = MptcpPmMsg()
        msg["cmd"] = cmd
        msg["version"] = MPTCP_PM_VER
        msg["attrs"] = list(attrs)
        return self.nlm_request(msg, msg_type=self.prid, msg_flags=flags)

    def endpoints(self):
        """Every endpoint as a dict: address, id, port, flags (int), ifindex (0: none)."""
        found = []
        for msg in self.request(CMD_GET_ADDR, flags=NLM_F_REQUEST | NLM_F_DUMP):
            addr = msg.get_attr("MPTCP_PM_ATTR_ADDR")
            text = addr.get_attr("MPTCP_PM_ADDR_ATTR_ADDR4") or addr.get_attr("MPTCP_PM_ADDR_ATTR_ADDR6")
            found.append({
                "address": str(ipaddress.ip_address(text)),
                "id": addr.get_attr("MPTCP_PM_ADDR_ATTR_ID"),
                "port": addr.get_attr("MPTCP_PM_ADDR_ATTR_PORT") or None,
                "flags": addr.get_attr("MPTCP_PM_ADDR_ATTR_FLAGS") or 0,
                "ifindex": addr.get_attr("MPTCP_PM_ADDR_ATTR_IF_IDX") or 0,
            })
        return found

    def add_endpoint(self, address, endpoint_id, flags, ifindex=None, port=None):
        self.request(CMD_ADD_ADDR, [endpoint_attr(address, endpoint_id, flags, ifindex, port)])

    def delete_endpoint(self, endpoint_id):
        self.request(CMD_DEL_ADDR, [endpoint_attr(endpoint_id=endpoint_id)])

    def set_flags(self, endpoint_id, flags):
        """Change the backup and fullmesh flags in place (the kernel ignores the others)."""
        self.request(CMD_SET_FLAGS, [endpoint_attr(endpoint_id=endpoint_id, flags=flags)])

    def limits(self):
        """(subflows, add_addr_accepted) of the in-kernel path manager."""
        (msg,) = self.request(CMD_GET_LIMITS, flags=NLM_F_REQUEST)
        return msg.get_attr("MPTCP_PM_ATTR_SUBFLOWS"), msg.get_attr("MPTCP_PM_ATTR_RCV_ADD_ADDRS")

    def set_limits(self, subflows, add_addr_accepted):
        self.request(CMD_SET_LIMITS, [("MPTCP_PM_ATTR_SUBFLOWS", subflows),
                                      ("MPTCP_PM_ATTR_RCV_ADD_ADDRS", add_addr_accepted)])


def path_manager():
    """A PathManager, or a one-line error when pyroute2 or kernel MPTCP is missing."""
    if PYROUTE2_IMPORT_ERROR:
        raise MpsocksError(missing_required_lib("pyroute2") + ": " +
                           PYROUTE2_IMPORT_ERROR.strip().splitlines()[-1])
    try:
        return PathManager()
    except NetlinkError as exc:
        raise MpsocksError("this kernel has no MPTCP path manager (generic netlink family %s: %s)"
                           % (MPTCP_PM_NAME, exc.args[-1])) from None
