"""The API probe's connection kept for the first API client (issue 23).

``megafs mount`` checks the API before anything else (``mount/preflight.check_api``: TCP, then
TLS and one GET on that connection); ``adopt`` puts that connection in an ``HttpPool`` and
``keep_spare``/``take_spare`` hand the pool to the process's first ``Transport``, so the
mount's first request (its ``sc`` catch-up) costs no connection set-up: over TLS two round
trips fewer before the first listing.
"""
from __future__ import annotations

import http.client
import socket
import ssl
from urllib.parse import urlsplit

import requests

from .apireq import short_error
from .http import HttpPool

_spare: "HttpPool | None" = None     # the API probe's pool, kept for the first client


def keep_spare(pool: "HttpPool") -> None:
    """Keep ``pool`` (with the API probe's kept-alive connection) for ``take_spare``; a pool
    kept before and not taken is closed."""
    global _spare
    old, _spare = _spare, pool
    if old is not None and old is not pool:
        old.close()


def take_spare() -> "HttpPool | None":
    """The pool ``keep_spare`` kept (once), else None: the first API client of a process
    sends its first request on the connection ``megafs mount``'s API check opened (issue 23:
    two round trips fewer before the first listing over TLS)."""
    global _spare
    pool, _spare = _spare, None
    return pool


def adopt(pool: HttpPool, url: str, sock: socket.socket, timeout: float) -> bool:
    """Keep ``sock`` (a TCP connection to ``url``'s host and port, e.g. the API probe's)
    as an idle API connection of ``pool``, after the TLS handshake for https (within
    ``timeout`` seconds): the first request to that host then costs no connection set-up
    (two round trips with TLS; issue 23).  False (``sock`` closed) when the environment
    sends the URL through a proxy.  A failed handshake closes ``sock`` and raises what
    ``HttpPool.request`` raises: ``requests`` ``SSLError``, ``ReadTimeout`` or ``ConnectionError``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname \
            or pool._via_proxy(parts.scheme, parts.netloc, url):
        sock.close()
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        ctx = pool._ssl_context()
        conn = http.client.HTTPSConnection(parts.hostname, port, context=ctx)
        sock.settimeout(timeout)
        try:
            sock = ctx.wrap_socket(sock, server_hostname=parts.hostname)
        except ssl.SSLError as exc:
            sock.close()
            raise requests.exceptions.SSLError(short_error(exc))
        except (TimeoutError, socket.timeout) as exc:
            sock.close()
            raise requests.exceptions.ReadTimeout(short_error(exc)) from None
        except OSError as exc:
            sock.close()
            raise requests.ConnectionError("%s: %s" % (type(exc).__name__,
                                                       short_error(exc))) from None
    else:
        conn = http.client.HTTPConnection(parts.hostname, port)
    conn.sock = sock
    pool._give((parts.scheme, parts.hostname, port), conn)
    return True
