"""HTTP transport to the MEGA API: command batches on ``/cs``, the ``/sc`` long-poll, retries.

Owns the ``requests`` sessions (one per thread), the batch sequence id, the retry policy, the
hashcash (HTTP 402) handshake and request timeouts.  It knows nothing about accounts or keys:
the session id comes from a callable and an ``on_bad_session`` hook re-logs in on ``-15``.

Rules it keeps (protocol reference §1):
* one new sequence ``id`` per new batch; every retry resends the *identical* body under the
  *same* ``id`` (and the same sid), so a server that applied a batch but lost the reply replays
  its cached answer instead of applying it twice;
* batch-level ``-3``/``-4``, HTTP 5xx/429, connection errors and timeouts are retried with capped
  exponential backoff plus jitter until ``RetryPolicy.give_up_after`` seconds have passed; any
  other batch-level error is raised as ``MegaError`` for the whole batch;
* per-command results are checked one by one: a negative int or ``{"err": n}`` becomes a
  ``MegaError`` in that slot; per-command ``-3``/``-18``/``-19`` ("not applied, try again") are
  resent in a *new* batch (new id) holding only those commands;
* a body that is not JSON, not an array, or of the wrong length is a ``ProtocolError``.

Never logs a session id, a key or a transfer URL's token: every URL goes through ``redact_url``.
"""
from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from typing import Any, Callable
from urllib.parse import urlsplit

import requests

from .. import config, crypto
from ..errors import MegaError, ProtocolError, TransportError, error_from_result
from ..retry import Backoff, RetryPolicy
from .http import (DEFAULT_TIMEOUT, HTTP_RETRY_STATUSES, HttpPool, redact_url, short_error)

log = logging.getLogger(__name__)

# Codes that mean "nothing was applied, send it again later".
BATCH_RETRY_CODES = frozenset({-3, -4})
COMMAND_RETRY_CODES = frozenset({-3, -18, -19})
ESID = -15


class Transport:
    """Command batches and the sc long-poll against one API base URL.  Thread-safe.

    Locking contract: the only shared mutable state is the sequence counter (``_lock``) and the
    ``HttpPool`` (its own lock); a batch is sent and retried entirely on the calling thread, so
    concurrent callers never wait on each other.  ``sid`` is read through ``sid_source`` at
    every (re)send, so a re-login by one thread is picked up by the others' retries.
    """

    def __init__(self, api: str | None = None, *, retry: RetryPolicy | None = None,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 sid_source: Callable[[], str | None] | None = None,
                 on_bad_session: Callable[[str | None], None] | None = None,
                 max_hashcash: int = 5) -> None:
        self.api = config.resolve_api(api)
        if urlsplit(self.api).scheme == "http" and not config.is_loopback(self.api):
            log.warning("API URL %s uses plain http on a non-loopback host: session ids travel "
                        "unencrypted", redact_url(self.api))
        self.retry = retry or RetryPolicy.from_env()
        self.timeout = timeout
        self.sid_source = sid_source or (lambda: None)
        self.on_bad_session = on_bad_session
        self.max_hashcash = max_hashcash
        self._lock = threading.Lock()
        self._seq = secrets.randbelow(1 << 30)
        self.pool = HttpPool()

    # --- plumbing --------------------------------------------------------------------------
    def close(self) -> None:
        self.pool.close()

    def next_id(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def _cs_url(self, seq: int, sid: str | None) -> str:
        url = "%scs?id=%d" % (self.api, seq)
        if sid:
            url += "&sid=" + sid
        return url

    # --- command channel -------------------------------------------------------------------
    def call(self, command: dict[str, Any], *, anonymous: bool = False) -> Any:
        """Send one command alone; return its result or raise its MegaError."""
        result = self.batch([command], anonymous=anonymous)[0]
        if isinstance(result, MegaError):
            raise result
        return result

    def batch(self, commands: list[dict[str, Any]], *, anonymous: bool = False,
              cancel: threading.Event | None = None) -> list[Any]:
        """Send commands in one batch; return one result or MegaError per command, in order.

        Batch-level errors other than the retried ones raise MegaError.  Commands answered with
        a per-command "try again" code are resent (alone, in a new batch) until they get a real
        answer or the retry time runs out, in which case their slot holds the MegaError.
        """
        if not commands:
            return []
        results: list[Any] = [None] * len(commands)
        pending = list(range(len(commands)))
        backoff = Backoff(self.retry, "command batch", cancel)
        while True:
            answer = self._send_batch([commands[i] for i in pending], anonymous, cancel)
            again = []
            for index, value in zip(pending, answer):
                name = str(commands[index].get("a", "?"))
                error = error_from_result(value, "command %r" % name)
                results[index] = error if error is not None else value
                if error is not None and error.code in COMMAND_RETRY_CODES:
                    again.append(index)
            if not again:
                return results
            pending = again
            try:
                backoff.wait("%d command(s) answered %s" % (len(again), results[again[0]]))
            except TransportError:
                return results  # the slots keep their retryable MegaError

    def _send_batch(self, commands: list[dict[str, Any]], anonymous: bool,
                    cancel: threading.Event | None) -> list[Any]:
        body = json.dumps(commands, separators=(",", ":")).encode("utf-8")
        seq = self.next_id()
        names = ",".join(str(c.get("a", "?")) for c in commands[:5])
        what = "batch %d [%s%s]" % (seq, names, ",…" if len(commands) > 5 else "")
        backoff = Backoff(self.retry, what, cancel)
        hashcash: str | None = None
        solved = 0
        relogged = False
        while True:
            sid = None if anonymous else self.sid_source()
            url = self._cs_url(seq, sid)
            headers = {"Content-Type": "application/json"}
            if hashcash:
                headers["X-Hashcash"] = hashcash
            try:
                resp = self.pool.request("POST", url, data=body, headers=headers,
                                         timeout=self.timeout)
                status, payload = resp.status_code, resp.content
                challenge = resp.headers.get("X-Hashcash")
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                backoff.wait("%s: %s" % (type(exc).__name__, short_error(exc)))
                continue
            except requests.RequestException as exc:
                raise TransportError("%s: %s" % (what, short_error(exc))) from exc
            if status == 402 and challenge:
                if solved >= self.max_hashcash:
                    raise TransportError("%s: server keeps demanding proof of work" % what)
                try:
                    hashcash = crypto.hashcash_solve(challenge)
                except ValueError as exc:
                    raise ProtocolError("%s: bad X-Hashcash challenge: %s" % (what, exc)) from exc
                solved += 1
                log.info("%s: solved a hashcash challenge", what)
                continue
            if status in HTTP_RETRY_STATUSES:
                backoff.wait("HTTP %d" % status)
                continue
            if status != 200:
                raise TransportError("%s: HTTP %d from the API" % (what, status))
            try:
                value = json.loads(payload)
            except ValueError:
                raise ProtocolError("%s: reply is not JSON (%d bytes)" % (what, len(payload))) \
                    from None
            error = error_from_result(value, "batch")
            if error is not None:
                if error.code in BATCH_RETRY_CODES:
                    backoff.wait("batch answered %d %s" % (error.code, error.name), error)
                    continue
                if error.code == ESID and not anonymous and not relogged \
                        and self.on_bad_session is not None:
                    relogged = True
                    log.info("%s: session rejected (-15); logging in again", what)
                    self.on_bad_session(sid)
                    continue
                raise error
            if not isinstance(value, list):
                raise ProtocolError("%s: reply is %s, not an array" % (what, type(value).__name__))
            if len(value) != len(commands):
                raise ProtocolError("%s: %d results for %d commands"
                                    % (what, len(value), len(commands)))
            return value

    # --- server-client channel ---------------------------------------------------------------
    def poll(self, sn: str, timeout: float,
             cancel: threading.Event | None = None) -> tuple[list[dict[str, Any]], str]:
        """Long-poll ``sc`` for action packets after ``sn``; return (packets, new sn).

        Returns ``([], sn)`` when nothing arrived within ``timeout`` seconds.  ``-6`` (too far
        behind: reload with ``f``) and ``-15`` raise MegaError; ``-3``/``-4`` are retried.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        backoff = Backoff(self.retry, "sc poll", cancel)
        relogged = False
        while True:
            sid = self.sid_source()
            url = "%ssc?sn=%s" % (self.api, sn) + ("&sid=" + sid if sid else "")
            try:
                resp = self.pool.request("POST", url, data=b"", timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                backoff.wait("%s: %s" % (type(exc).__name__, short_error(exc)))
                continue
            if resp.status_code in HTTP_RETRY_STATUSES:
                backoff.wait("HTTP %d" % resp.status_code)
                continue
            if resp.status_code != 200:
                raise TransportError("sc poll: HTTP %d" % resp.status_code)
            try:
                value = json.loads(resp.content)
            except ValueError:
                raise ProtocolError("sc poll: reply is not JSON") from None
            error = error_from_result(value, "sc poll")
            if error is not None:
                if error.code in BATCH_RETRY_CODES:
                    backoff.wait("sc answered %d" % error.code, error)
                    continue
                if error.code == ESID and not relogged and self.on_bad_session is not None:
                    relogged = True
                    self.on_bad_session(sid)
                    continue
                raise error
            if not isinstance(value, dict):
                raise ProtocolError("sc poll: reply is %s, not an object" % type(value).__name__)
            new_sn = value.get("sn", sn)
            if not isinstance(new_sn, str) or not new_sn:
                raise ProtocolError("sc poll: missing or bad sn")
            packets = value.get("a")
            if packets is not None:
                if not isinstance(packets, list) or not all(isinstance(p, dict) for p in packets):
                    raise ProtocolError("sc poll: packets are not a list of objects")
                if packets or "w" not in value:
                    return packets, new_sn
            wait_url = value.get("w")
            if not isinstance(wait_url, str) or not wait_url:
                if packets is not None:
                    return packets, new_sn
                raise ProtocolError("sc poll: reply has neither packets nor a wait URL")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return [], new_sn
            if cancel is not None and cancel.is_set():
                return [], new_sn
            self._wait(wait_url, remaining)
            sn = new_sn

    def _wait(self, wait_url: str, remaining: float) -> None:
        """Block on the wait URL until the server says something changed or time runs out."""
        try:
            self.pool.request("GET", wait_url, timeout=(self.timeout[0], max(0.5, remaining)))
        except requests.Timeout:
            return
        except requests.RequestException as exc:
            log.debug("sc wait %s: %s", redact_url(wait_url), short_error(exc))
            # Do not spin if the wait URL fails fast.
            time.sleep(min(1.0, max(0.0, remaining)))
