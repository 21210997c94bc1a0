"""A strict check of a JPEG's entropy-coded data, for the corruption decoders let through.

libjpeg (inside both Pillow and TensorFlow) treats damage in the compressed
scan data as a *warning*: a bad Huffman code, a stray marker or bytes left
over after the last block are skipped and the rest of the picture is filled
in, and neither library raises. A face crop with 16 inverted bytes therefore
"decodes" into a half-garbage picture and passes every check that only asks
the decoder.

:func:`jpeg_stream_problem` walks the Huffman codes of every block (no
inverse DCT, no pixels) and checks that the scan ends exactly where its data
ends. It understands what facefold's builders and the 2016 code write:
baseline and extended sequential Huffman JPEG, any chroma subsampling, one or
more scans, restart markers. Progressive, arithmetic-coded and lossless files
are not walked (``None``: nothing found). In pure Python it takes a few
milliseconds per 112×112 crop, cheap for ``dataset inspect``, too slow for
multi-megapixel photos.
"""

from __future__ import annotations

import functools
import math
import re
import struct
from dataclasses import dataclass

import numpy as np

# SOF markers this check walks: baseline (C0) and extended sequential (C1) Huffman.
_SEQUENTIAL = {0xC0, 0xC1}
# SOF markers of codings it leaves alone: progressive, lossless, hierarchical, arithmetic.
_OTHER_SOF = {0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xDA)}  # TEM, RST0-7, SOI, EOI: no length field
# A marker inside scan data: 0xFF followed by anything but a stuffed 0x00 or RST0-7.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_RESTART = re.compile(rb"\xff[\xd0-\xd7]")


class _Corrupt(Exception):
    """Internal: the stream is damaged; the message says where and how."""


@dataclass(frozen=True)
class _Component:
    ident: int
    h: int  # horizontal sampling factor
    v: int  # vertical sampling factor


def jpeg_stream_problem(raw: bytes) -> str | None:
    """What is wrong with the compressed data of JPEG ``raw``, or None when nothing is.

    None also for JPEG codings this check does not walk (progressive,
    arithmetic, lossless). Header damage that no decoder accepts is reported
    too, but callers normally decode first and call this only on files that
    decoded.
    """
    try:
        _walk(raw)
    except _Corrupt as err:
        return str(err)
    except (IndexError, struct.error) as err:  # a length field pointing past the end
        return f"truncated marker segment ({err})"
    return None


def _walk(raw: bytes) -> None:
    """Raise :class:`_Corrupt` at the first problem; return when the file checks out."""
    if raw[:2] != b"\xff\xd8":
        raise _Corrupt("no JPEG start-of-image marker")
    pos = 2
    frame: tuple[int, int, list[_Component]] | None = None
    dc_tables: dict[int, list[int]] = {}
    ac_tables: dict[int, list[int]] = {}
    restart = 0
    scans = 0
    while True:
        while raw[pos] == 0xFF and raw[pos + 1] == 0xFF:  # fill bytes before a marker
            pos += 1
        if raw[pos] != 0xFF:
            raise _Corrupt(f"{_junk(raw, pos)} bytes of junk where a marker belongs at byte {pos}")
        marker = raw[pos + 1]
        pos += 2
        if marker == 0xD9:  # EOI
            if frame is None or not scans:
                raise _Corrupt("end of image before any picture data")
            return
        if marker in _STANDALONE:
            continue
        (length,) = struct.unpack(">H", raw[pos : pos + 2])
        if length < 2 or pos + length > len(raw):
            raise _Corrupt(f"marker 0xFF{marker:02X} at byte {pos - 2} runs past the end")
        body = raw[pos + 2 : pos + length]
        pos += length
        if marker in _OTHER_SOF:
            return  # a coding this check does not walk
        if marker in _SEQUENTIAL:
            frame = _frame(body)
        elif marker == 0xC4:
            _tables(body, dc_tables, ac_tables)
        elif marker == 0xDD:
            (restart,) = struct.unpack(">H", body[:2])
        elif marker == 0xDA:
            if frame is None:
                raise _Corrupt("scan data before the frame header")
            pos = _scan(raw, pos, body, frame, dc_tables, ac_tables, restart)
            scans += 1


def _junk(raw: bytes, pos: int) -> int:
    """How many bytes from ``pos`` until the next 0xFF."""
    end = raw.find(b"\xff", pos)
    return (len(raw) if end < 0 else end) - pos


def _frame(body: bytes) -> tuple[int, int, list[_Component]]:
    """``(width, height, components)`` of a start-of-frame segment."""
    precision, height, width, count = struct.unpack(">BHHB", body[:6])
    if precision != 8 or not width or not height or not 1 <= count <= 4:
        raise _Corrupt(f"unexpected frame header: {precision}-bit, {width}x{height}, "
                       f"{count} components")
    components = []
    for i in range(count):
        ident, sampling, _ = body[6 + 3 * i : 9 + 3 * i]
        h, v = sampling >> 4, sampling & 15
        if not (1 <= h <= 4 and 1 <= v <= 4):
            raise _Corrupt(f"component {ident} has sampling factors {h}x{v}")
        components.append(_Component(ident, h, v))
    return width, height, components


def _tables(body: bytes, dc: dict[int, list[int]], ac: dict[int, list[int]]) -> None:
    """Read the Huffman tables of a DHT segment into ``dc`` / ``ac`` by table id."""
    pos = 0
    while pos < len(body):
        kind, ident = body[pos] >> 4, body[pos] & 15
        counts = body[pos + 1 : pos + 17]
        total = sum(counts)
        symbols = body[pos + 17 : pos + 17 + total]
        if kind > 1 or ident > 3 or len(counts) < 16 or len(symbols) < total:
            raise _Corrupt("malformed Huffman table")
        (ac if kind else dc)[ident] = _lookup(bytes(counts), bytes(symbols))
        pos += 17 + total


@functools.lru_cache(maxsize=64)  # encoders reuse the same few tables for every picture
def _lookup(counts: bytes, symbols: bytes) -> list[int]:
    """Table from the next 16 bits to ``length << 8 | symbol``; -1 where no code starts."""
    table = [-1] * 65536
    code, index = 0, 0
    for length, count in enumerate(counts, start=1):
        for _ in range(count):
            if code >= 1 << length:
                raise _Corrupt("Huffman table with more codes than fit")
            shift = 16 - length
            table[code << shift : (code + 1) << shift] = [length << 8 | symbols[index]] * (
                1 << shift)
            code += 1
            index += 1
        code <<= 1
    return table


def _scan(raw: bytes, pos: int, header: bytes, frame: tuple[int, int, list[_Component]],
          dc_tables: dict[int, list[int]], ac_tables: dict[int, list[int]],
          restart: int) -> int:
    """Walk one scan starting at ``pos``; returns the position of the marker after it."""
    width, height, components = frame
    count = header[0]
    by_id = {c.ident: c for c in components}
    blocks: list[tuple[list[int], list[int]]] = []  # (dc, ac) table of each block of an MCU
    members = []
    for i in range(count):
        ident, selectors = header[1 + 2 * i], header[2 + 2 * i]
        if ident not in by_id or selectors >> 4 not in dc_tables or (
                selectors & 15) not in ac_tables:
            raise _Corrupt(f"scan names component {ident} or a Huffman table that is not defined")
        members.append(by_id[ident])
        blocks += [(dc_tables[selectors >> 4], ac_tables[selectors & 15])] * (
            1 if count == 1 else by_id[ident].h * by_id[ident].v)
    hmax = max(c.h for c in components)
    vmax = max(c.v for c in components)
    if count == 1:  # non-interleaved: one block per MCU over that component's own grid
        c = members[0]
        mcus = (math.ceil(math.ceil(width * c.h / hmax) / 8)
                * math.ceil(math.ceil(height * c.v / vmax) / 8))
    else:
        mcus = math.ceil(width / (8 * hmax)) * math.ceil(height / (8 * vmax))
    found = _SCAN_END.search(raw, pos)
    if found is None:
        raise _Corrupt("scan data runs to the end of the file (no end-of-image marker)")
    end = found.start()
    data = raw[pos:end]
    intervals = _RESTART.split(data) if restart else [data]
    expected = math.ceil(mcus / restart) if restart else 1
    if len(intervals) != expected:
        raise _Corrupt(f"{len(intervals)} restart intervals in the scan, expected {expected}")
    for n, chunk in enumerate(intervals):
        todo = min(restart, mcus - n * restart) if restart else mcus
        _walk_interval(chunk.replace(b"\xff\x00", b"\xff"), blocks, todo, n)
    return end


def _walk_interval(data: bytes, blocks: list[tuple[list[int], list[int]]], mcus: int,
                   interval: int) -> None:
    """Decode the Huffman codes of ``mcus`` MCUs from unstuffed ``data``; they must use it all."""
    padded = np.frombuffer(data + b"\xff" * 4, np.uint8).astype(np.uint32)
    # windows[i]: the 32 bits starting at byte i, so any 16 bits are one shift and mask away.
    windows = ((padded[:-3] << 24) | (padded[1:-2] << 16) | (padded[2:-1] << 8)
               | padded[3:]).tolist()
    bits = 8 * len(data)
    where = f"restart interval {interval}" if interval else "the scan"
    try:
        p = _walk_blocks(windows, blocks, mcus, bits, where)
    except IndexError:  # ran past the padding: the codes need more data than there is
        raise _Corrupt(f"compressed data of {where} ends before its last block") from None
    left = len(data) - math.ceil(p / 8)
    if left:
        raise _Corrupt(f"{left} bytes of compressed data left over after the last block of "
                       f"{where}")
    padding = (1 << (-p % 8)) - 1  # the bits after the last code, up to the byte's end
    if windows[p >> 3] >> 24 & padding != padding:
        raise _Corrupt(f"the last byte of {where} is not padded with 1-bits")


def _walk_blocks(windows: list[int], blocks: list[tuple[list[int], list[int]]], mcus: int,
                 bits: int, where: str) -> int:
    """The bit position after the Huffman codes of ``mcus`` MCUs (the hot loop)."""
    p = 0
    for mcu in range(mcus):
        for dc, ac in blocks:
            v = dc[(windows[p >> 3] >> (16 - (p & 7))) & 0xFFFF]
            if v < 0 or v & 0xFF > 11:
                raise _Corrupt(f"bad Huffman code in block {mcu} of {where}")
            p += (v >> 8) + (v & 0xFF)
            k = 1
            while k < 64:
                v = ac[(windows[p >> 3] >> (16 - (p & 7))) & 0xFFFF]
                if v < 0:
                    raise _Corrupt(f"bad Huffman code in block {mcu} of {where}")
                run_size = v & 0xFF
                if run_size & 15 > 10:  # no AC coefficient of 8-bit data needs more bits
                    raise _Corrupt(f"bad coefficient size in block {mcu} of {where}")
                p += (v >> 8) + (run_size & 15)
                if run_size == 0:  # end of block
                    break
                k += (run_size >> 4) + 1
            if k > 64:
                raise _Corrupt(f"more than 64 coefficients in block {mcu} of {where}")
        if p > bits:
            raise _Corrupt(f"compressed data ends in block {mcu} of {mcus} in {where}")
    return p
