"""Full accounts on ``megafs serve``, checked on the wire with the raw client (no megafs client
code): registration (``up`` -> ``uc2`` -> kept mail -> ``ud2``), ``us0``, email logins with
``tsid`` then ``csid`` once ``up`` gave the account its key pair, ``ug``, ``sml``, two-factor
(``mfas``/``mfag``/``mfa``), the lockout, blocked and unconfirmed accounts, and an imported
v1 account.  Key derivation and RSA here use hashlib and pycryptodome directly, written apart
from ``megafs/api/account_crypto.py``."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
import time
from pathlib import Path

import pytest
import requests
from Crypto.PublicKey import RSA

from megafs import crypto
from helpers.rawapi import Api

b64, unb64 = crypto.b64encode, crypto.b64decode
SHARED = json.loads((Path(__file__).parent.parent / "unit" / "data" /
                     "mega-vectors.json").read_text())


def v2_keys(password: str, salt: bytes) -> tuple[bytes, bytes]:
    derived = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 100000, 32)
    return derived[:16], derived[16:]


def signup(api: Api, email: str, password: str, name: str = "Test User"):
    acct = api.new_account()
    crv = os.urandom(16)
    salt = hashlib.sha256(b"mega.nz" + b"P" * 193 + crv).digest()
    pk, auth = v2_keys(password, salt)
    res = api.call({"a": "uc2", "n": b64(name.encode()), "m": b64(email.encode()),
                    "crv": b64(crv), "k": b64(crypto.wrap_key(acct.master_key, pk)),
                    "hak": b64(hashlib.sha256(auth).digest()[:16]), "v": 2}, sid=acct.sid)
    assert res == 0
    return acct, salt, pk, auth


def mail(srv) -> list[dict]:
    return srv.mail()


def code_of(srv, email: str) -> str:
    links = [m["link"] for m in mail(srv) if m["to"] == email]
    assert links and links[-1].startswith("https://mega.nz/#confirm")
    return links[-1][len("https://mega.nz/#confirm"):]


def totp(secret: str, at: float) -> str:
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", int(at // 30)), "sha1").digest()
    off = digest[19] & 15
    return "%06d" % ((struct.unpack(">I", digest[off:off + 4])[0] & 0x7FFFFFFF) % 1000000)


def rsa_keys(mk: bytes) -> tuple[RSA.RsaKey, str, str]:
    key = RSA.generate(2048, e=257)
    d = pow(257, -1, (key.p - 1) * (key.q - 1))

    def mpi(v: int) -> bytes:
        return v.bit_length().to_bytes(2, "big") + v.to_bytes((v.bit_length() + 7) // 8, "big")
    blob = mpi(key.p) + mpi(key.q) + mpi(d) + mpi(key.u)
    blob += bytes(-len(blob) % 16)
    return key, b64(crypto.wrap_key(blob, mk)), b64(mpi(key.n) + mpi(257))


@pytest.fixture
def srv(module_server):
    module_server.options({"login_attempts": 10, "login_window": 3600.0})
    yield module_server
    module_server.options({"login_attempts": 10, "login_window": 3600.0})


@pytest.mark.log_ok("uc2 rejected with -2")
def test_registration_and_logins_on_the_wire(srv, api):
    email = "Wire.%d@Example.com" % time.time_ns()
    acct, salt, pk, auth = signup(api, email, "pass phrase 1")
    low = email.lower()
    assert api.call({"a": "us0", "user": low}) == {"v": 2, "s": b64(salt)}
    assert api.call({"a": "us", "user": low, "uh": b64(auth)}) == -13     # not confirmed yet
    assert api.call({"a": "uc2", "m": b64(b"x@y.z"), "v": 1}, sid=acct.sid) == -2
    code = code_of(srv, low)
    assert unb64(code).startswith(b"ConfirmCodeV2") and unb64(code).endswith(low.encode())
    assert mail(srv)[-1]["subject"]
    confirmed = api.call({"a": "ud2", "c": code})
    assert confirmed == [b64(low.encode()), b64(b"Test User"), acct.uh, 2]
    assert api.call({"a": "ud2", "c": code}) == -9                         # used up
    assert api.batch([{"a": "f", "c": 1, "r": 1}], sid=acct.sid) == -15    # temporary sid ended
    assert api.call({"a": "us", "user": acct.uh}) == -9                    # no ephemeral login
    # first login: no key pair yet, so a tsid
    first = api.call({"a": "us", "user": low, "uh": b64(auth)})
    assert set(first) == {"k", "u", "tsid"} and first["u"] == acct.uh
    mk = crypto.unwrap_key(unb64(first["k"]), pk)
    assert mk == acct.master_key and crypto.check_tsid(unb64(first["tsid"]), mk, acct.uh)
    key, privk, pubk = rsa_keys(mk)
    assert api.call({"a": "up", "privk": privk, "pubk": pubk}, sid=first["tsid"]) == acct.uh
    assert api.call({"a": "up", "privk": privk, "pubk": pubk}, sid=first["tsid"]) == -12
    # now a csid that only the private key opens
    second = api.call({"a": "us", "user": low, "uh": b64(auth)})
    assert set(second) == {"k", "u", "csid", "privk"} and second["privk"] == privk
    c = int.from_bytes(unb64(second["csid"])[2:], "big")
    plain = pow(c, key.d, key.n).to_bytes(256, "big")
    assert plain[0] == 0 and plain[1] != 0                      # 255 bytes, sid first non-zero
    sid = b64(plain[1:44])
    assert plain[17:28] == acct.uh.encode()
    user = api.call({"a": "ug"}, sid=sid)
    assert user["email"] == low and user["name"] == "Test User" and user["aav"] == 2
    assert user["aas"] == b64(salt) and user["pubk"] == pubk and user["c"] == 1
    assert "f" in api.call({"a": "f", "c": 1, "r": 1}, sid=sid)
    assert api.call({"a": "sml"}, sid=sid) == 0
    assert api.batch([{"a": "ug"}], sid=sid) == -15
    # the email is taken now
    other = api.new_account()
    assert api.call({"a": "uc2", "n": b64(b"x"), "m": b64(low.encode()), "crv": b64(bytes(16)),
                     "k": b64(bytes(16)), "hak": b64(bytes(16)), "v": 2}, sid=other.sid) == -12


def test_wrong_passwords_lock_out_and_blocked_accounts(srv, api):
    email = "lock.%d@example.com" % time.time_ns()
    acct, salt, pk, auth = signup(api, email, "right one")
    api.call({"a": "ud2", "c": code_of(srv, email)})
    srv.options({"login_attempts": 3})
    wrong = b64(bytes(16))
    assert [api.call({"a": "us", "user": email, "uh": wrong}) for _ in range(3)] == [-9] * 3
    assert api.call({"a": "us", "user": email, "uh": b64(auth)}) == -6     # locked, even right
    srv.options({"login_window": 0.5})
    time.sleep(0.6)
    assert "tsid" in api.call({"a": "us", "user": email, "uh": b64(auth)})
    srv.control("accounts", {"email": email, "blocked": True})
    assert api.call({"a": "us", "user": email, "uh": b64(auth)}) == -16
    assert api.call({"a": "us", "user": email, "uh": wrong}) == -9      # says nothing more
    srv.control("accounts", {"email": email, "blocked": False})
    assert "tsid" in api.call({"a": "us", "user": email, "uh": b64(auth)})
    assert api.call({"a": "us0", "user": "nobody.%d@example.com" % time.time_ns()}) == -9


def test_two_factor_on_the_wire(srv, api):
    email = "mfa.%d@example.com" % time.time_ns()
    acct, salt, pk, auth = signup(api, email, "two factor")
    api.call({"a": "ud2", "c": code_of(srv, email)})
    sid = api.call({"a": "us", "user": email, "uh": b64(auth)})["tsid"]
    assert api.call({"a": "mfag", "e": email}) == 0
    seed = api.call({"a": "mfas"}, sid=sid)
    assert isinstance(seed, str) and len(seed) >= 16
    bad = "%06d" % ((int(totp(seed, time.time())) + 500000) % 1000000)
    assert api.call({"a": "mfas", "mfa": bad}, sid=sid) == -5
    assert api.call({"a": "mfas", "mfa": totp(seed, time.time())}, sid=sid) == 0
    assert api.call({"a": "mfas"}, sid=sid) == -12
    assert api.call({"a": "mfag", "e": email}) == 1
    login = {"a": "us", "user": email, "uh": b64(auth)}
    assert api.call(login) == -26
    assert api.call(dict(login, mfa=bad)) == -5
    assert "tsid" in api.call(dict(login, mfa=totp(seed, time.time())))
    wrong = {"a": "us", "user": email, "uh": b64(bytes(16))}
    assert api.call(dict(wrong, mfa=totp(seed, time.time()))) == -9   # password first


@pytest.mark.log_ok("control endpoint: ")
def test_imported_v1_account_logs_in_with_the_vector_hash(srv, api):
    v = next(x for x in SHARED["groups"]["6_password_keys"]["vectors"] if x["id"] == "v1-password")
    email, uh = v["email_hashed"], v["uh"]          # user@example.com, "password"
    pk = bytes.fromhex(v["password_key_hex"])
    mk, ssc = os.urandom(16), os.urandom(16)
    made = srv.control("accounts", {"email": email, "v": 1, "uh": uh,
                                    "k": b64(crypto.wrap_key(mk, pk)),
                                    "ts": b64(crypto.make_ts(mk, ssc))})
    assert api.call({"a": "us0", "user": email}) == {"v": 1}
    res = api.call({"a": "us", "user": email, "uh": uh})
    assert res["u"] == made["user"] and crypto.check_tsid(unb64(res["tsid"]), mk, res["u"])
    assert api.call({"a": "us", "user": email, "uh": v["uh_if_email_were_not_lowercased"]}) == -9
    with pytest.raises(requests.HTTPError):
        srv.control("accounts", {"email": email, "v": 1, "uh": uh, "k": "x", "ts": "y"})


@pytest.mark.log_ok("control endpoint: ")
def test_account_control_refuses_bad_requests(srv):
    for payload in ({"email": "x"}, {"email": "a@b.c", "blocked": "yes"},
                    {"email": "nobody@example.com", "blocked": True}):
        with pytest.raises(requests.HTTPError):
            srv.control("accounts", payload)
