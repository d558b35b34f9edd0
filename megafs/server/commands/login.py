"""Full-account logins: ``us0`` (pre-login), ``us`` with ``uh`` (email login, optionally with
``mfa``), and two-factor set-up ``mfas`` / ``mfag``.

Wire format (protocol reference §5; meganz/sdk src/commands.cpp ``CommandPrelogin``,
``CommandLogin``; meganz/webclient js/security.js):

* ``{"a":"us0","user":EMAIL}`` -> ``{"v":2,"s":SALT}`` or ``{"v":1}``; an unknown email is
  ``-9`` (the real answer is unknown: a guess, DESIGN.md).
* ``{"a":"us","user":EMAIL,"uh":HASH[,"mfa":PIN]}`` -> ``{"k","u","csid","privk"}``, or
  ``{"k","u","tsid"}`` while the account has no RSA key pair yet (the client then makes one and
  sends it with ``up``, as the SDK's ``setkeypair`` does).  Errors, checked in this order:
  ``-6`` too many failed attempts for this email (policy ``login_attempts`` within
  ``login_window``), ``-13`` a registration that is not confirmed yet (the password matches
  it), ``-9`` unknown email or wrong password, ``-16`` blocked, ``-26`` two-factor code
  needed, ``-5`` wrong code.  Wrong passwords and wrong codes count toward the lockout; a
  success clears the count.  These errors are *answers*, not rollbacks: the failure record must
  survive, so the handler returns the code instead of raising.
* ``{"a":"mfas"}`` -> a base32 TOTP seed (``-12`` if two-factor is already on);
  ``{"a":"mfas","mfa":PIN}`` turns it on once PIN matches that seed (``-5`` otherwise);
  ``{"a":"mfag","e":EMAIL}`` -> 1 or 0 (meganz/webclient js/ui/twofactor.js).
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any

from ... import crypto
from ...errors import ApiCode
from .. import rsa, totp, userdb
from .base import Ctx, Fail, arg_str

log = logging.getLogger(__name__)

SALT_PREFIX = b"mega.nz".ljust(200, b"P")


def signup_salt(crv: str) -> str:
    """The v2 salt of a registration: SHA-256("mega.nz" + "P" * 193 + client random value)."""
    return crypto.b64encode(hashlib.sha256(SALT_PREFIX + crypto.b64decode(crv)).digest())


def email_arg(cmd: dict, key: str) -> str:
    email = arg_str(cmd, key).strip().lower()
    if "@" not in email or len(email) > 254 or any(c.isspace() for c in email):
        raise Fail(ApiCode.EARGS, "%r is not an email address" % key)
    return email


def cmd_us0(ctx: Ctx, cmd: dict) -> Any:
    email = email_arg(cmd, "user")
    user = userdb.user_by_email(ctx.tx, email)
    if user is not None:
        return {"v": 2, "s": user["salt"]} if user["v"] == 2 else {"v": 1}
    pending = userdb.signup_by_email(ctx.tx, email)
    if pending is not None:
        return {"v": 2, "s": signup_salt(pending["crv"])}
    raise Fail(ApiCode.ENOENT, "no account with that email")


def _uh_matches(version: int, stored: str, sent: str) -> bool:
    """v2: SHA-256(auth key)[:16] equals the stored hak; v1: the 8-byte stringhash itself."""
    try:
        raw = crypto.b64decode(sent)
    except ValueError:
        return False
    if version == 2:
        return len(raw) == 16 and crypto.b64decode(stored) == hashlib.sha256(raw).digest()[:16]
    return len(raw) == 8 and crypto.b64decode(stored) == raw


def _answer(code: ApiCode, why: str) -> int:
    log.info("cs: us answered %d: %s", code, why)
    return int(code)


def full_login(ctx: Ctx, cmd: dict) -> Any:
    tx = ctx.tx
    email = email_arg(cmd, "user")
    sent = arg_str(cmd, "uh")
    pin = cmd.get("mfa")
    if pin is not None and not isinstance(pin, str):
        raise Fail(ApiCode.EARGS, "'mfa' must be a string")
    limit = ctx.policy.login_attempts
    if limit and userdb.failures(tx, email, ctx.policy.login_window) >= limit:
        return _answer(ApiCode.ETOOMANY, "too many failed logins for this email")
    user = userdb.user_by_email(tx, email)
    if user is None:
        pending = userdb.signup_by_email(tx, email)
        if pending is not None and _uh_matches(2, pending["hak"], sent):
            return _answer(ApiCode.EINCOMPLETE, "registration not confirmed")
        userdb.record_failure(tx, email)
        return _answer(ApiCode.ENOENT, "unknown email or wrong password")
    if not _uh_matches(user["v"], user["hak"], sent):
        userdb.record_failure(tx, email)
        return _answer(ApiCode.ENOENT, "unknown email or wrong password")
    if user["blocked"]:
        return _answer(ApiCode.EBLOCKED, "account blocked")
    if user["mfa"]:
        if pin is None:
            return _answer(ApiCode.EMFAREQUIRED, "two-factor code needed")
        if not totp.verify(user["mfa"], pin):
            userdb.record_failure(tx, email)
            return _answer(ApiCode.EFAILED, "wrong two-factor code")
    userdb.clear_failures(tx, email)
    uh = user["uh"]
    if user["privk"] and user["pubk"]:
        n, e = rsa.parse_public_key(user["pubk"])
        sid = rsa.new_session_id(uh)
        tx.add_session(crypto.b64encode(sid), uh)
        log.info("full-account login of %s", uh)
        return {"k": user["k"], "u": uh, "csid": rsa.encrypt_session_id(sid, n, e),
                "privk": user["privk"]}
    account = tx.account(uh)
    assert account is not None
    ts = crypto.b64decode(account["ts"])
    tsid = crypto.b64encode(ts[:16] + uh.encode("ascii") + ts[16:])
    tx.add_session(tsid, uh)
    log.info("full-account login of %s (no key pair yet: tsid)", uh)
    return {"k": user["k"], "u": uh, "tsid": tsid}


def cmd_mfas(ctx: Ctx, cmd: dict) -> Any:
    user = userdb.user_by_handle(ctx.tx, ctx.user())
    if user is None:
        raise Fail(ApiCode.EACCESS, "two-factor needs a full account")
    if user["mfa"]:
        raise Fail(ApiCode.EEXIST, "two-factor is already on")
    pin = cmd.get("mfa")
    if pin is None:
        secret = totp.new_secret()
        userdb.set_fields(ctx.tx, user["uh"], mfa_pending=secret)
        return secret
    if not isinstance(pin, str):
        raise Fail(ApiCode.EARGS, "'mfa' must be a string")
    if not user["mfa_pending"] or not totp.verify(user["mfa_pending"], pin):
        raise Fail(ApiCode.EFAILED, "wrong two-factor code")
    userdb.set_fields(ctx.tx, user["uh"], mfa=user["mfa_pending"], mfa_pending=None)
    log.info("two-factor authentication turned on for %s", user["uh"])
    return 0


def cmd_mfag(ctx: Ctx, cmd: dict) -> Any:
    user = userdb.user_by_email(ctx.tx, email_arg(cmd, "e"))
    return int(bool(user is not None and user["mfa"]))
