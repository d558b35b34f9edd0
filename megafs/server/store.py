"""Persistent state of the local MEGA server: one SQLite database plus ciphertext blob files.

Owns the data directory (layout in ``db.py``), transactions, the blob and part files, the
upload bookkeeping the transfer endpoints need, the bounded action-packet log and the waiters
of the ``sc`` long-poll.  It knows nothing about HTTP or JSON requests and never sees a key.

Crash safety: a node only ever references a blob that is complete and fsynced.  An upload
becomes complete in this order: fsync the part file, commit ``uploads.blob`` +
``completions`` (write-ahead), rename the part file to ``blobs/``.  ``janitor.recover()``
finishes a rename that a crash interrupted and deletes files nothing references, so a crash at
any point leaves either no node or a whole one.  SQLite runs in WAL mode with
``synchronous=NORMAL``: committed transactions survive a killed process (not a power cut).

Concurrency: one connection shared by all threads and guarded by ``State.lock`` (an RLock);
every method below takes it.  Waiters for new action packets use ``State.changed`` (a
Condition with its own lock, never acquired while holding ``State.lock``).
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .datadir import prepare
from .db import (BLOB_ID_RE, DB_NAME, SCHEMA, SCHEMA_VERSION, Upload, fsync_dir, now,
                 random_handle, sid_key, upload_from_row)
from .tx import Tx

log = logging.getLogger(__name__)

PRUNE_SLACK = 10        # prune an account's packet log once it is 1/10 over its bound
SID_STORAGE = "sha256"  # meta 'sids': how session ids are stored (see State._hash_sids)


class State:
    """The server's persistent state: open once per process with ``State(data_dir, quota)``."""

    def __init__(self, data_dir: str | os.PathLike[str], default_quota: int,
                 packet_log: int = 10000) -> None:
        self.data_dir = Path(data_dir)
        self.blob_dir = self.data_dir / "blobs"
        self.upload_dir = self.data_dir / "uploads"
        prepare(self.data_dir)          # 0700 folders, a 0600 database (datadir.py)
        self.default_quota = default_quota
        self.packet_log = packet_log        # packets kept per account (see prune_packets)
        self.lock = threading.RLock()
        self.changed = threading.Condition()
        self.generation = 0          # bumped (under ``changed``) after each commit with packets
        self.stopping = False
        self._since_prune: dict[str, int] = {}
        self.db = sqlite3.connect(str(self.data_dir / DB_NAME), check_same_thread=False,
                                  isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        with self.lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)",
                                (SCHEMA_VERSION,))
            elif row["value"] != SCHEMA_VERSION:
                raise RuntimeError("data directory %s has schema %s, expected %s"
                                   % (self.data_dir, row["value"], SCHEMA_VERSION))
            self._hash_sids()
            # rebuilt once per start, so data made before the triggers existed counts too
            with self.db:
                self.db.execute("DELETE FROM usage")
                self.db.execute("INSERT INTO usage (uh, bytes) SELECT uh, "
                                "COALESCE(SUM(s), 0) FROM nodes WHERE t=0 GROUP BY uh")

    def _hash_sids(self) -> None:
        """Session ids are stored as ``sid_key(sid)`` (a read database gives no session);
        a data dir of an older server, which stored them as they are, is converted once."""
        row = self.db.execute("SELECT value FROM meta WHERE key='sids'").fetchone()
        if row is not None and row["value"] == SID_STORAGE:
            return
        converted = 0
        with self.db:
            for table in ("sessions", "replay"):
                rows = self.db.execute("SELECT rowid, sid FROM %s" % table).fetchall()
                converted += len(rows)
                for r in rows:
                    self.db.execute("UPDATE %s SET sid=? WHERE rowid=?" % table,
                                    (sid_key(r["sid"]), r["rowid"]))
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('sids', ?)",
                            (SID_STORAGE,))
        if converted:
            log.info("stored the %d session id(s) of %s hashed", converted, self.data_dir)

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def stop_waiters(self) -> None:
        with self.changed:
            self.stopping = True
            self.changed.notify_all()

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            tx = Tx(self, self.db)
            try:
                yield tx
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            for uh, n in tx.packets.items():
                self._count_packets(uh, n)
        if tx.packets:
            with self.changed:
                self.generation += 1
                self.changed.notify_all()
        for action in tx._after:
            try:
                action()
            except OSError as exc:
                log.warning("post-commit clean-up failed: %s", exc)

    def read(self) -> Tx:
        """A Tx for single read-only queries (caller holds ``self.lock``)."""
        return Tx(self, self.db)

    # --- the bounded packet log --------------------------------------------------------------
    def _count_packets(self, uh: str, n: int) -> None:
        """Prune ``uh``'s log whenever it may have grown 1/10 past its bound (caller locks)."""
        since = self._since_prune.get(uh, 0) + n
        if since * PRUNE_SLACK >= max(self.packet_log, 1):
            self.prune_packets(uh)
            since = 0
        self._since_prune[uh] = since

    def prune_packets(self, uh: str) -> int:
        """Keep the newest ``packet_log`` packets of ``uh``; raise its floor past the rest."""
        with self.lock:
            row = self.db.execute("SELECT seq FROM packets WHERE uh=? ORDER BY seq DESC "
                                  "LIMIT 1 OFFSET ?", (uh, self.packet_log)).fetchone()
            if row is None:
                return 0
            cut = int(row["seq"])
            with self.db:
                n = self.db.execute("DELETE FROM packets WHERE uh=? AND seq<=?",
                                    (uh, cut)).rowcount
                self.db.execute("INSERT INTO packet_floor (uh, seq) VALUES (?,?) ON CONFLICT(uh)"
                                " DO UPDATE SET seq=MAX(seq, excluded.seq)", (uh, cut))
        log.debug("pruned %d action packet(s) of %s", n, uh)
        return n

    # --- files -----------------------------------------------------------------------------
    def blob_path(self, blob: str) -> Path:
        if not BLOB_ID_RE.match(blob):
            raise ValueError("bad blob id")
        return self.blob_dir / blob

    def part_path(self, token: str) -> Path:
        return self.upload_dir / (token + ".part")

    def collect_blob(self, blob: str) -> bool:
        """Delete a blob file once no node and no unused completion token references it."""
        with self.lock:
            if self.blob_referenced(blob):
                return False
            try:
                self.blob_path(blob).unlink()
            except FileNotFoundError:
                return False
            return True

    def blob_referenced(self, blob: str) -> bool:
        with self.lock:
            return bool(self.db.execute(
                "SELECT 1 FROM nodes WHERE blob=? UNION ALL "
                "SELECT 1 FROM completions WHERE blob=? AND node IS NULL LIMIT 1",
                (blob, blob)).fetchone())

    def remove_part(self, token: str) -> int:
        """Delete an upload's part file; the bytes it held."""
        path = self.part_path(token)
        try:
            size = path.stat().st_blocks * 512
            path.unlink()
        except FileNotFoundError:
            return 0
        return size

    # --- uploads (called by transfers.py; data writes happen outside the lock) ---------------
    def upload(self, token: str) -> Upload | None:
        with self.lock:
            row = self.db.execute("SELECT * FROM uploads WHERE token=?", (token,)).fetchone()
        return None if row is None else upload_from_row(row)

    def save_ranges(self, token: str, ranges: list[list[int]]) -> None:
        with self.lock:
            self.db.execute("UPDATE uploads SET ranges=? WHERE token=?",
                            (json.dumps(ranges), token))

    def expire_upload(self, token: str) -> int:
        """The upload URL answers -8 from now on; its bytes are deleted at once."""
        with self.lock:
            # ``expired`` holds when (0: not expired), so the janitor can forget it later
            self.db.execute("UPDATE uploads SET expired=? WHERE token=? AND blob IS NULL",
                            (now(), token))
        return self.remove_part(token)

    def complete_upload(self, up: Upload, ranges: list[list[int]], completion: bytes) -> str:
        """Record (write-ahead) that the part file becomes a blob, then rename it into place."""
        blob = random_handle(16)
        with self.transaction() as tx:
            tx.execute("UPDATE uploads SET ranges=?, completion=?, blob=? WHERE token=?",
                       (json.dumps(ranges), completion.hex(), blob, up.token))
            tx.execute("INSERT INTO completions (token, uh, size, blob, created) "
                       "VALUES (?,?,?,?,?)", (completion.hex(), up.uh, up.size, blob, now()))
        os.replace(self.part_path(up.token), self.blob_path(blob))
        fsync_dir(self.blob_dir)
        return blob

    # --- counts for stats ------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self.lock:
            out = {}
            for table in ("accounts", "sessions", "nodes", "public", "packets", "uploads",
                          "completions"):
                out[table] = int(self.db.execute("SELECT COUNT(*) FROM %s" % table)
                                 .fetchone()[0])
            return out

    # --- long-poll ---------------------------------------------------------------------------
    def has_packets_after(self, uh: str, seq: int) -> bool:
        with self.lock:
            return bool(self.db.execute("SELECT 1 FROM packets WHERE uh=? AND seq>? LIMIT 1",
                                        (uh, seq)).fetchone())

    def wait_for_packets(self, uh: str, seq: int, timeout: float) -> bool:
        """Block until ``uh`` has packets after ``seq``, the timeout passes, or we stop."""
        deadline = time.monotonic() + timeout
        while True:
            with self.changed:
                generation = self.generation
            if self.has_packets_after(uh, seq):
                return True
            with self.changed:
                while self.generation == generation and not self.stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self.changed.wait(remaining)
                if self.stopping:
                    return False
