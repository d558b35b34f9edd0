"""Upload workers: pick the next file whose content must be sent, upload it, hand the finished
upload to the committer; and the outage prober.

A file is eligible when ``record.plan`` says UPLOAD (newer than its node, flushed, no writer
unless ``fsync`` forced it, back-off passed), in the order it became eligible.  Up to
``workers`` files bigger than ``SMALL`` upload at once, each on ``--connections`` connections
(``MegaClient.upload``).  Small files (one POST each) go another way, so that many of them
cross a slow link in a few round trips instead of two per file (issue 23): the dispatcher
takes every eligible small file at once (up to ``URL_BATCH``), asks for all their upload URLs
in one batch of ``u`` (one request through the session's lane; files closed while that batch
waits make another batch at once, up to ``FETCHERS``, and the lane sends every batch waiting
in its next request), and POSTs them all at once (``posts.PostQueue``: a thread each, up to
``post_limit`` and 16 MiB at once), over the pool's connections: with 16
workers 100 files went out in 6-7 waves, a round trip each, and each wave got its own ``p``
and ``l``.  The committer waits for the wave's POSTs to end (``QueueState.wave_until``), so
one ``p`` and one ``l`` serve it.  While files are being closed in a burst (``cp -r``),
the dispatcher first waits for a quiet moment (``burst_hold``: ``QUIET`` without a close, or
three gaps between closes when they come slower, ``burst_quiet``; at
most ``HOLD_MAX``, never for a file that ``fsync`` waits for), so the copy is not slowed by its
own uploads and its files share one batch.  On a long round trip (``AHEAD_RTT``) it meanwhile
opens the connections the burst's POSTs will need (``preconnect_uploads``: as many as files
are waiting, up to ``post_limit``) to the host of the last upload URL, so the POSTs skip the
TCP and TLS handshakes (two round trips); before the mount's first ``u`` answered, the burst's
first file goes at once, alone (the scout), and its ``u`` names that host.  Not on a short one:
at home (RTT 40 ms) the handshakes' CPU during the copy cost more than the round trips saved.
A ``u`` refused in its slot fails only its file.  Measured (2026-12-07, 2 shared cores, local
server, 100 x 4 KiB copied by one ``cp`` until every link reads, every ``/cs`` request 50 ms
late: tests/mount/test_small_batches.py ``test_many_small_files_cross_in_few_batches``): 53-54
requests and 2.93-2.96 s before, 11-15 requests and 0.66-0.98 s after; ``cp`` itself returns
in 0.4-0.6 s, so the files become eligible over about ten round trips and each ``u`` batch
holds the files closed during the one before.  With the burst hold: 5 requests (one with
``u``, two with ``p``, two with ``l``), 0.75-0.93 s, ``cp`` 0.22 s.
A write to a file while its upload runs cancels that upload (``StagedFile.written``); an upload
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
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from ..api import fingerprint
from ..api.interface import MegaApi
from ..api.identical import same_content
from ..errors import Cancelled, MegafsError
from ..tree.tree import Tree
from .posts import SMALL_WORKERS, PostQueue, post_limit
from .record import Step
from .recovery import adopt
from .staged import StagedFile
from .state import QueueState

log = logging.getLogger(__name__)

STALLED_AFTER = 3.0       # seconds without upload progress before an upload counts as stalled
SMALL = 1 << 20           # bytes: a file of at most one POST takes the small-file path
URL_BATCH = 200           # most small files taken (and `u` commands sent) at once
FETCHERS = 8              # `u` batches waiting for the lane at once (one thread each)
QUIET = 0.03              # seconds without a close before small files are taken ...
QUIET_MAX = 0.25          # ... longer when the closes come slower, up to this (burst_quiet)
HOLD_MAX = 3.0            # seconds small files wait at most for such a quiet moment
AHEAD_RTT = 0.1           # seconds of API round trip from which a burst opens connections ahead


class Scheduler:
    """The upload worker pool and the outage prober of one ``WriteBack``."""

    def __init__(self, state: QueueState, client: MegaApi, *,
                 save: Callable[[Iterable[StagedFile]], None], workers: int,
                 small_workers: int = SMALL_WORKERS, hold_max: float = HOLD_MAX) -> None:
        """``save(files)``: commit the files' rows durably (``WriteBack._save``);
        ``small_workers``: small files POSTed at once (0: small files use the ``workers``)."""
        self.state = state
        self.client = client
        self.save = save
        self.workers = workers
        self.small_workers = small_workers
        self.hold_max = hold_max     # seconds a burst of closes is held at most (``burst_hold``)
        self.restarts: set[str] = set()
        self._threads: list[threading.Thread] = []
        # POSTs of small files: a thread each, made when needed, up to ``small_workers``
        self.posts = PostQueue(state, lambda job, error: self._run(
            job[0], job[1], job[2], error=error, small=True), max(1, small_workers))
        self._small_taken = 0        # small files taken by the dispatcher, not finished
        state.small = self._is_small  # whom a change wakes (``QueueState.touched``)
        self._fetching = 0           # `u` batches sent or waiting for the lane
        self._scouted = False        # a `u` was answered: the client knows the upload host

    # --- called under the lock --------------------------------------------------------------
    def _is_small(self, sf: StagedFile) -> bool:
        return self.small_workers > 0 and sf.rec.size <= SMALL

    def _pick(self, small: bool = False) -> tuple[StagedFile | None, float]:
        """The next file to upload: a small one (``small``) or a big one."""
        wait = 1.0
        offered = self.state.offered          # rid -> file, in the order offered
        for rid, sf in list(offered.items()):
            if sf.retired or sf.rec.unlinked:
                del offered[rid]
                continue
            if sf.busy or self._is_small(sf) != small:
                continue
            step = self.state.shown_step(sf)
            if step is Step.UPLOAD:
                del offered[rid]
                return sf, 0.0
            if step is Step.IDLE:
                if sf.rec.next_try:
                    wait = min(wait, max(0.05, sf.rec.next_try - time.time()))
                continue
            del offered[rid]                # something else to do: the committer's business
            self.state.todo.add(rid)
        return None, wait

    def _take(self, sf: StagedFile) -> bool:
        """Start ``sf``'s upload (under the lock); True when it must first look for a node
        committed by an ambiguous ``p`` (``_verify``)."""
        sf.upload_started()
        self.state.in_flight += 1
        return sf.rec.put_tried and sf.rec.committed_gen < sf.rec.generation

    # --- threads ----------------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self.workers):
            self._spawn(self._worker, "megafs-upload-%d" % i)
        if self.small_workers > 0:
            self.posts.start()
            self._spawn(self._dispatcher, "megafs-small-urls")
        self._spawn(lambda: probe_outages(self), "megafs-probe")

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def join(self, deadline: float) -> None:
        """Wait for the threads until ``deadline`` (monotonic); call once ``stopping`` is set."""
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        self.posts.shutdown()

    def _worker(self) -> None:
        st = self.state
        while not st.stopping.is_set():
            with st.lock:
                sf, wait = self._pick()
                if sf is None:
                    st.work_cv.wait(wait)
                    continue
                verify = self._take(sf)
            self._run(sf, verify, None)

    def _dispatcher(self) -> None:
        """Take every eligible small file at once and hand them to a new ``u`` batch
        (``_fetch_urls``) at once, even while another batch waits: the lane puts every batch
        waiting for it in its next request."""
        st = self.state
        held_since: float | None = None
        while not st.stopping.is_set():
            with st.lock:
                hold, held_since = burst_hold(st, held_since, self.hold_max)
                if held_since is None:
                    st.end_hold()
                else:
                    st.held_until = held_since + self.hold_max
                most = URL_BATCH
                if hold > 0:
                    rtt = self.client.round_trip()
                    ahead = rtt is not None and rtt >= AHEAD_RTT
                    if ahead and not (self._scouted or self._small_taken):
                        most = 1    # the scout: its `u` names the upload host (see above)
                    else:
                        if ahead:   # the burst's POSTs will go where the last `u` pointed:
                            # open their connections now, while the burst goes on
                            self.client.preconnect_uploads(
                                min(len(st.offered), self.posts.limit))
                        st.lock.wait(hold)
                        continue
                taken: list[tuple[StagedFile, bool, int]] = []
                wait = 1.0
                while (self._fetching < FETCHERS and len(taken) < most
                       and self._small_taken + len(taken) < URL_BATCH):
                    sf, wait = self._pick(small=True)
                    if sf is None:
                        break
                    taken.append((sf, self._take(sf), sf.rec.size))
                    st.post_started()   # in the wave from its `u` on (``posts``)
                if not taken:
                    st.lock.wait(wait)
                    continue
                self._small_taken += len(taken)
                self._fetching += 1
            threading.Thread(target=self._fetch_urls, args=(taken,), daemon=True,
                             name="megafs-small-urls").start()

    def _fetch_urls(self, taken: list[tuple[StagedFile, bool, int]]) -> None:
        """Get the upload URLs of ``taken`` files in one batch of ``u``, queue them for the
        small workers; a file whose ``u`` was refused fails alone."""
        st = self.state
        try:
            need = [(sf, size) for sf, verify, size in taken if not verify]
            urls: dict[str, tuple[str, int] | BaseException] = {}
            if need:
                try:
                    began = time.monotonic()
                    got: list[Any] = self.client.upload_urls([size for _sf, size in need],
                                                             cancel=st.stopping)
                    self._scouted = True
                    self.posts.limit = post_limit(time.monotonic() - began,
                                                  self.small_workers)
                except Exception as exc:     # the whole batch failed: each file backs off
                    got = [exc] * len(need)
                for (sf, size), url in zip(need, got):
                    urls[sf.rid] = url if isinstance(url, BaseException) else (url, size)
            log.debug("small files: %d taken, %d upload URL(s) in one batch",
                      len(taken), len(need))
            for sf, verify, size in taken:
                got_url = urls.get(sf.rid)
                if isinstance(got_url, BaseException):
                    self._run(sf, verify, None, error=got_url, small=True)
                    with st.lock:
                        st.post_ended()
                else:
                    self.posts.add((sf, verify, got_url, size))
        finally:
            with st.lock:
                self._fetching -= 1
                st.lock.notify_all()

    def _run(self, sf: StagedFile, verify: bool, url: tuple[str, int] | None, *,
             error: BaseException | None = None, small: bool = False) -> None:
        """Upload one taken file (or record ``error``, its refused ``u``); every outcome is
        a state transition, and the file is given back."""
        st = self.state
        try:
            if error is not None:
                raise error
            self._upload(sf, verify, url)
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
                sf.released()
        finally:
            with st.lock:
                st.in_flight -= 1
                if small:
                    self._small_taken -= 1
                st.wake_all()            # the committer waits while uploads are in flight

    def _upload(self, sf: StagedFile, verify: bool, url: tuple[str, int] | None) -> None:
        st = self.state
        if verify:
            self._verify(sf)
            with st.lock:
                if sf.rec.committed_gen >= sf.rec.generation:    # found: it was committed
                    self._release(sf)
                    return

        if unchanged(st, sf):
            with st.lock:
                if not sf.current_job:
                    self._release(sf)        # the file changed or went away meanwhile
                    return
                # The same bytes as the committed node (issue 13): that node holds this
                # generation too, so the node and its public link stay; the new mtime goes to
                # MEGA as an attribute update (FIX: ``a``), as after a touch.
                sf.same_bytes()
                log.info("%s has the same bytes as node %s: kept it and its link",
                         sf.rec.name, sf.rec.committed)
                self._release(sf)
            sf.saved()
            self.save([sf])
            return

        def progress(*args: Any) -> None:
            done = next((a for a in args if isinstance(a, int)), None)
            if done is not None:
                sf.sent(done)

        with st.lock:
            size = sf.rec.size
        log.debug("uploading %s (%d bytes)", sf.rec.name, size)
        assert sf.cancel is not None
        # the chunk MACs made while the file was written, if it was written in order
        premac = sf.premac.take(size)
        uploaded = self.client.upload(sf.path, progress=progress, cancel=sf.cancel,
                                      premac=premac, url=url)
        log.debug("sent %s", sf.rec.name)
        # MEGA's own apps read the mtime from the c fingerprint (its CRC part is of the bytes
        # just sent; a file changed meanwhile is caught by the version check below).
        crc_attr = fingerprint.fingerprint(sf.path, size=uploaded.size, mtime=0)
        with st.lock:
            if not sf.current_job:
                self._release(sf)        # the file changed or went away meanwhile
                return
            sf.uploaded((uploaded, crc_attr))
            st.hand(sf)

    def _release(self, sf: StagedFile) -> None:
        """Give a file back after an abandoned attempt (under the lock)."""
        sf.released()
        self.state.offer(sf)

    def _verify(self, sf: StagedFile) -> None:
        """After an ambiguous ``p`` failure: look for our node in a fresh listing."""
        st = self.state
        listing = self.client.fetch()
        fresh = Tree(st.tree.master_key, st.tree.user_handle)
        fresh.load(listing.nodes, listing.public)
        with st.lock:
            rec, found = adopt(sf.rec, fresh)
            sf.adopted(rec)
            if found:
                st.register(sf, [found, *rec.replaces])
        if found:
            raw = next((n for n in listing.nodes if n.get("h") == found), None)
            if raw is not None:
                st.tree.add_raw(raw)
        sf.saved()
        self.save([sf])

    def _failed(self, sf: StagedFile, exc: BaseException) -> None:
        st = self.state
        with st.lock:
            restart = sf.rid in self.restarts
            self.restarts.discard(sf.rid)
            stale = sf.job != (sf.rec.generation, sf.version) or sf.rec.unlinked
            cancelled = isinstance(exc, Cancelled) or (sf.cancel is not None
                                                       and sf.cancel.is_set())
            if st.stopping.is_set() or restart or (cancelled and stale):
                if restart:
                    log.info("restarting the upload of %s", sf.rec.name)
                self._release(sf)
                return
            sf.failed(exc, "upload")
            self._release(sf)
        sf.saved()
        self.save([sf])


def unchanged(state: QueueState, sf: StagedFile) -> bool:
    """Whether ``sf``'s staged bytes are exactly its committed node's: same size and the
    node's meta-MAC over them under the node's own key (``api.identical``), so nothing
    needs uploading.  Costs one MAC pass over the file, only when the sizes match."""
    with state.lock:
        committed, size = sf.rec.committed, sf.rec.size
        if not committed or sf.rec.committed_gen >= sf.rec.generation:
            return False
    node = state.tree.get(committed)
    if node is None or node.is_dir or node.size != size or node.key is None \
            or len(node.key) != 32:
        return False
    return same_content(sf.path, node.file_key, size, sf.cancel)


def burst_hold(state: QueueState, held_since: float | None, hold_max: float = HOLD_MAX
               ) -> tuple[float, float | None]:
    """(seconds the small-file dispatcher waits before taking files, since when it has been
    waiting) while files are being closed in a burst: until ``burst_quiet`` without a close, at most
    ``hold_max`` (``-o upload_hold``, default ``HOLD_MAX``; 0: never); never while a file
    ``fsync`` waits for is offered, nor with nothing offered.  Measured (100 x 4 KiB
    ``cp -r``, loopback, 2 shared cores, medians of 7 alternated rounds): the copy's own
    uploads took the cores from it; with the hold (and one sync per close, ``store.py``) it
    returns in 0.16 s instead of 0.63, its last link reads after 0.58 s instead of 0.77.
    ``HOLD_MAX`` was 0.5 s: a ``cp -r`` of 1,000 x 4 KiB (loopback, 2 rounds) then returned
    in 2.3-3.3 s, its uploads taking the cores from it after the first 0.5 s; with 3 s it
    returns in 1.15-1.24 s and its last link reads as soon (3.4-4.0 s either way: the same
    work, done after the copy instead of during it; through the WAN emulator, 0.4-0.65 s
    later, see the README).  Call under the lock."""
    now = time.monotonic()
    since = now - state.last_close
    offered = state.offered
    quiet = burst_quiet(state)
    if since >= quiet or not offered or any(sf.forced for sf in offered.values()):
        return 0.0, None
    if held_since is None:
        held_since = now
    left = hold_max - (now - held_since)
    if left <= 0:
        return 0.0, None
    return min(quiet - since, left), held_since


def burst_quiet(state: QueueState) -> float:
    """Seconds without a close that end a burst: ``QUIET``, or three times the gap between
    its last two closes when they come slower (a loaded machine, a slow disk), at most
    ``QUIET_MAX``; a gap of ``QUIET_MAX`` or more is no burst's.  With ``QUIET`` alone, a ``cp``
    of 60 files on a loaded 2-core machine (the whole suite on two workers) was taken in 12
    batches of ``u`` instead of one or two: its closes came more than ``QUIET`` apart
    (``test_slow_posts_of_one_wave_share_one_p_and_one_l``, 1 run in 4).  Call under the
    lock."""
    gap = state.close_gap
    return min(QUIET_MAX, max(QUIET, 3 * gap)) if gap < QUIET_MAX else QUIET


def probe_outages(sched: Scheduler) -> None:
    """``sched``'s outage prober: while uploads stall or back off, check every second whether
    the API host accepts connections; on the way from down to up, end back-offs and restart
    stalled uploads."""
    st = sched.state
    down = False
    while not st.stopping.wait(1.0):
        now, wall = time.monotonic(), time.time()
        with st.lock:
            suspect = any((sf.busy and sf.token is None and now - sf.progress_at
                           > STALLED_AFTER) or (not sf.rec.failed and sf.rec.next_try > wall)
                          for sf in st.files.values())
        if not suspect and not down:
            continue
        up = reachable(getattr(sched.client, "api", ""))
        if up and down:
            log.info("the API server is reachable again; restarting stalled uploads")
            st.kick()
            with st.lock:
                for sf in st.files.values():
                    if (sf.busy and sf.token is None and sf.cancel is not None
                            and now - sf.progress_at > STALLED_AFTER):
                        sched.restarts.add(sf.rid)
                        sf.cancel.set()
        down = not up


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
