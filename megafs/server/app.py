"""The server application object: configuration, state, fault rules, counters and hashcash.

``App`` ties together what one ``megafs serve`` process holds; ``http.py`` serves it over
HTTP and ``cli.py`` builds it from the command line.  Counters are plain integers under one
lock; the hashcash issuer remembers the challenges it handed out so that only a solved
challenge of ours unlocks a login request (each one once).
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import crypto
from .faults import Faults
from .state import State
from .transfers import Uploads

log = logging.getLogger(__name__)

DEFAULT_QUOTA = 20 * 1024 ** 3
DEFAULT_EASINESS = 255
DEFAULT_WAIT_TIMEOUT = 30.0
HASHCASH_TTL = 600.0
MAX_PENDING_CHALLENGES = 10000


@dataclass
class Config:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    quota: int = DEFAULT_QUOTA
    hashcash_easiness: int = DEFAULT_EASINESS
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT
    faults: list[dict] = field(default_factory=list)


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.commands: dict[str, int] = {}
        self.counters: dict[str, int] = {}

    def request(self, kind: str) -> None:
        with self._lock:
            self.requests[kind] = self.requests.get(kind, 0) + 1

    def command(self, name: str) -> None:
        with self._lock:
            self.commands[name] = self.commands.get(name, 0) + 1

    def bump(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self.counters[counter] = self.counters.get(counter, 0) + n

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": dict(self.requests), "commands": dict(self.commands),
                    **dict(self.counters)}


class Hashcash:
    """Issues ``X-Hashcash`` challenges and checks answers against the ones issued."""

    def __init__(self, default_easiness: int) -> None:
        self.default_easiness = default_easiness
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[int, float]] = {}   # token b64 -> (easiness, issued)

    def challenge(self, easiness: int | None) -> str:
        e = self.default_easiness if easiness is None else easiness
        token = crypto.b64encode(secrets.token_bytes(48))
        now = time.monotonic()
        with self._lock:
            if len(self._pending) >= MAX_PENDING_CHALLENGES:
                for key in [k for k, (_, t) in self._pending.items() if now - t > HASHCASH_TTL]:
                    del self._pending[key]
                while len(self._pending) >= MAX_PENDING_CHALLENGES:
                    del self._pending[next(iter(self._pending))]
            self._pending[token] = (e, now)
        return "1:%d:%d:%s" % (e, int(time.time()), token)

    def verify(self, header: str) -> bool:
        """True for a correct answer to a challenge we issued (each challenge works once)."""
        try:
            token_b64, prefix = crypto.parse_hashcash_answer(header)
            token = crypto.b64decode(token_b64)
        except ValueError:
            return False
        with self._lock:
            issued = self._pending.pop(token_b64, None)
        if issued is None or time.monotonic() - issued[1] > HASHCASH_TTL or len(token) != 48:
            return False
        return crypto.hashcash_check(token, issued[0], prefix)


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = State(config.data_dir, config.quota)
        self.faults = Faults(config.faults)
        self.stats = Stats()
        self.hashcash = Hashcash(config.hashcash_easiness)
        self.uploads = Uploads(self.state)
        self.base_url = ""          # set once the socket is bound
        self.closing = False        # set by stop(): requests still arriving are dropped

    def set_quota(self, nbytes: int, user: str | None = None) -> bool:
        with self.state.transaction() as tx:
            if user is not None:
                if tx.account(user) is None:
                    return False
                tx.execute("UPDATE accounts SET quota=? WHERE uh=?", (nbytes, user))
            else:
                self.state.default_quota = nbytes
                tx.execute("UPDATE accounts SET quota=NULL")
        log.info("quota set to %d bytes for %s", nbytes, user or "every account")
        return True

    def stats_snapshot(self) -> dict[str, Any]:
        out = self.stats.snapshot()
        out["faults"] = self.faults.snapshot()
        out["uploads_completed"] = self.uploads.completed
        out["upload_bytes"] = self.uploads.bytes_received
        out["state"] = self.state.counts()
        return out

    def stop(self) -> None:
        self.closing = True
        self.state.stop_waiters()

    def close(self) -> None:
        self.state.close()
