"""What the control endpoints do with accounts: read the kept mail, block or unblock a full
account, and import a legacy v1 account.

v1 accounts still log in on the real service (``us0`` answers ``{"v":1}``, protocol reference
§5.1), but none has been registered since the v2 scheme arrived in 2018, so the only way to
have one here is to import it: the caller sends what the real service would have stored, the
master key under the password key (``k``), the 8-byte user hash (``uh``, b64) and ``ts``
(16 bytes and their encryption with the master key, for the ``tsid`` of a login before the
account has a key pair), and optionally the key pair.  Like every other path, no key in the
clear reaches the server.
"""
from __future__ import annotations

import sqlite3
from typing import Any

from .. import crypto
from . import rsa, userdb
from .store import State


def all_mail(state: State) -> list[dict[str, Any]]:
    with state.lock:
        return userdb.all_mail(state.read())


def _b64(payload: dict[str, Any], key: str, size: int | None = None) -> str:
    value = payload.get(key)
    try:
        raw = crypto.b64decode(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or (size is not None and len(raw) != size):
        raise ValueError("%r must be base64url%s" % (key, " of %d bytes" % size if size else ""))
    return str(value)


def account_admin(state: State, payload: dict[str, Any]) -> dict[str, Any]:
    email = payload.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise ValueError("'email' must be an email address")
    email = email.strip().lower()
    if "blocked" in payload:
        if not isinstance(payload["blocked"], bool):
            raise ValueError("'blocked' must be true or false")
        with state.transaction() as tx:
            user = userdb.user_by_email(tx, email)
            if user is None:
                raise ValueError("no full account with that email")
            userdb.set_fields(tx, user["uh"], blocked=int(payload["blocked"]))
            if payload["blocked"]:
                userdb.drop_sessions_of(tx, user["uh"])
        return {"email": email, "blocked": payload["blocked"]}
    if payload.get("v") != 1:
        raise ValueError("give 'blocked', or 'v': 1 to import a v1 account")
    k = _b64(payload, "k", 16)
    uh = _b64(payload, "uh", 8)
    ts = _b64(payload, "ts", 32)
    privk = pubk = None
    if "pubk" in payload or "privk" in payload:
        privk = _b64(payload, "privk")
        pubk = _b64(payload, "pubk")
        rsa.parse_public_key(pubk)
    with state.transaction() as tx:
        if userdb.user_by_email(tx, email) is not None:
            raise ValueError("an account with that email exists")
        handle = tx.create_account(k, ts)
        try:
            userdb.add_user(tx, uh=handle, email=email, v=1, salt=None, hak=uh, k=k,
                            privk=privk, pubk=pubk)
        except sqlite3.IntegrityError:
            raise ValueError("an account with that email exists") from None
    return {"email": email, "user": handle}
