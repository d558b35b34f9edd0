"""The cryptography of full (email and password) MEGA accounts: password keys, the registration
values, and the account's RSA key pair; pure functions, no I/O, never logs.

* **v1 password key** (accounts registered before 2018): the password becomes a byte string
  exactly as the web client's ``str_to_a32`` does it, which the SDK reproduces in
  ``utf8_to_a32forjs`` (meganz/sdk src/megaclient.cpp): one byte position per UTF-16 code unit
  (astral characters are two, a surrogate pair), each unit OR-ed into its 32-bit big-endian word
  shifted left by ``24 - 8 * (position % 4)`` and cut to 32 bits.  Characters up to U+00FF give
  their Latin-1 byte; wider ones also set bits of the byte before them in the same word.  UTF-8
  bytes (what megajs and async-mega-py feed in) give another key for any non-ASCII password
  (protocol reference §14.10).  ``crypto.prepare_key_v1`` then runs the 65,536 AES rounds and the
  user hash is ``crypto.stringhash`` of the lowercased email's UTF-8 bytes (the SDK's
  ``stringhash64``).
* **v2** (protocol reference §3.3): PBKDF2-HMAC-SHA512 of the UTF-8 password with the salt from
  ``us0``, 100,000 rounds, 32 bytes: password key = first half, the login's ``uh`` = base64url
  of the second half (the authentication key).  At registration the client picks a 16-byte
  client random value (``crv``); the salt is SHA-256 of ``"mega.nz"`` padded with ``P`` to 200
  bytes followed by ``crv``, and the server keeps only ``hak`` = SHA-256(auth key)[:16]
  (meganz/webclient js/security.js ``createSalt``, ``deriveKeysFromPassword``).
* **RSA** (protocol reference §3.4): 2048-bit keys with e = 257, as the web client asks its key
  generator for (meganz/webclient js/crypto.js ``crypto_rsagenkey``: ``[2048, 257, seed]``).  The
  private key travels as MPI(p) MPI(q) MPI(d) MPI(u) + random padding to a multiple of 16 bytes,
  with u = p^-1 mod q (``crypto_encodeprivkey`` writes the JWK's q first and its qi = q^-1 mod p
  last: the first prime's inverse modulo the second), encrypted block by block with the master
  key; the public key as MPI(n) MPI(e).  d is the inverse of e modulo (p-1)(q-1), so that
  clients which recompute e from d and phi (async-mega-py's ``decrypt_rsa_key``) get 257 back.
* **The session id** of a login (``csid``) is RSA without padding: the 43-byte sid is at the
  start of the plaintext, which is written big-endian on modulus length - 1 bytes (255 for
  2048-bit keys) *including* leading zero bytes, which an int-to-bytes conversion would drop
  (protocol reference §14.9; the web client insists on a 255-byte plaintext), and bytes 16..26
  of the sid are the account's user handle (meganz/webclient js/security.js
  ``decryptRsaKeyAndSessionId``, meganz/sdk src/commands.cpp ``CommandLogin``).
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from Crypto.PublicKey import RSA

from .. import crypto

RSA_BITS = 2048
RSA_EXPONENT = 257
SID_BYTES = 43
SALT_PREFIX = b"mega.nz".ljust(200, b"P")


class KeyFormatError(ValueError):
    """An MPI, key blob or encrypted session id that does not have the right shape."""


# --------------------------------------------------------------------------------------------
# Password keys
def password_bytes_v1(password: str) -> bytes:
    """The bytes the v1 key preparation runs on (see the module docstring)."""
    units = password.encode("utf-16-be", "surrogatepass")
    count = len(units) // 2
    words = [0] * ((count + 3) // 4)
    for j in range(count):
        unit = (units[2 * j] << 8) | units[2 * j + 1]
        words[j >> 2] |= (unit << (24 - 8 * (j & 3))) & 0xFFFFFFFF
    return crypto.a32_to_bytes(words)[:count]


def v1_login_keys(email: str, password: str) -> tuple[bytes, str]:
    """(password key, ``uh``) of a v1 account: prepare_key and the 8-byte stringhash."""
    key = crypto.prepare_key_v1(password_bytes_v1(password))
    return key, crypto.stringhash(email.lower().encode("utf-8"), key)


def v2_login_keys(password: str, salt: bytes) -> tuple[bytes, bytes]:
    """(password key, authentication key) of a v2 account; ``uh`` is b64(auth key)."""
    return crypto.derive_key_v2(password.encode("utf-8"), salt)


def registration_salt(client_random: bytes) -> bytes:
    """The v2 salt a registration's client random value stands for (32 bytes)."""
    return hashlib.sha256(SALT_PREFIX + client_random).digest()


def hashed_auth_key(auth_key: bytes) -> bytes:
    """``hak``: what the server keeps to check a v2 login's ``uh``."""
    return hashlib.sha256(auth_key).digest()[:16]


# --------------------------------------------------------------------------------------------
# MPIs: a 2-byte big-endian bit count, then the number big-endian in ceil(bits / 8) bytes
def mpi_encode(value: int) -> bytes:
    bits = value.bit_length()
    return bits.to_bytes(2, "big") + value.to_bytes((bits + 7) // 8, "big")


def mpi_decode(data: bytes, pos: int = 0) -> tuple[int, int]:
    """(value, position after it); KeyFormatError if the data is too short."""
    if len(data) < pos + 2:
        raise KeyFormatError("MPI header missing")
    length = (int.from_bytes(data[pos:pos + 2], "big") + 7) // 8
    end = pos + 2 + length
    if len(data) < end:
        raise KeyFormatError("MPI longer than its data")
    return int.from_bytes(data[pos + 2:end], "big"), end


# --------------------------------------------------------------------------------------------
# The RSA key pair
@dataclass(frozen=True)
class RsaPrivateKey:
    p: int
    q: int
    d: int
    u: int                      # p^-1 mod q

    def __repr__(self) -> str:   # never show the secrets
        return "RsaPrivateKey(%d bits)" % self.n.bit_length()

    @property
    def n(self) -> int:
        return self.p * self.q

    @property
    def modulus_bytes(self) -> int:
        return (self.n.bit_length() + 7) // 8

    def decrypt(self, c: int) -> int:
        """c^d mod n through the CRT (Garner's formula with u = p^-1 mod q)."""
        mp = pow(c % self.p, self.d % (self.p - 1), self.p)
        mq = pow(c % self.q, self.d % (self.q - 1), self.q)
        return mp + self.p * (((mq - mp) * self.u) % self.q)


def generate_rsa_key(bits: int = RSA_BITS, e: int = RSA_EXPONENT) -> tuple[RsaPrivateKey, int]:
    """A new key pair from the OS CSPRNG: (private key, e).  About 0.5-2 s for 2048 bits."""
    while True:
        key = RSA.generate(bits, e=e)
        p, q = int(key.p), int(key.q)
        phi = (p - 1) * (q - 1)
        try:
            d = pow(e, -1, phi)
        except ValueError:      # gcd(e, phi) != 1 cannot happen after RSA.generate; be total
            continue
        return RsaPrivateKey(p=p, q=q, d=d, u=pow(p, -1, q)), e


def encode_private_key(key: RsaPrivateKey) -> bytes:
    """MPI(p) MPI(q) MPI(d) MPI(u) + random padding to a multiple of 16 bytes."""
    blob = b"".join(mpi_encode(v) for v in (key.p, key.q, key.d, key.u))
    return blob + secrets.token_bytes(-len(blob) % 16)


def decode_private_key(blob: bytes) -> RsaPrivateKey:
    """Parse and check a private key blob; KeyFormatError (wrong master key, damage) else."""
    values = []
    pos = 0
    for _ in range(4):
        value, pos = mpi_decode(blob, pos)
        values.append(value)
    if len(blob) - pos >= 16:
        raise KeyFormatError("private key has trailing data")
    p, q, d, u = values
    if p < 3 or q < 3 or d < 3 or u < 1 or (p * u) % q != 1:
        raise KeyFormatError("private key does not fit together (wrong master key?)")
    return RsaPrivateKey(p=p, q=q, d=d, u=u)


def encode_public_key(n: int, e: int) -> bytes:
    return mpi_encode(n) + mpi_encode(e)


def decode_public_key(blob: bytes) -> tuple[int, int]:
    n, pos = mpi_decode(blob)
    e, _ = mpi_decode(blob, pos)
    return n, e


def wrap_private_key(key: RsaPrivateKey, master_key: bytes) -> str:
    """``privk`` as sent in ``up``: the blob encrypted with the master key, base64url."""
    return crypto.b64encode(crypto.wrap_key(encode_private_key(key), master_key))


def unwrap_private_key(privk: str, master_key: bytes) -> RsaPrivateKey:
    try:
        wrapped = crypto.b64decode(privk)
        return decode_private_key(crypto.unwrap_key(wrapped, master_key))
    except ValueError as exc:
        raise KeyFormatError("privk: %s" % exc) from None


def decrypt_session_id(key: RsaPrivateKey, csid: str, user_handle: str) -> bytes:
    """The 43-byte session id inside ``csid``; KeyFormatError unless it names ``user_handle``."""
    try:
        value, _ = mpi_decode(crypto.b64decode(csid))
    except ValueError as exc:
        raise KeyFormatError("csid: %s" % exc) from None
    if not 0 < value < key.n:
        raise KeyFormatError("csid is out of range for this key")
    plain = key.decrypt(value)
    size = key.modulus_bytes - 1
    if plain >> (8 * size):
        raise KeyFormatError("csid does not decrypt to a %d-byte value" % size)
    sid = plain.to_bytes(size, "big")[:SID_BYTES]
    if sid[16:27] != user_handle.encode("ascii", "replace"):
        raise KeyFormatError("the session id is not for user %s" % user_handle)
    return sid
