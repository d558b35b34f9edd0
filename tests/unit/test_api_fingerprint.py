"""MEGA's ``c`` fingerprint attribute (megafs.api.fingerprint) against values published by MEGA
itself, not computed by megafs:

* whole ``c`` strings from the official web client's own test suite, meganz/webclient
  ``test/transfers_test.js`` ("can generate file fingerprint"): files made of the character
  "0" repeated (``new Array(s).join("0")``, i.e. s - 1 bytes) with lastModified
  1445816183620 ms;
* the 16 CRC bytes from the official SDK's unit tests, meganz/sdk
  ``tests/unit/FileFingerprint_test.cpp`` (``genfingerprint_FileAccess_for{Tiny,Small,Large}
  File``): the CRC words are ``int32`` values as they lie in memory on a little-endian machine,
  so the bytes are ``struct.pack("<4i", ...)`` of them.

No installable package computes the fingerprint independently (megajs 1.3.10, async-mega-py
2.5.0, mega.py and megatools 1.11 do not write ``c``), so these published values are the
independent reference.
"""
from __future__ import annotations

import os
import struct

import pytest

from megafs import crypto
from megafs.api import fingerprint

WEBCLIENT_MTIME = 1445816183                # 1445816183620 ms, fractions dropped
WEBCLIENT = {                               # size argument of new Array(s) -> expected c
    7: "MDAwMDAwAAAAAAAAAAAAAAR3Zy1W",
    25: "OUYF5jlGBeY5RgXmOUYF5gR3Zy1W",
    200000: "xUNCAcVDQgHFQ0IBxUNCAQR3Zy1W",
    8195: "xUNCAcVDQgHFQ0IBxUNCAQR3Zy1W",
}

SDK_MTIME = 1
SDK = {                                     # content -> crc as little-endian int32 words
    "tiny": (bytes([3, 4, 5, 6]), (100992003, 0, 0, 0)),
    "small": (bytes(range(100)), (215253208, 661795201, 937191950, 562141813)),
    "large": (bytes(i % 256 for i in range(20000)),
              (-1424885571, 1204627086, 1194313128, -177560448)),
}


def write(tmp_path, data: bytes, mtime: float) -> str:
    path = tmp_path / "f"
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return str(path)


@pytest.mark.parametrize("array_size", sorted(WEBCLIENT))
def test_webclient_published_fingerprints(tmp_path, array_size):
    path = write(tmp_path, b"0" * (array_size - 1), WEBCLIENT_MTIME + 0.62)
    assert fingerprint.fingerprint(path) == WEBCLIENT[array_size]        # path, own mtime
    fd = os.open(path, os.O_RDONLY)
    try:
        assert fingerprint.fingerprint(fd, array_size - 1, WEBCLIENT_MTIME) == \
            WEBCLIENT[array_size]
    finally:
        os.close(fd)
    crc, mtime = fingerprint.parse(WEBCLIENT[array_size])
    assert mtime == WEBCLIENT_MTIME and len(crc) == 16


@pytest.mark.parametrize("case", sorted(SDK))
def test_sdk_published_crcs(tmp_path, case):
    data, words = SDK[case]
    path = write(tmp_path, data, SDK_MTIME)
    c = fingerprint.fingerprint(path)
    crc, mtime = fingerprint.parse(c)
    assert crc == struct.pack("<4i", *words)
    assert mtime == SDK_MTIME
    assert crypto.b64decode(c)[16:] == b"\x01\x01"      # one mtime byte: 1


def test_explicit_size_fingerprints_a_prefix(tmp_path):
    """A file that grew after its upload is fingerprinted as uploaded (size given)."""
    path = write(tmp_path, b"0" * 6 + b"appended later", WEBCLIENT_MTIME)
    assert fingerprint.fingerprint(path, 6, WEBCLIENT_MTIME) == WEBCLIENT[7]
    with pytest.raises(OSError, match="short read"):
        fingerprint.fingerprint(path, 30000, WEBCLIENT_MTIME)


@pytest.mark.parametrize("mtime, tail", [(0, b"\x00"), (1, b"\x01\x01"), (256, b"\x02\x00\x01"),
                                         ((1 << 32) + 5, b"\x05\x05\x00\x00\x00\x01")])
def test_mtime_is_compact_little_endian(mtime, tail):
    c = fingerprint.encode(bytes(16), mtime)
    assert crypto.b64decode(c) == bytes(16) + tail
    assert fingerprint.parse(c) == (bytes(16), mtime)


def test_empty_file(tmp_path):
    path = write(tmp_path, b"", 5)
    assert fingerprint.parse(fingerprint.fingerprint(path)) == (bytes(16), 5)


@pytest.mark.parametrize("bad", ["", "AAAA", crypto.b64encode(bytes(16) + b"\x09" + bytes(9)),
                                 crypto.b64encode(bytes(16) + b"\x04\x01"), "!!!!"])
def test_parse_refuses_malformed(bad):
    with pytest.raises(ValueError):
        fingerprint.parse(bad)
