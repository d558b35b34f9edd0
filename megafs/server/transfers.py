"""Upload and download URLs of the local MEGA server, without the HTTP details.

Uploads (``POST {p}/{offset}[?c=|?d=checksum]``): each POST carries ciphertext for
``[offset, offset+len)``; it must start on a MEGA chunk boundary and end on one or at EOF
(``-7`` otherwise, as the transfer servers document), may arrive in parallel and out of
order, and is written with ``pwrite`` into ``uploads/<token>.part``.  The received ranges are
recorded in SQLite after the write, so a restart resumes the upload and a crash can only lose
bytes the client will resend.  The POST that completes the file fsyncs it, records the
completion token (write-ahead) and renames it into ``blobs/``; that POST, and any later one
to the same URL, answers the 36-byte completion token (raw bytes ending in 0x01 when ``u``
had ``v>=2``, ASCII otherwise).

Downloads: ``dl/<blob id>`` serves the stored ciphertext; the HTTP layer maps the four
request forms to (start, end) and streams ``read_range``.

Per-upload locks serialise the writes of one upload (the expensive part, reading the request
body off the socket, happens before); different uploads never wait for each other.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass

from .. import chunks, crypto
from .state import State, covers, merge_ranges

log = logging.getLogger(__name__)

CHECKSUM_BYTES = 12
READ_PIECE = 1 << 20
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


class Uploads:
    def __init__(self, state: State) -> None:
        self.state = state
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.completed = 0
        self.bytes_received = 0

    def _lock(self, token: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(token)
            if lock is None:
                if len(self._locks) > 4096:
                    for key in [k for k, v in self._locks.items() if not v.locked()]:
                        del self._locks[key]
                lock = self._locks[token] = threading.Lock()
            return lock

    def expire(self, token: str) -> bool:
        if self.state.upload(token) is None:
            return False
        self.state.expire_upload(token)
        return True

    def known(self, token: str) -> bool:
        return self.state.upload(token) is not None

    def post(self, token: str, offset_text: str, body: bytes,
             checksum: str | None) -> UploadReply:
        up = self.state.upload(token)
        if up is None:
            return UploadReply(missing=True)
        if up.expired:
            return UploadReply(code=-8)
        if not _OFFSET_RE.match(offset_text):
            return UploadReply(code=-2, warning="upload offset %r is not a number"
                               % offset_text[:20])
        offset = int(offset_text)
        end = offset + len(body)
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
            if crypto.upload_checksum(body) != expected:
                return UploadReply(code=-14, warning="upload checksum mismatch at offset %d"
                                   % offset)
        with self._lock(token):
            up = self.state.upload(token)
            if up is None:
                return UploadReply(missing=True)
            if up.expired:
                return UploadReply(code=-8)
            if up.completion is not None:
                return UploadReply(token=up.completion)
            part = self.state.part_path(token)
            fd = os.open(str(part), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if body:
                    os.pwrite(fd, body, offset)
                ranges = merge_ranges(up.ranges, offset, end)
                done = covers(ranges, up.size)
                if done:
                    os.ftruncate(fd, up.size)
                    os.fsync(fd)
            finally:
                os.close(fd)
            self.bytes_received += len(body)
            if not done:
                self.state.save_ranges(token, ranges)
                return UploadReply()
            completion = new_completion_token(up.raw)
            self.state.complete_upload(up, ranges, completion)
            self.completed += 1
            log.debug("upload %s... complete: %d bytes", token[:6], up.size)
            return UploadReply(token=completion)


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


def read_pieces(fd: int, start: int, length: int):
    """Yield the bytes [start, start+length) of an open blob in pieces of at most 1 MiB."""
    pos, end = start, start + length
    while pos < end:
        data = os.pread(fd, min(READ_PIECE, end - pos), pos)
        if not data:
            return
        yield data
        pos += len(data)
