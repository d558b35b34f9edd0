"""Counters of one server process, shown by ``GET /_megafs/stats``: requests per kind, commands
per name, ``/cs`` requests holding each command name (``requests_with``: how well a client
batches, e.g. 100 ``u`` in 2 requests), and named counters (faults fired, hashcash,
housekeeping).  Plain integers under one lock; nothing here is persistent."""
from __future__ import annotations

import threading
from typing import Any


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.commands: dict[str, int] = {}
        self.requests_with: dict[str, int] = {}
        self.counters: dict[str, int] = {}

    def request(self, kind: str) -> None:
        with self._lock:
            self.requests[kind] = self.requests.get(kind, 0) + 1

    def command(self, name: str) -> None:
        with self._lock:
            self.commands[name] = self.commands.get(name, 0) + 1

    def batch(self, names: list[str]) -> None:
        """One ``/cs`` request holding commands ``names``: count each name once."""
        with self._lock:
            for name in set(names):
                self.requests_with[name] = self.requests_with.get(name, 0) + 1

    def bump(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self.counters[counter] = self.counters.get(counter, 0) + n

    def get(self, counter: str) -> int:
        with self._lock:
            return self.counters.get(counter, 0)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": dict(self.requests), "commands": dict(self.commands),
                    "requests_with": dict(self.requests_with),
                    **dict(self.counters)}
