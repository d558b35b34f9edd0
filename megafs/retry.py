"""The one retry policy of megafs: capped exponential back-off with jitter, and when to give up.

Every caller in the client library that retries (command batches, sc polls and waits, transfer
requests, upload restarts) uses ``RetryPolicy``/``Backoff`` from here; none writes its own loop
of sleeps, and no retry loop runs inside another one's budget: a caller that retries passes its
``Backoff`` down instead of letting the callee start a fresh one.  Jitter comes from
``secrets.SystemRandom``.  Retries are logged at rising levels (DEBUG, then INFO, then
WARNING), as the STYLE guide asks (urllib3 ``Retry``; the MEGA SDK's BackoffTimer).  No I/O
besides sleeping.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass

from . import config
from .errors import Cancelled, MegafsError, TransportError

log = logging.getLogger(__name__)

_jitter = secrets.SystemRandom()


@dataclass
class RetryPolicy:
    """Capped exponential backoff with jitter, and when to give up.

    Delay before retry n (1-based) of a streak is ``min(cap, initial * 2**(n-1))`` plus a
    uniform jitter of up to half of that (as the MEGA SDK's BackoffTimer does).  A streak of
    failures stops once ``give_up_after`` seconds have passed since its first failure.

    When the server asks to slow down (``-4`` ERATELIMIT on the command channel, HTTP 429) the
    delays start at ``slow_initial`` instead and double from there: the web client starts at
    900 ms + Exp(4 s) for ``-4`` against 192 ms + Exp(256 ms) for ``-3``
    (meganz/webclient js/utils/api.js ``errorHandler``).  ``cap`` bounds both.
    """

    initial: float = 0.1
    cap: float = 30.0
    give_up_after: float = 300.0
    slow_initial: float = 1.0
    debug_attempts: int = 2      # retries logged at DEBUG
    info_attempts: int = 5       # then INFO up to this retry, WARNING after

    @classmethod
    def from_env(cls) -> "RetryPolicy":
        """The default policy, with ``give_up_after`` from ``$MEGAFS_RETRY_SECONDS``."""
        return cls(give_up_after=config.retry_seconds())

    def base(self, attempt: int, slow: bool = False) -> float:
        start = max(self.initial, self.slow_initial) if slow else self.initial
        return min(self.cap, start * (2 ** max(0, min(attempt - 1, 60))))

    def delay(self, attempt: int, slow: bool = False) -> float:
        base = self.base(attempt, slow)
        return base + _jitter.uniform(0, base / 2)

    def level(self, attempt: int) -> int:
        if attempt <= self.debug_attempts:
            return logging.DEBUG
        if attempt <= self.info_attempts:
            return logging.INFO
        return logging.WARNING


class Backoff:
    """One operation's retry state: call ``wait(reason)`` before each retry.

    The give-up clock starts at the first failure, not at construction, and ``reset`` after a
    success starts a new streak: an upload that runs for an hour and then meets one transient
    error still gets the whole ``give_up_after`` to recover.  Not thread-safe: one Backoff
    belongs to one retry loop (parallel workers each own one).
    """

    def __init__(self, policy: RetryPolicy, what: str,
                 cancel: threading.Event | None = None) -> None:
        self.policy = policy
        self.what = what
        self.cancel = cancel
        self.attempt = 0
        self.started: float | None = None     # monotonic time of the streak's first failure
        self._slow = 0                        # retries of this streak that asked to slow down

    def reset(self) -> None:
        """A success: the next failure starts a new streak with the shortest delay."""
        self.attempt = 0
        self.started = None
        self._slow = 0

    def remaining(self) -> float:
        if self.started is None:
            return self.policy.give_up_after
        return self.policy.give_up_after - (time.monotonic() - self.started)

    def next_delay(self, slow: bool = False) -> float:
        """Count one more failure and return how long to wait before the next try (no sleep,
        no giving up: for callers that schedule the retry themselves)."""
        if self.started is None:
            self.started = time.monotonic()
        self.attempt += 1
        if slow:
            self._slow += 1
            return self.policy.delay(self._slow, slow=True)
        return self.policy.delay(self.attempt)

    def wait(self, reason: str, error: MegafsError | None = None, *, slow: bool = False) -> None:
        """Sleep before the next retry, or raise ``error`` (or TransportError) if out of time.

        ``slow``: the server asked us to slow down (rate limit); see ``RetryPolicy``.
        """
        delay = self.next_delay(slow)
        if self.remaining() < delay:
            if error is None:
                error = TransportError("%s failed after %d attempt(s) in %.0f s: %s"
                                       % (self.what, self.attempt,
                                          self.policy.give_up_after - self.remaining(), reason))
            raise error
        log.log(self.policy.level(self.attempt), "%s: %s; retry %d in %.2f s",
                self.what, reason, self.attempt, delay)
        self.sleep(delay)

    def sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or raise Cancelled as soon as the cancel event is set."""
        if self.cancel is not None:
            if self.cancel.wait(delay):
                raise Cancelled("%s cancelled" % self.what)
        elif delay > 0:
            time.sleep(delay)
