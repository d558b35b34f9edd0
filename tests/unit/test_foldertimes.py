"""``vfs/foldertimes.py``: folder mtimes kept in the mount dir across remounts (issue 22)."""
from __future__ import annotations

import logging
import os
import stat

from helpers.mount import wait_for
from megafs.vfs.foldertimes import FolderTimes


def test_times_come_back_after_close_and_a_changed_node_wins(tmp_path):
    path = str(tmp_path / "folder-times.sqlite")
    ft = FolderTimes(path, delay=60)
    ft.set("A", 5_000_000_123, 1_000_000_000)
    ft.set("B", 7_000_000_000, 2_000_000_000)
    ft.set("C", 8_000_000_000, 2_000_000_000)
    ft.drop("C")
    assert ft.get("A", 1_000_000_000) == 5_000_000_123
    ft.close()                                  # written at close, long before the delay
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = FolderTimes(path)
    assert again.get("A", 1_000_000_000) == 5_000_000_123
    assert again.get("B", 2_000_000_000) == 7_000_000_000
    assert again.get("C", 2_000_000_000) is None
    # another client touched B since: its node's time wins
    assert again.get("B", 3_000_000_000) is None
    again.close()


def test_changes_are_written_within_the_delay(tmp_path):
    path = str(tmp_path / "ft.sqlite")
    ft = FolderTimes(path, delay=0.05)
    ft.set("A", 42, 1)
    # written without close (as before a crash)
    wait_for(lambda: FolderTimes(path).get("A", 1) == 42, 10, what="the delayed write")
    ft.close()


def test_at_most_max_folders_are_kept_the_oldest_go(tmp_path):
    path = str(tmp_path / "ft.sqlite")
    ft = FolderTimes(path, max_folders=20, delay=60)
    for i in range(25):
        ft.set("H%d" % i, 1000 + i, 0)
    assert len(ft) <= 20
    assert ft.get("H24", 0) == 1024 and ft.get("H0", 0) is None
    ft.close()
    assert len(FolderTimes(path)) == len(ft)


def test_a_damaged_file_is_logged_and_started_again(tmp_path, caplog):
    path = tmp_path / "ft.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING, logger="megafs.vfs.foldertimes"):
        ft = FolderTimes(str(path))
    assert [r.getMessage() for r in caplog.records if "unusable" in r.getMessage()]
    ft.set("A", 1, 0)
    ft.close()
    assert FolderTimes(str(path)).get("A", 0) == 1


def test_an_unwritable_place_keeps_the_times_in_memory(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="megafs.vfs.foldertimes"):
        ft = FolderTimes(str(tmp_path / "missing-dir" / "ft.sqlite"))
    assert "in memory" in caplog.text
    ft.set("A", 9, 0)
    assert ft.get("A", 0) == 9
    ft.close()
