"""One's own MEGA account with megafs against ``megafs serve``: ``megafs signup`` (the kept
confirmation mail, ``--confirm``), ``login``/``logout``/``session``, ``--account`` on upload,
get and the mount runtime, an anonymous account kept by signing up from it, an ended session
(asked again or a clear line, never a new account), two-factor, v1 accounts and the one-line
errors of refused logins."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest

from megafs import crypto
from megafs.api import account
from megafs.api.client import MegaClient
from megafs.api.session import account_session_path
from megafs.api.transport import Transport
from megafs.mount.runtime import MountConfig, MountRuntime
from helpers.rawapi import Api
from helpers.server import ROOT

PASSWORD = "correct horse battery"


def megafs(*args: str, env: dict | None = None, timeout: float = 120,
           password: str | None = PASSWORD) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, MEGAFS_RETRY_SECONDS="30")
    full_env.pop("MEGAFS_API", None)
    full_env.pop("MEGAFS_PASSWORD", None)
    if password is not None:
        full_env["MEGAFS_PASSWORD"] = password
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "megafs", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def srv(module_server):
    module_server.clear_faults()
    yield module_server


def unique(tag: str) -> str:
    return "%s.%d@example.com" % (tag, time.time_ns())


def last_link(srv, email: str) -> str:
    mail = srv.mail()
    links = [m["link"] for m in mail if m["to"] == email]
    assert links, mail
    return links[-1]


def signed_up(srv, state: str, email: str, *extra: str) -> None:
    common = ["--api", srv.url, "--state-dir", state]
    start = megafs("signup", email, "--name", "Ann Example", *common, *extra)
    assert start.returncode == 0, start.stderr
    assert "_megafs/mail" in start.stderr
    done = megafs("signup", "--confirm", last_link(srv, email), *common)
    assert done.returncode == 0, done.stderr
    assert "logged in as %s" % email in done.stderr


def test_signup_login_upload_get_logout(srv, tmp_path):
    state = str(tmp_path / "state")
    common = ["--api", srv.url, "--state-dir", state]
    email = unique("ann")
    signed_up(srv, state, email)
    path = account_session_path(srv.url, email, state)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    saved = json.loads(open(path).read())
    assert saved["kind"] == "account" and saved["email"] == email
    assert "password_key" not in saved and PASSWORD not in open(path).read()
    listed = megafs("session", "--state-dir", state)
    assert email in listed.stdout and saved["sid"] not in listed.stdout
    data = tmp_path / "notes.txt"
    data.write_bytes(b"my own account\n")
    up = megafs("upload", "--account", email, *common, str(data))
    assert up.returncode == 0, up.stderr
    got = megafs("get", "--account", email, "--api", srv.url, "--state-dir", state,
                 up.stdout.strip(), "-o", str(tmp_path / "back.txt"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "back.txt").read_bytes() == data.read_bytes()
    assert not [n for n in os.listdir(os.path.join(state, "sessions")) if len(n) == 21], \
        "an account upload must not make an anonymous account"
    again = megafs("login", email, *common)
    assert again.returncode == 0 and "logged in as" in again.stderr
    wrong = megafs("login", email, *common, password="not it")
    assert wrong.returncode == 1 and "wrong email or password" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1 and "Traceback" not in wrong.stderr
    sid = json.loads(open(path).read())["sid"]
    out = megafs("logout", email, *common)
    assert out.returncode == 0 and not os.path.exists(path)
    assert Api(srv.url).batch([{"a": "ug"}], sid=sid) == -15        # ended on the server
    after = megafs("upload", "--account", email, *common, str(data))
    assert after.returncode == 1 and "not logged in" in after.stderr
    assert megafs("logout", email, *common).returncode == 1


def test_password_only_from_file_environment_or_terminal(srv, tmp_path):
    common = ["--api", srv.url, "--state-dir", str(tmp_path / "s")]
    assert megafs("login", "a@b.c", "--password", "x", *common).returncode == 2
    none = megafs("login", "a@b.c", *common, password=None)
    assert none.returncode == 1 and "--password-file" in none.stderr
    secret = tmp_path / "pw"
    secret.write_text("wrong password\n")
    via_file = megafs("login", "nobody@example.com", "--password-file", str(secret), *common,
                      password=None)
    assert via_file.returncode == 1 and "wrong email or password" in via_file.stderr


def test_signup_from_anonymous_keeps_its_files(srv, tmp_path):
    state = str(tmp_path / "state")
    common = ["--api", srv.url, "--state-dir", state]
    data = tmp_path / "kept.bin"
    data.write_bytes(os.urandom(5000))
    anon_link = megafs("upload", *common, str(data))
    assert anon_link.returncode == 0, anon_link.stderr
    email = unique("keeper")
    signed_up(srv, state, email, "--from-anonymous")
    with MegaClient.open(api=srv.url, state_dir=state, account=email) as client:
        listing = client.fetch()
        names = [crypto.decrypt_attr(crypto.b64decode(n["a"]), client.node_key(n))["n"]
                 for n in listing.nodes if n["t"] == 0]
    assert names == ["kept.bin"]
    got = megafs("get", "--api", srv.url, anon_link.stdout.strip(), "-o", str(tmp_path / "o"))
    assert got.returncode == 0 and (tmp_path / "o").read_bytes() == data.read_bytes()
    sessions = os.listdir(os.path.join(state, "sessions"))
    assert not [n for n in sessions if len(n) == 21], sessions     # archived, not live
    fresh = megafs("session", "--show", *common)
    assert json.loads(fresh.stdout)["user_handle"] != client.session.user_handle


def test_ended_session_asks_for_the_password_or_fails_clearly(srv, tmp_path):
    state = str(tmp_path / "state")
    common = ["--api", srv.url, "--state-dir", state]
    email = unique("ended")
    signed_up(srv, state, email)
    path = account_session_path(srv.url, email, state)
    old = json.loads(open(path).read())["sid"]
    assert Api(srv.url).call({"a": "sml"}, sid=old) == 0            # ended elsewhere
    data = tmp_path / "f"
    data.write_bytes(b"x")
    refused = megafs("upload", "--account", email, *common, str(data), password=None)
    assert refused.returncode == 1 and "has ended" in refused.stderr
    assert "megafs login %s" % email in refused.stderr
    assert not [n for n in os.listdir(os.path.join(state, "sessions")) if len(n) == 21]
    renewed = megafs("upload", "--account", email, *common, str(data))
    assert renewed.returncode == 0, renewed.stderr
    assert "logging in again" in renewed.stderr
    assert json.loads(open(path).read())["sid"] != old


def test_two_factor_login(srv, tmp_path):
    state = str(tmp_path / "state")
    common = ["--api", srv.url, "--state-dir", state]
    email = unique("mfa")
    signed_up(srv, state, email)
    from megafs.server import totp          # the seed's codes, as an authenticator app shows
    sid = json.loads(open(account_session_path(srv.url, email, state)).read())["sid"]
    api = Api(srv.url)
    seed = api.call({"a": "mfas"}, sid=sid)
    assert api.call({"a": "mfas", "mfa": totp.code_at(seed, int(time.time() // 30))},
                    sid=sid) == 0
    needed = megafs("login", email, *common)
    assert needed.returncode == 1 and "two-factor" in needed.stderr and "--mfa-code" in \
        needed.stderr
    bad = megafs("login", email, *common, "--mfa-code", "000000"
                 if totp.code_at(seed, int(time.time() // 30)) != "000000" else "111111")
    assert bad.returncode == 1 and "wrong or expired" in bad.stderr
    good = megafs("login", email, *common, "--mfa-code",
                  totp.code_at(seed, int(time.time() // 30)))
    assert good.returncode == 0, good.stderr


def test_refused_logins_have_clear_reasons(srv, tmp_path):
    api = Api(srv.url)
    email = unique("refused")
    transport = Transport(srv.url)
    try:
        account.signup(transport, email, PASSWORD, "R")
        with pytest.raises(account.LoginFailed, match="not confirmed") as info:
            account.login(transport, email, PASSWORD)
        assert info.value.code == -13
        account.confirm(transport, last_link(srv, email))
        with pytest.raises(account.LoginFailed, match="unknown, expired or was already used"):
            account.confirm(transport, last_link(srv, email))
        srv.control("accounts", {"email": email, "blocked": True})
        with pytest.raises(account.LoginFailed, match="blocked"):
            account.login(transport, email, PASSWORD)
        srv.control("accounts", {"email": email, "blocked": False})
        srv.options({"login_attempts": 2})
        for _ in range(2):
            with pytest.raises(account.LoginFailed, match="wrong email or password"):
                account.login(transport, email, "nope")
        with pytest.raises(account.LoginFailed, match="too many login attempts"):
            account.login(transport, email, PASSWORD)
        srv.options({"login_attempts": 10, "login_window": 0.2})
        time.sleep(0.3)
        session = account.login(transport, email, PASSWORD)
        assert session.email == email and api.call({"a": "ug"}, sid=session.sid)["email"] == email
    finally:
        srv.options({"login_attempts": 10, "login_window": 3600.0})
        transport.close()


def test_v1_account_login_and_key_pair(srv):
    email = unique("legacy")
    password = "p\u00e4ssw\u00f6rd \u20ac"
    from megafs.api import account_crypto as ac
    pk, uh = ac.v1_login_keys(email, password)
    mk, ssc = os.urandom(16), os.urandom(16)
    srv.control("accounts", {"email": email, "v": 1, "uh": uh,
                             "k": crypto.b64encode(crypto.wrap_key(mk, pk)),
                             "ts": crypto.b64encode(crypto.make_ts(mk, ssc))})
    transport = Transport(srv.url)
    try:
        first = account.login(transport, email.upper(), password)     # tsid, then up privk
        second = account.login(transport, email, password)            # csid
    finally:
        transport.close()
    assert first.master_key == second.master_key == mk
    assert first.sid != second.sid and len(crypto.b64decode(second.sid)) == 43
    assert "pubk" in Api(srv.url).call({"a": "ug"}, sid=second.sid)


def test_mount_runtime_uses_the_account(srv, tmp_path):
    state = str(tmp_path / "state")
    email = unique("mount")
    signed_up(srv, state, email)
    (tmp_path / "a.txt").write_bytes(b"uploaded before the mount\n")
    assert megafs("upload", "--account", email, "--api", srv.url, "--state-dir", state,
                  str(tmp_path / "a.txt")).returncode == 0
    cfg = MountConfig(state_dir=state, api=srv.url, account=email)
    with MountRuntime(cfg) as rt:
        assert rt.client.session is not None and rt.client.session.email == email
        assert "a.txt" in rt.fs.readdir("/")
        assert rt.mount_dir.endswith("-" + rt.client.session.user_handle)
    with pytest.raises(Exception, match="not logged in"):
        MountRuntime(MountConfig(state_dir=state, api=srv.url,
                                 account=unique("nobody"))).__enter__()
