"""Known answers for the cryptography of full accounts (``megafs/api/account_crypto.py`` and the
server's ``rsa.py`` / ``totp.py``), from independent implementations:

* v1 and v2 password keys: ``tests/unit/data/mega-vectors.json`` group 6 (megajs 1.3.10,
  async-mega-py 2.5.0, mega.py 1.0.8; see ``shared/vectors/README.md``).  For the non-ASCII v1
  password the libraries disagree: megajs and async-mega-py hash UTF-8 bytes, mega.py one byte
  per character.  The rule of the web client and the SDK (``str_to_a32`` /
  ``utf8_to_a32forjs``, one byte position per UTF-16 code unit) gives mega.py's value for
  characters up to U+00FF, so that is the vector megafs must match.
* the RSA session id: ``tests/unit/data/account-vectors.json``, decrypted by async-mega-py
  2.5.0's own login code (``mega.auth._decrypt_credentials``), and a leading-zero case checked
  against pycryptodome's RSA primitive, where async-mega-py is known to be wrong.
* TOTP: the test vectors of RFC 6238, appendix B (SHA-1 rows).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from Crypto.Math.Numbers import Integer
from Crypto.PublicKey import RSA

from megafs import crypto
from megafs.api import account_crypto as ac
from megafs.api.account import confirm_code
from megafs.errors import LinkError
from megafs.server import rsa, totp

DATA = Path(__file__).parent / "data"
SHARED = json.loads((DATA / "mega-vectors.json").read_text())
PASSWORDS = {v["id"]: v for v in SHARED["groups"]["6_password_keys"]["vectors"]}
ACCOUNT = json.loads((DATA / "account-vectors.json").read_text())


@pytest.mark.parametrize("vid", ["v1-password", "v1-correct-horse-battery-staple",
                                 "v1-nonascii-latin1"])
def test_v1_login_keys_match_the_vectors(vid):
    v = PASSWORDS[vid]
    assert ac.password_bytes_v1(v["password"]).hex() == v["password_bytes_hex"]
    key, uh = ac.v1_login_keys(v["email_input"], v["password"])
    assert key.hex() == v["password_key_hex"]
    assert uh == v["uh"] == v["us_request"]["uh"]


def test_v1_non_ascii_password_is_not_hashed_as_utf8():
    utf8 = PASSWORDS["v1-nonascii-utf8"]
    key, uh = ac.v1_login_keys(utf8["email_input"], utf8["password"])
    assert key.hex() != utf8["password_key_hex"] and uh != utf8["uh"]


def test_v1_password_bytes_follow_the_code_unit_rule():
    # meganz/sdk src/megaclient.cpp utf8_to_a32forjs: a unit is OR-ed in at 24 - 8 * (j % 4)
    # bits and cut to 32 bits, so U+20AC sets bits of the byte before it; U+1F600 is the
    # surrogate pair D83D DE00.
    assert ac.password_bytes_v1("\u20ac") == bytes([0xAC])
    assert ac.password_bytes_v1("a\u20ac") == bytes([0x61 | 0x20, 0xAC])
    assert ac.password_bytes_v1("\U0001F600") == bytes([0x3D | 0xDE, 0x00])
    assert ac.password_bytes_v1("abcd\u20ac") == b"abcd" + bytes([0xAC])


def test_v2_login_keys_match_the_vector():
    v = PASSWORDS["v2-password"]
    key, auth = ac.v2_login_keys(v["password"], crypto.b64decode(v["salt_b64"]))
    assert key.hex() == v["password_key_hex"] and auth.hex() == v["auth_key_hex"]
    assert crypto.b64encode(auth) == v["uh"] == v["us_request"]["uh"]


def test_registration_values():
    crv = bytes(range(16))
    salt = ac.registration_salt(crv)
    assert len(salt) == 32 and salt != ac.registration_salt(bytes(16))
    # the server computes the salt it answers in us0 on its own (commands/login.py)
    from megafs.server.commands.login import signup_salt
    assert crypto.b64decode(signup_salt(crypto.b64encode(crv))) == salt
    assert len(ac.hashed_auth_key(b"x" * 16)) == 16


@pytest.mark.parametrize("vector", ACCOUNT["vectors"], ids=lambda v: v["id"])
def test_csid_known_answers(vector):
    pk = bytes.fromhex(ACCOUNT["password_key_hex"])
    mk = crypto.unwrap_key(crypto.b64decode(ACCOUNT["k"]), pk)
    assert mk.hex() == ACCOUNT["expected_master_key_hex"]
    key = ac.unwrap_private_key(ACCOUNT["privk"], mk)
    sid = ac.decrypt_session_id(key, vector["csid"], ACCOUNT["user_handle"])
    assert crypto.b64encode(sid) == vector["sid_b64"]
    for wrong in vector.get("dissent", {}).values():
        assert wrong != vector["sid_b64"]
    # an independent RSA primitive gives the same plaintext, padded to 255 bytes
    n, e = ac.decode_public_key(crypto.b64decode(ACCOUNT["pubk"]))
    assert n == key.n and e == 257
    other = RSA.construct((key.n, e, key.d, key.p, key.q), consistency_check=True)
    c, _ = ac.mpi_decode(crypto.b64decode(vector["csid"]))
    plain = int(other._decrypt(c)).to_bytes(255, "big")
    assert plain[:43] == sid and plain[16:27] == ACCOUNT["user_handle"].encode()


def test_csid_for_another_user_or_key_is_refused():
    pk = bytes.fromhex(ACCOUNT["password_key_hex"])
    mk = crypto.unwrap_key(crypto.b64decode(ACCOUNT["k"]), pk)
    key = ac.unwrap_private_key(ACCOUNT["privk"], mk)
    csid = ACCOUNT["vectors"][0]["csid"]
    with pytest.raises(ac.KeyFormatError):
        ac.decrypt_session_id(key, csid, "ZZZZZZZZZZZ")
    with pytest.raises(ac.KeyFormatError):
        ac.unwrap_private_key(ACCOUNT["privk"], bytes(16))      # wrong master key


def test_generated_key_pair_fits_every_reader():
    key, e = ac.generate_rsa_key()
    assert e == 257 and key.n.bit_length() == 2048
    blob = ac.encode_private_key(key)
    assert len(blob) % 16 == 0 and ac.decode_private_key(blob) == key
    # async-mega-py rebuilds e as d^-1 mod (p-1)(q-1) and lets pycryptodome check the key
    e_again = int(Integer(key.d).inverse((key.p - 1) * (key.q - 1)))
    assert e_again == 257
    RSA.construct((key.n, e_again, key.d, key.p, key.q, key.u), consistency_check=True)
    pubk = crypto.b64encode(ac.encode_public_key(key.n, e))
    assert rsa.parse_public_key(pubk) == (key.n, e)
    # the server's encryption (its own code) and the client's decryption agree
    for _ in range(20):
        sid = rsa.new_session_id("AbCdEfGhIjK")
        assert sid[0] != 0 and len(sid) == 43
        csid = rsa.encrypt_session_id(sid, key.n, e)
        assert ac.decrypt_session_id(key, csid, "AbCdEfGhIjK") == sid


SMALL_KEY = crypto.b64encode(ac.mpi_encode(2 ** 512 + 1) + ac.mpi_encode(257))


@pytest.mark.parametrize("bad", ["", "AAAA", SMALL_KEY])
def test_bad_public_keys_are_refused(bad):
    with pytest.raises(ValueError):
        rsa.parse_public_key(bad)


RFC6238_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"     # base32 of "12345678901234567890"


@pytest.mark.parametrize("t,expected", [(59, "94287082"), (1111111109, "07081804"),
                                        (1111111111, "14050471"), (1234567890, "89005924"),
                                        (2000000000, "69279037"), (20000000000, "65353130")])
def test_totp_rfc6238_vectors(t, expected):
    assert totp.code_at(RFC6238_SECRET, t // 30, digits=8) == expected
    assert totp.verify(RFC6238_SECRET, expected[-6:], now=t)
    assert not totp.verify(RFC6238_SECRET, expected[-6:], now=t + 120)


@pytest.mark.parametrize("link", [
    "https://mega.nz/#confirmQ29uZmlybUNvZGVWMlCM-MOxFNsxfAcr9RoX7oNhbGljZUBleGFtcGxlLmNvbQ",
    "https://mega.nz/confirmQ29uZmlybUNvZGVWMlCM-MOxFNsxfAcr9RoX7oNhbGljZUBleGFtcGxlLmNvbQ",
    "<Q29uZmlybUNvZGVWMlCM-MOxFNsxfAcr9RoX7oNhbGljZUBleGFtcGxlLmNvbQ>"])
def test_confirmation_links(link):
    assert confirm_code(link) == \
        "Q29uZmlybUNvZGVWMlCM-MOxFNsxfAcr9RoX7oNhbGljZUBleGFtcGxlLmNvbQ"


@pytest.mark.parametrize("link", ["https://mega.nz/file/abc#def", "confirm!!", "",
                                  "https://mega.nz/#confirm" + crypto.b64encode(b"x" * 40)])
def test_not_confirmation_links(link):
    with pytest.raises(LinkError):
        confirm_code(link)
