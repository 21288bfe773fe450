# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: lab_plan
short_description: Derive the whole lab topology from a few settings
version_added: 0.1.0
description:
  - Validates the lab's settings and returns every namespace, veth, address, route, shaper, middlebox
    and server of the lab as data; the role M(mpsocks.mptcp.lab) loops over it.
  - Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking); uplink N is 198.18.N.0/24 with the host
    at .2 and the ISP at .1; the servers are 198.19.0.10 (check), .11 (download) and .12 (plain TCP),
    and the DNS server 198.19.0.53 answers their names (C(check.lab.test) ...) and C(dns.lab.test).
  - Fails with a one-line message naming the bad setting.
author:
  - mpsocks developers (@mpsocks)
options:
  _input:
    description:
      - Settings, all optional, C(name) (default V(mpslab)), C(uplinks) (a list; each item a rate in
        Mbit/s or a dict with C(rate_mbit), C(middlebox), C(optimizer_rate_mbit), C(delay_ms)), C(hops),
        C(host_netns), C(uplink_prefix), C(table_base), C(run_root).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Plan a lab with a fast and a slow uplink
  ansible.builtin.debug:
    msg: "{{ {'uplinks': [20, {'rate_mbit': 5, 'middlebox': 'optimizer'}]} | mpsocks.mptcp.lab_plan }}"
"""

RETURN = r"""
_value:
  description: The topology, with keys such as C(namespaces), C(uplinks), C(links), C(routes), C(shapers),
    C(middleboxes), C(daemons), C(servers) and C(dns) (C(address), C(domain), C(names)).
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.lab import lab_plan


def plan_filter(settings):
    if not isinstance(settings, dict):
        raise AnsibleFilterError("lab_plan: the settings must be a dict, not %s" % type(settings).__name__)
    try:
        return lab_plan(dict(settings))
    except MpsocksError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {"lab_plan": plan_filter}
