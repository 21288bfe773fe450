"""``mpsocks-run capture``: every uplink of what ``up`` made, at once, into one pcapng file.

The capture is the collection's (``module_utils/trace_capture.py``, dumpcap on every interface), the same
the ``trace_capture`` module and ``playbooks/capture.yml`` run; this verb finds the interfaces and their
namespace in the record ``up`` wrote, and stops on Ctrl-C or after ``--seconds``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ansible_collections.mpsocks.mptcp.plugins.module_utils.addressing import TAP_PREFIX
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_capture import (
    DEFAULT_SNAPLEN,
    TraceCapture,
    format_result,
)

from mpsocks import stack
from mpsocks.playbook_run import EXIT_ERROR, EXIT_NOT_UP, EXIT_OK, EXIT_USAGE

PROG = "mpsocks-run"
_DESCRIPTION = """\
Capture on every uplink of what `mpsocks-run up` made (in the lab's host namespace for a lab), all at
once, into one pcapng file in time order that names each packet's interface: one MPTCP subflow per
uplink, as bash mpsocks' tcpdump per uplink and mergecap did. --guest-links adds the host's links to the
guest (mptcp0, mptcp1 ...), where the traffic is seen before NAT. It runs until Ctrl-C or --seconds,
then prints the file and its packets per interface; `mpsocks-run analyze FILE` reads it.

Exit status: 0 when the file is written (Ctrl-C included), 3 when nothing is up, 5 on bad input
(nothing captured), 1 when dumpcap fails."""
_EXAMPLES = """\
examples:
  mpsocks-run capture --seconds 20 -o uplinks.pcapng
  mpsocks-run capture --snaplen 120 --guest-links      # until Ctrl-C
  mpsocks-run capture --seconds 10 -o c.pcapng && mpsocks-run analyze c.pcapng"""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def add_parser(verbs) -> argparse.ArgumentParser:
    """Register the ``capture`` verb on the subparsers object VERBS; returns its parser."""
    parser = verbs.add_parser(
        "capture", help="capture every uplink at once into one pcapng file (until Ctrl-C or --seconds)",
        description=_DESCRIPTION, epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=positive_int, metavar="N", help="stop after N seconds")
    parser.add_argument("--snaplen", type=positive_int, default=DEFAULT_SNAPLEN, metavar="BYTES",
                        help=f"bytes kept of each packet (default {DEFAULT_SNAPLEN}; bash mpsocks used 120)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="the pcapng file to write (default: mpsocks-capture-TIME.pcapng here)")
    parser.add_argument("--guest-links", action="store_true",
                        help="also capture on the host's links to the guest (mptcp0, mptcp1 ...)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(command=capture)
    return parser


def interfaces_of(recorded: stack.Stack, guest_links: bool) -> list[str]:
    """The uplinks of RECORDED in their order, then with GUEST_LINKS the links to the guest."""
    uplinks = [uplink if isinstance(uplink, str) else uplink["name"] for uplink in recorded.uplinks]
    return uplinks + ([f"{TAP_PREFIX}{index}" for index in range(len(uplinks))] if guest_links else [])


def capture(args: argparse.Namespace) -> int:
    """Capture until Ctrl-C (ARGS.cancel is set) or ARGS.seconds; print the result."""
    recorded = stack.load()
    if recorded is None or not stack.is_up(recorded):  # a record, but its up failed or was downed
        print(f"{PROG}: error: nothing is up: mpsocks-run up first, then capture its uplinks",
              file=sys.stderr, flush=True)
        return EXIT_NOT_UP
    output = args.output or time.strftime("mpsocks-capture-%Y%m%dT%H%M%SZ.pcapng", time.gmtime())
    job = TraceCapture({"interfaces": interfaces_of(recorded, args.guest_links), "netns": recorded.host_netns,
                        "seconds": args.seconds, "snaplen": args.snaplen, "output": output})
    try:
        job.validate()
    except MpsocksError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    where = f" in namespace {recorded.host_netns}" if recorded.host_netns else ""
    until = f"for {args.seconds} s" if args.seconds else "until Ctrl-C"
    try:
        job.start()
        print(f"{PROG}: capturing on {', '.join(job.interfaces)}{where} into {job.output} {until}",
              file=sys.stderr, flush=True)
        job.wait(args.cancel)
        result = job.stop()
    except MpsocksError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    print(json.dumps(result, indent=2) if args.json else format_result(result), flush=True)
    return EXIT_OK
