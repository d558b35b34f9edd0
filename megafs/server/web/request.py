"""One HTTP request as the endpoints see it: path parameters, query, body readers with limits,
answers (whole, streamed with any framing, or none: a dropped connection) and the transfer
buffers lent for it.

Bodies are read with ``readinto`` into page-aligned buffers lent by the listener's
``BufferPool`` (see ``listeners.py``) when the endpoint asks for that, so no upload allocates
its body.  A body over its limit makes the answer close the connection.  ``Content-Type`` is
never required.
"""
from __future__ import annotations

import mmap
import socket
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .listeners import Listener

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
BINARY_TYPE = "application/octet-stream"
SMALL_BODY_LIMIT = 1 << 20
LINE_LIMIT = 1024
DRAIN_PIECE = 64 << 10


class BadRequest(Exception):
    """A request that does not follow HTTP (answered 400, connection closed)."""


class Request:
    def __init__(self, handler: BaseHTTPRequestHandler, listener: "Listener", method: str,
                 path: str, query: dict[str, str]) -> None:
        self.handler = handler
        self.listener = listener
        self.method = method
        self.path = path
        self.query = query
        self.params: dict[str, str] = {}
        self.headers = handler.headers
        self.peer = handler.client_address[0]      # the client's address
        self.status: Any = "-"
        self.sent = 0
        self.headers_done = False
        self.body_read = False
        self.close_connection = False
        self._lent: list[mmap.mmap] = []

    # --- bodies ----------------------------------------------------------------------------
    def body_length(self, limit: int) -> int | None:
        """The request's Content-Length (0 when absent), or None when it is over ``limit``."""
        text = self.headers.get("Content-Length")
        if text is None:
            return 0
        try:
            length = int(text)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if length < 0:
            raise BadRequest("negative Content-Length")
        if length > limit:
            self.close_connection = True
            return None
        return length

    def is_chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def read_body(self, limit: int) -> bytes | None:
        """The request body, or None if it is larger than ``limit`` (the answer will close)."""
        self.body_read = True
        if self.is_chunked():
            return self._read_chunked(limit)
        length = self.body_length(limit)
        return None if length is None else self._read_exact(length)

    def read_body_into_buffer(self, limit: int) -> memoryview | bytes | None:
        """Like ``read_body``, but into a page-aligned buffer lent for this request (valid until
        it is answered).  A chunked body (our clients never send one) is read the ordinary way.
        """
        if self.is_chunked() or self.headers.get("Content-Length") is None:
            return self.read_body(limit)
        self.body_read = True
        length = self.body_length(limit)
        if length is None:
            return None
        view = self.buffer(length)[:length]
        got = 0
        while got < length:
            n = self.handler.rfile.readinto(view[got:])
            if not n:
                raise ConnectionResetError("request body ended after %d of %d bytes"
                                           % (got, length))
            got += n
        return view

    def drain_body(self, limit: int) -> None:
        """Read and drop a body that will not be used, in small pieces (nothing is kept), so
        the client can read the answer and keep its connection; a body over ``limit``, chunked
        or of a bad length is not read and the answer closes the connection instead (closing
        with unread data could reset the answer on its way, so this is for refusals)."""
        if self.body_read:
            return
        self.body_read = True
        try:
            length = None if self.is_chunked() else self.body_length(limit)
        except BadRequest:
            length = None
        if length is None:
            self.close_connection = True
            return
        while length:
            piece = self.handler.rfile.read(min(length, DRAIN_PIECE))
            if not piece:
                raise ConnectionResetError("request body ended early")
            length -= len(piece)

    def discard_body(self, limit: int = SMALL_BODY_LIMIT) -> None:
        if not self.body_read and self.read_body(limit) is None:
            self.close_connection = True

    def read_half_body(self, limit: int) -> None:
        """Read about half of the request body (before a dropped connection)."""
        self.body_read = True
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = 0
        if length > 1:
            self.handler.rfile.read(min(length // 2, limit))

    def _read_exact(self, length: int) -> bytes:
        data = self.handler.rfile.read(length) if length else b""
        if len(data) != length:
            raise ConnectionResetError("request body ended after %d of %d bytes"
                                       % (len(data), length))
        return data

    def _read_chunked(self, limit: int) -> bytes | None:
        out = bytearray()
        rfile = self.handler.rfile
        while True:
            line = rfile.readline(LINE_LIMIT)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest("malformed chunked body") from None
            if size == 0:
                while rfile.readline(LINE_LIMIT) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            if len(out) + size > limit:
                self.close_connection = True
                return None
            out += self._read_exact(size)
            self._read_exact(2)

    # --- buffers ---------------------------------------------------------------------------
    def buffer(self, size: int) -> memoryview:
        """A page-aligned transfer buffer of at least ``size`` (and 1 MiB) bytes, from the
        listener's pool; it goes back when the request is done."""
        buf = self.listener.buffers.take(size)
        self._lent.append(buf)
        return memoryview(buf)

    def give_back(self) -> None:
        for buf in self._lent:
            self.listener.buffers.give(buf)
        self._lent = []

    # --- answers ---------------------------------------------------------------------------
    def reply(self, status: int, body: bytes = b"", ctype: str = TEXT_TYPE,
              headers: dict[str, str] | None = None) -> None:
        self.start(status, ctype, headers, len(body))
        if body:
            self.handler.wfile.write(body)
            self.sent = len(body)

    def start(self, status: int, ctype: str, headers: dict[str, str] | None,
              length: int | None, chunked: bool = False) -> None:
        """Send the status line and headers; ``length`` None: no Content-Length (the body
        ends with the connection, or is chunked)."""
        h = self.handler
        h.send_response(status)
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.send_header("Content-Type", ctype)
        if length is not None:
            h.send_header("Content-Length", str(length))
        elif chunked:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            self.close_connection = True
        if self.close_connection:
            h.send_header("Connection", "close")
        h.end_headers()
        self.headers_done = True
        self.status = status

    def send_raw(self, data: bytes | memoryview, chunked: bool = False) -> None:
        if chunked:
            if not len(data):
                return
            self.handler.connection.sendall(b"%x\r\n" % len(data))
            self.handler.connection.sendall(data)
            self.handler.connection.sendall(b"\r\n")
        else:
            self.handler.connection.sendall(data)

    def end_chunks(self) -> None:
        self.handler.connection.sendall(b"0\r\n\r\n")

    def drop(self) -> None:
        """Close the connection without (finishing) an answer."""
        self.close_connection = True
        self.status = "dropped"
        try:
            self.handler.wfile.flush()
            self.handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
