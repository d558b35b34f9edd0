"""The committer: one thread that brings MEGA in line with the staged files, in batches.

For every file it looks at (a finished upload handed over by a worker, or a file whose record
says FIX/CLEANUP/EXPORT/DELETE) it runs rounds of network steps until ``record.plan`` says
DONE or the file must wait:

1. ``p`` for finished uploads (one batch, one ``p`` per file: ``MegaClient.put_files``), with
   the attributes ``n``, ``t``, ``mfs-mt`` (mtime), ``mfs`` (upload id); moves (``m``) and
   attribute updates (``a``) for files renamed or touched; deletes (``d``) for removed files;
2. deletes of old versions (``replaces``) now that the new node exists, and ``l`` (export) for
   nodes we committed (one batch).

Rows with ``put_tried`` are saved durably before the ``p`` is sent, so after a crash the next
mount first looks for the node by its upload id instead of committing the same data twice; an
ambiguous ``p`` failure (no answer) keeps ``put_tried`` for the same check.  A ``p`` that
reaches the server twice (the ``p`` of a killed mount applied late) is recognised by the
shared upload id and the repeat is deleted.  Holds ``WriteBack.lock`` only to read and change
records, never during a request.
"""
from __future__ import annotations

import errno
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..api.interface import MegaApi
from ..errors import ApiCode, MegaError, MegafsError
from ..tree.meta import carried
from ..tree import remote
from ..tree.nodes import UPLOAD_ID_ATTR, Node, time_attrs
from . import record as R
from .record import Step
from .staged import StagedFile
from .state import QueueState

log = logging.getLogger(__name__)

BATCH = 200               # files per round
GATHER = 0.05             # seconds to wait for uploads about to finish, so they share a batch
RESCAN = 1.0              # seconds between scans for ended back-offs
MAX_PHASES = 4            # rounds of requests per batch (p; then d + l; then what is left)


@dataclass
class _Ops:
    """The requests of one phase for one file."""

    put: tuple[str, Any, dict, int] | None = None      # (parent, uploaded, attrs, generation)
    move: str | None = None                            # new parent of the committed node
    attrs: dict[str, Any] | None = None                # new attributes of the committed node
    delete: list[str] = field(default_factory=list)
    export: str | None = None


class Committer:
    """The committer thread of one ``WriteBack``."""

    def __init__(self, state: QueueState, client: MegaApi, *,
                 save: Callable[[Iterable[StagedFile]], None],
                 settle: Callable[[Iterable[StagedFile]], None],
                 remote_change: Callable[[StagedFile], None]) -> None:
        """``save(files)``: commit rows durably; ``settle(files)``: offer files with nothing
        left to do to the namespace; ``remote_change(file)``: another client changed what the
        file shows (``WriteBack.on_remote_change``).  All are called without the lock."""
        self.state = state
        self.client = client
        self.tree = state.tree
        self.save, self.settle, self.remote_change = save, settle, remote_change
        self._thread: threading.Thread | None = None
        self._last_scan = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="megafs-commit", daemon=True)
        self._thread.start()

    def join(self, deadline: float) -> None:
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic()))

    # --- gathering --------------------------------------------------------------------------
    def _run(self) -> None:
        st = self.state
        while not st.stopping.is_set():
            settled: list[StagedFile] = []
            orphans: list[StagedFile] = []
            with st.lock:
                batch = self._gather(settled, orphans)
                if not batch and not settled and not orphans:
                    st.commit_cv.wait(0.5)
                    continue
            for sf in orphans:
                self.remote_change(sf)
            if settled:
                self.settle(settled)
            if batch:
                try:
                    self._commit(batch)
                except Exception as exc:     # give the files back, try again in a second
                    if isinstance(exc, MegafsError):     # e.g. the queue's disk is full
                        # (a full disk is logged by store.disk_full, at most every 30 s)
                        full = getattr(exc, "errno", None) == errno.ENOSPC
                        log.log(logging.DEBUG if full else logging.WARNING,
                                "the committer could not save its work: %s", exc)
                        st.stopping.wait(1.0)
                    else:                                # a bug: log it
                        log.error("unexpected error in the committer", exc_info=True)
                    with st.lock:
                        for sf in batch:
                            sf.released()

    def _gather(self, settled: list[StagedFile], orphans: list[StagedFile]
                ) -> list[StagedFile]:
        """Take a batch of files with committer work (under the lock); files whose folder
        is gone or that mirror a node another client changed go to ``orphans``, settled ones
        to ``settled``."""
        st = self.state
        now = time.monotonic()
        if now - self._last_scan > RESCAN:
            self._last_scan = now
            wall = time.time()
            for sf in st.files.values():
                if sf.rec.next_try and sf.rec.next_try <= wall:
                    st.todo.add(sf.rid)
                elif not sf.busy:
                    # settled files the namespace kept (another node showed under the name
                    # for a moment), and mirrors of nodes other clients change, again
                    st.todo.add(sf.rid)
        if st.ready:
            # Uploads about to finish share this batch: one p and one l serve them all.
            # (``in_flight`` counts uploads still running: a finished one is in ``ready``
            # and no longer in flight; comparing it with ``len(ready)`` ended the wait once
            # half of the files of a wave had finished.)  So do the files of a burst the
            # dispatcher holds: a fresh mount's scout went first, and its own ``p`` took the
            # session's lane just when the burst's ``u`` was ready to go.
            deadline = now + GATHER
            while len(st.ready) < BATCH and not st.stopping.is_set():
                held = st.ready_held()
                if not (st.in_flight or held):
                    break
                # small files' POSTs still ending: wait for them (``QueueState.wave_until``)
                left = max(deadline, st.wave_until(),
                           st.held_until if held else 0.0) - time.monotonic()
                if left <= 0:
                    break
                st.commit_cv.wait(left)
        batch = st.ready[:BATCH]
        del st.ready[:BATCH]
        todo, st.todo = st.todo, set()
        for rid in todo:
            found = st.files.get(rid)
            if found is None or found.busy or found.retired:
                continue
            sf = found
            if st.remote_changed(sf):
                orphans.append(sf)
                continue
            if len(batch) >= BATCH:
                st.todo.add(rid)
                continue
            step = st.step(sf)
            if step in (Step.FIX, Step.CLEANUP, Step.EXPORT, Step.DELETE):
                sf.taken()
                batch.append(sf)
            elif step is Step.UPLOAD:
                st.offer(sf)
            elif step is Step.DONE and st.settled(sf):
                settled.append(sf)
        return batch

    # --- one batch --------------------------------------------------------------------------
    def _commit(self, batch: list[StagedFile]) -> None:
        st = self.state
        active = list(batch)
        for _phase in range(MAX_PHASES):
            plans: dict[StagedFile, _Ops] = {}
            with st.lock:
                for sf in active:
                    ops = self._plan(sf)
                    if ops is not None:
                        plans[sf] = ops
            if not plans:
                break
            put_files = [sf for sf, ops in plans.items() if ops.put is not None]
            if put_files:
                self.save(put_files)         # put_tried is durable before the p is sent
            self._run_puts(plans)
            self._run_simple(plans)
            self._run_exports(plans)
            active = list(plans)
        with st.lock:
            for sf in batch:
                sf.released()
        self.save([sf for sf in batch if not sf.retired and not (
            sf.rec.unlinked and not sf.rec.committed and not sf.rec.replaces)])
        self.settle(batch)

    def _plan(self, sf: StagedFile) -> _Ops | None:
        """This phase's requests for ``sf`` (under the lock), or None when it is done."""
        if sf.token is not None:
            planned = sf.put_planned()          # None: stale (the file changed or went away)
            if planned is None:
                return None
            (uploaded, crc_attr), gen = planned
            rec = sf.rec
            # the new version keeps the old one's mode and xattrs, and those chosen here
            old = self.tree.get(rec.committed) if rec.committed else None
            attrs = time_attrs(rec.mtime_ns, {"n": rec.name, "c": crc_attr,
                                              UPLOAD_ID_ATTR: rec.upload_id,
                                              **carried(old.attrs if old else None),
                                              **rec.own_attrs})
            return _Ops(put=(rec.parent, uploaded, attrs, gen))
        rec = sf.rec
        step = self.state.step(sf)
        free = R.unread(rec, self.state.being_read)     # nodes being read: after their readers
        if step is Step.DELETE:
            return _Ops(delete=[h for h in [free.committed, *free.replaces] if h])
        if step not in (Step.FIX, Step.CLEANUP, Step.EXPORT):
            return None
        ops = _Ops(delete=list(free.replaces))
        node = self.tree.get(rec.committed) if rec.committed else None
        if node is None:
            return None
        if node.parent != rec.parent:
            ops.move = rec.parent
        if (node.name != rec.name or node.mtime_ns != rec.mtime_ns
                or R.attrs_differ(rec, node.attrs)):
            attrs = dict(node.attrs)
            attrs["n"] = rec.name
            attrs.update(rec.own_attrs)
            ops.attrs = time_attrs(rec.mtime_ns, attrs)
        if rec.committed_gen > 0 and not node.public and rec.link_wanted:
            ops.export = node.handle
        return ops

    def _run_puts(self, plans: dict[StagedFile, _Ops]) -> None:
        st = self.state
        puts = [(sf, ops.put) for sf, ops in plans.items() if ops.put is not None]
        if not puts:
            return

        def claim(i: int, handle: str) -> None:
            st.register(puts[i][0], [handle])        # hidden before the tree has it

        try:
            results = remote.put(self.client, self.tree,
                                 [(parent, uploaded, attrs)
                                  for _sf, (parent, uploaded, attrs, _g) in puts], claim)
        except Exception as exc:
            # Ambiguous: the batch may or may not have been applied (put_tried stays set).
            for sf, _put in puts:
                sf.put_done()
                sf.failed(exc, "commit")
            return
        for (sf, (_parent, _uploaded, _attrs, gen)), (res, node) in zip(puts, results):
            sf.put_done()
            if isinstance(res, BaseException):
                # a MegaError is a definite refusal: nothing was created; -14: the folder
                # was exported while this p was on its way without its keys (the next has them)
                sf.failed(res, "commit", refused=isinstance(res, MegaError),
                          transient=isinstance(res, MegaError) and res.code == ApiCode.EKEY)
                continue
            handle = res["h"]
            twins = [t.handle for t in self.tree.same_upload(handle)]
            for twin in twins:
                log.info("node %s repeats the commit of %s as %s; removing it",
                         twin, sf.rec.name, handle)
            with st.lock:
                sf.committed(gen, handle, twins)
                st.register(sf, twins)
                if node is not None and gen == sf.rec.generation:
                    log.info("uploaded %s as node %s", sf.rec.name, handle)

    def _run_simple(self, plans: dict[StagedFile, _Ops]) -> None:
        """Moves, attribute updates and deletes (one request each)."""
        for sf, ops in plans.items():
            if ops.put is not None:
                continue
            try:
                handle = sf.rec.committed
                node: Node | None = self.tree.get(handle) if handle else None
                if node is not None and ops.move is not None:
                    remote.move(self.client, self.tree, node.handle, ops.move)
                if node is not None and ops.attrs is not None and node.key is not None:
                    remote.set_attrs(self.client, self.tree, node.handle, node.key, ops.attrs)
                gone = []
                for old in ops.delete:
                    remote.delete(self.client, self.tree, old)
                    gone.append(old)
                sf.cleaned(gone)
            except Exception as exc:
                ops.export = None
                # -9: the node or its new folder is gone (another client): not the file's
                # fault; the next look decides (upload again, recover, follow)
                vanished = isinstance(exc, MegaError) and exc.code == ApiCode.ENOENT
                sf.failed(exc, "update", transient=vanished)

    def _run_exports(self, plans: dict[StagedFile, _Ops]) -> None:
        wanted = {ops.export: sf for sf, ops in plans.items() if ops.export}
        if not wanted:
            return

        def keep(handle: str) -> bool:
            # `rm X.link` came while this `l` was in flight: the revoke wins
            with self.state.lock:
                return wanted[handle].rec.link_wanted

        results = remote.export(self.client, self.tree, list(wanted), keep)
        for (handle, sf), ph in zip(wanted.items(), results):
            if isinstance(ph, MegaError) and ph.code == ApiCode.ENOENT:
                continue             # the node is gone (removed meanwhile): plan again
            if isinstance(ph, BaseException):
                sf.failed(ph, "export")
