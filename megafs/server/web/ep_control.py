"""The control endpoints (loopback clients only; HTTP 403 otherwise).  Every POST and ``GET
mail`` need the control token (``X-Megafs-Token``, see ``guard.py``), POSTs with
``Content-Type: application/json``::

    GET  U/_megafs/stats      counters as JSON
    GET  U/_megafs/faults     the rules with matched/fired/remaining
    POST U/_megafs/faults     {"rules": [...]} replaces the fault rules
    POST U/_megafs/quota      {"bytes": N [, "user": uh]} sets the storage quota
    GET  U/_megafs/options    the run-time policies (config.Policy)
    POST U/_megafs/options    {"name": value, ...} changes policies (all or none)
    GET  U/_megafs/info       the listeners' base URLs and the TLS CA file
    GET  U/_megafs/mail       the mail the real service would have sent, oldest first:
                              [{"to", "subject", "link"}] (confirmation links of `uc2`)
    POST U/_megafs/accounts   {"email", "blocked": bool} blocks or unblocks a full account;
                              {"email", "v": 1, "k", "uh", "ts"[, "privk", "pubk"]} adds a
                              legacy v1 account (the real service has made none since 2018, so
                              only an import can make one); see ``App.account_admin``

A bad body answers HTTP 400 with ``{"error": reason}`` and changes nothing.
"""
from __future__ import annotations

import ipaddress
import json
import logging
from typing import TYPE_CHECKING, Any

from ..faults import FaultRuleError
from . import guard
from .endpoint import Endpoint, Prepared, StreamEffect
from .request import JSON_TYPE, SMALL_BODY_LIMIT, TEXT_TYPE, Request

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger(__name__)

HTTP_BAD_REQUEST = 400
HTTP_FORBIDDEN = 403
TOKEN_READS = frozenset({"mail"})   # GETs that need the control token (see guard.py)


def _json(req: Request, value: Any) -> None:
    req.reply(200, json.dumps(value).encode(), JSON_TYPE)


def _error(req: Request, reason: str) -> None:
    log.warning("control endpoint: %s", reason)
    req.reply(HTTP_BAD_REQUEST, json.dumps({"error": reason}).encode(), JSON_TYPE)


class ControlEndpoint(Endpoint):
    kind = "control"

    def prepare(self, app: "App", req: Request) -> Prepared | None:
        address = req.peer.partition("%")[0]       # without an IPv6 zone
        try:
            local = ipaddress.ip_address(address).is_loopback
        except ValueError:
            local = False
        if not local:
            log.warning("control endpoint refused to non-local client %s", req.peer)
            req.close_connection = True
            req.reply(HTTP_FORBIDDEN, b"", TEXT_TYPE)
            return None
        needs_token = req.method == "POST" or req.params["name"] in TOKEN_READS
        if not guard.check_control(app, req, needs_token):
            return None
        body = req.read_body(SMALL_BODY_LIMIT)
        if body is None:
            _error(req, "body too large")
            return None
        payload: Any = None
        if req.method == "POST":
            try:
                payload = json.loads(body or b"{}")
            except (ValueError, UnicodeDecodeError, RecursionError):
                _error(req, "body is not JSON")
                return None
            if not isinstance(payload, dict):
                _error(req, "body must be a JSON object")
                return None
        return Prepared(data=payload)

    def serve(self, app: "App", req: Request, prep: Prepared,
              effect: StreamEffect | None) -> None:
        name, payload = req.params["name"], prep.data
        if req.method == "GET":
            _json(req, {"stats": app.stats_snapshot, "faults": app.faults.snapshot,
                        "options": app.policy.snapshot, "info": app.info,
                        "mail": app.mail}[name]())
        elif name == "faults":
            try:
                app.faults.replace(payload.get("rules", []))
            except FaultRuleError as exc:
                _error(req, str(exc))
                return
            _json(req, {"ok": True, **app.faults.snapshot()})
        elif name == "options":
            try:
                _json(req, {"ok": True, **app.set_options(payload)})
            except ValueError as exc:
                _error(req, str(exc))
        elif name == "accounts":
            try:
                _json(req, {"ok": True, **app.account_admin(payload)})
            except ValueError as exc:
                _error(req, str(exc))
        else:
            nbytes, user = payload.get("bytes"), payload.get("user")
            if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
                _error(req, "'bytes' must be an integer >= 0")
            elif user is not None and not isinstance(user, str):
                _error(req, "'user' must be a user handle")
            elif not app.set_quota(nbytes, user):
                _error(req, "unknown user")
            else:
                _json(req, {"ok": True, "bytes": nbytes})
