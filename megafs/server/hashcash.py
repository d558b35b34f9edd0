"""The proof-of-work gate on logins: ``X-Hashcash`` challenges and the check of answers.

The real service answers a login with HTTP 402 and ``X-Hashcash: 1:EASINESS:TS:TOKEN``; the
client resends the same request with ``X-Hashcash: 1:TOKEN:PREFIX`` (protocol reference §1.7;
meganz/sdk src/hashcash.cpp).  Only an answer to a challenge this server issued, not older
than the policy's ``hashcash_ttl`` (the SDK's kTtl, 5 minutes), unlocks a request, and each
challenge works once.
Verifying costs one SHA-256 over 12 MiB (about 6 ms here).
"""
from __future__ import annotations

import secrets
import threading
import time

from .. import crypto
from .config import Policy

TOKEN_BYTES = 48
MAX_PENDING = 10000


class Hashcash:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[int, float]] = {}   # token b64 -> (easiness, issued)

    def challenge(self, easiness: int) -> str:
        token = crypto.b64encode(secrets.token_bytes(TOKEN_BYTES))
        now = time.monotonic()
        ttl = self.policy.hashcash_ttl
        with self._lock:
            for key in [k for k, (_, t) in self._pending.items() if now - t > ttl]:
                del self._pending[key]
            while len(self._pending) >= MAX_PENDING:
                del self._pending[next(iter(self._pending))]
            self._pending[token] = (easiness, now)
        return "1:%d:%d:%s" % (easiness, int(time.time()), token)

    def verify(self, header: str) -> str:
        """"ok" for a correct answer to a live challenge we issued (used up by this call),
        else why not: "malformed", "unknown", "expired" or "wrong"."""
        try:
            token_b64, prefix = crypto.parse_hashcash_answer(header)
            token = crypto.b64decode(token_b64)
        except ValueError:
            return "malformed"
        with self._lock:
            issued = self._pending.pop(token_b64, None)
        if issued is None or len(token) != TOKEN_BYTES:
            return "unknown"
        if time.monotonic() - issued[1] > self.policy.hashcash_ttl:
            return "expired"
        return "ok" if crypto.hashcash_check(token, issued[0], prefix) else "wrong"

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)
