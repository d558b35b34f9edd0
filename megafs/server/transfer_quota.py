"""Transfer quota on downloads: bytes served per client address in a sliding window.

The real service limits free and temporary accounts' downloads per IP address; past the limit
a transfer server answers HTTP 509 with ``X-MEGA-Time-Left: <seconds>``, and ``g`` answers
``"e": -17`` with ``"tl": <seconds>`` (protocol reference §8 and pitfall 14; meganz/sdk
src/transferslot.cpp, src/commands.cpp CommandGetFile).  The size of the limit and the
window are not published: here both are policies (``transfer_quota`` = 0 switches it off, the
default, since an unconfigured limit would be pure invention).
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque

from .config import Policy


class TransferMeter:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._served: dict[str, deque[tuple[float, int]]] = {}

    def _used(self, who: str, now: float) -> deque[tuple[float, int]]:
        entries = self._served.setdefault(who, deque())
        window = self.policy.transfer_window
        while entries and entries[0][0] <= now - window:
            entries.popleft()
        return entries

    def time_left(self, who: str, nbytes: int) -> int:
        """0 if ``nbytes`` more may be served to ``who`` now, else whole seconds to wait."""
        quota = self.policy.transfer_quota
        if quota <= 0:
            return 0
        now = time.monotonic()
        with self._lock:
            entries = self._used(who, now)
            used = sum(n for _, n in entries)
            if used + nbytes <= quota:
                return 0
            if nbytes > quota:
                return max(1, math.ceil(self.policy.transfer_window))
            for at, n in entries:
                used -= n
                if used + nbytes <= quota:
                    return max(1, math.ceil(at + self.policy.transfer_window - now))
        return max(1, math.ceil(self.policy.transfer_window))

    def record(self, who: str, nbytes: int) -> None:
        if self.policy.transfer_quota <= 0 or nbytes <= 0:
            return
        now = time.monotonic()
        with self._lock:
            self._used(who, now).append((now, nbytes))

    def used(self, who: str) -> int:
        with self._lock:
            return sum(n for _, n in self._used(who, time.monotonic()))
