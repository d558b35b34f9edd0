"""MEGA API commands: what each one sends and what its reply must look like.

One builder per command (a plain ``dict`` ready for ``Transport.batch``) and one parser per
reply: every reply is type-checked here before the client uses it, and an error result
becomes a ``MegaError`` (protocol reference §6-§10, legacy response format).  The builders
never send anything and the parsers never retry: the transport owns the wire and the retry
policy, ``MegaClient`` strings them together.  Keys are wrapped and attributes encrypted here
(with ``crypto``), but no key is ever logged or put in an exception message.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import chunks, crypto
from ..errors import (ApiCode, IntegrityError, MegaError, ProtocolError, error_from_result)
from .http import redact_url
from .xferquota import TransferQuotaExceeded, parse_time_left

if TYPE_CHECKING:
    from .upload import Uploaded

FOLDER_PLACEHOLDER = "xxxxxxxx"    # ``h`` of a new folder in ``p`` (later items may use it)
# Node and public handles: 6 bytes as 8 base64url characters (protocol reference §0; meganz/sdk
# ``MegaClient::NODEHANDLE``/``PUBLICHANDLE`` = 6).  Anything else from a server is refused: a
# public handle goes into links printed for people (issue 20, item 6: a handle holding a
# newline printed an attacker's URL carrying the file key).
_HANDLE = re.compile(r"[A-Za-z0-9_-]{8}")


def is_handle(value: Any) -> bool:
    """Whether ``value`` has the form of a MEGA node or public handle (8 base64url chars)."""
    return isinstance(value, str) and _HANDLE.fullmatch(value) is not None


# --- results -------------------------------------------------------------------------------
@dataclass
class PutItem:
    """One finished upload to turn into a node under ``parent`` with plaintext ``attrs``."""

    parent: str
    uploaded: "Uploaded"
    attrs: dict[str, Any]
    replaces: str | None = None


@dataclass
class FetchResult:
    """The whole tree from ``f``: raw node objects, the ``sn`` to poll from, public handles."""

    nodes: list[dict[str, Any]]
    sn: str
    public: dict[str, str]      # node handle -> public handle
    # the account's outgoing shares, as sent (checked by their users): ``ok`` share keys
    # ``[{h, k, ha}]`` (``api.sharekeys.share_keys_from``) and ``s`` sharees ``[{h, u, r}]``
    ok: list[Any] = field(default_factory=list)
    shares: list[Any] = field(default_factory=list)
    users: list[Any] = field(default_factory=list)   # ``u``: contacts (owners of shares)

    def roots(self) -> dict[int, str]:
        """Root handles by type: 2 Cloud Drive, 3 Inbox/Vault, 4 Rubbish bin."""
        return {n["t"]: n["h"] for n in self.nodes if n.get("t") in (2, 3, 4)}


@dataclass
class DownloadInfo:
    """What ``g`` said: the URL, the size and the attributes (decrypted when a key was given).

    ``at`` keeps the encrypted attribute blob (base64url) for callers that hold the key.
    """

    url: str
    size: int
    attrs: dict[str, Any] = field(default_factory=dict)
    at: str = ""

    def __repr__(self) -> str:  # the URL is a capability
        return "DownloadInfo(url=%r, size=%d)" % (redact_url(self.url), self.size)


# --- listing --------------------------------------------------------------------------------
def fetch() -> dict[str, Any]:
    """``f``: the whole tree (``c:1``, ``r:1`` as every client sends them, §6)."""
    return {"a": "f", "c": 1, "r": 1}


def parse_fetch(reply: Any) -> FetchResult:
    if not isinstance(reply, dict):
        raise ProtocolError("f: expected an object, got %s" % type(reply).__name__)
    nodes, sn = reply.get("f"), reply.get("sn")
    if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
        raise ProtocolError("f: node list missing or malformed")
    if not isinstance(sn, str) or not sn:
        raise ProtocolError("f: missing sn")
    public: dict[str, str] = {}
    for entry in reply.get("ph") or []:
        if isinstance(entry, dict) and is_handle(entry.get("h")) and is_handle(entry.get("ph")):
            public[entry["h"]] = entry["ph"]
    ok, shares, users = reply.get("ok"), reply.get("s"), reply.get("u")
    return FetchResult(nodes, sn, public, ok if isinstance(ok, list) else [],
                       shares if isinstance(shares, list) else [],
                       users if isinstance(users, list) else [])


# --- keys ------------------------------------------------------------------------------------
def unwrap_node_key(raw: Any, user_handle: str, master_key: bytes) -> bytes:
    """A node's key (16 bytes folder, 32 bytes file) from its ``k``: the ``uh:key`` entry for
    ``user_handle`` (or a bare key), unwrapped with ``master_key`` (§6)."""
    value = raw.get("k") if isinstance(raw, dict) else None
    if not isinstance(value, str) or not value:
        raise ProtocolError("node has no key")
    wrapped = None
    for part in value.split("/"):
        owner, sep, blob = part.partition(":")
        if not sep:
            owner, blob = user_handle, owner
        if owner == user_handle:
            wrapped = blob
            break
    if wrapped is None:
        raise MegaError(ApiCode.EKEY, "node key is not for this account")
    try:
        data = crypto.b64decode(wrapped)
    except ValueError:
        raise ProtocolError("node key is not base64url") from None
    if len(data) not in (16, 32):
        raise ProtocolError("node key has %d bytes, not 16 or 32" % len(data))
    return crypto.unwrap_key(data, master_key)


# --- new nodes: p -----------------------------------------------------------------------------
def file_node(uploaded: "Uploaded", attrs: dict[str, Any], master_key: bytes) -> dict[str, Any]:
    """A new file for ``p``: the completion token, attributes and key (§7.6)."""
    packed = uploaded.key.pack()
    return {"h": uploaded.token, "t": 0,
            "a": crypto.b64encode(crypto.encrypt_attr(attrs, packed)),
            "k": crypto.b64encode(crypto.wrap_key(packed, master_key))}


def folder_node(attrs: dict[str, Any], master_key: bytes, key: bytes | None = None
                ) -> dict[str, Any]:
    """A new folder for ``p`` with its 16-byte key (a fresh one by default, §10)."""
    key = key or crypto.random_key(16)
    return {"h": FOLDER_PLACEHOLDER, "t": 1,
            "a": crypto.b64encode(crypto.encrypt_attr(attrs, key)),
            "k": crypto.b64encode(crypto.wrap_key(key, master_key))}


def put_nodes(parent: str, nodes: list[dict[str, Any]], request_id: str,
              cr: list[Any] | None = None) -> dict[str, Any]:
    """``p``; ``cr``: the new nodes' keys under the share keys of the shared folders
    ``parent`` is in (``api.sharekeys.cr_for_put``), None outside any."""
    command: dict[str, Any] = {"a": "p", "t": parent, "i": request_id, "n": nodes}
    if cr is not None:
        command["cr"] = cr
    return command


def parse_put(reply: Any, count: int) -> list[Any]:
    """The ``count`` new nodes of a ``p`` reply, or its error repeated for each slot."""
    if isinstance(reply, MegaError):
        return [reply] * count
    nodes = reply.get("f") if isinstance(reply, dict) else None
    if not isinstance(nodes, list) or len(nodes) != count \
            or not all(isinstance(n, dict) and is_handle(n.get("h")) for n in nodes):
        return [ProtocolError("p: expected %d new node(s) in the reply" % count)] * count
    return nodes


# --- changes to existing nodes ----------------------------------------------------------------
def set_attrs(handle: str, node_key: bytes, attrs: dict[str, Any],
              request_id: str) -> dict[str, Any]:
    """``a``: ``at`` replaces every attribute, so ``attrs`` must hold them all (§10)."""
    return {"a": "a", "n": handle, "at": crypto.b64encode(crypto.encrypt_attr(attrs, node_key)),
            "i": request_id}


def move(handle: str, new_parent: str, request_id: str, cr: list[Any] | None = None
         ) -> dict[str, Any]:
    """``m``; ``cr`` as for ``put_nodes`` (``api.sharekeys.cr_for_move``)."""
    command: dict[str, Any] = {"a": "m", "n": handle, "t": new_parent, "i": request_id}
    if cr is not None:
        command["cr"] = cr
    return command


def delete(handle: str, request_id: str) -> dict[str, Any]:
    return {"a": "d", "n": handle, "i": request_id}


# --- links: l -----------------------------------------------------------------------------------
def export(handle: str, request_id: str) -> dict[str, Any]:
    """``l``: create or get the node's public handle (the same one on every call, §9)."""
    return {"a": "l", "n": handle, "i": request_id}


def unexport(handle: str, request_id: str) -> dict[str, Any]:
    """``l`` with ``d:1``: remove the node's public link (§9)."""
    return {"a": "l", "n": handle, "d": 1, "i": request_id}


def parse_export(reply: Any) -> str | MegaError | ProtocolError:
    if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], str):
        reply = reply[1]  # v3 form [st, ph]
    if isinstance(reply, MegaError) or is_handle(reply):
        return reply
    return ProtocolError("l: the server's answer is not a public handle (8 base64url "
                         "characters)")


def check_done(reply: Any, name: str) -> None:
    """A command that answers ``0`` (legacy) or a sequence-tag string (v3)."""
    if isinstance(reply, MegaError):
        raise reply
    if reply == 0 or isinstance(reply, str):
        return
    raise ProtocolError("%s: unexpected reply of type %s" % (name, type(reply).__name__))


# --- quota: uq ---------------------------------------------------------------------------------
def quota() -> dict[str, Any]:
    return {"a": "uq", "strg": 1, "xfer": 1}


def parse_quota(reply: Any) -> tuple[int, int]:
    """(used, total) storage bytes."""
    if not isinstance(reply, dict):
        raise ProtocolError("uq: expected an object")
    used, total = reply.get("cstrg"), reply.get("mstrg")
    if not isinstance(used, int) or not isinstance(total, int):
        raise ProtocolError("uq: cstrg/mstrg missing")
    return used, total


# --- transfers: u and g --------------------------------------------------------------------------
def upload_url(size: int, https: bool) -> dict[str, Any]:
    """``u`` with ``v:2`` (36-byte binary completion tokens); ``ssl:2`` asks for an https
    URL when the API itself is https (§7.1)."""
    command: dict[str, Any] = {"a": "u", "s": size, "v": 2}
    if https:
        command["ssl"] = 2
    return command


def parse_upload_url(reply: Any) -> str:
    if isinstance(reply, MegaError):
        raise reply
    url = reply.get("p") if isinstance(reply, dict) else None
    if not isinstance(url, str):
        raise ProtocolError("u: expected an object with an upload URL")
    if not url.startswith(("http://", "https://")):
        raise ProtocolError("u: upload URL is not http(s)")
    return url


def download(*, handle: str | None = None, public: str | None = None,
             https: bool = False) -> dict[str, Any]:
    """``g`` with ``g:1`` (a download URL) for a node or a public handle (§8)."""
    if (handle is None) == (public is None):
        raise ValueError("give exactly one of handle and public")
    command: dict[str, Any] = {"a": "g", "g": 1}
    if handle is not None:
        command["n"] = handle
    else:
        command["p"] = public
    if https:
        command["ssl"] = 2
    return command


def parse_g_reply(reply: Any, key: bytes | None = None) -> DownloadInfo:
    """Validate a ``g`` reply; raise MegaError for ``e`` / ``d`` and ProtocolError for junk;
    ``-17`` (the transfer quota, with ``tl`` seconds or none) is ``TransferQuotaExceeded``.

    With ``key`` (the 32-byte node key) the attributes are decrypted; a key that does not
    decrypt them is an ``IntegrityError`` (a wrong or damaged link).
    """
    error = reply if isinstance(reply, MegaError) else error_from_result(reply, "g")
    if error is not None:
        if error.code == ApiCode.EOVERQUOTA:        # no time given (meganz/sdk commands.cpp)
            raise TransferQuotaExceeded(parse_time_left(None), "g, the download request")
        raise error
    if not isinstance(reply, dict):
        raise ProtocolError("g: expected an object, got %s" % type(reply).__name__)
    if "e" in reply:
        code = reply.get("e")
        if code == ApiCode.EOVERQUOTA and not isinstance(code, bool):
            raise TransferQuotaExceeded(parse_time_left(reply.get("tl")),
                                        "g, the download request")
        if isinstance(code, int) and code < 0:
            raise MegaError(code, "g")
        raise ProtocolError("g: bad error field")
    if reply.get("d"):
        raise MegaError(ApiCode.EBLOCKED, "g: file is blocked")
    url, size = reply.get("g"), reply.get("s")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ProtocolError("g: no download URL in the reply")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError("g: missing or bad size")
    if not chunks.storable(size):
        raise ProtocolError("g: the server claims a size of %d bytes, more than MEGA stores "
                            "(2^53 - 1)" % size)
    at = reply.get("at")
    if not isinstance(at, str):
        at = ""
    attrs: dict[str, Any] = {}
    if key is not None and at:
        try:
            attrs = crypto.decrypt_attr(crypto.b64decode(at), key)
        except (ValueError, crypto.AttributeError_):
            raise IntegrityError("the key does not decrypt the file's attributes "
                                 "(wrong or damaged link key)") from None
    return DownloadInfo(url, size, attrs, at)
