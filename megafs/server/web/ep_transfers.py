"""Transfer endpoints: ``POST /ul/<token>/<offset>`` (upload data, ``uploads.py``) and the
download URL ``/dl/<blob>`` in its four forms (``GET {g}``, ``GET {g}/{a}-{b}``, ``POST
{g}/{a}-{b}`` with an empty body, ``GET {g}`` with ``Range: bytes=a-b``), served on the API
listener (http) and, with ``--tls``, on the transfers listener (https).

A download past the transfer quota answers HTTP 509 with ``X-MEGA-Time-Left`` (see
``transfer_quota.py``).  Downloads are read into a page-aligned buffer and sent from it; the
body normally has a Content-Length, and a ``framing`` fault sends it chunked or
connection-delimited instead.
"""
from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING

from ..blobio import blob_size, open_blob, open_blob_direct, read_pieces
from .endpoint import Endpoint, Prepared, StreamEffect
from .fault_apply import HTTP_BANDWIDTH_EXCEEDED, UPLOAD_BODY_LIMIT
from ..uploads import UploadReply
from .request import BINARY_TYPE, TEXT_TYPE, BadRequest, Request

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger(__name__)

DOWNLOAD_PIECE = 1 << 20    # at least this many bytes read from the blob and sent per step
SCRATCH_BYTES = 1 << 20     # room for the upload checksum fold
# A POST refused before its body (unknown or expired URL, bad range) of up to this many bytes
# is read and dropped, never kept, so a client sees the answer on a live connection; a larger
# one is not read at all and the connection closes.
DRAIN_LIMIT = 64 << 20
HTTP_NOT_FOUND = 404
HTTP_PARTIAL = 206
HTTP_RANGE_NOT_SATISFIABLE = 416
_RANGE_RE = re.compile(r"^([0-9]{1,19})-([0-9]{0,19})$")
_RANGE_HEADER_RE = re.compile(r"^bytes=([0-9]{0,19})-([0-9]{0,19})$")


class UploadEndpoint(Endpoint):
    channel = "upload"
    kind = "upload"

    def prepare(self, app: "App", req: Request) -> Prepared | None:
        """Answer before the body is kept what the URL and the announced length settle: an
        unknown or expired URL, a bad offset or range (the body is dropped, see DRAIN_LIMIT)."""
        token = req.params["token"]
        length = None if req.is_chunked() else req.body_length(1 << 62)
        reply = app.uploads.check_before_body(token, req.params.get("offset") or "", length)
        if reply is not None:
            req.drain_body(DRAIN_LIMIT)
            _answer(app, req, token, reply)
            return None
        return Prepared(token=token)

    def serve(self, app: "App", req: Request, prep: Prepared,
              effect: StreamEffect | None) -> None:
        token = prep.token
        body = req.read_body_into_buffer(UPLOAD_BODY_LIMIT)
        if body is None:
            log.warning("upload: POST body over %d bytes; answering -7", UPLOAD_BODY_LIMIT)
            req.reply(200, b"-7", TEXT_TYPE)
            return
        checksum = req.query.get("c", req.query.get("d"))
        reply = app.uploads.post(token, req.params.get("offset") or "", body, checksum,
                                 req.buffer(SCRATCH_BYTES)[:SCRATCH_BYTES])
        del body
        _answer(app, req, token, reply)


def _answer(app: "App", req: Request, token: str, reply: UploadReply) -> None:
    """Send an upload POST's answer (the MEGA code, the completion token, or 404)."""
    if reply.late:
        app.stats.bump("late_upload_posts")
        log.info("upload %s...: POST after the upload completed; answering %s", token[:6],
                 "the token" if reply.token is not None else reply.code)
    if reply.missing:
        log.info("upload: unknown upload URL %s...", token[:6])
        req.reply(HTTP_NOT_FOUND)
    elif reply.code is not None:
        if reply.warning:
            log.warning("upload %s...: %s; answering %d", token[:6], reply.warning,
                        reply.code)
            app.stats.bump("bad_requests")
        req.reply(200, str(int(reply.code)).encode(), TEXT_TYPE)
    elif reply.token is not None:
        raw = reply.token[-1:] == b"\x01"
        req.reply(200, reply.token, BINARY_TYPE if raw else TEXT_TYPE)
    else:
        req.reply(200, b"0" if "d" in req.query else b"", TEXT_TYPE)


class DownloadEndpoint(Endpoint):
    channel = "download"
    kind = "download"

    def prepare(self, app: "App", req: Request) -> Prepared | None:
        if req.method == "POST":
            req.discard_body()
        blob = req.params["blob"]
        size = blob_size(app.state, blob)
        if size is None:
            log.info("download: unknown download URL %s...", blob[:6])
            req.reply(HTTP_NOT_FOUND)
            return None
        status, start, end = 200, 0, size - 1
        range_part = req.params.get("range")
        if range_part is not None:
            match = _RANGE_RE.match(range_part)
            if not match:
                raise BadRequest("download range %r is not a-b" % range_part[:30])
            start = int(match.group(1))
            if match.group(2):
                end = min(int(match.group(2)), size - 1)
        elif req.method == "GET" and "Range" in req.headers:
            match = _RANGE_HEADER_RE.match(req.headers["Range"].strip())
            if match and (match.group(1) or match.group(2)):
                status = HTTP_PARTIAL
                if not match.group(1):            # "bytes=-n": the last n bytes
                    start = max(0, size - int(match.group(2)))
                else:
                    start = int(match.group(1))
                    if match.group(2):
                        end = min(int(match.group(2)), size - 1)
        if size == 0:
            status, start, end = 200, 0, -1
        elif start > end:
            req.reply(HTTP_RANGE_NOT_SATISFIABLE, b"", TEXT_TYPE,
                      {"Content-Range": "bytes */%d" % size})
            return None
        length = end - start + 1
        wait = app.meter.time_left(req.peer, length)
        if wait:
            app.stats.bump("transfer_quota_refusals")
            log.info("download: %s is over the transfer quota; HTTP 509, %d s left", req.peer,
                     wait)
            req.reply(HTTP_BANDWIDTH_EXCEEDED, b"", TEXT_TYPE, {"X-MEGA-Time-Left": str(wait)})
            return None
        headers = {"Accept-Ranges": "bytes"}
        if status == HTTP_PARTIAL:
            headers["Content-Range"] = "bytes %d-%d/%d" % (start, end, size)
        return Prepared(length=length, data=(blob, status, start, headers))

    def serve(self, app: "App", req: Request, prep: Prepared,
              effect: StreamEffect | None) -> None:
        blob, status, start, headers = prep.data
        length = prep.length
        action = effect.action if effect is not None else None
        send = length // 2 if action == "truncate" and length > 1 else \
            (0 if action == "truncate" else length)
        limit = length // 2 if action == "drop" else send
        framing = effect.value if effect is not None and action == "framing" else None
        fd = open_blob(app.state, blob)
        if fd is None:
            req.reply(HTTP_NOT_FOUND)
            return
        direct_fd = open_blob_direct(app.state, blob)
        chunked = framing == "chunked"
        try:
            req.start(status, BINARY_TYPE, headers, None if framing else send, chunked=chunked)
            flip_at = start + length // 2
            pos = start
            buf = req.buffer(DOWNLOAD_PIECE)
            for piece in read_pieces(fd, start, limit, buf, direct_fd):
                if action == "tamper" and length and pos <= flip_at < pos + len(piece):
                    assert isinstance(piece, memoryview)     # pieces are views into ``buf``
                    piece[flip_at - pos] ^= 0x01
                req.send_raw(piece, chunked)
                pos += len(piece)
                req.sent = pos - start
            del buf
            app.stats.bump("download_bytes", pos - start)
            app.meter.record(req.peer, pos - start)
            if chunked and pos - start == limit:
                req.end_chunks()
            if pos - start < limit:
                req.close_connection = True   # the blob is shorter than it was a moment ago
            if action == "drop":
                req.drop()
        finally:
            os.close(fd)
            if direct_fd is not None:
                os.close(direct_fd)
