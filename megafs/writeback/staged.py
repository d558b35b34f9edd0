"""``StagedFile``: the one owner of "which bytes does this name have now" for a file with
local state, and the only code that changes that state.

A file gets a ``StagedFile`` when it is created, opened for writing, renamed, touched or
removed through the mount (a read-only open holds its node instead: ``vfs/handles.py``), and
keeps it until the remote node matches it and nothing has it open (then the
namespace retires it and the name is served from the node tree again, with the same size,
mtime and bytes).  It holds the durable ``Record`` and the in-memory state around it: the
staged copy (``staging/<rid>``, 0600), content versions, open handle counts and the upload in
flight.

Every change is one of the transition methods below (written, flushed, placed, followed,
upload started, committed, failed, released, ...).  Each applies the pure ``record``
transitions under the write-back lock (``lock``, the queue's re-entrant Condition; a caller
already holding it may call them) and, where the queue must look at the file again, tells it
once (``tell``), which also wakes whoever waits for this file (``watch``).  No other module
assigns a field (``tests/unit/test_staged_owner.py``).
``materialize`` is a per-file lock held while the old contents of a remote file are downloaded
into the staged copy.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import MegafsError, describe, is_permanent
from . import record as R
from .premac import Premac
from .record import Record

log = logging.getLogger(__name__)


def _no_tell(_sf: "StagedFile") -> None:
    return None


@dataclass(eq=False)
class StagedFile:
    """A file with local state; see the module docstring.  Compared by identity.

    Read the fields freely under ``lock``; change them only through the methods."""

    rec: Record
    path: str                                  # the staged copy (exists iff rec.has_copy)
    lock: Any = field(default_factory=lambda: threading.Condition(threading.RLock()))
    tell: Callable[["StagedFile"], None] = _no_tell   # "look at me again" (under ``lock``)
    version: int = 0                           # bumped by every write or truncate
    synced: int = 0                            # version made durable (fsync + queue row)
    # (generation, bytes) of a small file's current generation, not fsync'd in staging/ and
    # not yet committed to the queue's journal: every row saved carries it (store.py)
    journal: tuple[int, bytes] | None = None
    meta_dirty: bool = False                   # mtime/location changed since the last save
    handles: int = 0                           # open handles of any kind
    writers: int = 0                           # open handles that may write
    forced: bool = False                       # fsync is waiting: upload despite writers
    busy: bool = False                         # owned by an upload worker or the committer
    retired: bool = False                      # gone from the namespace and the queue
    persisted: bool = False                    # has a row in queue.sqlite
    cancel: threading.Event | None = None      # set to abandon the upload in flight
    progress: int = 0                          # bytes of the upload in flight sent so far
    progress_at: float = 0.0                   # monotonic time of the last progress
    job: tuple[int, int] | None = None         # (generation, version) of the upload in flight
    token: Any = None                          # a finished upload waiting for its ``p``
    materialize: threading.Lock = field(default_factory=threading.Lock)
    premac: Premac = field(default_factory=Premac)   # chunk MACs made while written
    # Waited on by those who wait for this one file to settle (``control.wait``: a ``.link``
    # read, ``fsync``), over the same lock, and notified when the queue is told of the file
    # (``QueueState.touched``): on the queue's own ``lock`` every change woke every waiter
    # of every file (see ``QueueState``).
    watch: Any = None

    def __post_init__(self) -> None:
        if self.watch is None:
            self.watch = threading.Condition(self.lock)

    @property
    def dirty(self) -> bool:
        """Writes not yet made durable by a flush."""
        return self.version != self.synced

    @property
    def rid(self) -> str:
        return self.rec.rid

    @property
    def current_job(self) -> bool:
        """The upload in flight is of the current content and the file is still wanted."""
        return (self.job == (self.rec.generation, self.version) and not self.rec.unlinked
                and not self.retired)

    # --- the filesystem core's events ------------------------------------------------------
    def started_new(self) -> None:
        """A new (or emptied) file: even empty, it must be uploaded once."""
        with self.lock:
            self.version = 1

    def opened(self, write: bool) -> bool:
        """Count an open handle; False if the file was retired meanwhile, or is a removed
        file whose nodes are being deleted (its bytes are going: resolve again)."""
        with self.lock:
            if self.retired or (self.rec.unlinked and not self.rec.has_copy
                                and (self.busy or not self.rec.committed)):
                return False
            self.handles += 1
            if write:
                self.writers += 1
            return True

    def closed(self, write: bool) -> None:
        """A handle was released (after its flush)."""
        with self.lock:
            self.handles -= 1
            if write:
                self.writers -= 1
                if self.writers == 0:
                    self.forced = False
            self.tell(self)

    def written(self, size: int | None = None, mtime_ns: int | None = None, *,
                end: int | None = None) -> None:
        """The staged copy changed (write, truncate): newer than any upload in flight.
        ``size``: its new size; ``end``: a write ended there (the size grows to it)."""
        with self.lock:
            if end is not None:
                size = max(self.rec.size, end)
            self.version += 1
            self.rec = R.written(self.rec, size, time.time_ns() if mtime_ns is None
                                 else mtime_ns)
            if self.cancel is not None and self.token is None:
                self.cancel.set()        # the upload reads bytes that are no longer current

    def materialized(self, size: int) -> None:
        """The staged copy now holds the committed node's bytes (not a change)."""
        with self.lock:
            self.rec = R.copied(self.rec, size)

    def change(self, transition: Callable[[Record], Record]) -> None:
        """Apply a pure ``record`` transition (touch, attributes, link wish)."""
        with self.lock:
            self.rec = transition(self.rec)

    def flushed(self, version: int, size: int | None, data: bytes | None = None) -> bool:
        """Content up to ``version`` is durable (``size`` bytes; None: only the place or mtime
        changed), fsync'd in ``staging/`` or, with ``data`` (the ``size`` bytes of a small
        file), once the next row saved carries them into the journal.  False if the file was
        removed or retired meanwhile (nothing to save)."""
        with self.lock:
            if self.retired or self.rec.unlinked:
                return False
            # A write that raced the fsync keeps the file dirty: its own flush syncs it.
            if size is not None and self.synced < version:
                self.synced = version
                self.rec = R.flushed(self.rec, size, self.rec.mtime_ns)
                self.journal = None if data is None else (self.rec.generation, data)
            self.meta_dirty = False
            if self.writers == 0 or self.forced:
                # With a writer open nothing can be uploaded yet, and its release (or
                # fsync's ``force``) tells the queue: a tell per close woke every queue
                # thread once more (issue 23, ``queue.WriteBack.flush``).
                self.tell(self)
            return True

    def journaled(self, generation: int) -> None:
        """A row carrying the bytes of ``generation`` was committed: they are durable."""
        with self.lock:
            if self.journal is not None and self.journal[0] == generation:
                self.journal = None

    def saved(self) -> None:
        """The row is being saved now: the place and mtime are no longer unsaved."""
        with self.lock:
            self.meta_dirty = False
            self.tell(self)

    def placed(self, parent: str, name: str, *, chosen: bool, path: str) -> None:
        """Shown at (parent, name) from now on (``path``: the mount path, kept in the row for
        ``megafs status`` while unmounted).  ``chosen``: a rename made here (the node is
        brought in line); else the file follows its node (another client moved it)."""
        with self.lock:
            self.rec = R.placed(self.rec, parent, name, path, chosen=chosen)
            if chosen:
                self.meta_dirty = True

    def followed(self, mtime_ns: int) -> None:
        """Another client touched the node this file mirrors: show its mtime."""
        with self.lock:
            self.rec = R.written(self.rec, None, mtime_ns)

    def unlinked(self) -> bool:
        """The name is gone: cancel the upload; True if remote nodes must be deleted."""
        with self.lock:
            self.rec = R.unlinked(self.rec)
            self.meta_dirty = False
            if self.cancel is not None:
                self.cancel.set()
            self.tell(self)
            return bool(self.rec.committed or self.rec.replaces)

    def force(self) -> None:
        """``fsync``: upload now even if writers are open."""
        with self.lock:
            self.forced = True
            self.rec = R.retry_now(self.rec) if self.rec.next_try else self.rec
            self.tell(self)

    def retry(self) -> None:
        """``megafs retry``, the server came back, or the file was moved to safety."""
        with self.lock:
            self.rec = R.retry_now(self.rec)
            self.tell(self)

    # --- the queue's events -----------------------------------------------------------------
    def taken(self) -> None:
        """The committer took the file for a batch."""
        with self.lock:
            self.busy = True

    def upload_started(self) -> None:
        """An upload worker took the file (under ``lock``)."""
        with self.lock:
            self.busy = True
            self.job = (self.rec.generation, self.version)
            self.cancel = threading.Event()
            self.progress, self.progress_at = 0, time.monotonic()

    def sent(self, done: int) -> None:
        """``done`` bytes of the upload in flight are sent (lock-free: two ints for status)."""
        self.progress, self.progress_at = done, time.monotonic()

    def uploaded(self, token: Any) -> None:
        """The upload finished; the committer sends its ``p``."""
        with self.lock:
            self.token = token

    def put_planned(self) -> tuple[Any, int] | None:
        """The finished upload and its generation for the ``p`` about to be sent, or None
        if it is stale (the file changed or went away: it is dropped).  The row must be
        saved (``put_tried``) before the ``p`` goes out."""
        with self.lock:
            gen = self.job[0] if self.job else self.rec.generation
            if self.job != (self.rec.generation, self.version) or self.rec.unlinked:
                self.token = None
                return None
            token = self.token
            self.rec = R.put_tried(self.rec)
            return token, gen

    def put_done(self) -> None:
        """The ``p`` got its answer (the finished upload is used up)."""
        with self.lock:
            self.token = None

    def committed(self, generation: int, handle: str, twins: list[str]) -> None:
        """``p`` created ``handle`` for ``generation``; ``twins`` repeat that commit (a
        ``p`` of a killed mount applied late) and are deleted as old versions."""
        with self.lock:
            self.rec = R.succeeded(R.committed(self.rec, generation, handle))
            for twin in twins:
                self.rec = R.replacing(self.rec, twin)

    def same_bytes(self) -> None:
        """The staged bytes are the committed node's (issue 13): that node holds this
        generation too; the new mtime goes to MEGA as an attribute update."""
        with self.lock:
            self.rec = R.committed(self.rec, self.rec.generation, self.rec.committed or "")
            self.rec = R.touched(self.rec, self.rec.mtime_ns)

    def adopted(self, rec: Record) -> None:
        """A node committed by an earlier ``p`` was found (``recovery.adopt``)."""
        with self.lock:
            self.rec = rec

    def cleaned(self, gone: list[str]) -> None:
        """Nodes ``gone`` were deleted (old versions, or those of a removed file)."""
        with self.lock:
            self.rec = R.succeeded(R.deleted(self.rec, gone) if self.rec.unlinked
                                   else R.cleaned(self.rec, gone))

    def failed(self, exc: BaseException, what: str, *, transient: bool = False,
               refused: bool = False) -> None:
        """An attempt failed: back off (``record.attempt_failed``) and log it.
        ``transient`` overrides the classification of the error; ``refused``: a definite
        refusal of a ``p`` (nothing was created)."""
        text = describe(exc)
        permanent = is_permanent(exc) and not transient
        with self.lock:
            rec = R.put_refused(self.rec) if refused else self.rec
            self.rec = rec = R.attempt_failed(rec, text, permanent=permanent, now=time.time())
        if permanent:
            log.error("%s of %s failed: %s (kept staged; `megafs retry` or automatic retry "
                      "later)", what, rec.name, text)
        else:
            level = logging.INFO if rec.attempts <= 2 else logging.WARNING
            log.log(level, "%s of %s: %s; retry %d in %.1f s", what, rec.name, text,
                    rec.attempts, rec.next_try - time.time())
        if not isinstance(exc, (MegafsError, OSError)):
            log.error("unexpected error in the %s of %s", what, rec.name, exc_info=exc)

    def released(self) -> None:
        """The upload worker or the committer gives the file back; the queue looks again."""
        with self.lock:
            self.busy, self.cancel, self.job, self.token = False, None, None, None
            self.tell(self)

    def persist(self) -> None:
        """The row is in the snapshot being written to ``queue.sqlite``."""
        with self.lock:
            self.persisted = True

    def unpersist(self) -> bool:
        """The row is being deleted; True if there was one."""
        with self.lock:
            persisted, self.persisted = self.persisted, False
            return persisted

    def retire(self) -> None:
        """Gone from the namespace and the queue."""
        with self.lock:
            self.retired = True


def unlink_quiet(path: str) -> None:
    """Remove a staged copy; one that is already gone is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
