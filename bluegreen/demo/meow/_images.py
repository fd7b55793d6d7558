# -*- test-case-name: tests.test_meow -*-
"""
Small cat-face PNG images, drawn with the standard library alone (C{zlib}
and C{struct}).

The images shipped in C{images/} (the seeded "recent uploads") were made by
running this module::

    python -m bluegreen.demo.meow._images

L{catPNG} is also what the tests upload.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib

#: The colours of the shipped images: C{(name, fur RGB, background RGB)}.
PALETTE: tuple[tuple[str, tuple[int, int, int], tuple[int, int, int]], ...] = (
    ("ginger", (230, 140, 50), (250, 235, 200)),
    ("grey", (140, 140, 150), (210, 230, 250)),
    ("black", (40, 40, 45), (240, 220, 240)),
    ("cream", (235, 215, 170), (190, 220, 190)),
    ("blue", (110, 130, 170), (250, 240, 210)),
    ("calico", (200, 120, 70), (220, 220, 220)),
)


def _chunk(kind: bytes, data: bytes) -> bytes:
    """
    One PNG chunk: length, type, data and CRC.
    """
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encodePNG(width: int, height: int, rows: list[bytes]) -> bytes:
    """
    Encode 8-bit RGB pixels as a PNG.

    @param width: The width in pixels.
    @param height: The height in pixels.
    @param rows: C{height} rows of C{3 * width} bytes each.
    @return: The PNG file's bytes.
    """
    raw = b"".join(b"\x00" + row for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def _inEar(x: float, y: float, side: int) -> bool:
    """
    Whether C{(x, y)} (in units of the image's size) is in an ear.
    """
    tipX = 0.5 + side * 0.3
    baseLeft, baseRight = (0.5 + side * 0.05, 0.5 + side * 0.38)
    if side < 0:
        baseLeft, baseRight = baseRight, baseLeft
    if not 0.08 <= y <= 0.42:
        return False
    t = (y - 0.08) / 0.34
    left = tipX + (baseLeft - tipX) * t
    right = tipX + (baseRight - tipX) * t
    return left <= x <= right


def _pixel(
    x: float,
    y: float,
    fur: tuple[int, int, int],
    background: tuple[int, int, int],
) -> tuple[int, int, int]:
    """
    The colour of one point of a cat face.
    """
    dark = (30, 30, 30)
    pink = (240, 130, 150)
    eye = (120, 200, 90)
    for ex in (0.37, 0.63):
        dx, dy = x - ex, y - 0.56
        if dx * dx + dy * dy < 0.0045:
            return dark if abs(dx) < 0.02 else eye
    if abs(x - 0.5) < 0.04 and 0.66 < y < 0.7:
        return pink
    if 0.72 < y < 0.74 and 0.42 < x < 0.58:
        return dark
    dx, dy = x - 0.5, y - 0.6
    if dx * dx / 0.12 + dy * dy / 0.09 < 1:
        return fur
    if _inEar(x, y, -1) or _inEar(x, y, 1):
        return fur
    return background


def catPNG(
    fur: tuple[int, int, int] = (230, 140, 50),
    background: tuple[int, int, int] = (250, 235, 200),
    size: int = 32,
) -> bytes:
    """
    A cat face.

    @param fur: The cat's colour.
    @param background: The background's colour.
    @param size: The width and height in pixels.
    @return: A PNG file's bytes.
    """
    rows = []
    for j in range(size):
        row = bytearray()
        for i in range(size):
            row.extend(_pixel((i + 0.5) / size, (j + 0.5) / size, fur, background))
        rows.append(bytes(row))
    return encodePNG(size, size, rows)


def main(directory: str) -> None:
    """
    Write C{cat-1-ginger.png} ... into C{directory}.

    @param directory: Where to write.
    """
    for number, (name, fur, background) in enumerate(PALETTE, 1):
        path = os.path.join(directory, f"cat-{number}-{name}.png")
        with open(path, "wb") as f:
            f.write(catPNG(fur, background))


if __name__ == "__main__":
    main(
        sys.argv[1]
        if len(sys.argv) > 1
        else os.path.join(os.path.dirname(os.path.abspath(__file__)), "images")
    )
