"""``writeback.record.plan``, the pure crash/commit planner, as one table (issue 21 step 4).

Every row is a record state (fields changed from ``BASE``), the committed node as the tree has
it, the open file's in-memory state, and the one step ``plan`` must return.  Together the rows
reach every ``return`` of ``plan`` and show which condition wins where two apply (an unlinked
file ignores its back-off, a back-off holds an upload, FIX comes before CLEANUP, CLEANUP before
EXPORT).  ``test_every_step_has_a_row`` keeps the table complete when a step is added.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from megafs.writeback import record as R
from megafs.writeback.record import Record, Step

NOW = 1_000_000.0
MTIME = 1_700_000_000_000_000_000
# A file created here, flushed once and committed as node C1 in folder P, shown as "f".
BASE = Record(rid="0123456789abcdef", parent="P", name="f", size=3, mtime_ns=MTIME,
              generation=1, committed="C1", committed_gen=1, has_copy=True, local_meta=True)
NODE = ("P", "f", MTIME, True)              # (parent, name, mtime_ns, has a public handle)
PRIVATE = ("P", "f", MTIME, False)
IDLE_FILE = {"writers": 0, "forced": False, "dirty": False, "handles": 0}

# (id, record fields, node, open-file state, node attrs, step)
TABLE: list[tuple[str, dict[str, Any], Any, dict[str, Any], Any, Step]] = [
    # --- unlinked: its nodes go once the last handle is closed -----------------------------
    ("unlinked-still-open", {"unlinked": True}, NODE, {"handles": 1}, None, Step.IDLE),
    ("unlinked-closed-committed", {"unlinked": True}, NODE, {}, None, Step.DELETE),
    ("unlinked-closed-old-versions-only", {"unlinked": True, "committed": None,
                                           "replaces": ["C0"]}, None, {}, None, Step.DELETE),
    ("unlinked-never-uploaded", {"unlinked": True, "committed": None, "committed_gen": 0},
     None, {}, None, Step.DONE),
    ("unlinked-ignores-back-off", {"unlinked": True, "next_try": NOW + 5}, NODE, {}, None,
     Step.DELETE),
    ("unlinked-new-content-not-uploaded", {"unlinked": True, "generation": 2}, NODE, {}, None,
     Step.DELETE),
    # --- back-off -----------------------------------------------------------------------------
    ("backing-off-with-content", {"generation": 2, "next_try": NOW + 0.5, "attempts": 1},
     NODE, {}, None, Step.IDLE),
    ("failed-backing-off", {"generation": 2, "failed": True, "next_try": NOW + 300},
     NODE, {}, None, Step.IDLE),
    ("back-off-over", {"generation": 2, "next_try": NOW - 1, "attempts": 1}, NODE, {}, None,
     Step.UPLOAD),
    # --- content to send ------------------------------------------------------------------------
    ("new-generation", {"generation": 2}, NODE, {}, None, Step.UPLOAD),
    ("new-file-first-generation", {"committed": None, "committed_gen": 0}, None, {}, None,
     Step.UPLOAD),
    ("copy-without-a-generation", {"committed": None, "committed_gen": 0, "generation": 0},
     None, {}, None, Step.UPLOAD),
    ("committed-node-vanished", {}, None, {}, None, Step.UPLOAD),
    ("unflushed-writes", {"generation": 2}, NODE, {"dirty": True}, None, Step.IDLE),
    ("open-for-writing", {"generation": 2}, NODE, {"writers": 1}, None, Step.IDLE),
    ("open-for-writing-fsync", {"generation": 2}, NODE, {"writers": 1, "forced": True}, None,
     Step.UPLOAD),
    ("fsync-but-unflushed", {"generation": 2}, NODE, {"writers": 1, "forced": True,
                                                      "dirty": True}, None, Step.IDLE),
    ("open-for-reading-only", {"generation": 2}, NODE, {"handles": 2}, None, Step.UPLOAD),
    # --- nothing to send and nothing to hold ----------------------------------------------------
    ("no-copy-no-node", {"has_copy": False, "committed": None, "committed_gen": 0}, None, {},
     None, Step.DONE),
    ("no-copy-node-vanished", {"has_copy": False}, None, {}, None, Step.DONE),
    # --- the node's place, name, mtime and attributes ------------------------------------------
    ("moved-here", {}, ("Q", "f", MTIME, True), {}, None, Step.FIX),
    ("renamed-here", {}, ("P", "g", MTIME, True), {}, None, Step.FIX),
    ("touched-here", {}, ("P", "f", MTIME + 1, True), {}, None, Step.FIX),
    ("node-without-a-name", {}, ("P", None, MTIME, True), {}, None, Step.FIX),
    ("moved-elsewhere-is-followed", {"local_meta": False}, ("Q", "g", MTIME + 1, True), {},
     None, Step.DONE),
    ("own-attrs-missing", {"own_attrs": {"mfs-mode": "755"}}, NODE, {}, {"n": "f"}, Step.FIX),
    ("own-attrs-missing-no-attrs", {"own_attrs": {"mfs-mode": "755"}}, NODE, {}, None,
     Step.FIX),
    ("own-attrs-missing-followed-meta", {"own_attrs": {"mfs-mode": "755"},
                                         "local_meta": False}, NODE, {}, {"n": "f"}, Step.FIX),
    ("own-attrs-present", {"own_attrs": {"mfs-mode": "755"}}, NODE, {},
     {"n": "f", "mfs-mode": "755"}, Step.DONE),
    ("fix-before-cleanup", {"replaces": ["C0"]}, ("P", "g", MTIME, True), {}, None, Step.FIX),
    ("fix-before-export", {}, ("P", "g", MTIME, False), {}, None, Step.FIX),
    # --- old versions ---------------------------------------------------------------------------
    ("old-version-left", {"replaces": ["C0"]}, NODE, {}, None, Step.CLEANUP),
    ("cleanup-before-export", {"replaces": ["C0"]}, PRIVATE, {}, None, Step.CLEANUP),
    ("cleanup-while-open", {"replaces": ["C0"]}, NODE, {"writers": 1, "handles": 1}, None,
     Step.CLEANUP),
    # --- the public link --------------------------------------------------------------------------
    ("uploaded-without-link", {}, PRIVATE, {}, None, Step.EXPORT),
    ("uploaded-without-link-no-copy", {"has_copy": False}, PRIVATE, {}, None, Step.EXPORT),
    ("link-revoked", {"link_wanted": False}, PRIVATE, {}, None, Step.DONE),
    ("link-revoked-but-public", {"link_wanted": False}, NODE, {}, None, Step.DONE),
    ("remote-file-never-uploaded-here", {"has_copy": False, "committed_gen": 0,
                                         "generation": 0}, PRIVATE, {}, None, Step.DONE),
    ("uploaded-and-public", {}, NODE, {}, None, Step.DONE),
]


def _record(fields: dict[str, Any]) -> Record:
    return dataclasses.replace(BASE, **copy.deepcopy(fields))


@pytest.mark.parametrize("fields,node,state,node_attrs,want",
                         [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_plan(fields, node, state, node_attrs, want):
    rec = _record(fields)
    before = copy.deepcopy(rec)
    got = R.plan(rec, node=node, now=NOW, node_attrs=node_attrs, **{**IDLE_FILE, **state})
    assert got is want
    assert rec == before            # pure: the record is not changed


def test_every_step_has_a_row():
    assert {row[-1] for row in TABLE} == set(Step)
    assert len({row[0] for row in TABLE}) == len(TABLE)


def test_a_revoked_link_stays_revoked_through_a_commit_cycle():
    """The record's ``link_wanted`` survives every transition of a rewrite (flush, commit,
    cleanup, success): the planner ends in DONE, not EXPORT, until the link is asked for."""
    rec = R.link_wish(_record({}), False)
    rec = R.flushed(rec, 10, MTIME + 5)
    assert R.plan(rec, node=NODE, now=NOW, **IDLE_FILE) is Step.UPLOAD
    rec = R.succeeded(R.committed(rec, rec.generation, "C2"))
    new_node = ("P", "f", MTIME + 5, False)
    assert R.plan(rec, node=new_node, now=NOW, **IDLE_FILE) is Step.CLEANUP
    rec = R.cleaned(rec, ["C1"])
    assert R.plan(rec, node=new_node, now=NOW, **IDLE_FILE) is Step.DONE
    assert R.plan(R.link_wish(rec, True), node=new_node, now=NOW, **IDLE_FILE) is Step.EXPORT
