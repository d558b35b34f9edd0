"""Transfer quota on downloads and downloads without Content-Length (issue 11 item 7), as the
real service shows them to clients: HTTP 509 + ``X-MEGA-Time-Left`` on the download URL and
``e: -17`` + ``tl`` from ``g`` past the quota; chunked or connection-delimited bodies when a
fault rule asks for them."""
from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import pytest
import requests

from helpers.rawapi import Api, decrypt_and_verify, encrypt_file, plaintext
from helpers.server import ServerProcess

QUOTA = 1 << 20
WINDOW = 6      # long enough that a loaded machine does not see the window move early


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("limits") / "server-data"
    with ServerProcess(data, extra_args=["--transfer-quota", str(QUOTA), "--transfer-window",
                                         str(WINDOW), "--hashcash-easiness", "0"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server):
    client = Api(server.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def acct(api):
    return api.new_account()


def test_downloads_past_the_transfer_quota_get_509_until_the_window_moves(server, api, acct):
    enc = encrypt_file(plaintext(600_000, seed=1))
    node = api.put_file(acct, api.roots(acct)[2], enc, "big")
    assert api.call({"a": "uq", "xfer": 1}, sid=acct.sid)["mxfer"] == QUOTA
    url = api.call({"a": "g", "g": 1, "n": node["h"]}, sid=acct.sid)["g"]
    started = time.monotonic()
    assert decrypt_and_verify(enc.key, api.download(url)) == enc.plaintext
    refused = requests.get(url, timeout=10)
    assert refused.status_code == 509 and refused.content == b""
    left = int(refused.headers["X-MEGA-Time-Left"])
    assert 1 <= left <= WINDOW
    info = api.call({"a": "g", "g": 1, "n": node["h"]}, sid=acct.sid)
    assert info["e"] == -17 and 1 <= info["tl"] <= WINDOW and "g" not in info
    assert info["s"] == 600_000                    # the file's details still come
    small = requests.get(url + "/0-99999", timeout=10)  # what still fits in the quota is served
    assert small.status_code == 200 and small.content == enc.ciphertext[:100_000]
    assert api.call({"a": "uq", "xfer": 1}, sid=acct.sid)["rua"] == 700_000
    time.sleep(max(0.0, started + left + 0.2 - time.monotonic()))
    assert requests.get(url, timeout=10).content == enc.ciphertext
    assert server.stats()["transfer_quota_refusals"] >= 1


def test_a_download_larger_than_the_quota_is_refused_for_a_whole_window(api, acct):
    enc = encrypt_file(plaintext(QUOTA + 1, seed=2))
    node = api.put_file(acct, api.roots(acct)[2], enc, "huge")
    info = api.call({"a": "g", "g": 1, "n": node["h"]}, sid=acct.sid)
    assert info["e"] == -17 and info["tl"] == WINDOW


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    data = tmp_path_factory.mktemp("framing") / "server-data"
    with ServerProcess(data, extra_args=["--hashcash-easiness", "0"]) as srv:
        api = Api(srv.url)
        acct = api.new_account()
        enc = encrypt_file(plaintext(2_500_000, seed=3))
        node = api.put_file(acct, api.roots(acct)[2], enc, "framed")
        url = api.call({"a": "g", "g": 1, "n": node["h"]}, sid=acct.sid)["g"]
        yield srv, enc, url


def raw_get(url: str) -> tuple[bytes, bytes]:
    """(head, body) of a GET read until the server closes, over a fresh connection."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
                     % (parts.path.encode(), parts.hostname.encode(), parts.port))
        data = b""
        while True:
            piece = sock.recv(1 << 16)
            if not piece:
                break
            data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_downloads_without_content_length(stored, framing):
    srv, enc, url = stored
    srv.faults([{"where": "download", "framing": framing, "count": 2}])
    try:
        resp = requests.get(url, timeout=30)
        assert resp.status_code == 200 and "Content-Length" not in resp.headers
        assert decrypt_and_verify(enc.key, resp.content) == enc.plaintext
        head, body = raw_get(url + "/1000-1199999")
        assert b"content-length" not in head.lower()
        if framing == "chunked":
            assert b"transfer-encoding: chunked" in head.lower() and body.endswith(b"0\r\n\r\n")
        else:
            assert b"connection: close" in head.lower()
            assert body == enc.ciphertext[1000:1200000]
    finally:
        srv.clear_faults()
    assert requests.get(url, timeout=30).headers["Content-Length"] == str(len(enc.ciphertext))


def test_a_bad_framing_rule_is_refused(stored):
    srv = stored[0]
    resp = requests.post(srv.url + "_megafs/faults", timeout=10, headers=srv.control_headers(),
                         json={"rules": [{"where": "download", "framing": "gzip"}]})
    assert resp.status_code == 400 and "framing" in resp.json()["error"]
