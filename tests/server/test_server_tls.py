"""Transfers over HTTPS (issue 11 item 3): with ``--tls``, `u` and `g` that send `ssl` get
https URLs on their own port, signed by a CA made on first run in the data directory and
exported for clients; without `ssl` they stay http.  Certificates are really checked."""
from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess
import sys

import pytest
import requests

from helpers.rawapi import Api, checksum_b64, decrypt_and_verify, encrypt_file, plaintext
from helpers.server import ROOT, ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("tls") / "server-data", tls=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server):
    client = Api(server.url, verify=server.ca_file)
    yield client
    client.close()


@pytest.fixture(scope="module")
def acct(api):
    return api.new_account()


def test_the_ca_is_made_in_the_data_dir_and_printed(server):
    ca = server.ca_file
    assert ca == str(server.data_dir / "tls" / "ca.pem") and os.path.exists(ca)
    tls_dir = server.data_dir / "tls"
    assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((tls_dir / key).stat().st_mode) == 0o600
    assert ca in server.log_path.read_text() and "REQUESTS_CA_BUNDLE=" in \
        server.log_path.read_text()


def test_ssl_2_gets_https_urls_on_another_port(server, api, acct):
    secure = server.info()["secure_transfers"]
    assert secure.startswith("https://127.0.0.1:") and secure != server.url
    for ssl_level in (1, 2):
        url = api.call({"a": "u", "s": 10, "ssl": ssl_level}, sid=acct.sid)["p"]
        assert url.startswith(secure + "ul/")
    assert api.call({"a": "u", "s": 10}, sid=acct.sid)["p"].startswith(server.url + "ul/")
    assert api.call({"a": "u", "s": 10, "ssl": 0}, sid=acct.sid)["p"].startswith(server.url)
    assert api.call({"a": "u", "s": 10, "ssl": "2"}, sid=acct.sid) == -2
    assert api.call({"a": "u", "s": 10, "ssl": 3}, sid=acct.sid) == -2


def test_upload_and_download_over_https(server, api, acct):
    enc = encrypt_file(plaintext(400_000, seed=12))
    url = api.call({"a": "u", "s": len(enc.ciphertext), "ssl": 2}, sid=acct.sid)["p"]
    assert url.startswith("https://")
    token = b""
    for offset, end in ((0, 131072), (131072, 393216), (393216, 400_000)):
        piece = enc.ciphertext[offset:end]
        resp = api.http.post("%s/%d?c=%s" % (url, offset, checksum_b64(piece)), data=piece,
                             timeout=30)
        assert resp.status_code == 200
        token = resp.content
    node = api.call({"a": "p", "t": api.roots(acct)[2],
                     "n": [Api.file_item(acct, token.decode(), enc, "secure")]},
                    sid=acct.sid)["f"][0]
    got = api.call({"a": "g", "g": 1, "n": node["h"], "ssl": 2}, sid=acct.sid)["g"]
    assert got.startswith(server.info()["secure_transfers"] + "dl/")
    assert decrypt_and_verify(enc.key, api.download(got)) == enc.plaintext
    ranged = api.http.get(got + "/131072-262143", timeout=30)
    assert ranged.content == enc.ciphertext[131072:262144]
    plain = api.call({"a": "g", "g": 1, "n": node["h"]}, sid=acct.sid)["g"]
    assert plain.startswith("http://") and api.download(plain) == enc.ciphertext


def test_certificates_are_checked(server, api, acct):
    url = api.call({"a": "u", "s": 10, "ssl": 2}, sid=acct.sid)["p"]
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(url + "/0", data=bytes(10), timeout=10)            # the system CAs only
    ctx = ssl.create_default_context(cafile=server.ca_file)
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    with ctx.wrap_socket(socket.create_connection((host, int(port))),
                         server_hostname="localhost") as sock:
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
    # a client process trusts it through the environment, as megafs would
    code = ("import requests, sys; "
            "print(requests.post(sys.argv[1] + '/0', data=bytes(10), timeout=10).status_code)")
    out = subprocess.run([sys.executable, "-c", code, url], env=server.client_env(),
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.stdout.strip() == "200", out.stderr[-500:]


def test_a_plain_http_client_on_the_tls_port_is_refused(server):
    secure = server.info()["secure_transfers"].replace("https://", "http://")
    with pytest.raises(requests.ConnectionError):
        requests.get(secure + "dl/AAAAAAAAAAAAAAAAAAAAAA", timeout=10)
    # and the server keeps serving
    assert requests.get(server.url + "_megafs/stats", timeout=10).status_code == 200


def test_a_restart_keeps_the_ca(tmp_path):
    srv = ServerProcess(tmp_path / "data", tls=True).start()
    try:
        first = open(srv.ca_file, "rb").read()
        srv.restart()
        assert open(srv.ca_file, "rb").read() == first
    finally:
        srv.stop()


def test_tls_api_serves_everything_over_https(tmp_path):
    with ServerProcess(tmp_path / "data", extra_args=["--tls-api",
                                                      "--hashcash-easiness", "0"]) as srv:
        assert srv.url.startswith("https://")
        ca = str(tmp_path / "data" / "tls" / "ca.pem")
        info = requests.get(srv.url + "_megafs/info", timeout=10, verify=ca).json()
        assert info["wait"].startswith("https://") and info["ca_file"] == ca
        api = Api(srv.url, verify=ca)
        acct = api.new_account()
        assert api.call({"a": "u", "s": 5, "ssl": 2}, sid=acct.sid)["p"].startswith("https://")
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(srv.url + "_megafs/stats", timeout=10)


def test_tls_name_adds_a_host_name_and_a_restart_without_it_drops_it(tmp_path):
    """``--tls-name`` puts another name in the certificate (the bench gives rclone, which
    always asks g.api.mega.co.nz, this server through a proxy); the CA stays the same when the
    names change, and a name no longer asked for stops being accepted."""
    data = tmp_path / "data"
    ca = str(data / "tls" / "ca.pem")

    def handshake(port: int, name: str) -> str:
        ctx = ssl.create_default_context(cafile=ca)
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                             server_hostname=name) as sock:
            return sock.version() or ""

    with ServerProcess(data, tls="api", extra_args=["--tls-name", "g.api.mega.co.nz"]) as srv:
        first_ca = open(ca, "rb").read()
        assert handshake(srv.port, "g.api.mega.co.nz").startswith("TLS")
        assert handshake(srv.port, "localhost").startswith("TLS")
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(srv.port, "mega.example")
    with ServerProcess(data, tls="api") as srv:
        assert open(ca, "rb").read() == first_ca
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(srv.port, "g.api.mega.co.nz")


def test_connect_proxy_tunnels_to_this_api_only(tmp_path):
    """``--proxy-port``: a CONNECT for any host ends at this server's API (TLS end to end,
    the server's certificate); anything but CONNECT is refused; it needs ``--tls-api``."""
    with ServerProcess(tmp_path / "data", tls="api",
                       extra_args=["--tls-name", "g.api.mega.co.nz", "--proxy-port", "0"]) as srv:
        proxy, ca = srv.info()["proxy"], srv.ca_file
        assert proxy.startswith("http://127.0.0.1:") and proxy != srv.url
        # how rclone reaches it: https to the real API host name through the proxy
        info = requests.get("https://g.api.mega.co.nz/_megafs/info", timeout=10, verify=ca,
                            proxies={"https": proxy.rstrip("/")}).json()
        assert info["api"] == srv.url and info["proxy"] == proxy
        host, port = proxy.split("//")[1].rstrip("/").split(":")
        # another host name still reaches this server, never the host asked for
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(b"CONNECT example.invalid:443 HTTP/1.1\r\nHost: example.invalid\r\n\r\n")
            assert raw.recv(1024).startswith(b"HTTP/1.1 200 ")
            ctx = ssl.create_default_context(cafile=ca)
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /_megafs/stats HTTP/1.1\r\nHost: localhost\r\n"
                            b"Connection: close\r\n\r\n")
                assert tls.recv(1024).startswith(b"HTTP/1.")
        refused = requests.get(proxy + "_megafs/info", timeout=10)
        assert refused.status_code == 405 and refused.headers["Allow"] == "CONNECT"
        assert requests.get(srv.url + "_megafs/stats", timeout=10, verify=ca).ok
    proc = subprocess.run([sys.executable, "-m", "megafs", "serve", "--data",
                           str(tmp_path / "plain"), "--port", "0", "--proxy-port", "0"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and "--proxy-port needs --tls-api" in proc.stderr


def test_megafs_client_over_tls_end_to_end(tmp_path, monkeypatch):
    """How client and mount tests run their transfers over TLS: ``--tls-api`` (the client
    asks `ssl: 2` when its API URL is https) and the CA trusted through the environment
    (``trust_ca`` here, ``client_env()`` for a mount or CLI subprocess)."""
    from megafs.api.client import MegaClient
    from megafs.api.commands import PutItem

    with ServerProcess(tmp_path / "data", tls="api") as srv:
        srv.trust_ca(monkeypatch)
        data = os.urandom(3 * 1024 * 1024 + 17)
        path = tmp_path / "in.bin"
        path.write_bytes(data)
        with MegaClient.open(srv.url, state_dir=str(tmp_path / "state")) as client:
            root = client.fetch().roots()[2]
            node = client.put_files([PutItem(root, client.upload(str(path)), {"n": "tls"})])[0]
            link = client.link_for(node, client.export([node["h"]])[0])
            client.download(link, str(tmp_path / "out.bin"))
        assert (tmp_path / "out.bin").read_bytes() == data
        stats = srv.stats()
        assert stats["requests"]["upload"] >= 1 and stats["requests"]["download"] >= 1
        # every listener of a --tls-api server is https, so these transfers were too
        info = srv.info()
        assert srv.url.startswith("https://") and info["secure_transfers"].startswith("https://")
        assert stats.get("hashcash_login", 0) >= 1      # the login went through the 402 too


def test_advertise_hands_out_a_forwarder_for_wait_and_transfer_urls(tmp_path, monkeypatch):
    """``--advertise ROLE=URL``: the wait URLs of ``sc`` and the https transfer URLs name a
    forwarding proxy in front of the listeners (``scripts/bench --wan`` puts its link emulator
    there); a bad value is refused with one line."""
    from megafs.api.client import MegaClient

    with ServerProcess(tmp_path / "data", tls="api",
                       extra_args=["--advertise", "wait=https://127.0.0.1:9/",
                                   "--advertise", "transfers=https://127.0.0.1:8"]) as srv:
        info = srv.info()
        assert info["wait"] == "https://127.0.0.1:9/"
        assert info["secure_transfers"] == "https://127.0.0.1:8/"
        srv.trust_ca(monkeypatch)
        with MegaClient.open(srv.url, state_dir=str(tmp_path / "state")) as client:
            sn = client.fetch().sn
            reply = requests.post(srv.url + "sc?sn=%s&sid=%s" % (
                sn, client._need_session().sid), timeout=30, verify=srv.ca_file).json()
            assert reply["w"].startswith("https://127.0.0.1:9/")
    proc = subprocess.run([sys.executable, "-m", "megafs", "serve", "--data",
                           str(tmp_path / "bad"), "--port", "0", "--advertise", "api=http://x/"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and "--advertise wants wait=URL" in proc.stderr
