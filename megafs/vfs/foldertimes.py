"""Folder mtimes that survive a remount (issue 22), kept in the mount's local state.

MEGA has no folder mtime: the SDK reads a node's mtime only from a *file's* ``c`` fingerprint
(meganz/sdk ``src/node.cpp``: ``Node::setfingerprint`` runs for ``FILENODE`` only and
``NodeData::getMtime`` answers 0 for anything else), and a folder's ``ts`` is its creation.
Writing a folder's time into its attributes on every create, unlink or rename would cost one
``a`` request per entry change, so the time an entry change gives a folder is kept here, in
``<mount dir>/folder-times.sqlite`` (0600 in the 0700 mount dir), as a local disk keeps it.
An explicit ``touch`` of a folder goes to MEGA instead (``t`` and ``mfs-mt``, see
``FileSystem.utimens``) and drops the local time.

Each time is stored with the node's own mtime when it was taken (its *base*): once the node's
mtime differs (another client touched the folder) the node wins.  Changes reach the file at
most ``DELAY`` seconds later (one transaction for all), and at ``close``; a crash may lose the
last second's times (the folder then shows its node's time again).  At most ``MAX_FOLDERS``
times are kept; past that the oldest tenth is forgotten.  A damaged or unwritable file is
logged once and the times live in memory only.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading

log = logging.getLogger(__name__)

FILE_NAME = "folder-times.sqlite"
MAX_FOLDERS = 100_000
DELAY = 1.0          # seconds from a change to its write


class FolderTimes:
    """Folder handle -> (mtime ns, base ns): see the module docstring.

    ``get`` takes no lock (one dict lookup); ``set``/``drop`` take a short lock and schedule a
    write; ``close`` writes what is left.  ``path`` None keeps them in memory only (tests)."""

    def __init__(self, path: str | None, *, max_folders: int = MAX_FOLDERS,
                 delay: float = DELAY) -> None:
        self.path = path
        self.max = max_folders
        self.delay = delay
        self._times: dict[str, tuple[int, int]] = {}
        self._dirty: dict[str, tuple[int, int] | None] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._db: sqlite3.Connection | None = None
        self._closed = False
        if path is not None:
            self._open(path)

    # --- reading ----------------------------------------------------------------------------
    def get(self, handle: str, base_ns: int) -> int | None:
        """The folder's mtime (ns) set here, or None when there is none or the node's own
        mtime ``base_ns`` has changed since it was set."""
        kept = self._times.get(handle)
        if kept is None or kept[1] != base_ns:
            return None
        return kept[0]

    def __len__(self) -> int:
        return len(self._times)

    # --- changes ----------------------------------------------------------------------------
    def set(self, handle: str, mtime_ns: int, base_ns: int) -> None:
        """The folder ``handle`` changed at ``mtime_ns``; its node's mtime is ``base_ns``."""
        with self._lock:
            self._times[handle] = self._dirty[handle] = (mtime_ns, base_ns)
            if len(self._times) > self.max:
                oldest = sorted(self._times, key=lambda h: self._times[h][0])
                for gone in oldest[:max(1, self.max // 10)]:
                    del self._times[gone]
                    self._dirty[gone] = None
            self._schedule()

    def drop(self, handle: str) -> None:
        """Forget the folder's time (its node's time wins again)."""
        with self._lock:
            if self._times.pop(handle, None) is not None:
                self._dirty[handle] = None
                self._schedule()

    def _schedule(self) -> None:
        if self._db is None or self._timer is not None or self._closed:
            return
        self._timer = threading.Timer(self.delay, self.flush)
        self._timer.daemon = True
        self._timer.name = "megafs-folder-times"
        self._timer.start()

    # --- the file ---------------------------------------------------------------------------
    def _open(self, path: str) -> None:
        try:
            self._db = self._connect(path)
            rows = self._db.execute("SELECT handle, mtime_ns, base_ns FROM times").fetchall()
        except (sqlite3.Error, OSError) as exc:
            log.warning("folder times: %s is unusable (%s); starting it again", path, exc)
            self._close_db()
            try:
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(path + suffix):
                        os.unlink(path + suffix)
                self._db = self._connect(path)
            except (sqlite3.Error, OSError) as exc2:
                log.warning("folder times: cannot write %s (%s); keeping them in memory "
                            "until unmount", path, exc2)
                self._close_db()
            return
        for handle, mtime_ns, base_ns in rows[:self.max]:
            if isinstance(handle, str) and isinstance(mtime_ns, int) and isinstance(base_ns, int):
                self._times[handle] = (mtime_ns, base_ns)

    @staticmethod
    def _connect(path: str) -> sqlite3.Connection:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS times (handle TEXT PRIMARY KEY, "
                   "mtime_ns INTEGER NOT NULL, base_ns INTEGER NOT NULL)")
        return db

    def flush(self) -> None:
        """Write the changes made since the last write (one transaction)."""
        with self._write_lock:
            with self._lock:
                self._timer = None
                dirty, self._dirty = self._dirty, {}
            if not dirty or self._db is None:
                return
            puts = [(h, v[0], v[1]) for h, v in dirty.items() if v is not None]
            gone = [(h,) for h, v in dirty.items() if v is None]
            try:
                with self._db:
                    self._db.execute("BEGIN")
                    self._db.executemany("INSERT OR REPLACE INTO times VALUES (?, ?, ?)", puts)
                    self._db.executemany("DELETE FROM times WHERE handle = ?", gone)
            except sqlite3.Error as exc:
                log.warning("folder times: cannot write %s (%s); keeping them in memory "
                            "until unmount", self.path, exc)
                self._close_db()

    def close(self) -> None:
        """Write what is left and close the file (at unmount)."""
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self.flush()
        with self._write_lock:
            self._close_db()

    def _close_db(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None
