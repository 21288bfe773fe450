# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: host_resolvers
short_description: The resolvers of the controller's host, as a guest can use them
version_added: 0.1.0
description:
  - Reads the C(nameserver) lines of a resolver file of the controller (its C(/etc/resolv.conf)), in order.
  - A server only the host can reach, a local stub on a loopback address (systemd-resolved's C(127.0.0.53),
    a dnsmasq on C(127.0.0.1)) or a link-local server, is replaced by the upstream servers listed in
    O(stub_resolv_conf), where systemd-resolved writes them.
  - Fails with a one-line message when no server a guest can reach is left.
  - Filters run on the controller, so this reads the controller's files, never the managed host's.
author:
  - mpsocks developers (@mpsocks)
options:
  _input:
    description: The resolver file to read.
    type: path
    required: true
  stub_resolv_conf:
    description: The file listing the local stub's upstream servers.
    type: path
    default: /run/systemd/resolve/resolv.conf
"""

EXAMPLES = r"""
- name: The host's resolvers, a local stub replaced by its upstream servers
  ansible.builtin.debug:
    msg: "{{ '/etc/resolv.conf' | mpsocks.mptcp.host_resolvers }}"
"""

RETURN = r"""
_value:
  description: The resolver addresses, in the file's order, each once.
  type: list
  elements: str
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.guest import STUB_RESOLV_CONF, host_resolvers


def resolvers_filter(resolv_conf, stub_resolv_conf=STUB_RESOLV_CONF):
    try:
        return host_resolvers(resolv_conf, stub_resolv_conf)
    except MpsocksError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {"host_resolvers": resolvers_filter}
