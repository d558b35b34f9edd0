"""MEGA's transfer quota on downloads: reading the time it asks to wait, and waiting it out.

Past the quota a download server answers HTTP 509 with ``X-MEGA-Time-Left: <seconds>`` and
``g`` answers ``{"e": -17, "tl": <seconds>}`` (protocol reference §8).  The SDK does not fail
the transfer: it backs the transfer off for that long and sets ``overquotauntil`` so that
nothing else is tried before (meganz/sdk ``src/transferslot.cpp``
``processRequestFailure``: 509 -> ``API_EOVERQUOTA`` with
``MegaClient::overTransferQuotaBackoff``, ``src/transfer.cpp`` ``Transfer::failed`` and
``DirectReadNode::retry`` for streaming reads; the header is read in ``src/posix/net.cpp``).
Without a usable time it waits ``DEFAULT_BW_OVERQUOTA_BACKOFF_SECS`` = 3600 s
(``src/megaclient.cpp``, also for a ``g`` without ``tl`` in ``src/commands.cpp``).

Here: ``QuotaGate`` is that "over quota until" state, one per client.  Every download waits
at the gate before asking (so a mount's parallel readers send no requests during the wait),
and a refusal moves the gate's time forward.  The server's number is hostile input: only a
plain whole number of seconds counts, at most ``MAX_WAIT`` (a longer ask is cut to it: the
download simply asks again then); anything else waits ``UNKNOWN_WAIT`` and asks again, which
costs one small request, rather than the SDK's hour.  ``waiting=False`` (``megafs get
--no-wait-quota``) makes a refusal fail at once instead.  Every wait can be cancelled, and
``close`` ends them all (unmount).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable

from ..errors import ApiCode, Cancelled, MegaError

log = logging.getLogger(__name__)

MAX_WAIT = 6 * 3600.0       # the longest wait taken from one answer (free quotas: 6 h windows)
UNKNOWN_WAIT = 300.0        # no, zero or unreadable time left: ask again after this
SLICE = 0.25                # seconds between looks at a wait's cancel condition


class TransferQuotaExceeded(MegaError):
    """``-17`` from a download server (HTTP 509) or from ``g``; ``time_left`` is the checked
    number of seconds to wait (``parse_time_left``)."""

    def __init__(self, time_left: float, context: str) -> None:
        super().__init__(ApiCode.EOVERQUOTA, context)
        self.time_left = time_left
        # not "storage quota exceeded", the generic meaning of -17
        self.args = ("transfer quota used up (MEGA error -17 from %s); MEGA allows more in "
                     "%s (%.0f s)" % (context, wait_text(time_left), time_left),)


def parse_time_left(value: object) -> float:
    """Seconds to wait from ``X-MEGA-Time-Left`` (a str) or ``g``'s ``tl`` (an int).

    A whole number of seconds >= 1, capped at ``MAX_WAIT``; anything else (missing, zero,
    negative, signs, spaces inside, fractions, non-ASCII digits, over 40 characters) is
    ``UNKNOWN_WAIT``."""
    if isinstance(value, bool):
        return UNKNOWN_WAIT
    if isinstance(value, str):
        text = value.strip()
        if not (0 < len(text) <= 40 and text.isascii() and text.isdigit()):
            return UNKNOWN_WAIT
        value = int(text)
    if not isinstance(value, int) or value <= 0:
        return UNKNOWN_WAIT
    return float(min(value, MAX_WAIT))


def wait_text(seconds: float) -> str:
    """``45 s``, ``12 min``, ``2 h 5 min`` (rounded up to what is still to wait)."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return "%d s" % math.ceil(seconds)
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return "%d min" % minutes
    return "%d h %d min" % divmod(minutes, 60)


class QuotaGate:
    """When downloads may ask again; shared by every download of one client, any thread.

    ``on_wait(seconds)`` is called once at the start of each wait (a wait that a later
    refusal extends is the same wait); it must not block."""

    def __init__(self, *, waiting: bool = True,
                 on_wait: Callable[[float], None] | None = None) -> None:
        self.waiting = waiting
        self.on_wait = on_wait
        self._lock = threading.Lock()
        self._until = 0.0                 # time.monotonic() before which nothing is asked
        self._closed = threading.Event()

    def left(self) -> float:
        """Seconds until downloads ask again (0: no wait)."""
        return max(0.0, self._until - time.monotonic())

    def refused(self, exc: TransferQuotaExceeded) -> None:
        """A download was refused for the quota: wait from now on (the caller then calls
        ``wait``).  Re-raises ``exc`` when not waiting or after ``close``."""
        if not self.waiting or self._closed.is_set():
            raise exc
        now = time.monotonic()
        with self._lock:
            fresh = self._until <= now
            self._until = max(self._until, now + exc.time_left)
        if fresh:
            log.info("MEGA's transfer quota is used up; downloads continue in %s (the "
                     "server asked for %.0f s)", wait_text(exc.time_left), exc.time_left)
            if self.on_wait is not None:
                self.on_wait(exc.time_left)

    def wait(self, cancelled: Callable[[], bool] | None = None) -> None:
        """Return once the quota wait (if any) is over.  ``Cancelled`` when ``cancelled()``
        turns true or the gate is closed meanwhile."""
        while True:
            left = self.left()
            if left <= 0:
                return
            if self._closed.wait(min(SLICE, left)):
                raise Cancelled("stopped while waiting for MEGA's transfer quota")
            if cancelled is not None and cancelled():
                raise Cancelled("cancelled while waiting for MEGA's transfer quota")

    def close(self) -> None:
        """End every wait now (they raise ``Cancelled``); later refusals are not waited."""
        self._closed.set()
