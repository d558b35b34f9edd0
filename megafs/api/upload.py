"""Uploading one file's encrypted contents to a MEGA upload URL; no node is created here.

Flow (protocol reference §7): ``u`` (size, ``v:2``) gives an upload URL; the file is read in
chunk-aligned spans (``chunks.groups``, whole MAC chunks, sized by ``span_for``), each span is
CBC-MACed chunk by chunk, AES-CTR encrypted in place and POSTed to
``{url}/{offset}?c={checksum}`` on up to ``connections`` parallel connections.  The POST that
completes the file answers the 36-byte binary completion token (we send ``v:2``, so it is raw
bytes and is base64url-encoded for ``p``; any other non-empty, non-error body is treated as an
invalid token).

Data path: ``connections`` worker threads each own one span buffer and a small scratch buffer
for the whole upload; a worker reads its next span with ``preadv`` into the buffer, MACs the
plaintext, encrypts it in place, checksums it (into the scratch) and sends it straight from
the buffer (``HttpPool.transfer``): no per-span allocation, one copy from the page cache and
one into the socket.  The span's MAC chunks are sealed on every core (``sealing.seal_chunks``;
the C calls release the GIL), so even one worker uses all cores.  A file of one span is sent
on the calling thread.  Spans are 1 MiB for small files and grow to ``SPAN`` (4 MiB) once every
connection has at least four: each POST costs the client and the server about a millisecond of
CPU apiece (HTTP, checksum fold, SQLite), so 1 GiB in 1 MiB POSTs took 7.3 s of CPU on the two
sides together against 5.2 s in 4 MiB POSTs (2 cores, local server).

Retries: what to do about an upload server's answer is ``errors.classify(code, "transfer")``.
Each POST is retried on its own (its worker's ``Backoff``) for connection errors, timeouts,
HTTP 5xx/429 and transient bodies (``-3``, ``-14``, ``-18``, ``-19``); the whole upload
restarts with a new URL and a fresh key (the upload's ``Backoff``) when the URL is dead:
``-4`` (EFAILED on transfer servers), ``-5``, ``-6`` (too many IPs on this URL: retrying it
cannot help), ``-7``, ``-8``, HTTP 403/404/410, or all bytes sent without a completion token.
``-17`` and the other permanent codes fail the upload at once.

Completion: the first completion token any worker receives finishes the upload.  The server
only sends it once every byte is stored, so the other workers stop, and an error that another
worker meets afterwards (a late reply, a POST repeated after its answer was lost) is logged
and ignored: it never restarts or fails a finished upload.

Width: an upload starts on ``connections`` workers; on a slow link (POSTs of more than 0.1 s
at under 16 MB/s) the width doubles while it raises the measured throughput (``widen.py``:
the far profile of ``scripts/bench --wan``, 20 Mbit/s per connection and 100 in total, needs
more than 4 connections: 4 carried 0.7 of the link), up to the client's shared budget of 4 more.

Memory is bounded: each of at most ``connections`` workers (plus the client's widening budget,
4, shared by every upload) holds one span buffer (at most ``SPAN``, never more than the file)
and a 1 MiB scratch, whatever the file size; the file is read with ``preadv`` at 64-bit offsets
and never whole.  Never logs the upload URL's token; keeps only its origin (``preconnect``).
"""
from __future__ import annotations

import errno
import logging
import mmap
import os
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Callable
from urllib.parse import urlsplit

from .. import chunks, crypto, sealing
from ..osio import read_at
from ..crypto import FileKey, upload_checksum
from ..errors import (ApiCode, Cancelled, MegaError, ProtocolError, TransportError,
                      UploadFailed, Verdict, classify)
from ..retry import Backoff, RetryPolicy
from . import commands
from .http import (HTTP_DEAD_URL_STATUSES, HTTP_OVER_QUOTA, HTTP_RETRY_STATUSES, HttpPool,
                   parse_error_body, redact_url)
from .wire import TransferInterrupted, transfer_buffer
from .transport import Transport
from .widen import Budget, Crew, Widener

log = logging.getLogger(__name__)

SPAN = 4 * chunks.MIB               # most bytes per POST (whole MAC chunks); see span_for
SCRATCH = chunks.MIB                # per worker: CBC-MAC output (one call a chunk), checksum
TOKEN_BYTES = 36
TRANSFER_TIMEOUT = (10.0, 120.0)    # (connect, read) per POST

# (file key, {chunk offset: MAC}) made while a file was written (writeback.premac.Premac
# makes them): a type of its own name, not a second "Premac"
PremadeMacs = tuple[FileKey, dict[int, bytes]]
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
    code = parse_error_body(body)
    if code is not None:
        return "error", code
    if len(body) == TOKEN_BYTES:
        return "token", crypto.b64encode(body)
    return "invalid", len(body)


def post_url(base: str, offset: int, checksum: bytes) -> str:
    """``{url}/{offset}?c={b64 checksum}``; offsets are plain decimal, 64-bit and beyond."""
    return "%s/%d?c=%s" % (base.rstrip("/"), offset, crypto.b64encode(checksum))


def seal_span(key: FileKey, offset: int, view: memoryview,
              scratch: bytearray | memoryview | mmap.mmap | None = None
              ) -> list[tuple[int, bytes]]:
    """Encrypt a chunk-aligned span in place; return the (offset, chunk MAC)s of its plaintext.

    The span's chunks are MACed and encrypted on every core (``sealing.seal_chunks``): one
    worker's 4 MiB span keeps both cores busy even when the other workers wait for the server.
    Nothing the size of the span is allocated (``scratch`` is no longer needed; kept for
    callers).
    """
    return sealing.seal_chunks(key.aes_key, key.nonce, offset, view)


def encrypt_span(key: FileKey, offset: int, plaintext: bytes
                 ) -> tuple[bytes, list[tuple[int, bytes]]]:
    """Encrypt one chunk-aligned span; return the ciphertext and its (offset, chunk MAC)s."""
    buf = bytearray(plaintext)
    macs = seal_span(key, offset, memoryview(buf), bytearray(SCRATCH))
    return bytes(buf), macs


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
        self.span = max(span, chunks.MIB)   # a span holds at least one whole MAC chunk
        self.timeout = timeout
        self.max_in_flight = 0      # observed high-water mark of spans held in memory (tests)
        self.budget = Budget()      # workers beyond ``connections`` on slow links (widen.py)
        self.learned_width: int | None = None   # the last big upload's width (widen.py)
        self.upload_origin: str | None = None   # scheme://host:port of the last upload URL

    def upload(self, path: str, *, progress: Progress | None = None,
               cancel: threading.Event | None = None, premac: PremadeMacs | None = None,
               url: tuple[str, int] | None = None) -> Uploaded:
        """Upload a file; ``premac`` = (file key, {chunk offset: chunk MAC}) computed while the
        file was written: those chunks are only encrypted, not MACed again.  ``url`` = (upload
        URL, size it was asked for) from ``upload_urls``: the first attempt uses it when the
        file still has that size, instead of its own ``u``."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise UploadFailed("cannot read %s: %s" % (path, exc.strerror)) from None
        try:
            size = os.fstat(fd).st_size
            return self.upload_fd(fd, size, progress=progress, cancel=cancel, premac=premac,
                                  url=url)
        finally:
            os.close(fd)

    def upload_fd(self, fd: int, size: int, *, progress: Progress | None = None,
                  cancel: threading.Event | None = None, premac: PremadeMacs | None = None,
                  url: tuple[str, int] | None = None) -> Uploaded:
        """Upload ``size`` bytes of the open file ``fd`` (read with preadv, offset 0); ``url``
        as in ``upload``."""
        given = url[0] if url is not None and url[1] == size else None
        backoff = Backoff(self.retry, "upload", cancel)
        attempt = 0
        while True:
            attempt += 1
            if premac is not None and attempt == 1:
                key, known = premac          # the key the chunk MACs were made under
            else:
                # fresh key per attempt (also after a premac first one): a key never encrypts
                # two contents, so no CTR keystream is reused
                key, known = crypto.new_file_key(), {}
            try:
                target = given if given is not None else self._get_url(size, cancel)
                given = None                 # a restart asks for a new URL
                token, meta_mac = self._attempt(fd, size, target, key, progress, cancel, known)
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
            return Uploaded(token, key.with_mac(meta_mac), size)

    def upload_urls(self, sizes: list[int], cancel: threading.Event | None = None
                    ) -> list[str | Exception]:
        """Upload URLs for files of ``sizes`` bytes: one ``u`` each, all in one batch (one
        request through the session's lane, as the SDK's transfer slots do).  Per size the
        URL or that slot's error (MegaError, ProtocolError); raises what fails the batch."""
        https = self.transport.https_transfers
        replies = self.transport.batch([commands.upload_url(s, https) for s in sizes],
                                       cancel=cancel)
        out: list[str | Exception] = []
        for reply in replies:
            try:
                out.append(self._seen(commands.parse_upload_url(reply)))
            except (MegaError, ProtocolError) as exc:
                out.append(exc)
        return out

    def preconnect(self, count: int) -> int:
        """``HttpPool.preconnect`` of up to ``count`` connections to the host of the last
        upload URL, where the next uploads most likely go (a burst of small files' POSTs then
        skips the handshakes: issue 23); how many it started, 0 before the first ``u``."""
        origin = self.upload_origin
        return self.pool.preconnect(origin + "/", count, self.timeout[0]) if origin else 0

    def _seen(self, url: str) -> str:
        """Remember ``url``'s origin (never its path: it carries the upload's token)."""
        parts = urlsplit(url)
        self.upload_origin = "%s://%s" % (parts.scheme, parts.netloc)
        return url

    def _get_url(self, size: int, cancel: threading.Event | None) -> str:
        command = commands.upload_url(size, self.transport.https_transfers)
        reply = self.transport.batch([command], cancel=cancel)[0]
        return self._seen(commands.parse_upload_url(reply))

    def _attempt(self, fd: int, size: int, url: str, key: FileKey, progress: Progress | None,
                 cancel: threading.Event | None, known: dict[int, bytes] | None = None
                 ) -> tuple[str, bytes]:
        """One try on one URL: (completion token, meta-MAC), or _Restart / the error."""
        macs = crypto.MacAccumulator(key.aes_key)
        target = self.span_for(size)
        spans = list(chunks.groups(size, target))
        state = _AttemptState(cancel, spans)
        width = min(self.connections, len(spans))
        job = _Job(fd, url, key, macs, state, progress, max(1, min(target, size)),
                   known or {}, Widener(width, self.budget, limit=len(spans),
                                        start=self.learned_width))
        job.crew = Crew(lambda: self._worker(job), "megafs-upload", state.stop)
        try:
            job.crew.run(job.widener.width)
        finally:
            job.widener.close()
            if len(spans) > 4 * width:       # long enough to have measured the link
                self.learned_width = job.widener.learned
        if state.token is not None:     # finished: whatever else happened does not matter
            try:
                return state.token, macs.meta_mac(size)
            except ValueError:          # only a broken server sends it before every byte
                raise _Restart("completion token before every byte was sent") from None
        if state.error is not None:
            raise state.error
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        raise _Restart("all bytes sent but no completion token")

    def span_for(self, size: int) -> int:
        """POST size for a file: at least four spans per connection, so all are kept busy
        (1 MiB up to 4 x connections MiB), at most ``self.span``; whole MAC chunks."""
        share = size // (4 * self.connections) // chunks.MIB * chunks.MIB
        return max(chunks.MIB, min(self.span, share))

    def _worker(self, job: "_Job") -> None:
        """Take spans until none are left or the attempt stops; record the first error."""
        state = job.state
        buf: mmap.mmap | None = None
        scratch: mmap.mmap | None = None
        try:
            while not state.stop.is_set():
                with state.lock:
                    if not state.pending:
                        return
                    offset, length = state.pending.pop()
                    if length > chunks.MIB and job.widener.width > job.widener.base and \
                            sum(n for _, n in state.pending) < job.widener.width * length:
                        # the tail on a slow link: spans of 1 MiB, so the last POSTs do not
                        # run alone on a few connections (a 5 MiB POST at 2.5 MB/s is 2 s)
                        pieces = chunks.split_span(offset, length, chunks.MIB)
                        offset, length = pieces[0]
                        state.pending.extend(reversed(pieces[1:]))
                    state.in_flight += 1
                    self.max_in_flight = max(self.max_in_flight, state.in_flight)
                try:
                    if buf is None:   # page-aligned: see wire.transfer_buffer
                        buf = transfer_buffer(job.buffer_size)
                        scratch = transfer_buffer(max(4096, min(SCRATCH, job.buffer_size)))
                    assert scratch is not None
                    started = time.monotonic()
                    self._send_span(job, offset, memoryview(buf)[:length], scratch)
                finally:
                    with state.lock:
                        state.in_flight -= 1
                        left = len(state.pending)
                for _ in range(job.widener.record(length, started, time.monotonic(), left)):
                    if job.crew:
                        job.crew.add()   # a slow link that more connections fill better
        except BaseException as exc:  # noqa: B902 - handed to the calling thread
            if isinstance(exc, Cancelled) and not state.stop.cancelled():
                return  # this worker stopped because another one failed first
            state.fail(exc)

    def _send_span(self, job: "_Job", offset: int, view: memoryview,
                   scratch: mmap.mmap) -> None:
        state, length = job.state, len(view)
        if read_at(job.fd, view, offset) != length:
            raise UploadFailed("file shrank while uploading (short read at offset %d)" % offset)
        premacs = _known_macs(job.known, offset, length)
        if premacs is not None:          # MACed while the file was written: encrypt only
            crypto.ctr_crypt(job.key.aes_key, job.key.nonce, offset, view, output=view)
        else:
            premacs = seal_span(job.key, offset, view, scratch)
        for chunk_offset, mac in premacs:
            job.macs.add(chunk_offset, mac)
        target = post_url(job.url, offset, upload_checksum(view, scratch))
        what = "upload POST @%d (%d bytes) to %s" % (offset, length, redact_url(job.url))
        backoff = Backoff(self.retry, what, state.stop)
        while not state.stop.is_set():
            try:
                reply = self.pool.transfer("POST", target, body=view, timeout=self.timeout,
                                           headers={"Content-Type": "application/octet-stream"})
            except TransferInterrupted as exc:
                backoff.wait(str(exc))
                continue
            except ValueError:
                raise TransportError("%s: not an http(s) URL" % what) from None
            status = reply.status
            if status in HTTP_DEAD_URL_STATUSES:
                raise _Restart("upload server answered HTTP %d" % status)
            if status in HTTP_RETRY_STATUSES:
                backoff.wait("HTTP %d" % status)
                continue
            if status == HTTP_OVER_QUOTA:
                raise MegaError(ApiCode.EOVERQUOTA,
                                "upload server: transfer quota exceeded (HTTP 509)")
            if status != HTTPStatus.OK:
                raise TransportError("%s: HTTP %d" % (what, status))
            kind, value = parse_post_reply(reply.body)
            if reply.overflow:
                kind, value = "invalid", "%d+" % len(reply.body)
            if kind == "error":
                code = int(value)  # type: ignore[call-overload]
                verdict = classify(code, "transfer")
                if verdict is Verdict.TRANSIENT:
                    backoff.wait("upload server answered %d" % code)
                    continue
                if verdict is Verdict.NEW_URL:
                    raise _Restart("upload server answered %s" % MegaError(code))
                raise MegaError(code, "upload server")
            if kind == "invalid":
                raise _Restart("upload server sent a %s-byte reply that is not a completion "
                               "token" % value)
            state.sent(length, str(value) if kind == "token" else None)
            if job.progress:
                job.progress(state.done)
            return


@dataclass
class _Job:
    """What every worker of one attempt shares (read-only but for ``state`` and ``macs``)."""

    fd: int
    url: str
    key: FileKey
    macs: crypto.MacAccumulator
    state: "_AttemptState"
    progress: Progress | None
    buffer_size: int
    known: dict[int, bytes]          # chunk MACs computed while the file was written
    widener: Widener                 # how many workers: grows on slow links (widen.py)
    crew: Crew | None = None


def _known_macs(known: dict[int, bytes], offset: int, length: int
                ) -> list[tuple[int, bytes]] | None:
    """The precomputed MACs of every chunk of a span, or None if any is missing."""
    if not known:
        return None
    out = []
    pos, end = offset, offset + length
    while pos < end:
        mac = known.get(pos)
        if mac is None:
            return None
        out.append((pos, mac))
        pos += min(chunks.size_at(pos), end - pos)
    return out


class _AttemptState:
    """Shared by one attempt's workers; ``lock`` guards everything but ``stop``."""

    def __init__(self, cancel: threading.Event | None,
                 spans: list[tuple[int, int]]) -> None:
        self.lock = threading.Lock()
        self.stop = _LinkedEvent(cancel)
        self.pending = spans[::-1]       # popped from the end: lowest offsets first
        self.token: str | None = None
        self.error: BaseException | None = None
        self.done = 0
        self.in_flight = 0

    def sent(self, length: int, token: str | None) -> None:
        """A POST of ``length`` bytes was stored; ``token`` if it completed the file.

        The first token wins and stops the other workers: every byte is stored by then.
        """
        with self.lock:
            self.done += length
            if token is None or self.token is not None:
                return
            self.token = token
        self.stop.set()

    def fail(self, error: BaseException) -> None:
        """Record the first error and stop the other workers; after the completion token,
        errors do not count (see the module docstring)."""
        with self.lock:
            if self.token is not None:
                log.debug("upload already complete; ignoring a late error: %s", error)
                return
            if self.error is None:
                self.error = error
        self.stop.set()


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
