"""Two-factor codes for accounts that turned it on with ``mfas``: TOTP (RFC 6238) with
HMAC-SHA1, 30-second steps and 6 digits, the kind MEGA's apps show as
``otpauth://totp/MEGA:EMAIL?secret=SEED&issuer=MEGA`` (meganz/webclient js/ui/twofactor.js,
which turns the base32 seed of ``mfas`` into that QR code).  A code of the step before or after
the current one is accepted too (clock drift; the tolerance of the real service is unknown).
Pinned by the RFC's own test vectors (``tests/unit/test_account_crypto.py``).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import time

STEP = 30
DIGITS = 6


def new_secret() -> str:
    """A fresh 160-bit seed in base32 without padding (32 characters)."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii").rstrip("=")


def code_at(secret: str, counter: int, digits: int = DIGITS) -> str:
    """The HOTP value (RFC 4226) of ``counter`` for a base32 secret."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8), casefold=True)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10 ** digits).zfill(digits)


def verify(secret: str, code: str, now: float | None = None) -> bool:
    if not (isinstance(code, str) and len(code) == DIGITS and code.isdigit()):
        return False
    step = int((time.time() if now is None else now) // STEP)
    return any(hmac.compare_digest(code_at(secret, step + delta), code) for delta in (-1, 0, 1))
