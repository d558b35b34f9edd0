"""Solving MEGA's proof-of-work challenges (HTTP 402 + ``X-Hashcash``) on every core.

The server answers a login with ``402`` and ``X-Hashcash: 1:EASINESS:TS:TOKEN``; the client
must find a 4-byte prefix whose SHA-256 over prefix + TOKEN x 262144 (12 MiB) starts with a
32-bit big-endian value at most ``crypto.hashcash_threshold(EASINESS)``, then resend the same
request (protocol reference §1.7).  Each try hashes 12 MiB: about 6.3 ms on one core here,
so easiness 180 (p = 105 * 2**17 / 2**32, ~312 tries expected) takes ~2 s on one core.

Threads, not processes: hashlib releases the GIL while it hashes a large buffer, so two
threads do 1.93x the tries of one on this 2-core machine (3.27 against 6.31 ms a try), the
same as two processes (1.88x with a process pool, which also needs its own 12 MiB body per
process and a fork of a threaded program).  The MEGA SDK also uses one thread per core
(meganz/sdk src/hashcash.cpp ``decideWorkers``).

The answer is the smallest valid counter, as with the single-threaded reference solver
(``crypto.hashcash_solve``, the third-party vectors): counters are handed out in increasing
order, and once one passes, the workers only finish the smaller ones still in flight.

Deadline: a challenge lives about 5 minutes (the SDK's ``kTtl`` is 300 s); the SDK gives its
solver a third of that (``computeBudget``: 100 s, at least 30 s).  ``solve`` gives up after
``DEFAULT_DEADLINE`` seconds with ``ProofOfWorkTimeout`` instead of sending an answer the
server would refuse as expired.  Pure computation plus threads; no I/O, never logs the token.
"""
from __future__ import annotations

import os
import struct
import threading
import time

from .. import crypto
from ..errors import Cancelled, ProofOfWorkTimeout

CHALLENGE_LIFE = 300.0       # seconds a challenge stays valid on the real service (SDK kTtl)
DEFAULT_DEADLINE = CHALLENGE_LIFE / 3     # the SDK's budget: a third of the life
_COUNTERS = 1 << 32


def default_workers() -> int:
    """One thread per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class _Search:
    """The shared state of one solve; ``lock`` guards ``next`` and ``best``."""

    def __init__(self, body: bytes, threshold: int) -> None:
        self.body = body
        self.threshold = threshold
        self.lock = threading.Lock()
        self.next = 0
        self.best: int | None = None
        self.stop = threading.Event()

    def take(self) -> int | None:
        """The next counter to try, or None when no counter left can beat the best so far."""
        with self.lock:
            n = self.next
            if self.stop.is_set() or n >= _COUNTERS or (self.best is not None and n >= self.best):
                return None
            self.next = n + 1
            return n

    def found(self, n: int) -> None:
        with self.lock:
            if self.best is None or n < self.best:
                self.best = n

    def work(self) -> None:
        while True:
            n = self.take()
            if n is None:
                return
            if crypto.hashcash_value(struct.pack("<I", n), self.body) <= self.threshold:
                self.found(n)


def solve(challenge: str, *, workers: int | None = None,
          deadline: float = DEFAULT_DEADLINE,
          cancel: threading.Event | None = None) -> tuple[str, float]:
    """Answer ``challenge`` (the ``X-Hashcash`` header of a 402); return the header value to
    resend (``1:TOKEN:PREFIX``) and the seconds it took.

    Raises ValueError for a malformed challenge, ``ProofOfWorkTimeout`` when no answer is
    found within ``deadline`` seconds and ``Cancelled`` when ``cancel`` is set.
    """
    easiness, token_b64, token = crypto.parse_hashcash_challenge(challenge)
    started = time.monotonic()
    search = _Search(crypto.hashcash_body(token), crypto.hashcash_threshold(easiness))
    count = workers or default_workers()
    threads = [threading.Thread(target=search.work, name="megafs-hashcash-%d" % i, daemon=True)
               for i in range(count)]
    for thread in threads:
        thread.start()
    end = started + deadline
    try:
        for thread in threads:
            while thread.is_alive():
                left = end - time.monotonic()
                if left <= 0 or (cancel is not None and cancel.is_set()):
                    break
                thread.join(min(left, 0.2))
            else:
                continue
            break
    finally:
        finished = all(not t.is_alive() for t in threads)
        search.stop.set()
        for thread in threads:
            thread.join()
    elapsed = time.monotonic() - started
    if finished and search.best is not None:
        return "1:%s:%s" % (token_b64, crypto.b64encode(struct.pack("<I", search.best))), elapsed
    if cancel is not None and cancel.is_set():
        raise Cancelled("proof of work cancelled")
    raise ProofOfWorkTimeout(
        "the server asked for proof of work (X-Hashcash, easiness %d) and %d thread(s) found "
        "no answer in %.0f s; a challenge is only valid for about %.0f minutes, so megafs "
        "stopped: this machine is too slow for that difficulty right now, try again later"
        % (easiness, count, elapsed, CHALLENGE_LIFE / 60))
