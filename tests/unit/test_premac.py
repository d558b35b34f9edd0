"""writeback.premac: chunk MACs made while a staged copy is written, and the rules that keep
them true to the bytes the upload sends (issue 12, upload during the write)."""
from __future__ import annotations

import os
import time

import pytest

from megafs import chunks, crypto, sealing
from megafs.api.upload import _known_macs
from megafs.writeback import premac as premac_mod
from megafs.writeback.premac import STEP, Premac


def _write(tracker: Premac, fd: int, data: bytes, offset: int) -> None:
    """What FileIO.write does around its pwrite."""
    tracker.before_write(offset)
    n = os.pwrite(fd, data, offset)
    tracker.after_write(offset, n)


def _settle(tracker: Premac) -> None:
    deadline = time.monotonic() + 20
    while tracker._running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not tracker._running


def _expected(key: crypto.FileKey, data: bytes, upto: int) -> dict[int, bytes]:
    return dict(sealing.chunk_macs(key.aes_key, key.nonce, 0, memoryview(data[:upto]),
                                   parallel=False))


@pytest.fixture
def staged(tmp_path):
    path = str(tmp_path / "copy")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    yield path, fd
    os.close(fd)


def test_sequential_writes_get_every_complete_chunk_maced(staged):
    path, fd = staged
    data = os.urandom(3 * STEP + 123_457)
    tracker = Premac()
    tracker.start(path)
    for pos in range(0, len(data), 131072):        # 128 KiB FUSE writes, as cp sends them
        _write(tracker, fd, data[pos:pos + 131072], pos)
    _settle(tracker)
    got = tracker.take(len(data))
    assert got is not None
    key, macs = got
    assert macs, "no background step ran"
    done = max(macs) + chunks.size_at(max(macs))
    assert done >= 2 * STEP                        # all but the last step's worth is MACed
    assert macs == _expected(key, data, done)
    # the uploader finds every MAC of a span inside the MACed part, none past it
    assert _known_macs(macs, 0, done) == sorted(macs.items())
    assert _known_macs(macs, 0, done + chunks.MIB) is None
    # spent: a second upload (after more appends) gets nothing and uses a fresh key
    assert tracker.take(len(data)) is None


def test_a_rewrite_anywhere_but_the_end_gives_up(staged):
    path, fd = staged
    data = bytearray(os.urandom(2 * STEP + 4096))
    tracker = Premac()
    tracker.start(path)
    for pos in range(0, len(data), chunks.MIB):
        _write(tracker, fd, bytes(data[pos:pos + chunks.MIB]), pos)
    _settle(tracker)
    _write(tracker, fd, b"x" * 10, 5)              # seek back and rewrite
    data[5:15] = b"x" * 10
    assert tracker.take(len(data)) is None


def test_size_other_than_what_was_written_in_order_gets_nothing(staged):
    path, fd = staged
    tracker = Premac()
    tracker.start(path)
    _write(tracker, fd, b"a" * 1000, 0)
    assert tracker.take(2000) is None              # e.g. grown by a truncate meanwhile


def test_truncate_to_zero_starts_again_with_a_new_key(staged):
    path, fd = staged
    tracker = Premac()
    tracker.start(path)
    _write(tracker, fd, os.urandom(1000), 0)
    first_key = tracker._key
    tracker.start(path)                            # what FileIO does for truncate(0)
    os.ftruncate(fd, 0)
    data = os.urandom(STEP + chunks.MIB)
    _write(tracker, fd, data, 0)
    _settle(tracker)
    key, macs = tracker.take(len(data))
    assert key != first_key
    assert macs == _expected(key, data, max(macs) + chunks.size_at(max(macs)))


def test_a_step_that_read_rewritten_bytes_is_discarded(staged, monkeypatch):
    """The race the epoch closes: the background step reads, then a rewrite gives up before
    the step stores its MACs."""
    path, fd = staged
    data = os.urandom(STEP + chunks.MIB)
    tracker = Premac()
    tracker.start(path)
    real = sealing.chunk_macs

    def slow_macs(*args, **kwargs):
        out = real(*args, **kwargs)
        tracker.before_write(0)                    # a rewrite arrives while the step runs
        return out

    monkeypatch.setattr(premac_mod.sealing, "chunk_macs", slow_macs)
    _write(tracker, fd, data, 0)
    _settle(tracker)
    assert tracker._macs == {}
    assert tracker.take(len(data)) is None


def test_a_file_never_started_is_not_tracked(staged):
    path, fd = staged
    tracker = Premac()                             # e.g. an existing file opened for append
    _write(tracker, fd, os.urandom(STEP * 2), 0)
    assert tracker.take(STEP * 2) is None
