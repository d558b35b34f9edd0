"""The route table of the local MEGA server (method + path pattern + listener role -> endpoint)
and the dispatcher that runs every request the same way: match, count, ``prepare``, decide and
apply faults (``fault_apply.py``), ``serve``; and map failures to answers.

Nothing escapes as a traceback over HTTP: an unexpected exception is logged at ERROR and
answered ``-1`` (cs) or HTTP 500; a request that is not valid HTTP gets 400 and a closed
connection; a peer that goes away is logged at DEBUG.  While the server shuts down, requests
still arriving on kept-alive connections are dropped unanswered, as if it had already gone.
"""
from __future__ import annotations

import logging
import re
import socket
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...errors import ApiCode
from . import fault_apply, guard
from .endpoint import Endpoint, StreamEffect
from .ep_api import CsEndpoint, PollEndpoint, WaitEndpoint
from .ep_control import ControlEndpoint
from .ep_linkpage import LinkPageEndpoint
from .ep_transfers import DownloadEndpoint, UploadEndpoint
from .request import JSON_TYPE, TEXT_TYPE, BadRequest, Request

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger(__name__)

API, WAIT, TRANSFERS = "api", "wait", "transfers"      # listener roles
HTTP_BAD_REQUEST = 400
HTTP_NOT_FOUND = 404
HTTP_INTERNAL_ERROR = 500
# The client went away mid-request: plain sockets raise the first ones, TLS ones report an
# unexpected EOF (ssl.SSLEOFError) or a reset during the TLS layer's write (ssl.SSLError).
_PEER_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout,
              ssl.SSLEOFError, ssl.SSLZeroReturnError)


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    roles: frozenset[str]
    endpoint: Endpoint

    @classmethod
    def of(cls, methods: str, pattern: str, roles: tuple[str, ...],
           endpoint: Endpoint) -> "Route":
        return cls(frozenset(methods.split()), re.compile("^%s$" % pattern), frozenset(roles),
                   endpoint)


_CONTROL = ControlEndpoint()
ROUTES: tuple[Route, ...] = (
    Route.of("POST", r"/cs", (API,), CsEndpoint()),
    Route.of("GET POST", r"/(?:sc|wsc)", (API,), PollEndpoint()),
    Route.of("GET POST", r"/wsc/(?P<uh>[^/]+)/(?P<sn>[^/]+)", (WAIT,), WaitEndpoint()),
    Route.of("POST", r"/ul/(?P<token>[^/]+)(?:/(?P<offset>[^/]*))?", (API, TRANSFERS),
             UploadEndpoint()),
    Route.of("GET POST", r"/dl/(?P<blob>[^/]+)(?:/(?P<range>[^/]+))?", (API, TRANSFERS),
             DownloadEndpoint()),
    Route.of("GET", r"/_megafs/(?P<name>stats|faults|options|info|mail)", (API,), _CONTROL),
    Route.of("POST", r"/_megafs/(?P<name>faults|quota|options|accounts)", (API,), _CONTROL),
    Route.of("GET", r"/file/(?P<handle>[A-Za-z0-9_-]{8})", (API,), LinkPageEndpoint()),
)


def match(method: str, path: str, role: str) -> tuple[Route | None, dict[str, str]]:
    """The route for a request (empty path segments ignored), or (None, {})."""
    normal = "/" + "/".join(p for p in path.split("/") if p)
    for route in ROUTES:
        if method in route.methods and role in route.roles:
            found = route.pattern.match(normal)
            if found:
                return route, {k: v for k, v in found.groupdict().items() if v is not None}
    return None, {}


def dispatch(app: "App", req: Request) -> None:
    if app.closing:
        req.drop()
        log.debug("dropped %s %s: shutting down", req.method, req.path)
        return
    route, req.params = match(req.method, req.path, req.listener.role)
    channel = route.endpoint.channel if route is not None else None
    try:
        if not guard.check_request(app, req):       # Host and Origin (DNS rebinding, CSRF)
            app.stats.request("refused")
            return
        if route is None:
            req.discard_body()
            app.stats.request("unknown")
            req.reply(HTTP_NOT_FOUND)
            return
        _run(app, req, route.endpoint)
    except BadRequest as exc:
        log.warning("bad HTTP request %s %s: %s", req.method, req.path[:80], exc)
        req.close_connection = True
        if not req.headers_done:
            req.reply(HTTP_BAD_REQUEST)
    except _PEER_GONE as exc:
        log.debug("connection lost during %s %s: %s", req.method, req.path[:80], exc)
        req.close_connection = True
    except Exception:
        if app.closing:
            log.debug("%s %s failed during shutdown", req.method, req.path[:80], exc_info=True)
            req.drop()
            return
        log.exception("internal error on %s %s", req.method, req.path[:80])
        app.stats.bump("internal_errors")
        req.close_connection = True
        if not req.headers_done:
            try:
                if channel == "cs":
                    req.reply(200, b"%d" % ApiCode.EINTERNAL, JSON_TYPE)
                else:
                    req.reply(HTTP_INTERNAL_ERROR, b"", TEXT_TYPE)
            except OSError:
                pass


def _run(app: "App", req: Request, endpoint: Endpoint) -> None:
    app.stats.request(endpoint.kind)
    prep = endpoint.prepare(app, req)
    if prep is None:
        return
    effect: StreamEffect | None = None
    if endpoint.channel is not None:
        decision = app.faults.check(endpoint.channel, prep.commands, sub=prep.sub,
                                    skip_hashcash=prep.hashcash_ok)
        outcome = fault_apply.apply(app, req, decision, endpoint.channel, prep)
        if isinstance(outcome, fault_apply.Answered):
            return
        effect = outcome
    endpoint.serve(app, req, prep, effect)
