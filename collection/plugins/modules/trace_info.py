#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: trace_info
short_description: Analyse packet captures for TCP handshakes, MPTCP connections and middleboxes
version_added: 0.1.0
description:
  - Reads pcap or pcapng captures on the managed host in one streaming pass (memory stays flat
    whatever their size) and reports every TCP handshake (TTL, MSS, window scale, MP_CAPABLE, retries,
    the hop distance of the box that answered), the MPTCP connections with their subflows and the
    bytes each carried, the fallbacks to TCP, packets injected into a connection by another box, and a
    middlebox verdict.
  - Link types Ethernet (VLAN tags included), Linux cooked SLL and SLL2 (C(tcpdump -i any)) and raw IP;
    IPv4 and IPv6; packets cut by a small snaplen are parsed as far as they go.
  - Several captures are compared, for example one made with MPTCP and one without, or the same
    connections seen at two capture points.
  - Changes nothing, except that it writes time-sequence plots when O(plot_dir) or O(xplot_dir) is given.
author:
  - mpsocks developers (@mpsocks)
options:
  paths:
    description:
      - Capture files on the managed host (pcap or pcapng).
      - An empty, cut short or unreadable file, or one that is no capture, fails the task with a
        one-line message naming the file.
    type: list
    elements: path
    required: true
  plot_dir:
    description:
      - Folder (created if missing) to write a PNG time-sequence plot into, per MPTCP connection and
        direction, named C(c2s_seq_ID.png) and C(s2c_seq_ID.png), showing data sequence numbers against
        time, one colour per subflow, and the data ACKs as a grey line.
    type: path
  xplot_dir:
    description:
      - Folder (created if missing) to write the same plots into as xplot.org files,
        C(c2s_seq_ID.xpl) and C(s2c_seq_ID.xpl), as mptcptrace wrote them.
    type: path
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The plots are drawn in a scratch folder and thrown away; RV(plots) names the files that
      would have been written.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
notes:
  - tshark reports the same numbers (C(ip.ttl), C(tcp.options.mss_val), C(tcp.options.wscale.shift),
    C(mptcp.stream), C(tcp.len)); the project's tests compare the two.
seealso:
  - name: RFC 8684 (MPTCP v1)
    description: The options this module parses.
    link: https://www.rfc-editor.org/rfc/rfc8684
"""

EXAMPLES = r"""
- name: Compare a capture made without MPTCP and one made with it
  mpsocks.mptcp.trace_info:
    paths:
      - /tmp/nomptcp.pcap
      - /tmp/mptcp.pcap
  register: trace

- name: Say what sits between us and the server
  ansible.builtin.debug:
    msg: "{{ trace.middlebox.verdict }}: {{ trace.middlebox.evidence | join('; ') }}"

- name: The TTL of every SYN/ACK
  ansible.builtin.debug:
    msg: "{{ trace.handshakes | map(attribute='synack') | select | map(attribute='ttl') }}"

- name: Plot the data sequence numbers of each MPTCP connection
  mpsocks.mptcp.trace_info:
    paths: [/tmp/all.pcapng]
    plot_dir: /tmp/plots
"""

RETURN = r"""
files:
  description: One entry per capture, in the order of O(paths).
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The capture file.
      type: str
    format:
      description: C(pcap) or C(pcapng).
      type: str
    link_types:
      description: Link types met, such as C(ethernet), C(linux-sll2), C(raw-ip).
      type: list
      elements: str
    frames:
      description: Frames read.
      type: int
    not_ip:
      description: Frames that held no IP packet.
      type: int
    tcp:
      description: TCP segments.
      type: int
    not_tcp:
      description: IP packets that were not TCP (or later fragments).
      type: int
    truncated:
      description: IP packets the capture's snaplen cut.
      type: int
    headers_cut:
      description: Packets cut even inside their IP or TCP header (not analysed further).
      type: int
    first_time:
      description: Time of the first IP packet, in seconds since the epoch (null if none).
      type: float
    last_time:
      description: Time of the last IP packet.
      type: float
handshakes:
  description: One entry per TCP connection attempt (client address and port) whose SYN was captured,
    MP_JOIN subflows included.
  returned: always
  type: list
  elements: dict
  contains:
    file:
      description: Index of the capture in RV(files).
      type: int
    family:
      description: C(ipv4) or C(ipv6).
      type: str
    client:
      description: The SYN's sender, C(address) and C(port).
      type: dict
    server:
      description: The SYN's receiver, C(address) and C(port).
      type: dict
    connection:
      description: The C(id) of the MPTCP connection the attempt became a subflow of, or null.
      type: int
    syn:
      description: The first SYN.
      type: dict
      contains:
        time:
          description: When it was captured (seconds since the epoch).
          type: float
        isn:
          description: Its sequence number.
          type: int
        ttl:
          description: IPv4 TTL or IPv6 hop limit.
          type: int
          sample: 64
        initial_ttl:
          description: The next of 32, 64, 128, 255 at or above RV(handshakes[].syn.ttl).
          type: int
        hops:
          description: initial_ttl - ttl.
          type: int
        mss:
          description: MSS option (null if absent).
          type: int
          sample: 1460
        wscale:
          description: Window scale shift (null if absent).
          type: int
        sack_permitted:
          description: Whether it offered SACK.
          type: bool
        timestamps:
          description: Whether it carried the timestamp option.
          type: bool
        mptcp:
          description: Whether it carried MP_CAPABLE.
          type: bool
        mptcp_version:
          description: The MP_CAPABLE version (0 or 1), or null.
          type: int
        mp_join:
          description: Whether it carried MP_JOIN (an additional subflow).
          type: bool
        attempts:
          description: How many SYNs were sent (1 + retries).
          type: int
        mptcp_attempts:
          description: How many of them carried MP_CAPABLE.
          type: int
        mptcp_dropped_on_retry:
          description: Whether a retry went without the MP_CAPABLE the earlier SYNs carried.
          type: bool
    synack:
      description: The first SYN/ACK, or null when the SYN got none.
      type: dict
      contains:
        time:
          description: When it was captured.
          type: float
        isn:
          description: Its sequence number.
          type: int
        ttl:
          description: IPv4 TTL or IPv6 hop limit.
          type: int
          sample: 52
        initial_ttl:
          description: The sender's likely initial TTL.
          type: int
          sample: 64
        hops:
          description: Estimated hop distance of the box that answered.
          type: int
          sample: 12
        mss:
          description: MSS option.
          type: int
        wscale:
          description: Window scale shift.
          type: int
        sack_permitted:
          description: Whether it allowed SACK.
          type: bool
        timestamps:
          description: Whether it carried the timestamp option.
          type: bool
        mptcp:
          description: Whether it carried MP_CAPABLE.
          type: bool
        mptcp_version:
          description: The MP_CAPABLE version, or null.
          type: int
        mp_join:
          description: Whether it carried MP_JOIN.
          type: bool
        count:
          description: How many SYN/ACKs came (retransmissions included).
          type: int
        rtt_ms:
          description: Milliseconds from the first SYN to the SYN/ACK.
          type: float
    reset:
      description: The RST that answered the SYN (C(time), C(ttl), C(hops)), or null.
      type: dict
connections:
  description: The MPTCP connections, grouped by keys and tokens (token = high 32 bits of the SHA-256
    (v1) or SHA-1 (v0) of the key).
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Number of the connection, from 0.
      type: int
    version:
      description: MPTCP version, 0 or 1 (null when its handshake was not captured).
      type: int
    checksum:
      description: Whether DSS checksums were asked for.
      type: bool
    client:
      description: The initial subflow's client end, C(address) and C(port).
      type: dict
    server:
      description: The initial subflow's server end.
      type: dict
    client_key:
      description: The client's key.
      type: int
    server_key:
      description: The server's key.
      type: int
    client_token:
      description: The client's token.
      type: int
    server_token:
      description: The server's token (what the client's MP_JOIN SYNs carry).
      type: int
    handshake_seen:
      description: Whether the initial subflow's handshake was captured.
      type: bool
    first_time:
      description: Time of the first packet.
      type: float
    last_time:
      description: Time of the last packet.
      type: float
    bytes:
      description: TCP payload bytes, C(client_to_server) and C(server_to_client), over all subflows.
      type: dict
    subflows:
      description: The connection's subflows, initial first.
      type: list
      elements: dict
      contains:
        index:
          description: Number of the subflow in the connection, from 0.
          type: int
        file:
          description: Index of the capture in RV(files).
          type: int
        family:
          description: C(ipv4) or C(ipv6).
          type: str
        kind:
          description: C(initial), C(join) or C(unknown) (captured after its handshake).
          type: str
        established:
          description: Whether its handshake completed with MPTCP.
          type: bool
        backup:
          description: Whether it is a backup subflow (MP_JOIN flag or the last MP_PRIO).
          type: bool
        address_id:
          description: The address id of its MP_JOIN, or null.
          type: int
        client:
          description: Its end on the connection's client side, C(address) and C(port).
          type: dict
        server:
          description: Its end on the connection's server side.
          type: dict
        wscale:
          description: Window scale shifts of the C(client) and C(server) ends.
          type: dict
        bytes:
          description: TCP payload bytes, C(client_to_server) and C(server_to_client).
          type: dict
        packets:
          description: Packets, C(client_to_server) and C(server_to_client).
          type: dict
        share:
          description: Its share of the connection's bytes, 0 to 1.
          type: float
        first_time:
          description: Time of its first packet.
          type: float
        last_time:
          description: Time of its last packet.
          type: float
        reset_reason:
          description: The reason code of an MP_TCPRST that closed it, or null.
          type: int
        fallback:
          description: Why the subflow fell back to TCP, or null.
          type: str
    add_addr:
      description: ADD_ADDR options seen (C(direction), C(address_id), C(address), C(port), C(echo), C(time)).
      type: list
      elements: dict
    remove_addr:
      description: REMOVE_ADDR options seen (C(direction), C(address_ids), C(time)).
      type: list
      elements: dict
    data_fin:
      description: Whether the C(client) and the C(server) sent a DATA_FIN.
      type: dict
    fastclose:
      description: Whether an MP_FASTCLOSE was seen.
      type: bool
    mp_fail:
      description: How many MP_FAIL options were seen.
      type: int
    fallback:
      description: The first fallback to TCP (C(reason), C(time)), or null.
      type: dict
fallbacks:
  description: Fallbacks to TCP; MP_CAPABLE SYNs answered without it, DSS that stopped, infinite mappings.
  returned: always
  type: list
  elements: dict
  contains:
    file:
      description: Index of the capture in RV(files).
      type: int
    client:
      description: C(address) and C(port) of the TCP client.
      type: dict
    server:
      description: C(address) and C(port) of the TCP server.
      type: dict
    connection:
      description: The MPTCP connection's C(id), or null.
      type: int
    reason:
      description: What happened.
      type: str
    time:
      description: When.
      type: float
injected:
  description: Packets inside a connection that came from another hop distance than the rest of their
    side (the SYN/ACK's for the server side), grouped by side, TTL and flags.
  returned: always
  type: list
  elements: dict
  contains:
    file:
      description: Index of the capture in RV(files).
      type: int
    client:
      description: C(address) and C(port) of the TCP client.
      type: dict
    server:
      description: C(address) and C(port) of the TCP server.
      type: dict
    direction:
      description: C(server-to-client) or C(client-to-server).
      type: str
    flags:
      description: Their TCP flags, such as C(RST).
      type: str
    ttl:
      description: Their TTL.
      type: int
      sample: 124
    hops:
      description: The hop distance it gives.
      type: int
      sample: 4
    expected_hops:
      description: The hop distance of the rest of that side.
      type: int
      sample: 13
    packets:
      description: How many.
      type: int
    time:
      description: When the first came.
      type: float
middlebox:
  description: What sits between the client and the servers.
  returned: always
  type: dict
  contains:
    verdict:
      description:
        - C(terminating-proxy) when plain-TCP SYN/ACKs come from a closer box than MPTCP ones to the
          same server, or with other MSS or window scale.
        - C(mptcp-stripped) when MP_CAPABLE is missing from answers of a server that speaks MPTCP, or
          disappears between two capture points.
        - C(mptcp-blocked) when MP_CAPABLE SYNs go unanswered while SYNs without it are answered.
        - C(none) when MPTCP passed untouched, C(unknown) when the captures do not tell.
      type: str
      sample: terminating-proxy
    evidence:
      description: Sentences saying why, the strongest first.
      type: list
      elements: str
    findings:
      description: The verdict per server address (C(server), C(verdict), C(evidence)).
      type: list
      elements: dict
plots:
  description: The plot files written (in check mode, that would have been written).
  returned: always
  type: list
  elements: str
  sample: [/tmp/plots/c2s_seq_0.png, /tmp/plots/s2c_seq_0.png]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_analysis import analyze


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            paths=dict(type="list", elements="path", required=True),
            plot_dir=dict(type="path"),
            xplot_dir=dict(type="path"),
        ),
        supports_check_mode=True,
    )


def main():
    module = build_module()
    params = module.params
    try:
        report = analyze(params["paths"], params["plot_dir"], params["xplot_dir"],
                         check_mode=module.check_mode)
    except MpsocksError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=bool(report["plots"]), **report)


if __name__ == "__main__":
    main()
