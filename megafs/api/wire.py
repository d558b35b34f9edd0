"""The pieces of the transfer path below ``HttpPool`` (``api/http.py``): the answer to a
transfer request with its body read by the caller (``TransferStream``), the error of a request
that failed on the wire (``TransferInterrupted``), page-aligned transfer buffers and the check
that an idle kept-alive connection is still usable."""
from __future__ import annotations

import http.client
import mmap
import select
import ssl
from typing import Any

import urllib3

from ..errors import TransportError


class TransferInterrupted(TransportError):
    """A transfer request failed on the wire (connect, send, timeout, connection lost).

    Always worth a retry.  ``short`` is true when the connection ended in the middle of the
    response body (the server promised more bytes than it sent).
    """

    def __init__(self, reason: str, *, short: bool = False) -> None:
        super().__init__(reason)
        self.short = short


def transfer_buffer(size: int) -> mmap.mmap:
    """A page-aligned buffer for transfer data (anonymous private mmap, writable, zeroed).

    The kernel copies into 16-byte-aligned buffers (which is what ``bytearray`` gives) up to 5x
    slower on this AMD EPYC (``rep movsb`` with the destination 16 bytes off a 32-byte
    boundary): ``preadv`` of 1 GiB from the page cache took 0.5 s into a bytearray and 0.1 s
    into a page-aligned buffer, 21% of an upload's client CPU.  O_DIRECT needs the alignment
    too.
    """
    return mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE)


def dropped(sock: Any) -> bool:
    """True if an idle keep-alive socket was closed by the server (readable means EOF/junk).

    A TLS 1.3 server sends its session tickets after the handshake (RFC 8446 section 4.6.1),
    so a connection that has not read since its handshake (the API check's, ``api/probe.py``)
    is readable and alive: for a TLS socket the readable records are read without blocking,
    and only a close, an error or application data (junk between requests) count as
    dropped.  Treating the tickets as a close cost a mount two round trips (issue 23)."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        if not poller.poll(0):
            return False
    except (OSError, ValueError):
        return True
    if not isinstance(sock, ssl.SSLSocket):
        return True
    timeout = sock.gettimeout()
    try:
        sock.setblocking(False)
        sock.recv(1)                # b"" (closed) or a byte nobody asked for: dropped
        return True
    except ssl.SSLWantReadError:
        return False                # only handshake messages were waiting
    except (OSError, ValueError):
        return True
    finally:
        try:
            sock.settimeout(timeout)
        except OSError:
            pass


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
