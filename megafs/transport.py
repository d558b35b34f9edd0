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

import contextlib
import errno as errno_
import http.client
import ipaddress
import json
import logging
import mmap
import os
import re
import secrets
import select
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import requests
import urllib3

from . import DEFAULT_API, crypto
from .errors import MegaError, MegafsError, ProtocolError, TransportError, error_from_result

log = logging.getLogger(__name__)

# Codes that mean "nothing was applied, send it again later".
BATCH_RETRY_CODES = frozenset({-3, -4})
COMMAND_RETRY_CODES = frozenset({-3, -18, -19})
# Request timeout, too many requests, and every server-side 5xx except the ones that will not
# change on a retry (501 not implemented, 505 version) or mean a quota (509, handled by callers).
HTTP_RETRY_STATUSES = frozenset({408, 429} | set(range(500, 600)) - {501, 505, 509})
ESID = -15

_jitter = secrets.SystemRandom()


# --------------------------------------------------------------------------------------------
# Configuration helpers
def resolve_api(api: str | None) -> str:
    """The API base URL: the argument, else ``$MEGAFS_API``, else ``megafs.DEFAULT_API``."""
    return normalise_api(api or os.environ.get("MEGAFS_API") or DEFAULT_API)


def normalise_api(api: str) -> str:
    """Lower-case scheme and host, drop a default port, exactly one trailing slash."""
    text = api.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MegafsError("API URL must be http:// or https://host/..., got %r" % text)
    host = parts.hostname.lower()
    if ":" in host:
        host = "[%s]" % host
    port = parts.port
    if port and not (parts.scheme == "http" and port == 80
                     or parts.scheme == "https" and port == 443):
        host += ":%d" % port
    path = parts.path.rstrip("/") + "/"
    return "%s://%s%s" % (parts.scheme, host, path)


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_SECRET_QUERY = re.compile(r"([?&](?:sid|n|esid|cauth)=)[^&#]*")
_LONG_SEGMENT = re.compile(r"/([A-Za-z0-9_\-]{6})[A-Za-z0-9_\-]{10,}")


def redact_url(url: str) -> str:
    """A URL that is safe to log: query values hidden, long path tokens shortened."""
    url = url.split("#", 1)[0]
    url = _SECRET_QUERY.sub(r"\1…", url)
    return _LONG_SEGMENT.sub(r"/\1…", url)


class _RedactingFilter(logging.Filter):
    """Rewrites urllib3's request log lines, which carry full URLs (sid, upload tokens)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact_url(arg) if isinstance(arg, str) else arg
                                for arg in record.args)
        elif isinstance(record.msg, str) and "://" in record.msg:
            record.msg = re.sub(r"\S+", lambda m: redact_url(m.group(0)), record.msg)
        return True


# urllib3 logs every request's path at DEBUG; keep sids and tokens out of them even when an
# application turns DEBUG on for everything.
logging.getLogger("urllib3.connectionpool").addFilter(_RedactingFilter())


# --------------------------------------------------------------------------------------------
# Retry policy
@dataclass
class RetryPolicy:
    """Capped exponential backoff with jitter, and when to give up.

    Delay before retry n (1-based) is ``min(cap, initial * 2**(n-1))`` plus a uniform jitter of
    up to half of that (as the MEGA SDK's BackoffTimer does).  Retries stop once
    ``give_up_after`` seconds have passed since the first attempt.
    """

    initial: float = 0.1
    cap: float = 30.0
    give_up_after: float = 300.0
    debug_attempts: int = 2      # retries logged at DEBUG
    info_attempts: int = 5       # then INFO up to this retry, WARNING after

    @classmethod
    def from_env(cls) -> "RetryPolicy":
        policy = cls()
        value = os.environ.get("MEGAFS_RETRY_SECONDS")
        if value:
            try:
                policy.give_up_after = max(0.0, float(value))
            except ValueError:
                raise MegafsError("MEGAFS_RETRY_SECONDS must be a number of seconds") from None
        return policy

    def base(self, attempt: int) -> float:
        return min(self.cap, self.initial * (2 ** max(0, min(attempt - 1, 60))))

    def delay(self, attempt: int) -> float:
        base = self.base(attempt)
        return base + _jitter.uniform(0, base / 2)

    def level(self, attempt: int) -> int:
        if attempt <= self.debug_attempts:
            return logging.DEBUG
        if attempt <= self.info_attempts:
            return logging.INFO
        return logging.WARNING


class Backoff:
    """One operation's retry state: call ``wait(reason)`` before each retry."""

    def __init__(self, policy: RetryPolicy, what: str,
                 cancel: threading.Event | None = None) -> None:
        self.policy = policy
        self.what = what
        self.cancel = cancel
        self.start = time.monotonic()
        self.attempt = 0

    def remaining(self) -> float:
        return self.policy.give_up_after - (time.monotonic() - self.start)

    def wait(self, reason: str, error: MegafsError | None = None) -> None:
        """Sleep before the next retry, or raise ``error`` (or TransportError) if out of time."""
        self.attempt += 1
        delay = self.policy.delay(self.attempt)
        if self.remaining() < delay:
            if error is None:
                error = TransportError("%s failed after %d attempt(s) in %.0f s: %s"
                                       % (self.what, self.attempt,
                                          time.monotonic() - self.start, reason))
            raise error
        log.log(self.policy.level(self.attempt), "%s: %s; retry %d in %.2f s",
                self.what, reason, self.attempt, delay)
        if self.cancel is not None:
            if self.cancel.wait(delay):
                raise Cancelled("%s cancelled" % self.what)
        else:
            time.sleep(delay)


class Cancelled(MegafsError):
    """The caller's cancel event was set."""

    errno = errno_.ECANCELED


# --------------------------------------------------------------------------------------------
DEFAULT_TIMEOUT = (10.0, 120.0)   # (connect, read) for cs; the SDK uses 120 s without data
USER_AGENT = "megafs/0.1"


def new_http_session(pool: int = 4) -> requests.Session:
    sess = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(pool, 4),
                                            max_retries=0)
    sess.mount("http://", adapter)
    sess.mount("https://", adapter)
    sess.headers["User-Agent"] = USER_AGENT
    sess.verify = True  # certificate checks stay on, always
    return sess


def run_workers(target: Callable[[], None], count: int, name: str,
                stop: threading.Event) -> None:
    """Run ``target`` on ``count`` threads (inline when 1) and wait for all of them.

    If the wait is interrupted (e.g. KeyboardInterrupt), ``stop`` is set so the workers finish
    quickly, they are joined, and the interruption propagates.
    """
    if count == 1:
        target()      # one span or one connection: no thread to start
        return
    workers = [threading.Thread(target=target, daemon=True, name="%s-%d" % (name, i))
               for i in range(count)]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join()
    except BaseException:
        stop.set()
        for worker in workers:
            worker.join()
        raise


class TransferInterrupted(TransportError):
    """A transfer request failed on the wire (connect, send, timeout, connection lost).

    Always worth a retry.  ``short`` is true when the connection ended in the middle of the
    response body (the server promised more bytes than it sent).
    """

    def __init__(self, reason: str, *, short: bool = False) -> None:
        super().__init__(reason)
        self.short = short


@dataclass
class TransferReply:
    """The answer to ``HttpPool.transfer``: status, headers and the body.

    The body is in ``into[:length]`` when the caller passed a buffer (``body`` is then empty),
    else in ``body``.  ``overflow`` is true when the server sent more than fitted (the rest was
    not read and the connection was dropped).
    """

    status: int
    headers: Any                 # case-insensitive ``.get(name, default)``
    body: bytes = b""
    length: int = 0
    overflow: bool = False


SMALL_REPLY = 1 << 20        # bytes read from a transfer reply when no buffer is given
_IDLE_PER_HOST = 16          # keep-alive connections kept per host


def transfer_buffer(size: int) -> mmap.mmap:
    """A page-aligned buffer for transfer data (anonymous private mmap, writable, zeroed).

    The kernel copies into 16-byte-aligned buffers (which is what ``bytearray`` gives) up to 5x
    slower on this AMD EPYC (``rep movsb`` with the destination 16 bytes off a 32-byte
    boundary): ``preadv`` of 1 GiB from the page cache took 0.5 s into a bytearray and 0.1 s
    into a page-aligned buffer, 21% of an upload's client CPU.  O_DIRECT needs the alignment
    too.
    """
    return mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE)


def _dropped(sock: Any) -> bool:
    """True if an idle keep-alive socket was closed by the server (readable means EOF/junk)."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class HttpPool:
    """Connections for the API (``requests``) and for transfers (``http.client``).

    ``request`` lends a ``requests.Session`` from a free list to each request in flight:
    ``requests.Session`` is not documented as thread-safe, so no two threads use one at the same
    time, and returning sessions to the free list keeps their keep-alive connections.

    ``stream``/``transfer`` are the data path of uploads and downloads: a free list of
    keep-alive ``http.client`` connections per host, the request body sent straight from the
    caller's buffer (``sendall`` of a memoryview) and the response body read with ``readinto``
    into the caller's buffer.  Through ``requests`` every body was copied several times
    (``content`` reads 10 KiB pieces and joins them; urllib3 and http.client copy again): with
    those copies a 1 GiB download cost the client 13 s of CPU and an upload 9.4 s, against about
    3 s of AES-CTR + CBC-MAC.  A URL that the environment sends through a proxy
    (``HTTP(S)_PROXY``/``NO_PROXY``) goes through ``requests`` instead, which knows proxies.
    Certificates are always verified (``REQUESTS_CA_BUNDLE`` or certifi, as requests does).

    Both pools grow to the number of concurrent requests; at most 16 idle transfer connections
    are kept per host.  Thread-safe; one lock guards the free lists.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[requests.Session] = []
        self._all: list[requests.Session] = []
        self._closed = False
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._proxied: dict[tuple[str, str], bool] = {}
        self._ssl: ssl.SSLContext | None = None

    @contextlib.contextmanager
    def session(self) -> Iterator[requests.Session]:
        with self._lock:
            if self._closed:
                raise TransportError("connection pool is closed")
            sess = self._free.pop() if self._free else None
            if sess is None:
                sess = new_http_session()
                self._all.append(sess)
        try:
            yield sess
        finally:
            with self._lock:
                if self._closed:
                    sess.close()
                else:
                    self._free.append(sess)

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        with self.session() as sess:
            return sess.request(method, url, **kwargs)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sessions, self._all, self._free = self._all, [], []
            idle, self._idle = self._idle, {}
        for sess in sessions:
            sess.close()
        for conns in idle.values():
            for conn in conns:
                conn.close()

    # --- transfers ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def stream(self, method: str, url: str, *, body: Any = None,
               headers: dict[str, str] | None = None,
               timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> Iterator["TransferStream"]:
        """Send one upload or download request; yield the answer with its body still unread.

        ``body`` is a bytes-like object, sent without a copy.  The caller reads the answer's
        body with ``readinto``/``read``; the connection goes back to the pool only if the body
        was read to its end.  Wire failures raise ``TransferInterrupted`` (here or from the
        reads); HTTP error statuses are answers, not exceptions.  ``ValueError`` for a URL that
        is not http(s).
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL")
        if self._via_proxy(parts.scheme, parts.netloc, url):
            with self._stream_requests(method, url, body, headers, timeout) as answer:
                yield answer
            return
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host_key = (parts.scheme, parts.hostname, port)
        conn = self._take(host_key)
        answer = None
        try:
            try:
                if conn.sock is None:
                    conn.timeout = timeout[0]
                    conn.connect()
                conn.sock.settimeout(timeout[1])
                target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
                conn.putrequest(method, target, skip_accept_encoding=True)
                conn.putheader("User-Agent", USER_AGENT)
                for name, value in (headers or {}).items():
                    conn.putheader(name, value)
                size = memoryview(body).nbytes if body is not None else 0
                if body is not None or method in ("POST", "PUT"):
                    conn.putheader("Content-Length", str(size))
                conn.endheaders(body if size else None)
                answer = TransferStream(conn.getresponse())
            except (OSError, http.client.HTTPException) as exc:
                raise TransferInterrupted("%s: %s" % (type(exc).__name__, _short(exc))) \
                    from None
            yield answer
        finally:
            if answer is not None and answer.finished():
                self._give(host_key, conn)
            else:
                conn.close()

    def transfer(self, method: str, url: str, *, body: Any = None, into: Any = None,
                 headers: dict[str, str] | None = None,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> TransferReply:
        """``stream`` with the whole answer read: into ``into`` (a writable buffer) if given,
        else (up to 1 MiB) into ``TransferReply.body``."""
        with self.stream(method, url, body=body, headers=headers, timeout=timeout) as answer:
            reply = TransferReply(answer.status, answer.headers)
            if into is not None:
                view = memoryview(into).cast("B")
                expected = answer.length
                cap = len(view) if expected is None else min(len(view), expected)
                reply.length = answer.readinto(view[:cap])
            else:
                reply.body = answer.read(SMALL_REPLY)
            reply.overflow = not answer.at_end()
            return reply

    def _take(self, host_key: tuple[str, str, int]) -> http.client.HTTPConnection:
        with self._lock:
            if self._closed:
                raise TransportError("connection pool is closed")
            idle = self._idle.get(host_key)
            while idle:
                conn = idle.pop()
                if conn.sock is not None and not _dropped(conn.sock):
                    return conn
                conn.close()
        scheme, host, port = host_key
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, context=self._ssl_context())
        return http.client.HTTPConnection(host, port)

    def _give(self, host_key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(host_key, [])
            if not self._closed and len(idle) < _IDLE_PER_HOST:
                idle.append(conn)
                return
        conn.close()

    def _ssl_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._ssl is None:
                bundle = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                          or requests.certs.where())
                if os.path.isdir(bundle):
                    self._ssl = ssl.create_default_context(capath=bundle)
                else:
                    self._ssl = ssl.create_default_context(cafile=bundle)
            return self._ssl

    def _via_proxy(self, scheme: str, netloc: str, url: str) -> bool:
        with self._lock:
            known = self._proxied.get((scheme, netloc))
        if known is None:
            proxies = requests.utils.get_environ_proxies(url)
            known = bool(proxies and requests.utils.select_proxy(url, proxies))
            with self._lock:
                self._proxied[(scheme, netloc)] = known
        return known

    @contextlib.contextmanager
    def _stream_requests(self, method: str, url: str, body: Any,
                         headers: dict[str, str] | None,
                         timeout: tuple[float, float]) -> Iterator["TransferStream"]:
        """``stream`` through ``requests`` (for proxies): same contract, with copies."""
        data = bytes(body) if body is not None else None
        with self.session() as sess:
            try:
                resp = sess.request(method, url, data=data, headers=headers, timeout=timeout,
                                    stream=True)
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise TransferInterrupted("%s: %s" % (type(exc).__name__, _short(exc))) \
                    from None
            except requests.RequestException as exc:
                raise TransportError("%s: %s" % (type(exc).__name__, _short(exc))) from None
            try:
                yield TransferStream(resp.raw, resp.status_code, resp.headers)
            finally:
                resp.close()


class TransferStream:
    """The answer to a transfer request: status, headers, and a body read by the caller."""

    def __init__(self, resp: Any, status: int | None = None, headers: Any = None) -> None:
        self._resp = resp          # http.client.HTTPResponse or urllib3's HTTPResponse
        self.status: int = resp.status if status is None else status
        self.headers: Any = resp.headers if headers is None else headers
        length = self.headers.get("Content-Length")
        self.length: int | None = int(length) if length and length.isdigit() else None
        self._got = 0
        self._eof = False

    def readinto(self, view: memoryview) -> int:
        """Fill ``view`` from the body; fewer bytes only where the body ends.

        ``TransferInterrupted(short=True)`` if the connection ends (or fails) before the
        announced length.
        """
        got = 0
        try:
            while got < len(view):
                n = self._resp.readinto(view[got:])
                if not n:
                    self._eof = True
                    break
                got += n
        except (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError) as exc:
            raise TransferInterrupted("connection lost in the reply body (%s)"
                                      % type(exc).__name__, short=True) from None
        self._got += got
        if self._eof and self.length is not None and self._got < self.length:
            raise TransferInterrupted("connection lost in the reply body (%d of %d bytes)"
                                      % (self._got, self.length), short=True)
        return got

    def read(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of the body (for small answers: tokens, error codes)."""
        buf = bytearray(limit if self.length is None else min(limit, self.length - self._got))
        n = self.readinto(memoryview(buf))
        return bytes(buf[:n])

    def at_end(self) -> bool:
        """True once the whole body has been read."""
        if self.length is not None:
            return self._got >= self.length
        if not self._eof:
            try:  # peek: a body of unknown length ends at EOF
                self._eof = not self._resp.read(1)
            except (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError):
                return False
        return self._eof

    def finished(self) -> bool:
        """The body was read to its end, so the connection can carry another request."""
        if self.length is None or self._got < self.length:
            return False
        closed = getattr(self._resp, "isclosed", None)
        if closed is None:
            return True
        if not closed():
            try:  # nothing is left, but http.client only marks the answer done on a read
                self._resp.read()
            except (OSError, http.client.HTTPException):
                return False
        return bool(closed())


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
        self.api = resolve_api(api)
        if urlsplit(self.api).scheme == "http" and not is_loopback(self.api):
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
                backoff.wait("%s: %s" % (type(exc).__name__, _short(exc)))
                continue
            except requests.RequestException as exc:
                raise TransportError("%s: %s" % (what, _short(exc))) from exc
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
                backoff.wait("%s: %s" % (type(exc).__name__, _short(exc)))
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
            log.debug("sc wait %s: %s", redact_url(wait_url), _short(exc))
            # Do not spin if the wait URL fails fast.
            time.sleep(min(1.0, max(0.0, remaining)))


def _short(exc: BaseException) -> str:
    """An exception message without URLs (requests puts the full URL, sid included, in them)."""
    text = str(exc)
    text = re.sub(r"https?://\S+", lambda m: redact_url(m.group(0)), text)
    text = re.sub(r"(sid|n|sn)=[^&\s'\")]+", r"\1=…", text)
    return text[:200]
