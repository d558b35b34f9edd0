"""``queue.sqlite``: the durable rows of the write-back queue, with group commit.

One row per file with local state that must survive a crash (a flushed but not yet uploaded
file, a rename or touch not yet applied remotely, a removal not yet applied).  The database is
opened in WAL mode with ``synchronous=FULL``, so a committed row survives power loss.  Rows of
threads saving at the same time share one transaction (one WAL fsync): a FUSE flush and the
committer's batch of state changes do not queue for one fsync each.  A per-row sequence number
keeps an older snapshot from overwriting a newer one.  Also the persistent request id that
every mount of this queue sends as ``i`` (so the change feed can tell our own packets).

Rows of retired files are deleted *lazily* (``delete(..., then=...)``): the delete rides on the
next transaction of anyone (a flush's row, the committer's batch) or a background commit
within ``LAZY_DELAY``, and ``then`` (removing the staged copy) runs only once it is durable.
A retired file's leftover row is harmless (its plan is DONE: the next mount retires it at
once, see the crash table in ``megafs/ARCHITECTURE.md``), and no later row is ever committed
without the deletes queued before it, so a crash never keeps an old row that a later change
made wrong.  Retiring each of 300 small files with its own fsync'd delete, under the
namespace lock, held every ``create`` behind it: about a third of a ``cp -r``'s time.

Small files' bytes ride in the journal (issue 23): a file of at most ``JOURNAL_MAX`` bytes
closed through the mount is not fsync'd in ``staging/``; its bytes go into the ``journal``
table, tagged with the generation they are, in the same transaction (one WAL fsync) as its
row, and every later row of that generation written before they were durable carries them
too.  So ``close`` costs one sync instead of two (the staged copy's fsync, then the row's), and
concurrent closes share it.  Recovery writes a row's journal bytes back to its staged copy
(fsync'd) when their generation is the row's (``journal_bytes``); an older generation's bytes
are ignored (the newer one was fsync'd in ``staging/``) and go with the row.

No locks of the write-back are taken here; the store has its own.  Never logs keys or links.
"""
from __future__ import annotations

import errno
import logging
import os
import secrets
import sqlite3
import string
import threading
import time
from typing import Any, Callable, Iterable

from .. import config
from .diskerrors import QueueUnusable, queue_error
from .record import Record
from .rows import ADDED, COLUMNS, legacy_rows, open_db, record_of, row_of

log = logging.getLogger(__name__)

_DELETED = 1 << 62        # sequence number of a deleted row: no older snapshot re-inserts it
LAZY_DELAY = 0.05         # seconds a lazy delete waits for a transaction to ride on
JOURNAL_MAX = 128 << 10   # bytes: a file this small is made durable in the journal on close

# A row as snapshotted: (sequence number, row, the file's bytes not yet durable as
# (generation, bytes), or None)
Snapshot = tuple[int, tuple, tuple[int, bytes] | None]


class QueueStore:
    """Rows of one mount's queue; thread-safe.  See the module docstring."""

    def __init__(self, mount_dir: str) -> None:
        self.path = os.path.join(mount_dir, "queue.sqlite")
        self.db = open_db(self.path)
        self._db_lock = threading.Lock()
        self._written: dict[str, int] = {}
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._closed = False
        # group commit: one leader writes the rows gathered so far, the others wait for it
        self._gc = threading.Condition(threading.Lock())
        self._gc_rows: list[Snapshot] = []
        self._gc_open = 0
        self._gc_done = 0
        self._gc_leader = False
        self._gc_failed: dict[int, BaseException] = {}
        # lazy deletes (guarded by _lazy_cond): rids to delete, then what to run after
        self._lazy_cond = threading.Condition(threading.Lock())
        self._lazy: list[str] = []
        self._lazy_then: list[Callable[[], None]] = []
        self._after: list[Callable[[], None]] = []      # durable, to run on the flusher
        self._flusher: threading.Thread | None = None

    def snapshot(self, recs: Iterable[tuple[Record, str] |
                                      tuple[Record, str, tuple[int, bytes] | None]]
                 ) -> list[Snapshot]:
        """Sequence-numbered rows of (record, shown state[, bytes to journal]) as they are
        now (call under the write-back lock, then ``write`` them after releasing it).  The
        bytes to journal: (generation, the staged copy's bytes) of a small file whose bytes
        are not yet durable, else None."""
        with self._seq_lock:
            out: list[Snapshot] = []
            for item in recs:
                self._seq += 1
                journal = item[2] if len(item) > 2 else None    # type: ignore[misc]
                out.append((self._seq, row_of(item[0], item[1]), journal))
            return out

    def write(self, rows: list[Snapshot]) -> None:
        """Commit rows durably before returning (group commit with concurrent writers)."""
        if not rows:
            return
        with self._gc:
            self._gc_rows.extend(rows)
            mine = self._gc_open
            while self._gc_done <= mine:
                if self._gc_leader:
                    self._gc.wait()
                    continue
                self._gc_leader = True
                batch, self._gc_rows = self._gc_rows, []
                bid = self._gc_open
                self._gc_open += 1
                self._gc.release()
                error: BaseException | None = None
                try:
                    self._commit(batch)
                except BaseException as exc:   # handed to every thread of this batch
                    error = exc
                finally:
                    self._gc.acquire()
                    self._gc_leader = False
                    self._gc_done = bid + 1
                    if error is not None:
                        self._gc_failed[bid] = error
                        while len(self._gc_failed) > 64:
                            self._gc_failed.pop(next(iter(self._gc_failed)))
                    self._gc.notify_all()
            failed = self._gc_failed.get(mine)
        if failed is not None:
            raise failed

    def _commit(self, rows: list[Snapshot], deletes: Iterable[str] = ()) -> None:
        """One transaction: ``deletes`` and the lazy deletes queued so far, then ``rows``
        with their journal bytes."""
        with self._db_lock:
            if self._closed:
                return
            gone, then = self._take_lazy()
            gone.extend(deletes)
            fresh: dict[str, Snapshot] = {}
            for seq, row, journal in rows:
                rid = row[0]
                if self._written.get(rid, -1) < seq and fresh.get(rid, (-1,))[0] < seq:
                    fresh[rid] = (seq, row, journal)
            if fresh or gone:
                try:
                    self._transaction(gone, fresh)
                except BaseException:
                    self._requeue_lazy(gone, then)
                    raise
            for rid, (seq, _row, _journal) in fresh.items():
                self._written[rid] = seq
        if then:
            with self._lazy_cond:
                self._after.extend(then)
                self._lazy_cond.notify_all()

    def _transaction(self, gone: list[str], fresh: dict[str, Snapshot]) -> None:
        """Delete ``gone`` and write ``fresh`` (rows and journal bytes) in one transaction
        (QueueUnusable if the database refuses: ENOSPC when its disk is full)."""
        try:
            with self.db:
                if gone:
                    self.db.executemany("DELETE FROM files WHERE rid = ?", [(r,) for r in gone])
                    self.db.executemany("DELETE FROM journal WHERE rid = ?",
                                        [(r,) for r in gone])
                if fresh:
                    self.db.executemany(
                        "INSERT OR REPLACE INTO files (%s) VALUES (%s)"
                        % (",".join(COLUMNS), ",".join("?" * len(COLUMNS))),
                        [row for _seq, row, _journal in fresh.values()])
                    self.db.executemany(
                        "INSERT OR REPLACE INTO journal (rid, generation, data) VALUES (?,?,?)",
                        [(rid, journal[0], journal[1])
                         for rid, (_seq, _row, journal) in fresh.items() if journal])
        except sqlite3.Error as exc:
            raise queue_error(self.path, exc) from None

    def delete(self, rids: Iterable[str], *, then: Callable[[], None] | None = None) -> None:
        """Remove rows durably (an older snapshot written later cannot bring one back).

        With ``then`` the delete is lazy (see the module docstring): this returns at once and
        ``then`` runs on the store's flusher thread once the delete is durable."""
        rids = list(rids)
        if not rids:
            if then is not None:
                then()
            return
        with self._db_lock:
            if self._closed:
                return
            for rid in rids:
                self._written[rid] = _DELETED
        if then is None:
            try:
                self._commit([], rids)
                return
            except QueueUnusable as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                # A full disk must not keep a file from being removed (that frees space):
                # the delete was queued again (``_commit``) and goes with the next
                # transaction once there is room; a crash before that leaves the row.
                rids = []
        with self._lazy_cond:
            self._lazy.extend(rids)
            if then is not None:
                self._lazy_then.append(then)
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_lazy, daemon=True,
                                                 name="megafs-queue-flush")
                self._flusher.start()
            self._lazy_cond.notify_all()

    def _take_lazy(self) -> tuple[list[str], list[Callable[[], None]]]:
        with self._lazy_cond:
            gone, then = self._lazy, self._lazy_then
            self._lazy, self._lazy_then = [], []
        return gone, then

    def _requeue_lazy(self, gone: list[str], then: list[Callable[[], None]]) -> None:
        with self._lazy_cond:
            self._lazy[:0] = gone
            self._lazy_then[:0] = then

    def _flush_lazy(self) -> None:
        """Commit lazy deletes that found no transaction to ride on within ``LAZY_DELAY``,
        and run what waits for them."""
        while True:
            with self._lazy_cond:
                while not self._lazy and not self._after and not self._closed:
                    self._lazy_cond.wait()
                after, self._after = self._after, []
                pending = bool(self._lazy) and not self._closed
            for func in after:
                try:
                    func()
                except Exception:            # a cleanup step; never stop the flusher
                    log.error("unexpected error after a queue delete", exc_info=True)
            if self._closed and not after:
                return
            if pending:
                time.sleep(LAZY_DELAY)
                try:
                    self._commit([])
                except Exception as exc:     # retried with the next transaction
                    # a full disk was said already (``disk_full``, rate-limited)
                    full = getattr(exc, "errno", None) == errno.ENOSPC
                    log.log(logging.DEBUG if full else logging.WARNING,
                            "could not delete finished queue rows yet: %s", exc)
                    time.sleep(1.0)

    def forget(self, rid: str) -> None:
        """A deleted row's id will not be used again: drop its bookkeeping."""
        with self._db_lock:
            if self._written.get(rid) == _DELETED:
                del self._written[rid]

    def load(self) -> list[Record]:
        """Every row, as records (at mount time)."""
        with self._db_lock:
            try:
                rows = self.db.execute("SELECT %s FROM files" % ",".join(COLUMNS)).fetchall()
                legacy = legacy_rows(self.db)
            except sqlite3.Error as exc:
                raise queue_error(self.path, exc) from None
        return [record_of(row) for row in rows] + legacy

    def journal_bytes(self, rec: Record) -> bytes | None:
        """The bytes of ``rec``'s current generation kept in the journal (at mount time), or
        None if its generation was made durable in ``staging/`` (or it has none)."""
        with self._db_lock:
            try:
                got = self.db.execute("SELECT generation, data FROM journal WHERE rid = ?",
                                      (rec.rid,)).fetchone()
            except sqlite3.Error as exc:
                raise queue_error(self.path, exc) from None
        if got is None or got[0] != rec.generation:
            return None
        return bytes(got[1])

    def close(self) -> None:
        """Commit the lazy deletes, run what waits for them, and close the database."""
        try:
            self._commit([])
        except Exception as exc:
            log.warning("could not delete finished queue rows: %s", exc)
        with self._lazy_cond:
            after, self._after = self._after, []
        for func in after:
            try:
                func()
            except Exception:
                log.error("unexpected error after a queue delete", exc_info=True)
        with self._db_lock:
            self._closed = True
            with self._lazy_cond:
                self._lazy_cond.notify_all()
            try:
                self.db.close()
            except sqlite3.Error:
                pass


def read_status(mount_dir: str) -> list[dict[str, Any]]:
    """Rows of a (possibly unmounted) queue, for ``megafs status`` without a live mount."""
    path = os.path.join(mount_dir, "queue.sqlite")
    if not os.path.exists(path):
        return []
    db = open_db(path, readonly=True)
    try:
        try:
            have = {row[1] for row in db.execute("PRAGMA table_info(files)")}
            # columns added since (read-only: no ALTER here) read as their default
            defaults = {name: default for name, _definition, default in ADDED}
            cols = [c if c in have else defaults.get(c, c) for c in COLUMNS]
            rows = db.execute("SELECT %s FROM files ORDER BY updated" % ",".join(cols)
                              ).fetchall()
        except sqlite3.OperationalError:      # a queue written by megafs 0.1, never remounted
            return [{"path": n, "state": s, "size": z, "progress": 0, "error": e}
                    for n, s, z, e in db.execute("SELECT name, state, size, error FROM records"
                                                 " WHERE state != 'uploaded'")]
    except sqlite3.Error as exc:
        raise queue_error(path, exc) from None
    finally:
        db.close()
    out = []
    for row in rows:
        rec, state = record_of(row), row[COLUMNS.index("state")]
        if state == "uploaded" or rec.unlinked:
            continue
        if state == "uploading":
            state = "pending"           # nothing uploads while unmounted
        # no next_try: nothing is tried while unmounted; the next mount tries at once
        out.append({"path": rec.path or rec.name, "state": state, "size": rec.size,
                    "progress": 0, "error": rec.error, "attempts": rec.attempts,
                    "next_try": None})
    return out


def mark_failed_for_retry(mount_dir: str) -> int:
    """``megafs retry`` when the mount is not running: failed rows retry at the next mount."""
    path = os.path.join(mount_dir, "queue.sqlite")
    if not os.path.exists(path):
        return 0
    db = open_db(path)
    try:
        with db:
            cur = db.execute("UPDATE files SET failed = 0, attempts = 0, error = NULL,"
                             " state = 'pending' WHERE failed = 1")
            return cur.rowcount
    except sqlite3.Error as exc:
        raise queue_error(path, exc) from None
    finally:
        db.close()


_ALPHABET = string.ascii_letters + string.digits


def persistent_request_id(mount_dir: str) -> str:
    """The request id ``i`` every mount of this queue sends (10 letters/digits, kept in
    ``<mount_dir>/request-id``): the change feed tells our own packets, including those of a
    killed earlier mount, from other clients' changes."""
    path = os.path.join(mount_dir, "request-id")
    try:
        with open(path) as fh:
            value = fh.read().strip()
        if len(value) == 10 and value.isalnum():
            return value
    except OSError:
        pass
    value = "".join(secrets.choice(_ALPHABET) for _ in range(10))
    config.atomic_write(path, value)
    return value
