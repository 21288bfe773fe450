# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Time-sequence plots of MPTCP connections: PNG (standard library only) and xplot (.xpl) files.

While the analysis streams, ``SequenceLog`` appends each data segment (its data sequence numbers,
coloured by subflow) and each data ACK to one small binary file per connection and direction, so
memory stays flat; ``write_plots`` then turns each of them into ``c2s_seq_ID.png``/``s2c_seq_ID.png``
(white background, one colour per subflow, data ACKs as a grey step line, a legend) and/or
``.xpl`` files in the xplot.org format mptcptrace wrote.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import os
import struct
import zlib

from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError

SEGMENT, ACK = 0, 1
_RECORD = struct.Struct("<BHdqq")  # kind, subflow, time, first, last data sequence number
_LOWEST, _HIGHEST = -(1 << 63), (1 << 63) - 1
#: Records kept in memory before they go to the series' file.
_FLUSH_AT = 4096
_FLUSH_ALL_AT = 1 << 18

WIDTH, HEIGHT = 1200, 720
#: Palette: background, text and axes, grid, data ACKs, then one colour per subflow (Okabe-Ito).
PALETTE = ((255, 255, 255), (0, 0, 0), (225, 225, 225), (110, 110, 110),
           (0, 114, 178), (213, 94, 0), (0, 158, 115), (230, 159, 0), (204, 121, 167), (86, 180, 233),
           (160, 60, 40), (0, 0, 0))
WHITE, BLACK, GRID, ACK_COLOUR, FIRST_SUBFLOW_COLOUR = 0, 1, 2, 3, 4
SUBFLOW_COLOURS = len(PALETTE) - FIRST_SUBFLOW_COLOUR
XPLOT_COLOURS = ("green", "red", "blue", "yellow", "purple", "orange", "magenta", "pink")
SCALE = 2  # the 5x7 font drawn at twice its size
GLYPH_ADVANCE = 6 * SCALE

#: A 5x7 bitmap font for ASCII 32-126: 7 rows of 5 bits (2 hex digits each) per character.
FONT = (
    "00000000000000040404040400040a0a00000000000a0a1f0a1f0a0a040f140e051e04181902040813030c12140815120d"
    "0404000000000002040808080402080402020204080004150e1504000004041f040400000000000c04080000001f000000"
    "00000000000c0c000102040810000e11131519110e040c040404040e0e11010204081f1f02040201110e02060a121f0202"
    "1f101e0101110e0608101e11110e1f0102040808080e11110e11110e0e11110f01020c000c0c000c0c00000c0c000c0408"
    "0204081008040200001f001f0000080402010204080e1101020400040e11010d15150e0e11111f1111111e11111e11111e"
    "0e11101010110e1c12111111121c1f10101e10101f1f10101e1010100e11101711110f1111111f1111110e04040404040e"
    "0702020202120c111214181412111010101010101f111b1515111111111119151311110e11111111110e1e11111e101010"
    "0e11111115120d1e11111e1412110f10100e01011e1f0404040404041111111111110e11111111110a041111111515150a"
    "11110a040a111111110a040404041f01020408101f0e08080808080e001008040201000e02020202020e040a1100000000"
    "0000000000001f0804000000000000000e010f110f1010161911111e00000e1010110e01010d1311110f00000e111f100e"
    "0609081c080808000f11110f010e1010161911111104000c0404040e0200060202120c101012141814120c04040404040e"
    "00001a151511110000161911111100000e1111110e00001e111e101000000d130f01010000161910101000000e100e011e"
    "08081c080809060000111111130d00001111110a040000111115150a0000110a040a11000011110f010e00001f0204081f"
    "02040408040402040404040404040804040204040800000815020000"
)


class Extent:
    """Times, data sequence numbers and subflows of the data segments of one series."""

    __slots__ = ("first_time", "last_time", "lowest", "highest", "subflows")

    def __init__(self):
        self.first_time = self.last_time = self.lowest = self.highest = None
        self.subflows = set()

    def add(self, subflow, timestamp, first, last):
        if self.first_time is None:
            self.first_time, self.last_time, self.lowest, self.highest = timestamp, timestamp, first, last
        else:
            self.first_time = min(self.first_time, timestamp)
            self.last_time = max(self.last_time, timestamp)
            self.lowest = min(self.lowest, first)
            self.highest = max(self.highest, last)
        self.subflows.add(subflow)


class SequenceLog:
    """Data segments and data ACKs of every connection and direction, in files under DIRECTORY."""

    def __init__(self, directory):
        self.directory = directory
        self._pending = {}
        self._buffered = 0
        #: (connection, direction) -> Extent of its data segments
        self.series = {}

    def segment(self, connection, direction, subflow, timestamp, first, last):
        """Data sequence numbers FIRST to LAST sent at TIMESTAMP on SUBFLOW."""
        self._add((connection, direction), SEGMENT, subflow, timestamp, first, last)

    def ack(self, connection, direction, subflow, timestamp, value):
        """Data ACK VALUE for the data of DIRECTION, sent at TIMESTAMP on SUBFLOW."""
        self._add((connection, direction), ACK, subflow, timestamp, value, value)

    def _add(self, key, kind, subflow, timestamp, first, last):
        first, last = (min(max(value, _LOWEST), _HIGHEST) for value in (first, last))
        extent = self.series.get(key)
        if extent is None:
            extent = self.series[key] = Extent()
            self._pending[key] = []
        if kind == SEGMENT:
            extent.add(subflow, timestamp, first, last)
        pending = self._pending[key]
        pending.append(_RECORD.pack(kind, min(subflow, 0xFFFF), timestamp, first, last))
        self._buffered += 1
        if len(pending) >= _FLUSH_AT:
            self._flush(key)
        elif self._buffered >= _FLUSH_ALL_AT:
            for name in list(self._pending):
                self._flush(name)

    def _path(self, key):
        return os.path.join(self.directory, "%d-%d.bin" % key)

    def _flush(self, key):
        pending = self._pending[key]
        if pending:
            with open(self._path(key), "ab") as handle:
                handle.write(b"".join(pending))
            self._buffered -= len(pending)
            self._pending[key] = []

    def records(self, key):
        """(kind, subflow, time, first, last) of every record of KEY, in the order they came."""
        self._flush(key)
        with open(self._path(key), "rb") as handle:
            while True:
                chunk = handle.read(_RECORD.size * 8192)
                if not chunk:
                    return
                yield from _RECORD.iter_unpack(chunk)


def write_plots(log, series, plot_dir, xplot_dir):
    """Write the PNG (into PLOT_DIR) and xplot (XPLOT_DIR) files of SERIES; returns their paths.

    SERIES: ``(connection id, direction, name, title, subflow labels)`` as the analysis lists them;
    directions without data segments get no plot.
    """
    written = []
    for directory in (plot_dir, xplot_dir):
        if directory:
            try:
                os.makedirs(str(directory), exist_ok=True)
            except OSError as exc:
                raise MpsocksError("%s: cannot create the plot directory: %s"
                                   % (directory, exc.strerror)) from None
    for connection, direction, name, title, labels in series:
        key = (connection, direction)
        extent = log.series.get(key)
        if extent is None or not extent.subflows:
            continue
        stem = "%s_seq_%d" % (name, connection)
        targets = []
        if plot_dir:
            targets.append((os.path.join(str(plot_dir), stem + ".png"), _write_png))
        if xplot_dir:
            targets.append((os.path.join(str(xplot_dir), stem + ".xpl"), _write_xplot))
        for path, writer in targets:
            try:
                writer(path, log, key, extent, title, labels)
            except OSError as exc:
                raise MpsocksError("%s: cannot write the plot: %s" % (path, exc.strerror)) from None
            written.append(path)
    return written


# xplot ---------------------------------------------------------------------------------------------


def _label(labels, index):
    return labels[index] if index < len(labels) else "subflow %d" % index


def _write_xplot(path, log, key, extent, title, labels):
    """The series KEY as an xplot file: segments as lines with an up arrow, data ACKs as down ticks."""
    start = extent.first_time
    with open(path, "w") as handle:
        handle.write("double double\ntitle\n%s\nxlabel\ntime (s)\nylabel\ndata sequence number\n" % title)
        for index in sorted(extent.subflows):
            colour = XPLOT_COLOURS[index % len(XPLOT_COLOURS)]
            handle.write("%s\natext %.6f %d\n%s\n" % (colour, 0.0, extent.highest, _label(labels, index)))
        colour = None
        for kind, subflow, timestamp, first, last in log.records(key):
            wanted = "white" if kind == ACK else XPLOT_COLOURS[subflow % len(XPLOT_COLOURS)]
            if wanted != colour:
                colour = wanted
                handle.write(colour + "\n")
            x = timestamp - start
            if kind == ACK:
                handle.write("dtick %.6f %d\n" % (x, first))
            else:
                handle.write("line %.6f %d %.6f %d\nuarrow %.6f %d\n" % (x, first, x, last, x, last))
        handle.write("go\n")


# PNG -----------------------------------------------------------------------------------------------


class Canvas:
    """A WIDTH x HEIGHT image of palette indices, written as an 8-bit palette PNG."""

    def __init__(self, width, height):
        self.width = width
        self.height = height
        self.pixels = bytearray(width * height)

    def point(self, x, y, colour):
        if 0 <= x < self.width and 0 <= y < self.height:
            self.pixels[y * self.width + x] = colour

    def hline(self, x0, x1, y, colour):
        if 0 <= y < self.height:
            x0, x1 = max(min(x0, x1), 0), min(max(x0, x1), self.width - 1)
            if x0 <= x1:
                self.pixels[y * self.width + x0:y * self.width + x1 + 1] = bytes([colour]) * (x1 - x0 + 1)

    def vline(self, x, y0, y1, colour):
        if 0 <= x < self.width:
            for y in range(max(min(y0, y1), 0), min(max(y0, y1), self.height - 1) + 1):
                self.pixels[y * self.width + x] = colour

    def rectangle(self, x0, y0, x1, y1, colour):
        for y in range(y0, y1 + 1):
            self.hline(x0, x1, y, colour)

    def text(self, x, y, text, colour=BLACK):
        """TEXT with its top-left corner at X, Y; returns the x after it."""
        for char in text:
            code = ord(char) - 32
            if not 0 <= code < 95:
                code = ord("?") - 32
            for row in range(7):
                bits = int(FONT[code * 14 + row * 2:code * 14 + row * 2 + 2], 16)
                for column in range(5):
                    if bits & (0x10 >> column):
                        self.rectangle(x + column * SCALE, y + row * SCALE,
                                       x + column * SCALE + SCALE - 1, y + row * SCALE + SCALE - 1, colour)
            x += GLYPH_ADVANCE
        return x

    def png(self):
        """The image as PNG bytes."""
        def chunk(kind, data):
            return (struct.pack(">I", len(data)) + kind + data
                    + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
        rows = b"".join(b"\x00" + bytes(self.pixels[y * self.width:(y + 1) * self.width])
                        for y in range(self.height))
        return (b"\x89PNG\r\n\x1a\n"
                + chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height, 8, 3, 0, 0, 0))
                + chunk(b"PLTE", b"".join(struct.pack("BBB", *rgb) for rgb in PALETTE))
                + chunk(b"IDAT", zlib.compress(rows, 6))
                + chunk(b"IEND", b""))


def ticks(low, high, count=8):
    """About COUNT round values (1, 2 or 5 times a power of ten apart) covering LOW..HIGH."""
    span = high - low
    if span <= 0:
        return [low]
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(factor * power for factor in (1, 2, 5, 10) if factor * power >= raw)
    first = math.ceil(low / step) * step
    values = []
    value = first
    while value <= high + step * 1e-9:
        values.append(value)
        value = first + len(values) * step
    return values


def number_texts(values):
    """Axis labels for the evenly spaced VALUES: k/M/G/T after the largest, as many decimals as needed."""
    step = values[1] - values[0] if len(values) > 1 else 1
    largest = max(abs(value) for value in values)
    scales = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
    factor, suffix = next(((factor, suffix) for factor, suffix in scales if largest >= factor), (1, ""))
    step /= factor
    decimals = max(0, -int(math.floor(math.log10(step)))) if 0 < step < 1 else 0
    return ["%.*f%s" % (decimals, value / factor, suffix) if value else "0" for value in values]


def _write_png(path, log, key, extent, title, labels):
    """The series KEY as a PNG time-sequence plot."""
    subflows = sorted(extent.subflows)
    legend = [(FIRST_SUBFLOW_COLOUR + index % SUBFLOW_COLOURS, _label(labels, index))
              for index in subflows[:8]]
    if len(subflows) > 8:
        legend.append((BLACK, "... and %d more subflows" % (len(subflows) - 8)))
    legend.append((ACK_COLOUR, "data ACK"))
    left, right, top = 150, WIDTH - 40, 70
    bottom = HEIGHT - 90 - 20 * len(legend)
    canvas = Canvas(WIDTH, HEIGHT)
    start = extent.first_time
    x_ticks = ticks(0.0, max(extent.last_time - start, 1e-6))
    y_ticks = ticks(extent.lowest, max(extent.highest, extent.lowest + 1))
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1.0
    y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1
    # the axes run from the tick at or below the lowest value to the one at or above the highest
    x_low, x_high = 0.0, x_ticks[-1] if x_ticks[-1] >= extent.last_time - start else x_ticks[-1] + x_step
    y_low = y_ticks[0] if y_ticks[0] <= extent.lowest else y_ticks[0] - y_step
    y_high = y_ticks[-1] if y_ticks[-1] >= extent.highest else y_ticks[-1] + y_step
    if y_low < y_ticks[0]:
        y_ticks.insert(0, y_low)
    if x_high > x_ticks[-1]:
        x_ticks.append(x_high)
    if y_high > y_ticks[-1]:
        y_ticks.append(y_high)

    def x_pixel(seconds):
        seconds = min(max(seconds, x_low), x_high)
        return left + int(round((seconds - x_low) * (right - left) / (x_high - x_low)))

    def y_pixel(value):
        value = min(max(value, y_low), y_high)
        return bottom - int(round((value - y_low) * (bottom - top) / (y_high - y_low)))

    for value, label in zip(x_ticks, number_texts(x_ticks), strict=True):
        x = x_pixel(value)
        canvas.vline(x, top, bottom, GRID)
        canvas.vline(x, bottom, bottom + 5, BLACK)
        canvas.text(x - len(label) * GLYPH_ADVANCE // 2, bottom + 10, label)
    for value, label in zip(y_ticks, number_texts(y_ticks), strict=True):
        y = y_pixel(value)
        canvas.hline(left, right, y, GRID)
        canvas.hline(left - 5, left, y, BLACK)
        canvas.text(left - 10 - len(label) * GLYPH_ADVANCE, y - 7, label)
    canvas.hline(left, right, bottom, BLACK)
    canvas.vline(left, top, bottom, BLACK)
    canvas.text(max((WIDTH - len(title) * GLYPH_ADVANCE) // 2, 4), 14, title)
    canvas.text(10, top - 28, "data sequence number")
    canvas.text(right - 8 * GLYPH_ADVANCE, bottom + 34, "time (s)")
    previous_ack = None
    for kind, subflow, timestamp, first, last in log.records(key):
        x = x_pixel(timestamp - start)
        if kind == ACK:
            y = y_pixel(first)
            if previous_ack is not None:
                canvas.hline(previous_ack[0], x, previous_ack[1], ACK_COLOUR)
                canvas.vline(x, previous_ack[1], y, ACK_COLOUR)
            previous_ack = (x, y)
        else:
            colour = FIRST_SUBFLOW_COLOUR + subflow % SUBFLOW_COLOURS
            y0, y1 = y_pixel(first), y_pixel(last)
            canvas.vline(x, y0, y1, colour)
            canvas.hline(x - 2, x + 2, y1, colour)
    for number, (colour, label) in enumerate(legend):
        y = bottom + 64 + number * 20
        canvas.rectangle(left, y + 2, left + 16, y + 12, colour)
        canvas.text(left + 24, y, label[:(WIDTH - left - 30) // GLYPH_ADVANCE])
    with open(path, "wb") as handle:
        handle.write(canvas.png())
