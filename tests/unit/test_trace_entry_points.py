"""The analysis behind its two doors: the trace_info module and the ``mpsocks-run analyze`` verb."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
from mpsocks_testlib import run_module
from test_trace_analysis import Conversation, mptcp_download
from test_trace_pcap import SEED, ethernet, need_seed, pcap, pcapng_section, syn_packet

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "runner"))

from mpsocks import analyze  # noqa: E402


def capture(tmp_path):
    talk = Conversation()
    mptcp_download(talk)
    return talk.write(tmp_path / "download.pcap")


def bad_inputs(tmp_path):
    """{name: (path, words the error must hold)} for every kind of bad input."""
    files = {
        "empty": (b"", "empty file"),
        "truncated": (pcap([(1.0, ethernet(syn_packet()))])[:-9], "cut short"),
        "not-a-capture": (b"%PDF-1.4\n" * 10, "not a pcap or pcapng capture"),
        "unknown-link-type": (pcap([(1.0, b"\x00" * 40)], link_type=147), "link type 147 is not supported"),
        "truncated-pcapng": (
            pcapng_section([(1, None)], [(0, 1.0, ethernet(syn_packet()))])[:-3],
            "cut short",
        ),
    }
    found = {}
    for name, (content, words) in files.items():
        path = tmp_path / name
        path.write_bytes(content)
        found[name] = (path, words)
    found["directory"] = (tmp_path, "is a directory")
    found["missing"] = (tmp_path / "missing.pcap", "No such file")
    return found


BAD = ["empty", "truncated", "not-a-capture", "unknown-link-type", "truncated-pcapng", "directory", "missing"]


# The module -------------------------------------------------------------------------------------------------


def test_module_returns_the_analysis(tmp_path):
    result = run_module("trace_info", paths=[str(capture(tmp_path))])
    assert result["changed"] is False and not result.get("failed")
    assert [s["kind"] for s in result["connections"][0]["subflows"]] == ["initial", "join"]
    assert result["middlebox"]["verdict"] == "none"
    assert result["handshakes"][0]["synack"]["hops"] == 12
    assert result["plots"] == []


def test_module_seed_verdict():
    need_seed()
    result = run_module("trace_info", paths=[str(SEED["nomptcp_ttl10"]), str(SEED["mptcp_ttl64"])])
    assert result["middlebox"]["verdict"] == "terminating-proxy"
    assert [h["synack"]["hops"] for h in result["handshakes"]] == [4, 13]


def test_module_writes_plots_and_check_mode_does_not(tmp_path):
    path = capture(tmp_path)
    checked = run_module(
        "trace_info",
        check=True,
        paths=[str(path)],
        plot_dir=str(tmp_path / "png"),
        xplot_dir=str(tmp_path / "xpl"),
    )
    assert checked["changed"] is True
    assert sorted(checked["plots"]) == sorted(
        str(tmp_path / d / f"{n}_seq_0.{d}") for d in ("png", "xpl") for n in ("c2s", "s2c")
    )
    assert not (tmp_path / "png").exists() and not (tmp_path / "xpl").exists()
    done = run_module(
        "trace_info", paths=[str(path)], plot_dir=str(tmp_path / "png"), xplot_dir=str(tmp_path / "xpl")
    )
    assert done["changed"] is True and sorted(done["plots"]) == sorted(checked["plots"])
    assert all(Path(plot).stat().st_size > 0 for plot in done["plots"])


@pytest.mark.parametrize("name", BAD)
def test_module_fails_with_one_line_naming_the_file(tmp_path, name):
    path, words = bad_inputs(tmp_path)[name]
    result = run_module("trace_info", paths=[str(path)])
    assert result["failed"] is True
    assert result["msg"].startswith(f"{path}: ") and words in result["msg"] and "\n" not in result["msg"]


# The verb ---------------------------------------------------------------------------------------------------


def run(argv, capsys):
    parser = argparse.ArgumentParser(prog="mpsocks-run")
    analyze.add_parser(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(argv)
    code = args.command(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_verb_prints_the_table(tmp_path, capsys):
    code, out, err = run(["analyze", str(capture(tmp_path))], capsys)
    assert (code, err) == (0, "")
    assert "Middlebox verdict: none" in out and "MPTCP connection 0, version 1" in out


def test_verb_prints_json(tmp_path, capsys):
    code, out, _ = run(["analyze", "--json", str(capture(tmp_path))], capsys)
    report = json.loads(out)
    assert code == 0
    assert {"files", "handshakes", "connections", "fallbacks", "injected", "middlebox", "plots"} <= set(
        report
    )
    assert report["handshakes"][0]["syn"]["mptcp"] is True and report["handshakes"][0]["synack"]["ttl"] == 52


def test_verb_writes_plots(tmp_path, capsys):
    code, out, _ = run(
        ["analyze", "--plot", str(tmp_path / "p"), "--xplot", str(tmp_path / "x"), str(capture(tmp_path))],
        capsys,
    )
    assert code == 0 and "Plots: " in out
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["c2s_seq_0.png", "s2c_seq_0.png"]
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["c2s_seq_0.xpl", "s2c_seq_0.xpl"]


@pytest.mark.parametrize("name", BAD)
def test_verb_bad_input_is_one_line_and_exit_2(tmp_path, capsys, name):
    path, words = bad_inputs(tmp_path)[name]
    code, out, err = run(["analyze", str(capture(tmp_path)), str(path)], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith(f"mpsocks-run: error: {path}: ") and words in err


def test_verb_plot_folder_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    code, _, err = run(["analyze", "--plot", str(tmp_path / "file"), str(capture(tmp_path))], capsys)
    assert code == 2 and "not a directory" in err


def test_verb_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        run(["analyze", "--help"], capsys)
    out = capsys.readouterr().out
    assert "examples:\n  mpsocks-run analyze nomptcp.pcap mptcp.pcap" in out
    assert "--json" in out and "--plot DIR" in out and "--xplot DIR" in out
