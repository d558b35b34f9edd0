"""Ephemeral MEGA accounts and the private session file; the only holder of account secrets.

Creation follows the protocol reference §4: fresh 16-byte master key, password key and session
self-challenge from ``secrets``; ``up`` with ``k = b64(E_pk(mk))`` and
``ts = b64(ssc || E_mk(ssc))``; then ``us`` with the returned user handle, whose ``tsid`` is
accepted only if ``crypto.check_tsid`` says so; the sid is the tsid's base64url text.

The session file is JSON ``{"api", "user_handle", "sid", "master_key", "password_key",
"created", "version"}`` (keys base64url), mode 0600, in a 0700 directory, written atomically
(temp file + fsync + rename).  One file per API URL:
``<state dir>/sessions/<sha256(normalised api)[:16]>.json``, or the file named by
``--session``.  A file for another API URL, an unreadable or corrupt one, or one that group or
others may read is a ``SessionError``: it is never replaced silently, because replacing it would
orphan every file and link made with that account.  Resuming re-uses the stored sid; if the
server rejects it (``-15``) the same account logs in again with ``us``.  Never logs secrets.

Full (email) accounts (``api.account`` logs them in) have one file per account and API:
``<state dir>/sessions/acct-<sha256(api NUL email)[:16]>.json`` holding ``{"kind": "account",
"api", "email", "user_handle", "sid", "master_key", "created", "version"}``: no password key
and no authentication key, so a session the server ended (``-15``) can only be renewed with
the password (the ``reauth`` hook of ``SessionManager``, which the CLI fills with a prompt on a
terminal); without it the error says to run ``megafs login EMAIL``.  Nothing here ever turns
a missing or expired account session into a new anonymous account.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .. import crypto
from ..config import default_state_dir, normalise_api, resolve_api
from ..errors import ApiCode, MegaError, ProtocolError, SessionError
from .transport import Transport

log = logging.getLogger(__name__)

SESSION_VERSION = 1
_FIELDS = ("api", "user_handle", "sid", "master_key", "password_key")
_ACCOUNT_FIELDS = ("api", "user_handle", "sid", "master_key", "email")
ACCOUNT_PREFIX = "acct-"


@dataclass
class Session:
    """An account's credentials: an ephemeral one (``password_key``) or a full one (``email``,
    no password key).  ``sid`` may change after a re-login."""

    api: str
    user_handle: str
    sid: str
    master_key: bytes
    password_key: bytes | None
    created: str
    path: str | None = None
    email: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __repr__(self) -> str:  # never show the sid or keys
        return "Session(api=%r, user_handle=%r, email=%r, path=%r)" % (
            self.api, self.user_handle, self.email, self.path)

    @property
    def is_account(self) -> bool:
        return self.email is not None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"version": SESSION_VERSION, "api": self.api,
                                "user_handle": self.user_handle, "sid": self.sid,
                                "master_key": crypto.b64encode(self.master_key),
                                "created": self.created}
        if self.email is not None:
            data.update({"kind": "account", "email": self.email})
        else:
            data["password_key"] = crypto.b64encode(self.password_key or b"")
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: Any, path: str | None, api: str | None) -> "Session":
        where = path or "session"
        if not isinstance(data, dict):
            raise SessionError("%s: not a megafs session (expected a JSON object)" % where)
        account = data.get("kind") == "account"
        missing = [name for name in (_ACCOUNT_FIELDS if account else _FIELDS)
                   if not isinstance(data.get(name), str) or not data.get(name)]
        if missing:
            raise SessionError("%s: not a megafs session (missing %s)"
                               % (where, ", ".join(missing)))
        try:
            file_api = normalise_api(data["api"])
        except Exception:
            raise SessionError("%s: its api field is not a URL" % where) from None
        if api is not None and file_api != normalise_api(api):
            raise SessionError("%s was made for API %s, not %s; pass --api %s or use another "
                               "session file" % (where, file_api, normalise_api(api), file_api))
        try:
            mk = crypto.b64decode(data["master_key"])
            pk = None if account else crypto.b64decode(data["password_key"])
        except ValueError:
            raise SessionError("%s: keys are not base64url" % where) from None
        if len(mk) != 16 or (pk is not None and len(pk) != 16):
            raise SessionError("%s: keys must be 16 bytes" % where)
        return cls(api=file_api, user_handle=data["user_handle"], sid=data["sid"],
                   master_key=mk, password_key=pk, created=str(data.get("created", "")),
                   path=path, email=data["email"] if account else None)


# --------------------------------------------------------------------------------------------
# File locations
def session_path(api: str, state_dir: str | None = None) -> str:
    """The default session file for an API URL inside the state dir."""
    digest = hashlib.sha256(normalise_api(api).encode("utf-8")).hexdigest()[:16]
    return os.path.join(state_dir or default_state_dir(), "sessions", digest + ".json")


def account_session_path(api: str, email: str, state_dir: str | None = None) -> str:
    """The session file of a full account on an API (one per account and API)."""
    key = "%s\0%s" % (normalise_api(api), email.strip().lower())
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return os.path.join(state_dir or default_state_dir(), "sessions",
                        ACCOUNT_PREFIX + digest + ".json")


def _is_managed(path: str) -> bool:
    """A session file inside a state dir's ``sessions/`` (named by the API hash)."""
    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    if name.startswith(ACCOUNT_PREFIX):
        name = name[len(ACCOUNT_PREFIX):]
    return os.path.basename(directory) == "sessions" and len(name) == 21 \
        and name.endswith(".json") and all(c in "0123456789abcdef" for c in name[:16])


def account_sessions(state_dir: str | None = None) -> list[Session | SessionError]:
    """Every full-account session file of a state dir (a SessionError for a broken one)."""
    directory = os.path.join(state_dir or default_state_dir(), "sessions")
    try:
        names = sorted(n for n in os.listdir(directory)
                       if n.startswith(ACCOUNT_PREFIX) and n.endswith(".json"))
    except FileNotFoundError:
        return []
    out: list[Session | SessionError] = []
    for name in names:
        try:
            out.append(read_session_file(os.path.join(directory, name), None))
        except SessionError as exc:
            out.append(exc)
        except FileNotFoundError:
            continue
    return out


def remove_session_file(path: str) -> bool:
    """Delete a session file; False if it was already gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _private_dir(path: str, tighten: bool) -> None:
    """Create ``path`` (and parents) as 0700; with ``tighten``, fix an existing looser mode.

    Only the state dir's own ``sessions`` directory is tightened; the directory of a
    ``--session FILE`` (say ``/tmp``) is never chmodded: the file's 0600 mode protects it.
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    if tighten:
        st = os.stat(path)
        if st.st_mode & 0o077 and st.st_uid == os.getuid():
            log.warning("tightening permissions of %s to 0700", path)
            os.chmod(path, 0o700)


def read_session_file(path: str, api: str | None) -> Session:
    """Load and validate a session file; SessionError with a clear reason otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SessionError("cannot read session file %s: %s" % (path, exc.strerror)) from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SessionError("session file %s is not a regular file" % path)
        if st.st_mode & 0o077:
            raise SessionError("session file %s is readable by group or others (mode %04o); "
                               "it holds account secrets: chmod 600 it"
                               % (path, stat.S_IMODE(st.st_mode)))
        if st.st_uid != os.getuid():
            raise SessionError("session file %s belongs to another user" % path)
        raw = handle.read(1 << 20)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SessionError("session file %s is corrupt (not JSON); move it away or pass "
                           "--session to use another file" % path) from None
    return Session.from_json(data, path, api)


def write_session_file(session: Session, path: str) -> None:
    """Write atomically: temp file 0600 in the same directory, fsync, rename, fsync dir."""
    directory = os.path.dirname(os.path.abspath(path))
    _private_dir(directory, tighten=_is_managed(path))
    tmp = os.path.join(directory, ".%s.%d.%s.tmp" % (os.path.basename(path), os.getpid(),
                                                     crypto.b64encode(os.urandom(6))))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(session.dumps())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    session.path = path


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
    """Serialise session creation between processes sharing one state dir."""
    _private_dir(os.path.dirname(os.path.abspath(path)), tighten=_is_managed(path))
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def archive_session_file(path: str) -> str | None:
    """Rename an existing session file aside with a timestamp (``--new``); return its new name."""
    if not os.path.exists(path):
        return None
    stem, ext = os.path.splitext(path)
    target = "%s.%s%s" % (stem, time.strftime("%Y%m%dT%H%M%S"), ext or ".json")
    counter = 1
    while os.path.exists(target):
        target = "%s.%s-%d%s" % (stem, time.strftime("%Y%m%dT%H%M%S"), counter, ext or ".json")
        counter += 1
    os.rename(path, target)
    return target


# --------------------------------------------------------------------------------------------
# Account operations
def create_account(transport: Transport) -> Session:
    """A new ephemeral account (``up``) and its first session (``us``)."""
    mk = crypto.random_key(16)
    pk = crypto.random_key(16)
    ssc = crypto.random_key(16)
    k = crypto.b64encode(crypto.wrap_key(mk, pk))
    ts = crypto.b64encode(crypto.make_ts(mk, ssc))
    handle = transport.call({"a": "up", "k": k, "ts": ts}, anonymous=True)
    if isinstance(handle, list) and len(handle) == 2 and isinstance(handle[1], str):
        handle = handle[1]  # v3 form [st, uh]
    if not isinstance(handle, str) or len(handle) != 11:
        raise ProtocolError("up: expected an 11-character user handle, got %s"
                            % type(handle).__name__)
    sid = login(transport, handle, mk, pk)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    log.info("created ephemeral account %s", handle)
    return Session(api=transport.api, user_handle=handle, sid=sid, master_key=mk,
                   password_key=pk, created=created)


def login(transport: Transport, user_handle: str, master_key: bytes, password_key: bytes) -> str:
    """``us`` for an ephemeral account; verify ``k`` and ``tsid``; return the new sid."""
    reply = transport.call({"a": "us", "user": user_handle}, anonymous=True)
    if not isinstance(reply, dict):
        raise ProtocolError("us: expected an object, got %s" % type(reply).__name__)
    k, tsid = reply.get("k"), reply.get("tsid")
    if not isinstance(k, str) or not isinstance(tsid, str):
        raise ProtocolError("us: reply lacks k or tsid")
    try:
        server_mk = crypto.unwrap_key(crypto.b64decode(k), password_key)
        raw_tsid = crypto.b64decode(tsid)
    except ValueError:
        raise ProtocolError("us: k or tsid is not valid base64url of the right size") from None
    if server_mk != master_key:
        raise SessionError("us: the server's copy of the master key does not match the session")
    if not crypto.check_tsid(raw_tsid, master_key, user_handle):
        raise SessionError("us: the server's session id failed the tsid check")
    return crypto.b64encode(raw_tsid)


# Renews an ended full-account session: given the old session, returns a fresh one of the same
# account (the CLI asks for the password on a terminal); raises MegafsError otherwise.
Reauth = Callable[[Session], Session]


class SessionManager:
    """Binds a Session to a Transport: supplies the sid and re-logs in on ``-15`` (ephemeral
    accounts by themselves; full accounts only through ``reauth``, else SessionError)."""

    def __init__(self, session: Session, transport: Transport,
                 reauth: Reauth | None = None) -> None:
        self.session = session
        self.transport = transport
        self.reauth = reauth
        self._lock = threading.Lock()
        transport.sid_source = lambda: self.session.sid
        transport.on_bad_session = self.relogin

    def _renew_account(self, session: Session) -> None:
        if self.reauth is None:
            raise SessionError("the session of %s on %s has ended (the server answered -15: "
                               "logged out elsewhere or expired); log in again with `megafs "
                               "login %s`" % (session.email, session.api, session.email))
        fresh = self.reauth(session)
        if fresh.user_handle != session.user_handle or fresh.master_key != session.master_key:
            raise SessionError("logging in again as %s gave another account" % session.email)
        session.sid = fresh.sid
        log.info("logged in again as %s", session.user_handle)
        if session.path:
            write_session_file(session, session.path)

    def relogin(self, rejected_sid: str | None) -> None:
        with self._lock:
            if rejected_sid is not None and self.session.sid != rejected_sid:
                return  # another thread already logged in again
            session = self.session
            if session.is_account:
                self._renew_account(session)
                return
            assert session.password_key is not None
            try:
                sid = login(self.transport, session.user_handle, session.master_key,
                            session.password_key)
            except MegaError as exc:
                if exc.code == ApiCode.ENOENT:
                    raise SessionError("the account of session %s no longer exists on %s; "
                                       "start a new one with `megafs session --new`"
                                       % (session.path or "(memory)", session.api)) from None
                raise
            session.sid = sid
            log.info("logged in again as %s", session.user_handle)
            if session.path:
                write_session_file(session, session.path)


def open_session(transport: Transport, *, state_dir: str | None = None,
                 session_file: str | None = None, new: bool = False,
                 create: bool = True) -> Session:
    """Load the session for ``transport.api`` or create one (under a file lock).

    ``new`` archives an existing file (renamed with a timestamp) and creates a fresh account.
    """
    path = os.path.abspath(session_file) if session_file else \
        session_path(transport.api, state_dir)
    if not new:
        try:
            return read_session_file(path, transport.api)
        except FileNotFoundError:
            pass
    if not create:
        raise SessionError("no session file at %s" % path)
    with _file_lock(path):
        if new:
            old = archive_session_file(path)
            if old:
                log.warning("kept the previous session as %s", old)
        else:
            try:  # another process may have created it while we waited for the lock
                return read_session_file(path, transport.api)
            except FileNotFoundError:
                pass
        session = create_account(transport)
        write_session_file(session, path)
        return session


def login_hint(email: str, api: str, state_dir: str | None) -> str:
    """The ``megafs login`` command line for ``email`` on ``api`` and ``state_dir``: with
    ``--api`` unless it is the default API, with ``--state-dir`` unless it is the default."""
    words = ["megafs", "login", email]
    if normalise_api(api) != resolve_api(None):
        words += ["--api", api]
    if state_dir and os.path.abspath(state_dir) != os.path.abspath(default_state_dir()):
        words += ["--state-dir", state_dir]
    return " ".join(words)


def open_account_session(transport: Transport, email: str, *, state_dir: str | None = None,
                         session_file: str | None = None) -> Session:
    """The logged-in session of ``email`` on ``transport.api``; SessionError if there is none
    (never a new account: only ``megafs login`` makes one)."""
    path = os.path.abspath(session_file) if session_file else \
        account_session_path(transport.api, email, state_dir)
    try:
        session = read_session_file(path, transport.api)
    except FileNotFoundError:
        raise SessionError("%s is not logged in on %s: run `%s` first"
                           % (email, transport.api, login_hint(email, transport.api,
                                                               state_dir))) from None
    if session.email is None or session.email.lower() != email.strip().lower():
        raise SessionError("session file %s is not the session of %s" % (path, email))
    return session


def peek_api(session_file: str) -> str | None:
    """The API URL recorded in a session file, or None if there is no readable one."""
    try:
        return read_session_file(session_file, None).api
    except (FileNotFoundError, SessionError):
        return None
