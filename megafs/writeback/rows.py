"""The rows of ``queue.sqlite``: its schema, a ``Record`` as a row and back, opening it, and
the rows of the megafs 0.1 format.  The table ``journal`` holds small files' bytes
(``store.py``).  Pure data and sqlite; no locks.  Never logs keys or links.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import time

from .diskerrors import queue_error
from .record import Record

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    rid TEXT PRIMARY KEY,
    parent TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0,
    committed TEXT,
    committed_gen INTEGER NOT NULL DEFAULT 0,
    replaces TEXT NOT NULL DEFAULT '[]',
    has_copy INTEGER NOT NULL DEFAULT 0,
    unlinked INTEGER NOT NULL DEFAULT 0,
    local_meta INTEGER NOT NULL DEFAULT 0,
    put_tried INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    path TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending',
    updated REAL NOT NULL DEFAULT 0,
    link_wanted INTEGER NOT NULL DEFAULT 1,
    own_attrs TEXT NOT NULL DEFAULT '{}'
)
"""
_JOURNAL = """
CREATE TABLE IF NOT EXISTS journal (
    rid TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    data BLOB NOT NULL
)
"""
# Columns added after the first schema: (name, definition, default) for ALTER TABLE on older
# queues and for reading them read-only.
ADDED = (("link_wanted", "INTEGER NOT NULL DEFAULT 1", "1"),
         ("own_attrs", "TEXT NOT NULL DEFAULT '{}'", "'{}'"))
COLUMNS = ("rid", "parent", "name", "size", "mtime_ns", "generation", "committed",
           "committed_gen", "replaces", "has_copy", "unlinked", "local_meta", "put_tried",
           "failed", "error",
           "attempts", "path", "state", "updated", "link_wanted", "own_attrs")


def row_of(rec: Record, state: str) -> tuple:
    """The database row for ``rec`` shown as ``state`` (column order of ``COLUMNS``)."""
    return (rec.rid, rec.parent, rec.name, rec.size, rec.mtime_ns, rec.generation, rec.committed,
            rec.committed_gen, json.dumps(rec.replaces), int(rec.has_copy), int(rec.unlinked),
            int(rec.local_meta), int(rec.put_tried), int(rec.failed), rec.error, rec.attempts,
            rec.path, state, time.time(), int(rec.link_wanted),
            json.dumps(rec.own_attrs))


def record_of(row: tuple) -> Record:
    """A ``Record`` from a database row (column order of ``COLUMNS``)."""
    (rid, parent, name, size, mtime_ns, generation, committed, committed_gen, replaces,
     has_copy, unlinked, local_meta, put_tried, failed, error, attempts, path, _state,
     _updated, link_wanted, own_attrs) = row
    try:
        old = [h for h in json.loads(replaces or "[]") if isinstance(h, str)]
    except ValueError:
        old = []
    try:
        attrs = json.loads(own_attrs or "{}")
    except ValueError:
        attrs = {}
    if not isinstance(attrs, dict):
        attrs = {}
    return Record(rid, parent, name, size=size, mtime_ns=mtime_ns, generation=generation,
                  committed=committed, committed_gen=committed_gen, replaces=old,
                  has_copy=bool(has_copy), unlinked=bool(unlinked),
                  local_meta=bool(local_meta), put_tried=bool(put_tried),
                  failed=bool(failed), error=error, attempts=attempts, path=path or "",
                  link_wanted=bool(link_wanted), own_attrs=attrs)


def open_db(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    """The queue database (created 0600 if missing unless ``readonly``).  QueueUnusable if
    it is damaged or cannot be written (``queue_error``)."""
    try:
        if readonly:
            db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()    # checks the header
            return db
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        db = sqlite3.connect(path, check_same_thread=False, timeout=30,
                             isolation_level="DEFERRED")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(_SCHEMA)
        db.execute(_JOURNAL)
        have = {row[1] for row in db.execute("PRAGMA table_info(files)")}
        for name, definition, _default in ADDED:
            if name not in have:
                db.execute("ALTER TABLE files ADD COLUMN %s %s" % (name, definition))
        db.commit()
        return db
    except sqlite3.Error as exc:
        raise queue_error(path, exc) from None


def legacy_rows(db: sqlite3.Connection) -> list[Record]:
    """Unfinished rows of a queue written by megafs 0.1 (table ``records``), as records.

    Their staged copies are kept under the same rid; a node committed for their generation is
    recognised by the same upload id.  The old table is dropped once read (the rows are saved
    again in the new table by the caller)."""
    exists = db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='records'"
                        ).fetchone()
    if not exists:
        return []
    out = []
    for rid, parent, name, size, mtime, state, gen, replaces, handle, put_tried in db.execute(
            "SELECT rid, parent, name, size, mtime, state, generation, replaces, handle,"
            " put_tried FROM records WHERE state != 'uploaded'"):
        try:
            old = [h for h in json.loads(replaces or "[]") if isinstance(h, str)]
        except ValueError:
            old = []
        out.append(Record(rid, parent, name, size=size, mtime_ns=int(mtime * 1e9),
                          generation=gen, committed=handle, committed_gen=gen if handle else 0,
                          replaces=old, has_copy=True, local_meta=True,
                          put_tried=bool(put_tried)))
    with db:
        db.execute("DROP TABLE records")
    if out:
        log.info("converted %d queued upload(s) from the megafs 0.1 queue format", len(out))
    return out
