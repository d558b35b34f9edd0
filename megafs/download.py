"""Downloading and decrypting file contents from MEGA download URLs.

``g`` (protocol reference §8) gives a URL and the size; bytes are fetched with ranged GETs
``{url}/{start}-{end}`` (inclusive end), decrypted with AES-CTR from any offset, and, for whole
files, checked against the meta-MAC in the file key: chunk MACs in offset order, condensed,
compared with key words 6-7.  A whole-file download goes to a temporary file beside the
destination, is fsynced and renamed over it only once the MAC matches, so a failed or tampered
download never leaves a file at the destination.

Retries: connection errors, timeouts, HTTP 5xx/429, ``-3``-style error bodies and short or
truncated bodies are retried per range with backoff; HTTP 403/404/410 or ``-8`` mean the URL
expired (the whole-file path asks ``g`` again; ``read_range`` raises ``MegaError(-8)`` for its
caller); HTTP 509 is the transfer quota (``MegaError(-17)`` with the time left).  Memory stays
bounded: at most ``connections`` spans of about 1 MiB are in flight.  Never logs URLs' tokens.
"""
from __future__ import annotations

import contextlib
import hmac
import logging
import os
import re
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import requests

from . import chunks, crypto
from .crypto import FileKey
from .errors import IntegrityError, MegaError, ProtocolError, TransportError, error_from_result
from .transport import HTTP_RETRY_STATUSES, Backoff, Cancelled, HttpPool, RetryPolicy, redact_url

log = logging.getLogger(__name__)

SPAN = chunks.MIB
TRANSFER_TIMEOUT = (10.0, 120.0)
RETRY_CODES = frozenset({-3, -6, -18, -19})
EXPIRED_CODES = frozenset({-4, -8})
EXPIRED_STATUSES = frozenset({403, 404, 410})
_ERROR_BODY = re.compile(rb"^\s*(-\d{1,4})\s*$")

Progress = Callable[[int], None]


@dataclass
class DownloadInfo:
    """What ``g`` said: the URL, the size and the attributes (decrypted when a key was given).

    ``at`` keeps the encrypted attribute blob (base64url) for callers that hold the key.
    """

    url: str
    size: int
    attrs: dict[str, Any] = field(default_factory=dict)
    at: str = ""

    def __repr__(self) -> str:  # the URL is a capability
        return "DownloadInfo(url=%r, size=%d)" % (redact_url(self.url), self.size)


def parse_g_reply(reply: Any, key: bytes | None = None) -> DownloadInfo:
    """Validate a ``g`` reply; raise MegaError for ``e`` / ``d`` and ProtocolError for junk."""
    error = error_from_result(reply, "g")
    if error is not None:
        raise error
    if not isinstance(reply, dict):
        raise ProtocolError("g: expected an object, got %s" % type(reply).__name__)
    if "e" in reply:
        code = reply.get("e")
        if isinstance(code, int) and code < 0:
            context = "g"
            if isinstance(reply.get("tl"), int):
                context = "g; transfer quota resets in %d s" % reply["tl"]
            raise MegaError(code, context)
        raise ProtocolError("g: bad error field")
    if reply.get("d"):
        raise MegaError(-16, "g: file is blocked")
    url, size = reply.get("g"), reply.get("s")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ProtocolError("g: no download URL in the reply")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError("g: missing or bad size")
    at = reply.get("at") if isinstance(reply.get("at"), str) else ""
    attrs: dict[str, Any] = {}
    if key is not None and at:
        try:
            attrs = crypto.decrypt_attr(crypto.b64decode(at), key)
        except (ValueError, crypto.AttributeError_):
            raise IntegrityError("the key does not decrypt the file's attributes "
                                 "(wrong or damaged link key)") from None
    return DownloadInfo(url, size, attrs, at)


def range_url(url: str, offset: int, length: int) -> str:
    """``{url}/{first}-{last}`` with an inclusive last byte."""
    return "%s/%d-%d" % (url.rstrip("/"), offset, offset + length - 1)


class _Expired(Exception):
    pass


class Downloader:
    """Ranged GETs over an HttpPool with per-range retries."""

    def __init__(self, pool: HttpPool, *, retry: RetryPolicy | None = None,
                 connections: int = 4, span: int = SPAN,
                 timeout: tuple[float, float] = TRANSFER_TIMEOUT) -> None:
        self.pool = pool
        self.retry = retry or RetryPolicy.from_env()
        self.connections = max(1, connections)
        self.span = span
        self.timeout = timeout

    # --- one range ---------------------------------------------------------------------------
    def fetch(self, url: str, offset: int, length: int,
              cancel: threading.Event | None = None) -> bytes:
        """The ciphertext of [offset, offset+length); retried; raises _Expired on a dead URL."""
        if length <= 0:
            return b""
        target = range_url(url, offset, length)
        what = "download %d-%d from %s" % (offset, offset + length - 1, redact_url(url))
        backoff = Backoff(self.retry, what, cancel)
        short = False
        while True:
            try:
                resp = self.pool.request("GET", target, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                short = isinstance(exc, requests.exceptions.ChunkedEncodingError)
                self._wait(backoff, type(exc).__name__, short)
                continue
            except requests.RequestException as exc:
                raise TransportError("%s: %s" % (what, type(exc).__name__)) from None
            status, body = resp.status_code, resp.content
            if status in EXPIRED_STATUSES:
                raise _Expired("HTTP %d" % status)
            if status == 509:
                left = resp.headers.get("X-MEGA-Time-Left", "")
                raise MegaError(-17, "download: transfer quota exceeded"
                                + ("; resets in %s s" % left if left.isdigit() else ""))
            if status in HTTP_RETRY_STATUSES:
                self._wait(backoff, "HTTP %d" % status, False)
                continue
            if status not in (200, 206):
                raise TransportError("%s: HTTP %d" % (what, status))
            if len(body) == length:
                return body
            match = _ERROR_BODY.match(body) if len(body) <= 8 else None
            if match:
                code = int(match.group(1))
                if code in RETRY_CODES:
                    self._wait(backoff, "server answered %d" % code, False)
                    continue
                if code in EXPIRED_CODES:
                    raise _Expired("server answered %d" % code)
                raise MegaError(code, "download server")
            short = True
            self._wait(backoff, "short body: %d of %d bytes" % (len(body), length), True)

    @staticmethod
    def _wait(backoff: Backoff, reason: str, short: bool) -> None:
        try:
            backoff.wait(reason)
        except TransportError as exc:
            if short:
                raise IntegrityError("download kept returning truncated data: %s" % exc) \
                    from None
            raise

    def read_range(self, url: str, key: FileKey, offset: int, length: int,
                   cancel: threading.Event | None = None) -> bytes:
        """Decrypted plaintext of [offset, offset+length); the caller keeps it within the size."""
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        try:
            data = self.fetch(url, offset, length, cancel)
        except _Expired as exc:
            raise MegaError(-8, "download URL no longer valid (%s); ask g again" % exc) \
                from None
        return crypto.ctr_crypt(key.aes_key, key.nonce, offset, data)

    # --- whole files --------------------------------------------------------------------------
    def download_file(self, info: DownloadInfo, key: FileKey, dest: str, *,
                      refresh: Callable[[], DownloadInfo] | None = None,
                      progress: Progress | None = None,
                      cancel: threading.Event | None = None) -> str:
        """Download, decrypt and verify into ``dest``; on any error leave no file there."""
        dest = os.path.abspath(dest)
        directory = os.path.dirname(dest)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(dest)[:100] + ".",
                                   suffix=".megafs-part", dir=directory)
        try:
            try:
                self._fill(fd, info, key, refresh, progress, cancel)
                os.fchmod(fd, 0o666 & ~_umask())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return dest

    def _fill(self, fd: int, info: DownloadInfo, key: FileKey,
              refresh: Callable[[], DownloadInfo] | None, progress: Progress | None,
              cancel: threading.Event | None) -> None:
        size = info.size
        macs = crypto.MacAccumulator(key.aes_key)
        lock = threading.Lock()
        current = {"url": info.url, "done": 0}
        errors: list[BaseException] = []
        stop = threading.Event()
        slots = threading.BoundedSemaphore(self.connections)

        def fetch_span(offset: int, length: int) -> None:
            try:
                refreshed = False
                while True:
                    if stop.is_set() or (cancel is not None and cancel.is_set()):
                        return
                    url = current["url"]
                    try:
                        data = self.fetch(url, offset, length, cancel)
                        break
                    except _Expired as exc:
                        if refresh is None or refreshed:
                            raise MegaError(-8, "download URL no longer valid (%s)" % exc) \
                                from None
                        refreshed = True
                        with lock:
                            if current["url"] == url:
                                current["url"] = refresh().url
                plain = crypto.ctr_crypt(key.aes_key, key.nonce, offset, data)
                del data
                view = memoryview(plain)
                pos = offset
                while pos < offset + length:
                    n = min(chunks.size_at(pos), offset + length - pos)
                    macs.add(pos, crypto.chunk_mac(key.aes_key, key.nonce,
                                                   view[pos - offset:pos - offset + n]))
                    pos += n
                written = 0
                while written < length:
                    written += os.pwrite(fd, view[written:], offset + written)
                with lock:
                    current["done"] += length
                    done = current["done"]
                if progress:
                    progress(done)
            except BaseException as exc:  # noqa: B902 - handed to the main thread
                if not isinstance(exc, Cancelled) or (cancel is not None and cancel.is_set()):
                    errors.append(exc)
                stop.set()
            finally:
                slots.release()

        if size:
            executor = ThreadPoolExecutor(self.connections, thread_name_prefix="megafs-download")
            try:
                for offset, length in chunks.groups(size, self.span):
                    while not slots.acquire(timeout=0.2):
                        if stop.is_set():
                            break
                    if stop.is_set() or (cancel is not None and cancel.is_set()):
                        break
                    executor.submit(fetch_span, offset, length)
            except BaseException:
                stop.set()  # e.g. KeyboardInterrupt: let the workers finish quickly
                raise
            finally:
                executor.shutdown(wait=True)
        if errors:
            raise errors[0]
        if cancel is not None and cancel.is_set():
            raise Cancelled("download cancelled")
        os.ftruncate(fd, size)
        if not hmac.compare_digest(macs.meta_mac(size), key.mac):
            raise IntegrityError("MAC mismatch: the downloaded data does not match the link's "
                                 "key (tampered, truncated or wrong key)")


def _umask() -> int:
    """The process umask without changing it (os.umask would race with other threads)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    return 0o022
