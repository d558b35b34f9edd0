"""Watching and steering a running queue: a file's shown state, waiting for its upload
(``.link``, ``fsync``), whether another client changed what it shows, ``megafs status`` rows,
``megafs retry``, the end of back-offs when the server answers again, and the staging limit
(``make_room``: writes wait for uploads to free space, then ENOSPC).  Takes ``WriteBack.lock``
only, never during I/O."""
from __future__ import annotations

import errno
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from ..errors import FsError
from ..tree.names import base_display_name
from . import record as R
from .record import Step
from .staged import StagedFile

if TYPE_CHECKING:
    from .queue import WriteBack

log = logging.getLogger(__name__)

STAGING_WAIT = 60.0      # seconds a write waits for uploads to free staging space


class QueueControl:
    """Status and retry control of one ``WriteBack`` (``wb.control``)."""

    def __init__(self, wb: "WriteBack") -> None:
        self.wb = wb

    def snapshot(self) -> list[dict[str, Any]]:
        """Unfinished files for ``megafs status``: dicts of ``path``, ``state``, ``size``
        (bytes), ``progress`` (bytes sent), ``error`` (the last failed attempt's reason, or
        None), ``attempts`` (failed attempts since the content last changed), ``open`` and
        ``next_try`` (wall clock seconds of the next attempt while backing off, else None)."""
        now = time.time()
        with self.wb.lock:
            out = []
            for sf in self.wb.files.values():
                if sf.rec.unlinked:
                    continue
                step = Step.IDLE if sf.dirty else self.wb.step(sf)
                shown = R.shown_state(sf.rec, step, sf.busy)
                idle_remote = (step is Step.IDLE and not sf.rec.has_copy
                               and not sf.rec.failed and not sf.persisted)
                if shown == R.UPLOADED or idle_remote:
                    continue
                # why a file waits (issue 24): its last error, the failed attempts so far
                # and when the next one starts (wall clock seconds; None while uploading)
                waiting = not sf.busy and sf.rec.next_try > now
                out.append({"path": self.wb.path_of(sf), "state": shown, "size": sf.rec.size,
                            "progress": sf.progress if sf.busy else 0,
                            "error": sf.rec.error if sf.rec.attempts or sf.rec.failed
                            else None,
                            "attempts": sf.rec.attempts, "open": sf.writers > 0,
                            "next_try": round(sf.rec.next_try, 1) if waiting else None})
            return out

    def retry_failed(self) -> int:
        """``megafs retry``: failed files are tried again now; returns how many."""
        with self.wb.lock:
            failed = [sf for sf in self.wb.files.values() if sf.rec.failed]
            for sf in failed:
                sf.rec = R.retry_now(sf.rec)
                self.wb._touched(sf)
        self.wb._save(failed)
        return len(failed)

    def kick(self) -> None:
        """The server answers again: transient back-offs end now."""
        with self.wb.lock:
            for sf in self.wb.files.values():
                if not sf.rec.failed and sf.rec.next_try:
                    sf.rec = R.retry_now(sf.rec)
                    self.wb._touched(sf)

    def wait(self, sf: StagedFile, timeout: float | None,
             cancelled: Callable[[], bool] | None = None) -> str:
        """Block until ``sf``'s current content is on MEGA and exported; return the handle of
        its node.  FsError: ENOENT if the file is removed meanwhile, EIO with the reason if
        its upload failed for good, ETIMEDOUT after ``timeout`` seconds, EINTR if
        ``cancelled()`` says the caller gave up."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.wb.lock:
            while True:
                if sf.rec.unlinked:
                    raise FsError(errno.ENOENT, "the file was removed before its upload ended")
                step = Step.IDLE if sf.dirty else self.wb.step(sf)
                if step is Step.DONE and not sf.busy and not sf.dirty and sf.rec.committed:
                    return sf.rec.committed
                if sf.rec.failed and not sf.busy:
                    raise FsError(errno.EIO, "upload failed: %s" % (sf.rec.error or "unknown"))
                if self.wb.stopping.is_set():
                    raise FsError(errno.EIO, "the mount is shutting down")
                if cancelled is not None and cancelled():
                    raise FsError(errno.EINTR, "interrupted")
                wait = 0.5
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise FsError(errno.ETIMEDOUT, "timed out waiting for the upload")
                    wait = min(wait, left)
                self.wb.lock.wait(wait)

    def state(self, sf: StagedFile) -> tuple[str, str | None, str | None]:
        """(state, committed handle once uploaded, error once failed) for xattrs."""
        with self.wb.lock:
            step = Step.IDLE if sf.dirty else self.wb.step(sf)
            shown = R.shown_state(sf.rec, step, sf.busy)
            handle = sf.rec.committed if shown == R.UPLOADED else None
            return shown, handle, sf.rec.error if shown == R.FAILED else None

    def remote_changed(self, sf: StagedFile) -> bool:
        """Whether another client changed what ``sf`` shows, so the namespace must look at it:
        its folder is gone, or it mirrors a node (no place of its own) that was moved,
        renamed, touched or removed (call under ``self.wb.lock``)."""
        rec = sf.rec
        if rec.unlinked or sf.retired:
            return False
        if self.wb.tree.get(rec.parent) is None:
            return True
        if rec.local_meta or not rec.committed:
            return False
        node = self.wb.tree.get(rec.committed)
        if node is None:
            return not rec.has_copy
        ours = rec.generation > rec.committed_gen or sf.dirty    # content changed here
        # the node's own name (escaped), not its display name: that one can carry a
        # "(HANDLE)" alias for a moment while an old version of this very file still exists
        return (node.parent != rec.parent or base_display_name(node) != rec.name
                or (not ours and node.mtime_ns != rec.mtime_ns))

    # --- the staging limit (``--staging-max``, issue 13) ---------------------------------
    def make_room(self, sf: StagedFile, new_size: int,
                  cancelled: Callable[[], bool] | None = None) -> None:
        """Called before ``sf``'s staged copy grows to ``new_size`` bytes.  While the staged
        copies of all files (their ``rec.size``) would then exceed ``staging_max``, wait for
        uploads to free space (a copy goes when its file is retired), at most
        ``STAGING_WAIT`` seconds; then, or at once when nothing could free space (every other
        copy is open for writing or failed) or the file alone is larger than the limit,
        FsError(ENOSPC).  EINTR if ``cancelled()`` (the FUSE request was interrupted).  Without
        a limit it returns at once."""
        if not self.wb.staging_max:
            return
        deadline = time.monotonic() + STAGING_WAIT
        warned = False
        with self.wb.lock:
            while True:
                others = [f for f in self.wb.files.values()
                          if f is not sf and f.rec.has_copy and not f.retired]
                used = sum(f.rec.size for f in others) + new_size
                if used <= self.wb.staging_max:
                    return
                if new_size > self.wb.staging_max:
                    raise self._full(sf, "the file alone (%d bytes) is larger than the "
                                     "staging limit" % new_size)
                if not any(f.writers == 0 and not f.rec.failed and not f.rec.unlinked
                           for f in others):
                    raise self._full(sf, "the other staged files are open for writing or "
                                     "failed, so no upload can free space")
                if cancelled is not None and cancelled():
                    raise FsError(errno.EINTR, "interrupted while waiting for staging space")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._full(sf, "no upload freed space within %.0f s" % STAGING_WAIT)
                if not warned:
                    warned = True
                    log.warning("staging area full (%d of %d bytes staged): a write to %s waits "
                                "for uploads to free space (up to %.0f s)", used - new_size,
                                self.wb.staging_max, sf.rec.name, STAGING_WAIT)
                self.wb.lock.wait(min(0.5, left))

    def _full(self, sf: StagedFile, why: str) -> FsError:
        log.warning("staging area full (limit %d bytes): a write to %s fails with ENOSPC: %s",
                    self.wb.staging_max, sf.rec.name, why)
        return FsError(errno.ENOSPC, "staging area full (--staging-max %d): %s"
                       % (self.wb.staging_max, why))
