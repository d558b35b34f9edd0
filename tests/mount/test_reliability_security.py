"""Security checks of issue 6, item 6 (the log scan of a whole run is in
tests/test_reliability_chaos.py, at -vv for mount and server).

* the session file is 0600 in a 0700 directory, the staging directory 0700 and staged files
  0600, on a real mount;
* certificate verification is never disabled in megafs/ (a source scan) and a self-signed
  https server on 127.0.0.1 is refused with a clear error, both on the command channel and for
  a transfer URL;
* a plain-http API URL that is not loopback gets a warning (``megafs upload`` and ``megafs
  mount``); a loopback one does not.
"""
from __future__ import annotations

import http.server
import os
import re
import shutil
import ssl
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers.corrupt_proxy import CorruptProxy
from megafs.api.client import MegaClient, PutItem
from helpers.mount import ROOT, MountProcess, force_unmount, megafs, run_with_timeout


@pytest.mark.fuse
@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
def test_session_0600_staging_0700_on_a_real_mount(server, tmp_path):
    state = tmp_path / "state"
    m = MountProcess(tmp_path / "mnt", server.url, state).start()
    try:
        server.faults([{"where": "upload", "http": 503}])     # keep the file staged
        (m.mnt / "secret.txt").write_bytes(b"staged")
        session = next((state / "sessions").glob("*.json"))
        assert stat.S_IMODE(session.stat().st_mode) == 0o600
        assert stat.S_IMODE(session.parent.stat().st_mode) == 0o700
        (mount_dir,) = list((state / "mounts").iterdir())
        staging = mount_dir / "staging"
        assert stat.S_IMODE(staging.stat().st_mode) == 0o700
        staged = list(staging.iterdir())
        assert staged, "the file should be staged while uploads fail"
        for f in staged:
            assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, (f, oct(f.stat().st_mode))
        for f in mount_dir.iterdir():       # the queue database too
            assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0 or f.is_dir(), f
        server.clear_faults()
        run_with_timeout(lambda: (m.mnt / "secret.txt.link").read_text(), 60)
    finally:
        server.clear_faults()
        m.stop()


# --- certificate checks -----------------------------------------------------------------------
DISABLING = [
    re.compile(r"verify\s*=\s*False"),
    re.compile(r"\.verify\s*=\s*(False|0|None)\b"),
    re.compile(r"CERT_NONE"),
    re.compile(r"check_hostname\s*=\s*False"),
    re.compile(r"_create_unverified_context"),
    re.compile(r"disable_warnings"),
    re.compile(r"PYTHONHTTPSVERIFY"),
]


def test_no_code_disables_certificate_verification():
    hits = []
    for path in sorted((ROOT / "megafs").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if any(p.search(line) for p in DISABLING):
                hits.append("%s:%d: %s" % (path.relative_to(ROOT), number, line.strip()))
    assert hits == []


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    """An https server on 127.0.0.1 with a self-signed certificate (answers 200 to anything)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make a self-signed certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _answer(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        do_GET = do_POST = _answer

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(d / "cert.pem"), str(d / "key.pem"))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "https://127.0.0.1:%d/" % srv.server_address[1], hits
    srv.shutdown()
    srv.server_close()


def _clean_env(retry_seconds: str | None = "2") -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE",
                        "MEGAFS_RETRY_SECONDS")}
    if retry_seconds is not None:
        env["MEGAFS_RETRY_SECONDS"] = retry_seconds
    return env


def test_self_signed_api_is_refused_with_a_clear_error(self_signed, tmp_path):
    url, hits = self_signed
    (tmp_path / "f.txt").write_bytes(b"x")
    # with the default retry time (300 s): an untrusted certificate is not retried
    started = time.monotonic()
    proc = megafs("upload", str(tmp_path / "f.txt"), "--api", url, "--state-dir",
                  str(tmp_path / "state"), check=False, timeout=60,
                  env=_clean_env(retry_seconds=None))
    assert time.monotonic() - started < 30
    assert proc.returncode == 1
    assert "certificate is not trusted" in proc.stderr and "REQUESTS_CA_BUNDLE" in proc.stderr, \
        proc.stderr
    assert "Traceback" not in proc.stderr
    assert not hits, "a request got through the TLS handshake"
    assert not list((tmp_path / "state").glob("sessions/*.json"))


def test_self_signed_transfer_url_is_refused(server, self_signed, tmp_path):
    """A `g` reply pointing at a self-signed https download URL: `megafs get` refuses."""
    url, hits = self_signed
    src = tmp_path / "s.bin"
    src.write_bytes(os.urandom(1000))
    with MegaClient.open(api=server.url, state_dir=str(tmp_path / "state")) as c:
        root = c.fetch().roots()[2]
        (node,) = c.put_files([PutItem(root, c.upload(str(src)), {"n": "s.bin"})])
        (ph,) = c.export([node["h"]])
        link = c.link_for(node, ph)

    def to_https(reply):
        reply[0]["g"] = url + "dl/whatever"
        return reply
    before = len(hits)
    with CorruptProxy(server.url) as proxy:
        proxy.corrupt("cs", "g", rewrite=to_https)
        proc = megafs("get", link, "-o", str(tmp_path / "out"), "--api", proxy.url,
                      check=False, timeout=90, env=_clean_env())
        assert proxy.hits >= 1
    assert proc.returncode == 1, proc.stderr
    assert re.search(r"certificate|CERTIFICATE|SSL", proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    assert len(hits) == before


# --- plain http -------------------------------------------------------------------------------
def test_plain_http_non_loopback_api_warns(tmp_path):
    (tmp_path / "f.txt").write_bytes(b"x")
    env = _clean_env()
    env["MEGAFS_RETRY_SECONDS"] = "1"
    # an address that cannot resolve: the command fails fast, after the warning
    api = "http://megafs-test.invalid/"
    proc = megafs("upload", str(tmp_path / "f.txt"), "--api", api, "--state-dir",
                  str(tmp_path / "state"), check=False, timeout=90, env=env)
    assert proc.returncode == 1
    assert "plain http" in proc.stderr and "WARNING" in proc.stderr.upper(), proc.stderr
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        proc = megafs("mount", str(mnt), "--api", api, "--state-dir", str(tmp_path / "state"),
                      "--foreground", check=False, timeout=90, env=env)
    finally:
        force_unmount(mnt)
    assert proc.returncode == 1
    assert "plain http" in proc.stderr, proc.stderr


def test_plain_http_loopback_api_does_not_warn(server, tmp_path):
    (tmp_path / "f.txt").write_bytes(b"x")
    proc = megafs("upload", str(tmp_path / "f.txt"), "--api", server.url, "--state-dir",
                  str(tmp_path / "state"), timeout=60)
    assert "plain http" not in proc.stderr


def test_secret_fields_never_in_repr_or_cli_output(server, tmp_path):
    """`megafs upload` output and the Session repr hold no sid or key."""
    import json
    (tmp_path / "f.txt").write_bytes(b"hello")
    proc = megafs("upload", "-vv", str(tmp_path / "f.txt"), "--api", server.url,
                  "--state-dir", str(tmp_path / "state"), timeout=60)
    session_file = next((tmp_path / "state" / "sessions").glob("*.json"))
    data = json.loads(session_file.read_text())
    out = proc.stdout + proc.stderr
    for field in ("sid", "master_key", "password_key"):
        assert data[field] not in out, field
    link_key = proc.stdout.strip().splitlines()[-1].split("#", 1)[1]
    assert link_key not in proc.stderr        # the link goes to stdout only
    with MegaClient.open(api=server.url, state_dir=str(tmp_path / "state")) as c:
        text = repr(c.session)
        assert data["sid"] not in text and data["master_key"] not in text
    assert Path(session_file).stat().st_mode & 0o077 == 0
