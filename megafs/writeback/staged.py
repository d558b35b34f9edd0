"""``StagedFile``: the one owner of "which bytes does this name have now" for a file with
local state.

A file gets a ``StagedFile`` when it is created, opened, renamed, touched or removed through
the mount, and keeps it until the remote node matches it and nothing has it open (then the
namespace retires it and the name is served from the node tree again, with the same size,
mtime and bytes).  It holds the durable ``Record`` and the in-memory state around it: the
staged copy (``staging/<rid>``, 0600), content versions, open handle counts and the upload in
flight.

Concurrency contract: every field is guarded by the write-back lock (``WriteBack.lock``), except
``rec.parent``/``rec.name``, which only the namespace changes, holding both its own lock and
the write-back lock (so either lock is enough to read them).  ``materialize`` is a per-file
lock held while the old contents of a remote file are downloaded into the staged copy.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

from .premac import Premac
from .record import Record


@dataclass(eq=False)
class StagedFile:
    """A file with local state; see the module docstring.  Compared by identity."""

    rec: Record
    path: str                                  # the staged copy (exists iff rec.has_copy)
    version: int = 0                           # bumped by every write or truncate
    synced: int = 0                            # version made durable (fsync + queue row)
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

    @property
    def dirty(self) -> bool:
        """Writes not yet made durable by a flush."""
        return self.version != self.synced

    @property
    def rid(self) -> str:
        return self.rec.rid


def unlink_quiet(path: str) -> None:
    """Remove a staged copy; one that is already gone is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
