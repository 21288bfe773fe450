"""``mpsocks-run analyze``: TCP handshakes, MPTCP connections and middleboxes in packet captures.

The analysis is the collection's (``module_utils/trace_analysis.py``), the same the ``trace_info``
module runs on a managed host; this verb prints it as a table or as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_analysis import analyze as analyze_captures
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_analysis import format_report

PROG = "mpsocks-run"
#: Exit status when a capture file is missing, empty, cut short or not a capture.
EXIT_BAD_INPUT = 2
_DESCRIPTION = """\
Analyse pcap/pcapng captures (Ethernet, Linux cooked SLL/SLL2 as `tcpdump -i any` writes, raw IP;
IPv4 and IPv6; snaplen-cut packets) in one streaming pass: every TCP handshake (SYN and SYN/ACK TTL,
MSS, window scale, MP_CAPABLE, retries, hop distance of the box that answered), the MPTCP
connections and their subflows (as `mptcptrace -s` printed them), fallbacks to TCP, packets injected
by another box, and a middlebox verdict: none, terminating-proxy, mptcp-stripped, mptcp-blocked or
unknown. Several captures are compared (e.g. one made without MPTCP and one with it).

Exit status: 0 when the captures were analysed, 2 when a file is missing, empty, cut short or not a
capture (one line on stderr names it)."""
_EXAMPLES = """\
examples:
  mpsocks-run analyze nomptcp.pcap mptcp.pcap
  mpsocks-run analyze --json capture.pcapng | jq .middlebox
  mpsocks-run analyze --plot plots/ --xplot xpl/ all.pcap"""


def add_parser(verbs) -> argparse.ArgumentParser:
    """Register the ``analyze`` verb on the subparsers object VERBS; returns its parser."""
    parser = verbs.add_parser(
        "analyze", help="analyse packet captures: handshakes, MPTCP connections, middleboxes",
        description=_DESCRIPTION, epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="pcap or pcapng capture files")
    parser.add_argument("--json", action="store_true",
                        help="print the analysis as one JSON object (the trace_info module's return values)")
    parser.add_argument("--plot", type=Path, metavar="DIR",
                        help="write a PNG time-sequence plot per MPTCP connection and direction into DIR")
    parser.add_argument("--xplot", type=Path, metavar="DIR",
                        help="write the same plots as xplot.org .xpl files into DIR")
    parser.set_defaults(command=analyze)
    return parser


def analyze(args: argparse.Namespace) -> int:
    """Print the analysis of ARGS.files; 0 when done, EXIT_BAD_INPUT (one line on stderr) on bad input."""
    try:
        report = analyze_captures(args.files, plot_dir=args.plot, xplot_dir=args.xplot)
    except MpsocksError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    print(json.dumps(report, indent=2) if args.json else format_report(report), flush=True)
    return 0
