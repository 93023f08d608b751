"""The wall clock drawn into a picture, and read back from it: what ``vms bench live`` measures.

A stamped stand-in camera (``rtsp_server.py --stamp``) draws, into the luma of each frame as it
makes it, the capture time: the low 40 bits of the Unix time in milliseconds and a CRC-8 of
them, 48 bits, as black and white square blocks. Two reference blocks (white, then black) come
first, so a reader thresholds at their midpoint whatever the encoder did to the levels. The 50
cells sit in a grid of 10 columns × 5 rows in the top-left corner, in a black margin one block
wide. A block is 16 pixels square (a macroblock, on the macroblock grid), 32 from 1280 pixels
wide, 48 from 1920: flat macroblocks survive H.264 at any sensible quantiser.

The reader gets a time modulo 2**40 ms (about 35 years) and picks the instant nearest its own
clock: :func:`capture_ms`. ``stamp.js`` next to this file is the same reader for a browser.

Standalone on purpose: ``rtsp_server.py`` imports it as a sibling module under Debian's
``/usr/bin/python3``, so it imports nothing from ``vms`` and needs no numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "COLS",
    "MIN_CONTRAST",
    "ROWS",
    "block_size",
    "capture_ms",
    "crc8",
    "decide",
    "draw",
    "encode_bits",
    "read",
    "region",
]

TIME_BITS = 40
CRC_BITS = 8
COLS = 10
ROWS = 5
CELLS = COLS * ROWS  # 2 references + 48 bits
MASK = (1 << TIME_BITS) - 1
BLACK = 16  # video-range luma
WHITE = 235
# White minus black, below which the picture is not a stamp (a black frame, another source).
MIN_CONTRAST = 64


def block_size(width: int) -> int:
    """Side of one block in pixels for a picture ``width`` wide."""
    return 16 * max(1, width // 640)


def region(width: int, height: int) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` of the stamp, its one-block margin included."""
    b = block_size(width)
    w, h = (COLS + 2) * b, (ROWS + 2) * b
    if w > width or h > height:
        raise ValueError(f"a {width}x{height} picture is too small for a stamp")
    return 0, 0, w, h


def crc8(value: int) -> int:
    """CRC-8 (polynomial 0x07) of the 5 bytes of ``value``, big-endian."""
    crc = 0
    for byte in value.to_bytes(5, "big"):
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def encode_bits(ms: int) -> list[int]:
    """The 50 cells' levels (1 white, 0 black) for Unix time ``ms``, in reading order."""
    value = ms & MASK
    word = (value << CRC_BITS) | crc8(value)
    bits = [(word >> (TIME_BITS + CRC_BITS - 1 - i)) & 1 for i in range(TIME_BITS + CRC_BITS)]
    return [1, 0, *bits]


def draw(luma: bytearray, width: int, height: int, ms: int, stride: int | None = None) -> None:
    """Draw the stamp of ``ms`` into a luma plane (one byte a pixel, ``stride`` bytes a row).

    The margin around the blocks is drawn black, so that whatever is under the stamp does
    not bleed into its edges. Chroma is the caller's: neutral (128) under the stamp."""
    stride = stride or width
    _, _, w, h = region(width, height)
    b = block_size(width)
    black = bytes([BLACK]) * b
    margin = bytes([BLACK]) * w
    cells = [bytes([WHITE]) * b if bit else black for bit in encode_bits(ms)]
    lines = [black + b"".join(cells[r * COLS : (r + 1) * COLS]) + black for r in range(ROWS)]
    for y in range(h):
        r = y // b - 1
        luma[y * stride : y * stride + w] = lines[r] if 0 <= r < ROWS else margin


def read(
    luma: bytes | bytearray | memoryview, width: int, height: int, stride: int | None = None
) -> int | None:
    """The stamp's time (ms modulo 2**40) from a luma plane, or None when the picture holds
    no readable stamp (its references too alike, or its CRC wrong). Each cell's level is
    the mean of its middle quarter, away from the edges the encoder blurs."""
    stride = stride or width
    try:
        region(width, height)
    except ValueError:
        return None
    b = block_size(width)
    quarter = b // 4
    levels: list[float] = []
    for cell in range(CELLS):
        row, col = divmod(cell, COLS)
        x0, y0 = (col + 1) * b + quarter, (row + 1) * b + quarter
        total = 0
        for y in range(y0, y0 + 2 * quarter):
            total += sum(luma[y * stride + x0 : y * stride + x0 + 2 * quarter])
        levels.append(total / (4 * quarter * quarter))
    return decide(levels)


def decide(levels: Sequence[float]) -> int | None:
    """The time from the 50 cells' mean levels (0-255); None when unreadable."""
    white, black = levels[0], levels[1]
    if white - black < MIN_CONTRAST:
        return None
    threshold = (white + black) / 2
    word = 0
    for level in levels[2:CELLS]:
        word = (word << 1) | (1 if level > threshold else 0)
    value, crc = word >> CRC_BITS, word & 0xFF
    return value if crc8(value) == crc else None


def capture_ms(stamp: int, now_ms: int) -> int:
    """The Unix time in ms that ``stamp`` (ms modulo 2**40) means, the one nearest ``now_ms``."""
    back = (now_ms - stamp) & MASK
    if back > MASK // 2:
        back -= MASK + 1
    return now_ms - back
