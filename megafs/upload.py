"""Uploading one file's encrypted contents to a MEGA upload URL; no node is created here.

Flow (protocol reference §7): ``u`` (size, ``v:2``) gives an upload URL; the file is read in
chunk-aligned spans of about 1 MiB (``chunks.groups``), each span is AES-CTR encrypted and its
MAC chunks CBC-MACed in bulk (one pycryptodome call per MAC chunk), and POSTed to
``{url}/{offset}?c={checksum}`` on up to ``connections`` parallel connections.  The POST that
completes the file answers the 36-byte binary completion token (we send ``v:2``, so it is raw
bytes and is base64url-encoded for ``p``; any other non-empty, non-error body is treated as an
invalid token).

Retries: each POST on its own for connection errors, timeouts, HTTP 5xx/429 and the upload
server's ``-3``/``-6``/``-14``/``-18``/``-19`` bodies; the whole upload restarts with a new
URL and a fresh key after ``-4`` (EFAILED on transfer servers), ``-5``, ``-7``, ``-8``, HTTP
403/404/410, a missing or malformed completion token once every byte was sent.  ``-17`` and the
other permanent codes fail the upload at once.

Memory is bounded: a semaphore admits at most ``connections`` spans at a time, each holding
its plaintext and ciphertext (about 2 MiB), whatever the file size; the file is read with
``os.pread`` at 64-bit offsets and never whole.  Never logs the upload URL's token.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

import requests

from . import chunks, crypto
from .crypto import FileKey, upload_checksum
from .errors import MegaError, ProtocolError, TransportError, UploadFailed
from .transport import (HTTP_RETRY_STATUSES, Backoff, Cancelled, HttpPool, RetryPolicy,
                        Transport, redact_url)

log = logging.getLogger(__name__)

SPAN = chunks.MIB                   # target bytes per POST (whole MAC chunks)
TOKEN_BYTES = 36
TRANSFER_TIMEOUT = (10.0, 120.0)    # (connect, read) per POST
POST_RETRY_CODES = frozenset({-3, -6, -14, -18, -19})
RESTART_CODES = frozenset({-4, -5, -7, -8, -9, -15})
RESTART_STATUSES = frozenset({403, 404, 410})
_ERROR_BODY = re.compile(rb"^\s*(-\d{1,4})\s*$")

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Uploaded:
    """A finished upload, ready for ``p``: the completion token and the file key with MAC."""

    token: str
    key: FileKey
    size: int

    def __repr__(self) -> str:  # the key is secret
        return "Uploaded(size=%d)" % self.size


class UploadCancelled(UploadFailed):
    """The caller's cancel event was set during the upload."""

    errno = errno.ECANCELED


class _Restart(Exception):
    """This upload URL is no good any more; start again with a new one."""


# --------------------------------------------------------------------------------------------
# Pure helpers
def parse_post_reply(body: bytes) -> tuple[str, object]:
    """Classify an upload server's 200 body: ("more", None), ("token", b64) or ("error", code).

    ("invalid", length) for anything else: it cannot be a completion token.
    """
    if not body or body == b"0":
        return "more", None
    match = _ERROR_BODY.match(body) if len(body) <= 8 else None
    if match:
        return "error", int(match.group(1))
    if len(body) == TOKEN_BYTES:
        return "token", crypto.b64encode(body)
    return "invalid", len(body)


def post_url(base: str, offset: int, checksum: bytes) -> str:
    """``{url}/{offset}?c={b64 checksum}``; offsets are plain decimal, 64-bit and beyond."""
    return "%s/%d?c=%s" % (base.rstrip("/"), offset, crypto.b64encode(checksum))


def encrypt_span(key: FileKey, offset: int, plaintext: bytes
                 ) -> tuple[bytes, list[tuple[int, bytes]]]:
    """Encrypt one chunk-aligned span; return the ciphertext and its (offset, chunk MAC)s."""
    ciphertext = crypto.ctr_crypt(key.aes_key, key.nonce, offset, plaintext)
    view = memoryview(plaintext)
    macs = []
    pos = offset
    end = offset + len(plaintext)
    while pos < end:
        length = min(chunks.size_at(pos), end - pos)
        macs.append((pos, crypto.chunk_mac(key.aes_key, key.nonce,
                                           view[pos - offset:pos - offset + length])))
        pos += length
    return ciphertext, macs


# --------------------------------------------------------------------------------------------
class Uploader:
    """Uploads files through one Transport (for ``u``) and one HttpPool (for the POSTs)."""

    def __init__(self, transport: Transport, *, connections: int = 4,
                 pool: HttpPool | None = None, retry: RetryPolicy | None = None,
                 max_restarts: int = 6, span: int = SPAN,
                 timeout: tuple[float, float] = TRANSFER_TIMEOUT) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self.transport = transport
        self.connections = connections
        self.pool = pool or transport.pool
        self.retry = retry or transport.retry
        self.max_restarts = max_restarts
        self.span = span
        self.timeout = timeout
        self.max_in_flight = 0      # observed high-water mark of spans held in memory (tests)

    def upload(self, path: str, *, progress: Progress | None = None,
               cancel: threading.Event | None = None) -> Uploaded:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise UploadFailed("cannot read %s: %s" % (path, exc.strerror)) from None
        try:
            size = os.fstat(fd).st_size
            return self.upload_fd(fd, size, progress=progress, cancel=cancel)
        finally:
            os.close(fd)

    def upload_fd(self, fd: int, size: int, *, progress: Progress | None = None,
                  cancel: threading.Event | None = None) -> Uploaded:
        """Upload ``size`` bytes of the open file ``fd`` (read with pread, offset 0)."""
        backoff = Backoff(self.retry, "upload", cancel)
        attempt = 0
        while True:
            attempt += 1
            key = crypto.new_file_key()  # fresh key per attempt: no CTR keystream reuse
            try:
                url = self._get_url(size, cancel)
                token, macs = self._attempt(fd, size, url, key, progress, cancel)
            except Cancelled:
                raise UploadCancelled("upload cancelled") from None
            except _Restart as exc:
                if attempt > self.max_restarts:
                    raise UploadFailed("upload failed after %d attempts: %s" % (attempt, exc)) \
                        from None
                if progress:
                    progress(0)
                try:
                    backoff.wait("restarting with a new upload URL (%s)" % exc)
                except Cancelled:
                    raise UploadCancelled("upload cancelled") from None
                except TransportError as err:
                    raise UploadFailed(str(err)) from None
                continue
            return Uploaded(token, key.with_mac(macs.meta_mac(size)), size)

    def _get_url(self, size: int, cancel: threading.Event | None) -> str:
        command: dict[str, object] = {"a": "u", "s": size, "v": 2}
        if urlsplit(self.transport.api).scheme == "https":
            command["ssl"] = 2
        reply = self.transport.batch([command], cancel=cancel)[0]
        if isinstance(reply, MegaError):
            raise reply
        if not isinstance(reply, dict) or not isinstance(reply.get("p"), str):
            raise ProtocolError("u: expected an object with an upload URL")
        url = reply["p"]
        if urlsplit(url).scheme not in ("http", "https"):
            raise ProtocolError("u: upload URL is not http(s)")
        return url

    def _attempt(self, fd: int, size: int, url: str, key: FileKey, progress: Progress | None,
                 cancel: threading.Event | None) -> tuple[str, crypto.MacAccumulator]:
        macs = crypto.MacAccumulator(key.aes_key)
        state = _AttemptState(cancel)
        slots = threading.BoundedSemaphore(self.connections)
        executor = ThreadPoolExecutor(self.connections, thread_name_prefix="megafs-upload")
        try:
            self._feed(fd, size, url, key, macs, state, slots, executor, progress, cancel)
        except BaseException:
            state.stop.set()  # e.g. KeyboardInterrupt: let the workers finish quickly
            raise
        finally:
            executor.shutdown(wait=True)
        if state.error is not None:
            raise state.error
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        if state.token is None:
            raise _Restart("all bytes sent but no completion token")
        return state.token, macs

    def _feed(self, fd: int, size: int, url: str, key: FileKey, macs: crypto.MacAccumulator,
              state: "_AttemptState", slots: threading.BoundedSemaphore,
              executor: ThreadPoolExecutor, progress: Progress | None,
              cancel: threading.Event | None) -> None:
        """Submit the spans one by one, never more than ``connections`` at a time."""
        for offset, length in chunks.groups(size, self.span):
            while not slots.acquire(timeout=0.2):
                if state.stop.is_set():
                    break
            if state.stop.is_set():  # a worker failed, or the caller's cancel event is set
                break
            with state.lock:
                state.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, state.in_flight)
            future = executor.submit(self._send_span, fd, offset, length, url, key, macs,
                                     state, progress)
            future.add_done_callback(lambda f, s=slots: _span_done(f, s, state))

    def _send_span(self, fd: int, offset: int, length: int, url: str, key: FileKey,
                   macs: crypto.MacAccumulator, state: "_AttemptState",
                   progress: Progress | None) -> None:
        if state.stop.is_set():
            return
        plaintext = os.pread(fd, length, offset) if length else b""
        if len(plaintext) != length:
            raise UploadFailed("file shrank while uploading (short read at offset %d)" % offset)
        ciphertext, span_macs = encrypt_span(key, offset, plaintext)
        del plaintext
        for chunk_offset, mac in span_macs:
            macs.add(chunk_offset, mac)
        target = post_url(url, offset, upload_checksum(ciphertext))
        what = "upload POST @%d (%d bytes) to %s" % (offset, length, redact_url(url))
        backoff = Backoff(self.retry, what, state.stop)
        while True:
            if state.stop.is_set():
                return
            try:
                resp = self.pool.request("POST", target, data=ciphertext, timeout=self.timeout,
                                         headers={"Content-Type": "application/octet-stream"})
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                backoff.wait(type(exc).__name__)
                continue
            except requests.RequestException as exc:
                raise TransportError("%s: %s" % (what, type(exc).__name__)) from None
            status = resp.status_code
            if status in RESTART_STATUSES:
                raise _Restart("upload server answered HTTP %d" % status)
            if status in HTTP_RETRY_STATUSES:
                backoff.wait("HTTP %d" % status)
                continue
            if status == 509:
                raise MegaError(-17, "upload server: transfer quota exceeded (HTTP 509)")
            if status != 200:
                raise TransportError("%s: HTTP %d" % (what, status))
            kind, value = parse_post_reply(resp.content)
            if kind == "error":
                code = int(value)  # type: ignore[call-overload]
                if code in POST_RETRY_CODES:
                    backoff.wait("upload server answered %d" % code)
                    continue
                if code in RESTART_CODES:
                    raise _Restart("upload server answered %s" % MegaError(code))
                raise MegaError(code, "upload server")
            if kind == "invalid":
                raise _Restart("upload server sent a %s-byte reply that is not a completion "
                               "token" % value)
            if kind == "token":
                with state.lock:
                    if state.token is None:
                        state.token = str(value)
            with state.lock:
                state.done += length
                done = state.done
            if progress:
                progress(done)
            return


class _AttemptState:
    def __init__(self, cancel: threading.Event | None) -> None:
        self.lock = threading.Lock()
        self.stop = _LinkedEvent(cancel)
        self.token: str | None = None
        self.error: BaseException | None = None
        self.done = 0
        self.in_flight = 0

    def fail(self, error: BaseException) -> None:
        """Record the first error and stop the other workers."""
        with self.lock:
            if self.error is None:
                self.error = error
        self.stop.set()


def _span_done(future: Future, slots: threading.BoundedSemaphore, state: _AttemptState) -> None:
    with state.lock:
        state.in_flight -= 1
    slots.release()
    error = future.exception()
    if error is not None:
        if isinstance(error, Cancelled) and not state.stop.cancelled():
            return  # a worker stopped because another one failed first
        state.fail(error)


class _LinkedEvent(threading.Event):
    """Set when the attempt stops; also reports set when the caller's cancel event is set."""

    def __init__(self, cancel: threading.Event | None) -> None:
        super().__init__()
        self._cancel = cancel

    def cancelled(self) -> bool:
        return self._cancel is not None and self._cancel.is_set()

    def is_set(self) -> bool:
        return super().is_set() or self.cancelled()

    def wait(self, timeout: float | None = None) -> bool:
        if self._cancel is None:
            return super().wait(timeout)
        # Wake on either event without busy-waiting for long.
        step = 0.1
        remaining = timeout
        while remaining is None or remaining > 0:
            if self.is_set():
                return True
            slice_ = step if remaining is None else min(step, remaining)
            if super().wait(slice_):
                return True
            if remaining is not None:
                remaining -= slice_
        return self.is_set()
