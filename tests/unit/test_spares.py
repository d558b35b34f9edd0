"""Spare staged copies (``writeback/spares.py``, issue 23): a retired file's staged copy is
emptied and kept for a new file, which then allocates no inode; what a new file gets is always
empty, whatever a crash left.  Scratch folders only."""
from __future__ import annotations

import os
import stat

from megafs.writeback import spares as S


def _copy(folder, name: str, data: bytes) -> str:
    path = os.path.join(str(folder), name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, data)
    os.close(fd)
    return path


def test_a_given_copy_is_emptied_kept_and_taken_by_a_new_file(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    spares = S.Spares(str(tmp_path))
    assert stat.S_IMODE(os.stat(spares.folder).st_mode) == 0o700
    old = _copy(staging, "a" * 16, os.urandom(5000))
    inode = os.stat(old).st_ino
    spares.give(old)
    assert not os.path.exists(old)
    (kept,) = os.listdir(spares.folder)
    assert os.path.getsize(os.path.join(spares.folder, kept)) == 0
    new = str(staging / ("b" * 16))
    assert spares.take(new)
    st = os.stat(new)
    assert (st.st_ino, st.st_size, stat.S_IMODE(st.st_mode)) == (inode, 0, 0o600)
    assert os.listdir(spares.folder) == [] and len(spares) == 0
    assert not spares.take(str(staging / ("c" * 16)))       # none left: the caller creates
    assert not os.path.exists(staging / ("c" * 16))


def test_spares_outlive_the_mount_and_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "SPARES_MAX", 2)
    spares = S.Spares(str(tmp_path))
    copies = [_copy(tmp_path, "%016x" % i, b"x" * i) for i in range(3)]
    for path in copies:
        spares.give(path)
    assert not any(os.path.exists(p) for p in copies)        # the third one was removed
    assert len(os.listdir(spares.folder)) == 2
    again = S.Spares(str(tmp_path))                          # the next mount finds them
    assert len(again) == 2
    assert again.take(str(tmp_path / "n1")) and again.take(str(tmp_path / "n2"))
    assert not again.take(str(tmp_path / "n3"))


def test_a_taken_spare_is_empty_even_if_a_crash_kept_its_bytes(tmp_path):
    spares_dir = tmp_path / "spare"
    spares_dir.mkdir(mode=0o700)
    # a power loss kept the rename of a spare but not the truncate before it
    _copy(spares_dir, "f" * 16, b"old bytes of a retired file")
    spares = S.Spares(str(tmp_path))
    path = str(tmp_path / "new")
    assert spares.take(path)
    with open(path, "rb") as fh:
        assert fh.read() == b""


def test_a_spare_removed_by_hand_is_skipped(tmp_path):
    spares = S.Spares(str(tmp_path))
    first = _copy(tmp_path, "1" * 16, b"1")
    second = _copy(tmp_path, "2" * 16, b"2")
    spares.give(first)
    spares.give(second)
    names = sorted(os.listdir(spares.folder))
    os.unlink(os.path.join(spares.folder, names[0]))
    assert spares.take(str(tmp_path / "new"))
    assert os.path.getsize(tmp_path / "new") == 0
    assert not spares.take(str(tmp_path / "newer"))
    assert os.listdir(spares.folder) == []
