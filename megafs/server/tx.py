"""One SQLite transaction of the server's state and every query the command handlers need.

A ``Tx`` exists only while its thread holds ``State.lock`` (see ``store.py``); it never sees a
key: node keys and attributes are opaque strings the clients encrypted.  Side effects that must
wait for the commit (deleting blob files) are queued with ``after_commit``.
"""
from __future__ import annotations

import functools
import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .db import FOLDER, ROOT_TYPES, RUBBISH, now, random_handle, sid_key, tree_order
from .sharedb import ShareQueries

if TYPE_CHECKING:
    from .store import State

SQL_BATCH = 500          # handles per IN (...) clause


@dataclass
class Tx(ShareQueries):
    """One open transaction; only valid inside ``State.transaction()``.  The queries of shares
    and folder links are in ``sharedb.ShareQueries``."""

    state: "State"
    db: sqlite3.Connection
    _after: list[Callable[[], object]] = field(default_factory=list)
    packets: dict[str, int] = field(default_factory=dict)    # packets emitted per account

    def execute(self, sql: str, params: tuple | list = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, params)

    def after_commit(self, action: Callable[[], object]) -> None:
        self._after.append(action)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested unit (one command of a batch): rolled back alone if it raises."""
        self.db.execute("SAVEPOINT cmd")
        mark_after, mark_packets = len(self._after), dict(self.packets)
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
                     (sid_key(sid), uh, now()))

    def session_user(self, sid: str) -> str | None:
        row = self.execute("SELECT uh FROM sessions WHERE sid=?", (sid_key(sid),)).fetchone()
        return row["uh"] if row else None

    def drop_session(self, sid: str) -> None:
        self.execute("DELETE FROM sessions WHERE sid=?", (sid_key(sid),))

    def quota(self, uh: str) -> int:
        row = self.account(uh)
        if row is not None and row["quota"] is not None:
            return int(row["quota"])
        return self.state.default_quota

    def used_bytes(self, uh: str) -> int:
        row = self.execute("SELECT bytes FROM usage WHERE uh=?", (uh,)).fetchone()
        return int(row["bytes"]) if row is not None else 0

    # --- nodes -----------------------------------------------------------------------------
    def node(self, h: str | None, uh: str | None = None) -> sqlite3.Row | None:
        if not isinstance(h, str):
            return None
        row = self.execute("SELECT * FROM nodes WHERE h=?", (h,)).fetchone()
        if row is None or (uh is not None and row["uh"] != uh):
            return None
        return row

    def root(self, uh: str, t: int) -> sqlite3.Row:
        row = self.execute("SELECT * FROM nodes WHERE uh=? AND t=?", (uh, t)).fetchone()
        assert row is not None, "account without root %d" % t
        return row

    def was_deleted(self, h: str | None, uh: str) -> bool:
        """True if ``h`` was a folder of ``uh`` that has been deleted."""
        if not isinstance(h, str):
            return False
        return bool(self.execute("SELECT 1 FROM deleted WHERE h=? AND uh=?",
                                 (h, uh)).fetchone())

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
        return tree_order(rows)

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
        return tree_order(out)

    def move_node(self, h: str, new_parent: str) -> None:
        self.execute("UPDATE nodes SET p=? WHERE h=?", (new_parent, h))

    def set_attrs(self, h: str, a: str) -> None:
        self.execute("UPDATE nodes SET a=? WHERE h=?", (a, h))

    def delete_nodes(self, rows: list[sqlite3.Row]) -> None:
        """Delete nodes; folders leave a tombstone, blobs go once nothing references them."""
        handles = [r["h"] for r in rows]
        for i in range(0, len(handles), SQL_BATCH):
            part = handles[i:i + SQL_BATCH]
            marks = ",".join("?" * len(part))
            self.execute("DELETE FROM nodes WHERE h IN (%s)" % marks, part)
            self.execute("DELETE FROM public WHERE h IN (%s)" % marks, part)
            self.execute("DELETE FROM shares WHERE h IN (%s)" % marks, part)
            self.execute("DELETE FROM sharee_keys WHERE h IN (%s)" % marks, part)
            self.execute("DELETE FROM sharekeys WHERE h IN (%s) OR sh IN (%s)"
                         % (marks, marks), part + part)
        stamp = now()
        self.db.executemany("INSERT OR REPLACE INTO deleted (h, uh, ts) VALUES (?,?,?)",
                            [(r["h"], r["uh"], stamp) for r in rows if r["t"] == FOLDER])
        for blob in {r["blob"] for r in rows if r["blob"]}:
            self.after_commit(functools.partial(self.state.collect_blob, blob))

    def rubbish_bin(self, uh: str) -> sqlite3.Row:
        return self.root(uh, RUBBISH)

    # --- public handles --------------------------------------------------------------------
    def public_of(self, h: str) -> sqlite3.Row | None:
        return self.execute("SELECT * FROM public WHERE h=?", (h,)).fetchone()

    def public_node(self, ph: str | None) -> sqlite3.Row | None:
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
        self.packets[uh] = self.packets.get(uh, 0) + 1

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

    def packet_floor(self, uh: str) -> int:
        """The newest sequence number pruned from ``uh``'s log (0: nothing pruned)."""
        row = self.execute("SELECT seq FROM packet_floor WHERE uh=?", (uh,)).fetchone()
        return int(row["seq"]) if row else 0

    def count_nodes(self, uh: str) -> int:
        row = self.execute("SELECT COUNT(*) AS n FROM nodes WHERE uh=?", (uh,)).fetchone()
        return int(row["n"])

    def snapshot(self, uh: str) -> tuple[int, dict[str, Any]] | None:
        """The kept tree snapshot of ``uh``: (its sequence number, {"f": nodes, "ph": ...})."""
        row = self.execute("SELECT seq, body FROM snapshots WHERE uh=?", (uh,)).fetchone()
        return (int(row["seq"]), json.loads(row["body"])) if row else None

    def keep_snapshot(self, uh: str, seq: int, body: dict[str, Any] | None) -> None:
        """Keep (or with ``body`` None, drop) the tree snapshot of ``uh``."""
        if body is None:
            self.execute("DELETE FROM snapshots WHERE uh=?", (uh,))
            return
        self.execute("INSERT INTO snapshots (uh, seq, body) VALUES (?,?,?) ON CONFLICT(uh) DO "
                     "UPDATE SET seq=excluded.seq, body=excluded.body",
                     (uh, seq, json.dumps(body, separators=(",", ":"))))

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
                            (sid_key(sid), rid)).fetchone()

    def store_replay(self, sid: str, rid: str, digest: bytes, response: bytes) -> None:
        self.execute("INSERT OR REPLACE INTO replay (sid, rid, digest, response, created) "
                     "VALUES (?,?,?,?,?)", (sid_key(sid), rid, digest, response, now()))
