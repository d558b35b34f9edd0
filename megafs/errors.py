"""One error vocabulary for megafs and the one table that turns any error into an errno.

``MegaError`` carries a MEGA API error code with its name and meaning from the protocol
reference; the client raises it for per-command, batch-level and transfer-server errors.  Other
failures have their own small classes here.  ``to_errno`` is the only place that decides which
errno a caller (a FUSE operation, a CLI exit) sees, so nothing reaches the FUSE binding as an
unmapped exception.  No I/O, no logging.
"""
from __future__ import annotations

import errno
from enum import Enum, IntEnum
from typing import Any


class ApiCode(IntEnum):
    """MEGA API error codes by name (protocol reference §1.5; meganz/sdk include/mega/types.h)."""

    EINTERNAL = -1
    EARGS = -2
    EAGAIN = -3
    ERATELIMIT = -4
    EFAILED = -5
    ETOOMANY = -6
    ERANGE = -7
    EEXPIRED = -8
    ENOENT = -9
    ECIRCULAR = -10
    EACCESS = -11
    EEXIST = -12
    EINCOMPLETE = -13
    EKEY = -14
    ESID = -15
    EBLOCKED = -16
    EOVERQUOTA = -17
    ETEMPUNAVAIL = -18
    ETOOMANYCONNECTIONS = -19
    EWRITE = -20
    EREAD = -21
    EAPPKEY = -22
    ESSL = -23
    EGOINGOVERQUOTA = -24
    EROLLEDBACK = -25
    EMFAREQUIRED = -26
    EMASTERONLY = -27
    EBUSINESSPASTDUE = -28
    EPAYWALL = -29
    ESUBUSERKEYMISSING = -30


# What each code means (protocol reference §1.5; meganz/sdk include/mega/types.h).
_MEANINGS: dict[ApiCode, str] = {
    ApiCode.EINTERNAL: "internal error",
    ApiCode.EARGS: "bad arguments",
    ApiCode.EAGAIN: "temporary congestion, retry",
    ApiCode.ERATELIMIT: "rate limited (on an upload URL: upload failed, restart it)",
    ApiCode.EFAILED: "permanent failure",
    ApiCode.ETOOMANY: "too many requests for this resource",
    ApiCode.ERANGE: "resource access out of range",
    ApiCode.EEXPIRED: "resource expired",
    ApiCode.ENOENT: "object not found",
    ApiCode.ECIRCULAR: "circular linkage",
    ApiCode.EACCESS: "access denied",
    ApiCode.EEXIST: "object already exists",
    ApiCode.EINCOMPLETE: "incomplete resource",
    ApiCode.EKEY: "cryptographic or integrity check failed",
    ApiCode.ESID: "bad or expired session id",
    ApiCode.EBLOCKED: "resource administratively blocked",
    ApiCode.EOVERQUOTA: "storage quota exceeded",
    ApiCode.ETEMPUNAVAIL: "resource temporarily unavailable",
    ApiCode.ETOOMANYCONNECTIONS: "too many connections on this resource",
    ApiCode.EWRITE: "write failed",
    ApiCode.EREAD: "read failed",
    ApiCode.EAPPKEY: "invalid application key",
    ApiCode.ESSL: "SSL verification failed",
    ApiCode.EGOINGOVERQUOTA: "not enough quota for this operation",
    ApiCode.EROLLEDBACK: "request rolled back",
    ApiCode.EMFAREQUIRED: "multi-factor authentication required",
    ApiCode.EMASTERONLY: "denied for business sub-users",
    ApiCode.EBUSINESSPASTDUE: "business account expired",
    ApiCode.EPAYWALL: "over-disk-quota paywall",
    ApiCode.ESUBUSERKEYMISSING: "business sub-user key missing",
}

# code: (name, meaning)
API_ERRORS: dict[int, tuple[str, str]] = {code: (code.name, text) for code, text in
                                          _MEANINGS.items()}


class Verdict(Enum):
    """What a caller does about an error: the one classification of MEGA codes."""

    TRANSIENT = "transient"      # nothing was applied; send the same request again later
    RELOGIN = "relogin"          # the session is gone: log in again, then resend
    NEW_URL = "new-url"          # a transfer URL is dead: ask for a new one and start over
    PERMANENT = "permanent"      # retrying cannot help without a change on the user's side


# The classification table.  Sources: protocol reference §1.4-§1.6, §7.3, §11.1, §14.7;
# meganz/sdk src/megaclient.cpp (batch-level -3/-4 resent unchanged, -15 re-login),
# meganz/webclient js/utils/api.js ``errorHandler`` (-3 and -4 retried, -4 with a longer
# first wait), js/transfers/upload2.js ``ulErrorMap`` (the codes an upload server answers).
#
# Command channel (``/cs`` batches and their per-command results, ``sc`` polls): -3 and -4
# mean nothing was applied; -18/-19 are "temporarily unavailable / too many connections".
_COMMAND_TRANSIENT = frozenset({ApiCode.EAGAIN, ApiCode.ERATELIMIT, ApiCode.ETEMPUNAVAIL,
                                ApiCode.ETOOMANYCONNECTIONS})
# Transfer servers (upload/download URLs) speak a different dialect: -4 there is EFAILED
# ("this upload cannot continue on this URL", SDK ``DAEMON_EFAILED``, megous/megatools#375)
# and -6 is "too many IPs on this URL": both need a new URL, retrying the dead one cannot
# help.  -14 (EKEY) is the chunk checksum failing: resend that POST.
_TRANSFER_TRANSIENT = frozenset({ApiCode.EAGAIN, ApiCode.ETEMPUNAVAIL,
                                 ApiCode.ETOOMANYCONNECTIONS, ApiCode.EKEY})
_TRANSFER_NEW_URL = frozenset({ApiCode.ERATELIMIT, ApiCode.EFAILED, ApiCode.ETOOMANY,
                               ApiCode.ERANGE, ApiCode.EEXPIRED, ApiCode.ENOENT, ApiCode.ESID})
# Codes after which a client should slow down more than after a plain -3: the web client
# starts its back-off for -4 at 900 ms + Exp(4 s) instead of 192 ms + Exp(256 ms).
_SLOW_DOWN = frozenset({ApiCode.ERATELIMIT})


def classify(code: int, where: str = "command") -> Verdict:
    """The verdict for MEGA error ``code`` answered by the command channel (``where="command"``,
    also the ``sc`` channel) or by a transfer server (``where="transfer"``)."""
    if where == "transfer":
        if code in _TRANSFER_TRANSIENT:
            return Verdict.TRANSIENT
        if code in _TRANSFER_NEW_URL:
            return Verdict.NEW_URL
        return Verdict.PERMANENT
    if where != "command":
        raise ValueError("where must be 'command' or 'transfer'")
    if code == ApiCode.ESID:
        return Verdict.RELOGIN
    if code in _COMMAND_TRANSIENT:
        return Verdict.TRANSIENT
    return Verdict.PERMANENT


def slows_down(code: int, where: str = "command") -> bool:
    """Whether a transient ``code`` asks the client to back off longer (rate limiting)."""
    return where == "command" and code in _SLOW_DOWN


RETRYABLE_CODES = frozenset(c for c in ApiCode if classify(c) is Verdict.TRANSIENT)


class MegafsError(Exception):
    """Base of every error megafs raises on purpose; carries the errno callers should see."""

    errno: int = errno.EIO


class MegaError(MegafsError):
    """A MEGA API error code, from the command channel or a transfer server."""

    def __init__(self, code: int, context: str = "") -> None:
        self.code = int(code)
        self.name, self.meaning = API_ERRORS.get(self.code, ("EUNKNOWN", "unknown error code"))
        self.context = context
        text = "MEGA error %d %s: %s" % (self.code, self.name, self.meaning)
        if context:
            text += " (%s)" % context
        super().__init__(text)

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES

    @property
    def errno(self) -> int:  # type: ignore[override]
        return _API_ERRNO.get(self.code, errno.EIO)


class ProtocolError(MegafsError):
    """The server answered something that does not fit the protocol (bad JSON, wrong type)."""

    errno = errno.EIO


class TransportError(MegafsError):
    """The request could not be completed (network, HTTP status, timeouts) after retries."""

    errno = errno.EIO


class IntegrityError(MegafsError):
    """Downloaded data failed its MAC check: wrong key or tampered/truncated ciphertext."""

    errno = errno.EIO


class LinkError(MegafsError):
    """A string that is not a usable MEGA file link."""

    errno = errno.EINVAL


class SessionError(MegafsError):
    """The session file is missing, unreadable, insecure or made for another API URL."""

    errno = errno.EACCES


class UploadFailed(MegafsError):
    """An upload that failed for good; the staged data is kept."""

    errno = errno.EIO


class Cancelled(MegafsError):
    """The caller's cancel event was set (an upload, download or retry wait was abandoned)."""

    errno = errno.ECANCELED


class Stopped(BaseException):
    """A signal (SIGTERM, SIGHUP) ended a command; raised by its handler so that every
    ``finally`` and ``except BaseException`` clean-up runs (``megafs get``: no partial file).
    Not a ``MegafsError``: nothing may catch it as an ordinary failure."""

    def __init__(self, signum: int, name: str) -> None:
        self.signum = signum
        self.name = name
        super().__init__(name)


def is_permanent(exc: BaseException) -> bool:
    """Whether repeating the operation that raised ``exc`` cannot succeed without a change on
    the user's side (quota, parent gone, access denied, a file that vanished locally)."""
    for err in (exc, exc.__cause__, exc.__context__):
        if isinstance(err, MegaError):
            return classify(err.code) is Verdict.PERMANENT
    return isinstance(exc, FileNotFoundError)


class FsError(MegafsError):
    """A filesystem-level refusal with an explicit errno and reason."""

    def __init__(self, err: int, reason: str = "") -> None:
        self.errno = err  # type: ignore[misc]
        super().__init__(reason or errno.errorcode.get(err, str(err)))


_API_ERRNO: dict[int, int] = {
    ApiCode.EARGS: errno.EINVAL,
    ApiCode.EAGAIN: errno.EAGAIN,
    ApiCode.ERATELIMIT: errno.EAGAIN,
    ApiCode.ETOOMANY: errno.EAGAIN,
    ApiCode.ERANGE: errno.ERANGE,
    ApiCode.EEXPIRED: errno.EIO,
    ApiCode.ENOENT: errno.ENOENT,
    ApiCode.ECIRCULAR: errno.ELOOP,
    ApiCode.EACCESS: errno.EACCES,
    ApiCode.EEXIST: errno.EEXIST,
    ApiCode.EKEY: errno.EIO,
    ApiCode.ESID: errno.EACCES,
    ApiCode.EBLOCKED: errno.EACCES,
    ApiCode.EOVERQUOTA: errno.EDQUOT,
    ApiCode.ETEMPUNAVAIL: errno.EAGAIN,
    ApiCode.ETOOMANYCONNECTIONS: errno.EAGAIN,
    ApiCode.EGOINGOVERQUOTA: errno.EDQUOT,
}


def to_errno(exc: BaseException) -> int:
    """The errno for any exception; never EINVAL for an error we did not classify."""
    if isinstance(exc, MegafsError):
        return exc.errno
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    if isinstance(exc, (TimeoutError,)):
        return errno.ETIMEDOUT
    if isinstance(exc, MemoryError):
        return errno.ENOMEM
    return errno.EIO


def describe(exc: BaseException) -> str:
    """One line for logs and xattrs, with no traceback."""
    if isinstance(exc, MegafsError):
        return str(exc)
    return "%s: %s" % (type(exc).__name__, exc)


def error_from_result(value: Any, context: str = "") -> MegaError | None:
    """A MegaError if ``value`` is a MEGA error result (negative int or ``{"err": n}``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value < 0:
        return MegaError(value, context)
    if isinstance(value, dict) and isinstance(value.get("err"), int) and value["err"] < 0 \
            and len(value) <= 3 and set(value) <= {"err", "u", "l"}:
        return MegaError(value["err"], context)
    return None
