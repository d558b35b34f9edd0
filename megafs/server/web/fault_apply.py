"""The one place where fault decisions (``faults.py``) are carried out on a request.

``apply`` runs after an endpoint's ``prepare`` and before its ``serve``: it waits out delays,
answers errors, HTTP statuses and hashcash challenges, drops connections (after half the body
on uploads), expires upload URLs, and hands the download endpoint the effect it must give its
body (tamper, truncate, drop halfway, other framing).  Every fired fault is counted.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ...errors import ApiCode
from ..config import DEFAULT_EASINESS
from ..faults import Decision
from .endpoint import Prepared, StreamEffect
from .request import JSON_TYPE, TEXT_TYPE, Request

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger(__name__)

UPLOAD_BODY_LIMIT = 256 << 20
HTTP_PAYMENT_REQUIRED = 402
HTTP_BANDWIDTH_EXCEEDED = 509
RETRY_STATUSES = (429, 503)
STREAM_ACTIONS = ("tamper", "truncate", "drop", "framing")


class Answered:
    """Returned when the fault has answered (or dropped) the request."""


ANSWERED = Answered()


def apply(app: "App", req: Request, decision: Decision | None, channel: str,
          prep: Prepared) -> StreamEffect | Answered | None:
    if decision is None:
        return None
    stats = app.stats
    if decision.delay:
        stats.bump("faults_delay")
        time.sleep(decision.delay)
    action = decision.action
    if action is None:
        return None
    stats.bump("faults_fired")
    if channel == "download" and action in STREAM_ACTIONS:
        return StreamEffect(action, decision.value)
    if action == "drop":
        if channel == "upload":
            req.read_half_body(UPLOAD_BODY_LIMIT)
        req.drop()
        return ANSWERED
    req.discard_body(UPLOAD_BODY_LIMIT)
    if action == "error":
        ctype = JSON_TYPE if channel in ("cs", "sc") else TEXT_TYPE
        req.reply(200, str(decision.value).encode(), ctype)
    elif action == "http":
        headers = {}
        if decision.value == HTTP_BANDWIDTH_EXCEEDED:
            headers["X-MEGA-Time-Left"] = "1"
        if decision.value in RETRY_STATUSES:
            headers["Retry-After"] = "1"
        req.reply(int(decision.value), b"", TEXT_TYPE, headers)
    elif action == "hashcash":
        easiness = decision.value
        if easiness is None:       # "hashcash": true uses the server's easiness
            easiness = app.policy.hashcash_easiness or DEFAULT_EASINESS
        challenge(app, req, easiness)
    elif action == "expire":
        app.uploads.expire(prep.token)
        req.reply(200, b"%d" % ApiCode.EEXPIRED, TEXT_TYPE)
    else:   # parse_rule only lets through actions valid for the channel
        raise AssertionError("fault action %r on %s" % (action, channel))
    return ANSWERED


def challenge(app: "App", req: Request, easiness: int) -> None:
    """HTTP 402 with an ``X-Hashcash`` challenge (fault rules and the login policy alike)."""
    app.stats.bump("hashcash_issued")
    req.reply(HTTP_PAYMENT_REQUIRED, b"", JSON_TYPE,
              {"X-Hashcash": app.hashcash.challenge(easiness)})
