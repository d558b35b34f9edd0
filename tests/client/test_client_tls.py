"""The client's HTTPS transfer path against ``megafs serve --tls`` (issue 11 item 3): with
``https_transfers`` the client asks `u`/`g` for https URLs (``ssl: 2``), uploads and
downloads over TLS with the certificate checked against the server's CA, and refuses a
transfer server whose certificate it cannot verify."""
from __future__ import annotations

import os
import time

import pytest

from megafs.api.client import MegaClient, PutItem
from megafs.errors import TransportError
from megafs.retry import RetryPolicy
from helpers.server import ServerProcess

MIB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("tls") / "server-data", tls=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def account(tmp_path_factory):
    return str(tmp_path_factory.mktemp("account"))


def fast_retry(give_up: float = 30.0) -> RetryPolicy:
    return RetryPolicy(initial=0.02, cap=0.3, give_up_after=give_up)


def test_round_trip_over_https_transfer_urls(server, account, tmp_path, monkeypatch):
    server.trust_ca(monkeypatch)
    path = tmp_path / "f"
    path.write_bytes(os.urandom(2 * MIB + 77))
    with MegaClient.open(server.url, state_dir=account, retry=fast_retry(),
                         https_transfers=True) as c:
        assert not c.api.startswith("https://")              # the API stays plain http
        root = c.fetch().roots()[2]
        node = c.put_files([PutItem(root, c.upload(str(path)), {"n": "f"})])[0]
        info = c.open_download(handle=node["h"])
        assert info.url.startswith("https://")
        data = path.read_bytes()
        assert c.read_range(info.url, c.file_key(node), MIB - 3, 4096) == data[MIB - 3:MIB + 4093]
        link = c.link_for(node, c.export([node["h"]])[0])
    with MegaClient.public(server.url, retry=fast_retry(), https_transfers=True) as anon:
        out = anon.download(link, str(tmp_path / "out"))
    assert open(out, "rb").read() == data


def test_untrusted_transfer_certificate_is_refused(server, account, tmp_path, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    path = tmp_path / "g"
    path.write_bytes(b"secret")
    with MegaClient.open(server.url, state_dir=account, retry=fast_retry(give_up=120),
                         https_transfers=True) as c:
        started = time.monotonic()
        with pytest.raises(TransportError, match="certificate is not trusted.*VERIFY_FAILED"):
            c.upload(str(path))
    assert time.monotonic() - started < 10       # refused at once, not retried for 120 s
