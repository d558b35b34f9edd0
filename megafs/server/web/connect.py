"""``--proxy-port``: an HTTP ``CONNECT`` proxy whose every tunnel ends at this server's own API.

Some MEGA clients cannot be given another API URL: rclone's mega backend always asks
``https://g.api.mega.co.nz``.  With ``megafs serve --tls-api --tls-name g.api.mega.co.nz
--proxy-port P`` such a client runs with ``HTTPS_PROXY=http://127.0.0.1:P`` and
``SSL_CERT_FILE=DATA/tls/ca.pem``: its ``CONNECT g.api.mega.co.nz:443`` is answered with a
tunnel to the API listener, and TLS is spoken end to end with the server's certificate (which
then names that host).  Whatever host the client asks for, the tunnel goes to the API listener
only: this is not an open proxy.  Upload and download URLs are the server's own (plain http to
it, or https with ``--tls``), which clients reach directly (``NO_PROXY``) or through the tunnel.

RFC 9110 §9.3.6 (CONNECT): a 2xx answer turns the connection into a tunnel; anything other
than CONNECT gets 405.
"""
from __future__ import annotations

import logging
import select
import socket
import socketserver
from typing import Any

log = logging.getLogger(__name__)

HEAD_LIMIT = 8192          # bytes of request head accepted before the tunnel starts
IDLE_TIMEOUT = 600.0       # seconds a tunnel may stay silent in both directions
PIECE = 1 << 16


class ConnectProxy(socketserver.ThreadingTCPServer):
    """The proxy listener; ``target`` is the (host, port) of the API listener."""

    daemon_threads = True
    allow_reuse_address = True
    role = "proxy"
    scheme = "http"

    def __init__(self, host: str, port: int, target: tuple[str, int]) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.target = target
        super().__init__((host, port), _Tunnel)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("proxy connection from %s failed", client_address[0], exc_info=True)


class _Tunnel(socketserver.BaseRequestHandler):
    server: ConnectProxy

    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.settimeout(30)
        head = b""
        while b"\r\n\r\n" not in head:
            piece = conn.recv(4096)
            if not piece:
                return
            head += piece
            if len(head) > HEAD_LIMIT:
                conn.sendall(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                             b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                return
        request_line = head.split(b"\r\n", 1)[0].split()
        if len(request_line) != 3 or request_line[0] != b"CONNECT":
            conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nAllow: CONNECT\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            return
        try:
            upstream = socket.create_connection(self.server.target, timeout=10)
        except OSError as exc:
            log.info("proxy: the API listener did not accept a tunnel: %s", exc)
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        log.debug("proxy: tunnel for %s (asked for %s)", self.client_address[0],
                  request_line[1].decode("ascii", "replace"))
        with upstream:
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            rest = head.split(b"\r\n\r\n", 1)[1]
            if rest:
                upstream.sendall(rest)
            _pipe(conn, upstream)


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes or both stay silent ``IDLE_TIMEOUT``."""
    peers = {a: b, b: a}
    for sock in peers:
        sock.setblocking(True)
        sock.settimeout(None)
    while True:
        ready, _, _ = select.select(list(peers), [], [], IDLE_TIMEOUT)
        if not ready:
            return
        for sock in ready:
            try:
                data = sock.recv(PIECE)
            except OSError:
                return
            if not data:
                return
            peers[sock].sendall(data)
