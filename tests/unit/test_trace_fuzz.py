"""Mutated real captures (bit flips, truncations, splices) give a result or the one-line error, no more."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_analysis import analyze, format_report
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_packet import parse_options, parse_tcp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from test_trace_analysis import Conversation, mptcp_download
from test_trace_pcap import LAB_TRACES, SEED, SLL2, ethernet, pcapng_section, sll2


def _corpus():
    """Real captures, and synthetic ones in the formats the real ones lack (pcapng, SLL2, IPv6)."""
    files = [path.read_bytes() for path in [*SEED.values(), *LAB_TRACES] if path.exists()]
    talk = Conversation()
    mptcp_download(talk, "2001:db8:a::1", "2001:db8:b::1", "2001:db8:80::80")
    files.append(
        pcapng_section(
            [(1, None), (SLL2, 9)],
            [(n % 2, t, (sll2 if n % 2 else ethernet)(ip)) for n, (t, ip) in enumerate(talk.packets)],
            ">",
            snaplen=120,
        )
    )
    return files


CORPUS = _corpus()
FOLDER = Path(tempfile.mkdtemp(prefix="mpsocks-fuzz-"))
set_hypothesis_home_dir(FOLDER / "hypothesis")  # its caches go with the rest, not into the checkout


@st.composite
def mutated_captures(draw):
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "splice", "overwrite"]))
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[position:]
        elif kind == "splice":
            other = draw(st.sampled_from(CORPUS))
            start = draw(st.integers(0, len(other)))
            data[position:] = other[start : start + draw(st.integers(0, 400))] + data[position:]
        else:
            data[position : position + 8] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_captures(), st.booleans())
def test_mutated_captures_give_a_result_or_one_line(content, plot):
    path = FOLDER / "mutated.pcap"
    path.write_bytes(content)
    try:
        report = analyze(
            [path], plot_dir=FOLDER / "png" if plot else None, xplot_dir=FOLDER / "xpl" if plot else None
        )
    except MpsocksError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ") and "\n" not in message
        return
    json.dumps(report)
    format_report(report)


@settings(max_examples=1500, deadline=None, database=None)
@given(st.binary(max_size=200), st.integers(0, 2000))
def test_any_bytes_parse_or_are_refused(data, missing):
    segment = parse_tcp(data, missing)
    if segment:
        parse_options(segment[7])


@pytest.fixture(scope="module", autouse=True)
def _clean_up():
    yield
    shutil.rmtree(FOLDER)
