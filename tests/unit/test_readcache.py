"""The verified read path (``vfs.readcache.ReadCache``) over a fake client: the chunk MACs it
computes (on every core) give the file's meta-MAC, and tampered bytes anywhere fail the read
with IntegrityError instead of being served."""
from __future__ import annotations

import os

import pytest

from megafs import chunks, crypto
from megafs.errors import IntegrityError
from megafs.vfs.readcache import ReadCache, ReadState

MIB = chunks.MIB


class FakeClient:
    """Serves one file's ciphertext; ``tamper`` flips a byte at that offset."""

    def __init__(self, ciphertext: bytes, tamper: int | None = None) -> None:
        data = bytearray(ciphertext)
        if tamper is not None:
            data[tamper] ^= 0x40
        self.data = bytes(data)

    def open_download(self, handle: str):
        class Info:
            url = "http://127.0.0.1:1/dl/x"
        return Info()

    def read_range(self, url: str, key: crypto.FileKey, offset: int, length: int) -> bytes:
        return crypto.ctr_crypt(key.aes_key, key.nonce, offset,
                                self.data[offset:offset + length])


def make_file(size: int) -> tuple[bytes, bytes, crypto.FileKey]:
    key = crypto.new_file_key()
    data = os.urandom(size)
    cipher = crypto.ctr_crypt(key.aes_key, key.nonce, 0, data)
    assert cipher is not None
    return data, cipher, key.with_mac(crypto.file_meta_mac(key.aes_key, key.nonce, data))


def read_all(cache: ReadCache, key: crypto.FileKey, size: int) -> bytes:
    state = ReadState()
    out = []
    for offset in range(0, size, 128 * 1024):
        out.append(cache.read("h", key, size, offset, 128 * 1024, state))
    return b"".join(out)


@pytest.mark.parametrize("size", [1, 200_000, 3 * MIB + 5, 7 * MIB])
def test_a_full_read_checks_the_mac_and_returns_the_bytes(size):
    data, cipher, key = make_file(size)
    cache = ReadCache(FakeClient(cipher))
    try:
        assert read_all(cache, key, size) == data
        assert "h" not in cache._bad
    finally:
        cache.close()


@pytest.mark.parametrize("size,where", [(200_000, 150_000), (7 * MIB, 5), (7 * MIB, 6 * MIB + 3),
                                        (3 * MIB + 5, 3 * MIB + 4)])
def test_tampered_bytes_fail_the_read(size, where):
    _data, cipher, key = make_file(size)
    cache = ReadCache(FakeClient(cipher, tamper=where))
    try:
        with pytest.raises(IntegrityError):
            read_all(cache, key, size)
        with pytest.raises(IntegrityError):     # and every later read of the node
            cache.read("h", key, size, 0, 10)
    finally:
        cache.close()


def test_fetch_to_file_checks_the_mac(tmp_path):
    size = 6 * MIB + 7
    data, cipher, key = make_file(size)
    for tamper, ok in ((None, True), (4 * MIB, False)):
        cache = ReadCache(FakeClient(cipher, tamper=tamper))
        path = tmp_path / ("out-%s" % ok)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if ok:
                cache.fetch_to_file("h", key, size, fd)
                assert path.read_bytes() == data
            else:
                with pytest.raises(IntegrityError):
                    cache.fetch_to_file("h", key, size, fd)
        finally:
            os.close(fd)
            cache.close()
