"""The committer: one thread that brings MEGA in line with the staged files, in batches.

For every file it looks at (a finished upload handed over by a worker, or a file whose record
says FIX/CLEANUP/EXPORT/DELETE) it runs rounds of network steps until ``record.plan`` says
DONE or the file must wait:

1. ``p`` for finished uploads (one batch, one ``p`` per parent folder), with the attributes
   ``n``, ``t``, ``mfs-mt`` (mtime), ``mfs`` (upload id); moves (``m``) and attribute updates
   (``a``) for files renamed or touched; deletes (``d``) for removed files;
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
from typing import TYPE_CHECKING, Any

from ..errors import ApiCode, MegaError, MegafsError
from ..tree.meta import carried
from ..tree.nodes import UPLOAD_ID_ATTR, Node, time_attrs
from . import record as R
from .record import Step
from .scheduler import record_failure
from .staged import StagedFile

if TYPE_CHECKING:
    from .queue import WriteBack

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

    def __init__(self, wb: "WriteBack") -> None:
        self.wb = wb
        self.ready: list[StagedFile] = []        # finished uploads (busy, with a token)
        self._thread: threading.Thread | None = None
        self._last_scan = 0.0

    def hand(self, sf: StagedFile) -> None:
        """A worker finished ``sf``'s upload (call under ``wb.lock``)."""
        self.ready.append(sf)
        self.wb.lock.notify_all()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="megafs-commit", daemon=True)
        self._thread.start()

    def join(self, deadline: float) -> None:
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic()))

    # --- gathering --------------------------------------------------------------------------
    def _run(self) -> None:
        wb = self.wb
        while not wb.stopping.is_set():
            settled: list[StagedFile] = []
            orphans: list[StagedFile] = []
            with wb.lock:
                batch = self._gather(settled, orphans)
                if not batch and not settled and not orphans:
                    wb.lock.wait(0.5)
                    continue
            for sf in orphans:
                if wb.on_remote_change is not None:
                    wb.on_remote_change(sf)
            if settled:
                wb._settle(settled)
            if batch:
                try:
                    self._commit(batch)
                except Exception as exc:     # give the files back, try again in a second
                    if isinstance(exc, MegafsError):     # e.g. the queue's disk is full
                        # (a full disk is logged by store.disk_full, at most every 30 s)
                        full = getattr(exc, "errno", None) == errno.ENOSPC
                        log.log(logging.DEBUG if full else logging.WARNING,
                                "the committer could not save its work: %s", exc)
                        wb.stopping.wait(1.0)
                    else:                                # a bug: log it
                        log.error("unexpected error in the committer", exc_info=True)
                    with wb.lock:
                        for sf in batch:
                            sf.busy, sf.token, sf.job, sf.cancel = False, None, None, None
                            wb._touched(sf)

    def _gather(self, settled: list[StagedFile], orphans: list[StagedFile]
                ) -> list[StagedFile]:
        """Take a batch of files with committer work (under ``wb.lock``); files whose folder
        is gone or that mirror a node another client changed go to ``orphans``, settled ones
        to ``settled``."""
        wb = self.wb
        now = time.monotonic()
        if now - self._last_scan > RESCAN:
            self._last_scan = now
            wall = time.time()
            for sf in wb.files.values():
                if sf.rec.next_try and sf.rec.next_try <= wall:
                    wb.todo.add(sf.rid)
                elif not sf.busy:
                    # settled files the namespace kept (another node showed under the name
                    # for a moment), and mirrors of nodes other clients change, again
                    wb.todo.add(sf.rid)
        if self.ready and wb.scheduler.in_flight > len(self.ready):
            # Uploads about to finish share this batch: one p and one l serve them all.
            deadline = now + GATHER
            while (wb.scheduler.in_flight > len(self.ready) and len(self.ready) < BATCH
                   and not wb.stopping.is_set()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wb.lock.wait(left)
        batch = self.ready[:BATCH]
        del self.ready[:BATCH]
        todo, wb.todo = wb.todo, set()
        for rid in todo:
            found = wb.files.get(rid)
            if found is None or found.busy or found.retired:
                continue
            sf = found
            if wb.control.remote_changed(sf):
                orphans.append(sf)
                continue
            if len(batch) >= BATCH:
                wb.todo.add(rid)
                continue
            step = wb.step(sf)
            if step in (Step.FIX, Step.CLEANUP, Step.EXPORT, Step.DELETE):
                sf.busy = True
                batch.append(sf)
            elif step is Step.UPLOAD:
                wb.scheduler.offer(sf)
            elif step is Step.DONE and wb.settled(sf):
                settled.append(sf)
        return batch

    # --- one batch --------------------------------------------------------------------------
    def _commit(self, batch: list[StagedFile]) -> None:
        wb = self.wb
        active = list(batch)
        for _phase in range(MAX_PHASES):
            plans: dict[StagedFile, _Ops] = {}
            with wb.lock:
                for sf in active:
                    ops = self._plan(sf)
                    if ops is not None:
                        plans[sf] = ops
            if not plans:
                break
            put_files = [sf for sf, ops in plans.items() if ops.put is not None]
            if put_files:
                wb._save(put_files)          # put_tried is durable before the p is sent
            self._run_puts(plans)
            self._run_simple(plans)
            self._run_exports(plans)
            active = list(plans)
        with wb.lock:
            for sf in batch:
                sf.busy, sf.token, sf.job, sf.cancel = False, None, None, None
                wb._touched(sf)
        wb._save([sf for sf in batch if not sf.retired and not (
            sf.rec.unlinked and not sf.rec.committed and not sf.rec.replaces)])
        wb._settle(batch)

    def _plan(self, sf: StagedFile) -> _Ops | None:
        """This phase's requests for ``sf`` (under ``wb.lock``), or None when it is done."""
        wb = self.wb
        rec = sf.rec
        if sf.token is not None:
            gen = sf.job[0] if sf.job else rec.generation
            if sf.job != (rec.generation, sf.version) or rec.unlinked:
                sf.token = None                # stale: the file changed or went away
                return None
            uploaded, crc_attr = sf.token
            # the new version keeps the old one's mode and xattrs, and those chosen here
            old = wb.tree.get(rec.committed) if rec.committed else None
            attrs = time_attrs(rec.mtime_ns, {"n": rec.name, "c": crc_attr,
                                              UPLOAD_ID_ATTR: rec.upload_id,
                                              **carried(old.attrs if old else None),
                                              **rec.own_attrs})
            rec.put_tried = True
            return _Ops(put=(rec.parent, uploaded, attrs, gen))
        step = wb.step(sf)
        if step is Step.DELETE:
            return _Ops(delete=[h for h in [rec.committed, *rec.replaces] if h])
        if step not in (Step.FIX, Step.CLEANUP, Step.EXPORT):
            return None
        ops = _Ops(delete=list(rec.replaces))
        node = wb.tree.get(rec.committed) if rec.committed else None
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
        from ..api.client import PutItem

        wb = self.wb
        puts = [(sf, ops.put) for sf, ops in plans.items() if ops.put is not None]
        if not puts:
            return
        items = [PutItem(parent, uploaded, attrs) for _sf, (parent, uploaded, attrs, _g) in puts]
        try:
            results: list[Any] = list(wb.client.put_files(items))
        except Exception as exc:
            # Ambiguous: the batch may or may not have been applied (put_tried stays set).
            with wb.lock:
                for sf, _put in puts:
                    sf.token = None
                    record_failure(sf, exc, "commit")
            return
        for (sf, (parent, _uploaded, _attrs, gen)), res in zip(puts, results):
            with wb.lock:
                sf.token = None
                if isinstance(res, BaseException):
                    if isinstance(res, MegaError):
                        sf.rec.put_tried = False     # a definite refusal: nothing was created
                    record_failure(sf, res, "commit")
                    continue
                handle = res.get("h")
                wb.owner[handle] = sf                # hidden before the tree has it
            node = wb.tree.add_raw(res)
            with wb.lock:
                sf.rec = R.succeeded(R.committed(sf.rec, gen, handle))
                for twin in wb.tree.same_upload(handle):
                    log.info("node %s repeats the commit of %s as %s; removing it",
                             twin.handle, sf.rec.name, handle)
                    sf.rec.replaces = R._plus(sf.rec.replaces, twin.handle)
                    wb.owner[twin.handle] = sf
                if node is not None and gen == sf.rec.generation:
                    log.info("uploaded %s as node %s", sf.rec.name, handle)

    def _run_simple(self, plans: dict[StagedFile, _Ops]) -> None:
        """Moves, attribute updates and deletes (one request each)."""
        wb = self.wb
        for sf, ops in plans.items():
            if ops.put is not None:
                continue
            try:
                handle = sf.rec.committed
                node: Node | None = wb.tree.get(handle) if handle else None
                if node is not None and ops.move is not None:
                    wb.client.move(node.handle, ops.move)
                    wb.tree.move(node.handle, ops.move)
                if node is not None and ops.attrs is not None and node.key is not None:
                    wb.client.set_attrs(node.handle, node.key, ops.attrs)
                    wb.tree.set_attrs(node.handle, ops.attrs)
                gone = []
                for old in ops.delete:
                    self._delete(old)
                    gone.append(old)
                with wb.lock:
                    if sf.rec.unlinked:
                        sf.rec = R.deleted(sf.rec, gone)
                    else:
                        sf.rec = R.cleaned(sf.rec, gone)
                    sf.rec = R.succeeded(sf.rec)
            except Exception as exc:
                ops.export = None
                with wb.lock:
                    # -9: the node or its new folder is gone (another client): not the
                    # file's fault; the next look decides (upload again, recover, follow)
                    vanished = isinstance(exc, MegaError) and exc.code == ApiCode.ENOENT
                    record_failure(sf, exc, "update", transient=vanished)

    def _delete(self, handle: str) -> None:
        try:
            self.wb.client.delete(handle)
        except MegaError as exc:
            if exc.code != ApiCode.ENOENT:
                raise
        self.wb.tree.remove(handle)

    def _run_exports(self, plans: dict[StagedFile, _Ops]) -> None:
        wb = self.wb
        wanted = [(sf, ops.export) for sf, ops in plans.items() if ops.export]
        if not wanted:
            return
        try:
            results: list[Any] = list(wb.client.export([h for _sf, h in wanted]))
        except Exception as exc:
            results = [exc] * len(wanted)
        revoked: list[str] = []
        for (sf, handle), ph in zip(wanted, results):
            with wb.lock:
                if isinstance(ph, MegaError) and ph.code == ApiCode.ENOENT:
                    continue             # the node is gone (removed meanwhile): plan again
                if isinstance(ph, BaseException):
                    record_failure(sf, ph, "export")
                    continue
                if not sf.rec.link_wanted:
                    # `rm X.link` came while this `l` was in flight: the revoke wins
                    revoked.append(handle)
                    continue
                wb.tree.set_public(handle, ph)
        for handle in revoked:
            try:
                wb.client.unexport(handle)
            except Exception as exc:       # the node keeps a link; say so, try no more
                log.warning("could not revoke the link of node %s, exported while being "
                            "revoked: %s", handle, exc)
