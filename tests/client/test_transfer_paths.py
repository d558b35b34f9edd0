"""The fast transfer paths against ``megafs serve``: multi-chunk POSTs and GETs that recover
from faults mid-span, keep-alive reuse, transfers through an HTTP proxy (the ``requests``
fallback), chunked upload bodies (the server's buffered-write fallback), and downloads with
and without O_DIRECT."""
from __future__ import annotations

import hashlib
import http.client
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from megafs import chunks, crypto
from megafs.api import download as download_module
from megafs.api.client import MegaClient, PutItem
from megafs.api.widen import Budget
from helpers.server import ServerProcess
from helpers.rawapi import Api, decrypt_and_verify, encrypt_file, plaintext
from helpers.client import fast_retry

MIB = 1 << 20
BIG = 20 * MIB + 5      # with one connection: 4 MiB POSTs and 5 MiB GETs, several chunks each


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "big.bin"
    path.write_bytes(os.urandom(BIG))
    return str(path)


def sha(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def fired(srv) -> int:
    return requests.get(srv.url + "_megafs/stats", timeout=10).json().get("faults_fired", 0)


def publish(client: MegaClient, path: str) -> tuple[str, dict]:
    root = client.fetch().roots()[2]
    uploaded = client.upload(path)
    node = client.put_files([PutItem(root, uploaded, {"n": os.path.basename(path)})])[0]
    assert isinstance(node, dict), node
    ph = client.export([node["h"]])[0]
    assert isinstance(ph, str), ph
    return client.link_for(node, ph), node


def test_spans_hold_several_chunks(srv):
    with MegaClient.public(srv.url, connections=1) as client:
        up, down = client.uploader, client.downloader
        assert up.span_for(BIG) == 4 * MIB and down.span_for(BIG) == 5 * MIB
        assert up.span_for(2 * MIB) == MIB and down.span_for(2 * MIB) == MIB
    with MegaClient.public(srv.url, connections=4) as client:
        assert client.uploader.span_for(1 << 30) == 4 * MIB
        assert client.downloader.span_for(1 << 30) == 8 * MIB
        assert client.uploader.span_for(BIG) == MIB


@pytest.mark.parametrize("rule", [
    {"where": "upload", "drop": True, "count": 2},
    {"where": "upload", "error": -14, "count": 1},
    {"where": "upload", "http": 503, "count": 1},
    {"where": "download", "drop": True, "count": 2},
    {"where": "download", "truncate": True, "count": 2},
    {"where": "download", "error": -3, "count": 1},
], ids=["up-drop", "up-14", "up-503", "down-drop", "down-truncate", "down-3"])
def test_multi_chunk_spans_recover_from_faults(srv, account, tmp_path, big_file, rule):
    with MegaClient.open(srv.url, state_dir=account, connections=1,
                         retry=fast_retry()) as client:
        before = fired(srv)
        if rule["where"] == "upload":
            srv.faults([rule])
        link, _ = publish(client, big_file)
        if rule["where"] == "download":
            srv.faults([rule])
        out = str(tmp_path / "out")
        client.download(link, out)
        srv.clear_faults()
        assert fired(srv) > before
        assert sha(out) == sha(big_file)


def test_tampered_multi_chunk_download_fails_mac(srv, account, tmp_path, big_file):
    from megafs.errors import IntegrityError
    with MegaClient.open(srv.url, state_dir=account, connections=1,
                         retry=fast_retry()) as client:
        link, _ = publish(client, big_file)
        srv.faults([{"where": "download", "tamper": True, "count": 1}])
        out = tmp_path / "dl" / "out"
        out.parent.mkdir()
        with pytest.raises(IntegrityError, match="MAC mismatch"):
            client.download(link, str(out))
        assert os.listdir(out.parent) == []


def test_connections_are_kept_alive(srv, account, tmp_path, big_file, monkeypatch):
    connects = []
    original = http.client.HTTPConnection.connect

    def counting(self):
        connects.append(self.host)
        return original(self)

    with MegaClient.open(srv.url, state_dir=account, connections=2,
                         retry=fast_retry()) as client:
        # no widening (api/widen.py, tests/unit/test_widen.py): on a loaded machine a loopback
        # chunk can take long enough to look like a slow link, and each extra worker is a
        # legitimate new connection; this test counts reuse only
        client.uploader.budget = Budget(0)
        client.downloader.budget = Budget(0)
        monkeypatch.setattr(http.client.HTTPConnection, "connect", counting)
        link, node = publish(client, big_file)
        client.download(link, str(tmp_path / "out"))
        info = client.open_download(handle=node["h"])
        key = client.file_key(node)
        for offset in range(0, BIG, 3 * MIB):
            client.read_range(info.url, key, offset, min(MIB, BIG - offset))
    # 6 POSTs, 4 GETs and 7 ranged reads over at most two transfer connections, plus the
    # one kept-alive connection the API requests (u, p, l, g) share since they left requests
    assert 1 <= len(connects) <= 3, connects


def test_download_without_o_direct_and_to_tmpfs(srv, account, tmp_path, big_file, monkeypatch):
    with MegaClient.open(srv.url, state_dir=account,
                         retry=fast_retry()) as client:
        link, _ = publish(client, big_file)
        if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
            out = "/dev/shm/megafs-test-%d" % os.getpid()
            try:
                client.download(link, out)
                assert sha(out) == sha(big_file)
            finally:
                if os.path.exists(out):
                    os.unlink(out)
        monkeypatch.setattr(download_module, "_O_DIRECT", 0)
        client.download(link, str(tmp_path / "buffered"))
        assert sha(str(tmp_path / "buffered")) == sha(big_file)


class _ForwardProxy:
    """A minimal HTTP forward proxy (absolute-URI requests), recording what it forwarded."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.seen.append("%s %s" % (self.command, self.path.split("?")[0]))
                target = self.path.split("://", 1)[1]
                hostport, path = target.split("/", 1)
                host, port = hostport.rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("proxy-connection", "connection", "host")}
                conn.request(self.command, "/" + path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("content-length", "connection",
                                           "transfer-encoding", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = _forward  # noqa: N815
            do_POST = _forward  # noqa: N815

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_transfers_through_an_http_proxy(tmp_path, monkeypatch):
    """A plain-http API and transfers go through $HTTP_PROXY (the https ones would need a
    CONNECT proxy, which requests handles the same way)."""
    proxy = _ForwardProxy()
    srv = ServerProcess(tmp_path / "plain-server").start()
    account = str(tmp_path / "account")
    try:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("http_proxy", proxy.url)
        path = tmp_path / "f.bin"
        path.write_bytes(os.urandom(3 * MIB + 11))
        with MegaClient.open(srv.url, state_dir=account,
                             retry=fast_retry()) as client:
            link, node = publish(client, str(path))
            client.download(link, str(tmp_path / "out"))
            info = client.open_download(handle=node["h"])
            part = client.read_range(info.url, client.file_key(node), 5, 1000)
        assert sha(str(tmp_path / "out")) == sha(str(path))
        assert part == path.read_bytes()[5:1005]
        assert any(s.startswith("POST http") and "/ul/" in s for s in proxy.seen)
        assert any(s.startswith("GET http") and "/dl/" in s for s in proxy.seen)
    finally:
        proxy.close()
        srv.stop()


def test_chunked_upload_bodies_are_stored(module_server):
    """A chunked POST body is not in the server's aligned buffer: it takes the buffered path."""
    api = Api(module_server.url)
    try:
        acct = api.new_account()
        root = api.roots(acct)[2]
        enc = encrypt_file(plaintext(3 * MIB + 4097, seed=21))
        url = api.upload_url(acct, len(enc.ciphertext))
        token = b""
        for offset, length in chunks.groups(len(enc.ciphertext), 2 * MIB):
            piece = enc.ciphertext[offset:offset + length]
            check = crypto.b64encode(crypto.upload_checksum(piece))
            pieces = (piece[i:i + 65536] for i in range(0, len(piece), 65536))
            resp = api.http.post("%s/%d?c=%s" % (url, offset, check), data=pieces, timeout=30)
            assert resp.request.headers.get("Transfer-Encoding") == "chunked"
            token = resp.content
        assert len(token) == 36
        node = api.call({"a": "p", "t": root, "n": [Api.file_item(acct, token.decode(), enc,
                                                                  "c")]}, sid=acct.sid)["f"][0]
        got = api.download(api.call({"a": "g", "g": 1, "n": node["h"]}, sid=acct.sid)["g"])
        assert decrypt_and_verify(enc.key, got) == enc.plaintext
    finally:
        api.close()


@pytest.mark.parametrize("size", [0, 1, 11, 12, 13, 23, 24, 25, 4095, 4096, 65537,
                                  262143, 262144, 262157, MIB, 3 * MIB + 7])
def test_buffer_variants_of_the_crypto_helpers_agree(size):
    """The no-allocation forms used on the transfer paths give the same bytes as the plain ones."""
    key, nonce = os.urandom(16), os.urandom(8)
    data = os.urandom(size)
    small = (24, 1000) if size < 300000 else (4104,)   # tiny scratches: many calls
    for scratch in [bytearray(n) for n in small + (256 * 1024,)]:
        assert crypto.upload_checksum(data, scratch) == crypto.upload_checksum(data)
    if size:
        for scratch in [bytearray(n) for n in (16,) * (size < 300000) + (1000, 256 * 1024)]:
            assert crypto.chunk_mac(key, nonce, data, scratch) == \
                crypto.chunk_mac(key, nonce, data)
    for offset in (0, 5, 131072, (1 << 40) + 3):
        buf = bytearray(data)
        assert crypto.ctr_crypt(key, nonce, offset, buf, output=buf) is None
        assert bytes(buf) == crypto.ctr_crypt(key, nonce, offset, data)


def test_upload_checksum_matches_a_per_byte_reference():
    def reference(data: bytes) -> bytes:
        acc = bytearray(12)
        for j, byte in enumerate(data):
            acc[j % 12] ^= byte
        return bytes(acc)

    for size in list(range(0, 80)) + [3071, 3072, 3073, 3084, 6143, 6156, 65537]:
        data = os.urandom(size)
        expected = reference(data)
        assert crypto.upload_checksum(data) == expected, size
        for scratch in (bytearray(24), bytearray(36), bytearray(1000), bytearray(4096)):
            assert crypto.upload_checksum(data, scratch) == expected, (size, len(scratch))
