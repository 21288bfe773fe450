"""Time-sequence plots: valid PNGs drawn with the built-in font, xplot files, data sequence numbers."""

from __future__ import annotations

import struct
import zlib

from ansible_collections.mpsocks.mptcp.plugins.module_utils import trace_plot
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_analysis import analyze
from ansible_collections.mpsocks.mptcp.plugins.module_utils.trace_plot import (
    ACK_COLOUR,
    FIRST_SUBFLOW_COLOUR,
    FONT,
    PALETTE,
    WHITE,
    Canvas,
    SequenceLog,
    number_texts,
    ticks,
)
from test_trace_analysis import Conversation, mptcp_download

XPLOT_COMMANDS = (
    {"double", "title", "xlabel", "ylabel", "go", "line", "uarrow", "dtick", "atext"}
    | set(trace_plot.XPLOT_COLOURS)
    | {"white"}
)


def read_png(data):
    """(width, height, palette, rows of palette indices) of an 8-bit palette PNG; checks every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(kind + body)
        chunks.setdefault(kind, b"")
        chunks[kind] += body
        pos += 12 + length
    assert list(chunks) == [b"IHDR", b"PLTE", b"IDAT", b"IEND"]
    width, height, depth, colour_type, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour_type) == (8, 3)
    raw = zlib.decompress(chunks[b"IDAT"])
    assert len(raw) == height * (width + 1)
    rows = [raw[y * (width + 1) + 1 : (y + 1) * (width + 1)] for y in range(height)]
    assert all(raw[y * (width + 1)] == 0 for y in range(height))
    palette = [tuple(chunks[b"PLTE"][i : i + 3]) for i in range(0, len(chunks[b"PLTE"]), 3)]
    return width, height, palette, rows


def download_plots(tmp_path):
    talk = Conversation()
    mptcp_download(talk, sizes=[1000] * 40, join_sizes=[700] * 20)
    capture = talk.write(tmp_path / "download.pcap")
    return analyze([capture], plot_dir=tmp_path / "png", xplot_dir=tmp_path / "xpl")


def test_a_png_and_an_xplot_file_per_connection_and_direction(tmp_path):
    report = download_plots(tmp_path)
    names = sorted(path.rsplit("/", 2)[-2] + "/" + path.rsplit("/", 1)[1] for path in report["plots"])
    assert names == ["png/c2s_seq_0.png", "png/s2c_seq_0.png", "xpl/c2s_seq_0.xpl", "xpl/s2c_seq_0.xpl"]


def test_png_shows_each_subflow_in_its_colour_and_the_data_acks(tmp_path):
    download_plots(tmp_path)
    width, height, palette, rows = read_png((tmp_path / "png" / "s2c_seq_0.png").read_bytes())
    assert (width, height) == (trace_plot.WIDTH, trace_plot.HEIGHT)
    assert palette == list(PALETTE) and palette[WHITE] == (255, 255, 255)
    counts = [0] * len(palette)
    for row in rows:
        for index in set(row):
            counts[index] += row.count(index)
    assert counts[WHITE] > width * height * 0.8  # a white background
    assert counts[FIRST_SUBFLOW_COLOUR] > 100 and counts[FIRST_SUBFLOW_COLOUR + 1] > 100  # both subflows
    assert counts[ACK_COLOUR] > 100


def test_xplot_file_is_what_xplot_reads(tmp_path):
    download_plots(tmp_path)
    lines = (tmp_path / "xpl" / "s2c_seq_0.xpl").read_text().splitlines()
    assert lines[:7] == [
        "double double",
        "title",
        lines[2],
        "xlabel",
        "time (s)",
        "ylabel",
        "data sequence number",
    ]
    assert lines[2].startswith("MPTCP connection 0 s2c: 192.0.2.80:80 -> 10.0.0.1:40000")
    assert lines[-1] == "go"
    position = 7
    while position < len(lines) - 1:
        command = lines[position].split()[0]
        assert command in XPLOT_COMMANDS, lines[position]
        position += 2 if command == "atext" else 1
    segments = [tuple(map(float, line.split()[1:])) for line in lines if line.startswith("line ")]
    # data sequence numbers relative to the server's IDSN, the join's 32-bit DSNs unwrapped
    starts = sorted(int(y0) for _, y0, _, y1 in segments)
    assert starts == [1 + 1000 * n for n in range(40)] + [40001 + 700 * n for n in range(20)]
    assert all(x0 == x1 for x0, _, x1, _ in segments)


def test_sequence_log_keeps_little_in_memory(tmp_path):
    log = SequenceLog(str(tmp_path))
    for number in range(20000):
        log.segment(0, 1, number % 3, float(number), number * 10, number * 10 + 10)
    assert sum(len(pending) for pending in log._pending.values()) < trace_plot._FLUSH_AT
    records = list(log.records((0, 1)))
    assert len(records) == 20000 and records[-1] == (trace_plot.SEGMENT, 19999 % 3, 19999.0, 199990, 200000)
    extent = log.series[(0, 1)]
    assert (extent.first_time, extent.last_time, extent.lowest, extent.highest, extent.subflows) == (
        0.0,
        19999.0,
        0,
        200000,
        {0, 1, 2},
    )


def test_font_has_a_glyph_for_every_printable_character():
    assert len(FONT) == 95 * 14
    glyphs = [FONT[code * 14 : (code + 1) * 14] for code in range(95)]
    assert glyphs[0] == "00" * 7  # space
    assert all(glyph != "00" * 7 for glyph in glyphs[1:])
    assert len(set(glyphs)) == 95


def test_text_is_drawn():
    canvas = Canvas(100, 20)
    end = canvas.text(2, 2, "1")
    assert end == 2 + trace_plot.GLYPH_ADVANCE
    column = [canvas.pixels[y * 100 + 6] for y in range(20)]  # the stem of the "1"
    assert column.count(trace_plot.BLACK) == 14


def test_ticks_and_their_labels():
    assert ticks(0, 1) == [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
    assert number_texts(ticks(0, 1)) == ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    assert number_texts(ticks(1, 4_000_000)) == [
        "0.5M",
        "1.0M",
        "1.5M",
        "2.0M",
        "2.5M",
        "3.0M",
        "3.5M",
        "4.0M",
    ]
    assert number_texts([0, 20000, 40000]) == ["0", "20k", "40k"]
    assert ticks(5, 5) == [5]
