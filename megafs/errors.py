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

# code: (name, meaning)
API_ERRORS: dict[int, tuple[str, str]] = {
    -1: ("EINTERNAL", "internal error"),
    -2: ("EARGS", "bad arguments"),
    -3: ("EAGAIN", "temporary congestion, retry"),
    -4: ("ERATELIMIT", "rate limited (on an upload URL: upload failed, restart it)"),
    -5: ("EFAILED", "permanent failure"),
    -6: ("ETOOMANY", "too many requests for this resource"),
    -7: ("ERANGE", "resource access out of range"),
    -8: ("EEXPIRED", "resource expired"),
    -9: ("ENOENT", "object not found"),
    -10: ("ECIRCULAR", "circular linkage"),
    -11: ("EACCESS", "access denied"),
    -12: ("EEXIST", "object already exists"),
    -13: ("EINCOMPLETE", "incomplete resource"),
    -14: ("EKEY", "cryptographic or integrity check failed"),
    -15: ("ESID", "bad or expired session id"),
    -16: ("EBLOCKED", "resource administratively blocked"),
    -17: ("EOVERQUOTA", "storage quota exceeded"),
    -18: ("ETEMPUNAVAIL", "resource temporarily unavailable"),
    -19: ("ETOOMANYCONNECTIONS", "too many connections on this resource"),
    -20: ("EWRITE", "write failed"),
    -21: ("EREAD", "read failed"),
    -22: ("EAPPKEY", "invalid application key"),
    -23: ("ESSL", "SSL verification failed"),
    -24: ("EGOINGOVERQUOTA", "not enough quota for this operation"),
    -25: ("EROLLEDBACK", "request rolled back"),
    -26: ("EMFAREQUIRED", "multi-factor authentication required"),
    -27: ("EMASTERONLY", "denied for business sub-users"),
    -28: ("EBUSINESSPASTDUE", "business account expired"),
    -29: ("EPAYWALL", "over-disk-quota paywall"),
    -30: ("ESUBUSERKEYMISSING", "business sub-user key missing"),
}


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


class Verdict(Enum):
    """What a caller does about an error: the one classification of MEGA codes."""

    TRANSIENT = "transient"      # nothing was applied; send the same request again later
    RELOGIN = "relogin"          # the session is gone: log in again, then resend
    NEW_URL = "new-url"          # a transfer URL is dead: ask for a new one and start over
    PERMANENT = "permanent"      # retrying cannot help without a change on the user's side


# Command channel (``/cs`` batches and their per-command results, ``sc`` polls).
_COMMAND_TRANSIENT = frozenset({ApiCode.EAGAIN, ApiCode.ERATELIMIT, ApiCode.ETEMPUNAVAIL,
                                ApiCode.ETOOMANYCONNECTIONS})
# Transfer servers (upload/download URLs): -4 there means "this upload failed, restart it"
# and -6 "too many IPs on this URL" (protocol reference §14.7; meganz/sdk DAEMON_EFAILED).
_TRANSFER_TRANSIENT = frozenset({ApiCode.EAGAIN, ApiCode.ETEMPUNAVAIL,
                                 ApiCode.ETOOMANYCONNECTIONS, ApiCode.EKEY})
_TRANSFER_NEW_URL = frozenset({ApiCode.ERATELIMIT, ApiCode.EFAILED, ApiCode.ETOOMANY,
                               ApiCode.ERANGE, ApiCode.EEXPIRED, ApiCode.ENOENT, ApiCode.ESID})


def classify(code: int, where: str = "command") -> Verdict:
    """The verdict for MEGA error ``code`` answered by the command channel (``where="command"``)
    or by a transfer server (``where="transfer"``)."""
    if where == "transfer":
        if code in _TRANSFER_TRANSIENT:
            return Verdict.TRANSIENT
        if code in _TRANSFER_NEW_URL:
            return Verdict.NEW_URL
        return Verdict.PERMANENT
    if code == ApiCode.ESID:
        return Verdict.RELOGIN
    if code in _COMMAND_TRANSIENT:
        return Verdict.TRANSIENT
    return Verdict.PERMANENT


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


_API_ERRNO = {
    -2: errno.EINVAL,
    -3: errno.EAGAIN,
    -4: errno.EAGAIN,
    -6: errno.EAGAIN,
    -7: errno.ERANGE,
    -8: errno.EIO,
    -9: errno.ENOENT,
    -10: errno.ELOOP,
    -11: errno.EACCES,
    -12: errno.EEXIST,
    -14: errno.EIO,
    -15: errno.EACCES,
    -16: errno.EACCES,
    -17: errno.EDQUOT,
    -18: errno.EAGAIN,
    -19: errno.EAGAIN,
    -24: errno.EDQUOT,
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
