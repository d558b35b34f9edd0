"""The API endpoints: ``POST /cs`` (command batches, behind the login hashcash gate), the
``sc`` poll and the wait URL.

Login proof of work: a batch holding one of the policy's ``hashcash_commands`` (default
``up`` and ``us``: making an account and logging in) without a valid ``X-Hashcash`` answer
gets HTTP 402 and a challenge of the policy's easiness, as the real service answers them
(issues 11, 19; meganz/sdk src/hashcash.cpp).  An answer to an expired challenge (older than
the policy's ``hashcash_ttl``) is no answer: the request gets a fresh 402 with a new
challenge, not an error.  The fault rules are decided first, so a rule may demand proof of
work elsewhere or at another easiness.

Folder-link sessions: ``/cs?n=PUBLIC_HANDLE`` runs the batch as that session
(``commands/shares.py``); a session id beside it is not used.

API lock (policy ``api_lock``, on by default): a locking request of a session (anything but
only ``g``) that arrives while another of that session is being processed is answered a bare
``-3`` (``server/apilock.py``; counted as ``api_lock_refused`` in the stats).
"""
from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

from ...errors import ApiCode
from ..apilock import is_locking
from ..commands.base import Bases, Ctx
from ..commands.batch import command_names, run_cs
from ..commands.sc import run_sc
from ..commands.shares import FEED
from ..db import decode_sn
from .endpoint import Endpoint, Prepared, StreamEffect
from .fault_apply import challenge
from .request import JSON_TYPE, TEXT_TYPE, Request

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger(__name__)

CS_BODY_LIMIT = 64 << 20
# JSON values one batch may hold, counted in the raw body before it is parsed (every value
# past the first of an array or object follows a comma, every member value a colon; commas
# and colons inside strings only overcount).  The body limit alone let a 64 MiB body of
# ``[{},{},...]`` (22 million objects) take about 1.4 GB while json.loads built it; a batch
# of 10,000 `p` nodes (the SDK's MAX_COMMANDS, meganz/sdk include/mega/request.h) holds
# about 150,000 values.  Counting 64 MiB costs ~20 ms.
CS_VALUE_LIMIT = 1_000_000
_HANDLE_RE = re.compile(r"^[A-Za-z0-9_-]{8}$")      # a folder link's public handle (n=)
_HOST_RE = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def own_base(app: "App", req: Request) -> str:
    """The base URL of the listener as this client named it (so URLs in answers work through
    a forwarding proxy), or the bound address if the Host header is unusable."""
    host = req.headers.get("Host", "")
    if host and _HOST_RE.match(host):
        return "%s://%s/" % (req.listener.scheme, host)
    return app.urls.api


class CsEndpoint(Endpoint):
    channel = "cs"
    kind = "cs"

    def prepare(self, app: "App", req: Request) -> Prepared | None:
        body = req.read_body(CS_BODY_LIMIT)
        if body is None:
            log.warning("cs: request body over %d bytes; answering -2", CS_BODY_LIMIT)
            app.stats.bump("bad_requests")
            req.reply(200, b"%d" % ApiCode.EARGS, JSON_TYPE)
            return None
        if body.count(b",") + body.count(b":") > CS_VALUE_LIMIT:
            log.warning("cs: request body holds over %d JSON values; answering -2",
                        CS_VALUE_LIMIT)
            app.stats.bump("bad_requests")
            req.reply(200, b"%d" % ApiCode.EARGS, JSON_TYPE)
            return None
        try:
            batch: Any = json.loads(body)
            parsed = True
        except (ValueError, UnicodeDecodeError, RecursionError):
            batch, parsed = None, False
        names = command_names(batch)
        for name in names:
            app.stats.command(name)
        app.stats.batch(names)
        prep = Prepared(commands=names, data=(body, batch, parsed))
        answer = req.headers.get("X-Hashcash")
        if answer is not None:
            verdict = app.hashcash.verify(answer)
            prep.hashcash_ok = verdict == "ok"
            app.stats.bump("hashcash_solved" if prep.hashcash_ok else "hashcash_rejected")
            if not prep.hashcash_ok:
                log.warning("cs: X-Hashcash answer refused (%s challenge)", verdict)
        return prep

    def serve(self, app: "App", req: Request, prep: Prepared,
              effect: StreamEffect | None) -> None:
        body, batch, parsed = prep.data
        easiness = app.policy.hashcash_easiness
        if easiness and not prep.hashcash_ok and \
                set(prep.commands) & set(app.policy.hashcash_commands):
            app.stats.bump("hashcash_login")
            challenge(app, req, easiness)
            return
        if not parsed:
            log.warning("cs: request body is not valid JSON (%d bytes); answering -2", len(body))
            app.stats.bump("bad_requests")
            req.reply(200, b"%d" % ApiCode.EARGS, JSON_TYPE)
            return
        folder = req.query.get("n")
        if folder is not None and not _HANDLE_RE.match(folder):
            log.warning("cs: a folder-link session's n= is not a public handle; answering -2")
            app.stats.bump("bad_requests")
            req.reply(200, b"%d" % ApiCode.EARGS, JSON_TYPE)
            return
        bases = Bases(transfers=own_base(app, req), secure_transfers=app.urls.secure_transfers,
                      wait=app.urls.wait)

        def make_ctx(**kw: Any) -> Ctx:
            return Ctx(bases=bases, policy=app.policy, meter=app.meter, client=req.peer, **kw)

        sid = req.query.get("sid") or None if folder is None else None
        locked = None
        if sid is not None and app.policy.api_lock and is_locking(batch):
            if not app.api_locks.acquire(sid):
                # a second overlapping locking request of this session: bare -3 ("API lock")
                app.stats.bump("api_lock_refused")
                log.info("cs: another locking request of this session is in flight; "
                         "answering -3")
                req.reply(200, b"%d" % ApiCode.EAGAIN, JSON_TYPE)
                return
            locked = sid
        try:
            result = run_cs(app.state, batch=batch, raw_body=body, sid=sid,
                            rid=req.query.get("id") or None, make_ctx=make_ctx,
                            command_fault=app.faults.command_error, folder=folder)
        finally:
            if locked is not None:
                app.api_locks.release(locked)
        if result.replayed:
            app.stats.bump("replays")
        if result.warnings:
            app.stats.bump("bad_requests", result.warnings)
        if result.internal_errors:
            app.stats.bump("internal_errors", result.internal_errors)
        req.reply(200, result.body, JSON_TYPE)


class PollEndpoint(Endpoint):
    """``sc?sn=..&sid=..`` (also ``wsc?...`` on the API host): packets or a wait URL."""

    channel = "sc"
    kind = "sc"

    def prepare(self, app: "App", req: Request) -> Prepared | None:
        req.discard_body()
        return Prepared(sub="sc")

    def serve(self, app: "App", req: Request, prep: Prepared,
              effect: StreamEffect | None) -> None:
        folder = req.query.get("n")
        if folder is not None and not _HANDLE_RE.match(folder):
            folder = "invalid!"       # names no link: -9
        body, warned = run_sc(app.state, sid=req.query.get("sid") or None, folder=folder,
                              sn=req.query.get("sn"), wait_base=app.urls.wait)
        if warned:
            app.stats.bump("bad_requests")
        req.reply(200, body, JSON_TYPE)


class WaitEndpoint(Endpoint):
    """The wait URL: returns (empty body) once the account has packets after ``sn``, or after
    ``--wait-timeout`` seconds, or at once for an unknown account or a malformed ``sn``."""

    channel = "sc"
    kind = "wait"

    def prepare(self, app: "App", req: Request) -> Prepared | None:
        req.discard_body()
        return Prepared(sub="wait")

    def serve(self, app: "App", req: Request, prep: Prepared,
              effect: StreamEffect | None) -> None:
        uh, sn = req.params["uh"], req.params["sn"]
        seq = decode_sn(sn)
        with app.state.lock:
            tx = app.state.read()
            known = (tx.account(uh) is not None or uh.startswith(FEED)) and seq is not None \
                and seq <= tx.current_seq()
        if seq is not None and known:
            app.state.wait_for_packets(uh, seq, app.config.wait_timeout)
        req.reply(200, b"", TEXT_TYPE)
