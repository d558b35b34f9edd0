"""The small files' POSTs (issue 23): files of one POST each, with the upload URL their batch
of ``u`` gave (``scheduler``), POSTed by a pool of threads, many at once.

At most ``limit`` files are POSTed at once (``post_limit`` of the last ``u``'s round trip) and
at most ``SMALL_BYTES`` of them (the memory bound: 16 MiB, as with 16 workers of 1 MiB), the
first one always.  The rest wait in a queue, in order, and the POST that ends starts those that
now fit: no thread waits for room (a hundred threads waiting on the write-back lock were woken
by every change of every file).  Each file counts in the queue's wave of POSTs
(``QueueState.post_started``/``post_ended``) from the moment the dispatcher takes it for its
``u`` until its POST ends, so the committer's one ``p`` waits for it: a fresh mount's scout
(``scheduler``) and the burst held behind it share one ``p`` and one ``l`` instead of the
scout's own going first and delaying the burst's by two round trips.  Once the pool is shut
down (the mount stops), files whose turn comes are given back at once as cancelled.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
from typing import Any, Callable, Optional

from ..errors import Cancelled
from .staged import StagedFile
from .state import QueueState

SMALL_WORKERS = 128       # small files POSTed at once at most (threads made as needed)
POSTS_PER_RTT = 800       # small files POSTed at once per second of the `u` request's time
POSTS_MIN = 32            # ... but at least this many (see ``post_limit``)
SMALL_BYTES = 16 << 20    # bytes of small files being POSTed at once (beyond one file)

# a small file taken for a POST: (file, verify first, (upload URL, size) or None, size)
PostJob = tuple[StagedFile, bool, Optional[tuple[str, int]], int]


class PostQueue:
    """See the module docstring.  ``run(job, error)`` uploads one file (or gives it back with
    ``error``); it must not raise."""

    def __init__(self, state: QueueState, run: Callable[[PostJob, Any], None],
                 workers: int = SMALL_WORKERS) -> None:
        self.state = state
        self.run = run
        self.workers = workers
        self.limit = POSTS_MIN        # files POSTed at once (``post_limit`` of the last `u`)
        self._pool: cf.ThreadPoolExecutor | None = None
        self._waiting: collections.deque[PostJob] = collections.deque()
        self._bytes = 0               # bytes of the files being POSTed
        self._posting = 0             # files being POSTed

    def start(self) -> None:
        self._pool = cf.ThreadPoolExecutor(self.workers, "megafs-small")

    def shutdown(self) -> None:
        """POSTs under way see ``stopping`` through their cancel events: not waited for."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def add(self, job: PostJob) -> None:
        """Queue one file; it starts at once if it fits."""
        with self.state.lock:
            self._waiting.append(job)
            starts = self._admit()
        self._start(starts)

    def _admit(self) -> list[PostJob]:
        """Take the waiting files that fit now, in order, counted as running (under the
        lock)."""
        starts: list[PostJob] = []
        while self._waiting:
            size = self._waiting[0][3]
            if self._posting and (self._bytes + size > SMALL_BYTES
                                  or self._posting >= self.limit):
                break
            starts.append(self._waiting.popleft())
            self._bytes += size
            self._posting += 1
        return starts

    def _start(self, starts: list[PostJob]) -> None:
        assert self._pool is not None
        while starts:
            job = starts.pop(0)
            try:
                self._pool.submit(self._post, job)
            except RuntimeError as exc:           # shut down: the mount is stopping
                starts.extend(self._done(job, Cancelled(str(exc))))

    def _post(self, job: PostJob) -> None:
        """One pool thread: POST one file, then start the files that now fit."""
        self._start(self._done(job, None))

    def _done(self, job: PostJob, error: BaseException | None) -> list[PostJob]:
        """Upload one admitted file (or give it back with ``error``); the waiting files that
        fit once it is done."""
        st = self.state
        if error is None and st.stopping.is_set():
            error = Cancelled("the mount is stopping")
        try:
            self.run(job, error)
        finally:
            with st.lock:
                self._bytes -= job[3]
                self._posting -= 1
                st.post_ended()
                starts = self._admit()
        return starts


def post_limit(rtt: float, most: int) -> int:
    """How many small files to POST at once after a `u` request that took ``rtt`` seconds (a
    measure of the round trip): ``POSTS_PER_RTT`` per second of it, at least ``POSTS_MIN``, at
    most ``most``.  Each POST beyond the pool's kept-alive connections opens a new one (TCP and
    TLS handshakes: about 2 ms of CPU on the two ends here, more on 2 busy cores), each wave of
    POSTs on kept connections costs a round trip.  Measured (100 x 4 KiB, ``scripts/bench
    --wan``, 4 interleaved rounds, 2026-12-07): home (RTT 40 ms) 0.82 s with 32 at once, 0.94 s
    with 128; far (RTT 150 ms) 1.80 s with 32, 1.63 s with 128."""
    return max(POSTS_MIN, min(most, int(rtt * POSTS_PER_RTT)))
