"""Upload URLs of the local MEGA server, without the HTTP details.

``POST {p}/{offset}[?c=|?d=checksum]``: each POST carries ciphertext for
``[offset, offset+len)``; it must start on a MEGA chunk boundary and end on one or at EOF
(``-7`` otherwise, as the transfer servers document), may arrive in parallel and out of
order, and is written with ``pwrite`` into ``uploads/<token>.part`` once its checksum matched
(a bad POST never touches the file).  The received ranges are recorded in SQLite after the
write, so a restart resumes the upload and a crash can only lose bytes the client will resend.
The POST that completes the file fsyncs it, records the completion token (write-ahead) and
renames it into ``blobs/``; it answers the 36-byte completion token (raw bytes ending in 0x01
when ``u`` had ``v>=2``, ASCII otherwise).

A POST to an upload URL that has already completed answers ``-4`` by default (policy
``late_upload_post``): the URL is spent, as on megad where -4 means "the upload cannot be
continued on that server" (meganz/sdk src/transferslot.cpp).  Which code the real service
sends here is a guess; ``"token"`` answers the completion token again instead.

Concurrency: the data of different POSTs to one upload is written in parallel (different
ranges, or identical bytes for a repeated range); each upload's condition (``_Entry``)
serialises the bookkeeping (ranges, completion, expiry).  The completing POST waits until no
other write to that upload is in flight before it fsyncs and renames, and the janitor only
expires an upload that has no write in flight, so a blob never changes after completion and a
part file never vanishes under a write.  Different uploads never wait for each other.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass

from .. import chunks, crypto
from ..errors import ApiCode
from .blobio import ALIGN, O_DIRECT, pwrite_all
from .config import Policy
from .db import covers, merge_ranges
from .store import State

log = logging.getLogger(__name__)

CHECKSUM_BYTES = 12
DAEMON_EFAILED = ApiCode.ERATELIMIT   # -4 from a transfer server: EFAILED (SDK types.h)
MAX_ENTRIES = 4096
_OFFSET_RE = re.compile(r"^[0-9]{1,19}$")


@dataclass
class UploadReply:
    code: int | None = None        # MEGA error code to answer as the body
    token: bytes | None = None     # the completion token
    missing: bool = False          # no such upload URL (HTTP 404)
    warning: str = ""              # why the POST was refused, for the log
    late: bool = False             # the URL had completed before this POST


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
    def __init__(self, state: State, policy: Policy) -> None:
        self.state = state
        self.policy = policy
        self._entries: dict[str, _Entry] = {}
        self._entries_guard = threading.Lock()
        self._activity: dict[str, float] = {}       # token -> wall-clock time of the last POST
        self.started = time.time()
        self.completed = 0
        self.bytes_received = 0
        self.direct = O_DIRECT != 0     # until the filesystem refuses O_DIRECT

    def _entry(self, token: str) -> _Entry:
        with self._entries_guard:
            entry = self._entries.get(token)
            if entry is None:
                if len(self._entries) > MAX_ENTRIES:
                    for key in [k for k, e in self._entries.items()
                                if not e.writing and not e.completing]:
                        del self._entries[key]
                entry = self._entries[token] = _Entry()
            self._activity[token] = time.time()
            return entry

    def idle_for(self, token: str, created: int) -> float:
        """Seconds since the last POST to ``token``, or since it was made (``created``, whole
        seconds, so one more) or this process started, whichever came last."""
        with self._entries_guard:
            last = self._activity.get(token, 0.0)
        return time.time() - max(last, created + 1, self.started)

    def forget(self, token: str) -> None:
        with self._entries_guard:
            self._activity.pop(token, None)
            entry = self._entries.get(token)
            if entry is not None and not entry.writing and not entry.completing:
                del self._entries[token]

    def expire(self, token: str, idle: float | None = None) -> bool:
        """Expire an incomplete upload (-8 from now on) and delete its bytes; with ``idle``,
        only if no POST came for that long and none is in flight."""
        entry = self._entry(token) if idle is None else self._entries.get(token)
        cond = entry.cond if entry is not None else threading.Condition()
        with cond:
            if entry is not None and (entry.writing or entry.completing):
                return False
            up = self.state.upload(token)
            if up is None or up.completion is not None or up.expired:
                return False
            if idle is not None and self.idle_for(token, up.created) < idle:
                return False
            freed = self.state.expire_upload(token)
        log.info("upload %s... expired%s; %d bytes freed", token[:6],
                 " after %.0f s without data" % idle if idle is not None else "", freed)
        return True

    def post(self, token: str, offset_text: str, body: bytes | memoryview,
             checksum: str | None, scratch: bytearray | memoryview | None = None
             ) -> UploadReply:
        """Verify and store one POST; ``scratch`` is optional room for the checksum fold."""
        length = memoryview(body).nbytes
        refused = self.check_before_body(token, offset_text, length)
        if refused is not None:
            return refused
        offset = int(offset_text)
        end = offset + length
        if checksum is not None:
            try:
                expected = crypto.b64decode(checksum)
            except ValueError:
                expected = b""
            if len(expected) != CHECKSUM_BYTES:
                return UploadReply(code=ApiCode.EARGS,
                                   warning="upload checksum is not 12 bytes base64")
            if crypto.upload_checksum(body, scratch) != expected:
                return UploadReply(code=ApiCode.EKEY, warning="upload checksum mismatch at "
                                   "offset %d" % offset)
        entry = self._entry(token)
        with entry.cond:
            while entry.completing:
                entry.cond.wait()
            reply = self._settled(token)
            if reply is not None:
                return reply
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
            reply = self._settled(token)
            if reply is not None:
                return reply
            current = self.state.upload(token)
            assert current is not None
            self.bytes_received += length
            ranges = merge_ranges(current.ranges, offset, end)
            if not covers(ranges, current.size):
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
                    os.ftruncate(fd, current.size)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                completion = new_completion_token(current.raw)
                self.state.complete_upload(current, ranges, completion)
            finally:
                entry.completing = False
                entry.cond.notify_all()
            self.completed += 1
            log.debug("upload %s... complete: %d bytes", token[:6], current.size)
            return UploadReply(token=completion)

    def check_before_body(self, token: str, offset_text: str, length: int | None
                          ) -> UploadReply | None:
        """The answer to a POST of ``length`` bytes (None: not known yet) at ``offset_text``
        that needs no body: an unknown (404) or expired URL, a malformed offset, a range
        beyond the upload's size or off the chunk boundaries; None if the body is wanted.  The
        transfer endpoint asks this before it reads a body (issue 20: bodies of up to 256 MiB
        were read for URLs that did not exist)."""
        up = self.state.upload(token)
        if up is None:
            return UploadReply(missing=True)
        if up.expired:
            return UploadReply(code=ApiCode.EEXPIRED)
        if not _OFFSET_RE.match(offset_text):
            return UploadReply(code=ApiCode.EARGS, warning="upload offset %r is not a number"
                               % offset_text[:20])
        if length is None:
            return None
        offset = int(offset_text)
        end = offset + length
        if end > up.size:
            return UploadReply(code=ApiCode.ERANGE, warning="upload range %d-%d is beyond the "
                               "size %d" % (offset, end, up.size))
        if not chunks.is_boundary(offset) or not (end == up.size or chunks.is_boundary(end)):
            return UploadReply(code=ApiCode.ERANGE, warning="upload range %d-%d is not on "
                               "chunk boundaries" % (offset, end))
        return None

    def _settled(self, token: str) -> UploadReply | None:
        """The answer for an upload that is gone, expired or complete (caller holds its cond)."""
        up = self.state.upload(token)
        if up is None:
            return UploadReply(missing=True)
        if up.expired:
            return UploadReply(code=ApiCode.EEXPIRED)
        if up.completion is not None:
            if self.policy.late_upload_post == "token":
                return UploadReply(token=up.completion, late=True)
            return UploadReply(code=DAEMON_EFAILED, late=True)
        return None

    def _write(self, path: str, data: memoryview, offset: int) -> None:
        """``data`` at ``offset`` of the part file: aligned pieces O_DIRECT, the rest buffered."""
        direct = len(data) - len(data) % ALIGN if self.direct and offset % ALIGN == 0 else 0
        if direct:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | O_DIRECT, 0o600)
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
