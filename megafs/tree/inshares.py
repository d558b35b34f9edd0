"""Incoming shares in an account's node tree (issue 25): the share keys the tree decrypts their
nodes with, and where the mount shows them.

Every folder another account shares with this one appears under one folder of the Cloud Drive
root, ``Shared with me`` (a node of the tree with the handle ``SHARED``, which no MEGA handle
can be: ``~`` is not base64url), as ``OWNER - FOLDER``: the owner's email (its user handle
while the listing has not named it) and the folder's own name.  The share keys come from the
listing (``api.inshares.incoming_shares``: ``sk`` RSA-encrypted to this account) and from
``s2`` action packets (``k``), the owners' emails from ``f``'s ``u`` list and ``c`` packets
(meganz/sdk v4.0.0 src/megaclient.cpp ``sc_shares``, ``sc_contacts``/``readusers``).  An ``s2``
without ``r`` removes the share and its nodes (``mergenewshare``: "incoming share deleted -
remove tree").  No network I/O, never logs a key.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Union

from .. import crypto
from ..api import account_crypto as ac
from ..api.commands import is_handle
from ..api.inshares import LEVELS, IncomingShare, decrypt_share_key, incoming_shares, owner_emails
from .nodes import Node

log = logging.getLogger(__name__)

SHARED = "~shared~"               # the handle of the folder of incoming shares (never MEGA's)
SHARED_NAME = "Shared with me"


class Incoming:
    """The incoming shares of one account: share root handle -> ``IncomingShare``.

    ``private_key`` is the account's RSA key or a function that fetches it (``ug``, one
    round trip): a mount from the node-tree cache asks for it only when a share key
    encrypted to it arrives, not before its first listing (issue 23).  The function's errors
    (MegafsError) reach whoever needed the key; the next use asks again."""

    def __init__(self, private_key: Union[ac.RsaPrivateKey, Callable[[], ac.RsaPrivateKey]],
                 user_handle: str, master_key: bytes) -> None:
        self._key: ac.RsaPrivateKey | None = None
        self._fetch: Callable[[], ac.RsaPrivateKey] | None = None
        if callable(private_key):
            self._fetch = private_key
        else:
            self._key = private_key
        self._key_lock = threading.Lock()
        self.me = user_handle
        self.master_key = master_key
        self.shares: dict[str, IncomingShare] = {}
        self.emails: dict[str, str] = {}
        self.keys: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return "Incoming(%d shares)" % len(self.shares)

    @property
    def private_key(self) -> ac.RsaPrivateKey:
        """The account's RSA private key, fetched at the first use (see the class)."""
        with self._key_lock:
            if self._key is None:
                assert self._fetch is not None
                self._key = self._fetch()
            return self._key

    def _changed(self) -> None:
        self.keys = {root: share.key for root, share in self.shares.items()}

    def scan(self, nodes: list[Any], users: Any) -> list[Any]:
        """Take the shares and owners of an ``f`` listing (replacing the known ones); returns
        ``nodes``."""
        self.emails = owner_emails(users)
        listed = [n for n in nodes if isinstance(n, dict)]
        # the key (a round trip when not fetched yet) only for a listing with shares
        key = self.private_key if any("su" in n for n in listed) else None
        self.shares = incoming_shares(listed, users, self.me, self.master_key, key)
        self._changed()
        return nodes

    def contacts(self, users: Any) -> None:
        """A ``c`` packet's users: their emails name their shares."""
        self.emails.update(owner_emails(users))

    def packet(self, packet: dict) -> tuple[str, bool] | None:
        """An ``s2`` packet about a share with this account: (root, True) once its key is
        known, (root, False) when it was revoked; None for anything else (logged if
        malformed)."""
        root, owner = packet.get("n"), packet.get("o")
        if packet.get("u") != self.me or not is_handle(root) or not isinstance(owner, str) \
                or owner == self.me:
            return None
        assert isinstance(root, str)
        if packet.get("r") is None:
            if self.shares.pop(root, None) is None:
                return None
            self._changed()
            return root, False
        level, k = packet.get("r"), packet.get("k")
        try:
            if level not in LEVELS or isinstance(level, bool) or len(owner) != 11:
                raise ValueError("bad level or owner")
            if not isinstance(k, str):
                raise ValueError("no share key")
            if len(k) > 43:
                key = decrypt_share_key(self.private_key, k)
            else:
                key = crypto.unwrap_key(crypto.b64decode(k), self.master_key)
                if len(key) != 16:
                    raise ValueError("share key of %d bytes" % len(key))
        except ValueError as exc:
            log.warning("share %s from the change feed left out: %s", root, exc)
            return None
        self.shares[root] = IncomingShare(root, owner, self.emails.get(owner, ""), level, key)
        self._changed()
        return root, True

    def display_name(self, root: str, name: str | None) -> str:
        """``OWNER - FOLDER`` for share root ``root`` whose own name is ``name``."""
        share = self.shares.get(root)
        owner = share.owner if share else "?"
        who = self.emails.get(owner) or (share.email if share else "") or owner
        return "%s - %s" % (who, name if name else "undecryptable-" + root)

    def read_only(self, root: str) -> bool:
        share = self.shares.get(root)
        return share is None or share.level == 0


def place_share_root(incoming: Incoming | None, node: Node) -> bool:
    """Put a share root (a node with ``su``) under ``SHARED`` with its display name; False
    when its share is unknown (or incoming shares are not wanted): the node is left out."""
    if incoming is None or node.handle not in incoming.shares:
        return False
    node.parent = SHARED
    node.name = incoming.display_name(node.handle, node.name)
    node.ok = True
    return True
