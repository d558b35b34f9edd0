"""HTTP plumbing of the MEGA client: the connection pools for API requests and transfers.

Owns the ``requests`` sessions lent to API requests, the keep-alive ``http.client``
connections of the upload/download data path (bodies sent and read without copies), URL
redaction for logs, and the small thread helper the transfer engines use.  It knows nothing
about MEGA commands, accounts or keys.  Never logs a session id or a transfer URL's token:
every URL goes through ``redact_url``.
"""
from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
import ssl
import threading
from http import HTTPStatus
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlsplit

import requests

from ..errors import TransportError
from .apireq import (USER_AGENT, ApiReply, ReplyTooLarge, StaleConnection, api_exchange,
                     redact_url, short_error)
from .idle import IdleConnections
from .wire import TransferInterrupted, TransferStream

__all__ = ["ApiReply", "HttpPool", "redact_url", "short_error", "USER_AGENT"]

log = logging.getLogger(__name__)

# Request timeout, too many requests, and every server-side 5xx except the ones that will not
# change on a retry (501 not implemented, 505 version) or mean a quota (509, handled by callers).
HTTP_RETRY_STATUSES = frozenset({408, 429} | set(range(500, 600)) - {501, 505, 509})

# Transfer URLs that are gone: ask ``u``/``g`` for a new one (protocol reference §7.3, §8;
# meganz/sdk src/transferslot.cpp ``processRequestFailure``).
HTTP_DEAD_URL_STATUSES = frozenset({HTTPStatus.FORBIDDEN, HTTPStatus.NOT_FOUND, HTTPStatus.GONE})
HTTP_OVER_QUOTA = 509           # bandwidth over quota, with ``X-MEGA-Time-Left``

_ERROR_BODY = re.compile(rb"^\s*(-\d{1,4})\s*$")
ERROR_BODY_MAX = 8              # a transfer server's error body is a short negative number


def parse_error_body(body: bytes) -> int | None:
    """The MEGA error code of a transfer server's body (``-4``, ``-14\\n``...), else None."""
    match = _ERROR_BODY.match(body) if len(body) <= ERROR_BODY_MAX else None
    return int(match.group(1)) if match else None


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


DEFAULT_TIMEOUT = (10.0, 120.0)   # (connect, read) for cs; the SDK uses 120 s without data
# The most an API reply may hold (issue 20: a hostile server sent 1.2 GB).  Command replies
# are small (a `g`, a `p` of a batch of files: kilobytes); only a node listing (`f`) and the
# `sc` packets of a big change grow with the account: a file node megafs made is ~350 bytes of
# `f` (a folder less), so 1 GiB is ~3 million nodes (meganz/sdk reads `f` as a stream instead).
MAX_REPLY = 64 * 1048576
MAX_LISTING_REPLY = 1024 * 1048576


def new_http_session(pool: int = 4) -> requests.Session:
    sess = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(pool, 4),
                                            max_retries=0)
    sess.mount("http://", adapter)
    sess.mount("https://", adapter)
    sess.headers["User-Agent"] = USER_AGENT
    sess.verify = True  # certificate checks stay on, always
    return sess


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
# keep-alive connections kept per host: as many as small files' POSTs run at once
# (``writeback.posts``: up to 128 on a long round trip), so the next burst finds them open
_IDLE_PER_HOST = 128


def _host_key(parts: Any) -> tuple[str, str, int]:
    """(scheme, host, port) of a split http(s) URL: the key of its kept-alive connections."""
    return (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))


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

    Both pools grow to the number of concurrent requests; at most ``_IDLE_PER_HOST`` idle
    transfer connections are kept per host, and ``preconnect`` opens some ahead of requests
    about to go to a host.  Thread-safe; one lock guards the free lists.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[requests.Session] = []
        self._all: list[requests.Session] = []
        self._closed = False
        self._conns = IdleConnections(_IDLE_PER_HOST)    # kept alive, and opened ahead
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

    def request(self, method: str, url: str, *, data: bytes | None = None,
                headers: dict[str, str] | None = None,
                timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
                limit: int = MAX_REPLY, **kwargs: Any) -> "ApiReply":
        """One API request (``/cs``, ``sc``, wait URLs), its whole answer read: at most
        ``limit`` bytes, else ``ReplyTooLarge`` (a ``ProtocolError``) without reading more.

        Sent over the keep-alive ``http.client`` connections of the transfer path unless the
        environment sends the URL through a proxy (or other ``requests`` options are given):
        a ``requests`` round trip cost 0.47 ms of client CPU against 0.09 ms here (local
        server, 2 cores), and a mount sends two or three per small file (``u``, ``p``, ``l``).
        Failures raise the ``requests`` exceptions callers already handle:
        ``ConnectTimeout``/``ReadTimeout`` (both ``requests.Timeout``), ``SSLError`` and
        ``ConnectionError``.  A kept-alive connection that the server closed before answering
        is retried once at once on a new connection (what urllib3 does with a dropped pooled
        connection; every API request may be repeated: ``/cs`` batches keep their id).
        """
        parts = urlsplit(url)
        if kwargs or parts.scheme not in ("http", "https") or not parts.hostname \
                or self._via_proxy(parts.scheme, parts.netloc, url):
            return self._request_via_requests(method, url, data, headers, timeout, limit, kwargs)
        connect_timeout, read_timeout = (timeout if isinstance(timeout, tuple)
                                         else (timeout, timeout))
        host_key = _host_key(parts)
        target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        body = bytes(data) if data is not None else None
        for attempt in (1, 2):
            conn = self._take(host_key, connect_timeout or DEFAULT_TIMEOUT[0])
            reused = conn.sock is not None
            try:
                reply, reusable = api_exchange(conn, method, target, body, headers,
                                               connect_timeout, read_timeout, limit)
            except StaleConnection as exc:
                if not reused or attempt == 2:
                    raise requests.ConnectionError("%s: %s" % (
                        type(exc.__cause__).__name__, short_error(exc))) from None
                log.debug("kept-alive API connection closed by the server; sending again")
                continue
            if reusable:
                self._give(host_key, conn)
            else:
                conn.close()
            return reply
        raise AssertionError("unreachable")

    def _request_via_requests(self, method: str, url: str, data: bytes | None,
                              headers: dict[str, str] | None,
                              timeout: float | tuple[float, float], limit: int,
                              kwargs: dict[str, Any]) -> ApiReply:
        """``request`` through ``requests`` (proxies), the body streamed up to ``limit``."""
        with self.session() as sess:
            resp = sess.request(method, url, data=data, headers=headers, timeout=timeout,
                                stream=True, **kwargs)
            with resp:
                length = resp.headers.get("Content-Length", "")
                if length.isdigit() and int(length) > limit:
                    raise ReplyTooLarge(limit)
                content = bytearray()
                for piece in resp.iter_content(65536):
                    content += piece
                    if len(content) > limit:
                        raise ReplyTooLarge(limit)
                return ApiReply(resp.status_code, bytes(content), resp.headers)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sessions, self._all, self._free = self._all, [], []
        for sess in sessions:
            sess.close()
        self._conns.close()

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
            with self._stream_requests(method, url, body, headers, timeout) as proxied:
                yield proxied
            return
        host_key = _host_key(parts)
        conn = self._take(host_key, timeout[0])
        answer: TransferStream | None = None
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
            except ssl.SSLCertVerificationError as exc:
                # Not a network hiccup: the same certificate fails again on every retry.
                raise TransportError("%s: the transfer server's certificate is not trusted "
                                     "(%s)" % (redact_url(url), short_error(exc))) from None
            except (OSError, http.client.HTTPException) as exc:
                raise TransferInterrupted("%s: %s" % (type(exc).__name__, short_error(exc))) \
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

    def preconnect(self, url: str, count: int,
                   timeout: float = DEFAULT_TIMEOUT[0]) -> int:
        """Open connections to ``url``'s host in the background, a thread each (TCP and TLS
        handshakes, ``timeout`` s at most), until ``count`` are idle or being opened (at most
        ``_IDLE_PER_HOST``): requests about to go there skip those round trips.  Returns how
        many it started; never raises (a failed connection is dropped; a proxied or
        non-http(s) URL is left alone)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname \
                or self._via_proxy(parts.scheme, parts.netloc, url):
            return 0
        return self._conns.preconnect(_host_key(parts), count, self._new_connection, timeout)

    def _new_connection(self, host_key: tuple[str, str, int]) -> http.client.HTTPConnection:
        _scheme, host, port = host_key
        return (http.client.HTTPSConnection(host, port, context=self._ssl_context())
                if _scheme == "https" else http.client.HTTPConnection(host, port))

    def _take(self, host_key: tuple[str, str, int], wait: float) -> http.client.HTTPConnection:
        """A kept-alive connection, one being opened ahead (waited for at most ``wait``
        seconds: ``IdleConnections.take``), else a new one (not yet connected)."""
        return self._conns.take(host_key, wait) or self._new_connection(host_key)

    def _give(self, host_key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        self._conns.give(host_key, conn)

    def _ssl_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._ssl is None:
                bundle = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                          or requests.utils.DEFAULT_CA_BUNDLE_PATH)
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
                raise TransferInterrupted("%s: %s" % (type(exc).__name__, short_error(exc))) \
                    from None
            except requests.RequestException as exc:
                raise TransportError("%s: %s" % (type(exc).__name__, short_error(exc))) from None
            try:
                yield TransferStream(resp.raw, resp.status_code, resp.headers)
            finally:
                resp.close()
