"""The queue file across versions: a queue written before a column was added (here
``link_wanted``, issue 21; ``own_attrs``, issue 22) opens, gains the columns with their
defaults, and reads back the same records; ``megafs status`` of such a queue while unmounted
(read-only: no ALTER) works too.  ``record.plan`` never exports a link the user revoked, and
sends a mode or xattr chosen here (``own_attrs``) to the node with FIX until it has it."""
from __future__ import annotations

import sqlite3

from megafs.writeback import record as R
from megafs.writeback.store import QueueStore, read_status

OLD_SCHEMA = """
CREATE TABLE files (
    rid TEXT PRIMARY KEY, parent TEXT NOT NULL, name TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0, mtime_ns INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0, committed TEXT,
    committed_gen INTEGER NOT NULL DEFAULT 0, replaces TEXT NOT NULL DEFAULT '[]',
    has_copy INTEGER NOT NULL DEFAULT 0, unlinked INTEGER NOT NULL DEFAULT 0,
    local_meta INTEGER NOT NULL DEFAULT 0, put_tried INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0, error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    path TEXT NOT NULL DEFAULT '', state TEXT NOT NULL DEFAULT 'pending',
    updated REAL NOT NULL DEFAULT 0)
"""


def _old_queue(folder) -> None:
    db = sqlite3.connect(str(folder / "queue.sqlite"))
    db.execute(OLD_SCHEMA)
    db.execute("INSERT INTO files (rid, parent, name, size, generation, has_copy, path) "
               "VALUES ('00aa', 'ROOTHAND', 'a.txt', 5, 1, 1, '/a.txt')")
    db.commit()
    db.close()


def test_a_queue_from_before_link_wanted_opens_and_reads(tmp_path):
    _old_queue(tmp_path)
    rows = read_status(str(tmp_path))                      # read-only, column still missing
    assert [(r["path"], r["state"], r["size"]) for r in rows] == [("/a.txt", "pending", 5)]
    store = QueueStore(str(tmp_path))
    try:
        (rec,) = store.load()
    finally:
        store.close()
    assert (rec.rid, rec.name, rec.size, rec.generation, rec.link_wanted, rec.own_attrs) == \
        ("00aa", "a.txt", 5, 1, True, {})
    cols = [r[1] for r in sqlite3.connect(str(tmp_path / "queue.sqlite"))
            .execute("PRAGMA table_info(files)")]
    assert cols[-2:] == ["link_wanted", "own_attrs"]


def test_plan_exports_only_a_wanted_link():
    rec = R.Record("r1", "P", "n", committed="H", committed_gen=1, mtime_ns=7)
    node = ("P", "n", 7, False)
    args = dict(writers=0, forced=False, dirty=False, handles=0, now=0.0)
    assert R.plan(rec, node=node, **args) is R.Step.EXPORT
    revoked = R.link_wish(rec, False)
    assert R.plan(revoked, node=node, **args) is R.Step.DONE
    assert R.plan(R.link_wish(revoked, True), node=node, **args) is R.Step.EXPORT
    assert R.plan(revoked, node=("P", "n", 7, True), **args) is R.Step.DONE
    assert R.flushed(revoked, 3, 9).link_wanted is False    # a rewrite keeps the wish


def test_own_attrs_are_durable_and_planned_until_the_node_has_them(tmp_path):
    rec = R.with_attrs(R.Record("r2", "P", "n", committed="H", committed_gen=1, mtime_ns=7,
                                link_wanted=False), {"mfs-mode": "755"})
    node = ("P", "n", 7, True)
    args = dict(writers=0, forced=False, dirty=False, handles=0, now=0.0)
    assert R.plan(rec, node=node, node_attrs={"n": "n"}, **args) is R.Step.FIX
    assert R.plan(rec, node=node, node_attrs={"n": "n", "mfs-mode": "755"},
                  **args) is R.Step.DONE
    store = QueueStore(str(tmp_path))
    try:
        store.write(store.snapshot([(rec, "pending")]))
        store.close()
        store = QueueStore(str(tmp_path))
        (back,) = store.load()
    finally:
        store.close()
    assert back.own_attrs == {"mfs-mode": "755"}
