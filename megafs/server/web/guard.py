"""Who may ask what of the local server: the checks made on every request before routing, and
the control endpoints' token (issue 20).

* **Host** (DNS rebinding): a browser that was led to this server through an attacker's DNS
  name sends that name in ``Host``.  The server answers only names it serves: any IP address
  literal (a page at ``http://127.0.0.1:PORT`` is this server's own origin), ``localhost``,
  the bound host and the ``--tls-name`` names; anything else gets HTTP 421.  A request
  without ``Host`` (HTTP/1.0 tools; browsers always send one) is served.
* **Origin** (cross-site requests): a POST carrying an ``Origin`` other than the server's own
  (``scheme://`` + the request's ``Host``) gets HTTP 403.  Browsers send ``Origin`` on every
  POST, ``no-cors`` ones included; the link page's own requests carry its own origin.
* **Control endpoints** (``ep_control.py``): every ``POST /_megafs/*`` and ``GET
  /_megafs/mail`` need the header ``X-Megafs-Token`` holding the token in
  ``DATA/control-token`` (0600, so another local user cannot read it): HTTP 403 otherwise;
  their POSTs must also say ``Content-Type: application/json`` (HTTP 415 otherwise), which a
  page cannot send without a CORS preflight this server never grants.  The read-only counters
  and settings (``stats``, ``faults``, ``options``, ``info``) need no token.

A refused request's body is never kept: up to 1 MiB is read and dropped (so the client sees
the answer), a larger one is not read and the connection is closed.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import TYPE_CHECKING

from ..datadir import TOKEN_HEADER
from .request import SMALL_BODY_LIMIT, TEXT_TYPE, Request

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger(__name__)

HTTP_FORBIDDEN = 403
HTTP_MISDIRECTED = 421
HTTP_UNSUPPORTED_TYPE = 415
JSON_MEDIA = "application/json"


def host_name(header: str) -> str:
    """The name of a ``Host`` header without port and brackets, lower case ("" if empty)."""
    text = header.strip().lower()
    if text.startswith("["):
        return text[1:text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def served_name(app: "App", name: str) -> bool:
    """Whether this server answers to the host ``name`` (see the module docstring)."""
    name = name.rstrip(".")
    try:
        ipaddress.ip_address(name.partition("%")[0])
        return True
    except ValueError:
        pass
    names = {"localhost", app.config.host.lower()} | {n.lower() for n in app.config.names}
    return name in names


def refuse(req: Request, status: int, reason: str) -> None:
    """Answer ``status`` with one line; a body is never kept (up to 1 MiB is read and dropped
    so the client sees the answer, a larger one closes the connection)."""
    log.warning("refused %s %s from %s: %s", req.method, req.path[:80], req.peer, reason)
    req.drain_body(SMALL_BODY_LIMIT)
    req.reply(status, (reason + "\n").encode(), TEXT_TYPE)


def check_request(app: "App", req: Request) -> bool:
    """The Host and Origin checks; False once the request was refused."""
    host = req.headers.get("Host")
    if host is not None and not served_name(app, host_name(host)):
        refuse(req, HTTP_MISDIRECTED, "this server does not serve the host %r" % host[:80])
        return False
    origin = req.headers.get("Origin")
    if req.method == "POST" and origin is not None:
        own = "%s://%s" % (req.listener.scheme, (host or "").strip().lower())
        if host is None or origin.strip().lower().rstrip("/") != own:
            refuse(req, HTTP_FORBIDDEN, "cross-origin request from %r" % origin[:80])
            return False
    return True


def check_control(app: "App", req: Request, needs_token: bool) -> bool:
    """The control token (and, for POSTs, the JSON content type); False once refused."""
    if not needs_token:
        return True
    given = req.headers.get(TOKEN_HEADER, "")
    if not hmac.compare_digest(given.encode("utf-8", "replace"),
                               app.control_token.encode()):
        refuse(req, HTTP_FORBIDDEN, "the control endpoints need the header %s with the token "
               "in the server's data directory (control-token)" % TOKEN_HEADER)
        return False
    if req.method == "POST":
        ctype = req.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if ctype != JSON_MEDIA:
            refuse(req, HTTP_UNSUPPORTED_TYPE, "control endpoints take Content-Type: %s"
                   % JSON_MEDIA)
            return False
    return True
