"""The durable write-back queue: staged files waiting for upload, the uploader pool, recovery.

Owns the per-mount ``queue.sqlite`` (WAL, ``synchronous=FULL``) and the ``staging/`` directory
(0700, files 0600), the in-memory ``Record`` of every staged file, the pool of uploader
threads, the single committer thread that turns finished uploads into nodes in batches, the
retry policy, waiting for an upload (``.link``, xattrs, fsync) and crash recovery.  It never
imports FUSE and never decides POSIX semantics (that is ``fs.py``); it never logs sids, keys or
links (records are named by path or remote handle only).

State machine of one record (column ``state``; ``busy``/``dirty`` live in memory only)::

    open for write ──write──> dirty (memory only; staged file holds the bytes)
        │ flush/fsync/release: fsync(staged) + durable upsert, generation += 1
        v
    PENDING ──(no open writer, or fsync asked; back-off elapsed)──> UPLOADING (busy)
        │  client.upload(staged)            -> token        (many workers in parallel)
        │  committer: put_files(batch)     -> node h        attrs carry mfs=<rid>.<generation>
        │     row.handle = h                                 *commit point*
        │  export(batch)                   -> public handle -> link
        │  delete every node in ``replaces`` (old versions) only now that h exists
        v
    UPLOADED (row keeps handle + link) ──> staged file deleted (once no handle is open)

    UPLOADING --transient error--> PENDING, next_try = now + back-off (0.5 s doubling, cap 60 s);
          while uploads stall a prober checks every second that the API host accepts TCP
          connections, and when it comes back, back-offs are cleared and uploads stuck in the
          client's own retry sleep are restarted
    UPLOADING --permanent error (-17 quota, -9 parent gone, -11, ...)--> FAILED (error text)
    FAILED --longer back-off (5 min doubling, cap 1 h) or ``megafs retry``--> PENDING
    any --file rewritten meanwhile (generation/version changed)--> PENDING for the new data;
          a node already committed for the old data joins ``replaces`` (deleted later)
    any --unlink--> row and staged data dropped, committed/replaced nodes deleted remotely
    any --rename--> row's parent/name updated (a node committed meanwhile is renamed/moved)

What is on disk and what a crash leaves: *dirty* data not yet flushed may be lost (close(2)
always flushes first).  PENDING/UPLOADING/FAILED: staged file (fsynced) + row; at the next
mount UPLOADING becomes PENDING and everything is uploaded again into the same account.  A
crash between ``p`` and recording ``handle`` is caught by the upload id: every row whose put
was ever attempted (``put_tried``) is checked against the fresh node listing for a child of its
parent whose ``mfs`` attribute is ``<rid>.<generation>``; if found, that node is adopted instead
of uploading again (no duplicate), and nodes of older generations of the same row are added to
``replaces``.  UPLOADED rows: their staged file is removed at the next mount if a crash left
it.  Data is never deleted locally before MEGA confirmed the node.

Concurrency contract: ``WriteBack.lock`` (a ``_QueueLock``: Condition over an RLock) guards
every ``Record`` field and the indexes; it is never held during network I/O, while waiting, or
while sqlite syncs: rows saved under it are committed by the same thread as it leaves its
outermost ``with lock:`` block, before that statement returns (so a row is durable before the
caller goes on, e.g. before ``close`` returns or before a ``p`` is sent).  The sqlite connection
has its own lock (``_db_lock``); a per-row sequence number keeps an older snapshot from
overwriting a newer one.  Rows of threads committing at the same time share one transaction
(group commit, ``_gc``: one leader writes, the others wait for it).  Staged files of dropped
records are unlinked after the lock is released.  Lock order: fs core locks -> WriteBack.lock
-> tree.lock; _gc -> _db_lock, taken without WriteBack.lock.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .api import links
from .errors import FsError, MegaError, MegafsError, describe
from .tree import tree as nodes_mod

log = logging.getLogger(__name__)

PENDING, UPLOADING, UPLOADED, FAILED = "pending", "uploading", "uploaded", "failed"

# MEGA codes after which an upload cannot succeed without a change on the user's side.
PERMANENT_CODES = frozenset({-2, -9, -11, -12, -14, -16, -17, -24, -28, -29})

TRANSIENT_FIRST, TRANSIENT_CAP = 0.5, 60.0
FAILED_FIRST, FAILED_CAP = 300.0, 3600.0
COMMIT_BATCH = 200
COMMIT_GATHER = 0.05      # seconds the committer waits for uploads about to finish
STALLED_AFTER = 3.0       # seconds without upload progress before an upload counts as stalled

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    rid TEXT PRIMARY KEY,
    parent TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    mtime REAL NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    replaces TEXT NOT NULL DEFAULT '[]',
    handle TEXT,
    link TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    put_tried INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL DEFAULT 0,
    path TEXT
)
"""


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying the same upload can never succeed (quota, parent gone, access...)."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code in PERMANENT_CODES:
        return True
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc and isinstance(cause, MegaError):
        return cause.code in PERMANENT_CODES
    return isinstance(exc, (FileNotFoundError,))


@dataclass(eq=False)
class Record:
    """One staged file.  Every field is guarded by ``WriteBack.lock``."""

    rid: str
    parent: str
    name: str
    staged: str
    size: int = 0
    mtime: float = 0.0
    state: str = PENDING
    generation: int = 0
    replaces: list[str] = field(default_factory=list)
    handle: str | None = None        # node committed for ``generation`` (if any)
    link: str | None = None
    error: str | None = None
    attempts: int = 0
    next_try: float = 0.0
    put_tried: bool = False
    persisted: bool = False
    # memory only
    dirty: bool = False              # writes not yet flushed to disk + queue
    version: int = 0                 # bumped by every write/truncate
    writers: int = 0                 # open write handles
    handles: int = 0                 # open handles of any kind on the staged file
    forced: bool = False             # fsync asked: upload even with writers open
    busy: bool = False               # owned by an uploader worker / the committer
    cancelled: bool = False
    progress: int = 0
    progress_at: float = 0.0         # monotonic time of the last upload progress
    restart: bool = False            # cancelled on purpose to restart at once
    upload_cancel: threading.Event | None = None

    @property
    def upload_id(self) -> str:
        return "%s.%d" % (self.rid, self.generation)

    @property
    def shown_state(self) -> str:
        if self.state == UPLOADED and (self.dirty or self.busy):
            return PENDING
        if self.busy:
            return UPLOADING
        return self.state


class _QueueLock:
    """``WriteBack.lock``: a Condition over an RLock whose queue-row writes happen on release.

    ``_save`` called under the lock only snapshots rows into a per-thread buffer; when the
    thread leaves its outermost ``with lock:`` the rows are committed (fsync'd by sqlite)
    before the ``with`` statement returns.  So durability is unchanged for the caller, but no
    other thread waits on the queue lock while sqlite syncs to disk (profiling a 300-file copy
    showed FUSE threads queueing on this lock behind those commits).
    """

    def __init__(self, flush: Callable[[list], None]) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._local = threading.local()
        self._flush = flush
        # Bumped by every outermost entry: any Record field may have changed since, so values
        # derived from the records (``WriteBack.shadowed``) are cached per version.
        self.version = 0

    def __enter__(self) -> "_QueueLock":
        self._cond.__enter__()
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        if depth == 0:
            self.version += 1
        return self

    def enter_reading(self) -> bool:
        """Enter without bumping ``version`` (for read-only queries); returns whether this is
        the outermost entry (only then may a value derived under it be cached)."""
        self._cond.__enter__()
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        return depth == 0

    def __exit__(self, *exc: Any) -> None:
        self._local.depth -= 1
        outer = self._local.depth == 0
        self._cond.__exit__(*exc)
        if outer:
            rows = getattr(self._local, "rows", None)
            if rows:
                self._local.rows = []
                self._flush(rows)
            doomed = getattr(self._local, "unlink", None)
            if doomed:
                self._local.unlink = []
                for path in doomed:
                    _unlink_quiet(path)

    def unlink_later(self, path: str) -> None:
        """Remove a staged file once the lock is released (an unlink under the lock made every
        FUSE thread wait behind the file system)."""
        if not hasattr(self._local, "unlink"):
            self._local.unlink = []
        self._local.unlink.append(path)

    def held(self) -> bool:
        return getattr(self._local, "depth", 0) > 0

    def buffer(self, rows: list) -> None:
        if not hasattr(self._local, "rows"):
            self._local.rows = []
        self._local.rows.extend(rows)

    def wait(self, timeout: float | None = None) -> bool:
        return self._cond.wait(timeout)

    def notify_all(self) -> None:
        self._cond.notify_all()


@dataclass
class _Job:
    rec: Record
    uploaded: Any            # client Uploaded or None (finish-only)
    generation: int
    version: int
    parent: str = ""
    name: str = ""


class WriteBack:
    """The queue, its uploader workers and committer.  See the module docstring."""

    def __init__(self, mount_dir: str, client: Any, tree: nodes_mod.Tree, *,
                 workers: int = 4, on_change: Callable[[set[str]], None] | None = None) -> None:
        self.mount_dir = mount_dir
        self.client = client
        self.tree = tree
        self.workers = max(1, workers)
        self.on_change = on_change
        self.staging = os.path.join(mount_dir, "staging")
        os.makedirs(mount_dir, mode=0o700, exist_ok=True)
        os.makedirs(self.staging, mode=0o700, exist_ok=True)
        os.chmod(self.staging, 0o700)
        self.lock = _QueueLock(self._write_rows)
        self._seq = 0
        self._written: dict[str, int] = {}
        self.records: dict[str, Record] = {}
        self.by_path: dict[tuple[str, str], Record] = {}
        self._db_lock = threading.Lock()
        self.db = open_db(os.path.join(mount_dir, "queue.sqlite"))
        # Every mount of this queue sends the same request id `i`, so the change feed tells
        # our commits (including a `p` of a killed earlier mount that the server applied late)
        # from other clients' changes.
        self.request_id = _persistent_request_id(mount_dir)
        if hasattr(client, "request_id"):
            client.request_id = self.request_id
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._commit_q: list[_Job] = []
        self._in_flight = 0     # uploads running in workers (not yet handed to the committer)
        self._commit_busy = False
        self._verify_needed: set[str] = set()
        self._shadow: tuple[int, frozenset[str]] | None = None
        # group commit of queue rows (see _write_rows)
        self._gc = threading.Condition(threading.Lock())
        self._gc_rows: list = []
        self._gc_open = 0       # id of the batch now collecting rows
        self._gc_done = 0       # every batch below this id is committed (or failed)
        self._gc_leader = False
        self._gc_failed: dict[int, BaseException] = {}

    # --- persistence ------------------------------------------------------------------------
    def _save(self, recs: Iterable[Record]) -> None:
        """Persist rows; under ``self.lock`` the commit happens when the lock is released."""
        rows = []
        now = time.time()
        with self.lock:
            for r in recs:
                if r.cancelled:
                    continue
                state = r.state if not r.busy else UPLOADING
                self._seq += 1
                rows.append((self._seq, (r.rid, r.parent, r.name, r.size, r.mtime, state,
                                         r.generation, json.dumps(r.replaces), r.handle, r.link,
                                         r.error, r.attempts, r.next_try, int(r.put_tried),
                                         now, self._path_of(r))))
                r.persisted = True
            self.lock.buffer(rows)

    def _write_rows(self, rows: list) -> None:
        """Commit rows durably before returning, sharing one sqlite transaction (one WAL fsync)
        with every other thread committing at the same time (group commit): a FUSE flush and
        the committer's batch state changes no longer queue for one fsync each."""
        with self._gc:
            self._gc_rows.extend(rows)
            mine = self._gc_open
            while self._gc_done <= mine:
                if self._gc_leader:
                    self._gc.wait()
                    continue
                self._gc_leader = True
                batch, self._gc_rows = self._gc_rows, []
                bid = self._gc_open
                self._gc_open += 1
                self._gc.release()
                error: BaseException | None = None
                try:
                    self._commit_rows(batch)
                except BaseException as exc:   # handed to every thread of this batch
                    error = exc
                finally:
                    self._gc.acquire()
                    self._gc_leader = False
                    self._gc_done = bid + 1
                    if error is not None:
                        self._gc_failed[bid] = error
                        while len(self._gc_failed) > 64:
                            self._gc_failed.pop(next(iter(self._gc_failed)))
                    self._gc.notify_all()
            failed = self._gc_failed.get(mine)
        if failed is not None:
            raise failed

    def _commit_rows(self, rows: list) -> None:
        with self._db_lock:
            fresh = {}
            for seq, row in rows:
                rid = row[0]
                if self._written.get(rid, -1) < seq:   # never overwrite a newer snapshot
                    fresh[rid] = (seq, row)
            if not fresh:
                return
            try:
                with self.db:
                    self.db.executemany(
                        "INSERT OR REPLACE INTO records (rid, parent, name, size, mtime, state,"
                        " generation, replaces, handle, link, error, attempts, next_try,"
                        " put_tried, updated, path) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        [row for _seq, row in fresh.values()])
            except sqlite3.ProgrammingError:
                if self._stop.is_set():
                    return  # closed at shutdown; rows stay as last written
                raise
            for rid, (seq, _row) in fresh.items():
                self._written[rid] = seq

    def _delete_row(self, rid: str) -> None:
        with self._db_lock:
            self._written[rid] = 1 << 62   # no snapshot taken before this may re-insert it
            with self.db:
                self.db.execute("DELETE FROM records WHERE rid = ?", (rid,))

    # --- records used by the filesystem -----------------------------------------------------
    def lookup(self, parent: str, name: str) -> Record | None:
        # A dict read is atomic under the GIL; by_path is only changed under the lock.  No
        # lock here: every FUSE lookup comes through this (20,000 per `ls -l` of 10k files).
        return self.by_path.get((parent, name))

    def in_folder(self, parent: str) -> dict[str, Record]:
        with self.lock:
            return {name: r for (p, name), r in self.by_path.items() if p == parent}

    def shadowed(self) -> frozenset[str]:
        """Remote handles hidden by a staged file (old versions and not-yet-final commits).

        Cached until the queue lock is next taken for a change (``_QueueLock.version``): a
        lookup asks for this on every path component, and recomputing it over 1,000 pending
        records per lookup made a copy of many small files quadratic."""
        cached = self._shadow
        if cached is not None and cached[0] == self.lock.version:
            return cached[1]
        outer = self.lock.enter_reading()
        try:
            version = self.lock.version
            out: set[str] = set()
            for r in self.by_path.values():
                out.update(r.replaces)
                if r.handle:
                    out.add(r.handle)
            result = frozenset(out)
            if outer:   # nested in a changer's block, later changes would not bump version
                self._shadow = (version, result)
            return result
        finally:
            self.lock.__exit__(None, None, None)

    def stage(self, parent: str, name: str, replaces: list[str] | None = None, *,
              register: bool = True) -> Record:
        """A new staged file (empty, 0600) at (parent, name); not yet durable (dirty).

        With ``register=False`` the path keeps showing the remote file until ``register``
        (used while the old contents are still being downloaded into the staged copy)."""
        rid = secrets.token_hex(8)
        path = os.path.join(self.staging, rid)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        rec = Record(rid, parent, name, path, mtime=time.time(),
                     replaces=list(replaces or []), dirty=True)
        with self.lock:
            self.records[rid] = rec
            if register:
                self.by_path[(parent, name)] = rec
        return rec

    def register(self, rec: Record) -> None:
        with self.lock:
            if not rec.cancelled:
                self.by_path[(rec.parent, rec.name)] = rec

    def touch(self, rec: Record, size: int | None = None) -> None:
        """A write or truncate happened: the staged data is newer than any upload."""
        with self.lock:
            rec.dirty = True
            rec.version += 1
            rec.mtime = time.time()
            if size is not None:
                rec.size = size

    def set_mtime(self, rec: Record, mtime: float) -> None:
        with self.lock:
            rec.mtime = mtime
            if rec.state == UPLOADED and not rec.dirty and rec.handle:
                return  # caller updates the remote node directly
            if rec.persisted and not rec.dirty:
                self._save([rec])

    def persist(self, rec: Record, fd: int | None = None) -> None:
        """Make the staged data and its queue row durable (flush/fsync/release of a dirty file)."""
        with self.lock:
            if not rec.dirty or rec.cancelled:
                return
            version = rec.version
        if fd is not None:
            os.fsync(fd)
        else:
            tmp = os.open(rec.staged, os.O_RDONLY)
            try:
                os.fsync(tmp)
            finally:
                os.close(tmp)
        size = os.stat(rec.staged).st_size
        with self.lock:
            if rec.cancelled:
                return
            rec.size = size
            # A write that raced the fsync keeps the record dirty: its own flush syncs it.
            rec.dirty = rec.version != version
            rec.generation += 1
            if rec.handle and not rec.busy:
                # The node committed for the previous data becomes an old version.
                rec.replaces.append(rec.handle)
                rec.handle = None
            rec.link = None
            rec.state = PENDING
            rec.error = None
            rec.attempts = 0
            rec.next_try = 0.0
            self._save([rec])
            self.lock.notify_all()

    def opened(self, rec: Record, write: bool) -> None:
        with self.lock:
            rec.handles += 1
            if write:
                rec.writers += 1

    def closed(self, rec: Record, write: bool) -> None:
        """Release of one handle; the last writer makes the record eligible."""
        with self.lock:
            rec.handles -= 1
            if write:
                rec.writers -= 1
                if rec.writers == 0:
                    rec.forced = False
            self._maybe_drop(rec)
            self.lock.notify_all()

    def _maybe_drop(self, rec: Record) -> None:
        """Forget an uploaded or cancelled record once nothing refers to its staged data."""
        if rec.handles > 0 or rec.busy or rec.dirty:
            return
        if rec.cancelled or (rec.state == UPLOADED and rec.persisted):
            self.records.pop(rec.rid, None)
            if self.by_path.get((rec.parent, rec.name)) is rec:
                del self.by_path[(rec.parent, rec.name)]
            self.lock.unlink_later(rec.staged)

    def force(self, rec: Record) -> None:
        with self.lock:
            rec.forced = True
            rec.next_try = 0.0
            self.lock.notify_all()

    def rename(self, rec: Record, parent: str, name: str, replaces: Iterable[str] = ()) -> None:
        with self.lock:
            if self.by_path.get((rec.parent, rec.name)) is rec:
                del self.by_path[(rec.parent, rec.name)]
            rec.parent, rec.name = parent, name
            rec.replaces.extend(h for h in replaces if h not in rec.replaces)
            self.by_path[(parent, name)] = rec
            if rec.persisted:
                self._save([rec])

    def detach(self, rec: Record) -> list[str]:
        """Cancel a record (unlink, or replaced by a rename); return remote nodes to delete."""
        with self.lock:
            rec.cancelled = True
            if self.by_path.get((rec.parent, rec.name)) is rec:
                del self.by_path[(rec.parent, rec.name)]
            doomed = list(rec.replaces)
            if rec.handle:
                doomed.append(rec.handle)
            rec.replaces = []
            rec.handle = None
            if rec.upload_cancel is not None:
                rec.upload_cancel.set()
            self._maybe_drop(rec)
            self.lock.notify_all()
        self._delete_row(rec.rid)
        return doomed

    def kick(self, restart_stalled: bool = False) -> None:
        """The server answers again (after an outage): retry transient failures now, and
        restart uploads stuck in a long retry sleep (their client back-off can reach 45 s)."""
        now = time.monotonic()
        with self.lock:
            for r in self.records.values():
                if r.state == PENDING and r.next_try > 0:
                    r.next_try = 0.0
                if (restart_stalled and r.busy and r.handle is None and r.upload_cancel
                        and now - r.progress_at > STALLED_AFTER):
                    r.restart = True
                    r.upload_cancel.set()
            self.lock.notify_all()

    def _prober(self) -> None:
        """While uploads stall or back off, check every second whether the API host accepts
        connections; on the way from down to up, kick the queue (outage recovery in ~1 s)."""
        down = False
        while not self._stop.wait(1.0):
            now, wall = time.monotonic(), time.time()
            with self.lock:
                suspect = any((r.busy and r.handle is None and now - r.progress_at
                               > STALLED_AFTER) or (r.state == PENDING and r.next_try > wall)
                              for r in self.records.values())
            if not suspect and not down:
                continue
            up = _reachable(getattr(self.client, "api", ""))
            if up and down:
                log.info("the API server is reachable again; restarting stalled uploads")
                self.kick(restart_stalled=True)
            down = not up

    def retry_failed(self) -> int:
        with self.lock:
            n = 0
            for r in self.records.values():
                if r.state == FAILED:
                    r.state, r.next_try, r.attempts, r.error = PENDING, 0.0, 0, None
                    n += 1
            self._save([r for r in self.records.values() if r.state == PENDING and r.persisted])
            self.lock.notify_all()
            return n

    def wait_uploaded(self, rec: Record, timeout: float | None) -> Record:
        """Block until ``rec``'s current data is uploaded; EIO if it failed, ETIMEDOUT."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while True:
                if rec.cancelled:
                    raise FsError(2, "the file was removed before its upload finished")
                if rec.state == UPLOADED and not rec.dirty and not rec.busy and rec.link:
                    return rec
                if rec.state == FAILED and not rec.busy and not rec.dirty:
                    raise FsError(5, "upload failed: %s" % (rec.error or "unknown error"))
                if self._stop.is_set():
                    raise FsError(5, "the mount is shutting down")
                if deadline is None:
                    self.lock.wait(1.0)
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise FsError(110, "timed out waiting for the upload")
                    self.lock.wait(min(left, 1.0))

    def counts(self) -> dict[str, int]:
        with self.lock:
            out = {PENDING: 0, UPLOADING: 0, FAILED: 0}
            for r in self.records.values():
                if r.cancelled:
                    continue
                s = r.shown_state
                if s in out and (r.persisted or r.dirty):
                    out[s] += 1
            return out

    def snapshot(self) -> list[dict]:
        """Live status of every unfinished record (for ``megafs status``)."""
        with self.lock:
            out = []
            for r in self.records.values():
                if r.cancelled or (r.state == UPLOADED and not r.dirty and not r.busy):
                    continue
                path = self._path_of(r)
                out.append({"path": path, "state": r.shown_state, "size": r.size,
                            "progress": r.progress, "error": r.error,
                            "attempts": r.attempts, "open": r.writers > 0})
            return out

    def _path_of(self, r: Record) -> str:
        parent = self.tree.path_of(r.parent)
        if parent is None:
            return "?/" + r.name
        return parent.rstrip("/") + "/" + r.name

    # --- start / stop -----------------------------------------------------------------------
    def recover(self) -> None:
        """Load the queue after a (clean or crashed) stop; call with a freshly loaded tree."""
        with self._db_lock:
            rows = self.db.execute("SELECT rid, parent, name, size, mtime, state, generation,"
                                   " replaces, handle, link, error, attempts, next_try,"
                                   " put_tried FROM records").fetchall()
        keep: list[Record] = []
        drop: list[str] = []
        for row in rows:
            (rid, parent, name, size, mtime, state, gen, replaces, handle, link, error,
             attempts, next_try, put_tried) = row
            staged = os.path.join(self.staging, rid)
            if state == UPLOADED:
                _unlink_quiet(staged)
                drop.append(rid)
                continue
            rec = Record(rid, parent, name, staged, size=size, mtime=mtime, state=state,
                         generation=gen, replaces=json.loads(replaces or "[]"), handle=handle,
                         link=None, error=error, attempts=attempts, next_try=0.0,
                         put_tried=bool(put_tried), persisted=True)
            if rec.state == UPLOADING:
                rec.state = PENDING
            if rec.state == FAILED:
                rec.next_try = time.time() + FAILED_FIRST
            if not os.path.exists(staged):
                rec.state, rec.error = FAILED, "staged data is missing from %s" % self.staging
                log.error("staged data of %s is missing; marked failed", name)
            if rec.handle and self.tree.get(rec.handle) is None:
                rec.handle = None
            if rec.handle is None and rec.put_tried:
                self._adopt(rec, self.tree)
            keep.append(rec)
        with self.lock:
            for rec in keep:
                self.records[rec.rid] = rec
                self.by_path[(rec.parent, rec.name)] = rec
        self._save(keep)
        with self._db_lock:
            with self.db:
                self.db.executemany("DELETE FROM records WHERE rid = ?", [(r,) for r in drop])
        # Staged files without a row were never made durable: nothing promised them.
        known = {r.rid for r in keep}
        for entry in os.listdir(self.staging):
            if entry not in known:
                _unlink_quiet(os.path.join(self.staging, entry))
        if keep:
            log.info("recovered %d queued upload(s)", len(keep))

    def _adopt(self, rec: Record, tree: nodes_mod.Tree) -> None:
        """Find nodes committed by an earlier put of this record (crash/ambiguous failure)."""
        for node in tree.children(rec.parent).values():
            mfs = node.attrs.get("mfs") if node.attrs else None
            if not isinstance(mfs, str) or not mfs.startswith(rec.rid + "."):
                continue
            if mfs == rec.upload_id and rec.handle is None:
                rec.handle = node.handle
                log.info("adopted node %s committed before a crash for %s", node.handle,
                         rec.name)
            elif node.handle not in rec.replaces and node.handle != rec.handle:
                rec.replaces.append(node.handle)
        rec.put_tried = False

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._worker, name="megafs-upload-%d" % i, daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._committer, name="megafs-commit", daemon=True)
        t.start()
        self._threads.append(t)
        t = threading.Thread(target=self._prober, name="megafs-probe", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop workers; in-flight uploads are abandoned and stay PENDING for the next mount."""
        self._stop.set()
        with self.lock:
            for r in self.records.values():
                if r.upload_cancel is not None:
                    r.upload_cancel.set()
            self.lock.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        with self.lock:
            # Rows stay as they are; UPLOADING rows are re-queued by recover().
            pass
        with self._db_lock:
            try:
                self.db.close()
            except sqlite3.Error:
                pass

    # --- the uploader -----------------------------------------------------------------------
    def _eligible(self, now: float) -> tuple[Record | None, float]:
        """The next record to upload (oldest first) and how long until another may be due."""
        best, wait = None, 5.0
        for r in self.records.values():
            if r.cancelled or r.busy or r.dirty or not r.persisted:
                continue
            if r.state not in (PENDING, FAILED):
                continue
            if r.writers > 0 and not r.forced:
                continue
            if r.next_try > now:
                wait = min(wait, r.next_try - now)
                continue
            if r.state == FAILED:
                r.state = PENDING
            if best is None or r.mtime < best.mtime:
                best = r
        return best, wait

    def _worker(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                rec, wait = self._eligible(time.time())
                if rec is None:
                    self.lock.wait(max(0.05, wait))
                    continue
                self._normalize(rec)
                rec.busy = True
                rec.progress = 0
                rec.progress_at = time.monotonic()
                rec.upload_cancel = threading.Event()
                job = _Job(rec, None, rec.generation, rec.version, rec.parent, rec.name)
                need_verify = rec.put_tried and rec.handle is None
                self._in_flight += 1
                self.lock.notify_all()
            try:
                self._run_job(job, need_verify)
            except Exception as exc:  # every failure is a state transition, never a crash
                self._failed_attempt(rec, exc)
            finally:
                with self.lock:
                    self._in_flight -= 1
                    self.lock.notify_all()

    def _normalize(self, rec: Record) -> None:
        """A committed node that holds older data than the record becomes an old version."""
        if rec.handle is None:
            return
        node = self.tree.get(rec.handle)
        if node is not None and node.attrs.get("mfs") == rec.upload_id:
            return
        if node is not None and rec.handle not in rec.replaces:
            rec.replaces.append(rec.handle)
        rec.handle = None

    def _run_job(self, job: _Job, need_verify: bool) -> None:
        rec = job.rec
        if need_verify:
            self._verify(rec)
        with self.lock:
            committed = rec.handle is not None
        if not committed:
            def progress(*args: Any) -> None:
                done = next((a for a in args if isinstance(a, int)), None)
                if done is not None:
                    rec.progress = done
                    rec.progress_at = time.monotonic()
            log.debug("uploading %s (%d bytes)", rec.name, rec.size)
            job.uploaded = self.client.upload(rec.staged, progress=progress,
                                              cancel=rec.upload_cancel)
        with self.lock:
            self._commit_q.append(job)
            self.lock.notify_all()

    def _verify(self, rec: Record) -> None:
        """After an ambiguous put failure: look for our node in a fresh listing."""
        listing = self.client.fetch()
        fresh = nodes_mod.Tree(self.tree.master_key, self.tree.user_handle)
        fresh.load(listing.nodes, listing.public)
        with self.lock:
            self._adopt(rec, fresh)
            handle = rec.handle
        if handle:
            raw = next((n for n in listing.nodes if isinstance(n, dict) and n.get("h") == handle),
                       None)
            if raw is not None:
                self.tree.add_raw(raw)

    def _failed_attempt(self, rec: Record, exc: BaseException) -> None:
        with self.lock:
            rec.busy = False
            rec.upload_cancel = None
            if rec.cancelled:
                self.lock.notify_all()
                self._maybe_drop(rec)
                return
            if self._stop.is_set():
                self.lock.notify_all()
                return
            if rec.restart:
                rec.restart = False
                rec.state, rec.next_try = PENDING, 0.0
                log.info("restarting the upload of %s", rec.name)
                self.lock.notify_all()
                return
            rec.attempts += 1
            text = describe(exc)
            if is_permanent(exc):
                rec.state = FAILED
                rec.error = text
                rec.next_try = time.time() + min(FAILED_CAP,
                                                 FAILED_FIRST * 2 ** min(rec.attempts - 1, 8))
                log.error("upload of %s failed: %s (kept staged; `megafs retry` or automatic"
                          " retry later)", rec.name, text)
            else:
                rec.state = PENDING
                delay = min(TRANSIENT_CAP, TRANSIENT_FIRST * 2 ** min(rec.attempts - 1, 10))
                rec.next_try = time.time() + delay
                level = logging.INFO if rec.attempts <= 2 else logging.WARNING
                log.log(level, "upload of %s: %s; retry %d in %.1f s", rec.name, text,
                        rec.attempts, delay)
            if not isinstance(exc, MegafsError) and not isinstance(exc, OSError):
                log.error("unexpected error uploading %s", rec.name, exc_info=exc)
            self._save([rec])
            self.lock.notify_all()

    # --- the committer ----------------------------------------------------------------------
    def _committer(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                if not self._commit_q:
                    self.lock.wait(0.5)
                    continue
                # While other uploads are about to finish, gather them for up to COMMIT_GATHER:
                # one `p`, one `l` and three queue commits serve the whole batch (a copy of
                # 4 KiB files otherwise committed them one or two at a time).  A lone upload is
                # committed at once.
                deadline = time.monotonic() + COMMIT_GATHER
                while (self._in_flight > 0 and len(self._commit_q) < COMMIT_BATCH
                       and not self._stop.is_set()):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.lock.wait(left)
                batch = self._commit_q[:COMMIT_BATCH]
                del self._commit_q[:COMMIT_BATCH]
            try:
                self._commit(batch)
            except Exception as exc:
                for job in batch:
                    if job.rec.busy:
                        self._failed_attempt(job.rec, exc)

    def _stale(self, job: _Job) -> bool:
        r = job.rec
        return r.generation != job.generation or r.version != job.version or r.dirty

    def _commit(self, batch: list[_Job]) -> None:
        from .api.client import PutItem  # the client module is only needed once uploads happen

        to_put: list[_Job] = []
        to_finish: list[_Job] = []
        with self.lock:
            for job in batch:
                r = job.rec
                if r.cancelled:
                    self._release_busy(r)
                    continue
                if self._stale(job):
                    self._requeue(r)
                    continue
                if job.uploaded is None:
                    to_finish.append(job)
                else:
                    job.parent, job.name = r.parent, r.name
                    r.put_tried = True
                    to_put.append(job)
            self._save([j.rec for j in to_put])
        if to_put:
            items = []
            for job in to_put:
                attrs = {"n": job.name, "t": int(job.rec.mtime), "mfs": job.rec.upload_id}
                items.append(PutItem(job.parent, job.uploaded, attrs,
                                     job.rec.replaces[0] if job.rec.replaces else None))
            try:
                results = self.client.put_files(items)
            except Exception as exc:
                # Ambiguous: the batch may or may not have been applied (put_tried stays set).
                for job in to_put:
                    self._failed_attempt(job.rec, exc)
                to_put = []
                results = []
            changed: set[str] = set()
            doomed: list[str] = []
            committed: list[Record] = []
            for job, res in zip(to_put, results):
                r = job.rec
                if isinstance(res, BaseException):
                    with self.lock:
                        if isinstance(res, MegaError):
                            r.put_tried = False  # a definite refusal: nothing was created
                    self._failed_attempt(r, res)
                    continue
                node = self.tree.add_raw(res)
                handle = node.handle if node is not None else res.get("h")
                changed.add(job.parent)
                with self.lock:
                    if r.cancelled:
                        doomed.append(handle)
                        self._release_busy(r)
                        continue
                    if self._stale(job):
                        r.replaces.append(handle)
                        self._requeue(r)
                        continue
                    r.handle = handle
                    r.put_tried = False
                    committed.append(r)
                to_finish.append(job)
            self._save(committed)
            for h in doomed:
                self._delete_remote(h)
            if changed and self.on_change:
                self.on_change(changed)
        if to_finish:
            self._finish(to_finish)

    def _release_busy(self, r: Record) -> None:
        r.busy = False
        r.upload_cancel = None
        self._maybe_drop(r)
        self.lock.notify_all()

    def _requeue(self, r: Record) -> None:
        r.busy = False
        r.upload_cancel = None
        if r.state != FAILED:
            r.state = PENDING
        r.next_try = 0.0
        self._save([r])
        self.lock.notify_all()

    def _fixup(self, r: Record) -> None:
        """Bring a committed node in line with a rename/move/utimens that raced its upload."""
        with self.lock:
            want_parent, want_name, want_t, handle = r.parent, r.name, int(r.mtime), r.handle
        node = self.tree.get(handle) if handle else None
        if node is None or handle is None:
            return
        if node.parent != want_parent:
            self.client.move(handle, want_parent)
            self.tree.move(handle, want_parent)
        if node.name != want_name or node.attrs.get("t") != want_t:
            attrs = dict(node.attrs)
            attrs["n"], attrs["t"] = want_name, want_t
            self.client.set_attrs(handle, node.key, attrs)
            self.tree.set_attrs(handle, attrs)

    def _finish(self, jobs: list[_Job]) -> None:
        """Rename/move fixes, export, delete old versions, mark uploaded, drop staged data."""
        live: list[tuple[_Job, str]] = []
        for job in jobs:
            with self.lock:
                handle = job.rec.handle
            if job.rec.cancelled or not handle or self.tree.get(handle) is None:
                self._abandon(job.rec, lost=not job.rec.cancelled)
                continue
            try:
                self._fixup(job.rec)
            except Exception as exc:
                self._failed_attempt(job.rec, exc)
                continue
            live.append((job, handle))
        need_export = [(j, h) for j, h in live if not getattr(self.tree.get(h), "public", None)]
        if need_export:
            try:
                phs: list[Any] = list(self.client.export([h for _j, h in need_export]))
            except Exception as exc:
                phs = [exc] * len(need_export)
            for (job, handle), ph in zip(need_export, phs):
                if isinstance(ph, BaseException):
                    self._failed_attempt(job.rec, ph)
                    live.remove((job, handle))
                else:
                    self.tree.set_public(handle, ph)
        for job, handle in list(live):
            r = job.rec
            with self.lock:
                # the same commit applied twice (a `p` of a killed mount that landed late)
                for twin in self.tree.same_upload(handle):
                    if twin.handle not in r.replaces:
                        log.info("node %s repeats the commit of %s as %s; removing it",
                                 twin.handle, r.name, handle)
                        r.replaces.append(twin.handle)
            try:
                for old in list(r.replaces):
                    self._delete_remote(old)
                    with self.lock:
                        if old in r.replaces:
                            r.replaces.remove(old)
            except Exception as exc:
                self._failed_attempt(r, exc)
                live.remove((job, handle))
        done = []
        for job, handle in live:
            r = job.rec
            node = self.tree.get(handle)
            if node is None or not node.public or node.key is None:
                self._abandon(r, lost=node is None)
                continue
            link = links.format_link(node.public, node.key)
            with self.lock:
                if r.cancelled or self._stale(job) or r.handle != handle:
                    self._abandon(r)
                    continue
                if (r.parent, r.name, int(r.mtime)) != (node.parent, node.name,
                                                        node.attrs.get("t")):
                    self._requeue(r)   # renamed or touched during the fix-up: finish again
                    continue
                r.link = link
                r.state = UPLOADED
                r.error = None
                r.attempts = 0
                r.busy = False
                r.upload_cancel = None
                r.forced = False
                done.append(r)
        if done:
            self._save(done)
            with self.lock:
                for r in done:
                    log.info("uploaded %s as node %s", r.name, r.handle)
                    self._maybe_drop(r)
                self.lock.notify_all()
            if self.on_change:
                self.on_change({r.parent for r in done})

    def _abandon(self, r: Record, lost: bool = False) -> None:
        """Give a job back: cancelled records are released, others go back to PENDING
        (``lost``: the committed node vanished, so the data must be uploaded again)."""
        with self.lock:
            if r.cancelled:
                self._release_busy(r)
                return
            if lost:
                r.handle = None
            self._requeue(r)

    def _delete_remote(self, handle: str) -> None:
        if self.tree.get(handle) is not None:
            delete_node(self.client, self.tree, handle)


def delete_node(client: Any, tree: nodes_mod.Tree, handle: str) -> None:
    """Delete a remote node and drop it from the tree; a node already gone (-9) is fine."""
    try:
        client.delete(handle)
    except MegaError as exc:
        if exc.code != -9:
            raise
    tree.remove(handle)


def _persistent_request_id(mount_dir: str) -> str:
    path = os.path.join(mount_dir, "request-id")
    try:
        with open(path) as fh:
            value = fh.read().strip()
        if len(value) == 10 and value.isalnum():
            return value
    except OSError:
        pass
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    value = "".join(secrets.choice(alphabet) for _ in range(10))
    tmp = path + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
        fh.write(value)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return value


def _reachable(api: str) -> bool:
    """Whether the API host accepts a TCP connection (cheap; no request is sent)."""
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(api)
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if not host:
            return False
        socket.create_connection((host, port), timeout=2.0).close()
        return True
    except (OSError, ValueError):
        return False


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def open_db(path: str) -> sqlite3.Connection:
    """The queue database: WAL + synchronous=FULL, so a committed row survives power loss."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    db = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level="DEFERRED")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(_SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(records)")}
    if "path" not in columns:   # queues written before the column existed
        db.execute("ALTER TABLE records ADD COLUMN path TEXT")
    db.commit()
    return db


def read_status(mount_dir: str) -> list[dict]:
    """Rows of an (possibly unmounted) queue, for ``megafs status`` without a live mount."""
    path = os.path.join(mount_dir, "queue.sqlite")
    if not os.path.exists(path):
        return []
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(records)")}
        path_col = "path" if "path" in columns else "NULL"
        rows = db.execute("SELECT name, state, size, error, attempts, parent, %s FROM records"
                          " WHERE state != 'uploaded' ORDER BY updated" % path_col).fetchall()
    finally:
        db.close()
    return [{"path": path or name, "state": state, "size": size, "progress": 0, "error": error,
             "attempts": attempts, "parent": parent}
            for name, state, size, error, attempts, parent, path in rows]


def mark_failed_for_retry(mount_dir: str) -> int:
    """``megafs retry`` when the mount is not running: failed rows retry at the next mount."""
    path = os.path.join(mount_dir, "queue.sqlite")
    if not os.path.exists(path):
        return 0
    db = open_db(path)
    try:
        with db:
            cur = db.execute("UPDATE records SET state = 'pending', attempts = 0, error = NULL,"
                             " next_try = 0 WHERE state = 'failed'")
            return cur.rowcount
    finally:
        db.close()
