"""``HttpPool.preconnect`` (issue 23): connections opened ahead of a burst of uploads are kept
idle and used by the requests that follow, without new handshakes; it never raises."""
from __future__ import annotations

import http.server
import socket
import threading
import time

from megafs.api.http import HttpPool


class _Counting(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.accepted = 0

    def get_request(self):
        got = super().get_request()
        self.accepted += 1
        return got


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


def _until(check, timeout=10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_preconnected_connections_serve_the_next_requests():
    server = _Counting()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    pool = HttpPool()
    url = "http://127.0.0.1:%d/" % server.server_address[1]
    try:
        assert pool.preconnect(url, 6) == 6
        _until(lambda: server.accepted == 6)
        _until(lambda: pool._conns.counts() == (6, 0))
        assert pool.preconnect(url, 6) == 0            # enough are idle already
        assert pool.preconnect(url, 8) == 2            # tops up to the count asked for
        _until(lambda: server.accepted == 8)
        barrier = threading.Barrier(8)

        def post() -> None:
            barrier.wait()
            reply = pool.transfer("POST", url + "ul/0", body=b"x" * 4096)
            assert reply.status == 200 and reply.body == b"ok"
        threads = [threading.Thread(target=post) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert server.accepted == 8                    # no request opened its own
    finally:
        pool.close()
        server.shutdown()
        server.server_close()


def test_a_request_waits_for_a_connection_being_opened_ahead():
    """A request that finds none idle while connections are being opened ahead takes one of
    those when it is ready instead of opening its own (two handshakes for one request)."""
    server = _Counting()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    pool = HttpPool()
    url = "http://127.0.0.1:%d/" % server.server_address[1]
    made = pool._new_connection

    def slow_connection(key):
        conn = made(key)
        plain_connect = conn.connect

        def connect():
            time.sleep(0.3)               # a long round trip's handshake
            plain_connect()
        conn.connect = connect
        return conn
    try:
        pool._new_connection = slow_connection
        assert pool.preconnect(url, 4) == 4
        results = []
        threads = [threading.Thread(target=lambda: results.append(
            pool.transfer("POST", url + "ul/0", body=b"y").status)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [200] * 4
        assert server.accepted == 4
    finally:
        pool.close()
        server.shutdown()
        server.server_close()


def test_preconnect_never_raises():
    with socket.socket() as sock:                     # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pool = HttpPool()
    try:
        assert pool.preconnect("http://127.0.0.1:%d/" % port, 3, timeout=2.0) == 3
        _until(lambda: pool._conns.counts() == (0, 0))
        assert pool.preconnect("ftp://example.invalid/", 3) == 0
    finally:
        pool.close()
    assert pool.preconnect("http://127.0.0.1:%d/" % port, 3) == 0    # closed pool
