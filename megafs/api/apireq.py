"""One API request on a kept-alive ``http.client`` connection (``HttpPool.request``'s fast
path): send, read the answer up to a size limit, and turn wire failures into the ``requests``
exceptions the API transport already handles; ``parse_reply`` turns the body into JSON or a
``ProtocolError``.  Knows nothing about pools, MEGA commands or accounts; never logs URLs."""
from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import requests

from ..errors import ProtocolError

USER_AGENT = "megafs/0.1"

_SECRET_QUERY = re.compile(r"([?&](?:sid|n|esid|cauth)=)[^&#]*")
_LONG_SEGMENT = re.compile(r"/([A-Za-z0-9_\-]{6})[A-Za-z0-9_\-]{10,}")


def redact_url(url: str) -> str:
    """A URL that is safe to log: query values hidden, long path tokens shortened."""
    url = url.split("#", 1)[0]
    url = _SECRET_QUERY.sub(r"\1…", url)
    return _LONG_SEGMENT.sub(r"/\1…", url)


@dataclass
class ApiReply:
    """The answer to ``HttpPool.request`` on the fast path: the parts of a
    ``requests.Response`` the API transport reads."""

    status_code: int
    content: bytes
    headers: Any                 # case-insensitive ``.get(name, default)``


class ReplyTooLarge(ProtocolError):
    """An API reply longer than the caller's limit: refused (and its connection dropped)
    before more than the limit was read."""

    def __init__(self, limit: int) -> None:
        super().__init__("the API's reply is larger than %d MiB; refused (a broken or hostile "
                         "server)" % (limit // 1048576))


def read_limited(resp: http.client.HTTPResponse, limit: int) -> bytes:
    """The whole body of ``resp`` if it holds at most ``limit`` bytes, else ReplyTooLarge
    (read no further than ``limit + 1`` bytes; a too large Content-Length reads nothing)."""
    if resp.length is not None and resp.length > limit:
        raise ReplyTooLarge(limit)
    content = resp.read(limit + 1)
    if len(content) > limit:
        raise ReplyTooLarge(limit)
    return content


def parse_reply(payload: bytes, what: str) -> Any:
    """The JSON value of an API reply; ProtocolError (one line) for anything that is not JSON,
    nested deeper than the parser's recursion limit, or not UTF-8."""
    try:
        return json.loads(payload)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else "not JSON"
        raise ProtocolError("%s: reply is %s (%d bytes)" % (what, reason, len(payload))) \
            from None


class StaleConnection(Exception):
    """A kept-alive connection failed before the server answered (it had closed it)."""


def api_exchange(conn: http.client.HTTPConnection, method: str, target: str,
                 body: bytes | None, headers: dict[str, str] | None,
                 connect_timeout: float | None, read_timeout: float | None,
                 limit: int) -> tuple[ApiReply, bool]:
    """Send one request on ``conn`` and read the whole answer, at most ``limit`` bytes;
    (reply, connection reusable).

    ``ConnectTimeout``/``ReadTimeout``/``SSLError``/``ConnectionError`` from ``requests`` on
    failure (the connection is closed), ``StaleConnection`` when a connection failed before
    any answer (the caller may send again on a new one), ``ReplyTooLarge`` for a longer body
    (the connection is closed)."""
    answered = False
    try:
        if conn.sock is None:
            conn.timeout = connect_timeout
            try:
                conn.connect()
            except (TimeoutError, socket.timeout) as exc:
                raise requests.exceptions.ConnectTimeout(short_error(exc)) from None
        conn.sock.settimeout(read_timeout)
        conn.putrequest(method, target, skip_accept_encoding=True)
        conn.putheader("User-Agent", USER_AGENT)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None or method in ("POST", "PUT"):
            conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        answered = True
        content = read_limited(resp, limit)
    except (requests.RequestException, ReplyTooLarge):
        conn.close()
        raise
    except ssl.SSLError as exc:
        conn.close()
        raise requests.exceptions.SSLError(short_error(exc)) from None
    except (TimeoutError, socket.timeout) as exc:
        conn.close()
        raise requests.exceptions.ReadTimeout(short_error(exc)) from None
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
        conn.close()
        if answered:
            raise requests.ConnectionError(short_error(exc)) from None
        raise StaleConnection(short_error(exc)) from exc
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise requests.ConnectionError("%s: %s" % (type(exc).__name__, short_error(exc))) \
            from None
    return ApiReply(resp.status, content, resp.headers), not resp.will_close


def untrusted_certificate(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed certificate check (not a network hiccup: every retry fails
    the same way), from this module's fast path or from ``requests``."""
    return isinstance(exc, requests.exceptions.SSLError) and (
        "CERTIFICATE_VERIFY_FAILED" in str(exc)
        or isinstance(exc.__context__, ssl.SSLCertVerificationError))


def short_error(exc: BaseException) -> str:
    """An exception message without URLs (requests puts the full URL, sid included, in them)."""
    text = str(exc)
    text = re.sub(r"https?://\S+", lambda m: redact_url(m.group(0)), text)
    text = re.sub(r"(sid|n|sn)=[^&\s'\")]+", r"\1=…", text)
    return text[:200]
