"""Transport behaviour against replies our own server never sends (a broken or hostile API):
a tiny stand-in HTTP server answers with canned bodies so the client's type checks and retry
rules can be seen.  Everything a correct server does is tested against ``megafs serve``."""
from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from megafs import chunks, crypto
from megafs.errors import MegaError, ProtocolError, TransportError
from megafs.api.transport import Transport
from megafs.retry import RetryPolicy


class Canned:
    """Serves a list of (status, body, headers[, delay]) in the order requests arrive,
    recording each request; a delay holds that reply back (other requests go on)."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests: list[tuple[str, bytes, dict]] = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                canned.requests.append((self.path, body, dict(self.headers)))
                status, payload, headers, *delay = canned.replies.pop(0) if canned.replies \
                    else (500, b"", {})
                if delay:
                    time.sleep(delay[0])
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def canned():
    servers = []

    def make(*replies):
        server = Canned(replies)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def _transport(url, give_up=5.0):
    return Transport(url, retry=RetryPolicy(initial=0.01, cap=0.05, give_up_after=give_up))


def j(value):
    return (200, json.dumps(value).encode(), {})


def test_per_command_errors_and_types(canned):
    srv = canned(j([-9, {"err": -11}, {"f": []}, "ph", 0]))
    t = _transport(srv.url)
    out = t.batch([{"a": "x"}] * 5)
    assert isinstance(out[0], MegaError) and out[0].code == -9
    assert isinstance(out[1], MegaError) and out[1].code == -11
    assert out[2:] == [{"f": []}, "ph", 0]
    t.close()


@pytest.mark.parametrize("body", [b"<html>", b"{\"a\":1}", b"[1,2]", b"\"x\""])
def test_malformed_batch_replies_are_protocol_errors(canned, body):
    srv = canned((200, body, {}))
    t = _transport(srv.url)
    with pytest.raises(ProtocolError):
        t.batch([{"a": "x"}])
    t.close()


def test_batch_level_error_and_retry_same_id_same_body(canned):
    srv = canned(j(-3), (503, b"", {}), j({"err": -4}), j([{"ok": 1}]))
    t = _transport(srv.url)
    assert t.call({"a": "ug"}) == {"ok": 1}
    paths = {path for path, _, _ in srv.requests}
    bodies = {body for _, body, _ in srv.requests}
    assert len(srv.requests) == 4 and len(paths) == 1 and len(bodies) == 1
    t.close()
    srv2 = canned(j(-16))
    t2 = _transport(srv2.url)
    with pytest.raises(MegaError) as info:
        t2.call({"a": "ug"})
    assert info.value.code == -16
    t2.close()


def test_new_batch_gets_new_id(canned):
    srv = canned(j([0]), j([0]))
    t = _transport(srv.url)
    t.call({"a": "x"})
    t.call({"a": "x"})
    ids = [path.split("id=")[1].split("&")[0] for path, _, _ in srv.requests]
    assert ids[0] != ids[1]
    t.close()


def test_per_command_eagain_resent_alone(canned):
    srv = canned(j([{"v": 1}, -3]), j([{"v": 2}]))
    t = _transport(srv.url)
    assert t.batch([{"a": "one"}, {"a": "two"}]) == [{"v": 1}, {"v": 2}]
    assert json.loads(srv.requests[1][1]) == [{"a": "two"}]
    t.close()


def test_gives_up_after_retry_time(canned):
    srv = canned(*[(500, b"", {})] * 50)
    t = _transport(srv.url, give_up=0.2)
    with pytest.raises(TransportError, match="HTTP 500"):
        t.call({"a": "x"})
    t.close()


def test_sid_never_in_error_messages(canned):
    t = Transport("http://127.0.0.1:9/", sid_source=lambda: "SECRETSID" * 6,
                  retry=RetryPolicy(initial=0.01, give_up_after=0.05))
    with pytest.raises(TransportError) as info:
        t.call({"a": "x"})
    assert "SECRETSID" not in str(info.value)
    t.close()


def _upload_via(canned_server, path, connections=1):
    from megafs.api.upload import Uploader
    t = _transport(canned_server.url)
    try:
        return Uploader(t, connections=connections).upload(str(path))
    finally:
        t.close()


def test_upload_without_completion_token_restarts(canned, tmp_path):
    path = tmp_path / "ten"
    path.write_bytes(b"0123456789")
    token = bytes(range(35)) + b"\x01"
    srv = canned()
    srv.replies += [j([{"p": srv.url + "ul/first"}]), (200, b"", {}),        # no token: restart
                    j([{"p": srv.url + "ul/second"}]), (200, b"x" * 20, {}),  # not a token
                    j([{"p": srv.url + "ul/third"}]), (200, token, {})]
    uploaded = _upload_via(srv, path)
    assert uploaded.token == crypto.b64encode(token) and uploaded.size == 10
    posts = [p for p, _, _ in srv.requests if p.startswith("/ul/")]
    assert [p.split("?")[0] for p in posts] == ["/ul/first/0", "/ul/second/0", "/ul/third/0"]
    assert all(len(body) == 10 for p, body, _ in srv.requests if p.startswith("/ul/"))


def test_upload_checksum_and_offsets_on_the_wire(canned, tmp_path):
    from megafs.api.upload import upload_checksum
    path = tmp_path / "f"
    path.write_bytes(os.urandom(3 * 1048576))
    srv = canned()
    spans = list(chunks.groups(3 * 1048576, chunks.MIB))
    srv.replies += [j([{"p": srv.url + "ul/x"}])] + [(200, b"", {})] * (len(spans) - 1) + \
        [(200, bytes(36), {})]
    _upload_via(srv, path)
    posts = [(p, body) for p, body, _ in srv.requests if p.startswith("/ul/")]
    assert sorted(int(p.split("/")[3].split("?")[0]) for p, _ in posts) == [o for o, _ in spans]
    for p, body in posts:
        assert p.split("?c=")[1] == crypto.b64encode(upload_checksum(body))


def test_first_completion_token_wins_over_a_late_error(canned, tmp_path):
    """Two workers POST at once; the reply to the first POST to arrive is held back and is a
    restart code (-4), the second completes the file.  The token means every byte is stored:
    the upload is done, and the late -4 neither restarts (no second `u`) nor fails it."""
    path = tmp_path / "two-spans"
    path.write_bytes(os.urandom(1048576 + 1000))        # two spans: [0, 768 KiB) and the rest
    token = bytes(range(35)) + b"\x01"
    srv = canned()
    srv.replies += [j([{"p": srv.url + "ul/only"}]), (200, b"-4", {}, 0.3), (200, token, {})]
    uploaded = _upload_via(srv, path, connections=2)
    assert uploaded.token == crypto.b64encode(token)
    assert [p.split("?")[0] for p, _, _ in srv.requests if p.startswith("/cs")] == \
        [p.split("?")[0] for p, _, _ in srv.requests[:1]]          # one `u`, no restart
    assert len([p for p, _, _ in srv.requests if p.startswith("/ul/")]) == 2


def test_the_api_check_hands_its_connection_to_the_first_client(server):
    """Issue 23: the API check of ``megafs mount`` (TCP, TLS) leaves its kept-alive
    connection to the process's first client, whose first request then needs no connection
    set-up (two round trips fewer over TLS); a second client starts with its own pool."""
    from megafs.api import probe
    from megafs.mount import preflight

    assert server.url.startswith("https://")
    preflight._CHECKED.discard(server.url)
    probe.take_spare()
    preflight.check_api(server.url)
    first = Transport(server.url)
    second = Transport(server.url)
    try:
        (conn,) = [c for conns in first.pool._conns._idle.values() for c in conns]
        sock = conn.sock
        assert sock is not None
        assert first.pool.request("GET", server.url).status_code < 600
        assert [c.sock for conns in first.pool._conns._idle.values() for c in conns] == [sock]
        assert not second.pool._conns._idle
    finally:
        first.close()
        second.close()


def test_the_api_check_over_https_sends_no_request_and_its_connection_outlives_tickets(server):
    """Issue 23: over https the API check is the TCP and TLS handshakes, no GET (one round
    trip fewer before a mount's first listing), and the connection it keeps still carries the
    first request after the server's TLS 1.3 session tickets arrived on it unread (a readable
    idle socket was taken for a closed one: the first ``sc`` of a mount paid a new
    connection, two more round trips)."""
    from megafs.api import probe
    from megafs.mount import preflight

    preflight._CHECKED.discard(server.url)
    probe.take_spare()
    before = server.stats()["requests"]
    preflight.check_api(server.url)
    assert server.stats()["requests"].get("unknown", 0) == before.get("unknown", 0)
    first = Transport(server.url)
    try:
        (conn,) = [c for conns in first.pool._conns._idle.values() for c in conns]
        sock = conn.sock
        assert sock.version() == "TLSv1.3"
        deadline = time.monotonic() + 5
        while not http_readable(sock) and time.monotonic() < deadline:
            time.sleep(0.01)            # the tickets are on their way
        assert http_readable(sock)
        assert first.pool.request("GET", server.url).status_code < 600
        assert [c.sock for conns in first.pool._conns._idle.values() for c in conns] == [sock]
    finally:
        first.close()


def http_readable(sock) -> bool:
    import select
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
