"""The local server against a web page, another local user and floods (issue 20 items 9-12).

A web page in a local browser could POST to the server (a ``text/plain`` no-cors fetch) and a
DNS-rebound name reached it with a foreign ``Host``; another local user could read the session
ids from a data dir made with umask modes and drive the control endpoints; upload bodies were
buffered before their URL was checked, request heads had no deadline and connections no cap.
The data dir lives in a scratch folder other users can traverse, so the second uid's refusals
come from the modes the server sets, not from pytest's private temporary folder.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import stat
import struct
import subprocess
import tempfile
import time

import pytest
import requests

from megafs import crypto
from megafs.server.datadir import TOKEN_HEADER, read_token
from helpers.rawapi import Api
from helpers.server import ServerProcess

NOBODY = 65534


@pytest.fixture(scope="module")
def scratch():
    """A folder of this test's own that other users may traverse (0755)."""
    path = tempfile.mkdtemp(prefix="megafs-security-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def srv(scratch):
    old = os.umask(0o022)
    try:
        server = ServerProcess(os.path.join(scratch, "data"), hashcash_easiness=0,
                               extra_args=["--head-timeout", "2", "--max-connections", "12",
                                           "--upload-memory", "4M"])
        server.start()
    finally:
        os.umask(old)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(srv):
    client = Api(srv.url)
    yield client
    client.close()


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _host(srv) -> str:
    return srv.url.split("//", 1)[1].rstrip("/")


def _raw(srv, request: bytes, timeout: float = 5.0) -> bytes:
    """Send ``request`` on a fresh connection; everything the server answers until it closes
    or goes quiet."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as sock:
        sock.sendall(request)
        out = b""
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                out += data
                if b"\r\n\r\n" in out:
                    head, _, body = out.partition(b"\r\n\r\n")
                    length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")]
                    if length and len(body) >= length[0]:
                        break
        except socket.timeout:
            pass
    return out


# --- item 11: a private data dir, sessions stored hashed ---------------------------------------
def test_data_dir_is_private_under_umask_022(srv):
    data = srv.data_dir
    for folder in (data, data / "blobs", data / "uploads"):
        assert _mode(folder) == 0o700, folder
    assert _mode(data / "megafs-server.db") == 0o600
    assert _mode(data / "control-token") == 0o600


@pytest.mark.log_ok("other users can open")
def test_existing_data_dir_keeps_its_mode(scratch):
    data = os.path.join(scratch, "made-by-someone")
    os.mkdir(data)
    os.chmod(data, 0o755)
    old = os.umask(0o022)
    try:
        with ServerProcess(data, hashcash_easiness=0) as server:
            assert _mode(data) == 0o755
            assert _mode(os.path.join(data, "megafs-server.db")) == 0o600
            assert _mode(os.path.join(data, "blobs")) == 0o700
            assert "other users can open" in server.log_path.read_text()
    finally:
        os.umask(old)


def test_sessions_are_stored_hashed(srv, api):
    acct = api.new_account()
    with sqlite3.connect(str(srv.data_dir / "megafs-server.db")) as db:
        dump = "\n".join(db.iterdump())
    assert acct.sid not in dump
    assert isinstance(api.call({"a": "ug"}, sid=acct.sid), dict)


def test_plain_session_ids_of_an_older_data_dir_are_migrated(tmp_path):
    with ServerProcess(tmp_path / "data", hashcash_easiness=0) as server:
        client = Api(server.url)
        acct = client.new_account()
        client.close()
    db_path = str(tmp_path / "data" / "megafs-server.db")
    with sqlite3.connect(db_path) as db:           # as an older server stored it
        db.execute("UPDATE sessions SET sid=?", (acct.sid,))
        db.execute("DELETE FROM meta WHERE key='sids'")
    with ServerProcess(tmp_path / "data", hashcash_easiness=0) as server:
        client = Api(server.url)
        assert isinstance(client.call({"a": "ug"}, sid=acct.sid), dict)
        client.close()
    with sqlite3.connect(db_path) as db:
        assert acct.sid not in "\n".join(db.iterdump())


# --- items 9 and 10: Host, Origin, the control token ---------------------------------------
def test_control_writes_and_mail_need_the_token(srv):
    url = srv.url + "_megafs/"
    body = json.dumps({"rules": []})
    token = read_token(srv.data_dir)
    json_type = {"Content-Type": "application/json"}
    assert requests.post(url + "faults", data=body, headers=json_type, timeout=10
                         ).status_code == 403
    assert requests.post(url + "faults", data=body, timeout=10,
                         headers={**json_type, TOKEN_HEADER: "x" * len(token)}).status_code == 403
    assert requests.get(url + "mail", timeout=10).status_code == 403
    # a no-cors page can only send text/plain (or a form): refused even with the token
    assert requests.post(url + "faults", data=body, timeout=10, headers={
        "Content-Type": "text/plain", TOKEN_HEADER: token}).status_code == 415
    assert requests.post(url + "faults", data=body, timeout=10, headers={
        **json_type, TOKEN_HEADER: token}).status_code == 200
    assert requests.get(url + "mail", headers={TOKEN_HEADER: token}, timeout=10).ok
    assert requests.get(url + "stats", timeout=10).ok          # counters only: no token


def test_foreign_host_is_refused(srv):
    port = srv.port
    for path in ("/_megafs/mail", "/_megafs/stats", "/file/AAAAAAAA", "/cs"):
        answer = _raw(srv, b"GET %s HTTP/1.1\r\nHost: rebound.example:%d\r\n\r\n"
                      % (path.encode(), port))
        assert answer.startswith(b"HTTP/1.1 421"), (path, answer[:80])
    for host in (b"127.0.0.1:%d" % port, b"localhost:%d" % port, b"[::1]:%d" % port,
                 b"localhost"):
        answer = _raw(srv, b"GET /_megafs/stats HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
        assert answer.startswith(b"HTTP/1.1 200"), (host, answer[:80])


def test_cross_origin_posts_are_refused(srv, api):
    """What a page on another origin sends with ``fetch(url, {mode: "no-cors", method:
    "POST", body})``: text/plain and its own Origin."""
    token = read_token(srv.data_dir)
    page = {"Origin": "http://evil.example", "Content-Type": "text/plain;charset=UTF-8"}
    resp = requests.post(srv.url + "cs", data='[{"a":"up"}]', headers=page, timeout=10)
    assert resp.status_code == 403
    resp = requests.post(srv.url + "_megafs/faults", data='{"rules":[]}', timeout=10,
                         headers={**page, "Content-Type": "application/json",
                                  TOKEN_HEADER: token})
    assert resp.status_code == 403
    other_port = {"Origin": "http://127.0.0.1:1", "Content-Type": "text/plain"}
    assert requests.post(srv.url + "cs", data="[]", headers=other_port,
                         timeout=10).status_code == 403
    same = {"Origin": srv.url.rstrip("/"), "Content-Type": "text/plain"}
    resp = requests.post(srv.url + "cs", data='[{"a":"ug"}]', headers=same, timeout=10)
    assert resp.status_code == 200 and isinstance(resp.json(), list)


def test_another_user_cannot_read_the_token_or_the_sessions(srv):
    """A second uid (nobody) can reach the port but not the token, the database or the blobs,
    and without the token every control write and the mail answer 403."""
    script = r"""
import json, sys, urllib.request, urllib.error
data, url = sys.argv[1], sys.argv[2]
out = {}
for name in ("control-token", "megafs-server.db", "blobs"):
    try:
        open(data + "/" + name, "rb").read(1)
        out[name] = "read"
    except OSError as exc:
        out[name] = type(exc).__name__
for path, body in (("_megafs/quota", b'{"bytes": 0}'), ("_megafs/mail", None)):
    req = urllib.request.Request(url + path, data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        out[path] = urllib.request.urlopen(req, timeout=10).status
    except urllib.error.HTTPError as exc:
        out[path] = exc.code
print(json.dumps(out))
"""
    done = subprocess.run(["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY),
                           "--clear-groups", "/usr/bin/python3", "-I", "-c", script,
                           str(srv.data_dir), srv.url], capture_output=True, text=True,
                          timeout=30, cwd="/")
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {"control-token": "PermissionError", "megafs-server.db": "PermissionError",
                    "blobs": "PermissionError", "_megafs/quota": 403, "_megafs/mail": 403}


# --- item 12: floods -------------------------------------------------------------------------
def test_upload_body_to_an_unknown_url_is_not_read(srv):
    """The answer comes before any of the announced 200 MiB is sent."""
    started = time.monotonic()
    answer = _raw(srv, b"POST /ul/%s/0 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n"
                  b"\r\n" % (b"A" * 40, 200 << 20))
    assert answer.startswith(b"HTTP/1.1 404"), answer[:80]
    assert time.monotonic() - started < 3


@pytest.mark.log_ok("beyond the size")
def test_upload_range_is_checked_before_the_body(srv, api):
    acct = api.new_account()
    url = api.upload_url(acct, 1000)
    path = url.split("//", 1)[1].split("/", 1)[1]
    answer = _raw(srv, b"POST /%s/0 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n"
                  % (path.encode(), 200 << 20))
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"-7"), answer[-80:]


def test_upload_bodies_held_at_once_are_bounded(srv, api):
    """With ``--upload-memory 4M`` a 2 MiB body waits while a 3 MiB one is held (its client
    still sending), and is taken once that one is done."""
    acct = api.new_account()
    url = api.upload_url(acct, 4608 << 10)          # chunk boundaries 2688 KiB, 4608 KiB
    path = url.split("//", 1)[1].split("/", 1)[1].encode()
    first_len, second_len = 2688 << 10, 1920 << 10
    first = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    second = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        first.sendall(b"POST /%s/0 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n"
                      % (path, first_len) + os.urandom(first_len // 2))
        time.sleep(0.5)
        second.sendall(b"POST /%s/%d HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n"
                       b"\r\n" % (path, first_len, second_len) + os.urandom(second_len))
        second.settimeout(1.5)
        with pytest.raises(socket.timeout):          # waiting for memory: no answer yet
            second.recv(100)
        first.sendall(os.urandom(first_len - first_len // 2))
        first.settimeout(10)
        second.settimeout(10)
        assert first.recv(100).startswith(b"HTTP/1.1 200")
        assert second.recv(1000).startswith(b"HTTP/1.1 200")     # and the upload completed
    finally:
        first.close()
        second.close()


@pytest.mark.log_ok("commands in one batch")
def test_batch_of_more_commands_than_the_sdk_sends_is_refused(srv, api):
    acct = api.new_account()
    started = time.monotonic()
    assert api.batch([{"a": "ug"}] * 10001, sid=acct.sid) == -2
    assert time.monotonic() - started < 5
    assert len(api.batch([{"a": "ug"}] * 3, sid=acct.sid)) == 3


@pytest.mark.log_ok("JSON values")
def test_a_body_of_millions_of_tiny_values_is_refused_before_parsing(srv, api):
    """A 64 MiB body of `[{},{},...]` took about 1.4 GB while it was parsed; the values are
    counted in the raw body first (cs CS_VALUE_LIMIT).  20 MiB of them here."""
    import requests

    acct = api.new_account()
    body = b"[" + b",".join([b"{}"] * (7 << 20)) + b"]"
    started = time.monotonic()
    resp = requests.post(srv.url + "cs?id=7&sid=" + acct.sid, data=body, timeout=60,
                         headers={"Content-Type": "application/json"})
    assert resp.status_code == 200 and resp.json() == -2
    assert time.monotonic() - started < 10
    # the server process did not build the objects (its peak RSS stays far below 0.5 GB)
    pid = srv.proc.pid
    with open("/proc/%d/status" % pid) as fh:
        peak = [int(line.split()[1]) for line in fh if line.startswith("VmHWM:")][0]
    assert peak < 400 * 1024, "server peak RSS %d KiB" % peak
    assert len(api.batch([{"a": "ug"}], sid=acct.sid)) == 1


@pytest.mark.log_ok("'f' commands in one batch")
def test_one_tree_per_batch(srv, api):
    """20,000 `f` in one batch held the state lock for 42 s: a batch may carry one."""
    acct = api.new_account()
    assert api.batch([{"a": "f", "c": 1}, {"a": "ug"}, {"a": "f", "c": 1}], sid=acct.sid) == -2
    assert len(api.batch([{"a": "ug"}, {"a": "f", "c": 1}], sid=acct.sid)) == 2


@pytest.mark.log_ok("request head not complete")
def test_a_slow_request_head_is_cut_off(srv):
    """One byte every 0.3 s: the connection is closed at the head deadline (2 s here)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        closed = False
        for byte in b"GET /_megafs/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
                time.sleep(0.3)
            except OSError:
                closed = True
                break
            if time.monotonic() - started > 8:
                break
        if not closed:
            sock.settimeout(2)
            try:
                closed = sock.recv(100) == b""
            except OSError:
                closed = True
    assert closed and time.monotonic() - started < 6


@pytest.mark.log_ok("refusing more")
def test_connections_are_capped(srv):
    """With ``--max-connections 12`` a 13th connection is answered 503 and closed; once the
    others are closed a new one is served."""
    held = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(12)]
    try:
        time.sleep(0.3)
        answer = _raw(srv, b"GET /_megafs/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503"), answer[:80]
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.5)
    answer = _raw(srv, b"GET /_megafs/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]


@pytest.mark.parametrize("seq", [2 ** 63, 2 ** 64 - 1, 2 ** 62])
def test_sn_beyond_any_issued_answers_minus_6(srv, api, seq):
    acct = api.new_account()
    sn = crypto.b64encode(struct.pack(">Q", seq))
    resp = requests.get("%ssc?sn=%s&sid=%s" % (srv.url, sn, acct.sid), timeout=10)
    assert resp.status_code == 200 and resp.json() == -6
    wait = requests.get("%swsc/%s/%s" % (srv.info()["wait"], "A" * 11, sn), timeout=10)
    assert wait.status_code == 200


@pytest.mark.log_ok("lone surrogate")
def test_a_lone_surrogate_in_an_argument_answers_minus_2(srv, api):
    """Found by scripts/fuzz_server.py: ``ud2`` with ``"c": "\\ud800"`` was an internal error
    (-1 and a traceback: SQLite cannot store the string)."""
    acct = api.new_account()
    resp = api.post_cs('[{"a":"ud2","c":"\\ud800"}]', sid=acct.sid)
    assert resp.json() == [-2]
