"""Folder links (issue 25): their URL forms, and making and revoking one for a folder of the
account.

A folder link is ``https://mega.nz/folder/HANDLE#KEY``: the public handle the ``l`` command
gives the folder and its 16-byte share key (meganz/sdk src/megaclient.cpp ``publicLinkURL``,
``exportnode``; protocol reference §9).  Parsed forms: that one, with ``/file/H`` or
``/folder/H`` after the key (one item of the folder), the legacy ``#F!HANDLE!KEY`` (and
``#F!HANDLE!KEY!H``), on the hosts ``mega.nz``, ``mega.co.nz``, ``mega.app``, and a local
server's ``http://127.0.0.1:PORT/folder/HANDLE#KEY`` (``FolderLink.api`` is then that server).

Exporting, as the SDK does it (``MegaClient::exportnode``): a share key from ``secrets``, ``s2``
to the pseudo-user ``EXP`` with ``ok``/``ha`` and the ``cr`` keys of every node inside
(``sharekeys``), then ``l``.  Revoking: ``l`` with ``d:1``, then ``s2`` without ``r`` ("need to
first remove the link and then the share").  Never logs a link, a key or a fragment.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .. import crypto
from ..errors import ApiCode, LinkError, MegaError, ProtocolError, SessionError
from . import commands, sharekeys
from .commands import FetchResult, is_handle
from .links import LINK_HOST

if TYPE_CHECKING:
    from .client import MegaClient

log = logging.getLogger(__name__)

_B64 = "A-Za-z0-9_-"
_START = re.compile(r"(?:https?://(?:www\.)?(?:mega\.nz|mega\.co\.nz|mega\.app)(?=[/?#]|$)"
                    r"|mega:(?://)?"
                    r"|(?P<local>https?://(?:localhost|127(?:\.\d{1,3}){3}|\[::1\])"
                    r"(?::\d{1,5})?)(?=/folder/))", re.IGNORECASE)
_OPENERS = re.compile(r"^[\s<(\[{\"'*_~`‘“«]*$")
_TRAILING = re.compile(r"^[\s.,;:!?)\]}>\"'*_~`’”»…-]*$")
_PATH = re.compile(r"^/*folder/([%s]{8})/*$" % _B64)
_NEW = re.compile(r"^([%s]{22})(?:/(file|folder)/([%s]{8}))?(.*)$" % (_B64, _B64), re.DOTALL)
_LEGACY = re.compile(r"^F!([%s]{8})!([%s]{22})(?:[!?]([%s]{8}))?(.*)$" % (_B64, _B64, _B64),
                     re.DOTALL)
_FORMS = "https://mega.nz/folder/HANDLE#KEY or https://mega.nz/#F!HANDLE!KEY"


@dataclass(frozen=True)
class FolderLink:
    """A parsed folder link: public handle, 16-byte share key, maybe one item inside."""

    handle: str
    key: bytes
    file: str | None = None       # ``/file/H``: one file of the folder
    folder: str | None = None     # ``/folder/H``: one subfolder
    api: str | None = None        # a local server's link: its API base URL

    def url(self) -> str:
        return format_folder_link(self.handle, self.key, site=self.api)

    def __repr__(self) -> str:  # never show the key
        return "FolderLink(handle=%r)" % self.handle


def format_folder_link(public_handle: str, share_key: bytes, site: str | None = None) -> str:
    """``https://mega.nz/folder/H#K`` (with ``site``, a local server's base URL, ``SITE/folder/
    H#K``).  ProtocolError if ``public_handle`` is not 8 base64url characters."""
    if len(share_key) != 16:
        raise ValueError("a folder link needs the 16-byte share key")
    if not is_handle(public_handle):
        raise ProtocolError("the server's public handle is not 8 base64url characters")
    base = site.rstrip("/") if site else "https://%s" % LINK_HOST
    return "%s/folder/%s#%s" % (base, public_handle, crypto.b64encode(share_key))


def is_folder_link(text: str) -> bool:
    """Whether ``text`` looks like a folder link (to route it; ``parse_folder_link`` checks)."""
    lowered = unquote(text).lower() if isinstance(text, str) else ""
    return "/folder/" in lowered or "#f!" in lowered


def parse_folder_link(text: str) -> FolderLink:
    """Parse a folder link in any of the forms above; LinkError says what is wrong."""
    if not isinstance(text, str):
        raise LinkError("not a MEGA folder link: expected text")
    if "%23" in text or "%21" in text:
        text = unquote(text)
    start = _START.search(text)
    if start is None or not _OPENERS.match(text[:start.start()]):
        raise LinkError("not a MEGA folder link (expected %s)" % _FORMS)
    rest = text[start.end():].strip()
    path, _, fragment = rest.partition("#")
    path = path.split("?", 1)[0]
    item_kind, item = None, None
    new = _PATH.match(path)
    if new:
        handle = new.group(1)
        parts = _NEW.match(fragment)
        if parts is None:
            raise LinkError("the folder link has no key or a damaged one (expected 22 base64url "
                            "characters after the '#'; was the link cut off?)")
        key_text, item_kind, item, tail = parts.groups()
    else:
        legacy = _LEGACY.match(fragment) if path.strip("/") == "" else None
        if legacy is None:
            raise LinkError("not a MEGA folder link (expected %s)" % _FORMS)
        handle, key_text, item, tail = legacy.groups()
        item_kind = "folder" if item else None
    if not _TRAILING.match(tail):
        raise LinkError("the folder link has a damaged key or item (unexpected characters "
                        "after it)")
    local = start.group("local")
    return FolderLink(handle, crypto.b64decode(key_text),
                      file=item if item_kind == "file" else None,
                      folder=item if item_kind == "folder" else None,
                      api=local.lower() + "/" if local else None)


# --- exporting --------------------------------------------------------------------------------
@dataclass
class OwnerListing:
    """An account's ``f`` with what exporting needs: share keys (from ``ok``, authenticated by
    ``ha``) and the folders already shared with ``EXP``."""

    fetched: FetchResult
    share_keys: dict[str, bytes]
    exported: set[str]


def owner_listing(client: "MegaClient") -> OwnerListing:
    """``f`` of the client's account, with its share keys."""
    session = client.session
    if session is None:
        raise SessionError("exporting a folder needs a session (public client)")
    reply = client.transport.call(commands.fetch())
    fetched = commands.parse_fetch(reply)
    keys = sharekeys.share_keys_from(reply.get("ok"), session.master_key)
    exported = {s["h"] for s in (reply.get("s") or []) if isinstance(s, dict)
                and s.get("u") == sharekeys.EXPORTED and is_handle(s.get("h"))}
    return OwnerListing(fetched, keys, exported)


def _subtree(nodes: list[dict[str, Any]], root: str) -> list[dict[str, Any]]:
    """``root``'s node and every node below it, parents first, each once."""
    children: dict[str, list[dict[str, Any]]] = {}
    by_handle: dict[str, dict[str, Any]] = {}
    for node in nodes:
        if is_handle(node.get("h")):
            by_handle[node["h"]] = node
            children.setdefault(str(node.get("p", "")), []).append(node)
    out, seen, frontier = [by_handle[root]], {root}, [root]
    while frontier:
        nxt = []
        for h in frontier:
            for kid in children.get(h, []):
                if kid["h"] not in seen:
                    seen.add(kid["h"])
                    out.append(kid)
                    nxt.append(kid["h"])
        frontier = nxt
    return out


subtree_nodes = _subtree      # for api/inshares.py


def export_folder(client: "MegaClient", handle: str, listing: OwnerListing | None = None
                  ) -> str:
    """Export the account's folder ``handle``; return ``https://mega.nz/folder/PH#KEY``.

    The same link on repeated calls (the share key from ``ok``, the same public handle from
    ``l``).  ``listing``: a fresh ``owner_listing`` to use instead of asking ``f``.  Raises
    LinkError for a node that is not a folder of the account, MegaError for the server's
    refusals (EKEY if the folder holds a node whose key this account cannot read)."""
    listing = listing or owner_listing(client)
    session = client.session
    assert session is not None
    found = [n for n in listing.fetched.nodes if n.get("h") == handle]
    if not found or found[0].get("t") != 1:
        raise LinkError("only folders of this account get folder links")
    share_key = listing.share_keys.get(handle)
    if share_key is None or handle not in listing.exported:
        fresh = share_key is None
        share_key = share_key or crypto.random_key(16)
        cr = None
        if fresh:
            inside = _subtree(listing.fetched.nodes, handle)
            cr = sharekeys.make_cr([handle], {handle: share_key},
                                   [client.node_key(n) for n in inside],
                                   [n["h"] for n in inside])
        if client.share_folder(handle, share_key, cr) is not None:
            # shared meanwhile under another key (webclient api_setshare1): one more try
            raise MegaError(ApiCode.EKEY, "s2: the folder is already shared under another "
                                          "share key; list the account again and retry")
    public = client.export([handle])[0]
    if isinstance(public, Exception):
        raise public
    return format_folder_link(public, share_key)


def revoke_folder(client: "MegaClient", handle: str) -> None:
    """Remove the folder's link and its ``EXP`` share; a link already gone is fine
    (``MegaClient.unshare_folder``)."""
    client.unshare_folder(handle)
