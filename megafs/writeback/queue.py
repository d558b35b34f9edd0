"""``WriteBack``: the durable write-back queue of one mount, as the filesystem core sees it.

Owns the staged files (``StagedFile``) of the mount, their rows in ``queue.sqlite``
(``QueueStore``), the staging directory (0700, files 0600), the upload workers
(``scheduler.Scheduler``) and the committer (``committer.Committer``), and crash recovery.  It
never decides POSIX semantics and never changes the namespace: where a file is shown
(``rec.parent``/``rec.name``) is set by the filesystem core; the queue only brings MEGA in
line with it and reports back.  When a file has nothing left to send and nothing has it open,
the queue calls ``on_settled(file)``; the namespace then retires it under its own lock.  When
another client changes what a file is shown as (its folder is removed, or the node it mirrors
is renamed, touched or removed), the queue calls ``on_remote_change(file)`` and the namespace
decides the file's new place.

Its parts get what they need passed in (``state.QueueState``, the client, callbacks to save
rows, settle files and report remote changes), so none of them imports this module.

Concurrency contract: ``self.lock`` (``QueueState.lock``, a Condition over a re-entrant lock)
guards every ``StagedFile`` field (changed only by the file's own transition methods), the
``files``/``owner`` indexes and the committer's to-do set.  It is never held during network
I/O, fsync or sqlite commits: rows are snapshotted under it and written after it is released
(``_save``), before the caller's operation returns.  Lock order: namespace lock ->
``WriteBack.lock`` -> ``tree.lock``.  ``on_settled`` is always called without ``self.lock``.
The invariants are written in ``megafs/ARCHITECTURE.md``.
"""
from __future__ import annotations

import logging
import os
import secrets
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .. import config
from ..osio import read_at
from ..tree.nodes import UPLOAD_ID_ATTR, Node
from ..tree.tree import Tree
from . import record as R
from .committer import Committer
from .control import QueueControl
from .record import Record, Step
from .recovery import recover
from .scheduler import HOLD_MAX, Scheduler
from .spares import Spares
from .staged import StagedFile
from .state import QueueState
from .store import JOURNAL_MAX, QueueStore, persistent_request_id

if TYPE_CHECKING:
    from ..api.interface import MegaApi

log = logging.getLogger(__name__)


class WriteBack:
    """The queue of one mount; see the module docstring."""

    def __init__(self, mount_dir: str, client: "MegaApi", tree: Tree, *, workers: int = 4,
                 staging_max: int = 0, upload_hold: float = HOLD_MAX,
                 on_settled: Callable[[StagedFile], None] | None = None,
                 on_remote_change: Callable[[StagedFile], None] | None = None) -> None:
        """``workers``: files bigger than one POST uploaded at once; ``staging_max``: bytes
        staged at most (0: no limit); ``upload_hold``: seconds a burst of small files'
        closes is held at most (``scheduler.burst_hold``)."""
        self.mount_dir = config.private_dir(mount_dir)
        self.staging = config.private_dir(os.path.join(mount_dir, "staging"))
        self.client = client
        self.tree = tree
        self.on_settled, self.on_remote_change = on_settled, on_remote_change
        self.state = QueueState(tree, self.staging)
        self.lock = self.state.lock
        self.files = self.state.files
        self.stopping = self.state.stopping
        self.store = QueueStore(mount_dir)
        self.spares = Spares(mount_dir)             # empty staged copies to reuse
        # Every mount of this queue sends the same request id, so the change feed tells our
        # own packets (also those of a killed earlier mount) from other clients' changes.
        self.request_id = persistent_request_id(mount_dir)
        client.request_id = self.request_id
        self.staging_max = max(0, staging_max)      # bytes (control.make_room); 0: no limit
        self.scheduler = Scheduler(self.state, client, save=self._save,
                                   workers=max(1, workers), hold_max=upload_hold)
        self.committer = Committer(self.state, client, save=self._save, settle=self._settle,
                                   remote_change=self._remote_change)
        self.control = QueueControl(self.state, save=self._save, staging_max=self.staging_max)

    # --- creating and finding files ---------------------------------------------------------
    def add(self, parent: str, name: str, *, node: Node | None = None,
            mtime_ns: int | None = None, content: bool = False, own: bool = True
            ) -> StagedFile:
        """A new staged file shown at (parent, name).

        ``node``: the remote file it starts from (its committed node; no copy is made yet).
        ``content``: start with an empty staged copy (new files, ``O_TRUNC``) that is dirty
        until flushed.  ``own=False``: the caller calls ``own`` for the node later (the
        namespace shows the file first).  Raises OSError if the staged copy cannot be
        created."""
        rid = secrets.token_hex(8)
        path = os.path.join(self.staging, rid)
        rec = Record(rid, parent, name)
        if node is not None:
            rec.committed, rec.size, rec.mtime_ns = node.handle, node.size, node.mtime_ns
            # an existing file keeps the link state its node has: a link revoked earlier
            # (also by another client or mount) stays revoked
            rec.link_wanted = bool(node.public)
        if content:
            if not self.spares.take(path):
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
            rec.has_copy, rec.size = True, 0
        if node is None:
            rec.local_meta = True          # a new file: its place is ours
        if mtime_ns is not None:
            rec.mtime_ns = mtime_ns
        sf = self.state.new_file(rec, path)
        if content:
            sf.started_new()        # even an empty new file must be uploaded once
            sf.premac.start(path)
        self.state.register(sf, [node.handle] if node is not None and own else [])
        return sf

    def own(self, sf: StagedFile, handle: str) -> None:
        """``sf`` holds node ``handle`` from now on (the tree stops showing the node)."""
        self.state.register(sf, [handle])

    def hides(self, node: Node) -> bool:
        """Whether a tree node is held by a live staged file (its committed node, an old
        version, or a node carrying one of our upload ids): such a node is shown only through
        that file, at the file's place.  Lock-free (dict reads)."""
        if node.handle in self.state.owner:
            return True
        mfs = node.attrs.get(UPLOAD_ID_ATTR) if node.attrs else None
        rid = R.rid_of(mfs)
        return rid is not None and rid in self.files

    def holder(self, handle: str) -> StagedFile | None:
        """The live staged file holding node ``handle``, if any."""
        return self.state.owner.get(handle)

    # --- events from the filesystem core ----------------------------------------------------
    def opened(self, sf: StagedFile, write: bool) -> bool:
        """Count an open handle (``StagedFile.opened``)."""
        return sf.opened(write)

    def closed(self, sf: StagedFile, write: bool) -> None:
        """A handle was released (after its flush)."""
        sf.closed(write)
        self._settle([sf])

    def wrote(self, sf: StagedFile, size: int | None = None, mtime_ns: int | None = None
              ) -> None:
        """The staged copy changed (write, truncate): newer than any upload in flight."""
        sf.written(size, mtime_ns)

    def change(self, sf: StagedFile, transition: Callable[[Record], Record]) -> None:
        """Apply a pure ``record`` transition (``touched``: utimens; ``link_wish``: a link
        asked for or revoked); the row is saved durably before this returns."""
        sf.change(transition)
        self.save(sf)

    def materialized(self, sf: StagedFile, size: int) -> None:
        """The staged copy now holds the committed node's bytes (not a change)."""
        sf.materialized(size)

    def flush(self, sf: StagedFile, fd: int | None = None) -> None:
        """Make the file's content and place durable (close, fsync): fsync the staged copy and
        commit its row, a new generation if it was written since the last flush.

        Wakes the queue's threads only when they can act (``StagedFile.flushed``): a
        ``notify_all`` on the queue's lock woke its six threads (four upload workers, the
        small-file dispatcher, the committer; now each kind has its own condition,
        ``QueueState``), and they took the GIL from the FUSE thread while its sqlite commit had
        released it.  Measured (100 x 4 KiB written
        and closed one by one, loopback, medians of 800 closes): a close's flush took 0.92 ms
        with a wake-up in ``flushed`` and another in ``saved``, 0.36 ms with none (its
        ``INSERT`` alone 267 us against 32 us); the release that follows wakes them once."""
        with self.lock:
            if sf.retired or sf.rec.unlinked:
                return
            dirty, version = sf.dirty, sf.version
            if not dirty and not sf.meta_dirty:
                return
        size, data = None, None
        if dirty:
            if fd is None:
                fd_own = os.open(sf.path, os.O_RDONLY)
                try:
                    size, data = _make_durable(fd_own)
                finally:
                    os.close(fd_own)
            else:
                size, data = _make_durable(fd)
        if sf.flushed(version, size, data):
            if size is not None:            # the pace of a burst (scheduler.burst_quiet)
                now = time.monotonic()
                self.state.close_gap = now - self.state.last_close
                self.state.last_close = now
            self._save([sf])        # not ``save``: ``flushed`` did what ``saved`` does

    def save(self, sf: StagedFile) -> None:
        """Commit ``sf``'s row durably now (after a rename, touch or removal) and let the
        committer apply the change."""
        sf.saved()
        self._save([sf])

    def unlink(self, sf: StagedFile) -> None:
        """The name is gone: cancel the upload; remote nodes are deleted once it is closed.
        The row is saved (durably) when there are remote nodes to delete."""
        if sf.unlinked():
            self.save(sf)
        else:
            self._drop_row(sf)
        self._settle([sf])

    def force(self, sf: StagedFile) -> None:
        """``fsync``: upload now even if writers are open."""
        sf.force()

    # --- state ------------------------------------------------------------------------------
    def step(self, sf: StagedFile) -> Step:
        """``record.plan`` for ``sf`` now (call under ``self.lock``)."""
        return self.state.step(sf)

    def settled(self, sf: StagedFile) -> bool:
        """``QueueState.settled`` (call under ``self.lock``)."""
        return self.state.settled(sf)

    def touch_all(self, _folders: Any = None) -> None:
        """The change feed applied other clients' changes: look at every file again."""
        with self.lock:
            self.state.todo.update(self.files)
            self.state.wake_all()
        self.state.wake_watchers()

    # --- retirement -------------------------------------------------------------------------
    def retire(self, sf: StagedFile) -> bool:
        """Forget a settled file (the namespace calls this under its lock): drop its row,
        its staged copy and its node ownership.  False if it is not settled any more."""
        with self.lock:
            if sf.retired:
                return True
            if not self.state.settled(sf):
                return False
            self.state.forget(sf)
        # Lazily (store.py): not an fsync under the namespace lock for every retired file;
        # the staged copy goes once the row's delete is durable, kept as a spare for a new
        # file (spares.py).
        self._drop_row(sf, then=lambda: self.spares.give(sf.path))
        return True

    def _drop_row(self, sf: StagedFile, then: Callable[[], None] | None = None) -> None:
        if sf.unpersist():
            self.store.delete([sf.rid], then=then)
        elif then is not None:
            then()

    # --- plumbing (handed to the queue's parts as callbacks) ---------------------------------
    def _save(self, files: Iterable[StagedFile]) -> None:
        """Snapshot rows under the lock, commit them (group commit) after releasing it; a
        small file's bytes not yet durable go with its row (``store.py``)."""
        with self.lock:
            items, journaled = [], []
            for sf in [sf for sf in files if not sf.retired]:
                sf.persist()
                step = self.state.shown_step(sf)
                items.append((sf.rec, R.shown_state(sf.rec, step, sf.busy), sf.journal))
                if sf.journal is not None:
                    journaled.append((sf, sf.journal[0]))
            rows = self.store.snapshot(items)
        self.store.write(rows)
        for sf, generation in journaled:
            sf.journaled(generation)

    def _settle(self, files: Iterable[StagedFile]) -> None:
        """Offer files with nothing left to do to the namespace (outside ``self.lock``)."""
        if self.on_settled is None:
            return
        with self.lock:
            ready = [sf for sf in files if not sf.retired and self.state.settled(sf)]
        for sf in ready:
            self.on_settled(sf)

    def _remote_change(self, sf: StagedFile) -> None:
        if self.on_remote_change is not None:
            self.on_remote_change(sf)

    # --- start / stop -----------------------------------------------------------------------
    def recover(self) -> list[StagedFile]:
        """Load the queue after a clean or crashed stop (``recovery.recover``); call with a
        freshly loaded tree.  Returns the recovered files (the namespace shows them)."""
        return recover(self.state, self.store, save=self._save)

    def start(self) -> None:
        self.scheduler.start()
        self.committer.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop workers; uploads in flight are abandoned and resume at the next mount."""
        self.stopping.set()
        with self.lock:
            for sf in self.files.values():
                if sf.cancel is not None:
                    sf.cancel.set()
            self.state.wake_all()
        self.state.wake_watchers()
        deadline = time.monotonic() + timeout
        self.scheduler.join(deadline)
        self.committer.join(deadline)
        self.store.close()


def _make_durable(fd: int) -> tuple[int, bytes | None]:
    """Make a staged copy's content durable on close: (its size, its bytes) for a file of at
    most ``JOURNAL_MAX`` bytes, which go into the queue's journal with its row (one sync for
    both), else (its size, None) after an fsync of the copy."""
    size = os.fstat(fd).st_size
    if size <= JOURNAL_MAX:
        buf = bytearray(size)
        if read_at(fd, memoryview(buf), 0) == size:   # else truncated meanwhile: fsync
            return size, bytes(buf)
    os.fsync(fd)
    return os.fstat(fd).st_size, None
