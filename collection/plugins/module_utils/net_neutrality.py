# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The seed's "net neutrality" study, run in a lab: is MPTCP treated differently on the way out?

The client is the guest of a proxy stack on the lab (``mpsocks-run up --lab NAME --backend netns``), as
the seed's client was its VM: its packets cross the host's NAT, so a SYN leaves the host with the
guest's TTL minus one. Each case sets the guest's default TTL, captures every uplink of the lab host
(``trace_capture``) while curl, plain or through ``mptcpize run``, fetches from the lab's servers, and
analyses the capture (``trace_analysis``):

- four requests to the check server, MPTCP off/on x TTL 10/64 (the seed's ``nomptcp_ttl10``,
  ``mptcp_ttl10``, ``mptcp_ttl64``, and ``nomptcp_ttl64`` it did not capture);
- two downloads from the download server, without and with MPTCP, at TTL 64.

Then all captures together give the middlebox verdict, and the report (``report.json``,
``report.md``) has the seed's table (SYN TTL, SYN/ACK TTL, answered, throughput), its two findings
as checked statements, and the verdict with its evidence. The guest's TTL is put back afterwards.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import subprocess
import time

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.lab import DEFAULTS as LAB_DEFAULTS
from ansible_collections.mpsocks.mptcp.plugins.module_utils.netns import netns_path, visiting
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_analysis import analyze
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_capture import TraceCapture

SCHEMA_VERSION = 1
TTL_PATH = "/proc/sys/net/ipv4/ip_default_ttl"
#: The seed captured 120 bytes of each packet: the headers and their options.
SNAPLEN = 120
#: (case, MPTCP, TTL): the requests to the check server, in the seed's names.
REQUESTS = (
    ("nomptcp_ttl10", False, 10),
    ("mptcp_ttl10", True, 10),
    ("nomptcp_ttl64", False, 64),
    ("mptcp_ttl64", True, 64),
)
#: (case, MPTCP): the downloads, at TTL 64.
DOWNLOADS = (("download_nomptcp", False), ("download_mptcp", True))
DOWNLOAD_TTL = 64
#: curl's summary of a transfer: status, bytes, seconds, bytes per second.
CURL_SUMMARY = "%{http_code} %{size_download} %{time_total} %{speed_download}"
REPORT_FILES = ("report.json", "report.md")


class Study:
    """One run of the study on lab ``params['lab']``; ``run()`` returns the report and writes it."""

    def __init__(self, params):
        self.lab = params.get("lab") or LAB_DEFAULTS["name"]
        self.guest = params.get("guest_netns") or "%s-guest" % self.lab
        self.output = os.path.abspath(params["output"]) if params.get("output") else None
        self.download_bytes = params.get("download_bytes") or 4 * 1024 * 1024
        self.timeout = params.get("timeout") or 8
        self.run_root = params.get("run_root") or LAB_DEFAULTS["run_root"]
        self.plan = None

    def validate(self):
        """Refuse bad input, naming it, before anything is changed; load the lab's plan."""
        plan_file = os.path.join(self.run_root, self.lab, "lab.json")
        try:
            with open(plan_file) as handle:
                self.plan = json.load(handle)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            message = "lab: no plan of a running lab %r in %s (%s): mpsocks-run lab up --name %s " \
                "--middlebox 0=optimizer first" % (self.lab, plan_file, reason, self.lab)
            raise MpsocksError(message) from None
        if not os.path.exists(netns_path(self.guest)):
            raise MpsocksError("guest_netns: namespace %r does not exist: mpsocks-run up --lab %s --backend "
                               "netns first" % (self.guest, self.lab))
        if not self.output:
            raise MpsocksError("output: give the folder for the captures and the report")
        if os.path.exists(self.output) and not os.path.isdir(self.output):
            raise MpsocksError("output: %s is not a folder" % self.output)
        parent = os.path.dirname(self.output)
        if not os.path.isdir(parent):
            raise MpsocksError("output: folder %s does not exist" % parent)
        if not (isinstance(self.download_bytes, int) and 1024 <= self.download_bytes <= 1 << 30):
            raise MpsocksError("download_bytes: %r is not a size from 1 KiB to 1 GiB"
                               % (self.download_bytes,))
        if not (isinstance(self.timeout, int) and 4 <= self.timeout <= 120):
            raise MpsocksError("timeout: %r is not a number of seconds from 4 to 120" % (self.timeout,))
        for program, package in (("curl", "curl"), ("mptcpize", "mptcpize")):
            if not shutil.which(program):
                raise MpsocksError("%s not found (Debian package %s)" % (program, package))
        self._capture(self.output + ".pcapng").validate()  # the uplinks, dumpcap; the folder is made later

    def done(self):
        """Whether OUTPUT already holds a report of this study."""
        return all(os.path.exists(os.path.join(self.output, name)) for name in REPORT_FILES)

    def files(self):
        """Every file the study writes into OUTPUT."""
        cases = [request[0] for request in REQUESTS] + [download[0] for download in DOWNLOADS]
        return [os.path.join(self.output, "%s.pcapng" % case) for case in cases] + [
            os.path.join(self.output, name) for name in REPORT_FILES]

    def _capture(self, output):
        """A capture of every uplink of the lab host into OUTPUT."""
        return TraceCapture({"interfaces": [uplink["name"] for uplink in self.plan["uplinks"]],
                             "netns": self.plan["host_netns"], "snaplen": SNAPLEN, "output": output})

    def run(self):
        """Every case, then the report; the guest's TTL is restored whatever happens."""
        if not os.path.isdir(self.output):
            os.mkdir(self.output)
        check = self.plan["servers"]["check"] + "?format=json"
        download = "%sbytes/%d" % (self.plan["servers"]["download"], self.download_bytes)
        saved_ttl = self._ttl()
        cases = []
        try:
            for case, mptcp, ttl in REQUESTS:
                cases.append(self._case(case, mptcp, ttl, check, "request"))
            for case, mptcp in DOWNLOADS:
                cases.append(self._case(case, mptcp, DOWNLOAD_TTL, download, "download"))
        finally:
            self._ttl(saved_ttl)
        captures = [item["capture"] for item in cases]
        middlebox = analyze(captures)["middlebox"]
        report = {
            "schema_version": SCHEMA_VERSION,
            "study": "net-neutrality",
            "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "lab": lab_summary(self.plan),
            "guest": self.guest,
            "cases": cases,
            "findings": findings(cases),
            "middlebox": middlebox,
        }
        for item in cases:  # the report travels with its captures: names relative to it
            item["capture"] = os.path.basename(item["capture"])
        with open(os.path.join(self.output, "report.json"), "w") as handle:
            json.dump(report, handle, indent=2, sort_keys=True)
            handle.write("\n")
        with open(os.path.join(self.output, "report.md"), "w") as handle:
            handle.write(format_markdown(report))
        return report

    def _ttl(self, value=None):
        """The guest's default TTL; set to VALUE when given."""
        with visiting(self.guest):
            if value is None:
                with open(TTL_PATH) as handle:
                    return int(handle.read())
            with open(TTL_PATH, "w") as handle:
                handle.write("%d\n" % value)
        return value

    def _case(self, case, mptcp, ttl, url, kind):
        """One case: TTL set, capture started, curl run, capture stopped and analysed."""
        self._ttl(ttl)
        job = self._capture(os.path.join(self.output, "%s.pcapng" % case))
        job.start()
        try:
            fetched = self._curl(url, mptcp)
        except BaseException:
            job.stop(kill=True)
            raise
        job.stop()
        handshake = first_handshake(analyze([job.output]), url)
        return case_result(case, kind, mptcp, ttl, job.output, fetched, handshake)

    def _curl(self, url, mptcp):
        """Fetch URL from the guest (through mptcpize with MPTCP): rc, status, bytes, seconds, rate, body."""
        argv = ["ip", "netns", "exec", self.guest] + (["mptcpize", "run"] if mptcp else []) + [
            "curl", "-sS", "--max-time", str(self.timeout), "-o", "-", "-w", "\n" + CURL_SUMMARY, url]
        started = time.monotonic()
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=self.timeout + 30,
                              check=False)
        body, summary = proc.stdout.rpartition(b"\n")[::2]
        fields = summary.decode("ascii", "replace").split()
        status, size, seconds, speed = fields if len(fields) == 4 else ("0", "0", "0", "0")
        return {
            "rc": proc.returncode, "status": int(status), "bytes": int(size),
            "seconds": round(float(seconds) or time.monotonic() - started, 3),
            "rate_mbit": round(float(speed) * 8 / 1e6, 2),
            "body": body[:512].decode("utf-8", "replace"),
            "error": proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or None,
        }


def lab_summary(plan):
    """What the report says of the lab: its name, hops and uplinks with their middleboxes."""
    return {
        "name": plan["name"],
        "hops": plan["hops"],
        "uplinks": [{key: uplink.get(key) for key in ("index", "name", "rate_mbit", "middlebox",
                                                      "optimizer_rate_mbit")}
                    for uplink in plan["uplinks"]],
        "servers": plan["servers"],
    }


def first_handshake(report, url):
    """The first initial-subflow handshake of REPORT towards URL's server, or None."""
    host = url.split("://", 1)[1].split("/", 1)[0]
    address, port = host.partition(":")[::2]
    wanted = (address, int(port or 80))
    for handshake in report["handshakes"]:
        if (handshake["server"]["address"], handshake["server"]["port"]) == wanted \
                and not handshake["syn"]["mp_join"]:
            return handshake
    return None


def case_result(case, kind, mptcp, ttl, capture, fetched, handshake):
    """A row of the study: what curl got and what the wire shows of its handshake."""
    syn = handshake["syn"] if handshake else None
    synack = handshake["synack"] if handshake else None
    result = {
        "case": case, "kind": kind, "mptcp": mptcp, "ttl": ttl, "capture": capture,
        "answered": fetched["rc"] == 0 and fetched["status"] == 200,
        "http_status": fetched["status"] or None,
        "seconds": fetched["seconds"],
        "error": fetched["error"][0] if fetched["error"] and fetched["rc"] != 0 else None,
        "syn": None if syn is None else {key: syn[key] for key in (
            "ttl", "hops", "mss", "wscale", "mptcp", "attempts", "mptcp_attempts", "mptcp_dropped_on_retry")},
        "synack": None if synack is None else {key: synack[key] for key in (
            "ttl", "hops", "mss", "wscale", "mptcp")},
    }
    if kind == "request":
        result["server_says"] = _check_answer(fetched["body"]) if result["answered"] else None
    else:
        result["bytes"] = fetched["bytes"]
        result["rate_mbit"] = fetched["rate_mbit"] if result["answered"] else None
    return result


def _check_answer(body):
    """The check server's JSON answer as ``{"mptcp": bool, "subflows": n}``, or None."""
    try:
        answer = json.loads(body)
        return {"mptcp": bool(answer["mptcp"]), "subflows": int(answer["subflows"])}
    except (ValueError, KeyError, TypeError):
        return None


def findings(cases):
    """The seed's two findings, each checked against the cases: ``[{claim, holds, evidence}]``."""
    by_case = {item["case"]: item for item in cases}
    plain, mptcp = by_case["nomptcp_ttl10"], by_case["mptcp_ttl10"]
    mptcp_syns_answered = bool(mptcp["synack"] and mptcp["synack"]["mptcp"])
    low_ttl = {
        "claim": "with TTL 10 a request reaches the (intercepting) box without MPTCP, not with it",
        "holds": plain["answered"] and plain["synack"] is not None and not mptcp_syns_answered,
        "evidence": [_ttl_sentence(plain), _ttl_sentence(mptcp)],
    }
    fast, slow = by_case["download_nomptcp"], by_case["download_mptcp"]
    rates = (fast.get("rate_mbit"), slow.get("rate_mbit"))
    download = {
        "claim": "the download is faster without MPTCP",
        "holds": all(rates) and rates[0] > rates[1],
        "evidence": ["without MPTCP %s, with MPTCP %s%s" % (
            _rate(rates[0]), _rate(rates[1]),
            " (%.2f times as fast without)" % (rates[0] / rates[1]) if all(rates) else "")],
    }
    return [low_ttl, download]


def _rate(value):
    return "%.1f Mbit/s" % value if value else "no download"


def _ttl_sentence(item):
    label = "%s (TTL %d)" % ("MPTCP" if item["mptcp"] else "without MPTCP", item["ttl"])
    syn, synack = item["syn"], item["synack"]
    if syn is None:
        return "%s: no SYN was captured" % label
    sent = "%d SYN%s with TTL %d" % (syn["attempts"], "" if syn["attempts"] == 1 else "s", syn["ttl"])
    if syn["mptcp"]:
        sent += ", %d of them with MP_CAPABLE%s" % (
            syn["mptcp_attempts"], " (dropped on a retry: the stack fell back to TCP)"
            if syn["mptcp_dropped_on_retry"] else "")
    if synack is None:
        return "%s: %s, no SYN/ACK" % (label, sent)
    where = "the first box on the way" if synack["hops"] == 0 else "%d hop%s away" % (
        synack["hops"], "" if synack["hops"] == 1 else "s")
    return "%s: %s; SYN/ACK TTL %d from %s, %s MP_CAPABLE" % (
        label, sent, synack["ttl"], where, "with" if synack["mptcp"] else "without")


def table_rows(report):
    """The seed's table: one row per case."""
    rows = [("case", "MPTCP", "TTL", "SYNs", "SYN TTL", "SYN/ACK TTL (hops)", "SYN/ACK MPTCP", "answered",
             "server saw", "throughput")]
    for item in report["cases"]:
        syn, synack = item["syn"] or {}, item["synack"]
        says = item.get("server_says")
        rows.append((
            item["case"], "on" if item["mptcp"] else "off", str(item["ttl"]),
            str(syn.get("attempts", 0)), str(syn.get("ttl", "-")),
            "%d (%d)" % (synack["ttl"], synack["hops"]) if synack else "none",
            ("yes" if synack["mptcp"] else "no") if synack else "-",
            "yes" if item["answered"] else "no",
            ("MPTCP, %d subflows" % says["subflows"] if says["mptcp"] else "TCP") if says else "-",
            _rate(item["rate_mbit"]) if item.get("rate_mbit") else "-",
        ))
    return rows


def format_markdown(report):
    """REPORT as the Markdown page ``report.md``."""
    lab = report["lab"]
    uplinks = ", ".join("%s %g Mbit/s%s" % (
        uplink["name"], uplink["rate_mbit"],
        "" if uplink["middlebox"] == "none" else " behind an %s%s" % (
            uplink["middlebox"], " (terminated flows %g Mbit/s)" % uplink["optimizer_rate_mbit"]
            if uplink.get("optimizer_rate_mbit") else "")) for uplink in lab["uplinks"])
    rows = table_rows(report)
    lines = [
        "# Net neutrality in the lab",
        "",
        "Bash mpsocks' study reproduced in lab `%s` (%s; %d hops to the servers), made %s by" % (
            lab["name"], uplinks, lab["hops"], report["made"]),
        "`mpsocks-run lab experiment net-neutrality`. The client is the guest `%s`; each case is"
        % report["guest"],
        "captured on the lab host's uplinks (`<case>.pcapng`) and analysed by `mpsocks-run analyze`.",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    lines += ["", "## Findings", ""]
    for finding in report["findings"]:
        claim = finding["claim"][0].upper() + finding["claim"][1:]
        lines.append("- **%s**: %s." % (claim, "holds" if finding["holds"] else "does NOT hold"))
        lines += ["  - %s" % sentence for sentence in finding["evidence"]]
    middlebox = report["middlebox"]
    lines += ["", "## Verdict: `%s`" % middlebox["verdict"], ""]
    lines += ["- %s" % sentence for sentence in middlebox["evidence"]]
    return "\n".join(lines) + "\n"
