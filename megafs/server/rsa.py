"""The server's half of full-account logins: public keys, new session ids and the RSA-encrypted
``csid`` (protocol reference §3.4, §5.3).  Written apart from the client's ``account_crypto``
on purpose: a client-server round trip through one shared implementation would hide a bug in
both (STYLE.md, lesson 7).

A session id is 43 bytes: 16 random bytes, the user handle as 11 ASCII characters, 16 random
bytes (the layout the web client and the SDK check: meganz/webclient js/security.js
``decryptRsaKeyAndSessionId``, meganz/sdk src/commands.cpp ``CommandLogin``).  Its first byte
is never zero: clients that turn the decrypted integer back into bytes without padding would
lose it (protocol reference §14.9).  The RSA plaintext is the sid followed by random bytes up to
modulus length - 1 bytes (255 for a 2048-bit key), raw RSA without PKCS#1 padding, sent as
MPI(c).  The server only ever sees public keys; ``privk`` is stored as the opaque string the
client encrypted with its master key.
"""
from __future__ import annotations

import secrets

from .. import crypto

SID_BYTES = 43
MIN_BITS, MAX_BITS = 1024, 8192


def _mpi(data: bytes, pos: int) -> tuple[int, int]:
    if len(data) < pos + 2:
        raise ValueError("truncated MPI")
    end = pos + 2 + (int.from_bytes(data[pos:pos + 2], "big") + 7) // 8
    if len(data) < end:
        raise ValueError("truncated MPI")
    return int.from_bytes(data[pos + 2:end], "big"), end


def parse_public_key(pubk: str) -> tuple[int, int]:
    """(n, e) from ``pubk`` (base64url of MPI(n) MPI(e)); ValueError for anything else."""
    raw = crypto.b64decode(pubk)
    n, pos = _mpi(raw, 0)
    e, pos = _mpi(raw, pos)
    if len(raw) - pos >= 16:
        raise ValueError("trailing data after the public key")
    if not MIN_BITS <= n.bit_length() <= MAX_BITS or n % 2 == 0:
        raise ValueError("modulus must be odd and %d-%d bits" % (MIN_BITS, MAX_BITS))
    if e < 3 or e % 2 == 0 or e >= n:
        raise ValueError("bad public exponent")
    return n, e


def new_session_id(user_handle: str) -> bytes:
    head = bytes([secrets.randbelow(255) + 1]) + secrets.token_bytes(15)
    return head + user_handle.encode("ascii") + secrets.token_bytes(16)


def encrypt_session_id(sid: bytes, n: int, e: int) -> str:
    """``csid``: base64url of MPI(m^e mod n), m = sid + random bytes to modulus length - 1."""
    size = (n.bit_length() + 7) // 8 - 1
    plain = int.from_bytes(sid + secrets.token_bytes(size - len(sid)), "big")
    value = pow(plain, e, n)
    bits = value.bit_length()
    return crypto.b64encode(bits.to_bytes(2, "big") + value.to_bytes((bits + 7) // 8, "big"))
