"""Upload and download URLs of the local MEGA server, without the HTTP details.

Uploads (``POST {p}/{offset}[?c=|?d=checksum]``): each POST carries ciphertext for
``[offset, offset+len)``; it must start on a MEGA chunk boundary and end on one or at EOF
(``-7`` otherwise, as the transfer servers document), may arrive in parallel and out of
order, and is written with ``pwrite`` into ``uploads/<token>.part`` once its checksum matched
(a bad POST never touches the file).  The received ranges are recorded in SQLite after the
write, so a restart resumes the upload and a crash can only lose bytes the client will resend.
The POST that completes the file fsyncs it, records the completion token (write-ahead) and
renames it into ``blobs/``; that POST, and any later one to the same URL, answers the 36-byte
completion token (raw bytes ending in 0x01 when ``u`` had ``v>=2``, ASCII otherwise).

Downloads: ``dl/<blob id>`` serves the stored ciphertext; the HTTP layer maps the four
request forms to (start, end) and streams ``read_pieces``.

Blob I/O bypasses the page cache (``O_DIRECT``) where the filesystem allows it: on this 2-core
VM, writing into fresh page-cache pages cost 2.5-4 ms per MiB (the hypervisor backs each new
guest page on first touch; 250-400 MiB/s for 1 GiB of ``pwrite``), more than the client's
AES-CTR + CBC-MAC of that MiB, while ``O_DIRECT`` writes ran at 1.1-1.3 GiB/s and left
nothing for the completing ``fsync`` to flush.  Aligned pieces (offsets are chunk boundaries,
multiples of 128 KiB) go direct from the HTTP layer's page-aligned buffers; the unaligned tail
of a file, and everything on filesystems without ``O_DIRECT`` (tmpfs: ``EINVAL``), use
ordinary ``pwrite``/``pread``.

Concurrency: the data of different POSTs to one upload is written in parallel (different
ranges, or identical bytes for a repeated range); each upload's condition (``_Entry``)
serialises the bookkeeping (ranges, completion).  The completing POST waits until no other
write to that upload is in flight before it fsyncs and renames, and later POSTs answer the
token without writing, so a blob never changes after completion.  Different uploads never
wait for each other.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass
from typing import Iterator

from .. import chunks, crypto
from .state import State, covers, merge_ranges

log = logging.getLogger(__name__)

CHECKSUM_BYTES = 12
READ_PIECE = 1 << 20
ALIGN = 4096                          # O_DIRECT offset/length/buffer alignment (safe for 512)
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_OFFSET_RE = re.compile(r"^[0-9]{1,19}$")


@dataclass
class UploadReply:
    code: int | None = None        # MEGA error code to answer as the body
    token: bytes | None = None     # the completion token
    missing: bool = False          # no such upload URL (HTTP 404)
    warning: str = ""              # why the POST was refused, for the log


def new_completion_token(raw: bool) -> bytes:
    if raw:
        return secrets.token_bytes(35) + b"\x01"
    return secrets.token_urlsafe(27).encode("ascii")     # 36 ASCII characters


class _Entry:
    """Per-upload coordination: writes in flight and whether the upload is completing."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.writing = 0
        self.completing = False


class Uploads:
    def __init__(self, state: State) -> None:
        self.state = state
        self._entries: dict[str, _Entry] = {}
        self._entries_guard = threading.Lock()
        self.completed = 0
        self.bytes_received = 0
        self.direct = _O_DIRECT != 0     # until the filesystem refuses O_DIRECT

    def _entry(self, token: str) -> _Entry:
        with self._entries_guard:
            entry = self._entries.get(token)
            if entry is None:
                if len(self._entries) > 4096:
                    for key in [k for k, e in self._entries.items()
                                if not e.writing and not e.completing]:
                        del self._entries[key]
                entry = self._entries[token] = _Entry()
            return entry

    def expire(self, token: str) -> bool:
        if self.state.upload(token) is None:
            return False
        self.state.expire_upload(token)
        return True

    def known(self, token: str) -> bool:
        return self.state.upload(token) is not None

    def post(self, token: str, offset_text: str, body: bytes | memoryview,
             checksum: str | None, scratch: bytearray | memoryview | None = None
             ) -> UploadReply:
        """Verify and store one POST; ``scratch`` is optional room for the checksum fold."""
        up = self.state.upload(token)
        if up is None:
            return UploadReply(missing=True)
        if up.expired:
            return UploadReply(code=-8)
        if not _OFFSET_RE.match(offset_text):
            return UploadReply(code=-2, warning="upload offset %r is not a number"
                               % offset_text[:20])
        offset = int(offset_text)
        length = memoryview(body).nbytes
        end = offset + length
        if end > up.size:
            return UploadReply(code=-7, warning="upload range %d-%d is beyond the size %d"
                               % (offset, end, up.size))
        if not chunks.is_boundary(offset) or not (end == up.size or chunks.is_boundary(end)):
            return UploadReply(code=-7, warning="upload range %d-%d is not on chunk boundaries"
                               % (offset, end))
        if checksum is not None:
            try:
                expected = crypto.b64decode(checksum)
            except ValueError:
                expected = b""
            if len(expected) != CHECKSUM_BYTES:
                return UploadReply(code=-2, warning="upload checksum is not 12 bytes base64")
            if crypto.upload_checksum(body, scratch) != expected:
                return UploadReply(code=-14, warning="upload checksum mismatch at offset %d"
                                   % offset)
        entry = self._entry(token)
        with entry.cond:
            while entry.completing:
                entry.cond.wait()
            up = self.state.upload(token)
            if up is None:
                return UploadReply(missing=True)
            if up.expired:
                return UploadReply(code=-8)
            if up.completion is not None:
                return UploadReply(token=up.completion)
            entry.writing += 1
        part = str(self.state.part_path(token))
        try:
            if length:
                self._write(part, memoryview(body).cast("B"), offset)
            else:
                os.close(os.open(part, os.O_WRONLY | os.O_CREAT, 0o600))
        finally:
            with entry.cond:
                entry.writing -= 1
                entry.cond.notify_all()
        with entry.cond:
            while entry.completing:
                entry.cond.wait()
            up = self.state.upload(token)
            if up is None:
                return UploadReply(missing=True)
            if up.completion is not None:
                return UploadReply(token=up.completion)
            self.bytes_received += length
            ranges = merge_ranges(up.ranges, offset, end)
            if not covers(ranges, up.size):
                self.state.save_ranges(token, ranges)
                return UploadReply()
            # Complete: no other write to this upload may be in flight when the part file is
            # fsynced and renamed (they are repeats of covered ranges; let them land first).
            entry.completing = True
            try:
                while entry.writing:
                    entry.cond.wait()
                fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    os.ftruncate(fd, up.size)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                completion = new_completion_token(up.raw)
                self.state.complete_upload(up, ranges, completion)
            finally:
                entry.completing = False
                entry.cond.notify_all()
            self.completed += 1
            log.debug("upload %s... complete: %d bytes", token[:6], up.size)
            return UploadReply(token=completion)

    def _write(self, path: str, data: memoryview, offset: int) -> None:
        """``data`` at ``offset`` of the part file: aligned pieces O_DIRECT, the rest buffered."""
        direct = len(data) - len(data) % ALIGN if self.direct and offset % ALIGN == 0 else 0
        if direct:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | _O_DIRECT, 0o600)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                log.info("upload directory does not support O_DIRECT; using buffered writes")
                self.direct = False
                direct = 0
            else:
                try:
                    pwrite_all(fd, data[:direct], offset)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    direct = 0   # e.g. a body that is not in an aligned buffer
                finally:
                    os.close(fd)
        if direct < len(data):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                pwrite_all(fd, data[direct:], offset + direct)
            finally:
                os.close(fd)


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


def blob_size(state: State, blob: str) -> int | None:
    try:
        return os.stat(state.blob_path(blob)).st_size
    except (OSError, ValueError):
        return None


def open_blob(state: State, blob: str) -> int | None:
    try:
        return os.open(str(state.blob_path(blob)), os.O_RDONLY)
    except (OSError, ValueError):
        return None


def open_blob_direct(state: State, blob: str) -> int | None:
    """An O_DIRECT descriptor for the blob, or None where the filesystem has no O_DIRECT."""
    if not _O_DIRECT:
        return None
    try:
        return os.open(str(state.blob_path(blob)), os.O_RDONLY | _O_DIRECT)
    except (OSError, ValueError):
        return None


def read_pieces(fd: int, start: int, length: int, buf: memoryview | None = None,
                direct_fd: int | None = None) -> Iterator[bytes | memoryview]:
    """Yield the bytes [start, start+length) of an open blob in pieces.

    Without ``buf``: new ``bytes`` of at most 1 MiB each.  With ``buf`` (page-aligned,
    writable, a multiple of ``ALIGN`` long): views into it, each valid until the next piece is
    asked for, read through ``direct_fd`` (O_DIRECT, whole aligned blocks around the range)
    when given, falling back to ``fd`` for anything O_DIRECT refuses.
    """
    pos, end = start, start + length
    if buf is None:
        while pos < end:
            data = os.pread(fd, min(READ_PIECE, end - pos), pos)
            if not data:
                return
            yield data
            pos += len(data)
        return
    size = len(buf) - len(buf) % ALIGN
    while pos < end:
        got = None
        if direct_fd is not None:
            base = pos - pos % ALIGN
            want = min(size, -(-(end - base) // ALIGN) * ALIGN)
            try:
                n = _readinto(direct_fd, buf[:want], base)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                direct_fd = None
            else:
                if n <= pos - base:
                    return
                got = buf[pos - base:min(n, end - base)]
        if got is None:
            n = _readinto(fd, buf[:min(size, end - pos)], pos)
            if not n:
                return
            got = buf[:n]
        yield got
        pos += len(got)


def _readinto(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from ``offset``; fewer bytes only at end of file."""
    got = 0
    while got < len(view):
        if _preadv is not None:
            n = _preadv(fd, [view[got:]], offset + got)
        else:
            data = os.pread(fd, len(view) - got, offset + got)
            n = len(data)
            view[got:got + n] = data
        if not n:
            break
        got += n
        if got % ALIGN:
            break   # a short read that is not block-aligned: end of file (O_DIRECT)
    return got


_preadv = getattr(os, "preadv", None)
