"""How many transfer requests to keep in flight: start at the configured number, and on a slow
link double it while each step still raises the measured throughput (issue 23).

Why: a transfer on ``n`` connections with one request in flight each is held to ``n`` times
what one connection carries, less an idle round trip per request.  Real links often cap each
connection (TCP windows over a long round trip, per-connection shaping): through the bench's
WAN emulator (``scripts/bench --wan``; far: RTT 150 ms, 20 Mbit/s per connection, 100 in
total) 4 connections carried 9.1 MB/s of the 12.5 and 6 carried 11.5.  The link's limits are
not known in advance, so they are measured in epochs: an epoch ends when as many requests as
are in flight have completed (the first starts with the transfer, later ones after the new
connections' first requests).  If the epoch's requests were slow (any over ``SLOW`` seconds
at under ``SLOW_RATE``; never on loopback and LAN, where the CPU is the limit and more
threads only cost memory), the width is doubled, and kept growing while each step raises the
throughput by at least a third of what it could at best (a link capped in total stops it
at once).  The extra width comes from a ``Budget`` shared by every transfer of one client,
so the memory bound stays ``base + budget`` buffers whatever the number of transfers.

Thread-safe; no I/O; times come from the caller (``time.monotonic`` seconds).
"""
from __future__ import annotations

import threading
from typing import Callable

SLOW = 0.1           # seconds: requests quicker than this never widen a transfer,
SLOW_RATE = 16e6     # nor requests faster than this (bytes/s: a loaded loopback, a fast LAN)
EXTRA = 4            # default budget: requests in flight added beyond the configured ones


class Budget:
    """Extra requests in flight shared by the transfers of one client."""

    def __init__(self, extra: int = EXTRA) -> None:
        self._lock = threading.Lock()
        self.extra = max(0, extra)
        self.used = 0

    def take(self, n: int = 1) -> int:
        """Up to ``n`` slots; how many were granted."""
        with self._lock:
            granted = max(0, min(n, self.extra - self.used))
            self.used += granted
            return granted

    def give(self, n: int = 1) -> None:
        with self._lock:
            self.used = max(0, self.used - n)


class Widener:
    """The width of one transfer: ``record`` each completed request and start as many more
    workers as it returns (their slots are taken from the budget; ``close`` gives every taken
    slot back).

    Growth doubles the width (4, 8, 16...; as TCP's slow start, one epoch per step: each costs
    the new connections' handshakes, so few steps pay), kept while the throughput rises by at
    least a third of what the step could give at best.  ``start``: a width learned by an
    earlier transfer on the same link (``learned``), taken at once (as far as the budget
    allows) and not probed again.  ``learned`` after the transfer: the width to start the next
    one at, or None when requests were quick (no need to widen)."""

    def __init__(self, base: int, budget: Budget, limit: int | None = None,
                 start: int | None = None) -> None:
        self.base = max(1, base)
        self.budget = budget
        self.limit = limit          # never wider than this (e.g. the requests to send)
        self._lock = threading.Lock()
        self._growing = True
        self.taken = 0
        want = self.base
        if start is not None and start > self.base:
            want = start if limit is None else min(start, limit)
            self.taken = budget.take(want - self.base)
            self._growing = False
        self.width = self.base + self.taken
        self.learned: int | None = start
        self._epoch_start: float | None = None    # the first epoch: when its first request began
        self._epoch_bytes = 0
        self._epoch_count = 0
        self._warm = 0              # completions to skip first (the new connections' handshakes)
        self._previous: float | None = None
        self._needed = 1.0          # the rise in throughput that keeps the last step
        self._slow = False          # a request of the epoch was slow (SLOW, SLOW_RATE)

    def record(self, nbytes: int, started: float, now: float, left: int = 1 << 30) -> int:
        """One request of ``nbytes`` ran from ``started`` to ``now``; ``left`` requests remain
        to be sent.  Returns how many more workers to start now (0 mostly)."""
        with self._lock:
            if not self._growing:
                return 0
            if self._warm:
                self._warm -= 1
                if not self._warm:
                    self._new_epoch(now)
                return 0
            if self._epoch_start is None:
                self._epoch_start = started
            self._epoch_bytes += nbytes
            self._epoch_count += 1
            took = now - started
            self._slow = self._slow or (took > SLOW and nbytes < SLOW_RATE * took)
            if self._epoch_count < self.width:
                return 0
            rate = self._epoch_bytes / max(now - self._epoch_start, 1e-6)
            if not self._slow:
                self._growing, self.learned = False, None
                return 0
            if self._previous is not None and rate < self._previous * self._needed:
                self._growing = False
                self.learned = self.width
                return 0
            step = self.width
            if self.limit is not None:
                step = min(step, self.limit - self.width)
            step = min(step, left - self.width)
            granted = self.budget.take(step) if step > 0 else 0
            self.learned = self.width + granted
            if not granted:
                self._new_epoch(now)
                return 0
            self.taken += granted
            self._previous = rate
            self._needed = 1 + granted / (3 * self.width)
            self._warm = granted               # the new workers' first requests
            self.width += granted
            return granted

    def long_link(self, round_trip: float) -> int:
        """A request on the same link (e.g. the ``g`` before a download) took ``round_trip``
        seconds before any of this transfer's requests completed.  Over ``SLOW`` every request
        of the first epoch will be slow too (each pays at least that round trip, and a block of
        at most 16 MiB then runs under ``SLOW_RATE``), so the first epoch would only double the
        width: double it now (the far profile's cold read: its first blocks take 1.2 s).
        Returns how many workers were added (0: quick round trip, a step already taken, no
        budget)."""
        with self._lock:
            if (round_trip <= SLOW or not self._growing or self._epoch_start is not None
                    or self._previous is not None or self.taken):
                return 0
            step = self.width if self.limit is None else min(self.width,
                                                             self.limit - self.width)
            granted = self.budget.take(step) if step > 0 else 0
            self.taken += granted
            self.width += granted
            self.learned = self.width if granted else self.learned
            return granted

    def _new_epoch(self, now: float) -> None:
        self._epoch_start, self._epoch_bytes, self._epoch_count, self._slow = now, 0, 0, False

    def close(self) -> None:
        with self._lock:
            taken, self.taken = self.taken, 0
        self.budget.give(taken)


class Crew:
    """Worker threads running ``target`` that may grow while they run (``add``); ``run``
    starts ``count`` of them (the first on the calling thread) and returns once every one,
    added ones included, has finished.  If the wait is interrupted, ``stop`` is set, the
    workers are joined and the interruption propagates."""

    def __init__(self, target: Callable[[], None], name: str, stop: threading.Event) -> None:
        self.target, self.name, self.stop = target, name, stop
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def add(self) -> None:
        with self._lock:
            thread = threading.Thread(target=self.target, daemon=True,
                                      name="%s-%d" % (self.name, len(self._threads) + 1))
            self._threads.append(thread)
        thread.start()

    def run(self, count: int) -> None:
        for _ in range(count - 1):
            self.add()
        try:
            self.target()
            joined = 0
            while True:
                with self._lock:
                    if joined == len(self._threads):
                        return
                    thread = self._threads[joined]
                thread.join()
                joined += 1
        except BaseException:
            self.stop.set()
            with self._lock:
                threads = list(self._threads)
            for thread in threads:
                thread.join()
            raise
