"""The share queries of a server transaction (issue 25): outgoing shares (table ``shares``),
node keys under share keys (``sharekeys``) and the exported folder a folder link names.  A mixin
of ``tx.Tx``, kept apart so that class stays one screenful of concerns; same contract: only
valid while its thread holds ``State.lock``, and it never sees a key in the clear.
"""
from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod

from .db import FOLDER, now

SQL_BATCH = 500          # handles per IN (...) clause (as tx.SQL_BATCH)


class ShareQueries(ABC):
    """Mixin of ``Tx``: the methods below use its ``execute``, ``db``, ``node`` and
    ``public_node``, declared here as abstract (``Tx`` defines them)."""

    db: sqlite3.Connection

    @abstractmethod
    def execute(self, sql: str, params: tuple | list = ()) -> sqlite3.Cursor:
        """``Tx.execute``."""

    @abstractmethod
    def node(self, h: str | None, uh: str | None = None) -> sqlite3.Row | None:
        """``Tx.node``."""

    @abstractmethod
    def public_node(self, ph: str | None) -> sqlite3.Row | None:
        """``Tx.public_node``."""

    def shares_of(self, h: str) -> list[sqlite3.Row]:
        return self.execute("SELECT * FROM shares WHERE h=? ORDER BY rowid", (h,)).fetchall()

    def account_shares(self, uh: str) -> list[sqlite3.Row]:
        return self.execute("SELECT * FROM shares WHERE uh=? ORDER BY rowid", (uh,)).fetchall()

    def set_share(self, *, h: str, u: str, uh: str, ok: str, ha: str, r: int) -> None:
        self.execute("INSERT INTO shares (h, u, uh, ok, ha, r, ts) VALUES (?,?,?,?,?,?,?) "
                     "ON CONFLICT(h, u) DO UPDATE SET r=excluded.r", (h, u, uh, ok, ha, r, now()))

    def drop_share(self, h: str, u: str) -> bool:
        """Remove one sharee; with the last one the node's keys under that share key go too."""
        gone = self.execute("DELETE FROM shares WHERE h=? AND u=?", (h, u)).rowcount > 0
        self.execute("DELETE FROM sharee_keys WHERE h=? AND u=?", (h, u))
        if gone and not self.shares_of(h):
            self.execute("DELETE FROM sharekeys WHERE sh=?", (h,))
        return gone

    def share_roots_above(self, h: str) -> list[str]:
        """The shared folders that ``h`` is or is inside of, nearest first (cycle-safe)."""
        out: list[str] = []
        seen: set[str] = set()
        current: str | None = h
        while current and current not in seen:
            seen.add(current)
            if self.execute("SELECT 1 FROM shares WHERE h=? LIMIT 1", (current,)).fetchone():
                out.append(current)
            row = self.node(current)
            current = row["p"] if row is not None else None
        return out

    def add_sharekeys(self, rows: list[tuple[str, str, str]]) -> None:
        """Store (node handle, share root, key under the share key) triples."""
        self.db.executemany("INSERT OR REPLACE INTO sharekeys (h, sh, k) VALUES (?,?,?)", rows)

    def sharekeys_for(self, handles: list[str]) -> dict[str, list[tuple[str, str]]]:
        """Node handle -> [(share root, key)] for the nodes that have keys under share keys."""
        out: dict[str, list[tuple[str, str]]] = {}
        for i in range(0, len(handles), SQL_BATCH):
            part = handles[i:i + SQL_BATCH]
            rows = self.execute("SELECT h, sh, k FROM sharekeys WHERE h IN (%s) ORDER BY rowid"
                                % ",".join("?" * len(part)), part).fetchall()
            for r in rows:
                out.setdefault(r["h"], []).append((r["sh"], r["k"]))
        return out

    def exported_folder(self, ph: str) -> sqlite3.Row | None:
        """The folder a folder link's public handle names, while it is shared with "EXP"."""
        row = self.public_node(ph)
        if row is None or row["t"] != FOLDER:
            return None
        exported = self.execute("SELECT 1 FROM shares WHERE h=? AND u='EXP'",
                                (row["h"],)).fetchone()
        return row if exported else None

    # --- shares with full accounts (inshares.py) ----------------------------------------------
    def set_sharee_key(self, h: str, u: str, k: str) -> None:
        """The share key of ``h`` RSA-encrypted to sharee ``u`` (the owner's ``s2`` ``k``)."""
        self.execute("INSERT OR REPLACE INTO sharee_keys (h, u, k) VALUES (?,?,?)", (h, u, k))

    def incoming_shares(self, u: str) -> list[sqlite3.Row]:
        """The folders shared with account ``u``: rows of ``shares`` (h, uh = owner, r, ts)
        joined with the RSA-encrypted share key ``k``, oldest first."""
        return self.execute("SELECT s.h, s.uh, s.r, s.ts, k.k FROM shares s JOIN sharee_keys k "
                            "ON k.h = s.h AND k.u = s.u WHERE s.u=? ORDER BY s.rowid",
                            (u,)).fetchall()
