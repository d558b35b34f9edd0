"""``statfs``: the account's quota (``uq``), served from a cache refreshed in the background.

The first call asks the server; later calls answer at once from the cache and start a
refresh when it is older than ``MAX_AGE`` seconds, so ``df`` never waits on a slow or
unreachable server once one answer is known.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from ..errors import MegafsError, describe

if TYPE_CHECKING:
    from ..api.interface import MegaApi

log = logging.getLogger(__name__)

MAX_AGE = 5.0          # seconds before a cached quota is refreshed in the background
BLOCK = 4096


class QuotaCache:
    """``statfs`` fields from the account's quota."""

    def __init__(self, client: "MegaApi") -> None:
        self.client = client
        self._quota: tuple[float, tuple[int, int]] | None = None
        self._quota_busy = threading.Event()

    def statfs(self) -> dict[str, int]:
        """Sizes from ``uq``; served from a cache refreshed in the background after 5 s, so
        ``df`` never waits on a slow or unreachable server once one answer is known."""
        cached = self._quota
        if cached is None:
            self._refresh_quota()
            cached = self._quota
            assert cached is not None
        elif time.monotonic() - cached[0] > 5.0 and not self._quota_busy.is_set():
            self._quota_busy.set()
            threading.Thread(target=self._refresh_quota, name="megafs-quota",
                             daemon=True).start()
        used, total = cached[1]
        bs = 4096
        free = max(0, total - used) // bs
        return {"f_bsize": bs, "f_frsize": bs, "f_blocks": max(1, total // bs), "f_bfree": free,
                "f_bavail": free, "f_files": 1 << 20, "f_ffree": 1 << 20, "f_favail": 1 << 20,
                "f_namemax": 255}

    def _refresh_quota(self) -> None:
        try:
            used, total = self.client.quota()
            self._quota = (time.monotonic(), (int(used), int(total)))
        except MegafsError as exc:
            if self._quota is None:
                raise
            log.info("quota refresh failed (%s); using the cached value", describe(exc))
        finally:
            self._quota_busy.clear()
