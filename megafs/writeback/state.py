"""``QueueState``: what the parts of one write-back queue share, and nothing else.

The staged files by id (``files``), which file holds which node (``owner``), the to-do set of
the committer (``todo``), the files offered to the upload workers (``offered``), finished
uploads waiting for their ``p`` (``ready``), the stop flag and the lock.  The queue
(``queue.WriteBack``) owns it; the upload workers (``scheduler``), the committer, ``control``
and ``recovery`` get it (and the narrow callbacks they need) passed in, so ``writeback/`` has
no import loop and no part reaches into another's private members.

Concurrency contract: ``lock`` is the write-back lock, a Condition over a re-entrant lock.
It guards every field here and every ``StagedFile`` field (the files' transition methods take
it themselves).  It is never held during network I/O, fsync or sqlite commits.  Lock order:
namespace lock -> ``lock`` -> ``tree.lock``.  Waiting on it is for the small-file dispatcher
(and a write waiting for staging space); the upload workers wait on ``work_cv`` and the
committer on ``commit_cv``, and whoever waits for one file on that file's ``watch``, all
Conditions over the same lock, each woken only by the changes its waiters act on (and, while
the dispatcher holds a burst of closes, a small file's change wakes neither it nor the
committer: ``held``, ``end_hold``).  Measured (100 x 4 KiB until every link reads, home
profile of ``scripts/bench --wan``): with every waiter on ``lock``, each of the ~400
transitions of such a run woke every one of ~70 waiting threads (POSTs waiting for room,
link reads), and ``Condition.notify``/``wait`` were a third of the mount's GIL time.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from ..tree.names import base_display_name
from ..tree.tree import Tree
from . import record as R
from .record import Record, Step
from .staged import StagedFile

WAVE_QUIET = 0.05         # seconds: the least wait for the next POST of a wave to end
WAVE_MAX = 2.0            # seconds: the committer waits for a wave of POSTs at most this long


class QueueState:
    """See the module docstring."""

    def __init__(self, tree: Tree, staging: str) -> None:
        self.tree = tree
        self.staging = staging                      # the staging directory (0700)
        mutex = threading.RLock()
        self.lock = threading.Condition(mutex)
        # the committer waits on its own condition over the same lock: a finished upload or
        # a POST that ended wakes it alone, not the upload workers and the dispatcher too
        self.commit_cv = threading.Condition(mutex)
        # the upload workers (files bigger than one POST) wait on theirs: a close of a small
        # file wakes the small-file dispatcher (``lock``), not them (``small``)
        self.work_cv = threading.Condition(mutex)
        self.small: Callable[[StagedFile], bool] = lambda sf: False   # set by the scheduler
        self.files: dict[str, StagedFile] = {}
        self.owner: dict[str, StagedFile] = {}      # node handle -> the file holding it
        self.todo: set[str] = set()                 # rids the committer should look at
        self.offered: dict[str, StagedFile] = {}    # rid -> file that may need an upload
        self.ready: list[StagedFile] = []           # finished uploads (busy, with a token)
        self.in_flight = 0                          # uploads running
        self.last_close = 0.0                       # monotonic time new content was flushed
        self.close_gap = 0.0                        # seconds between the last two such closes
        # a wave of small files' POSTs (``scheduler``): how many run, when the wave began,
        # when its first and its latest POST ended (monotonic; 0: not yet); ``wave_until``
        self.posting = 0
        self.wave_start = self.wave_first = self.wave_last = 0.0
        # until when (monotonic; 0.0: not) the small-file dispatcher holds a burst of closes
        # (``scheduler.burst_hold``): finished uploads wait for it, to share its ``p``
        self.held_until = 0.0
        self.stopping = threading.Event()
        # Whether a read-only open holds node ``handle`` (set by the filesystem core): such a
        # node is not deleted until its readers are gone (issue 21, ``record.unread``).
        # Lock-free; a reader counts itself before it checks that no staged file holds the
        # node, and a node is held by its staged file until it is deleted.
        self.being_read: Callable[[str], bool] = lambda handle: False

    def new_file(self, rec: Record, path: str, *, persisted: bool = False) -> StagedFile:
        """A ``StagedFile`` guarded by this queue's lock that tells this queue of changes
        (not yet registered: see ``register``)."""
        return StagedFile(rec, path, lock=self.lock, tell=self.touched, persisted=persisted)

    def register(self, sf: StagedFile, handles: list[str]) -> None:
        """``sf`` is one of the queue's files, holding nodes ``handles``."""
        with self.lock:
            self.files[sf.rid] = sf
            for handle in handles:
                if handle:
                    self.owner[handle] = sf

    def forget(self, sf: StagedFile) -> None:
        """Drop a retired file from every index (under ``lock``)."""
        sf.retire()
        self.files.pop(sf.rid, None)
        self.todo.discard(sf.rid)
        for handle in [h for h, owner in self.owner.items() if owner is sf]:
            del self.owner[handle]
        self.wake_all()
        sf.watch.notify_all()

    def wake_all(self) -> None:
        """Wake the queue's threads: the dispatcher (``lock``), the upload workers
        (``work_cv``) and the committer (``commit_cv``) look again (call under ``lock``)."""
        self.lock.notify_all()
        self.work_cv.notify_all()
        self.commit_cv.notify_all()

    def wake_watchers(self) -> None:
        """Wake whoever waits for any file (the mount stops, other clients' changes were
        applied): each looks at its file again."""
        with self.lock:
            for sf in self.files.values():
                sf.watch.notify_all()

    # --- under lock -------------------------------------------------------------------------
    def post_started(self) -> None:
        """A small file's POST starts (under ``lock``)."""
        if not self.posting:
            self.wave_start, self.wave_first, self.wave_last = time.monotonic(), 0.0, 0.0
        self.posting += 1

    def post_ended(self) -> None:
        """A small file's POST ended, whatever its outcome (under ``lock``)."""
        self.posting -= 1
        self.wave_last = time.monotonic()
        self.wave_first = self.wave_first or self.wave_last
        self.commit_cv.notify_all()

    def wave_until(self) -> float:
        """Until when (monotonic; 0.0: no wave) the committer waits for the small files'
        POSTs under way, so that one ``p`` and one ``l`` serve them all (issue 23): POSTs
        that began together end within a few round trips of each other (a new connection
        costs one or two more than a kept-alive one, and 100 TLS handshakes take the cores
        for a while), so it waits while they keep ending: until twice the first POST's own
        time has passed without one ending (at least ``WAVE_QUIET``), and at least until three
        times that time after the first ended; never beyond ``WAVE_MAX`` after the wave began.
        Measured (far profile, RTT 150 ms, 100 x 4 KiB): the POSTs ended 0.18-0.67 s after
        their ``u``, in clusters up to 0.15 s apart; with a 50 ms gather the committer sent
        three ``p`` and three ``l`` instead of one each."""
        if not self.posting:
            return 0.0
        cap = self.wave_start + WAVE_MAX
        if not self.wave_first:
            return cap
        first = self.wave_first - self.wave_start
        return min(cap, max(self.wave_first + 3 * first,
                            self.wave_last + max(WAVE_QUIET, 2 * first)))

    def touched(self, sf: StagedFile) -> None:
        """Something changed: the committer and whoever uploads it (the dispatcher for a
        small file, else the workers) look at ``sf`` again, and whoever waits for it.  While
        the dispatcher holds a burst of closes (``held``), a small file's change wakes
        neither: the dispatcher looks again within its quiet moment anyway
        (``scheduler.burst_quiet``, at most 0.25 s) and wakes the committer when the hold ends
        (``end_hold``)."""
        with self.lock:
            self.todo.add(sf.rid)
            if sf.rec.has_copy and not sf.rec.unlinked:
                self.offered.setdefault(sf.rid, sf)
            if not self.held(sf):
                self._wake_uploader(sf)
                self.commit_cv.notify_all()
            sf.watch.notify_all()

    def offer(self, sf: StagedFile) -> None:
        """``sf`` may need an upload."""
        with self.lock:
            if sf.rid not in self.offered:
                self.offered[sf.rid] = sf
                if not self.held(sf):
                    self._wake_uploader(sf)

    def held(self, sf: StagedFile) -> bool:
        """Whether a change of ``sf`` can wait for the end of the burst the dispatcher holds
        (under ``lock``): a small file that ``fsync`` does not wait for.  Measured (100 x
        4 KiB ``cp -r``, loopback, interleaved): each close woke the dispatcher and the
        committer, whose turns under the lock and the GIL delayed the copy's next
        operations by about 0.3 ms a file."""
        return (self.held_until > time.monotonic() and self.small(sf) and not sf.forced)

    def ready_held(self) -> bool:
        """Whether the finished uploads (``ready``) wait for the burst the dispatcher holds,
        to share its ``p`` (under ``lock``): not once ``fsync`` waits for one of them."""
        return self.held_until > time.monotonic() and not any(sf.forced for sf in self.ready)

    def end_hold(self) -> None:
        """The dispatcher's hold of a burst ended (under ``lock``): the committer looks at
        the changes it was not woken for."""
        if self.held_until:
            self.held_until = 0.0
            self.commit_cv.notify_all()

    def _wake_uploader(self, sf: StagedFile) -> None:
        """Wake the dispatcher (a small file) or the upload workers (a file bigger than one
        POST).  Measured (100 x 4 KiB ``cp``, loopback): a close that woke the four workers
        too, each walking every offered file, delayed the copy's next ``stat`` by 0.2 ms."""
        self.lock.notify_all()
        if not self.small(sf):
            self.work_cv.notify_all()

    def hand(self, sf: StagedFile) -> None:
        """An upload worker finished ``sf``'s upload: the committer sends its ``p``."""
        with self.lock:
            self.ready.append(sf)
            self.commit_cv.notify_all()

    def step(self, sf: StagedFile) -> Step:
        """``record.plan`` for ``sf`` now (call under ``lock``).  Nodes being read
        (``being_read``) are left out of what the file must delete: they wait for their
        readers, the rest goes on (the file can be uploaded and exported meanwhile)."""
        rec = R.unread(sf.rec, self.being_read)
        node = self.tree.get(rec.committed) if rec.committed else None
        view = None if node is None else (node.parent, node.name, node.mtime_ns,
                                          bool(node.public))
        return R.plan(rec, node=view, writers=sf.writers, forced=sf.forced,
                      dirty=sf.dirty, handles=sf.handles, now=time.time(),
                      node_attrs=None if node is None else node.attrs)

    def shown_step(self, sf: StagedFile) -> Step:
        """``step`` as status shows it: IDLE while writes are not flushed (under ``lock``)."""
        return Step.IDLE if sf.dirty else self.step(sf)

    def settled(self, sf: StagedFile) -> bool:
        """Nothing left to send and nothing open, so the file may be retired (call under
        ``lock``).  An unlinked file settles once its remote nodes are deleted, whatever
        was written to it after the unlink."""
        if sf.busy or sf.handles > 0:
            return False
        if not sf.rec.unlinked and (sf.dirty or sf.meta_dirty):
            return False
        # a node still to delete that is being read keeps the file (and its row) until then
        return R.unread(sf.rec, self.being_read) is sf.rec and self.step(sf) is Step.DONE

    def remote_changed(self, sf: StagedFile) -> bool:
        """Whether another client changed what ``sf`` shows, so the namespace must look at it:
        its folder is gone, or it mirrors a node (no place of its own) that was moved,
        renamed, touched or removed (call under ``lock``)."""
        rec = sf.rec
        if rec.unlinked or sf.retired:
            return False
        if self.tree.get(rec.parent) is None:
            return True
        if rec.local_meta or not rec.committed:
            return False
        node = self.tree.get(rec.committed)
        if node is None:
            return not rec.has_copy
        ours = rec.generation > rec.committed_gen or sf.dirty    # content changed here
        # the node's own name (escaped), not its display name: that one can carry a
        # "(HANDLE)" alias for a moment while an old version of this very file still exists
        return (node.parent != rec.parent or base_display_name(node) != rec.name
                or (not ours and node.mtime_ns != rec.mtime_ns))

    def kick(self) -> None:
        """The server answers again: transient back-offs end now."""
        with self.lock:
            for sf in list(self.files.values()):
                if not sf.rec.failed and sf.rec.next_try:
                    sf.retry()
