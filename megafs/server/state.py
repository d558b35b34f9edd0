"""Persistent state of the local MEGA server: one SQLite database plus ciphertext blob files.

Owns the data directory layout, the schema, transactions, and every query the command handlers
and the transfer endpoints need.  It knows nothing about HTTP or JSON requests and never sees a
key: node keys and attributes are opaque strings the clients encrypted.

Layout of ``--data DIR``::

    megafs-server.db (+ -wal, -shm)   accounts, sessions, nodes, public handles, action packets,
                                      uploads in progress, completion tokens, the id-replay cache
    uploads/<upload token>.part       ciphertext of an upload that is still missing bytes
    blobs/<blob id>                   ciphertext of a complete upload (referenced by nodes or by
                                      a not yet used completion token)

Crash safety: a node only ever references a blob that is complete and fsynced.  An upload
becomes complete in this order: fsync the part file, commit ``uploads.blob`` +
``completions`` (write-ahead), rename the part file to ``blobs/``.  ``recover()`` finishes a
rename that a crash interrupted and deletes files nothing references, so a crash at any point
leaves either no node or a whole one.  SQLite runs in WAL mode with ``synchronous=NORMAL``:
committed transactions survive a killed process (not necessarily a power cut).

Concurrency: one connection shared by all threads and guarded by ``State.lock`` (an RLock);
every method below takes it.  A ``Tx`` exists only while its thread holds the lock.  Waiters
for new action packets use ``State.changed`` (a Condition with its own lock, never acquired
while holding ``State.lock``).
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import sqlite3
import struct
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import crypto

log = logging.getLogger(__name__)

DB_NAME = "megafs-server.db"
SCHEMA_VERSION = "1"
ROOT_TYPES = (2, 3, 4)          # Cloud Drive, Inbox (Vault), Rubbish bin
CONTAINER_TYPES = (1, 2, 3, 4)  # anything that may have children
# Uploads and unused completion tokens older than this are dropped at start-up (the SDK keeps
# an upload URL for 172500 s; a little more here).
STALE_SECONDS = 48 * 3600
# Replayed responses are kept this long; clients retry within seconds or minutes.
REPLAY_SECONDS = 3600
BLOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    uh TEXT PRIMARY KEY, k TEXT NOT NULL, ts TEXT NOT NULL, created INTEGER NOT NULL,
    quota INTEGER);
CREATE TABLE IF NOT EXISTS sessions (
    sid TEXT PRIMARY KEY, uh TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    h TEXT PRIMARY KEY, uh TEXT NOT NULL, p TEXT NOT NULL, t INTEGER NOT NULL, a TEXT NOT NULL,
    k TEXT NOT NULL, s INTEGER, ts INTEGER NOT NULL, blob TEXT);
CREATE INDEX IF NOT EXISTS nodes_uh ON nodes(uh);
CREATE INDEX IF NOT EXISTS nodes_p ON nodes(p);
CREATE INDEX IF NOT EXISTS nodes_blob ON nodes(blob);
CREATE TABLE IF NOT EXISTS public (
    ph TEXT PRIMARY KEY, h TEXT NOT NULL UNIQUE, uh TEXT NOT NULL, ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS packets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, uh TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS packets_uh ON packets(uh, seq);
CREATE TABLE IF NOT EXISTS uploads (
    token TEXT PRIMARY KEY, uh TEXT NOT NULL, size INTEGER NOT NULL, raw INTEGER NOT NULL,
    created INTEGER NOT NULL, ranges TEXT NOT NULL, expired INTEGER NOT NULL DEFAULT 0,
    completion TEXT, blob TEXT);
CREATE TABLE IF NOT EXISTS completions (
    token TEXT PRIMARY KEY, uh TEXT NOT NULL, size INTEGER NOT NULL, blob TEXT NOT NULL,
    created INTEGER NOT NULL, node TEXT);
CREATE INDEX IF NOT EXISTS completions_blob ON completions(blob);
CREATE TABLE IF NOT EXISTS replay (
    sid TEXT NOT NULL, rid TEXT NOT NULL, digest BLOB NOT NULL, response BLOB NOT NULL,
    created INTEGER NOT NULL, PRIMARY KEY (sid, rid));
-- Bytes of file nodes per account, kept by triggers inside the same transactions as the node
-- changes: `u` and `p` check the quota on every call, and a SUM over an account of 18,000
-- nodes took a quarter of the server's time in a small-files run.
CREATE TABLE IF NOT EXISTS usage (uh TEXT PRIMARY KEY, bytes INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS usage_add AFTER INSERT ON nodes WHEN NEW.t = 0 BEGIN
    INSERT INTO usage (uh, bytes) VALUES (NEW.uh, COALESCE(NEW.s, 0))
    ON CONFLICT(uh) DO UPDATE SET bytes = bytes + COALESCE(NEW.s, 0);
END;
CREATE TRIGGER IF NOT EXISTS usage_del AFTER DELETE ON nodes WHEN OLD.t = 0 BEGIN
    UPDATE usage SET bytes = bytes - COALESCE(OLD.s, 0) WHERE uh = OLD.uh;
END;
"""


def now() -> int:
    return int(time.time())


def encode_sn(seq: int) -> str:
    """The opaque 11-character sequence number clients see (8 bytes, base64url)."""
    return crypto.b64encode(struct.pack(">Q", seq))


def decode_sn(sn: str) -> int | None:
    try:
        raw = crypto.b64decode(sn)
    except ValueError:
        return None
    if len(raw) != 8:
        return None
    return struct.unpack(">Q", raw)[0]


def random_handle(nbytes: int) -> str:
    return crypto.b64encode(secrets.token_bytes(nbytes))


@dataclass
class Upload:
    token: str
    uh: str
    size: int
    raw: bool
    created: int
    ranges: list[list[int]]
    expired: bool
    completion: bytes | None     # the 36-byte completion token once all bytes are in
    blob: str | None


def merge_ranges(ranges: list[list[int]], start: int, end: int) -> list[list[int]]:
    """Add [start, end) to a sorted list of disjoint half-open ranges, merging neighbours."""
    if end <= start:
        return [list(r) for r in ranges]
    out: list[list[int]] = []
    placed = False
    for a, b in sorted(ranges):
        if b < start:
            out.append([a, b])
        elif a > end:
            if not placed:
                out.append([start, end])
                placed = True
            out.append([a, b])
        else:
            start, end = min(a, start), max(b, end)
    if not placed:
        out.append([start, end])
    return sorted(out)


def covers(ranges: list[list[int]], size: int) -> bool:
    return size == 0 or (len(ranges) == 1 and ranges[0][0] == 0 and ranges[0][1] >= size)


@dataclass
class Tx:
    """One open transaction; only valid inside ``State.transaction()``."""

    state: "State"
    db: sqlite3.Connection
    _after: list[Callable[[], None]] = field(default_factory=list)
    packets: int = 0

    def execute(self, sql: str, params: tuple | list = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, params)

    def after_commit(self, action: Callable[[], None]) -> None:
        self._after.append(action)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested unit (one command of a batch): rolled back alone if it raises."""
        self.db.execute("SAVEPOINT cmd")
        mark_after, mark_packets = len(self._after), self.packets
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK TO cmd")
            self.db.execute("RELEASE cmd")
            del self._after[mark_after:]
            self.packets = mark_packets
            raise
        self.db.execute("RELEASE cmd")

    # --- accounts and sessions -------------------------------------------------------------
    def account(self, uh: str) -> sqlite3.Row | None:
        return self.execute("SELECT * FROM accounts WHERE uh=?", (uh,)).fetchone()

    def create_account(self, k: str, ts: str) -> str:
        created = now()
        while True:
            uh = random_handle(8)
            try:
                self.execute("INSERT INTO accounts (uh, k, ts, created) VALUES (?,?,?,?)",
                             (uh, k, ts, created))
                break
            except sqlite3.IntegrityError:
                continue
        for t in ROOT_TYPES:
            self.insert_node(uh=uh, p="", t=t, a="", k="", s=None, blob=None)
        return uh

    def add_session(self, sid: str, uh: str) -> None:
        self.execute("INSERT OR REPLACE INTO sessions (sid, uh, created) VALUES (?,?,?)",
                     (sid, uh, now()))

    def session_user(self, sid: str) -> str | None:
        row = self.execute("SELECT uh FROM sessions WHERE sid=?", (sid,)).fetchone()
        return row["uh"] if row else None

    def drop_session(self, sid: str) -> None:
        self.execute("DELETE FROM sessions WHERE sid=?", (sid,))

    def quota(self, uh: str) -> int:
        row = self.account(uh)
        if row is not None and row["quota"] is not None:
            return int(row["quota"])
        return self.state.default_quota

    def used_bytes(self, uh: str) -> int:
        row = self.execute("SELECT bytes FROM usage WHERE uh=?", (uh,)).fetchone()
        return int(row["bytes"]) if row is not None else 0

    # --- nodes -----------------------------------------------------------------------------
    def node(self, h: str, uh: str | None = None) -> sqlite3.Row | None:
        if not isinstance(h, str):
            return None
        row = self.execute("SELECT * FROM nodes WHERE h=?", (h,)).fetchone()
        if row is None or (uh is not None and row["uh"] != uh):
            return None
        return row

    def insert_node(self, *, uh: str, p: str, t: int, a: str, k: str, s: int | None,
                    blob: str | None) -> sqlite3.Row:
        ts = now()
        while True:
            h = random_handle(6)
            try:
                self.execute("INSERT INTO nodes (h, uh, p, t, a, k, s, ts, blob) "
                             "VALUES (?,?,?,?,?,?,?,?,?)", (h, uh, p, t, a, k, s, ts, blob))
                break
            except sqlite3.IntegrityError:
                continue
        row = self.node(h)
        assert row is not None
        return row

    def account_nodes(self, uh: str) -> list[sqlite3.Row]:
        """Every node of an account, parents before children (depth first from the roots)."""
        rows = self.execute("SELECT * FROM nodes WHERE uh=? ORDER BY rowid", (uh,)).fetchall()
        return _tree_order(rows)

    def subtree(self, h: str) -> list[sqlite3.Row]:
        """A node and everything below it, parents first."""
        root = self.node(h)
        if root is None:
            return []
        out = [root]
        frontier = [h]
        while frontier:
            marks = ",".join("?" * len(frontier))
            rows = self.execute("SELECT * FROM nodes WHERE p IN (%s) ORDER BY rowid" % marks,
                                frontier).fetchall()
            out.extend(rows)
            frontier = [r["h"] for r in rows]
        return _tree_order(out)

    def move_node(self, h: str, new_parent: str) -> None:
        self.execute("UPDATE nodes SET p=? WHERE h=?", (new_parent, h))

    def set_attrs(self, h: str, a: str) -> None:
        self.execute("UPDATE nodes SET a=? WHERE h=?", (a, h))

    def delete_nodes(self, rows: list[sqlite3.Row]) -> None:
        handles = [r["h"] for r in rows]
        for i in range(0, len(handles), 500):
            part = handles[i:i + 500]
            marks = ",".join("?" * len(part))
            self.execute("DELETE FROM nodes WHERE h IN (%s)" % marks, part)
            self.execute("DELETE FROM public WHERE h IN (%s)" % marks, part)
        for blob in {r["blob"] for r in rows if r["blob"]}:
            self.after_commit(lambda blob=blob: self.state.collect_blob(blob))

    # --- public handles --------------------------------------------------------------------
    def public_of(self, h: str) -> sqlite3.Row | None:
        return self.execute("SELECT * FROM public WHERE h=?", (h,)).fetchone()

    def public_node(self, ph: str) -> sqlite3.Row | None:
        if not isinstance(ph, str):
            return None
        row = self.execute("SELECT h FROM public WHERE ph=?", (ph,)).fetchone()
        return self.node(row["h"]) if row else None

    def create_public(self, h: str, uh: str) -> sqlite3.Row:
        while True:
            ph = random_handle(6)
            try:
                self.execute("INSERT INTO public (ph, h, uh, ts) VALUES (?,?,?,?)",
                             (ph, h, uh, now()))
                break
            except sqlite3.IntegrityError:
                if self.public_of(h) is not None:
                    raise
        row = self.public_of(h)
        assert row is not None
        return row

    def delete_public(self, h: str) -> None:
        self.execute("DELETE FROM public WHERE h=?", (h,))

    def public_handles(self, uh: str) -> list[sqlite3.Row]:
        return self.execute("SELECT * FROM public WHERE uh=? ORDER BY rowid", (uh,)).fetchall()

    # --- action packets --------------------------------------------------------------------
    def emit(self, uh: str, packet: dict[str, Any]) -> None:
        self.execute("INSERT INTO packets (uh, body) VALUES (?,?)",
                     (uh, json.dumps(packet, separators=(",", ":"))))
        self.packets += 1

    def current_seq(self) -> int:
        row = self.execute("SELECT COALESCE(MAX(seq), 0) AS n FROM packets").fetchone()
        seq = int(row["n"])
        # AUTOINCREMENT never reuses a number, even after the newest rows are gone.
        srow = self.execute("SELECT seq FROM sqlite_sequence WHERE name='packets'").fetchone()
        return max(seq, int(srow["seq"]) if srow else 0)

    def packets_after(self, uh: str, seq: int, limit: int) -> list[tuple[int, dict]]:
        rows = self.execute("SELECT seq, body FROM packets WHERE uh=? AND seq>? ORDER BY seq "
                            "LIMIT ?", (uh, seq, limit)).fetchall()
        return [(int(r["seq"]), json.loads(r["body"])) for r in rows]

    # --- uploads ---------------------------------------------------------------------------
    def create_upload(self, uh: str, size: int, raw: bool) -> str:
        while True:
            token = random_handle(16)
            try:
                self.execute("INSERT INTO uploads (token, uh, size, raw, created, ranges) "
                             "VALUES (?,?,?,?,?,?)", (token, uh, size, int(raw), now(), "[]"))
                return token
            except sqlite3.IntegrityError:
                continue

    def completion(self, token: bytes) -> sqlite3.Row | None:
        return self.execute("SELECT * FROM completions WHERE token=?",
                            (token.hex(),)).fetchone()

    def use_completion(self, token: bytes, node: str) -> None:
        self.execute("UPDATE completions SET node=? WHERE token=?", (node, token.hex()))

    # --- replay cache ----------------------------------------------------------------------
    def replay(self, sid: str, rid: str) -> sqlite3.Row | None:
        return self.execute("SELECT digest, response FROM replay WHERE sid=? AND rid=?",
                            (sid, rid)).fetchone()

    def store_replay(self, sid: str, rid: str, digest: bytes, response: bytes) -> None:
        self.execute("INSERT OR REPLACE INTO replay (sid, rid, digest, response, created) "
                     "VALUES (?,?,?,?,?)", (sid, rid, digest, response, now()))
        self.state.replay_writes += 1
        if self.state.replay_writes % 500 == 0:
            self.execute("DELETE FROM replay WHERE created<?", (now() - REPLAY_SECONDS,))


def _tree_order(rows: list[sqlite3.Row]) -> list[sqlite3.Row]:
    """Order rows so every parent precedes its children; keeps creation order among siblings."""
    by_handle = {r["h"]: r for r in rows}
    children: dict[str, list[sqlite3.Row]] = {}
    tops: list[sqlite3.Row] = []
    for r in rows:
        if r["p"] in by_handle:
            children.setdefault(r["p"], []).append(r)
        else:
            tops.append(r)
    out: list[sqlite3.Row] = []
    stack = list(reversed(tops))
    while stack:
        r = stack.pop()
        out.append(r)
        stack.extend(reversed(children.get(r["h"], [])))
    return out


class State:
    """The server's persistent state: open once per process with ``State(data_dir, quota)``."""

    def __init__(self, data_dir: str | os.PathLike[str], default_quota: int) -> None:
        self.data_dir = Path(data_dir)
        self.blob_dir = self.data_dir / "blobs"
        self.upload_dir = self.data_dir / "uploads"
        for d in (self.data_dir, self.blob_dir, self.upload_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.default_quota = default_quota
        self.lock = threading.RLock()
        self.changed = threading.Condition()
        self.generation = 0          # bumped (under ``changed``) after each commit with packets
        self.stopping = False
        self.replay_writes = 0
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
            # rebuilt once per start, so data made before the triggers existed counts too
            with self.db:
                self.db.execute("DELETE FROM usage")
                self.db.execute("INSERT INTO usage (uh, bytes) SELECT uh, "
                                "COALESCE(SUM(s), 0) FROM nodes WHERE t=0 GROUP BY uh")
        self.recover()

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

    # --- files -----------------------------------------------------------------------------
    def blob_path(self, blob: str) -> Path:
        if not BLOB_ID_RE.match(blob):
            raise ValueError("bad blob id")
        return self.blob_dir / blob

    def part_path(self, token: str) -> Path:
        return self.upload_dir / (token + ".part")

    def collect_blob(self, blob: str) -> None:
        """Delete a blob file once no node and no unused completion token references it."""
        with self.lock:
            if self._blob_referenced(blob):
                return
            try:
                self.blob_path(blob).unlink()
            except FileNotFoundError:
                pass

    def _blob_referenced(self, blob: str) -> bool:
        return bool(self.db.execute(
            "SELECT 1 FROM nodes WHERE blob=? UNION ALL "
            "SELECT 1 FROM completions WHERE blob=? AND node IS NULL LIMIT 1",
            (blob, blob)).fetchone())

    def recover(self) -> None:
        """Finish what a crash interrupted and delete files nothing references (start-up)."""
        with self.lock:
            cutoff = now() - STALE_SECONDS
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM uploads WHERE created<? AND completion IS NULL",
                            (cutoff,))
            self.db.execute("DELETE FROM uploads WHERE created<? AND completion IS NOT NULL",
                            (cutoff,))
            self.db.execute("DELETE FROM completions WHERE created<?", (cutoff,))
            self.db.execute("DELETE FROM replay WHERE created<?", (now() - REPLAY_SECONDS,))
            self.db.execute("COMMIT")
            finished = 0
            for row in self.db.execute("SELECT token, blob FROM uploads "
                                       "WHERE blob IS NOT NULL").fetchall():
                part, blob = self.part_path(row["token"]), self.blob_path(row["blob"])
                if part.exists() and not blob.exists():
                    os.replace(part, blob)
                    finished += 1
            live_uploads = {r["token"] for r in self.db.execute(
                "SELECT token FROM uploads WHERE blob IS NULL AND expired=0").fetchall()}
            removed = 0
            for path in self.upload_dir.iterdir():
                if not (path.name.endswith(".part") and path.name[:-5] in live_uploads):
                    path.unlink()
                    removed += 1
            for path in self.blob_dir.iterdir():
                if not BLOB_ID_RE.match(path.name) or not self._blob_referenced(path.name):
                    path.unlink()
                    removed += 1
            if finished or removed:
                log.info("recovery: finished %d upload(s), removed %d unreferenced file(s)",
                         finished, removed)

    # --- uploads (called by transfers.py; data writes happen outside the lock) ---------------
    def upload(self, token: str) -> Upload | None:
        with self.lock:
            row = self.db.execute("SELECT * FROM uploads WHERE token=?", (token,)).fetchone()
        if row is None:
            return None
        return Upload(token=row["token"], uh=row["uh"], size=row["size"], raw=bool(row["raw"]),
                      created=row["created"], ranges=json.loads(row["ranges"]),
                      expired=bool(row["expired"]),
                      completion=bytes.fromhex(row["completion"]) if row["completion"] else None,
                      blob=row["blob"])

    def save_ranges(self, token: str, ranges: list[list[int]]) -> None:
        with self.lock:
            self.db.execute("UPDATE uploads SET ranges=? WHERE token=?",
                            (json.dumps(ranges), token))

    def expire_upload(self, token: str) -> None:
        with self.lock:
            self.db.execute("UPDATE uploads SET expired=1 WHERE token=?", (token,))

    def complete_upload(self, up: Upload, ranges: list[list[int]], completion: bytes) -> str:
        """Record (write-ahead) that the part file becomes a blob, then rename it into place."""
        blob = random_handle(16)
        with self.transaction() as tx:
            tx.execute("UPDATE uploads SET ranges=?, completion=?, blob=? WHERE token=?",
                       (json.dumps(ranges), completion.hex(), blob, up.token))
            tx.execute("INSERT INTO completions (token, uh, size, blob, created) "
                       "VALUES (?,?,?,?,?)", (completion.hex(), up.uh, up.size, blob, now()))
        os.replace(self.part_path(up.token), self.blob_path(blob))
        _fsync_dir(self.blob_dir)
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


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
