"""MEGA MAC-chunk boundaries, shared by the uploader, the downloader and the server.

Chunk i (1-based) is min(i, 8) * 128 KiB long, so the boundaries are 0, 128K, 384K, 768K, ...,
4608K, then every 1 MiB; the last chunk ends at EOF.  A 0-byte file has one empty chunk (it
still needs one empty upload POST) but no chunk MAC.  Pure arithmetic, no I/O.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Iterator

SEGMENT = 131072
MIB = 1048576
# The largest size a file node may claim: 2**53 - 1 bytes (8 PiB).  MEGA's web client keeps
# sizes in JavaScript numbers, exact only up to Number.MAX_SAFE_INTEGER (meganz/webclient
# parses every API reply with JSON.parse), and RFC 8259 §6 warns that larger JSON integers do not
# interoperate; the SDK's m_off_t is wider, but no MEGA client could hand out a bigger file.
# A larger claimed size is a protocol error, never a structure to allocate.
MAX_FILE_SIZE = 2 ** 53 - 1
# Boundaries of the first eight (growing) chunks; 4,718,592 = 36 x 128 KiB.
_SMALL_BOUNDS = [SEGMENT * i * (i + 1) // 2 for i in range(9)]
_LINEAR_START = _SMALL_BOUNDS[-1]
LINEAR_START = _LINEAR_START     # every chunk from here on is 1 MiB


def storable(size: object) -> bool:
    """Whether ``size`` is a file size MEGA can store: an int in [0, MAX_FILE_SIZE]."""
    return isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= MAX_FILE_SIZE


def floor(offset: int) -> int:
    """Start of the chunk containing ``offset``."""
    if offset < 0:
        raise ValueError("negative offset")
    if offset >= _LINEAR_START:
        return _LINEAR_START + (offset - _LINEAR_START) // MIB * MIB
    return _SMALL_BOUNDS[bisect_right(_SMALL_BOUNDS, offset) - 1]


def size_at(start: int) -> int:
    """Nominal size of the chunk that starts at boundary ``start`` (before EOF clipping)."""
    if start >= _LINEAR_START:
        return MIB
    index = _SMALL_BOUNDS.index(start)
    return _SMALL_BOUNDS[index + 1] - start


def is_boundary(offset: int) -> bool:
    return floor(offset) == offset


def spans(size: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of every chunk of a ``size``-byte file, in order; (0, 0) for size 0."""
    if size < 0:
        raise ValueError("negative size")
    if size == 0:
        yield 0, 0
        return
    start = 0
    while start < size:
        length = min(size_at(start), size - start)
        yield start, length
        start += length


def count(size: int) -> int:
    if size <= _LINEAR_START:
        return max(1, sum(1 for _ in spans(size)))
    return 8 + -(-(size - _LINEAR_START) // MIB)


def groups(size: int, target: int) -> Iterator[tuple[int, int]]:
    """Consecutive chunks merged into spans of about ``target`` bytes, on chunk boundaries.

    Used to send several MAC chunks in one upload POST, as the official SDK does.
    """
    cur_start, cur_len = None, 0
    for start, length in spans(size):
        if cur_start is None:
            cur_start, cur_len = start, length
        elif cur_len + length > target:
            yield cur_start, cur_len
            cur_start, cur_len = start, length
        else:
            cur_len += length
    if cur_start is not None:
        yield cur_start, cur_len


def split_span(offset: int, length: int, target: int) -> list[tuple[int, int]]:
    """The span [offset, offset + length) cut into spans of at most ``target`` bytes (or one
    chunk, if bigger) on MAC chunk boundaries (``size_at``), in order."""
    out: list[tuple[int, int]] = []
    start, end = offset, offset + length
    cur, cur_len = offset, 0
    while start < end:
        n = min(size_at(start), end - start)
        if cur_len and cur_len + n > target:
            out.append((cur, cur_len))
            cur, cur_len = start, 0
        cur_len += n
        start += n
    out.append((cur, cur_len))
    return out
