#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mptcp_check
short_description: Check that a connection through the SOCKS proxy is MPTCP, on every uplink
version_added: 0.1.0
description:
  - Fetches a check URL through a SOCKS5 proxy (the host name resolved by the proxy, as
    C(curl --socks5-hostname) does), or directly over an MPTCP socket when O(proxy) is not given,
    and reports whether the server saw MPTCP and with how many subflows.
  - While the connection is still open it reads the kernel's own view of it where the module runs
    (the guest), that is the proxy's outgoing MPTCP connection to the server, found by the address
    the proxy's reply names, and each of its subflows with local and remote address, interface, uplink,
    backup flag and bytes sent and received (sock_diag, as C(ss -tiM) shows them).
  - Fails when the result is not MPTCP, naming the reason it can tell (the server says TCP; the
    guest's connection fell back to TCP; the guest's connection is plain TCP), or when an uplink of
    O(uplinks) that is not a backup carries no subflow. A URL that does not answer fails with a
    one-line message naming it.
  - The request is one HTTP/1.0 C(GET) that asks to keep the connection alive. The lab's check server
    (C(http://198.19.0.10/), C(http://check.lab.test/)) answers in JSON with C(?format=json) and in
    text otherwise; a text answer such as "You are using MPTCP" from another server is understood too.
  - Changes nothing, so check mode runs the check too.
author:
  - mpsocks developers (@mpsocks)
requirements:
  - pyroute2 >= 0.9.7 on the managed host (to read the MPTCP endpoints when O(uplinks) is given)
options:
  url:
    description:
      - The check URL, C(http://) or C(https://).
    type: str
    required: true
  proxy:
    description:
      - The SOCKS5 proxy as C(HOST:PORT) (an IPv6 address in brackets), such as C(10.66.6.2:1080).
      - When not given, the module connects directly, over an MPTCP socket.
    type: str
  proxy_username:
    description:
      - Username for a proxy that asks for one (RFC 1929); without it only "no authentication" is offered.
    type: str
  proxy_password:
    description:
      - Password that goes with O(proxy_username).
    type: str
  uplinks:
    description:
      - The interfaces of uplink 0, 1, ... where the module runs (the guest's C(eth0), C(eth1) ...).
      - Each one must carry a subflow of the connection, except those whose MPTCP endpoint has the
        C(backup) flag.
      - When empty, subflows are reported with their interfaces only and no uplink is required.
    type: list
    elements: str
    default: []
  timeout:
    description:
      - Seconds to wait for the proxy, the server and each part of the answer.
    type: float
    default: 10
  validate_certs:
    description:
      - Whether the certificate of an C(https://) server is verified.
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - mpsocks.mptcp.netns
attributes:
  check_mode:
    support: full
    details: The check changes nothing, so it runs in check mode too.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: linux
notes:
  - The kernel view needs CAP_NET_ADMIN (subflow details come from the ULP attribute of sock_diag).
"""

EXAMPLES = r"""
- name: Through the guest's SOCKS proxy to the lab's check server, both uplinks required
  mpsocks.mptcp.mptcp_check:
    url: http://check.lab.test/?format=json
    proxy: 10.66.6.2:1080
    uplinks: [eth0, eth1]
  register: check

- name: Say what the server saw
  ansible.builtin.debug:
    msg: "MPTCP with {{ check.subflows }} subflows"

- name: Directly from the guest, over an MPTCP socket
  mpsocks.mptcp.mptcp_check:
    url: http://198.19.0.10/
    uplinks: [eth0, eth1]
"""

RETURN = r"""
url:
  description: The URL fetched.
  returned: always
  type: str
  sample: http://check.lab.test/?format=json
proxy:
  description: The proxy used, or null for a direct connection.
  returned: always
  type: str
  sample: 10.66.6.2:1080
mptcp:
  description: Whether the server says the connection is MPTCP (null when its answer does not say).
  returned: when the server answered
  type: bool
  sample: true
subflows:
  description:
    - How many subflows the server saw (1 for plain TCP); null when its answer does not say.
  returned: when the server answered
  type: int
  sample: 2
client:
  description: The client address and port the server saw, when it says.
  returned: when the server answered
  type: str
  sample: 198.18.0.2:40312
answer:
  description: The first line of the server's answer.
  returned: when the server answered
  type: str
  sample: '{"mptcp": true, "subflows": 2, "client": "198.18.0.2:40312"}'
kernel:
  description:
    - The kernel's view, where the module runs, of the connection that reached the server; null when
      the kernel shows no such connection (a proxy on another host).
  returned: when the server answered
  type: dict
  contains:
    mptcp:
      description: Whether the connection is MPTCP (an MPTCP socket that did not fall back).
      type: bool
    fallback:
      description: Whether the MPTCP connection fell back to TCP.
      type: bool
    plain_tcp:
      description: Whether the connection is a plain TCP socket (a proxy that does not open MPTCP sockets).
      type: bool
    token:
      description: The MPTCP connection's local token (hexadecimal).
      type: str
      sample: 4174fd04
    local:
      description: Local address and port of the connection (those of its first subflow).
      type: str
      sample: 10.66.6.2:57986
    remote:
      description: Remote address and port.
      type: str
      sample: 198.19.0.10:80
    state:
      description: TCP state.
      type: str
      sample: ESTABLISHED
    bytes_sent:
      description: Bytes the connection sent (kernel 6.x; null on older ones).
      type: int
    bytes_received:
      description: Bytes the connection received (kernel 6.x; null on older ones).
      type: int
    subflows:
      description: The subflows, the first (MP_CAPABLE) one first.
      type: list
      elements: dict
      contains:
        local:
          description: Local address and port.
          type: str
        remote:
          description: Remote address and port.
          type: str
        interface:
          description: The interface the subflow is bound to, else the one holding its local address.
          type: str
        uplink:
          description: Position of that interface in O(uplinks), null when it is not there.
          type: int
        backup:
          description: Whether either side marked the subflow as a backup.
          type: bool
        join:
          description: Whether the subflow joined with MP_JOIN (false for the first one).
          type: bool
        backup_local:
          description: Whether this side marked the subflow as a backup.
          type: bool
        backup_remote:
          description: Whether the peer marked the subflow as a backup.
          type: bool
        fully_established:
          description: Whether the subflow's MPTCP handshake is complete.
          type: bool
        local_id:
          description: The local address id (the endpoint id; 0 for the first subflow's address).
          type: int
        remote_id:
          description: The peer's address id.
          type: int
        state:
          description: TCP state of the subflow.
          type: str
        bytes_sent:
          description: Bytes sent on the subflow, retransmissions included.
          type: int
        bytes_acked:
          description: Bytes sent on the subflow that the peer acknowledged.
          type: int
        bytes_received:
          description: Bytes received on the subflow.
          type: int
        rtt_ms:
          description: Smoothed round-trip time in milliseconds.
          type: float
uplinks:
  description: One entry per item of O(uplinks).
  returned: when the server answered
  type: list
  elements: dict
  contains:
    index:
      description: Uplink number.
      type: int
    interface:
      description: Its interface.
      type: str
    backup:
      description: Whether its MPTCP endpoint has the backup flag (then it needs no subflow).
      type: bool
    subflows:
      description: Established subflows of the connection on it.
      type: int
"""

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import one_line
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.mptcp_check import failure, run_check
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns import enter_netns


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            proxy=dict(type="str"),
            proxy_username=dict(type="str"),
            proxy_password=dict(type="str", no_log=True),
            uplinks=dict(type="list", elements="str", default=[]),
            timeout=dict(type="float", default=10),
            validate_certs=dict(type="bool", default=True),
            netns=dict(type="str"),
        ),
        required_by=dict(proxy_username="proxy", proxy_password="proxy_username"),
        supports_check_mode=True,
    )


def main():
    module = build_module()
    params = module.params
    try:
        if params["netns"]:
            enter_netns(params["netns"])
        result = run_check(params["url"], params["proxy"], params["uplinks"], params["timeout"],
                           params["proxy_username"], params["proxy_password"], params["validate_certs"])
    except MpsocksError as exc:
        module.fail_json(msg=str(exc), url=params["url"], proxy=params["proxy"])
    except Exception as exc:  # the last resort: one line for the user, the traceback for -vvv
        module.fail_json(msg="mptcp_check: unexpected %s: %s" % (type(exc).__name__, one_line(exc)),
                         exception=traceback.format_exc(), url=params["url"], proxy=params["proxy"])
    reason = failure(result)
    if reason:
        module.fail_json(msg=reason, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
