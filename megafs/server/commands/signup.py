"""Registration: a temporary account (``up``) becomes a full one.  ``uc2`` starts it, the
confirmation mail carries the link, ``ud2`` confirms it, and the first login's ``up`` with
``privk``/``pubk`` gives the account its RSA key pair.  The server never sees a key: it keeps
the master key encrypted with the password key (``k``), the hash of the authentication key
(``hak``) and the client random value the salt is made from (``crv``).

Wire format (meganz/sdk src/commands.cpp ``CommandSendSignupLink2``,
``CommandConfirmSignupLink2``, ``CommandSetKeyPair``; meganz/webclient js/security.js
``startRegistration``, ``repeatSendSignupLink``, ``verifyEmailConfirmCode``; js/user.js
``u_setrsa``):

* ``{"a":"uc2","n":b64(name),"m":b64(email),"crv":..,"k":..,"hak":..,"v":2}`` with the
  temporary account's session -> ``0``; without ``crv``/``k``/``hak`` it re-sends the pending
  registration of this session to a (corrected) email.  ``-12`` if a full account already has
  that email.  The mail's link is ``https://mega.nz/#confirm`` + base64url("ConfirmCodeV2" ||
  16 random bytes || email), the layout of MEGA's security white paper.
* ``{"a":"ud2","c":CODE}`` -> ``[b64(email), b64(name), user handle, 2]`` (legacy format; with
  ``v=3`` the SDK reads the same array after its sequence tag); ``-9`` for an unknown or used
  code.  Sessions of the temporary account end: its owner logs in with the password.
* ``{"a":"up","privk":..,"pubk":..}`` with a session -> the user handle; ``-12`` if the account
  already has a key pair.  ``up`` with ``firstname``/``lastname``/``name2`` (the web client's
  extra registration details) stores the name.
"""
from __future__ import annotations

import logging
import secrets
from typing import Any

from ... import crypto
from ...errors import ApiCode
from .. import rsa, userdb
from .base import Ctx, Fail, arg_b64, arg_str
from .login import email_arg, signup_salt

log = logging.getLogger(__name__)

CODE_PREFIX = b"ConfirmCodeV2"
NAME_FIELDS = ("firstname", "lastname", "name2", "name")
MAX_NAME = 300


def _text(cmd: dict, key: str) -> str:
    try:
        return crypto.b64decode(arg_b64(cmd, key, max_chars=4 * MAX_NAME)).decode("utf-8")
    except UnicodeDecodeError:
        raise Fail(ApiCode.EARGS, "%r is not base64url of UTF-8 text" % key) from None


def cmd_uc2(ctx: Ctx, cmd: dict) -> Any:
    uh = ctx.user()
    tx = ctx.tx
    if userdb.user_by_handle(tx, uh) is not None:
        raise Fail(ApiCode.EACCESS, "this account is already a full account")
    if cmd.get("v") != 2:
        raise Fail(ApiCode.EARGS, "only the v2 registration (v: 2) is supported")
    email = email_arg({"m": _text(cmd, "m")}, "m")
    name = _text(cmd, "n") if "n" in cmd else ""
    if userdb.user_by_email(tx, email) is not None:
        raise Fail(ApiCode.EEXIST, "an account with that email exists")
    if any(key in cmd for key in ("crv", "k", "hak")):
        crv = arg_b64(cmd, "crv", lengths=(16,))
        k = arg_b64(cmd, "k", lengths=(16,))
        hak = arg_b64(cmd, "hak", lengths=(16,))
    else:
        pending = userdb.signup_by_handle(tx, uh)
        if pending is None:
            raise Fail(ApiCode.EARGS, "uc2 needs crv, k and hak")
        crv, k, hak = pending["crv"], pending["k"], pending["hak"]
        name = name or pending["name"]
    code = crypto.b64encode(CODE_PREFIX + secrets.token_bytes(16) + email.encode("utf-8"))
    userdb.put_signup(tx, code=code, email=email, uh=uh, name=name, crv=crv, hak=hak, k=k)
    userdb.send_mail(tx, email, userdb.CONFIRM_SUBJECT, userdb.CONFIRM_BASE + code)
    log.info("registration of %s started; confirmation mail kept", uh)
    return 0


def cmd_ud2(ctx: Ctx, cmd: dict) -> Any:
    tx = ctx.tx
    pending = userdb.signup_by_code(tx, arg_str(cmd, "c"))
    if pending is None:
        raise Fail(ApiCode.ENOENT, "unknown or already used confirmation code")
    if userdb.user_by_email(tx, pending["email"]) is not None:
        userdb.drop_signup(tx, pending["code"])
        raise Fail(ApiCode.EEXIST, "an account with that email exists")
    uh = pending["uh"]
    userdb.add_user(tx, uh=uh, email=pending["email"], v=2, salt=signup_salt(pending["crv"]),
                    hak=pending["hak"], k=pending["k"], name=pending["name"])
    tx.execute("UPDATE accounts SET k=? WHERE uh=?", (pending["k"], uh))
    userdb.drop_signup(tx, pending["code"])
    userdb.drop_sessions_of(tx, uh)
    log.info("registration of %s confirmed", uh)
    return [crypto.b64encode(pending["email"].encode("utf-8")),
            crypto.b64encode(pending["name"].encode("utf-8")), uh, 2]


def update_user(ctx: Ctx, cmd: dict) -> Any:
    """``up`` with a session: the key pair and/or the name."""
    uh = ctx.user()
    tx = ctx.tx
    user = userdb.user_by_handle(tx, uh)
    if "privk" in cmd or "pubk" in cmd:
        privk = arg_b64(cmd, "privk", block=16)
        pubk = arg_str(cmd, "pubk")
        if len(crypto.b64decode(privk)) < 256:
            raise Fail(ApiCode.EARGS, "'privk' is too short for an RSA key")
        try:
            rsa.parse_public_key(pubk)
        except ValueError as exc:
            raise Fail(ApiCode.EARGS, "'pubk': %s" % exc) from None
        if user is None:
            raise Fail(ApiCode.EACCESS, "only full accounts keep a key pair")
        if user["privk"]:
            raise Fail(ApiCode.EEXIST, "the account already has a key pair")
        userdb.set_keypair(tx, uh, privk, pubk)
        log.info("key pair set for %s", uh)
    names = [_text(cmd, key) for key in NAME_FIELDS if key in cmd]
    if names and user is not None:
        userdb.set_fields(tx, uh, name=names[-1][:MAX_NAME])
    return uh
