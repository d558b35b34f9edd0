"""The HTTP layer of the local MEGA server: routing, bodies, fault execution, request logs.

Routes (U = the base URL printed at start-up)::

    POST U/cs?id=..&sid=..         command batches (handlers.run_cs)
    POST U/ul/<token>/<offset>     upload data, optional ?c= / ?d= checksum (transfers.Uploads)
    GET  U/dl/<blob>               download: whole file, or with "Range: bytes=a-b"
    GET|POST U/dl/<blob>/<a>-<b>   download an inclusive range (POST with an empty body)
    POST U/sc?sn=..&sid=..         action packets, or {"w": wait URL, "sn": ..}
    GET|POST U/wsc/<uh>/<sn>       the wait URL: returns (empty body) once packets exist or
                                   after --wait-timeout seconds
    POST U/_megafs/faults          {"rules": [...]} replaces the fault rules (GET shows them)
    POST U/_megafs/quota           {"bytes": N [, "user": uh]} sets the storage quota
    GET  U/_megafs/stats           counters as JSON

``ThreadingHTTPServer`` gives every connection its own thread, so parallel upload POSTs and
long-polls proceed together; HTTP/1.1 keep-alive is supported (every answer has a
Content-Length).  Upload bodies are read with ``readinto`` into a page-aligned buffer lent by
the server's ``BufferPool``, and downloads are read into one and sent from it, so no request
allocates its body.  Every request is logged once at DEBUG with session ids and URL tokens
cut to six characters; nothing escapes as a traceback over HTTP: an unexpected exception is
logged at ERROR and answered ``-1`` (cs) or HTTP 500.  ``Content-Type`` is never required.
The control endpoints only answer clients on the loopback interface.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import mmap
import os
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .. import __version__
from . import handlers
from .app import App
from .faults import Decision, FaultRuleError
from .state import decode_sn
from .transfers import blob_size, open_blob, open_blob_direct, read_pieces

log = logging.getLogger(__name__)

CS_BODY_LIMIT = 64 << 20
UPLOAD_BODY_LIMIT = 256 << 20
SMALL_BODY_LIMIT = 1 << 20
BUFFER_MIN = 1 << 20        # transfer buffers: at least this, in steps of it
KEEP_BUFFER = 8 << 20       # free buffers up to this size are kept for the next requests
KEEP_FREE = 8               # at most this many
DOWNLOAD_PIECE = 1 << 20    # at least this many bytes read from the blob and sent per step
SCRATCH_BYTES = 1 << 20     # room for the upload checksum fold
JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
BINARY_TYPE = "application/octet-stream"
_HOST_RE = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_SECRET_QUERY_RE = re.compile(r"(sid|c|d)=([^&]{6})[^&]*")
_TOKEN_PATH_RE = re.compile(r"/(ul|dl)/([^/?]{6})[^/?]*")
_RANGE_RE = re.compile(r"^([0-9]{1,19})-([0-9]{0,19})$")
_RANGE_HEADER_RE = re.compile(r"^bytes=([0-9]{0,19})-([0-9]{0,19})$")


def redact(path: str) -> str:
    """A request path safe to log: session ids and URL tokens cut to six characters."""
    path = _SECRET_QUERY_RE.sub(r"\1=\2...", path)
    return _TOKEN_PATH_RE.sub(r"/\1/\2...", path)


class BadRequest(Exception):
    pass


class BufferPool:
    """Transfer buffers lent to the requests in flight: anonymous private mmaps, so page-aligned
    (O_DIRECT), in steps of 1 MiB.

    A request takes what it needs and ``_handle`` gives it back, so the memory follows the
    transfers in flight, not the (idle, kept-alive) connections; at most ``KEEP_FREE`` free
    buffers of up to ``KEEP_BUFFER`` bytes are kept.  Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[mmap.mmap] = []

    def take(self, size: int) -> mmap.mmap:
        with self._lock:
            fits = [b for b in self._free if len(b) >= size]
            if fits:
                buf = min(fits, key=len)
                self._free.remove(buf)
                return buf
        rounded = -(-max(size, BUFFER_MIN) // BUFFER_MIN) * BUFFER_MIN
        return mmap.mmap(-1, rounded, flags=mmap.MAP_PRIVATE)

    def give(self, buf: mmap.mmap) -> None:
        if len(buf) > KEEP_BUFFER:
            return
        with self._lock:
            if len(self._free) < KEEP_FREE:
                self._free.append(buf)


class MegaHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, host: str, port: int, app: App) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.app = app
        self.buffers = BufferPool()
        super().__init__((host, port), Handler)

    def handle_error(self, request, client_address) -> None:  # type: ignore[override]
        """A client that goes away mid-request (a killed mount) is routine, not a traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError,
                            TimeoutError)):
            log.debug("connection from %s ended early: %s", client_address[0], exc)
            return
        log.error("unhandled error serving %s", client_address[0], exc_info=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "megafs-serve/" + __version__
    sys_version = ""
    timeout = 120          # seconds of socket silence before a connection is dropped
    server: MegaHTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY the second one waits
        # for the client's delayed ACK (measured on loopback: 44 ms per small request, under
        # 2 ms with it).
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    # --- logging ---------------------------------------------------------------------------
    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass  # one line per request is written by _handle

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("http %s: %s", self.client_address[0], redact(format % args))

    # --- entry points ---------------------------------------------------------------------
    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        self._status: Any = "-"
        self._sent = 0
        self._headers_done = False
        self._lent: list[mmap.mmap] = []
        try:
            self._route(method)
        finally:
            for buf in self._lent:
                self.server.buffers.give(buf)
            self._lent = []

    def _route(self, method: str) -> None:
        started = time.monotonic()
        app = self.server.app
        split = urlsplit(self.path)
        parts = [p for p in split.path.split("/") if p]
        self.query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        kind = parts[0] if parts else ""
        if app.closing:
            # Shutting down: a request on a kept-alive connection gets no answer, as if the
            # server had already gone (clients retry), rather than touching closed state.
            self._drop()
            log.debug("dropped %s %s: shutting down", method, redact(self.path))
            return
        try:
            if kind == "cs" and len(parts) == 1 and method == "POST":
                self._cs()
            elif kind == "ul" and len(parts) in (2, 3) and method == "POST":
                self._upload(parts[1], parts[2] if len(parts) == 3 else "")
            elif kind == "dl" and len(parts) in (2, 3):
                self._download(method, parts[1], parts[2] if len(parts) == 3 else None)
            elif kind in ("sc", "wsc") and len(parts) == 1:
                self._sc()
            elif kind == "wsc" and len(parts) == 3:
                self._wait(parts[1], parts[2])
            elif kind == "_megafs" and len(parts) == 2:
                self._control(method, parts[1])
            else:
                self._discard_body()
                app.stats.request("unknown")
                self._reply(404, b"", TEXT_TYPE)
        except BadRequest as exc:
            log.warning("bad HTTP request %s %s: %s", method, redact(self.path), exc)
            self.close_connection = True
            if not self._headers_done:
                self._reply(400, b"", TEXT_TYPE)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError,
                socket.timeout) as exc:
            log.debug("connection lost during %s %s: %s", method, redact(self.path), exc)
            self.close_connection = True
        except Exception:
            if app.closing:
                log.debug("%s %s failed during shutdown", method, redact(self.path),
                          exc_info=True)
                self._drop()
                return
            log.exception("internal error on %s %s", method, redact(self.path))
            app.stats.bump("internal_errors")
            self.close_connection = True
            if not self._headers_done:
                try:
                    if kind == "cs":
                        self._reply(200, b"-1", JSON_TYPE)
                    else:
                        self._reply(500, b"", TEXT_TYPE)
                except OSError:
                    pass
        finally:
            log.debug("%s %s %s -> %s, %d bytes, %.1f ms", self.client_address[0], method,
                      redact(self.path), self._status, self._sent,
                      (time.monotonic() - started) * 1000)

    # --- plumbing --------------------------------------------------------------------------
    def _base_url(self) -> str:
        host = self.headers.get("Host", "")
        if host and _HOST_RE.match(host):
            return "http://%s/" % host
        return self.server.app.base_url

    def _body_length(self, limit: int) -> int | None:
        """The request's Content-Length (0 when absent), or None when it is over ``limit``
        (the connection is then closed after the answer)."""
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return 0
        try:
            length = int(length_text)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if length < 0:
            raise BadRequest("negative Content-Length")
        if length > limit:
            self.close_connection = True
            return None
        return length

    def _is_chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def _read_body(self, limit: int) -> bytes | None:
        """The request body, or None if it is larger than ``limit`` (the caller must close)."""
        if self._is_chunked():
            return self._read_chunked(limit)
        length = self._body_length(limit)
        return None if length is None else self._read_exact(length)

    def _read_body_into_buffer(self, limit: int) -> memoryview | bytes | None:
        """Like ``_read_body``, but into a page-aligned buffer lent for this request.

        The view is valid until the request is answered.  A chunked body (which our clients
        never send) is read the ordinary way.
        """
        if self._is_chunked():
            return self._read_chunked(limit)
        if self.headers.get("Content-Length") is None:
            return b""
        length = self._body_length(limit)
        if length is None:
            return None
        view = self._buffer(length)[:length]
        got = 0
        while got < length:
            n = self.rfile.readinto(view[got:])
            if not n:
                raise ConnectionResetError("request body ended after %d of %d bytes"
                                           % (got, length))
            got += n
        return view

    def _buffer(self, size: int) -> memoryview:
        """A page-aligned transfer buffer of at least ``size`` (and 1 MiB) bytes for this
        request, from the server's pool; it goes back when the request is done."""
        buf = self.server.buffers.take(size)
        self._lent.append(buf)
        return memoryview(buf)

    def _read_exact(self, length: int) -> bytes:
        data = self.rfile.read(length) if length else b""
        if len(data) != length:
            raise ConnectionResetError("request body ended after %d of %d bytes"
                                       % (len(data), length))
        return data

    def _read_chunked(self, limit: int) -> bytes | None:
        out = bytearray()
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest("malformed chunked body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            if len(out) + size > limit:
                self.close_connection = True
                return None
            out += self._read_exact(size)
            self._read_exact(2)

    def _discard_body(self) -> None:
        if self._read_body(SMALL_BODY_LIMIT) is None:
            self.close_connection = True

    def _reply(self, status: int, body: bytes, ctype: str,
               headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self._headers_done = True
        self._status = status
        if body:
            self.wfile.write(body)
            self._sent = len(body)

    def _drop(self) -> None:
        """Close the connection without (finishing) an answer."""
        self.close_connection = True
        self._status = "dropped"
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _drop_mid_body(self) -> None:
        """Read about half of the request body, then close the connection."""
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = 0
        if length > 1:
            self.rfile.read(min(length // 2, UPLOAD_BODY_LIMIT))
        self._drop()

    def _fault_reply(self, decision: Decision, where: str) -> bool:
        """Carry out the generic fault actions; True when the request has been answered."""
        stats = self.server.app.stats
        if decision.delay:
            stats.bump("faults_delay")
            time.sleep(decision.delay)
        action = decision.action
        if action is None:
            return False
        stats.bump("faults_fired")
        if action == "error":
            self._reply(200, str(decision.value).encode(),
                        JSON_TYPE if where in ("cs", "sc") else TEXT_TYPE)
            return True
        if action == "http":
            headers = {}
            if decision.value == 509:
                headers["X-MEGA-Time-Left"] = "1"
            if decision.value in (429, 503):
                headers["Retry-After"] = "1"
            self._reply(int(decision.value), b"", TEXT_TYPE, headers)
            return True
        if action == "drop":
            self._drop()
            return True
        return False

    # --- /cs -------------------------------------------------------------------------------
    def _cs(self) -> None:
        app = self.server.app
        app.stats.request("cs")
        body = self._read_body(CS_BODY_LIMIT)
        if body is None:
            log.warning("cs: request body over %d bytes; answering -2", CS_BODY_LIMIT)
            app.stats.bump("bad_requests")
            self._reply(200, b"-2", JSON_TYPE)
            return
        try:
            batch: Any = json.loads(body)
            parsed = True
        except (ValueError, UnicodeDecodeError, RecursionError):
            batch, parsed = None, False
        names = handlers.command_names(batch)
        for name in names:
            app.stats.command(name)
        answer = self.headers.get("X-Hashcash")
        solved = False
        if answer is not None:
            solved = app.hashcash.verify(answer)
            app.stats.bump("hashcash_solved" if solved else "hashcash_rejected")
            if not solved:
                log.warning("cs: X-Hashcash answer does not solve a challenge we issued")
        decision = app.faults.check("cs", names, skip_hashcash=solved)
        if decision is not None:
            if decision.action == "hashcash":
                if decision.delay:
                    time.sleep(decision.delay)
                app.stats.bump("faults_fired")
                app.stats.bump("hashcash_issued")
                self._reply(402, b"", JSON_TYPE,
                            {"X-Hashcash": app.hashcash.challenge(decision.value)})
                return
            if self._fault_reply(decision, "cs"):
                return
        if not parsed:
            log.warning("cs: request body is not valid JSON (%d bytes); answering -2", len(body))
            app.stats.bump("bad_requests")
            self._reply(200, b"-2", JSON_TYPE)
            return
        if "n" in self.query:
            log.warning("cs: folder-link sessions (n=) are not supported; answering -2")
            app.stats.bump("bad_requests")
            self._reply(200, b"-2", JSON_TYPE)
            return
        result = handlers.run_cs(app.state, batch=batch, raw_body=body,
                                 sid=self.query.get("sid") or None,
                                 rid=self.query.get("id") or None,
                                 base_url=self._base_url(),
                                 command_fault=app.faults.command_error)
        if result.replayed:
            app.stats.bump("replays")
        if result.warnings:
            app.stats.bump("bad_requests", result.warnings)
        if result.internal_errors:
            app.stats.bump("internal_errors", result.internal_errors)
        self._reply(200, result.body, JSON_TYPE)

    # --- upload URLs -----------------------------------------------------------------------
    def _upload(self, token: str, offset_text: str) -> None:
        app = self.server.app
        app.stats.request("upload")
        decision = app.faults.check("upload")
        if decision is not None:
            if decision.action == "drop":
                if decision.delay:
                    time.sleep(decision.delay)
                app.stats.bump("faults_fired")
                self._drop_mid_body()
                return
            if decision.action == "expire":
                if decision.delay:
                    time.sleep(decision.delay)
                app.stats.bump("faults_fired")
                self._discard_upload_body()
                app.uploads.expire(token)
                self._reply(200, b"-8", TEXT_TYPE)
                return
            if decision.action is not None:
                self._discard_upload_body()
            if self._fault_reply(decision, "upload"):
                return
        body = self._read_body_into_buffer(UPLOAD_BODY_LIMIT)
        if body is None:
            log.warning("upload: POST body over %d bytes; answering -7", UPLOAD_BODY_LIMIT)
            self._reply(200, b"-7", TEXT_TYPE)
            return
        checksum = self.query.get("c", self.query.get("d"))
        reply = app.uploads.post(token, offset_text, body, checksum,
                                 self._buffer(SCRATCH_BYTES)[:SCRATCH_BYTES])
        del body
        if reply.missing:
            log.info("upload: unknown upload URL %s...", token[:6])
            self._reply(404, b"", TEXT_TYPE)
        elif reply.code is not None:
            if reply.warning:
                log.warning("upload %s...: %s; answering %d", token[:6], reply.warning,
                            reply.code)
                app.stats.bump("bad_requests")
            self._reply(200, str(reply.code).encode(), TEXT_TYPE)
        elif reply.token is not None:
            raw = reply.token[-1:] == b"\x01"
            self._reply(200, reply.token, BINARY_TYPE if raw else TEXT_TYPE)
        else:
            self._reply(200, b"0" if "d" in self.query else b"", TEXT_TYPE)

    def _discard_upload_body(self) -> None:
        if self._read_body(UPLOAD_BODY_LIMIT) is None:
            self.close_connection = True

    # --- download URLs ---------------------------------------------------------------------
    def _download(self, method: str, blob: str, range_part: str | None) -> None:
        app = self.server.app
        app.stats.request("download")
        if method == "POST":
            self._discard_body()
        size = blob_size(app.state, blob)
        if size is None:
            log.info("download: unknown download URL %s...", blob[:6])
            self._reply(404, b"", TEXT_TYPE)
            return
        status, start, end = 200, 0, size - 1
        headers: dict[str, str] = {}
        if range_part is not None:
            match = _RANGE_RE.match(range_part)
            if not match:
                raise BadRequest("download range %r is not a-b" % range_part[:30])
            start = int(match.group(1))
            if match.group(2):
                end = min(int(match.group(2)), size - 1)
        elif method == "GET" and "Range" in self.headers:
            match = _RANGE_HEADER_RE.match(self.headers["Range"].strip())
            if match and (match.group(1) or match.group(2)):
                status = 206
                if not match.group(1):            # "bytes=-n": the last n bytes
                    start = max(0, size - int(match.group(2)))
                else:
                    start = int(match.group(1))
                    if match.group(2):
                        end = min(int(match.group(2)), size - 1)
        if size == 0:
            status, start, end, headers = 200, 0, -1, {}
        elif start > end:
            self._reply(416, b"", TEXT_TYPE, {"Content-Range": "bytes */%d" % size})
            return
        length = end - start + 1
        if status == 206:
            headers["Content-Range"] = "bytes %d-%d/%d" % (start, end, size)
        decision = app.faults.check("download")
        tamper = truncate = drop = False
        if decision is not None:
            if decision.action in ("tamper", "truncate", "drop"):
                if decision.delay:
                    time.sleep(decision.delay)
                app.stats.bump("faults_fired")
                tamper = decision.action == "tamper" and length > 0
                truncate = decision.action == "truncate"
                drop = decision.action == "drop"
            elif self._fault_reply(decision, "download"):
                return
        send = length
        if truncate:
            send = length // 2 if length > 1 else 0
        fd = open_blob(app.state, blob)
        if fd is None:
            self._reply(404, b"", TEXT_TYPE)
            return
        direct_fd = open_blob_direct(app.state, blob)
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", BINARY_TYPE)
            self.send_header("Content-Length", str(send))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            self._headers_done = True
            self._status = status
            limit = length // 2 if drop else send
            flip_at = start + length // 2
            pos = start
            buf = self._buffer(DOWNLOAD_PIECE)
            for piece in read_pieces(fd, start, limit, buf, direct_fd):
                if tamper and pos <= flip_at < pos + len(piece):
                    piece[flip_at - pos] ^= 0x01
                self.connection.sendall(piece)
                pos += len(piece)
                self._sent = pos - start
            del buf
            app.stats.bump("download_bytes", pos - start)
            if pos - start < limit:
                self.close_connection = True   # the blob is shorter than it was a moment ago
            if drop:
                self._drop()
        finally:
            os.close(fd)
            if direct_fd is not None:
                os.close(direct_fd)

    # --- action packets --------------------------------------------------------------------
    def _sc(self) -> None:
        app = self.server.app
        app.stats.request("sc")
        self._discard_body()
        decision = app.faults.check("sc", sub="sc")
        if decision is not None and self._fault_reply(decision, "sc"):
            return
        body, warned = handlers.run_sc(app.state, sid=self.query.get("sid") or None,
                                       sn=self.query.get("sn"), base_url=self._base_url())
        if warned:
            app.stats.bump("bad_requests")
        self._reply(200, body, JSON_TYPE)

    def _wait(self, uh: str, sn: str) -> None:
        app = self.server.app
        app.stats.request("wait")
        self._discard_body()
        decision = app.faults.check("sc", sub="wait")
        if decision is not None and self._fault_reply(decision, "sc"):
            return
        seq = decode_sn(sn)
        with app.state.lock:
            known = app.state.read().account(uh) is not None
        if seq is not None and known:
            app.state.wait_for_packets(uh, seq, app.config.wait_timeout)
        self._reply(200, b"", TEXT_TYPE)

    # --- control endpoint ------------------------------------------------------------------
    def _control(self, method: str, name: str) -> None:
        app = self.server.app
        app.stats.request("control")
        body = self._read_body(SMALL_BODY_LIMIT)
        try:
            local = ipaddress.ip_address(self.client_address[0].split("%")[0]).is_loopback
        except ValueError:
            local = False
        if not local:
            log.warning("control endpoint refused to non-local client %s",
                        self.client_address[0])
            self._reply(403, b"", TEXT_TYPE)
            return
        if body is None:
            self._control_error("body too large")
            return
        if method == "GET" and name == "stats":
            self._json(app.stats_snapshot())
        elif method == "GET" and name == "faults":
            self._json(app.faults.snapshot())
        elif method == "POST" and name in ("faults", "quota"):
            try:
                payload = json.loads(body or b"{}")
            except (ValueError, UnicodeDecodeError, RecursionError):
                self._control_error("body is not JSON")
                return
            if not isinstance(payload, dict):
                self._control_error("body must be a JSON object")
            elif name == "faults":
                try:
                    app.faults.replace(payload.get("rules", []))
                except FaultRuleError as exc:
                    self._control_error(str(exc))
                    return
                self._json({"ok": True, **app.faults.snapshot()})
            else:
                nbytes, user = payload.get("bytes"), payload.get("user")
                if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
                    self._control_error("'bytes' must be an integer >= 0")
                elif user is not None and not isinstance(user, str):
                    self._control_error("'user' must be a user handle")
                elif not app.set_quota(nbytes, user):
                    self._control_error("unknown user")
                else:
                    self._json({"ok": True, "bytes": nbytes})
        else:
            self._reply(404, b"", TEXT_TYPE)

    def _control_error(self, reason: str) -> None:
        log.warning("control endpoint: %s", reason)
        self._reply(400, json.dumps({"error": reason}).encode(), JSON_TYPE)

    def _json(self, value: Any) -> None:
        self._reply(200, json.dumps(value).encode(), JSON_TYPE)
