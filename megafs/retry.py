"""The one retry policy of megafs: capped exponential back-off with jitter, and when to give up.

Every caller that retries (command batches, sc polls, transfer requests, the write-back queue's
upload attempts) uses ``RetryPolicy``/``Backoff`` from here; none writes its own loop of sleeps.
Jitter comes from ``secrets.SystemRandom``.  Retries are logged at rising levels (DEBUG, then
INFO, then WARNING), as the STYLE guide asks (urllib3 ``Retry``; the MEGA SDK's BackoffTimer).
No I/O besides sleeping.
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

    Delay before retry n (1-based) is ``min(cap, initial * 2**(n-1))`` plus a uniform jitter of
    up to half of that (as the MEGA SDK's BackoffTimer does).  Retries stop once
    ``give_up_after`` seconds have passed since the first attempt.
    """

    initial: float = 0.1
    cap: float = 30.0
    give_up_after: float = 300.0
    debug_attempts: int = 2      # retries logged at DEBUG
    info_attempts: int = 5       # then INFO up to this retry, WARNING after

    @classmethod
    def from_env(cls) -> "RetryPolicy":
        """The default policy, with ``give_up_after`` from ``$MEGAFS_RETRY_SECONDS``."""
        return cls(give_up_after=config.retry_seconds())

    def base(self, attempt: int) -> float:
        return min(self.cap, self.initial * (2 ** max(0, min(attempt - 1, 60))))

    def delay(self, attempt: int) -> float:
        base = self.base(attempt)
        return base + _jitter.uniform(0, base / 2)

    def level(self, attempt: int) -> int:
        if attempt <= self.debug_attempts:
            return logging.DEBUG
        if attempt <= self.info_attempts:
            return logging.INFO
        return logging.WARNING


class Backoff:
    """One operation's retry state: call ``wait(reason)`` before each retry."""

    def __init__(self, policy: RetryPolicy, what: str,
                 cancel: threading.Event | None = None) -> None:
        self.policy = policy
        self.what = what
        self.cancel = cancel
        self.start = time.monotonic()
        self.attempt = 0

    def remaining(self) -> float:
        return self.policy.give_up_after - (time.monotonic() - self.start)

    def wait(self, reason: str, error: MegafsError | None = None) -> None:
        """Sleep before the next retry, or raise ``error`` (or TransportError) if out of time."""
        self.attempt += 1
        delay = self.policy.delay(self.attempt)
        if self.remaining() < delay:
            if error is None:
                error = TransportError("%s failed after %d attempt(s) in %.0f s: %s"
                                       % (self.what, self.attempt,
                                          time.monotonic() - self.start, reason))
            raise error
        log.log(self.policy.level(self.attempt), "%s: %s; retry %d in %.2f s",
                self.what, reason, self.attempt, delay)
        if self.cancel is not None:
            if self.cancel.wait(delay):
                raise Cancelled("%s cancelled" % self.what)
        else:
            time.sleep(delay)
