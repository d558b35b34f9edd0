"""The verified read path (``vfs.readcache.ReadCache``) over a fake client: the chunk MACs it
computes (on every core) give the file's meta-MAC, and tampered bytes anywhere fail the read
with IntegrityError instead of being served."""
from __future__ import annotations

import os
import threading
import time

import pytest

from megafs import chunks, crypto
from megafs.api.widen import SLOW
from megafs.errors import IntegrityError
from megafs.vfs.readcache import READ_AHEAD, ReadCache, ReadState, block_index

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


class CountingClient(FakeClient):
    """Records the block of every ranged GET; the blocks in ``held`` wait for ``release``;
    ``g`` takes ``round_trip`` seconds."""

    def __init__(self, ciphertext: bytes, held: set[int], round_trip: float = 0.0) -> None:
        super().__init__(ciphertext)
        self.held, self.round_trip = held, round_trip
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.blocks: list[int] = []

    def open_download(self, handle: str):
        time.sleep(self.round_trip)
        return super().open_download(handle)

    def read_range(self, url: str, key: crypto.FileKey, offset: int, length: int) -> bytes:
        block = block_index(offset)
        with self.lock:
            self.blocks.append(block)
        if block in self.held:
            assert self.release.wait(30)
        return super().read_range(url, key, offset, length)

    def settled(self, want: set[int]) -> set[int]:
        """The blocks asked for, once they reach ``want`` (or 5 s passed) and stay put."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and set(self.blocks) != want:
            time.sleep(0.01)
        time.sleep(0.1)          # nothing more arrives
        with self.lock:
            assert len(self.blocks) == len(set(self.blocks))     # each block fetched once
            return set(self.blocks)


def read_first(width: int | None, held: set[int], round_trip: float = 0.0,
               want: set[int] | None = None) -> tuple[set[int], int, int]:
    """A sequential reader's first read (block 0) of a 40 MiB file: the blocks asked for, the
    read-ahead's depth and window (before the held blocks are released)."""
    size = 40 * MIB
    data, cipher, key = make_file(size)
    client = CountingClient(cipher, held, round_trip)
    cache = ReadCache(client)
    if width is not None:
        cache.widened(width)
    try:
        assert cache.read("h", key, size, 0, 4096, ReadState()) == data[:4096]
        return client.settled(want or set()), cache.read_ahead, cache.window
    finally:
        client.release.set()
        cache.close()


def test_read_ahead_past_a_held_block_once_widened():
    # far profile: blocks take 0.6-1.9 s; the reader waits on block 1 while the blocks behind
    # it complete.  Widened to 8, the stream keeps 8 in flight within a window of 12 blocks
    # past the reader: blocks 2-12 complete and are replaced (a fixed depth of 8 stopped at 8)
    got, depth, window = read_first(8, held={1}, want=set(range(13)))
    assert got == set(range(13)) and (depth, window) == (8, 12)
    # every block held: the depth bounds what is in flight (8 ahead and the block read)
    got, _, _ = read_first(8, held=set(range(1, 64)), want=set(range(9)))
    assert got == set(range(9))
    # not widened (loopback, LAN): the window is the depth, 4 blocks past the reader as before
    got, depth, window = read_first(None, held={1}, want=set(range(READ_AHEAD + 1)))
    assert got == set(range(READ_AHEAD + 1)) and depth == window == READ_AHEAD


def test_a_long_round_trip_of_g_widens_the_read_ahead_at_once():
    # the g before the first blocks took over SLOW (the far profile: 0.15 s or more): the
    # read starts 8 deep, not 4 (the blocks past the first are held: no epoch ends)
    held = set(range(1, 64))
    got, depth, _ = read_first(None, held, round_trip=SLOW + 0.05, want=set(range(9)))
    assert got == set(range(9)) and depth == 2 * READ_AHEAD
    got, depth, _ = read_first(None, held, round_trip=0.0, want=set(range(READ_AHEAD + 1)))
    assert got == set(range(READ_AHEAD + 1)) and depth == READ_AHEAD
