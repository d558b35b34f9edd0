"""Configuration of the local MEGA server: start-up settings (``Config``) and the policies that
may also change while it runs (``Policy``, set by command-line options or ``/_megafs/options``).

Defaults are the strict ones: what the real service does where that is known (sources in
``DESIGN.md``), the less forgiving choice where it is a guess.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_QUOTA = 20 * 1024 ** 3
# The SDK's own hashcash tests solve challenges of easiness 180 (meganz/sdk
# tests/unit/hashcash_test.cpp); about 310 SHA-256 passes over 12 MiB on average.
DEFAULT_EASINESS = 180
# A challenge lives about 5 minutes (meganz/sdk src/hashcash.cpp: kTtl = 300000 ms).
HASHCASH_TTL = 300.0
DEFAULT_WAIT_TIMEOUT = 30.0
DEFAULT_PACKET_LOG = 10000          # action packets kept per account (a guess)
DEFAULT_UPLOAD_IDLE = 3600.0        # an upload URL without a POST this long expires (a guess)
DEFAULT_COMPLETION_TTL = 3600.0     # an unused completion token lives this long (a guess)
DEFAULT_TRANSFER_WINDOW = 6 * 3600.0   # `uq` reports transfer use in six hourly buckets (`tah`)
MAX_SECONDS = 10 * 365 * 86400.0
# Wrong passwords (or 2FA codes) per email before `us` answers -6 "too many attempts", and the
# window they are counted in.  The web client waits an hour after a -6
# (meganz/webclient js/security.js ``sendAuthenticationKey``); the count is a guess.
DEFAULT_LOGIN_ATTEMPTS = 10
DEFAULT_LOGIN_WINDOW = 3600.0
# Floods (issue 20): open connections per listener (a mount uses a few dozen), and the time a
# client has for a request line and its headers once it sent the first byte (slowloris).
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_HEAD_TIMEOUT = 20.0
DEFAULT_UPLOAD_MEMORY = 512 << 20   # two of the largest upload POSTs (256 MiB) at once

DELETED_TARGET = ("rubbish", "enoent")
LATE_UPLOAD_POST = ("error", "token")


def _seconds(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) \
            or not 0 < value <= MAX_SECONDS:
        raise ValueError("must be a number of seconds > 0")
    return float(value)


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("must be an integer >= 0")
    return value


def _easiness(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
        raise ValueError("must be an easiness 0-255 (0: no challenge)")
    return value


def _choice(options: tuple[str, ...]):
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError("must be one of %s" % ", ".join(options))
        return str(value)
    return check


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _commands(value: Any) -> tuple[str, ...]:
    names_ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value)
    if not names_ok:
        raise ValueError("must be a list of command names")
    return tuple(value)


@dataclass
class Policy:
    """Behaviour that tests and users may switch while the server runs."""

    hashcash_easiness: int = DEFAULT_EASINESS     # login challenges; 0 = none
    # batches holding one of these are challenged: making an account (`up`) and logging in
    # (`us`), as the real service does since 2025-02 (gpailler/MegaApiClient#248)
    hashcash_commands: tuple[str, ...] = ("up", "us")
    hashcash_ttl: float = HASHCASH_TTL            # a challenge's life
    deleted_target: str = "rubbish"     # `p` into a deleted folder: Rubbish Bin, or -9
    temp_account_links: bool = True     # False: `l` from temporary accounts answers -11
    late_upload_post: str = "error"     # POST to a completed upload URL: -4, or the token again
    transfer_quota: int = 0             # download bytes per window and client address; 0 = off
    transfer_window: float = DEFAULT_TRANSFER_WINDOW
    packet_log: int = DEFAULT_PACKET_LOG
    snapshot_over: int = 0              # `f` of accounts over this many nodes: a snapshot
    upload_idle: float = DEFAULT_UPLOAD_IDLE
    completion_ttl: float = DEFAULT_COMPLETION_TTL
    login_attempts: int = DEFAULT_LOGIN_ATTEMPTS   # 0: no lockout
    login_window: float = DEFAULT_LOGIN_WINDOW
    api_lock: bool = True               # a 2nd overlapping locking /cs of one sid answers -3
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    CHECKS = {
        "hashcash_easiness": _easiness, "hashcash_commands": _commands,
        "hashcash_ttl": _seconds,
        "deleted_target": _choice(DELETED_TARGET), "temp_account_links": _flag,
        "late_upload_post": _choice(LATE_UPLOAD_POST), "transfer_quota": _count,
        "transfer_window": _seconds, "packet_log": _count, "snapshot_over": _count,
        "upload_idle": _seconds,
        "completion_ttl": _seconds, "login_attempts": _count, "login_window": _seconds,
        "api_lock": _flag,
    }

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Validate every change first, then apply them all; ValueError names the bad one."""
        checked = {}
        for key, value in changes.items():
            check = self.CHECKS.get(key)
            if check is None:
                raise ValueError("unknown option %r" % key)
            try:
                checked[key] = check(value)
            except ValueError as exc:
                raise ValueError("%s %s" % (key, exc)) from None
        with self._lock:
            for key, value in checked.items():
                setattr(self, key, value)
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_lock"}
        out["hashcash_commands"] = list(out["hashcash_commands"])
        return out


@dataclass
class Config:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    wait_port: int = 0            # the change feed's wait URLs are served on their own port
    tls: bool = False             # transfer URLs for `ssl` >= 1 are https (own port)
    tls_api: bool = False         # the API itself over TLS too
    tls_port: int = 0
    quota: int = DEFAULT_QUOTA
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT
    faults: list[dict] = field(default_factory=list)
    policy: Policy = field(default_factory=Policy)
    names: tuple[str, ...] = ()   # host names served besides addresses and localhost (--tls-name)
    max_connections: int = DEFAULT_MAX_CONNECTIONS   # open connections per listener
    head_timeout: float = DEFAULT_HEAD_TIMEOUT       # seconds for a request line and headers
    upload_memory: int = DEFAULT_UPLOAD_MEMORY       # bytes of upload bodies held at once
