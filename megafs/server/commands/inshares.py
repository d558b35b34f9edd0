"""Shares with full accounts (issue 25): ``uk`` (a user's public key), the sharee half of
``s2`` (a share key RSA-encrypted to the recipient), what the recipient's ``f`` lists, its
action packets, and ``g`` of a file inside a folder shared with the session's account.

Wire facts and their sources (the legacy RSA path, before the SDK's key manager; meganz/sdk at
tag v4.0.0):

* ``uk``: ``{"a":"uk","u":EMAIL_OR_HANDLE}`` -> ``{"u":HANDLE,"pubk":b64(MPI(n) MPI(e))}``;
  ``-9`` for an unknown user or one without a key pair (src/commands.cpp
  ``CommandPubKeyRequest``: "API_ENOENT = unregistered users or accounts without a public key
  yet").
* ``s2`` target ``{"u":HANDLE_OR_EMAIL,"r":0|1|2,"k":b64(MPI(RSA(sharekey + padding)))}``
  beside ``ok``/``ha`` (src/commands.cpp ``CommandSetShare``: ``u->pubk.encrypt`` of the
  16-byte share key, padded with random bytes to modulus bytes - 2 (src/crypto/cryptopp.cpp
  ``AsymmCipher::encrypt``)); the answer's ``u`` maps handles to emails
  (``CommandSetShare::procuserresult``).
* The recipient's ``f``: the shared folder and its subtree; the root carries ``su`` (owner),
  ``sk`` (the RSA-encrypted share key: over 43 characters means RSA, src/megaclient.cpp
  ``decryptkey``), ``r`` and ``sts``; each node's ``k`` is ``ROOT:b64(E_sharekey(nodekey))``
  (src/megaclient.cpp ``readnodes``, src/node.cpp ``applykey``); ``u`` lists the owner as a
  contact ``{"u","c":1,"m":email}`` (``readusers``).
* Action packets to the recipient: ``{"a":"s2","n","o","u","r","ts","k"}`` for a new share,
  followed by a ``t`` packet with its nodes ("nodes already in the new share, which are
  delivered next": src/megaclient.cpp ``sc_shares``); the same without ``r``/``k`` on
  revocation, after which the client drops the tree itself (``mergenewshare``: "incoming share
  deleted - remove tree").  The owner's later ``t``/``u``/``d`` packets for nodes inside are
  copied to the recipient with the ``ROOT:KEY`` entries only (``shares.emit_to_sharees``).

Guesses (DESIGN.md): a share with a registered user takes effect at once (the real service
makes a pending share and contact request for non-contacts); both sides then list each other in
``u`` as contacts.  The share root's ``p`` is the owner's parent handle, which the recipient
does not know.  A sharee writes new nodes (``p``) into a share at level 1 or 2 (a read-only
share answers ``-11``): they are the owner's nodes (its quota), their ``k`` is the node key
under the share key (stored as that share's ``ROOT:KEY`` entry only: the owner decrypts them
with its share key, as meganz/sdk src/node.cpp ``applykey`` falls back to share keys), and the
owner's sessions get the ``t`` packet; its ``a`` on a node inside such a share is applied
and sent to the owner too.  Access levels as the SDK checks them (``writable``): read/write
adds only, full access also renames, moves inside the owner's shares and deletes.
"""
from __future__ import annotations

import sqlite3
from typing import Any

from ... import crypto
from ...errors import ApiCode
from .. import rsa, userdb
from ..db import now
from .base import Ctx, Fail, arg_str, wire_node


def find_user(ctx: Ctx, who: str) -> sqlite3.Row | None:
    """A full account by email (any case) or by its 11-character user handle."""
    if "@" in who:
        return userdb.user_by_email(ctx.tx, who.strip().lower())
    return userdb.user_by_handle(ctx.tx, who)


def cmd_uk(ctx: Ctx, cmd: dict) -> Any:
    """The public key of a full account named by email or user handle."""
    ctx.user()
    user = find_user(ctx, arg_str(cmd, "u"))
    if user is None or not user["pubk"]:
        raise Fail(ApiCode.ENOENT, "no full account with a public key by that name")
    return {"u": user["uh"], "pubk": user["pubk"]}


def sharee(ctx: Ctx, target: dict, owner: str) -> sqlite3.Row:
    """The account an ``s2`` target names; with ``r`` its ``k`` must be an RSA ciphertext for
    that account's key (an MPI below its modulus), else ``-2``; an unknown user is ``-9``."""
    user = find_user(ctx, arg_str(target, "u"))
    if user is None:
        raise Fail(ApiCode.ENOENT, "no full account by that name (pending shares with "
                                   "unregistered users are not modelled)")
    if user["uh"] == owner:
        raise Fail(ApiCode.EARGS, "a folder cannot be shared with its owner")
    if target.get("r") is None:
        return user
    if not user["pubk"]:
        raise Fail(ApiCode.EARGS, "the sharee has no public key yet")
    k = arg_str(target, "k")
    try:
        raw = crypto.b64decode(k)
        n, _e = rsa.parse_public_key(user["pubk"])
    except ValueError:
        raise Fail(ApiCode.EARGS, "'k' of a sharee must be base64url") from None
    bits = int.from_bytes(raw[:2], "big") if len(raw) >= 2 else -1
    value = int.from_bytes(raw[2:], "big")
    if bits < 0 or len(raw) != 2 + (bits + 7) // 8 or not 0 < value < n:
        raise Fail(ApiCode.EARGS, "'k' of a sharee must be one RSA block for its public key")
    return user


def shared_nodes(ctx: Ctx, root: str, owner: str, sk: str, r: int, sts: int) -> list[dict]:
    """The nodes of the folder ``root`` shared with an account, as its ``f`` and ``t`` packets
    show them: keys ``ROOT:KEY`` under the share key ("" where ``cr`` gave none), the root
    with ``su``, ``sk``, ``r`` and ``sts``."""
    rows = ctx.tx.subtree(root)
    keys = ctx.tx.sharekeys_for([row["h"] for row in rows])
    nodes = []
    for row in rows:
        mine = dict(keys.get(row["h"], [])).get(root)
        node = wire_node(row)
        node["k"] = "%s:%s" % (root, mine) if mine else ""
        if row["h"] == root:
            node.update({"su": owner, "sk": sk, "r": r, "sts": sts})
        nodes.append(node)
    return nodes


def added(ctx: Ctx, cmd: dict, h: str, owner: str, user: sqlite3.Row, target: dict,
          new: bool) -> None:
    """Store the recipient's share key and tell the recipient: for a share new to it the
    owner as a contact (``c``), then ``s2``, then a ``t`` packet with the shared nodes."""
    k, r, ts = target["k"], target["r"], now()
    ctx.tx.set_sharee_key(h, user["uh"], k)
    owner_row = userdb.user_by_handle(ctx.tx, owner)
    if new and owner_row is not None:      # the owner as a contact (sc_contacts: readusers)
        ctx.tx.emit(user["uh"], {"a": "c", "u": [{"u": owner, "c": 1, "m": owner_row["email"]}],
                                 "ou": owner})
    ctx.tx.emit(user["uh"], {"a": "s2", "n": h, "o": owner, "u": user["uh"], "r": r,
                             "ts": ts, "k": k})
    if new:
        ctx.tx.emit(user["uh"], {"a": "t", "t": {"f": shared_nodes(ctx, h, owner, k, r, ts)},
                                 "ou": owner})


def revoked(ctx: Ctx, h: str, owner: str, user: sqlite3.Row) -> None:
    """Tell the recipient its share of ``h`` is gone (``s2`` without ``r``)."""
    ctx.tx.emit(user["uh"], {"a": "s2", "n": h, "o": owner, "u": user["uh"], "ts": now()})


def incoming_listing(ctx: Ctx, uh: str) -> list[dict]:
    """The nodes of every folder shared with ``uh`` for its ``f`` (each node once)."""
    out: list[dict] = []
    seen: set[str] = set()
    for share in ctx.tx.incoming_shares(uh):
        for node in shared_nodes(ctx, share["h"], share["uh"], share["k"], share["r"],
                                 share["ts"]):
            if node["h"] not in seen:
                seen.add(node["h"])
                out.append(node)
    return out


def contacts(ctx: Ctx, uh: str) -> list[dict]:
    """``u`` of ``f``: the account itself (``c`` 2) and the full accounts it shares with or
    that share with it (``c`` 1, visible contacts, with their email)."""
    out = [{"u": uh, "c": 2, "m": ""}]
    others = [s["uh"] for s in ctx.tx.incoming_shares(uh)]
    others += [s["u"] for s in ctx.tx.account_shares(uh) if len(s["u"]) == 11]
    for other in dict.fromkeys(others):
        user = userdb.user_by_handle(ctx.tx, other)
        if user is not None:
            out.append({"u": other, "c": 1, "m": user["email"]})
    return out


def readable_node(ctx: Ctx, h: str) -> sqlite3.Row | None:
    """Node ``h`` if it is the session's own or inside a folder shared with its account."""
    uh = ctx.user()
    row = ctx.tx.node(h)
    if row is None or row["uh"] == uh:
        return row
    for root in ctx.tx.share_roots_above(h):
        if any(s["u"] == uh for s in ctx.tx.shares_of(root)):
            return row
    return None


def share_of(ctx: Ctx, h: str, uh: str) -> str | None:
    """The root of the share with account ``uh`` that node ``h`` is inside of, or None."""
    for root in ctx.tx.share_roots_above(h):
        if any(s["u"] == uh for s in ctx.tx.shares_of(root)):
            return root
    return None


RDWR, FULL = 1, 2       # meganz/sdk include/mega/types.h accesslevel_t


def writable(ctx: Ctx, h: str | None, uh: str, need: int = RDWR) -> sqlite3.Row | None:
    """Node ``h`` of another account when it is inside a share with ``uh`` at level ``need``
    or above: adding nodes (``p``) needs read/write (1), changing or removing existing ones
    (``a``, ``m``, ``d``) full access (2), as the SDK's ``checkaccess`` asks (meganz/sdk
    include/mega/types.h: "RDWR - cannot rename or delete"; src/megaclient.cpp ``setattr``,
    ``checkmove``, ``unlink`` need ``FULL``); ``-11`` below it; None when it is not shared with
    ``uh``."""
    row = ctx.tx.node(h) if isinstance(h, str) else None
    if row is None:
        return None
    root = share_of(ctx, row["h"], uh)
    if root is None:
        return None
    level = [s["r"] for s in ctx.tx.shares_of(root) if s["u"] == uh][0]
    if level < need:
        raise Fail(ApiCode.EACCESS, "the folder is shared with this account read-only"
                   if level < RDWR else "changing or removing nodes of a shared folder "
                   "needs full access")
    return row


def changeable(ctx: Ctx, h: str, uh: str, root_ok: bool = False) -> sqlite3.Row:
    """Node ``h`` when ``uh`` may change (``a``), move or delete it: its own, or inside a
    share with ``uh`` at full access; the share root itself only with ``root_ok`` (``a``:
    ``setattr`` checks the share's level; a move of it is -11, its parent being the owner's:
    meganz/sdk ``checkmove`` condition 1; deleting it is leaving the share, not modelled);
    -9 for a node it cannot see."""
    row = ctx.tx.node(h, uh) or writable(ctx, h, uh, FULL)
    if row is None:
        raise Fail(ApiCode.ENOENT, "unknown node")
    if not root_ok and row["uh"] != uh and share_of(ctx, row["h"], uh) == row["h"]:
        raise Fail(ApiCode.EACCESS, "the root of a share is its owner's (leaving a share "
                                    "is not modelled)")
    return row


def same_tree(ctx: Ctx, row: sqlite3.Row, target: sqlite3.Row, uh: str) -> None:
    """A sharee's ``m``: source and target must be in the same tree (the account's own, or
    shares of the same owner), else -11: a move across a share boundary would need new keys
    (meganz/sdk src/megaclient.cpp ``checkmove`` condition 7; clients copy and delete)."""
    if row["uh"] != target["uh"]:
        raise Fail(ApiCode.EACCESS, "a move between the account's own folders and a shared "
                                    "folder (or shares of different owners) is not allowed")


def sharee_view(nodes: list[dict], root: str) -> list[dict]:
    """``nodes`` as a sharee of ``root`` sees them: each ``k`` reduced to its ``ROOT:KEY``."""
    out = []
    for node in nodes:
        entries = dict(part.split(":", 1) for part in node["k"].split("/") if ":" in part)
        out.append(dict(node, k="%s:%s" % (root, entries[root]) if root in entries else ""))
    return out
