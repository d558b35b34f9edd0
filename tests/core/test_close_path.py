"""The close path of small files (issue 23): what closing a file costs in syncs, and where a
small file's bytes are durable (the queue's journal, in the same commit as its row).

In-process, against the real local server, with the write-back not started: nothing but the
closes writes to the queue, so every commit counted is a close's."""
from __future__ import annotations

import os
import sqlite3

import pytest

from megafs.mount.runtime import MountConfig, MountRuntime
from megafs.writeback.store import JOURNAL_MAX


def runtime(api: str, state: str) -> MountRuntime:
    return MountRuntime(MountConfig(state_dir=state, api=api)).__enter__()


def write(rt: MountRuntime, path: str, data: bytes) -> None:
    fh = rt.fs.create(path, os.O_WRONLY | os.O_TRUNC)
    for off in range(0, len(data), 131072):
        rt.fs.write(fh, data[off:off + 131072], off)
    rt.fs.flush(fh)           # close(2)
    rt.fs.release(fh)


def read(rt: MountRuntime, path: str) -> bytes:
    fh = rt.fs.open(path, os.O_RDONLY)
    try:
        return rt.fs.read(fh, 1 << 20, 0)
    finally:
        rt.fs.release(fh)


class Syncs:
    """Counts the syncs of the process: ``os.fsync``/``os.fdatasync`` calls, and commits of
    the queue's database, each one WAL sync (WAL mode, ``synchronous=FULL``, checked)."""

    def __init__(self, rt: MountRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fsync = self.commits = 0
        store = rt.wb.store
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2       # FULL
        real_fsync, real_fdatasync, real_tx = os.fsync, os.fdatasync, store._transaction

        def fsync(fd: int) -> None:
            self.fsync += 1
            real_fsync(fd)

        def fdatasync(fd: int) -> None:
            self.fsync += 1
            real_fdatasync(fd)

        def transaction(*args):
            self.commits += 1
            return real_tx(*args)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(store, "_transaction", transaction)

    def take(self) -> tuple[int, int]:
        out = (self.fsync, self.commits)
        self.fsync = self.commits = 0
        return out


def test_closing_a_small_file_costs_one_sync_and_its_bytes_are_in_the_journal(
        server, tmp_path, monkeypatch):
    state = str(tmp_path / "state")
    rt = runtime(server.url, state)
    try:
        syncs = Syncs(rt, monkeypatch)
        small = {"/s%02d.bin" % i: os.urandom(4096) for i in range(20)}
        for path, data in small.items():
            write(rt, path, data)
        # one commit per file (its row and its bytes), no fsync: was one fsync of the staged
        # copy and one commit each
        assert syncs.take() == (0, 20)
        write(rt, "/edge.bin", os.urandom(JOURNAL_MAX))
        assert syncs.take() == (0, 1)
        big = os.urandom(JOURNAL_MAX + 1)
        write(rt, "/big.bin", big)
        assert syncs.take() == (1, 1)          # a bigger file: fsync of its copy, its row
        # a small file grown past the limit is fsync'd; its old bytes in the journal are of
        # an older generation than its row, so recovery must not bring them back
        grown = os.urandom(JOURNAL_MAX * 2)
        write(rt, "/s00.bin", grown)
        assert syncs.take() == (1, 1)
        small["/s00.bin"] = grown
        # and shrunk again: back in the journal
        write(rt, "/s01.bin", b"x")
        small["/s01.bin"] = b"x"
        mount_dir = rt.mount_dir
        db = sqlite3.connect(os.path.join(mount_dir, "queue.sqlite"))
        rows = dict(((name, (gen, jgen, size)) for name, gen, jgen, size in db.execute(
            "SELECT f.name, f.generation, j.generation, length(j.data) FROM files f"
            " LEFT JOIN journal j ON j.rid = f.rid")))
        db.close()
        assert rows["s02.bin"] == (1, 1, 4096)
        assert rows["s01.bin"] == (2, 2, 1)
        assert rows["big.bin"] == (1, None, None)
        gen, jgen, _size = rows["s00.bin"]
        assert (gen, jgen) == (2, 1)
    finally:
        rt.close()
    # the staged copies of the small files lost as a power loss could lose unsynced files;
    # the next mount writes them back from the journal (and keeps the fsync'd ones)
    for name in os.listdir(os.path.join(mount_dir, "staging")):
        copy = os.path.join(mount_dir, "staging", name)
        if os.path.getsize(copy) <= JOURNAL_MAX:
            os.unlink(copy)
    rt = runtime(server.url, state)
    try:
        for path, data in small.items():
            assert read(rt, path) == data, path
        assert read(rt, "/big.bin") == big
    finally:
        rt.close()
