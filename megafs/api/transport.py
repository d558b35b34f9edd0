"""HTTP transport to the MEGA API: command batches on ``/cs``, the ``/sc`` long-poll, retries.

Owns the ``requests`` sessions (through ``HttpPool``), the batch sequence id, the retry policy
of API requests, the hashcash (HTTP 402) handshake and request timeouts.  It knows nothing
about accounts or keys: the session id comes from a callable and an ``on_bad_session`` hook
re-logs in on ``-15``.

Rules it keeps (protocol reference §1):
* one new sequence ``id`` per new batch; every retry resends the *identical* body under the
  *same* ``id`` (and the same sid), so a server that applied a batch but lost the reply replays
  its cached answer instead of applying it twice;
* what to do about an error code is decided by ``errors.classify`` alone; transient errors
  (batch-level ``-3``/``-4``/``-18``/``-19``, HTTP 5xx/429, connection errors, timeouts) are
  retried with ``retry.Backoff`` until ``RetryPolicy.give_up_after`` seconds have passed, and
  ``-4``/HTTP 429 start their back-off near a second (``RetryPolicy.slow_initial``); any other
  batch-level error is raised as ``MegaError`` for the whole batch;
* per-command results are checked one by one: a negative int or ``{"err": n}`` becomes a
  ``MegaError`` in that slot; per-command transient codes ("not applied, try again") are
  resent by their own caller in a *new* batch (new id) holding only those commands.  The
  caller's ``Backoff`` covers these resends; a request sent through the lane has its own
  ``Backoff`` of the same policy for its batch-level retries (the direct paths share one);
* one locking lane per session (``api.lane``, as meganz/sdk ``RequestDispatcher``): at most
  one request of the session that reads or changes account state is in flight, what other
  threads submit meanwhile goes out combined in the next one; batches of only ``g``
  (lockless), anonymous batches and batches sent before there is a session go straight out;
* a body that is not JSON, not an array, or of the wrong length is a ``ProtocolError``;
* a 402 challenge is solved on every core (``api.hashcash``) for as long as it takes (until
  ``cancel``); an answer found after the challenge's life is sent anyway, and a fresh 402
  to it is solved again: only answers sent in time count towards ``max_hashcash``;
* the ``sc`` wait URL (on another host in reality) failing fast never turns into a storm of
  ``sc`` requests: after a failed or empty wait, no ``sc`` poll is sent before a back-off
  (1 s doubling to 30 s, like the web client's keep-alive stream), whoever calls ``poll``.

Never logs a session id, a key or a transfer URL's token: every URL goes through ``redact_url``.
"""
from __future__ import annotations

import collections
import json
import logging
import secrets
import threading
import time
from http import HTTPStatus
from typing import Any, Callable
from urllib.parse import urlsplit

import requests

from .. import config
from ..errors import (MegaError, ProtocolError, TransportError, Verdict, classify,
                      error_from_result, slows_down)
from ..retry import Backoff, RetryPolicy
from . import hashcash
from .apireq import parse_reply, untrusted_certificate
from .http import (DEFAULT_TIMEOUT, HTTP_RETRY_STATUSES, MAX_LISTING_REPLY, MAX_REPLY, HttpPool,
                   redact_url, short_error)
from .lane import Lane, is_lockless
from .probe import take_spare

log = logging.getLogger(__name__)

# After a failed or empty wait on the sc wait URL, no sc poll is sent for 1 s, doubling to
# 30 s while it keeps failing.  The web client's keep-alive stream restarts after 1-5 s,
# doubling to 40 s on errors and to 4 s when a connection ends within 1.5 s
# (meganz/webclient js/utils/api.js ``MEGAKeepAliveStream.schedule``).
WAIT_RETRY = RetryPolicy(initial=1.0, cap=30.0, give_up_after=float("inf"),
                         debug_attempts=1, info_attempts=4)
QUICK_WAIT = 1.0            # a wait that returns sooner than this without news is "empty"

_CONNECTION_ERRORS = (requests.ConnectionError, requests.Timeout,
                      requests.exceptions.ChunkedEncodingError)


def _refuse_untrusted(exc: BaseException, what: str) -> None:
    """Raise TransportError at once for a certificate the system does not trust: retrying
    for ``$MEGAFS_RETRY_SECONDS`` would only fail the same way."""
    if untrusted_certificate(exc):
        raise TransportError("%s: the API server's certificate is not trusted (%s); for a "
                             "private CA, set REQUESTS_CA_BUNDLE to its certificate"
                             % (what, short_error(exc))) from None


class Transport:
    """Command batches and the sc long-poll against one API base URL.  Thread-safe.

    Locking contract: the shared mutable state is the sequence counter (``_lock``), the sc
    wait back-off (``_wait_lock``), the ``HttpPool`` (its own lock) and the session's locking
    ``lane`` (its own condition): a locking batch waits while another request of the session
    is in flight and is then sent, combined with the others that waited, by one of the waiting
    callers (``api.lane``); lockless (``g``) and anonymous batches are sent on the calling
    thread and never wait on each other.
    ``sid`` is read through ``sid_source`` at every (re)send, so a re-login by one thread is
    picked up by the others' retries.
    """

    def __init__(self, api: str | None = None, *, retry: RetryPolicy | None = None,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 sid_source: Callable[[], str | None] | None = None,
                 on_bad_session: Callable[[str | None], None] | None = None,
                 max_hashcash: int = 5,
                 hashcash_workers: int | None = None,
                 https_transfers: bool | None = None) -> None:
        self.api = config.resolve_api(api)
        # Ask `u`/`g` for https transfer URLs (``ssl: 2``): by default when the API itself is
        # https, as the web client does; the SDK leaves it to the app (``useHttpsOnly``), the
        # data being encrypted anyway.  Certificates are always checked (``HttpPool``).
        self.https_transfers = urlsplit(self.api).scheme == "https" if https_transfers is None \
            else https_transfers
        if urlsplit(self.api).scheme == "http" and not config.is_loopback(self.api):
            log.warning("API URL %s uses plain http on a non-loopback host: session ids travel "
                        "unencrypted", redact_url(self.api))
        self.retry = retry or RetryPolicy.from_env()
        self.timeout = timeout
        self.sid_source = sid_source or (lambda: None)
        self.on_bad_session = on_bad_session
        self.max_hashcash = max_hashcash
        self.hashcash_workers = hashcash_workers
        self._lock = threading.Lock()
        self._seq = secrets.randbelow(1 << 30)
        self._wait_lock = threading.Lock()
        self._wait_backoff = Backoff(WAIT_RETRY, "sc wait")
        self._wait_resume = 0.0      # monotonic time before which no sc poll is sent
        self.pool = take_spare() or HttpPool()
        self._times: collections.deque[float] = collections.deque(maxlen=8)   # ``round_trip``
        # The session's locking lane (megafs/api/lane.py): one /cs request in flight at once.
        self.lane = Lane(lambda cmds, backoff: self._send_batch(cmds, False, backoff),
                         lambda: self.retry)

    # --- plumbing --------------------------------------------------------------------------
    def round_trip(self) -> float | None:
        """The shortest of the last 8 answered ``/cs`` requests (s): the API's round trip."""
        return min(self._times, default=None)

    def close(self) -> None:
        self.pool.close()

    def next_id(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def _cs_url(self, seq: int, sid: str | None) -> str:
        return "%scs?id=%d" % (self.api, seq) + ("&sid=" + sid if sid else "")

    def _sc_url(self, sn: str, sid: str | None) -> str:
        return "%ssc?sn=%s" % (self.api, sn) + ("&sid=" + sid if sid else "")

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

        Batch-level errors other than the transient ones raise MegaError.  Commands answered
        with a per-command transient code are resent (alone, in a new batch) until they get a
        real answer or the retry time runs out, in which case their slot holds the MegaError.
        """
        if not commands:
            return []
        results: list[Any] = [None] * len(commands)
        pending = list(range(len(commands)))
        backoff = Backoff(self.retry, "command batch", cancel)
        while True:
            answer = self._send([commands[i] for i in pending], anonymous, backoff)
            again: list[int] = []
            slow = False
            for index, value in zip(pending, answer):
                name = str(commands[index].get("a", "?"))
                error = error_from_result(value, "command %r" % name)
                results[index] = error if error is not None else value
                if error is not None and classify(error.code) is Verdict.TRANSIENT:
                    again.append(index)
                    slow = slow or slows_down(error.code)
            if not again:
                return results
            pending = again
            try:
                backoff.wait("%d command(s) answered %s" % (len(again), results[again[0]]),
                             slow=slow)
            except TransportError:
                return results  # the slots keep their transient MegaError

    def _send(self, commands: list[dict[str, Any]], anonymous: bool,
              backoff: Backoff) -> list[Any]:
        """Route one request: through the session's locking lane (combined with what other
        threads submit meanwhile), or straight out for an anonymous batch, a batch with no
        session yet, or a lockless batch made only of ``g`` (``api.lane``)."""
        if anonymous or is_lockless(commands) or not self.sid_source():
            return self._send_batch(commands, anonymous, backoff)
        return self.lane.submit(commands, backoff.cancel)

    def _send_batch(self, commands: list[dict[str, Any]], anonymous: bool,
                    backoff: Backoff) -> list[Any]:
        """POST one batch under one sequence id until it gets an answer; retries draw on the
        caller's ``backoff``."""
        body = json.dumps(commands, separators=(",", ":")).encode("utf-8")
        seq = self.next_id()
        names = ",".join(str(c.get("a", "?")) for c in commands[:5])
        what = "batch %d [%s%s]" % (seq, names, ",…" if len(commands) > 5 else "")
        backoff.what = what
        limit = MAX_LISTING_REPLY if any(c.get("a") == "f" for c in commands) else MAX_REPLY
        proof: str | None = None
        in_time = 0           # answers sent within the challenge's life
        relogged = False
        while True:
            sid = None if anonymous else self.sid_source()
            headers = {"Content-Type": "application/json"}
            if proof:
                headers["X-Hashcash"] = proof
            try:
                sent_at = time.monotonic()
                resp = self.pool.request("POST", self._cs_url(seq, sid), data=body,
                                         headers=headers, timeout=self.timeout, limit=limit)
                status, payload = resp.status_code, resp.content
                # -vv: every batch, with no URL (the sid is in it) and no body (keys)
                took = time.monotonic() - sent_at
                log.debug("%s: HTTP %d, %d bytes in %.3f s", what, status, len(payload), took)
                self._times.append(took)
                challenge = resp.headers.get("X-Hashcash")
            except _CONNECTION_ERRORS as exc:
                _refuse_untrusted(exc, what)
                backoff.wait("%s: %s" % (type(exc).__name__, short_error(exc)))
                continue
            except requests.RequestException as exc:
                raise TransportError("%s: %s" % (what, short_error(exc))) from exc
            if status == HTTPStatus.PAYMENT_REQUIRED and challenge:
                if in_time >= self.max_hashcash:
                    raise TransportError("%s: the server asked for proof of work %d times and "
                                         "refused every answer" % (what, in_time))
                proof, seconds = hashcash.solve_logged(what, challenge, self.hashcash_workers,
                                                       backoff.cancel, again=proof is not None)
                in_time += seconds <= hashcash.CHALLENGE_LIFE
                backoff.reset()        # the server answered: a solve is no failure streak
                continue
            if status in HTTP_RETRY_STATUSES:
                backoff.wait("HTTP %d" % status, slow=status == HTTPStatus.TOO_MANY_REQUESTS)
                continue
            if status != HTTPStatus.OK:
                raise TransportError("%s: HTTP %d from the API" % (what, status))
            value = parse_reply(payload, what)
            error = error_from_result(value, "batch")
            if error is not None:
                verdict = classify(error.code)
                if verdict is Verdict.TRANSIENT:
                    backoff.wait("batch answered %d %s" % (error.code, error.name), error,
                                 slow=slows_down(error.code))
                    continue
                if verdict is Verdict.RELOGIN and not anonymous and not relogged \
                        and self.on_bad_session is not None:
                    relogged = True
                    log.info("%s: session rejected (%d); logging in again", what, error.code)
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
        behind: reload with ``f``) and other permanent codes raise MegaError; ``-15`` logs in
        again once; transient codes are retried.  While the wait URL is failing, the sc poll
        is held back (see the module docstring), also across calls.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        backoff = Backoff(self.retry, "sc poll", cancel)
        relogged = False
        quick_wait = False
        while True:
            if not self._hold_off(deadline, cancel):
                return [], sn
            sid = self.sid_source()
            url = self._sc_url(sn, sid)
            try:
                resp = self.pool.request("POST", url, data=b"", timeout=self.timeout,
                                         limit=MAX_LISTING_REPLY)
            except _CONNECTION_ERRORS as exc:
                _refuse_untrusted(exc, "sc poll")
                backoff.wait("%s: %s" % (type(exc).__name__, short_error(exc)))
                continue
            if resp.status_code in HTTP_RETRY_STATUSES:
                backoff.wait("HTTP %d" % resp.status_code,
                             slow=resp.status_code == HTTPStatus.TOO_MANY_REQUESTS)
                continue
            if resp.status_code != HTTPStatus.OK:
                raise TransportError("sc poll: HTTP %d" % resp.status_code)
            value = parse_reply(resp.content, "sc poll")
            error = error_from_result(value, "sc poll")
            if error is not None:
                verdict = classify(error.code)
                if verdict is Verdict.TRANSIENT:
                    backoff.wait("sc answered %d" % error.code, error,
                                 slow=slows_down(error.code))
                    continue
                if verdict is Verdict.RELOGIN and not relogged \
                        and self.on_bad_session is not None:
                    relogged = True
                    self.on_bad_session(sid)
                    continue
                raise error
            packets, new_sn, wait_url = _parse_sc(value, sn)
            if packets:
                self._wait_succeeded()
                return packets, new_sn
            if wait_url is None:
                return [], new_sn
            if quick_wait:
                # The wait came back at once and still nothing is pending: a wait URL that
                # does not wait.  Hold the next request back as if it had failed.
                self._wait_failed("returned at once with no news")
            if not self._hold_off(deadline, cancel):
                return [], new_sn
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (cancel is not None and cancel.is_set()):
                return [], new_sn
            quick_wait = self._wait(wait_url, remaining)
            sn = new_sn

    def _wait(self, wait_url: str, remaining: float) -> bool:
        """Block on the wait URL until the server says something changed or time runs out.

        Returns True when it returned within ``QUICK_WAIT`` seconds (news, or a wait URL that
        does not wait: the next sc reply tells).  A failure holds back the next sc poll.
        """
        started = time.monotonic()
        try:
            resp = self.pool.request("GET", wait_url,
                                     timeout=(self.timeout[0], max(0.5, remaining)))
        except requests.Timeout:
            self._wait_succeeded()     # our own deadline: the normal end of a quiet wait
            return False
        except requests.RequestException as exc:
            self._wait_failed(short_error(exc))
            return False
        if resp.status_code != HTTPStatus.OK:
            self._wait_failed("HTTP %d" % resp.status_code)
            return False
        if time.monotonic() - started < QUICK_WAIT:
            return True
        self._wait_succeeded()
        return False

    def _wait_failed(self, reason: str) -> None:
        with self._wait_lock:
            delay = self._wait_backoff.next_delay()
            attempt = self._wait_backoff.attempt
            self._wait_resume = time.monotonic() + delay
        log.log(WAIT_RETRY.level(attempt), "sc wait: %s; next sc poll in %.1f s", reason, delay)

    def _wait_succeeded(self) -> None:
        with self._wait_lock:
            self._wait_backoff.reset()
            self._wait_resume = 0.0

    def _hold_off(self, deadline: float, cancel: threading.Event | None) -> bool:
        """Sleep until the wait back-off allows the next sc request (poll or wait); False if
        ``deadline`` (or ``cancel``) comes first."""
        with self._wait_lock:
            resume = self._wait_resume
        now = time.monotonic()
        if now >= resume:
            return True
        pause = min(resume, deadline) - now
        if cancel is not None:
            if cancel.wait(pause):
                return False
        else:
            time.sleep(pause)
        return resume <= deadline


def _parse_sc(value: Any, sn: str) -> tuple[list[dict[str, Any]], str, str | None]:
    """(packets, new sn, wait URL or None) from an sc reply; ProtocolError for junk."""
    if not isinstance(value, dict):
        raise ProtocolError("sc poll: reply is %s, not an object" % type(value).__name__)
    new_sn = value.get("sn", sn)
    if not isinstance(new_sn, str) or not new_sn:
        raise ProtocolError("sc poll: missing or bad sn")
    packets = value.get("a")
    if packets is not None and (not isinstance(packets, list)
                                or not all(isinstance(p, dict) for p in packets)):
        raise ProtocolError("sc poll: packets are not a list of objects")
    wait_url = value.get("w")
    if not isinstance(wait_url, str) or not wait_url:
        if packets is None:
            raise ProtocolError("sc poll: reply has neither packets nor a wait URL")
        wait_url = None
    return packets or [], new_sn, wait_url
