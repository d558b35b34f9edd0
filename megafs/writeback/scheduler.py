"""Upload workers: pick the next file whose content must be sent, upload it, hand the finished
upload to the committer; and the outage prober.

A file is eligible when ``record.plan`` says UPLOAD: its content is newer than its committed
node, it has no unflushed writes, and no writer has it open (unless ``fsync`` forced it), and
its back-off has passed.  Files are taken in the order they became eligible.  Up to
``workers`` files upload at once, each on ``--connections`` connections (``MegaClient.upload``).
A write to a file while its upload runs cancels that upload (``WriteBack.wrote``); an upload
whose file changed meanwhile is discarded, never committed as the current content.

Failures are state transitions, never crashes: permanent errors (``errors.is_permanent``) mark
the file failed (retried after 5 min doubling to 1 h, or at once with ``megafs retry``), others
back off from 0.5 s doubling to 60 s.  While uploads stall or back off, a prober checks every
second whether the API host accepts TCP connections; when it comes back, back-offs end and
uploads stuck in the client's own retry sleep are restarted.  Takes ``WriteBack.lock`` only
around state changes, never during the upload.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..api import fingerprint
from ..api.identical import same_content
from ..errors import Cancelled, MegafsError, describe, is_permanent
from ..tree.tree import Tree
from . import record as R
from .record import Step
from .staged import StagedFile

if TYPE_CHECKING:
    from .queue import WriteBack

log = logging.getLogger(__name__)

STALLED_AFTER = 3.0       # seconds without upload progress before an upload counts as stalled


class Scheduler:
    """The upload worker pool and the outage prober of one ``WriteBack``."""

    def __init__(self, wb: "WriteBack", *, workers: int) -> None:
        self.wb = wb
        self.workers = workers
        self.queue: dict[str, StagedFile] = {}     # rid -> file, in the order offered
        self.in_flight = 0
        self._restart: set[str] = set()
        self._threads: list[threading.Thread] = []

    # --- called under wb.lock ---------------------------------------------------------------
    def offer(self, sf: StagedFile) -> None:
        """``sf`` may need an upload (call under ``wb.lock``)."""
        if sf.rid not in self.queue:
            self.queue[sf.rid] = sf
            self.wb.lock.notify_all()

    def _pick(self) -> tuple[StagedFile | None, float]:
        wait = 1.0
        for rid, sf in list(self.queue.items()):
            if sf.retired or sf.rec.unlinked:
                del self.queue[rid]
                continue
            if sf.busy:
                continue
            step = Step.IDLE if sf.dirty else self.wb.step(sf)
            if step is Step.UPLOAD:
                del self.queue[rid]
                return sf, 0.0
            if step is Step.IDLE:
                if sf.rec.next_try:
                    wait = min(wait, max(0.05, sf.rec.next_try - time.time()))
                continue
            del self.queue[rid]           # something else to do: the committer's business
            self.wb.todo.add(rid)
        return None, wait

    # --- threads ----------------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self.workers):
            self._spawn(self._worker, "megafs-upload-%d" % i)
        self._spawn(self._prober, "megafs-probe")

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def join(self, deadline: float) -> None:
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))

    def _worker(self) -> None:
        wb = self.wb
        while not wb.stopping.is_set():
            with wb.lock:
                sf, wait = self._pick()
                if sf is None:
                    wb.lock.wait(wait)
                    continue
                sf.busy = True
                sf.job = (sf.rec.generation, sf.version)
                sf.cancel = threading.Event()
                sf.progress, sf.progress_at = 0, time.monotonic()
                verify = sf.rec.put_tried and sf.rec.committed_gen < sf.rec.generation
                self.in_flight += 1
            try:
                self._upload(sf, verify)
            except Exception as exc:        # every failure is a state transition
                try:
                    self._failed(sf, exc)
                except Exception as exc2:   # a worker must never die: log it, go on
                    if isinstance(exc2, MegafsError):   # the queue cannot save (disk full)
                        log.debug("could not record the failed upload of %s: %s",
                                  sf.rec.name, exc2)
                    else:
                        log.error("unexpected error recording a failed upload of %s",
                                  sf.rec.name, exc_info=True)
                    with wb.lock:
                        sf.busy, sf.cancel, sf.job, sf.token = False, None, None, None
            finally:
                with wb.lock:
                    self.in_flight -= 1
                    wb.lock.notify_all()

    def _upload(self, sf: StagedFile, verify: bool) -> None:
        wb = self.wb
        if verify:
            self._verify(sf)
            with wb.lock:
                if sf.rec.committed_gen >= sf.rec.generation:    # found: it was committed
                    self._release(sf)
                    return

        if self._unchanged(sf):
            with wb.lock:
                if sf.job != (sf.rec.generation, sf.version) or sf.rec.unlinked or sf.retired:
                    self._release(sf)        # the file changed or went away meanwhile
                    return
                # The same bytes as the committed node (issue 13): that node holds this
                # generation too, so the node and its public link stay; the new mtime goes to
                # MEGA as an attribute update (FIX: ``a``), as after a touch.
                sf.rec = R.committed(sf.rec, sf.rec.generation, sf.rec.committed or "")
                sf.rec.local_meta = True
                log.info("%s has the same bytes as node %s: kept it and its link",
                         sf.rec.name, sf.rec.committed)
                self._release(sf)
            wb.save(sf)
            return

        def progress(*args: Any) -> None:
            done = next((a for a in args if isinstance(a, int)), None)
            if done is not None:
                sf.progress, sf.progress_at = done, time.monotonic()

        with wb.lock:
            size = sf.rec.size
        log.debug("uploading %s (%d bytes)", sf.rec.name, size)
        assert sf.cancel is not None
        # the chunk MACs made while the file was written, if it was written in order
        premac = sf.premac.take(size)
        uploaded = wb.client.upload(sf.path, progress=progress, cancel=sf.cancel, premac=premac)
        # MEGA's own apps read the mtime from the c fingerprint (its CRC part is of the bytes
        # just sent; a file changed meanwhile is caught by the version check below).
        crc_attr = fingerprint.fingerprint(sf.path, size=uploaded.size, mtime=0)
        with wb.lock:
            if sf.job != (sf.rec.generation, sf.version) or sf.rec.unlinked or sf.retired:
                self._release(sf)        # the file changed or went away meanwhile
                return
            sf.token = (uploaded, crc_attr)
            wb.committer.hand(sf)

    def _unchanged(self, sf: StagedFile) -> bool:
        """Whether ``sf``'s staged bytes are exactly its committed node's: same size and the
        node's meta-MAC over them under the node's own key (``api.identical``), so nothing
        needs uploading.  Costs one MAC pass over the file, only when the sizes match."""
        with self.wb.lock:
            committed, size = sf.rec.committed, sf.rec.size
            if not committed or sf.rec.committed_gen >= sf.rec.generation:
                return False
        node = self.wb.tree.get(committed)
        if node is None or node.is_dir or node.size != size or node.key is None \
                or len(node.key) != 32:
            return False
        return same_content(sf.path, node.file_key, size, sf.cancel)

    def _release(self, sf: StagedFile) -> None:
        """Give a file back after an abandoned attempt (under ``wb.lock``)."""
        sf.busy, sf.cancel, sf.job, sf.token = False, None, None, None
        self.offer(sf)
        self.wb._touched(sf)

    def _verify(self, sf: StagedFile) -> None:
        """After an ambiguous ``p`` failure: look for our node in a fresh listing."""
        from .recovery import adopt

        listing = self.wb.client.fetch()
        fresh = Tree(self.wb.tree.master_key, self.wb.tree.user_handle)
        fresh.load(listing.nodes, listing.public)
        with self.wb.lock:
            found = adopt(sf.rec, fresh)
            if found:
                self.wb.owner[found] = sf
                for old in sf.rec.replaces:
                    self.wb.owner[old] = sf
        if found:
            raw = next((n for n in listing.nodes if n.get("h") == found), None)
            if raw is not None:
                self.wb.tree.add_raw(raw)
        self.wb.save(sf)

    def _failed(self, sf: StagedFile, exc: BaseException) -> None:
        wb = self.wb
        with wb.lock:
            restart = sf.rid in self._restart
            self._restart.discard(sf.rid)
            stale = sf.job != (sf.rec.generation, sf.version) or sf.rec.unlinked
            cancelled = isinstance(exc, Cancelled) or (sf.cancel is not None
                                                       and sf.cancel.is_set())
            if wb.stopping.is_set() or restart or (cancelled and stale):
                if restart:
                    log.info("restarting the upload of %s", sf.rec.name)
                self._release(sf)
                return
            sf.busy, sf.cancel, sf.job, sf.token = False, None, None, None
            record_failure(sf, exc, "upload")
            self.offer(sf)
            wb._touched(sf)
        wb.save(sf)

    def _prober(self) -> None:
        """While uploads stall or back off, check every second whether the API host accepts
        connections; on the way from down to up, end back-offs and restart stalled uploads."""
        wb = self.wb
        down = False
        while not wb.stopping.wait(1.0):
            now, wall = time.monotonic(), time.time()
            with wb.lock:
                suspect = any((sf.busy and sf.token is None and now - sf.progress_at
                               > STALLED_AFTER) or (not sf.rec.failed and sf.rec.next_try > wall)
                              for sf in wb.files.values())
            if not suspect and not down:
                continue
            up = reachable(getattr(wb.client, "api", ""))
            if up and down:
                log.info("the API server is reachable again; restarting stalled uploads")
                wb.control.kick()
                with wb.lock:
                    for sf in wb.files.values():
                        if (sf.busy and sf.token is None and sf.cancel is not None
                                and now - sf.progress_at > STALLED_AFTER):
                            self._restart.add(sf.rid)
                            sf.cancel.set()
            down = not up


def record_failure(sf: StagedFile, exc: BaseException, what: str, *,
                   transient: bool = False) -> None:
    """Turn a failed attempt into the record's back-off (under ``wb.lock``) and log it;
    ``transient`` overrides the classification of the error."""
    text = describe(exc)
    permanent = is_permanent(exc) and not transient
    sf.rec = R.attempt_failed(sf.rec, text, permanent=permanent, now=time.time())
    if permanent:
        log.error("%s of %s failed: %s (kept staged; `megafs retry` or automatic retry later)",
                  what, sf.rec.name, text)
    else:
        level = logging.INFO if sf.rec.attempts <= 2 else logging.WARNING
        log.log(level, "%s of %s: %s; retry %d in %.1f s", what, sf.rec.name, text,
                sf.rec.attempts, sf.rec.next_try - time.time())
    if not isinstance(exc, (MegafsError, OSError)):
        log.error("unexpected error in the %s of %s", what, sf.rec.name, exc_info=exc)


def reachable(api: str) -> bool:
    """Whether the API host accepts a TCP connection (cheap; no request is sent)."""
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
