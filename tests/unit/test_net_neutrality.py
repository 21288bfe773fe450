"""The net-neutrality study: its report agrees with tshark and states the seed's findings; bad input.

The study itself runs end to end in tests/e2e/test_readme.py (the README's commands); here its
committed result, traces/net_neutrality/, is checked against tshark, and the report's logic on its own.
"""

import copy
import json
import sys
from pathlib import Path

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.net_neutrality import (
    Study,
    findings,
    format_markdown,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "runner"))
sys.path.insert(0, str(Path(__file__).parent))
from mpsocks import cli  # noqa: E402
from test_trace_analysis import tshark_streams  # noqa: E402

STUDY = Path(__file__).resolve().parents[2] / "traces" / "net_neutrality"


def committed_report():
    return json.loads((STUDY / "report.json").read_text())


def assert_report_matches_tshark(folder: Path, report: dict) -> None:
    """Each case's SYN and SYN/ACK, as the report gives them, are what tshark reads in its capture (not
    counting the SYNs quoted in ICMP time-exceeded messages)."""
    servers = report["lab"]["servers"]
    for case in report["cases"]:
        server = servers["check" if case["kind"] == "request" else "download"].split("/")[2] + ":80"
        streams = tshark_streams(folder / case["capture"], "tcp and not icmp").values()
        streams = [stream for stream in streams if stream["syn"] and stream["syn"]["dst"] == server
                   and "1" not in stream["syn"]["subtypes"]]
        assert streams, (case["case"], "no SYN to", server)
        syn, synack = streams[0]["syn"], streams[0]["synack"]
        assert (case["syn"]["ttl"], case["syn"]["mss"], case["syn"]["wscale"], case["syn"]["attempts"],
                case["syn"]["mptcp"]) == (syn["ttl"], syn["mss"], syn["wscale"], streams[0]["syns"],
                                          "0" in syn["subtypes"]), case["case"]
        if synack is None:
            assert case["synack"] is None, case["case"]
        else:
            assert (case["synack"]["ttl"], case["synack"]["mss"], case["synack"]["wscale"],
                    case["synack"]["mptcp"]) == (synack["ttl"], synack["mss"], synack["wscale"],
                                                 "0" in synack["subtypes"]), case["case"]


def assert_seed_findings(report: dict) -> None:
    """What the seed found: TTL 10 reaches the intercepting box only without MPTCP, the download is
    faster without MPTCP, and the verdict is a terminating proxy."""
    cases = {case["case"]: case for case in report["cases"]}
    assert cases["nomptcp_ttl10"]["answered"] and cases["nomptcp_ttl10"]["synack"]["ttl"] == 128
    assert cases["nomptcp_ttl10"]["syn"]["ttl"] == 9  # the guest's 10, less the host's forwarding
    assert not (cases["mptcp_ttl10"]["synack"] or {}).get("mptcp")
    assert cases["mptcp_ttl64"]["server_says"] == {"mptcp": True, "subflows": 2}
    assert cases["mptcp_ttl64"]["synack"]["hops"] == report["lab"]["hops"]
    assert cases["download_nomptcp"]["rate_mbit"] > cases["download_mptcp"]["rate_mbit"]
    assert [finding["holds"] for finding in report["findings"]] == [True, True]
    assert report["middlebox"]["verdict"] == "terminating-proxy"


def test_the_committed_study_matches_tshark():
    assert_report_matches_tshark(STUDY, committed_report())


def test_the_committed_study_shows_what_the_seed_found():
    assert_seed_findings(committed_report())


def test_the_markdown_report_is_the_json_one():
    assert (STUDY / "report.md").read_text() == format_markdown(committed_report())


def test_a_finding_that_does_not_hold_says_so():
    report = copy.deepcopy(committed_report())
    cases = {case["case"]: case for case in report["cases"]}
    cases["download_mptcp"]["rate_mbit"] = cases["download_nomptcp"]["rate_mbit"] * 2
    cases["mptcp_ttl10"]["synack"] = dict(cases["mptcp_ttl64"]["synack"])
    report["findings"] = findings(report["cases"])
    assert [finding["holds"] for finding in report["findings"]] == [False, False]
    assert format_markdown(report).count("does NOT hold") == 2


def test_bad_input_is_named_before_anything_runs(tmp_path):
    with pytest.raises(MpsocksError, match=r"^lab: no plan of a running lab 'nolab'"):
        Study({"lab": "nolab", "output": str(tmp_path / "out"), "run_root": str(tmp_path)}).validate()
    (tmp_path / "nolab").mkdir()
    (tmp_path / "nolab" / "lab.json").write_text(json.dumps({"name": "nolab"}))
    with pytest.raises(MpsocksError, match=r"^guest_netns: namespace 'nolab-guest' does not exist"):
        Study({"lab": "nolab", "output": str(tmp_path / "out"), "run_root": str(tmp_path)}).validate()


def test_the_cli_refuses_a_dry_run_and_unknown_studies(capsys):
    assert cli.main(["lab", "experiment", "net-neutrality", "--check"]) == 5
    assert "--check: an experiment measures the wire" in capsys.readouterr().err
    assert cli.main(["lab", "experiment", "fairness"]) == 5
    assert "invalid choice: 'fairness'" in capsys.readouterr().err
