"""The kept-alive connections of ``HttpPool`` (``api/http.py``), per host, and connections
opened ahead of requests about to go to a host (issue 23).

A burst of small files' POSTs (``writeback/posts.py``) needs as many connections as files
in flight; on a long round trip each new one costs two round trips (TCP and TLS handshakes)
before its POST.  ``preconnect`` opens them in the background while the burst is still being
written, and a request that finds no idle connection while some are being opened waits for
one of them (each opening serves one waiting request) instead of opening its own: measured
on the far profile of ``scripts/bench --wan`` (RTT 150 ms), POSTs that opened their own
beside the ones opened ahead doubled the TLS handshakes and made the burst slower than
without opening ahead.
"""
from __future__ import annotations

import http.client
import logging
import threading
import time
from typing import Callable

from ..errors import TransportError
from .apireq import short_error
from .wire import dropped

log = logging.getLogger(__name__)

HostKey = tuple[str, str, int]          # (scheme, host, port)


class IdleConnections:
    """Idle kept-alive connections, at most ``per_host`` per host, and the ones being opened
    ahead.  Thread-safe (one lock); never holds it during a connect."""

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._idle: dict[HostKey, list[http.client.HTTPConnection]] = {}
        self._opening: dict[HostKey, int] = {}     # being opened ahead
        self._waiting: dict[HostKey, int] = {}     # requests waiting for one of those
        self._closed = False

    def take(self, key: HostKey, wait: float) -> http.client.HTTPConnection | None:
        """An idle connection to ``key`` that is still open; else, while more connections
        are being opened ahead than requests wait for them, wait for one (at most ``wait``
        seconds); else None: the caller opens its own.  TransportError once closed."""
        deadline = time.monotonic() + wait
        with self._lock:
            while True:
                if self._closed:
                    raise TransportError("connection pool is closed")
                idle = self._idle.get(key)
                while idle:
                    conn = idle.pop()
                    if conn.sock is not None and not dropped(conn.sock):
                        return conn
                    conn.close()
                left = deadline - time.monotonic()
                if self._opening.get(key, 0) <= self._waiting.get(key, 0) or left <= 0:
                    return None
                self._waiting[key] = self._waiting.get(key, 0) + 1
                try:
                    self._ready.wait(left)
                finally:
                    self._waiting[key] -= 1

    def give(self, key: HostKey, conn: http.client.HTTPConnection) -> None:
        """Keep ``conn`` for the next request to ``key`` (closed if there are enough)."""
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if not self._closed and len(idle) < self.per_host:
                idle.append(conn)
                self._ready.notify()
                return
        conn.close()

    def preconnect(self, key: HostKey, count: int,
                   new: Callable[[HostKey], http.client.HTTPConnection],
                   timeout: float) -> int:
        """Open connections made by ``new(key)`` in the background, a thread each (at most
        ``timeout`` seconds to connect), until ``count`` are idle or being opened (at most
        ``per_host``); returns how many it started.  Never raises."""
        with self._lock:
            wanted = 0 if self._closed else (min(count, self.per_host) - self._opening.get(
                key, 0) - len(self._idle.get(key, ())))
            if wanted > 0:
                self._opening[key] = self._opening.get(key, 0) + wanted
        for _ in range(wanted):
            threading.Thread(target=self._open, args=(key, new, timeout), daemon=True,
                             name="megafs-preconnect").start()
        return max(0, wanted)

    def _open(self, key: HostKey, new: Callable[[HostKey], http.client.HTTPConnection],
              timeout: float) -> None:
        conn: http.client.HTTPConnection | None = None
        try:
            conn = new(key)
            conn.timeout = timeout
            conn.connect()
        except (OSError, http.client.HTTPException) as exc:
            log.debug("could not open a connection ahead to %s:%d: %s", key[1], key[2],
                      short_error(exc))
            if conn is not None:
                conn.close()
            conn = None
        finally:
            with self._lock:
                self._opening[key] -= 1
                if conn is None:
                    self._ready.notify_all()     # the waiters count again
        if conn is not None:
            self.give(key, conn)

    def counts(self) -> tuple[int, int]:
        """(idle, being opened) connections over all hosts."""
        with self._lock:
            return (sum(len(c) for c in self._idle.values()), sum(self._opening.values()))

    def close(self) -> None:
        """Close every idle connection; ``take`` raises from now on."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
            self._ready.notify_all()
        for conns in idle.values():
            for conn in conns:
                conn.close()
