"""MEGA's file fingerprint, the ``c`` node attribute: CRC samples of the content and the mtime.

Official clients store ``c`` next to ``n`` in a file's attributes and use it to recognise a
file they already have (sync, resumed and skipped uploads).  The layout (protocol reference
§3.2; meganz/sdk src/filefingerprint.cpp ``genfingerprint``/``serializefingerprint``,
src/serialize64.cpp; meganz/webclient js/transfers/utils.js ``getFingerprint2``):

* 16 bytes of CRC data, four big-endian 32-bit words:
  - files of at most 16 bytes: the content itself, zero-padded to 16 bytes;
  - files of at most 8192 bytes: the standard CRC-32 of each quarter, quarter i being bytes
    ``[i*size//4, (i+1)*size//4)``;
  - larger files: word i is the CRC-32 running over 32 samples of 64 bytes, sample j of word i
    taken at offset ``(size - 64) * (32*i + j) // 127``;
* then the mtime in seconds, as a length byte n (0-8) and n bytes little-endian with no
  trailing zero bytes (0 is the single byte ``00``);
* all of it base64url without padding (26-32 characters).

``parse`` reads one back to (crc bytes, mtime).  Only ``pread`` at 64-bit offsets, at most
8 KiB read in all; no logging.  ``tests/test_api_fingerprint.py`` pins it with MEGA's own
published values.
"""
from __future__ import annotations

import os
import zlib
from typing import Callable

from .. import crypto

ReadAt = Callable[[int, int], bytes]     # (offset, length) -> bytes read there

CRC_BYTES = 16
SMALL = 8192            # the SDK's MAXFULL: at most this many bytes are CRCed whole
SAMPLE = 64             # bytes per sample of a larger file
SAMPLES = SMALL // (SAMPLE * 4)     # 32 samples per CRC word
_MAX_MTIME = (1 << 64) - 1


def crc_data(read_at: ReadAt, size: int) -> bytes:
    """The 16 CRC bytes of a file of ``size`` bytes; ``read_at(offset, length)`` reads it."""
    if size < 0:
        raise ValueError("negative size")
    if size <= CRC_BYTES:
        data = read_at(0, size)
        _check(data, size)
        return data + bytes(CRC_BYTES - size)
    if size <= SMALL:
        data = read_at(0, size)
        _check(data, size)
        bounds = [i * size // 4 for i in range(5)]
        return b"".join(zlib.crc32(data[bounds[i]:bounds[i + 1]]).to_bytes(4, "big")
                        for i in range(4))
    words = []
    for i in range(4):
        crc = 0
        for j in range(SAMPLES):
            offset = (size - SAMPLE) * (SAMPLES * i + j) // (4 * SAMPLES - 1)
            block = read_at(offset, SAMPLE)
            _check(block, SAMPLE)
            crc = zlib.crc32(block, crc)
        words.append(crc.to_bytes(4, "big"))
    return b"".join(words)


def _check(data: bytes, length: int) -> None:
    if len(data) != length:
        raise OSError("file changed while fingerprinting (short read)")


def pack_mtime(mtime: int) -> bytes:
    """The mtime as the SDK's Serialize64: a length byte, then little-endian bytes."""
    if not 0 <= mtime <= _MAX_MTIME:
        raise ValueError("mtime out of range")
    raw = mtime.to_bytes(8, "little").rstrip(b"\0")
    return bytes([len(raw)]) + raw


def encode(crc: bytes, mtime: int) -> str:
    """The ``c`` attribute for 16 CRC bytes and an mtime in whole seconds."""
    if len(crc) != CRC_BYTES:
        raise ValueError("the CRC data is 16 bytes")
    return crypto.b64encode(crc + pack_mtime(int(mtime)))


def fingerprint(source: "int | str | os.PathLike[str]", size: int | None = None,
                mtime: float | None = None) -> str:
    """The ``c`` attribute of a file given as an open descriptor or a path.

    ``size`` and ``mtime`` (seconds; fractions are dropped, as MEGA's clients do) default to
    the file's own; pass them to fingerprint what was uploaded when the file may have grown
    since.  Raises OSError if the file cannot be read or is shorter than ``size``.
    """
    if isinstance(source, int):
        return _fingerprint_fd(source, size, mtime)
    fd = os.open(source, os.O_RDONLY)
    try:
        return _fingerprint_fd(fd, size, mtime)
    finally:
        os.close(fd)


def _fingerprint_fd(fd: int, size: int | None, mtime: float | None) -> str:
    if size is None or mtime is None:
        st = os.fstat(fd)
        size = st.st_size if size is None else size
        mtime = st.st_mtime if mtime is None else mtime
    return encode(crc_data(lambda offset, length: os.pread(fd, length, offset), size),
                  int(mtime))


def parse(value: str) -> tuple[bytes, int]:
    """(16 CRC bytes, mtime in seconds) from a ``c`` attribute; ValueError if malformed."""
    if not isinstance(value, str):
        raise ValueError("a fingerprint is text")
    raw = crypto.b64decode(value)
    if len(raw) < CRC_BYTES + 1:
        raise ValueError("fingerprint too short")
    n = raw[CRC_BYTES]
    if n > 8 or len(raw) < CRC_BYTES + 1 + n:     # like the SDK, later bytes are ignored
        raise ValueError("fingerprint has a bad mtime length")
    return raw[:CRC_BYTES], int.from_bytes(raw[CRC_BYTES + 1:CRC_BYTES + 1 + n], "little")
