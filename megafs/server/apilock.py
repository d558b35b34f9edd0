"""The API lock of a session: a second overlapping ``/cs`` request of one session that reads
or changes account state is refused with a bare ``-3`` (EAGAIN, "API lock"), as the real
service does.

Sources: meganz/sdk include/megaapi.h ``RETRY_API_LOCK`` ("SDK is waiting for the server to
complete a request due to an API lock (API error -3)") and src/megaclient.cpp, which files a
``-3`` answer under that reason and resends the same request; the SDK and the web client keep
one such request in flight per session (meganz/sdk src/request.cpp ``RequestDispatcher``,
meganz/webclient js/utils/api.js ``MEGAPIRequest.flush``) and send ``g`` (download URLs) on a
lockless channel (meganz/sdk src/commands.cpp ``mLockless``), so a request made only of ``g``
is never refused here.  Policy ``api_lock`` switches it (``--no-api-lock``).
"""
from __future__ import annotations

import threading
from typing import Any

LOCKLESS = frozenset({"g"})


def is_locking(batch: Any) -> bool:
    """True unless ``batch`` is a non-empty array of ``g`` commands only (lockless)."""
    if not isinstance(batch, list) or not batch:
        return True
    return not all(isinstance(c, dict) and c.get("a") in LOCKLESS for c in batch)


class ApiLocks:
    """The sessions with a locking request being processed.  Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: set[str] = set()

    def acquire(self, sid: str) -> bool:
        """Take the lock of ``sid``; False when another request of it holds it."""
        with self._lock:
            if sid in self._held:
                return False
            self._held.add(sid)
            return True

    def release(self, sid: str) -> None:
        with self._lock:
            self._held.discard(sid)
