"""Solving MEGA's proof-of-work challenges (HTTP 402 + ``X-Hashcash``) on every core.

The server answers a login with ``402`` and ``X-Hashcash: 1:EASINESS:TS:TOKEN``; the client
must find a 4-byte prefix whose SHA-256 over prefix + TOKEN x 262144 (12 MiB) starts with a
32-bit big-endian value at most ``crypto.hashcash_threshold(EASINESS)``, then resend the same
request (protocol reference §1.7).  Each try hashes 12 MiB: about 6.3 ms on one core here, so
easiness 180 (~312 tries expected) takes ~2 s on one core, and easiness 100 (the only real
``X-Hashcash`` header quoted in meganz/sdk ``src/posix/net.cpp``; threshold 74,752/2^32,
~57,000 tries) about 3 minutes on two cores.

No deadline: ``solve`` runs until it finds an answer or ``cancel`` is set.  The SDK gives its
solver a third of the challenge's life but drops that deadline after two expired budgets
(meganz/sdk src/hashcash.cpp ``adjustBudget``: a week), and the web client never had one
(meganz/webclient js/utils/api.js ``gencash``); a slow machine that gave up would never log in.
The transport sends a late answer anyway, and solves the fresh challenge a server answers it
with.

Threads, not processes: hashlib releases the GIL while it hashes a large buffer, so the
threads hash at the machine's limit.  Measured on this 2-core machine when idle: two threads
did 1.93x the tries of one (3.27 against 6.31 ms a try: 0.965 of ``cores`` x one thread), a
process pool 1.88x (0.94), and it needs its own 12 MiB body per process and a fork of a
threaded program.  Loaded by other programs (load average 6 on 2 cores, 2026-12-07), the
solver matched two plain hashlib threads in alternating 4 s runs (55-80 against 62-72
tries/s) while both stayed far below 2 x one thread: the machine was the limit, not the
solver.  ``scripts/bench`` prints the ratio (``hashcash_rate``).  The MEGA SDK also uses one
thread per core (meganz/sdk src/hashcash.cpp ``decideWorkers``).

The answer is the smallest valid counter, as with the single-threaded reference solver
(``crypto.hashcash_solve``, the third-party vectors): counters are handed out in increasing
order, and once one passes, the workers only finish the smaller ones still in flight.

A person waiting sees it: ``solve`` reports ``Progress`` (tries done, expected tries, elapsed
seconds, the estimate) about once a second to its ``progress`` callback and to the observers
of the whole process (``add_observer``: the terminal line of the CLI, the mount's status).
Pure computation plus threads; no
I/O, never logs the token.
"""
from __future__ import annotations

import logging
import os
import struct
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from .. import crypto
from ..errors import Cancelled, ProtocolError

log = logging.getLogger(__name__)

LOG_EVERY = 30.0             # seconds between INFO lines of a solve in progress
CHALLENGE_LIFE = 300.0       # seconds a challenge stays valid on the real service (SDK kTtl)
REPORT_EVERY = 1.0           # seconds between progress reports
_COUNTERS = 1 << 32


def default_workers() -> int:
    """One thread per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def expected_tries(easiness: int) -> float:
    """The mean number of tries a challenge of ``easiness`` (0-255) takes: 2^32 / (threshold
    + 1), e.g. ~57,455 at 100 and ~312 at 180."""
    return _COUNTERS / (crypto.hashcash_threshold(easiness) + 1)


@dataclass(frozen=True)
class Progress:
    """One report of a solve.  ``state``: "solving", then "solved" or "cancelled" (the last
    report).  ``tries`` are finished hashes, ``expected`` the mean tries of this easiness (a
    solve may need more or fewer: each try is an independent draw), ``elapsed`` seconds since
    the challenge came; ``rate`` tries per second so far (0 before the first try ends)."""

    easiness: int
    workers: int
    tries: int
    expected: float
    elapsed: float
    state: str = "solving"

    @property
    def rate(self) -> float:
        return self.tries / self.elapsed if self.elapsed > 0 and self.tries else 0.0

    @property
    def estimate(self) -> float | None:
        """Seconds a whole solve takes on average at the rate so far; None before a rate."""
        return self.expected / self.rate if self.rate else None

    @property
    def percent(self) -> int:
        """Tries done as a percentage of the expected tries (100 once solved; over 100 for a
        solve that is taking longer than average: the draws are independent, so it goes on
        at the same speed)."""
        if self.state == "solved":
            return 100
        return int(100 * self.tries / self.expected)

    def describe(self) -> str:
        """The line a person reads, e.g. "MEGA asks this computer for a proof of work
        (easiness 100): about 3 min on 2 cores, 40 %"."""
        head = "MEGA asks this computer for a proof of work (easiness %d)" % self.easiness
        cores = "%d core%s" % (self.workers, "" if self.workers == 1 else "s")
        if self.state == "solved":
            return "%s: done in %s on %s" % (head, _duration(self.elapsed), cores)
        if self.state == "cancelled":
            return "%s: cancelled after %s" % (head, _duration(self.elapsed))
        if self.estimate is None:
            return "%s: measuring this computer's speed on %s" % (head, cores)
        more = "" if self.tries < self.expected else " (longer than average; keeps going)"
        return "%s: about %s on %s, %d %%%s" % (head, _duration(self.estimate), cores,
                                                self.percent, more)

    def as_dict(self) -> dict[str, Any]:
        """The figures for ``megafs status`` (JSON)."""
        return {"easiness": self.easiness, "workers": self.workers, "tries": self.tries,
                "expected": round(self.expected), "elapsed": round(self.elapsed, 1),
                "estimate": None if self.estimate is None else round(self.estimate),
                "percent": self.percent, "state": self.state, "line": self.describe()}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return "%d s" % max(1, round(seconds))
    if seconds < 5400:
        return "%d min" % round(seconds / 60)
    return "%.1f h" % (seconds / 3600)


Observer = Callable[[Progress], None]
_observers: list[Observer] = []
_observers_lock = threading.Lock()


def add_observer(observer: Observer) -> None:
    """Call ``observer(progress)`` with every report of every solve in this process (from the
    solving thread; it must be quick and must not raise)."""
    with _observers_lock:
        _observers.append(observer)


def remove_observer(observer: Observer) -> None:
    with _observers_lock:
        if observer in _observers:
            _observers.remove(observer)


class _Search:
    """The shared state of one solve; ``lock`` guards ``next``, ``best`` and ``done``."""

    def __init__(self, body: bytes, threshold: int) -> None:
        self.body = body
        self.threshold = threshold
        self.lock = threading.Lock()
        self.next = 0
        self.done = 0
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

    def tried(self, n: int, ok: bool) -> None:
        with self.lock:
            self.done += 1
            if ok and (self.best is None or n < self.best):
                self.best = n

    def work(self) -> None:
        while True:
            n = self.take()
            if n is None:
                return
            value = crypto.hashcash_value(struct.pack("<I", n), self.body)
            self.tried(n, value <= self.threshold)


def solve(challenge: str, *, workers: int | None = None,
          cancel: threading.Event | None = None,
          progress: Observer | None = None) -> tuple[str, float]:
    """Answer ``challenge`` (the ``X-Hashcash`` header of a 402); return the header value to
    resend (``1:TOKEN:PREFIX``) and the seconds it took.

    Runs until an answer is found (or all 2^32 counters fail, which no real easiness does):
    ``progress`` and the process's observers get a ``Progress`` about every second and once at
    the end.  Raises ValueError for a malformed challenge and ``Cancelled`` when ``cancel`` is
    set; every solver thread has ended when it returns or raises (KeyboardInterrupt too).
    """
    easiness, token_b64, token = crypto.parse_hashcash_challenge(challenge)
    started = time.monotonic()
    search = _Search(crypto.hashcash_body(token), crypto.hashcash_threshold(easiness))
    count = workers or default_workers()
    report = Progress(easiness, count, 0, expected_tries(easiness), 0.0)
    threads = [threading.Thread(target=search.work, name="megafs-hashcash-%d" % i, daemon=True)
               for i in range(count)]
    for thread in threads:
        thread.start()
    next_report = started
    try:
        while any(t.is_alive() for t in threads):
            if cancel is not None and cancel.is_set():
                break
            now = time.monotonic()
            if now >= next_report:
                next_report = now + REPORT_EVERY
                report = replace(report, tries=search.done, elapsed=now - started)
                _tell(report, progress)
            alive = next((t for t in threads if t.is_alive()), threads[0])
            alive.join(min(0.2, max(0.01, next_report - time.monotonic())))
    except BaseException:          # KeyboardInterrupt, SystemExit: the last report first
        search.stop.set()
        _tell(replace(report, tries=search.done, elapsed=time.monotonic() - started,
                      state="cancelled"), progress)
        raise
    finally:
        search.stop.set()
        for thread in threads:
            thread.join()
    elapsed = time.monotonic() - started
    solved = search.best is not None and not (cancel is not None and cancel.is_set())
    final = replace(report, tries=search.done, elapsed=elapsed,
                    state="solved" if solved else "cancelled")
    _tell(final, progress)
    if solved:
        assert search.best is not None
        return "1:%s:%s" % (token_b64, crypto.b64encode(struct.pack("<I", search.best))), elapsed
    if cancel is not None and cancel.is_set():
        raise Cancelled("proof of work cancelled")
    raise ValueError("no counter solves this challenge (easiness %d)" % easiness)


def _tell(report: Progress, progress: Observer | None) -> None:
    with _observers_lock:
        observers = list(_observers)
    for observer in ([progress] if progress else []) + observers:
        observer(report)


def solve_logged(what: str, challenge: str, workers: int | None = None,
                 cancel: threading.Event | None = None, *,
                 again: bool = False) -> tuple[str, float]:
    """``solve`` for the transport: the log says at INFO what the terminal line says, when
    the speed is known and every ``LOG_EVERY`` seconds, and how it ended; ``what`` names the
    request (never the token); ``again``: the server answered our last answer with this new
    challenge.  Same results as ``solve``; a malformed challenge is a ``ProtocolError``,
    ``cancel`` raises ``Cancelled``."""
    if again:
        log.info("%s: the server answered our proof of work with a new challenge (ours was "
                 "late or refused); solving it", what)
    logged = [0.0]
    last: list[Progress] = []

    def progress(report: Progress) -> None:
        last[:] = [report]
        first = not logged[0] and report.estimate is not None
        if report.state == "solving" and (first or report.elapsed - logged[0] >= LOG_EVERY):
            logged[0] = report.elapsed
            log.info("%s: %s", what, report.describe())

    try:
        answer, seconds = solve(challenge, workers=workers, cancel=cancel, progress=progress)
    except ValueError as exc:
        raise ProtocolError("%s: bad X-Hashcash challenge: %s" % (what, exc)) from exc
    tries = last[0].tries if last else 0
    log.info("%s: solved a proof-of-work challenge (easiness %s) in %.2f s (%d tries, %.1f "
             "tries/s)%s", what, challenge.split(":")[1], seconds, tries,
             tries / seconds if seconds else 0.0,
             "; later than a challenge's life (%.0f s): sending it anyway" % CHALLENGE_LIFE
             if seconds > CHALLENGE_LIFE else "")
    return answer, seconds
