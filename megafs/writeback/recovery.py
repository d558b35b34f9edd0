"""Crash recovery: load the queue's rows after a clean or crashed stop.

Every row becomes a ``StagedFile`` again.  A staged copy that is missing marks its file
failed (logged at ERROR); a committed node that is gone from MEGA is forgotten (logged at
WARNING: the copy is uploaded again, or the file is gone); a row whose ``p`` may have been
applied looks for its node by upload id instead of committing the same
data twice (``adopt``, also used after an ambiguous ``p`` failure at run time); staged
copies without a row were never promised and are deleted; a small file's staged copy is
written again from the queue's journal when it holds the row's generation (``store.py``).
See the crash table in ``megafs/ARCHITECTURE.md``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Callable, Iterable

from . import record as R
from ..tree.nodes import UPLOAD_ID_ATTR
from ..tree.tree import Tree
from .record import Record
from .staged import StagedFile, unlink_quiet
from .state import QueueState
from .store import QueueStore

log = logging.getLogger(__name__)


def recover(state: QueueState, store: QueueStore, *,
            save: Callable[[Iterable[StagedFile]], None]) -> list[StagedFile]:
    """Load the queue's rows from ``store`` into ``state`` after a clean or crashed stop; call
    with a freshly loaded tree.  ``save(files)`` commits rows (``WriteBack._save``).  Returns
    the recovered files (the namespace shows them)."""
    keep: list[StagedFile] = []
    staging, tree = state.staging, state.tree
    restored = 0
    for rec in store.load():
        path = os.path.join(staging, rec.rid)
        data = store.journal_bytes(rec) if rec.has_copy else None
        if data is not None:
            restore(path, data)         # the journal holds this generation's bytes
            restored += 1
        if rec.has_copy and not os.path.exists(path):
            rec.has_copy = False
            rec.failed, rec.error = True, "staged data is missing from %s" % staging
            log.error("staged data of %s is missing; marked failed", rec.name)
        if rec.committed and tree.get(rec.committed) is None:
            if not rec.unlinked:
                log.warning("node %s of %s is gone from MEGA; %s", rec.committed, rec.name,
                            "uploading the staged copy again" if rec.has_copy
                            else "the file is gone")
            rec.committed, rec.committed_gen = None, 0
        if rec.put_tried and rec.committed_gen < rec.generation:
            rec, _found = adopt(rec, tree)
        if rec.failed:
            rec.next_try = time.time() + R.FAILED_FIRST
        keep.append(state.new_file(rec, path, persisted=True))
    if restored:
        sync_folder(staging)
        log.info("restored %d small file(s) from the queue's journal", restored)
    with state.lock:
        for sf in keep:
            state.register(sf, [sf.rec.committed or "", *sf.rec.replaces])
            state.touched(sf)
    save(keep)
    # Staged copies without a row were never made durable: nothing promised them.
    known = {sf.rid for sf in keep}
    for entry in os.listdir(staging):
        if entry not in known:
            unlink_quiet(os.path.join(staging, entry))
    if keep:
        log.info("recovered %d queued file(s)", len(keep))
    return keep


def restore(path: str, data: bytes) -> None:
    """Write a small file's journal bytes back as its staged copy (0600), fsync'd: after a
    power loss its unsynced copy may be short, stale or gone."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view, done = memoryview(data), 0
        while done < len(data):
            done += os.write(fd, view[done:])
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_folder(path: str) -> None:
    """fsync a folder, so that files created in it survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def adopt(rec: Record, tree: Tree) -> tuple[Record, str | None]:
    """Find nodes committed by an earlier ``p`` of this record (crash or ambiguous failure).

    The node carrying the current upload id becomes the committed one; nodes of older
    generations of the same record become old versions.  Returns the record after that (a
    copy: ``rec`` is not changed) and the adopted handle, or None."""
    rec = dataclasses.replace(rec, replaces=list(rec.replaces))
    found = None
    for node in tree.children(rec.parent).values():
        mfs = node.attrs.get(UPLOAD_ID_ATTR) if node.attrs else None
        if R.rid_of(mfs) != rec.rid:
            continue
        if mfs == rec.upload_id and found is None:
            found = node.handle
        elif node.handle not in rec.replaces and node.handle != rec.committed:
            rec.replaces.append(node.handle)
    if found is not None:
        if rec.committed and rec.committed != found and rec.committed not in rec.replaces:
            rec.replaces.append(rec.committed)
        rec.committed, rec.committed_gen = found, rec.generation
        log.info("adopted node %s committed before a crash for %s", found, rec.name)
    rec.put_tried = False
    return rec, found
