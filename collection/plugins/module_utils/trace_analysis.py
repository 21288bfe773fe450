# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Analyse captures in one streaming pass: handshakes, MPTCP connections, fallbacks, middleboxes.

``analyze(paths)`` reads each capture once, keeping state per TCP connection only, and returns one
plain dict (what ``mpsocks-run analyze --json`` prints and the ``trace_info`` module returns)::

    files[]        path, format, link_types[], frames, not_ip, tcp, not_tcp, truncated (cut by the
                   snaplen), headers_cut (even the IP/TCP headers), first_time, last_time
    handshakes[]   one per TCP connection attempt whose SYN was captured (MP_JOIN subflows too):
                   file, family, client{address, port}, server{address, port}, connection (MPTCP
                   connection id or null),
                   syn{time, isn, ttl, initial_ttl, hops, mss, wscale, sack_permitted, timestamps,
                       mptcp (carried MP_CAPABLE), mptcp_version, mp_join, attempts (SYNs sent),
                       mptcp_attempts, mptcp_dropped_on_retry},
                   synack (null when unanswered){time, isn, ttl, initial_ttl, hops, mss, wscale,
                       sack_permitted, timestamps, mptcp, mptcp_version, mp_join, count, rtt_ms},
                   reset (null, or the RST that answered the SYN){time, ttl, hops}
    connections[]  MPTCP connections: id, version, checksum, client, server, client_key, server_key,
                   client_token, server_token, handshake_seen, first_time, last_time,
                   bytes{client_to_server, server_to_client}, subflows[], add_addr[], remove_addr[],
                   data_fin{client, server}, fastclose, mp_fail, fallback (null or {reason, time})
      subflows[]   index, file, family, kind (initial, join, unknown), established, backup, address_id,
                   client{address, port}, server{address, port} (the connection's client and server
                   ends), wscale{client, server}, bytes{client_to_server, server_to_client},
                   packets{client_to_server, server_to_client}, share (of the connection's bytes),
                   first_time, last_time, reset_reason (MP_TCPRST), fallback (null or a reason)
    fallbacks[]    file, client, server, connection, reason, time: MP_CAPABLE SYNs answered without
                   it, and MPTCP connections whose DSS stopped (or that sent an infinite mapping)
    injected[]     packets inside a connection whose hop distance differs from the rest of their
                   side (the SYN/ACK's, or the SYN's): file, client, server, direction
                   (server-to-client or client-to-server), flags, ttl, hops, expected_hops, packets,
                   time (of the first)
    middlebox      verdict (none, terminating-proxy, mptcp-stripped, mptcp-blocked, unknown),
                   evidence[] (sentences), findings[]{server, verdict, evidence[]}
    plots[]        the files written for plot_dir/xplot_dir

TTLs are compared as hop distances: the initial TTL is taken as the next of 32, 64, 128, 255 at or
above the observed one, hops = initial - observed. Times are seconds since the epoch.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import tempfile

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_packet import (
    ACK,
    ADD_ADDR,
    DSS,
    FIN,
    MP_CAPABLE,
    MP_FAIL,
    MP_FASTCLOSE,
    MP_JOIN,
    MP_PRIO,
    MP_TCPRST,
    REMOVE_ADDR,
    RST,
    SYN,
    address_text,
    flags_text,
    initial_ttl,
    key_parts,
    key_token,
    mptcp_options,
    parse_options,
    parse_tcp,
    reverse_key,
)
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_pcap import Capture
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_plot import SequenceLog, write_plots

VERDICTS = ("none", "terminating-proxy", "mptcp-stripped", "mptcp-blocked", "unknown")
C2S, S2C = 0, 1
DIRECTIONS = ("client_to_server", "server_to_client")
MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF
#: At most this many ADD_ADDR/REMOVE_ADDR entries are kept per connection.
MAX_ADDRESS_EVENTS = 64


class _Side:
    """One direction of a TCP flow: what its sender sent."""

    __slots__ = ("flow", "client", "packets", "bytes", "ttl", "hops", "isn", "wscale", "connection",
                 "direction", "mapping", "plain_since", "plain_first", "mptcp_seen", "last_time")

    def __init__(self, flow, client):
        self.flow = flow
        self.client = client
        self.packets = self.bytes = self.plain_since = 0
        self.ttl = self.hops = -1
        self.isn = self.wscale = self.connection = self.mapping = self.plain_first = None
        self.direction = C2S if client else S2C
        self.mptcp_seen = False
        self.last_time = None


class _Flow:
    """One TCP connection attempt (client 4-tuple), MPTCP subflow or not."""

    __slots__ = ("file", "key", "client", "server", "handshake", "first_time", "kind", "index", "established",
                 "backup", "address_id", "reset_reason", "fallback", "syn_mptcp", "answered", "closed",
                 "injected", "listed")

    def __init__(self, file_index, key, first_time):
        self.file = file_index
        self.key = key  # client -> server
        self.client = _Side(self, True)
        self.server = _Side(self, False)
        self.handshake = None
        self.first_time = first_time
        self.kind = None  # initial, join, unknown once part of an MPTCP connection
        self.index = None  # its number among the connection's subflows
        self.established = False
        self.backup = False
        self.address_id = None
        self.reset_reason = self.fallback = None
        self.syn_mptcp = None  # the SYN's MP_CAPABLE or MP_JOIN option
        self.answered = self.closed = False
        self.injected = {}
        self.listed = False  # in _Analysis.flows


class _Connection:
    """One MPTCP connection: its keys and subflows."""

    __slots__ = ("id", "version", "checksum", "keys", "tokens", "idsn", "last_dsn", "subflows",
                 "add_addr", "remove_addr", "data_fin", "fastclose", "mp_fail", "fallback",
                 "handshake_seen")

    def __init__(self, number, version):
        self.id = number
        self.version = version
        self.checksum = False
        self.keys = [None, None]  # client's, server's
        self.tokens = [None, None]
        self.idsn = [None, None]
        self.last_dsn = [0, 0]
        self.subflows = []
        self.add_addr = []
        self.remove_addr = []
        self.data_fin = [False, False]
        self.fastclose = False
        self.mp_fail = 0
        self.fallback = None
        self.handshake_seen = False


def analyze(paths, plot_dir=None, xplot_dir=None, check_mode=False):
    """The analysis of the captures at PATHS (see the module docstring); raises MpsocksError.

    With PLOT_DIR and/or XPLOT_DIR, writes there a PNG and/or xplot time-sequence plot per MPTCP
    connection and direction; with CHECK_MODE they are drawn in a scratch folder and thrown away,
    and ``plots`` names the files that would have been written.
    """
    if not paths:
        raise MpsocksError("no capture file given")
    for directory in (plot_dir, xplot_dir):
        if directory is not None and os.path.exists(directory) and not os.path.isdir(directory):
            raise MpsocksError("%s: not a directory" % directory)
    scratch = tempfile.mkdtemp(prefix="mpsocks-trace-") if plot_dir or xplot_dir else None
    try:
        analysis = _Analysis(SequenceLog(scratch) if scratch else None)
        for index, path in enumerate(paths):
            analysis.read(index, str(path))
        report = analysis.report()
        report["plots"] = []
        if scratch:
            targets = {"png": plot_dir, "xpl": xplot_dir}
            drawn = targets
            if check_mode:
                drawn = {kind: target and os.path.join(scratch, kind) for kind, target in targets.items()}
            for path in write_plots(analysis.log, analysis.plot_series(), drawn["png"], drawn["xpl"]):
                kind = path.rsplit(".", 1)[1]
                report["plots"].append(os.path.join(str(targets[kind]), os.path.basename(path)))
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return report


class _Analysis:
    """The state of one analysis over several files."""

    def __init__(self, log):
        self.log = log
        self.files = []
        self.flows = []  # flows with a handshake or an MPTCP connection, in order of first packet
        self.connections = []
        self.by_token = {}
        self.fallbacks = []

    # Reading ------------------------------------------------------------------------------------

    def read(self, file_index, path):
        """Read the capture at PATH, the FILE_INDEXth, in one pass."""
        capture = Capture(path)
        stats = {"path": path, "format": capture.format, "link_types": [], "frames": 0, "not_ip": 0,
                 "tcp": 0, "not_tcp": 0, "truncated": 0, "headers_cut": 0, "first_time": None,
                 "last_time": None}
        self.files.append(stats)
        sides = {}
        tcp = not_tcp = truncated = cut = 0
        first = None
        control = self._control
        mptcp = self._mptcp
        midstream = self._midstream_mptcp
        other_ttl = self._other_ttl
        timestamp = None
        for timestamp, _interface, data, missing in capture:
            if first is None:
                first = timestamp
            if missing:
                truncated += 1
            segment = parse_tcp(data, missing)
            if not segment:
                if segment is None:
                    not_tcp += 1
                else:
                    cut += 1
                continue
            tcp += 1
            key, ttl, seq, ack, flags, window, payload, options, complete = segment
            side = sides.get(key)
            if side is None or flags & 0x07:  # new flow, or SYN, FIN, RST
                side = control(file_index, sides, side, timestamp, segment)
            side.packets += 1
            side.bytes += payload
            side.last_time = timestamp
            if ttl != side.ttl:
                other_ttl(side, timestamp, ttl, flags)
            if side.connection is not None:
                if not flags & SYN:
                    mptcp(side, timestamp, seq, payload, options, complete)
            elif options and 30 in options and not flags & SYN:
                midstream(side, timestamp, seq, payload, options, complete)
        stats.update(link_types=sorted(capture.link_types), frames=capture.frames, not_ip=capture.not_ip,
                     tcp=tcp, not_tcp=not_tcp, truncated=truncated, headers_cut=cut, first_time=first,
                     last_time=timestamp)

    def _control(self, file_index, sides, side, timestamp, segment):
        """The side that sent SEGMENT (created if new); handles SYN, SYN/ACK, FIN and RST."""
        key, ttl, seq, _ack, flags, _window, _payload, options, _complete = segment
        if flags & SYN and not flags & ACK:
            return self._syn(file_index, sides, side, timestamp, key, ttl, seq, options)
        if side is None:
            side = self._new_flow(file_index, sides, key, timestamp, client=None)
        flow = side.flow
        if flags & SYN:
            if not side.client:
                self._synack(side, timestamp, ttl, seq, options)
        elif flags & RST:
            flow.closed = True
            if not side.client and not flow.answered and flow.handshake and flow.handshake["reset"] is None:
                flow.handshake["reset"] = {"time": timestamp, "ttl": ttl, "hops": initial_ttl(ttl) - ttl}
        elif flags & FIN:
            flow.closed = True
        return side

    def _new_flow(self, file_index, sides, key, timestamp, client):
        """A flow whose first packet (key KEY) came from its client (CLIENT true), its server, or
        either (None: the side with the higher port is taken as the client)."""
        if client is None:
            sport, dport = key_parts(key)[3:]
            client = sport >= dport
        flow_key = key if client else reverse_key(key)
        flow = _Flow(file_index, flow_key, timestamp)
        sides[flow_key] = flow.client
        sides[reverse_key(flow_key)] = flow.server
        return flow.client if client else flow.server

    def _syn(self, file_index, sides, side, timestamp, key, ttl, seq, raw_options):
        options = parse_options(raw_options)
        capable = _first(options["mptcp"], MP_CAPABLE)
        join = _first(options["mptcp"], MP_JOIN)
        if side is not None and side.client and side.flow.handshake is not None:
            flow = side.flow
            syn = flow.handshake["syn"]
            if seq == syn["isn"] or not (flow.answered or flow.closed):
                syn["attempts"] += 1
                if capable is not None:
                    syn["mptcp_attempts"] += 1
                elif syn["mptcp_attempts"]:
                    syn["mptcp_dropped_on_retry"] = True
                return side
        side = self._new_flow(file_index, sides, key, timestamp, client=True)
        flow = side.flow
        family = key_parts(key)[0]
        side.isn = seq
        side.wscale = options["wscale"]
        flow.syn_mptcp = capable or join
        flow.handshake = {
            "file": file_index, "family": "ipv%d" % family,
            "client": _endpoint(key, 0), "server": _endpoint(key, 1), "connection": None,
            "syn": dict(_header_fields(timestamp, seq, ttl, options), mptcp=capable is not None,
                        mptcp_version=capable["version"] if capable else None, mp_join=join is not None,
                        attempts=1, mptcp_attempts=1 if capable else 0, mptcp_dropped_on_retry=False),
            "synack": None, "reset": None,
        }
        self._list(flow)
        if join is not None and join["token"] is not None:
            self._join_syn(flow, join)
        return side

    def _synack(self, side, timestamp, ttl, seq, raw_options):
        flow = side.flow
        handshake = flow.handshake
        if handshake is not None and handshake["synack"] is not None:
            handshake["synack"]["count"] += 1
            return
        options = parse_options(raw_options)
        capable = _first(options["mptcp"], MP_CAPABLE)
        join = _first(options["mptcp"], MP_JOIN)
        flow.answered = True
        side.isn = seq
        side.wscale = options["wscale"]
        if handshake is not None:
            syn_time = handshake["syn"]["time"]
            handshake["synack"] = dict(
                _header_fields(timestamp, seq, ttl, options), mptcp=capable is not None,
                mptcp_version=capable["version"] if capable else None, mp_join=join is not None, count=1,
                rtt_ms=round((timestamp - syn_time) * 1000, 3))
        if capable is not None:
            self._capable_synack(side, capable)
        elif join is not None and flow.client.connection is not None:
            flow.established = True
            flow.backup = flow.backup or bool(join.get("backup"))
        elif flow.syn_mptcp is not None and flow.syn_mptcp["subtype"] == MP_CAPABLE:
            flow.fallback = "the SYN/ACK came without MP_CAPABLE"
            self._fallback(flow, None, timestamp, flow.fallback)

    # MPTCP ----------------------------------------------------------------------------------------

    def _new_connection(self, version):
        connection = _Connection(len(self.connections), version)
        self.connections.append(connection)
        return connection

    def _attach(self, flow, connection, kind, reversed_ends=False):
        """Make FLOW a subflow of CONNECTION; REVERSED_ENDS when its client is the connection's server.

        A subflow already seen in another capture (same addresses, ports and ISN) is counted once: FLOW
        then only feeds the plots, under the first one's number.
        """
        flow.kind = kind
        flow.client.connection = flow.server.connection = connection
        flow.client.direction = S2C if reversed_ends else C2S
        flow.server.direction = C2S if reversed_ends else S2C
        seen = [other for other in connection.subflows
                if other.key == flow.key and other.file != flow.file and other.client.isn == flow.client.isn]
        if seen:
            flow.index = seen[0].index
        else:
            flow.index = len(connection.subflows)
            connection.subflows.append(flow)
        if flow.handshake is not None:
            flow.handshake["connection"] = connection.id
        self._list(flow)

    def _list(self, flow):
        """Keep FLOW for the report (flows with neither handshake nor anything to say are dropped)."""
        if not flow.listed:
            flow.listed = True
            self.flows.append(flow)

    def _learn_key(self, connection, end, key):
        """Record KEY as the key of the connection's client (END 0) or server (END 1)."""
        if key is None or connection.keys[end] is not None:
            return
        connection.keys[end] = key
        token, idsn = key_token(key, connection.version)
        connection.tokens[end] = token
        if connection.idsn[end] is None:
            connection.idsn[end] = idsn
        placeholder = self.by_token.get(token)
        if placeholder is not None and placeholder is not connection:
            # subflows joined (in an earlier capture) before their connection was seen: their MP_JOIN
            # SYN went to this end
            for flow in placeholder.subflows:
                self._attach(flow, connection, flow.kind, reversed_ends=end == 0)
            placeholder.subflows = []
        self.by_token[token] = connection

    def _capable_synack(self, side, capable):
        flow = side.flow
        syn = flow.syn_mptcp
        syn_capable = syn if syn is not None and syn["subtype"] == MP_CAPABLE else None
        connection = side.connection
        if connection is None:
            connection = self._new_connection(capable["version"])
            connection.handshake_seen = flow.handshake is not None
            connection.checksum = bool(capable["checksum"] or (syn_capable and syn_capable["checksum"]))
            self._attach(flow, connection, "initial")
        flow.established = True
        self._learn_key(connection, 1, capable["sender_key"])
        if syn_capable is not None:
            self._learn_key(connection, 0, syn_capable.get("sender_key"))

    def _join_syn(self, flow, join):
        token = join["token"]
        connection = self.by_token.get(token)
        if connection is None:  # the connection's own handshake was not captured
            connection = self._new_connection(None)
            connection.tokens[1] = token
            self.by_token[token] = connection
            self._attach(flow, connection, "join")
        else:
            self._attach(flow, connection, "join", reversed_ends=token == connection.tokens[0])
        flow.backup = bool(join["backup"])
        flow.address_id = join["address_id"]

    def _midstream_mptcp(self, side, timestamp, seq, payload, options, complete):
        """An MPTCP option on a flow not (yet) part of a connection."""
        flow = side.flow
        found = mptcp_options(options)
        if not found or flow.fallback:
            return
        capable = _first(found, MP_CAPABLE)
        if capable is not None and capable.get("receiver_key") is not None:
            # the third ACK (or first data) of a handshake whose SYN/ACK was not captured
            client_key, server_key = capable["sender_key"], capable["receiver_key"]
            if not side.client:
                client_key, server_key = server_key, client_key
            connection = self._new_connection(capable["version"])
            connection.checksum = capable["checksum"]
            self._attach(flow, connection, "initial")
            flow.established = True
            self._learn_key(connection, 0, client_key)
            self._learn_key(connection, 1, server_key)
        elif flow.handshake is None and _first(found, DSS) is not None:
            # a subflow captured after its handshake: its connection cannot be told
            connection = self._new_connection(None)
            self._attach(flow, connection, "unknown")
            flow.established = True
        else:
            return
        self._mptcp(side, timestamp, seq, payload, options, complete)

    def _mptcp(self, side, timestamp, seq, payload, options, complete):
        """A non-SYN segment of an MPTCP subflow."""
        found = mptcp_options(options) if options else ()
        if not found:
            if payload and complete:
                if not side.plain_since:
                    side.plain_first = timestamp
                side.plain_since += 1
            return
        side.plain_since = 0
        side.mptcp_seen = True
        connection = side.connection
        for option in found:
            subtype = option["subtype"]
            if option.get("malformed"):
                continue
            if subtype == DSS:
                self._dss(side, connection, timestamp, seq, payload, option)
            elif subtype == MP_CAPABLE:
                if option["receiver_key"] is not None:
                    sender, receiver = (0, 1) if side.direction == C2S else (1, 0)
                    self._learn_key(connection, sender, option["sender_key"])
                    self._learn_key(connection, receiver, option["receiver_key"])
            elif subtype == ADD_ADDR:
                entry = {"direction": DIRECTIONS[side.direction], "address_id": option["address_id"],
                         "address": option["address"], "port": option["port"], "echo": option["echo"]}
                _remember(connection.add_addr, entry, timestamp)
            elif subtype == REMOVE_ADDR:
                entry = {"direction": DIRECTIONS[side.direction], "address_ids": option["address_ids"]}
                _remember(connection.remove_addr, entry, timestamp)
            elif subtype == MP_PRIO:
                side.flow.backup = option["backup"]
            elif subtype == MP_FAIL:
                connection.mp_fail += 1
            elif subtype == MP_FASTCLOSE:
                connection.fastclose = True
            elif subtype == MP_TCPRST:
                side.flow.reset_reason = option["reason"]
            elif subtype == MP_JOIN and option["form"] == "ack":
                side.flow.established = True

    def _dss(self, side, connection, timestamp, seq, payload, option):
        direction = side.direction
        if option["data_fin"]:
            connection.data_fin[direction] = True
        if option["dsn"] is not None:
            if not option["data_length"]:
                side.flow.fallback = side.flow.fallback or "infinite mapping"
                self._fallback(side.flow, connection, timestamp, "infinite mapping (DSS data-level length 0)")
            side.mapping = (option["dsn"], option["dsn64"], option["ssn"], option["data_length"])
        log = self.log
        if log is None:
            return
        index = side.flow.index
        if option["data_ack"] is not None:
            acked = 1 - direction
            value = self._relative(connection, acked, option["data_ack"], option["data_ack64"])
            log.ack(connection.id, acked, index, timestamp, value)
        mapping = side.mapping
        if payload and mapping is not None:
            dsn, dsn64, ssn, length = mapping
            offset = 0
            if side.isn is not None:
                offset = ((seq - side.isn) & MASK32) - ssn
                if not 0 <= offset < max(length, 1):
                    return
            first = (dsn + offset) & (MASK64 if dsn64 else MASK32)
            start = self._relative(connection, direction, first, dsn64)
            log.segment(connection.id, direction, index, timestamp, start, start + payload)

    def _relative(self, connection, direction, value, wide):
        """VALUE, a 32- or 64-bit (WIDE) data sequence number, relative to the direction's IDSN."""
        base = connection.idsn[direction]
        if base is None:  # no key seen: count from the first number met
            base = connection.idsn[direction] = (value - 1) & (MASK64 if wide else MASK32)
        if wide:
            relative = ((value - base + (1 << 63)) & MASK64) - (1 << 63)
        else:
            low = (value - base) & MASK32
            last = connection.last_dsn[direction]
            relative = low + ((last - low + (1 << 31)) >> 32 << 32)
        connection.last_dsn[direction] = relative
        return relative

    def _fallback(self, flow, connection, timestamp, reason):
        if connection is not None:
            if connection.fallback is not None:
                return
            connection.fallback = {"reason": reason, "time": timestamp}
        self.fallbacks.append({"file": flow.file, "client": _endpoint(flow.key, 0),
                               "server": _endpoint(flow.key, 1),
                               "connection": connection.id if connection else None,
                               "reason": reason, "time": timestamp})

    # Hop distances ------------------------------------------------------------------------------

    def _other_ttl(self, side, timestamp, ttl, flags):
        """A packet of SIDE with another TTL than its first: injected if from another distance."""
        hops = initial_ttl(ttl) - ttl
        if side.ttl < 0:
            side.ttl, side.hops = ttl, hops
            return
        if hops == side.hops:
            return
        group = (side.client, ttl, flags_text(flags))
        entry = side.flow.injected.get(group)
        if entry is None:
            flow = side.flow
            entry = flow.injected[group] = {
                "file": flow.file, "client": _endpoint(flow.key, 0), "server": _endpoint(flow.key, 1),
                "direction": "client-to-server" if side.client else "server-to-client",
                "flags": group[2], "ttl": ttl, "hops": hops, "expected_hops": side.hops, "packets": 0,
                "time": timestamp,
            }
            self._list(flow)
        entry["packets"] += 1

    # Report ----------------------------------------------------------------------------------------

    def report(self):
        """The analysis as plain data (see the module docstring)."""
        for connection in self.connections:
            for flow in connection.subflows:
                self._check_dss_stopped(flow, connection)
        handshakes = [flow.handshake for flow in self.flows if flow.handshake is not None]
        injected = [entry for flow in self.flows for entry in flow.injected.values()]
        connections = [_connection_report(c) for c in self.connections if c.subflows]
        report = {
            "files": self.files,
            "handshakes": handshakes,
            "connections": connections,
            "fallbacks": self.fallbacks,
            "injected": injected,
        }
        report["middlebox"] = middlebox_verdict(handshakes, injected, [f["path"] for f in self.files])
        return report

    def _check_dss_stopped(self, flow, connection):
        """Fall back if the last data segments of a side of an established subflow had no DSS."""
        for side in (flow.client, flow.server):
            if side.plain_since and (side.mptcp_seen or flow.established):
                reason = "DSS stopped: the last %d data segments from the %s had no MPTCP option" % (
                    side.plain_since, "client" if side.direction == C2S else "server")
                flow.fallback = flow.fallback or reason
                self._fallback(flow, connection, side.plain_first, reason)
                return

    def plot_series(self):
        """[(connection id, direction, title, [subflow label])] for every connection and direction."""
        series = []
        for connection in self.connections:
            if not connection.subflows:
                continue
            ends = connection.subflows[0]
            labels = ["subflow %d: %s" % (index, _flow_label(flow, flow.client.direction == S2C))
                      for index, flow in enumerate(connection.subflows)]
            for direction, name in ((C2S, "c2s"), (S2C, "s2c")):
                title = "MPTCP connection %d %s: %s" % (
                    connection.id, name, _flow_label(ends, direction == S2C))
                series.append((connection.id, direction, name, title, labels))
        return series


def _first(options, subtype):
    """The first well-formed MPTCP option of SUBTYPE in OPTIONS, or None."""
    for option in options:
        if option["subtype"] == subtype and not option.get("malformed"):
            return option
    return None


def _remember(entries, entry, timestamp):
    """Append ENTRY (with TIMESTAMP) to ENTRIES unless already there or ENTRIES is full."""
    if len(entries) < MAX_ADDRESS_EVENTS and not any(
            all(old[name] == value for name, value in entry.items()) for old in entries):
        entries.append(dict(entry, time=timestamp))


def _endpoint(key, end):
    """{address, port} of the sender (END 0) or receiver (END 1) of flow KEY."""
    parts = key_parts(key)
    return {"address": address_text(parts[1 + end]), "port": parts[3 + end]}


def _flow_label(flow, reverse=False):
    client, server = _endpoint(flow.key, 0), _endpoint(flow.key, 1)
    if reverse:
        client, server = server, client
    return "%s -> %s" % (_address_port(client), _address_port(server))


def _address_port(endpoint):
    address = endpoint["address"]
    return ("[%s]:%d" if ":" in address else "%s:%d") % (address, endpoint["port"])


def _header_fields(timestamp, seq, ttl, options):
    initial = initial_ttl(ttl)
    return {"time": timestamp, "isn": seq, "ttl": ttl, "initial_ttl": initial, "hops": initial - ttl,
            "mss": options["mss"], "wscale": options["wscale"], "sack_permitted": options["sack_permitted"],
            "timestamps": options["timestamp"] is not None}


def _connection_report(connection):
    subflows = connection.subflows
    first = subflows[0]
    reverse = first.client.direction == S2C
    totals = [0, 0]
    for flow in subflows:
        for side in (flow.client, flow.server):
            totals[side.direction] += side.bytes
    total = sum(totals)
    report = {
        "id": connection.id,
        "version": connection.version,
        "checksum": connection.checksum,
        "client": _endpoint(first.key, 1 if reverse else 0),
        "server": _endpoint(first.key, 0 if reverse else 1),
        "client_key": connection.keys[0], "server_key": connection.keys[1],
        "client_token": connection.tokens[0], "server_token": connection.tokens[1],
        "handshake_seen": connection.handshake_seen,
        "first_time": min(flow.first_time for flow in subflows),
        "last_time": max(side.last_time or flow.first_time for flow in subflows
                         for side in (flow.client, flow.server)),
        "bytes": {"client_to_server": totals[C2S], "server_to_client": totals[S2C]},
        "subflows": [],
        "add_addr": connection.add_addr,
        "remove_addr": connection.remove_addr,
        "data_fin": {"client": connection.data_fin[C2S], "server": connection.data_fin[S2C]},
        "fastclose": connection.fastclose,
        "mp_fail": connection.mp_fail,
        "fallback": connection.fallback,
    }
    for index, flow in enumerate(subflows):
        reverse = flow.client.direction == S2C
        ends = (flow.server, flow.client) if reverse else (flow.client, flow.server)
        flow_bytes = ends[0].bytes + ends[1].bytes
        report["subflows"].append({
            "index": index,
            "file": flow.file,
            "family": "ipv%d" % key_parts(flow.key)[0],
            "kind": flow.kind,
            "established": flow.established,
            "backup": flow.backup,
            "address_id": flow.address_id,
            "client": _endpoint(flow.key, 1 if reverse else 0),
            "server": _endpoint(flow.key, 0 if reverse else 1),
            "wscale": {"client": ends[0].wscale, "server": ends[1].wscale},
            "bytes": {"client_to_server": ends[0].bytes, "server_to_client": ends[1].bytes},
            "packets": {"client_to_server": ends[0].packets, "server_to_client": ends[1].packets},
            "share": round(flow_bytes / total, 4) if total else 0.0,
            "first_time": flow.first_time,
            "last_time": max(side.last_time or flow.first_time for side in ends),
            "reset_reason": flow.reset_reason,
            "fallback": flow.fallback,
        })
    return report


# Middlebox verdict --------------------------------------------------------------------------------

#: Verdicts that name a middlebox, strongest first: the overall verdict is the first one found.
_MIDDLEBOX_VERDICTS = ("terminating-proxy", "mptcp-stripped", "mptcp-blocked")


def middlebox_verdict(handshakes, injected, paths):
    """{verdict, evidence[], findings[]} from the HANDSHAKES and INJECTED packets of captures PATHS.

    Handshakes are compared per server address (SYN/ACKs of plain and MPTCP SYNs, unanswered
    SYNs), and the same handshake seen in two captures (same ports and ISN) is compared between
    the two capture points.
    """
    by_server = {}
    for handshake in handshakes:
        if not handshake["syn"]["mp_join"]:
            by_server.setdefault(handshake["server"]["address"], []).append(handshake)
    findings = []
    for server, group in by_server.items():
        findings.extend(_server_findings(server, group))
    findings.extend(_capture_point_findings(handshakes, paths))
    found = [finding["verdict"] for finding in findings]
    verdict = next((name for name in _MIDDLEBOX_VERDICTS if name in found), None)
    injected_evidence = [_injected_sentence(entry, findings) for entry in injected]
    if verdict is None:
        verdict = "unknown" if injected_evidence or "none" not in found else "none"
    order = {name: rank for rank, name in enumerate(_MIDDLEBOX_VERDICTS)}
    ranked = sorted(findings, key=lambda finding: order.get(finding["verdict"], len(order)))
    evidence = [sentence for finding in ranked for sentence in finding["evidence"]] + injected_evidence
    if not evidence:
        evidence = ["no handshake carried MP_CAPABLE: nothing to compare MPTCP with" if handshakes
                    else "no TCP handshake in the capture"]
    return {"verdict": verdict, "evidence": evidence, "findings": findings}


def _mode(values):
    """The most frequent of VALUES (the smallest among equals)."""
    return max(sorted(set(values), key=lambda value: (value is None, value)), key=values.count)


def _answer_text(synacks):
    hops = _mode([synack["hops"] for synack in synacks])
    ttl = _mode([synack["ttl"] for synack in synacks if synack["hops"] == hops])
    return hops, "%d hops away (TTL %d, initial %d)" % (hops, ttl, initial_ttl(ttl))


def _options_text(synack):
    return "MSS %s, window scale %s" % (synack["mss"], synack["wscale"])


def _server_findings(server, group):
    plain = [h["synack"] for h in group if not h["syn"]["mptcp"] and h["synack"]]
    mptcp = [h["synack"] for h in group if h["syn"]["mptcp"] and h["synack"] and h["synack"]["mptcp"]]
    stripped = [h for h in group if h["syn"]["mptcp"] and h["synack"] and not h["synack"]["mptcp"]
                and not h["syn"]["mptcp_dropped_on_retry"]]
    retried = [h for h in group if h["syn"]["mptcp_dropped_on_retry"] and h["synack"]
               and not h["synack"]["mptcp"]]
    unanswered = [h for h in group if h["syn"]["mptcp"] and not h["synack"]]
    findings = []

    def finding(verdict, *sentences):
        findings.append({"server": server, "verdict": verdict, "evidence": list(sentences)})

    mptcp_hops = None
    if mptcp:
        mptcp_hops, mptcp_text = _answer_text(mptcp)
    if plain and mptcp:
        plain_hops, plain_text = _answer_text(plain)
        reasons = []
        if plain_hops < mptcp_hops:
            reasons.append(
                "plain-TCP SYN/ACKs from %s come from %s, MPTCP ones from %s: a box %d hops closer than "
                "the server answers plain TCP" % (server, plain_text, mptcp_text, mptcp_hops - plain_hops))
        elif plain_hops != mptcp_hops or initial_ttl(plain[0]["ttl"]) != initial_ttl(mptcp[0]["ttl"]):
            reasons.append("plain-TCP SYN/ACKs from %s come from %s, MPTCP ones from %s: another box answers"
                           % (server, plain_text, mptcp_text))
        plain_options = {_options_text(synack) for synack in plain}
        mptcp_options_seen = {_options_text(synack) for synack in mptcp}
        if plain_options != mptcp_options_seen:
            reasons.append("the plain-TCP SYN/ACKs from %s carry %s, the MPTCP ones %s" % (
                server, " or ".join(sorted(plain_options)), " or ".join(sorted(mptcp_options_seen))))
        if reasons:
            finding("terminating-proxy", *reasons)
        else:
            finding("none", "plain-TCP and MPTCP SYN/ACKs from %s come from the same box, %s, with the same "
                            "options" % (server, mptcp_text))
    elif mptcp:
        finding("none", "%d MP_CAPABLE SYN%s to %s answered with MP_CAPABLE from %s"
                % (len(mptcp), "s" if len(mptcp) > 1 else "", server, mptcp_text))
    if stripped:
        answered = "%d MP_CAPABLE SYN%s to %s answered without MP_CAPABLE" % (
            len(stripped), "s were" if len(stripped) > 1 else " was", server)
        if mptcp:
            finding("mptcp-stripped", "%s, though %s answered %d others with it"
                    % (answered, server, len(mptcp)))
        else:
            finding("unknown", "%s: the server does not speak MPTCP, or a box removed the option; nothing "
                               "here tells which" % answered)
    blocked = []
    for handshake in retried:
        syn, target = handshake["syn"], _address_port(handshake["server"])
        blocked.append("%d SYNs with MP_CAPABLE to %s got no answer, the retry without it was answered from "
                       "%d hops" % (syn["mptcp_attempts"], target, handshake["synack"]["hops"]))
    for handshake in unanswered:
        syn, target = handshake["syn"], _address_port(handshake["server"])
        if mptcp_hops is not None and syn["ttl"] < mptcp_hops:
            finding("unknown", "SYNs to %s left with TTL %d, less than the %d hops to the MPTCP server: "
                               "they expired on the way" % (target, syn["ttl"], mptcp_hops))
        elif plain:
            plain_hops, plain_text = _answer_text(plain)
            sentence = ("%d SYNs with MP_CAPABLE to %s got no answer while plain-TCP SYNs to it were "
                        "answered from %s" % (syn["mptcp_attempts"], target, plain_text))
            if syn["ttl"] > plain_hops:
                sentence += ("; they left with TTL %d: if the server is farther than that they expired on "
                             "the way, and the plain-TCP answer came from a closer box" % syn["ttl"])
            blocked.append(sentence)
        else:
            finding("unknown", "no answer to the %d SYNs to %s (%d with MP_CAPABLE%s): nothing reached it, "
                               "nothing to compare" % (
                                   syn["attempts"], target, syn["mptcp_attempts"],
                                   ", the last without" if syn["mptcp_dropped_on_retry"] else ""))
    if blocked:
        finding("mptcp-blocked", *blocked)
    return findings


def _capture_point_findings(handshakes, paths):
    """Handshakes seen in two captures (same server, ports and ISN) whose MPTCP options differ."""
    seen = {}
    findings = []
    for handshake in handshakes:
        same = (handshake["server"]["address"], handshake["server"]["port"], handshake["client"]["port"],
                handshake["syn"]["isn"])
        other = seen.setdefault(same, handshake)
        if other is handshake or other["file"] == handshake["file"]:
            continue
        for packet in ("syn", "synack"):
            first, second = other[packet], handshake[packet]
            if first and second and first["mptcp"] != second["mptcp"]:
                having, lacking = (other, handshake) if first["mptcp"] else (handshake, other)
                sentence = "the %s of %s has MP_CAPABLE in %s but not in %s: removed between the two " \
                           "capture points" % ("SYN" if packet == "syn" else "SYN/ACK", _flow_text(having),
                                               paths[having["file"]], paths[lacking["file"]])
                findings.append({"server": handshake["server"]["address"], "verdict": "mptcp-stripped",
                                 "evidence": [sentence]})
    return findings


def _flow_text(entry):
    return "%s -> %s" % (_address_port(entry["client"]), _address_port(entry["server"]))


def _injected_sentence(entry, findings):
    several = entry["packets"] > 1
    sentence = ("%d %s packet%s %s in %s came with TTL %d (%d hops away) where the rest of that side came "
                "from %d hops: another box sent %s" % (
                    entry["packets"], entry["flags"], "s" if several else "",
                    "from the server" if entry["direction"] == "server-to-client" else "from the client",
                    _flow_text(entry), entry["ttl"], entry["hops"], entry["expected_hops"],
                    "them" if several else "it"))
    for finding in findings:
        if (finding["verdict"] == "terminating-proxy" and finding["server"] == entry["server"]["address"]
                and " from %d hops away" % entry["hops"] in finding["evidence"][0]):
            sentence += ", as far away as the box that answers plain TCP: probably the same box"
    return sentence


# The table ----------------------------------------------------------------------------------------


def _yes(value):
    return "yes" if value else "no"


def _table(rows):
    """Lines of ROWS (lists of strings) in left-aligned columns."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def format_report(report):
    """REPORT (what analyze() returns) as a plain-text table for people."""
    lines = []
    paths = [stats["path"] for stats in report["files"]]
    for stats in report["files"]:
        lines.append("%s: %s, %s, %d frames, %d TCP segments, %d cut by the snaplen%s" % (
            stats["path"], stats["format"], "/".join(stats["link_types"]) or "no link type", stats["frames"],
            stats["tcp"], stats["truncated"],
            ", %d with their headers cut" % stats["headers_cut"] if stats["headers_cut"] else ""))
    lines.append("")
    lines.append("Handshakes")
    if report["handshakes"]:
        rows = [["client", "server", "SYN ttl", "mss", "ws", "mptcp", "tries",
                 "SYN/ACK ttl/hops", "mss", "ws", "mptcp"]]
        for handshake in report["handshakes"]:
            syn, synack = handshake["syn"], handshake["synack"]
            kind = "join" if syn["mp_join"] else "v%d" % syn["mptcp_version"] if syn["mptcp"] else "no"
            if syn["mptcp_dropped_on_retry"]:
                kind += ", dropped on retry"
            row = [_address_port(handshake["client"]), _address_port(handshake["server"]),
                   str(syn["ttl"]), str(syn["mss"]), str(syn["wscale"]), kind,
                   str(syn["attempts"])]
            if synack:
                answer = "join" if synack["mp_join"] else "no"
                if synack["mptcp"]:
                    answer = "v%d" % synack["mptcp_version"]
                row += ["%d/%d" % (synack["ttl"], synack["hops"]), str(synack["mss"]), str(synack["wscale"]),
                        answer]
            elif handshake["reset"]:
                row += ["RST %d/%d" % (handshake["reset"]["ttl"], handshake["reset"]["hops"]), "", "", ""]
            else:
                row += ["no answer", "", "", ""]
            if len(paths) > 1:
                row.append(paths[handshake["file"]])
            rows.append(row)
        if len(paths) > 1:
            rows[0].append("file")
        lines.extend(_table(rows))
    else:
        lines.append("  none")
    lines.append("")
    lines.append("MPTCP connections")
    if not report["connections"]:
        lines.append("  none")
    for connection in report["connections"]:
        lines.append("  MPTCP connection %d, version %s, %s -> %s, tokens %s/%s, bytes %d/%d%s" % (
            connection["id"], connection["version"] if connection["version"] is not None else "?",
            _address_port(connection["client"]), _address_port(connection["server"]),
            connection["client_token"], connection["server_token"],
            connection["bytes"]["client_to_server"], connection["bytes"]["server_to_client"],
            ", fell back to TCP: %s" % connection["fallback"]["reason"] if connection["fallback"] else ""))
        for subflow in connection["subflows"]:
            wscale = subflow["wscale"]
            client, server, sent = subflow["client"], subflow["server"], subflow["bytes"]
            lines.append("    Subflow %d (%s%s) with wscale : %s %s %s sport %d dport %d saddr %s daddr %s, "
                         "bytes %d/%d, share %.1f%%%s" % (
                             subflow["index"], subflow["kind"], ", backup" if subflow["backup"] else "",
                             wscale["client"], wscale["server"], subflow["family"].replace("ipv", "IPv"),
                             client["port"], server["port"], client["address"], server["address"],
                             sent["client_to_server"], sent["server_to_client"], subflow["share"] * 100,
                             ", fell back: %s" % subflow["fallback"] if subflow["fallback"] else ""))
    if report["fallbacks"]:
        lines.append("")
        lines.append("Fallbacks to TCP")
        for fallback in report["fallbacks"]:
            lines.append("  %s: %s" % (_flow_text(fallback), fallback["reason"]))
    if report["injected"]:
        lines.append("")
        lines.append("Injected packets")
        rows = [["client", "server", "direction", "flags", "ttl/hops", "expected hops", "packets"]]
        for entry in report["injected"]:
            rows.append([_address_port(entry["client"]), _address_port(entry["server"]), entry["direction"],
                         entry["flags"], "%d/%d" % (entry["ttl"], entry["hops"]), str(entry["expected_hops"]),
                         str(entry["packets"])])
        lines.extend(_table(rows))
    lines.append("")
    lines.append("Middlebox verdict: %s" % report["middlebox"]["verdict"])
    lines.extend("  - %s" % sentence for sentence in report["middlebox"]["evidence"])
    if report.get("plots"):
        lines.append("")
        lines.append("Plots: %s" % ", ".join(report["plots"]))
    return "\n".join(lines)
