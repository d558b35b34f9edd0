"""The listening sockets of the local MEGA server and their connection handler.

One ``Listener`` per role: ``api`` (commands, the ``sc`` poll, plain-http transfers, the
control endpoints), ``wait`` (the change feed's wait URLs, on their own port as on the real
service) and ``transfers`` (https transfer URLs with ``--tls``).  ``ThreadingHTTPServer`` gives
every connection its own thread, so parallel upload POSTs and long-polls proceed together;
HTTP/1.1 keep-alive is supported.  A TLS handshake happens in the connection's thread, never
in the accepting one.  Floods (issue 20): at most ``--max-connections`` connections are open per
listener (more are answered 503 and closed at once), and a request line with its headers must
arrive within ``--head-timeout`` seconds of its first byte (``HeadClock``); a connection
otherwise waits up to ``CONNECTION_TIMEOUT`` for each piece of data.  Every request is logged
once at DEBUG with session ids and URL tokens cut to six characters.
"""
from __future__ import annotations

import io
import logging
import mmap
import re
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ... import __version__
from ..app import App
from .request import Request
from .routes import dispatch

log = logging.getLogger(__name__)

BUFFER_MIN = 1 << 20        # transfer buffers: at least this, in steps of it
KEEP_BUFFER = 8 << 20       # free buffers up to this size are kept for the next requests
KEEP_FREE = 8               # at most this many
CONNECTION_TIMEOUT = 120    # seconds of socket silence before a connection is dropped
REQUEST_QUEUE = 256
REFUSAL_LOG_EVERY = 10.0    # seconds between warnings about refused connections
BUSY_ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
               b"Connection: close\r\n\r\n")
_SECRET_QUERY_RE = re.compile(r"(sid|c|d)=([^&]{6})[^&]*")
_TOKEN_PATH_RE = re.compile(r"/(ul|dl)/([^/?]{6})[^/?]*")
_PEER_GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, TimeoutError,
              ssl.SSLError)


def redact(path: str) -> str:
    """A request path safe to log: session ids and URL tokens cut to six characters."""
    path = _SECRET_QUERY_RE.sub(r"\1=\2...", path)
    return _TOKEN_PATH_RE.sub(r"/\1/\2...", path)


class BufferPool:
    """Transfer buffers lent to the requests in flight: anonymous private mmaps, so page-aligned
    (O_DIRECT), in steps of 1 MiB.  At most ``KEEP_FREE`` free buffers of up to
    ``KEEP_BUFFER`` bytes are kept, so memory follows the transfers in flight, not the idle
    kept-alive connections.  Buffers over 1 MiB (upload bodies: a request takes at most one)
    lent at once total at most ``budget`` bytes (``--upload-memory``): a request that would
    pass it waits until others give theirs back, so concurrent upload POSTs cannot exhaust
    memory (issue 20: 4 POSTs held 809 MB); one larger than the budget alone still proceeds.
    Thread-safe."""

    def __init__(self, budget: int = 1 << 62) -> None:
        self._lock = threading.Condition()
        self._free: list[mmap.mmap] = []
        self.budget = budget
        self.lent_big = 0           # bytes of buffers over BUFFER_MIN lent now

    def take(self, size: int) -> mmap.mmap:
        rounded = -(-max(size, BUFFER_MIN) // BUFFER_MIN) * BUFFER_MIN
        with self._lock:
            if rounded > BUFFER_MIN:
                while self.lent_big and self.lent_big + rounded > self.budget:
                    self._lock.wait()
            fits = [b for b in self._free if len(b) >= size]
            buf = min(fits, key=len) if fits else None
            if buf is not None:
                self._free.remove(buf)
            if max(rounded, len(buf) if buf is not None else 0) > BUFFER_MIN:
                self.lent_big += len(buf) if buf is not None else rounded
        return buf if buf is not None else mmap.mmap(-1, rounded, flags=mmap.MAP_PRIVATE)

    def give(self, buf: mmap.mmap) -> None:
        with self._lock:
            if len(buf) > BUFFER_MIN:
                self.lent_big -= len(buf)
                self._lock.notify_all()
            if len(buf) <= KEEP_BUFFER and len(self._free) < KEEP_FREE:
                self._free.append(buf)


class HeadClock(io.RawIOBase):
    """The socket reader under a handler's ``rfile``: while a request head is read it gives
    the client ``head_timeout`` seconds from the head's first byte (a slowloris sending a byte
    a second is cut off; an idle kept-alive connection still waits ``idle`` seconds for it);
    raises TimeoutError when the time is up."""

    def __init__(self, sock: socket.socket, idle: float, head_timeout: float) -> None:
        super().__init__()
        self.sock, self.idle, self.head_timeout = sock, idle, head_timeout
        self.reading_head = False
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def _late(self) -> TimeoutError:
        peer = self.sock.getpeername()[0] if self.sock.fileno() >= 0 else "?"
        log.warning("request head not complete within %g s from %s; closing the connection",
                    self.head_timeout, peer)
        return TimeoutError("request head not complete within %g s" % self.head_timeout)

    def start_head(self) -> None:
        self.reading_head, self.deadline = True, None

    def end_head(self) -> None:
        if self.reading_head:
            self.reading_head, self.deadline = False, None
            self.sock.settimeout(self.idle)

    def readinto(self, buf: Any) -> int:
        if self.reading_head and self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise self._late()
            self.sock.settimeout(min(left, self.idle))
        try:
            n = self.sock.recv_into(buf)
        except TimeoutError:
            if self.reading_head and self.deadline is not None:
                raise self._late() from None
            raise
        if n and self.reading_head and self.deadline is None:
            self.deadline = time.monotonic() + self.head_timeout
        return n


class Listener(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = REQUEST_QUEUE

    def __init__(self, host: str, port: int, app: App, role: str,
                 tls: ssl.SSLContext | None = None, buffers: BufferPool | None = None) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.app = app
        self.role = role
        self.tls = tls
        self.buffers = buffers or BufferPool(app.config.upload_memory)
        self.max_connections = app.config.max_connections
        self.head_timeout = app.config.head_timeout
        self._open = 0
        self._open_lock = threading.Lock()
        self._refused_logged = 0.0
        super().__init__((host, port), Handler)

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in its own thread, or refuse it (503) past the cap."""
        with self._open_lock:
            full = self._open >= self.max_connections
            if not full:
                self._open += 1
        if not full:
            super().process_request(request, client_address)
            return
        now = time.monotonic()
        if now - self._refused_logged > REFUSAL_LOG_EVERY:
            self._refused_logged = now
            log.warning("%s listener: %d connections open; refusing more (--max-connections)",
                        self.role, self.max_connections)
        try:
            if self.tls is None:
                request.setblocking(False)
                request.send(BUSY_ANSWER)
        except OSError:
            pass
        self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            self._serve_connection(request, client_address)
        finally:
            with self._open_lock:
                self._open -= 1

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            try:
                request.settimeout(self.head_timeout)     # the handshake, like a head
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address[0], exc)
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that goes away mid-request (a killed mount) is routine, not a traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, _PEER_GONE):
            log.debug("connection from %s ended early: %s", client_address[0], exc)
            return
        log.error("unhandled error serving %s", client_address[0], exc_info=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "megafs-serve/" + __version__
    sys_version = ""
    timeout = CONNECTION_TIMEOUT
    server: Listener

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY the second one waits
        # for the client's delayed ACK (measured on loopback: 44 ms per small request, under
        # 2 ms with it).
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.rfile.close()           # the stdlib's reader, replaced by one with a head deadline
        self.clock = HeadClock(self.connection, CONNECTION_TIMEOUT, self.server.head_timeout)
        self.rfile = io.BufferedReader(self.clock)

    def handle_one_request(self) -> None:
        self.clock.start_head()
        super().handle_one_request()

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass  # one line per request is written by _handle

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("http %s: %s", self.client_address[0], redact(format % args))

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        self.clock.end_head()
        started = time.monotonic()
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        req = Request(self, self.server, method, split.path, query)
        try:
            dispatch(self.server.app, req)
        finally:
            req.give_back()
            if req.close_connection:
                self.close_connection = True
            log.debug("%s %s %s %s -> %s, %d bytes, %.1f ms", self.server.role,
                      self.client_address[0], method, redact(self.path), req.status, req.sent,
                      (time.monotonic() - started) * 1000)
