"""Watching and steering a running queue: a file's shown state, waiting for its upload
(``.link``, ``fsync``), whether another client changed what it shows, ``megafs status`` rows,
``megafs retry``, the end of back-offs when the server answers again, and the staging limit
(``make_room``: writes wait for uploads to free space, then ENOSPC).  Takes ``WriteBack.lock``
only, never during I/O."""
from __future__ import annotations

import errno
import logging
import time
from typing import Any, Callable, Iterable

from ..errors import FsError
from . import record as R
from .record import Step
from .staged import StagedFile
from .state import QueueState

log = logging.getLogger(__name__)

STAGING_WAIT = 60.0      # seconds a write waits for uploads to free staging space


class QueueControl:
    """Status and retry control of one queue (``WriteBack.control``)."""

    def __init__(self, state: QueueState, *, save: Callable[[Iterable[StagedFile]], None],
                 staging_max: int = 0) -> None:
        """``save(files)``: commit rows (``WriteBack._save``); ``staging_max``: bytes (0: no
        limit, see ``make_room``)."""
        self.st = state
        self.save = save
        self.staging_max = staging_max

    def snapshot(self, path_of: Callable[[StagedFile], str] | None = None
                 ) -> list[dict[str, Any]]:
        """Unfinished files for ``megafs status``: dicts of ``path`` (``path_of(file)``, the
        mount path now; else the name), ``state``, ``size`` (bytes), ``progress`` (bytes
        sent), ``error`` (the last failed attempt's reason, or None), ``attempts`` (failed
        attempts since the content last changed), ``open`` and ``next_try`` (wall clock
        seconds of the next attempt while backing off, else None)."""
        now = time.time()
        with self.st.lock:
            out = []
            for sf in self.st.files.values():
                if sf.rec.unlinked:
                    continue
                step = self.st.shown_step(sf)
                shown = R.shown_state(sf.rec, step, sf.busy)
                idle_remote = (step is Step.IDLE and not sf.rec.has_copy
                               and not sf.rec.failed and not sf.persisted)
                if shown == R.UPLOADED or idle_remote:
                    continue
                # why a file waits (issue 24): its last error, the failed attempts so far
                # and when the next one starts (wall clock seconds; None while uploading)
                waiting = not sf.busy and sf.rec.next_try > now
                path = path_of(sf) if path_of is not None else sf.rec.name
                out.append({"path": path, "state": shown, "size": sf.rec.size,
                            "progress": sf.progress if sf.busy else 0,
                            "error": sf.rec.error if sf.rec.attempts or sf.rec.failed
                            else None,
                            "attempts": sf.rec.attempts, "open": sf.writers > 0,
                            "next_try": round(sf.rec.next_try, 1) if waiting else None})
            return out

    def retry_failed(self) -> int:
        """``megafs retry``: failed files are tried again now; returns how many."""
        with self.st.lock:
            failed = [sf for sf in self.st.files.values() if sf.rec.failed]
            for sf in failed:
                sf.retry()
        self.save(failed)
        return len(failed)

    def kick(self) -> None:
        """The server answers again: transient back-offs end now."""
        self.st.kick()

    def wait(self, sf: StagedFile, timeout: float | None,
             cancelled: Callable[[], bool] | None = None) -> str:
        """Block until ``sf``'s current content is on MEGA and exported; return the handle of
        its node.  FsError: ENOENT if the file is removed meanwhile, EIO with the reason if
        its upload failed for good, ETIMEDOUT after ``timeout`` seconds, EINTR if
        ``cancelled()`` says the caller gave up."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.st.lock:
            while True:
                if sf.rec.unlinked:
                    raise FsError(errno.ENOENT, "the file was removed before its upload ended")
                step = self.st.shown_step(sf)
                if step is Step.DONE and not sf.busy and not sf.dirty and sf.rec.committed:
                    return sf.rec.committed
                if sf.rec.failed and not sf.busy:
                    raise FsError(errno.EIO, "upload failed: %s" % (sf.rec.error or "unknown"))
                if self.st.stopping.is_set():
                    raise FsError(errno.EIO, "the mount is shutting down")
                if cancelled is not None and cancelled():
                    raise FsError(errno.EINTR, "interrupted")
                wait = 0.5
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise FsError(errno.ETIMEDOUT, "timed out waiting for the upload")
                    wait = min(wait, left)
                sf.watch.wait(wait)

    def state(self, sf: StagedFile) -> tuple[str, str | None, str | None]:
        """(state, committed handle once uploaded, error once failed) for xattrs."""
        with self.st.lock:
            step = self.st.shown_step(sf)
            shown = R.shown_state(sf.rec, step, sf.busy)
            handle = sf.rec.committed if shown == R.UPLOADED else None
            return shown, handle, sf.rec.error if shown == R.FAILED else None

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
        if not self.staging_max:
            return
        deadline = time.monotonic() + STAGING_WAIT
        warned = False
        with self.st.lock:
            while True:
                others = [f for f in self.st.files.values()
                          if f is not sf and f.rec.has_copy and not f.retired]
                used = sum(f.rec.size for f in others) + new_size
                if used <= self.staging_max:
                    return
                if new_size > self.staging_max:
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
                                self.staging_max, sf.rec.name, STAGING_WAIT)
                self.st.lock.wait(min(0.5, left))

    def _full(self, sf: StagedFile, why: str) -> FsError:
        log.warning("staging area full (limit %d bytes): a write to %s fails with ENOSPC: %s",
                    self.staging_max, sf.rec.name, why)
        return FsError(errno.ENOSPC, "staging area full (--staging-max %d): %s"
                       % (self.staging_max, why))
