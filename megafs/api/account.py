"""Full (email and password) MEGA accounts: log in, two-factor, the first login's RSA key pair,
sign up and confirm, log out.  Key derivations and RSA are in ``account_crypto``; the session
file is ``session``'s.  Never logs a password, key, code or session id.

Login (protocol reference §5; meganz/sdk src/commands.cpp ``CommandPrelogin``,
``CommandLogin``; meganz/webclient js/security.js ``security.login``):

1. ``us0`` with the lowercased email -> the account version and, for v2, the salt;
2. the password key and ``uh``: v2 PBKDF2-HMAC-SHA512 (b64 of the authentication key), v1 the
   legacy key preparation and the email's stringhash;
3. ``us`` with ``user`` and ``uh`` (the transport solves its proof of work); ``-26`` asks for
   the 6-digit two-factor code, sent again as ``mfa``;
4. ``k`` decrypts to the master key; ``csid`` decrypts with the private key (``privk``
   decrypted with the master key) to the session id, which must name the user ``u``.  An
   account without a key pair gets a ``tsid`` instead, checked like an ephemeral one; the
   client then makes a 2048-bit key pair (e = 257) and sends it with ``up``, as the SDK does at
   that point (``setkeypair``).  That is how a new registration gets its keys.

Errors become ``LoginFailed`` (a ``SessionError``) with one clear line and the MEGA code:
-9 wrong email or password, -13 not confirmed, -16 blocked, -6 too many attempts, -26 two-factor
code needed, -5 wrong two-factor code (meganz/webclient js/security.js
``checkForCommonErrors``).

Sign-up (meganz/webclient js/security.js ``security.register``; meganz/sdk
``CommandSendSignupLink2``, ``CommandConfirmSignupLink2``): a temporary account (a new one, or
the caller's anonymous one, whose files are then kept), ``uc2`` with the name, the email, a
fresh client random value ``crv``, the master key under the v2 password key and ``hak``; the
service mails ``https://mega.nz/#confirm<code>``; ``ud2`` with the code confirms the account;
the first login then makes the key pair.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from .. import crypto
from ..errors import ApiCode, LinkError, MegaError, ProtocolError, SessionError
from . import account_crypto as ac
from .session import Session, SessionManager, create_account
from .transport import Transport

log = logging.getLogger(__name__)

MfaSource = Callable[[], "str | None"]      # asked for the 6-digit code after a -26
CONFIRM_PREFIX = b"ConfirmCodeV2"
_CONFIRM_RE = re.compile(r"confirm([A-Za-z0-9_,-]+)")


class LoginFailed(SessionError):
    """A login, sign-up or confirmation the service refused; ``code`` is the MEGA code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _refusal(exc: MegaError, email: str, with_code: bool) -> Exception:
    texts: dict[int, str] = {
        ApiCode.ENOENT: "wrong email or password for %s" % email,
        ApiCode.EINCOMPLETE: "the account %s is not confirmed yet: open the link in its "
                             "confirmation email (`megafs signup --confirm LINK`)" % email,
        ApiCode.EBLOCKED: "the account %s is blocked (suspended by the service)" % email,
        ApiCode.ETOOMANY: "too many login attempts for %s: the service refuses logins for a "
                          "while (about an hour); try again later" % email,
        ApiCode.EMFAREQUIRED: "%s uses two-factor authentication: give the 6-digit code with "
                              "--mfa-code, or run on a terminal to be asked for it" % email,
    }
    text = texts.get(exc.code)
    if exc.code == ApiCode.EFAILED and with_code:
        text = "the two-factor code is wrong or expired; try the current one"
    return LoginFailed(exc.code, text) if text else exc


@dataclass(frozen=True)
class Prelogin:
    version: int
    salt: bytes | None


def prelogin(transport: Transport, email: str) -> Prelogin:
    try:
        reply = transport.call({"a": "us0", "user": email}, anonymous=True)
    except MegaError as exc:
        raise _refusal(exc, email, False) from None
    version = reply.get("v") if isinstance(reply, dict) else None
    if version == 1:
        return Prelogin(1, None)
    if version == 2 and isinstance(reply.get("s"), str) and reply["s"]:
        try:
            return Prelogin(2, crypto.b64decode(reply["s"]))
        except ValueError:
            raise ProtocolError("us0: the salt is not base64url") from None
    raise ProtocolError("us0: unsupported account version %r" % (version,))


def login_keys(email: str, password: str, pre: Prelogin) -> tuple[bytes, str]:
    """(password key, ``uh`` of the ``us`` command) for an account version."""
    if pre.version == 1:
        return ac.v1_login_keys(email, password)
    assert pre.salt is not None
    key, auth = ac.v2_login_keys(password, pre.salt)
    return key, crypto.b64encode(auth)


def login(transport: Transport, email: str, password: str, *,
          mfa: MfaSource | None = None) -> Session:
    """Log in and return the account's new session (not yet saved to a file)."""
    email = email.strip().lower()
    if not password:
        raise LoginFailed(ApiCode.EARGS, "the password is empty")
    pre = prelogin(transport, email)
    password_key, uh = login_keys(email, password, pre)
    command: dict[str, Any] = {"a": "us", "user": email, "uh": uh}
    while True:
        try:
            reply = transport.call(command, anonymous=True)
            break
        except MegaError as exc:
            if exc.code == ApiCode.EMFAREQUIRED and "mfa" not in command and mfa is not None:
                code = (mfa() or "").strip()
                if code:
                    if not (len(code) == 6 and code.isdigit()):
                        raise LoginFailed(ApiCode.EARGS, "a two-factor code is 6 digits")
                    command["mfa"] = code
                    continue
            raise _refusal(exc, email, "mfa" in command) from None
    session = _session_from_login(transport, email, password_key, reply)
    log.info("logged in as %s (account version %d)", session.user_handle, pre.version)
    return session


def _session_from_login(transport: Transport, email: str, password_key: bytes,
                        reply: Any) -> Session:
    if not isinstance(reply, dict) or not isinstance(reply.get("k"), str):
        raise ProtocolError("us: expected an object with k")
    user = reply.get("u")
    if not isinstance(user, str) or len(user) != 11:
        raise ProtocolError("us: the reply has no 11-character user handle")
    try:
        wrapped = crypto.b64decode(reply["k"])
    except ValueError:
        raise ProtocolError("us: k is not base64url") from None
    if len(wrapped) != 16:
        raise ProtocolError("us: k is not 16 bytes")
    master_key = crypto.unwrap_key(wrapped, password_key)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if isinstance(reply.get("csid"), str) and isinstance(reply.get("privk"), str):
        try:
            key = ac.unwrap_private_key(reply["privk"], master_key)
            sid = ac.decrypt_session_id(key, reply["csid"], user)
        except ac.KeyFormatError as exc:
            raise ProtocolError("us: the session id does not decrypt (%s)" % exc) from None
        return Session(api=transport.api, user_handle=user, sid=crypto.b64encode(sid),
                       master_key=master_key, password_key=None, created=created, email=email)
    if not isinstance(reply.get("tsid"), str):
        raise ProtocolError("us: the reply has neither csid and privk nor tsid")
    try:
        raw = crypto.b64decode(reply["tsid"])
    except ValueError:
        raise ProtocolError("us: tsid is not base64url") from None
    if not crypto.check_tsid(raw, master_key, user):
        raise ProtocolError("us: the temporary session id failed its check")
    session = Session(api=transport.api, user_handle=user, sid=crypto.b64encode(raw),
                      master_key=master_key, password_key=None, created=created, email=email)
    set_key_pair(transport, session)
    return session


def set_key_pair(transport: Transport, session: Session) -> None:
    """Make the account's RSA key pair and send it (``up`` with ``privk``/``pubk``)."""
    key, e = ac.generate_rsa_key()
    command = {"a": "up", "privk": ac.wrap_private_key(key, session.master_key),
               "pubk": crypto.b64encode(ac.encode_public_key(key.n, e))}
    transport.sid_source = lambda: session.sid
    reply = transport.call(command)
    if isinstance(reply, list) and len(reply) == 2:
        reply = reply[1]        # v3 form [st, uh]
    if reply != session.user_handle:
        raise ProtocolError("up: expected the user handle after setting the key pair")
    log.info("made and stored the RSA key pair of %s", session.user_handle)


def logout(transport: Transport, session: Session) -> bool:
    """End the session on the server (``sml``); False if it had already ended (-15)."""
    transport.sid_source = lambda: session.sid
    transport.on_bad_session = None
    try:
        transport.call({"a": "sml"})
    except MegaError as exc:
        if exc.code == ApiCode.ESID:
            return False
        raise
    return True


# --------------------------------------------------------------------------------------------
# Sign-up
def signup(transport: Transport, email: str, password: str, name: str,
           temporary: Session | None = None) -> Session:
    """Start a registration (``uc2``) on ``temporary`` (a new temporary account if None);
    returns that temporary account's session.  The service mails the confirmation link."""
    email = email.strip().lower()
    if "@" not in email:
        raise LoginFailed(ApiCode.EARGS, "%r is not an email address" % email)
    if not password:
        raise LoginFailed(ApiCode.EARGS, "the password is empty")
    base = temporary or create_account(transport)
    SessionManager(base, transport)         # supplies its sid; renews it on -15
    crv = crypto.random_key(16)
    password_key, auth = ac.v2_login_keys(password, ac.registration_salt(crv))
    command = {"a": "uc2", "n": crypto.b64encode((name or email).encode("utf-8")),
               "m": crypto.b64encode(email.encode("utf-8")), "crv": crypto.b64encode(crv),
               "k": crypto.b64encode(crypto.wrap_key(base.master_key, password_key)),
               "hak": crypto.b64encode(ac.hashed_auth_key(auth)), "v": 2}
    try:
        reply = transport.call(command)
    except MegaError as exc:
        if exc.code == ApiCode.EEXIST:
            raise LoginFailed(exc.code, "an account with %s exists already" % email) from None
        if exc.code == ApiCode.EACCESS:
            raise LoginFailed(exc.code, "this temporary account was already turned into a "
                              "full account") from None
        raise
    if reply != 0 and not isinstance(reply, str):
        raise ProtocolError("uc2: unexpected reply")
    log.info("registration of %s started on temporary account %s", email, base.user_handle)
    return base


def confirm_code(link: str) -> str:
    """The code of a confirmation link (``https://mega.nz/#confirm<code>``, ``.../confirm<code>``
    or the bare code); LinkError for anything else."""
    text = link.strip().strip("<>\"'")
    found = _CONFIRM_RE.search(text)
    code = found.group(1) if found else text
    try:
        raw = crypto.b64decode(code)
    except ValueError:
        raw = b""
    if not raw.startswith(CONFIRM_PREFIX):
        raise LinkError("not a MEGA confirmation link (expected https://mega.nz/#confirm...)")
    return code


@dataclass(frozen=True)
class Confirmed:
    email: str
    name: str
    user_handle: str


def confirm(transport: Transport, link: str) -> Confirmed:
    """Confirm a registration (``ud2``); the account can log in afterwards."""
    try:
        reply = transport.call({"a": "ud2", "c": confirm_code(link)}, anonymous=True)
    except MegaError as exc:
        if exc.code in (ApiCode.ENOENT, ApiCode.EEXPIRED):
            raise LoginFailed(exc.code, "this confirmation link is unknown, expired or was "
                              "already used") from None
        if exc.code == ApiCode.EEXIST:
            raise LoginFailed(exc.code, "the account of this link exists already") from None
        raise
    if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], list):
        reply = reply[1]        # v3 form [st, [...]]
    try:
        email = crypto.b64decode(reply[0]).decode("utf-8")
        name = crypto.b64decode(reply[1]).decode("utf-8", "replace")
        user = reply[2]
    except (TypeError, IndexError, KeyError, ValueError):
        raise ProtocolError("ud2: expected [email, name, user handle, version]") from None
    if not isinstance(user, str) or len(user) != 11:
        raise ProtocolError("ud2: bad user handle")
    return Confirmed(email.lower(), name, user)
