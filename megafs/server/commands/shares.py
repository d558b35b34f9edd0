"""Shares and folder links (issue 25): ``s2`` (share a folder with the public pseudo-user
``EXP`` of folder links, or with full accounts: ``inshares.py``), the ``cr`` node keys under
share keys that ``s2``, ``p`` and ``m`` carry, and the commands of a folder-link session
(``/cs?n=PUBLIC_HANDLE``): ``f`` of the exported subtree with node keys under the share key,
``g`` of a file inside it.

Wire facts and their sources:

* ``s2``: ``{"a":"s2","n":FOLDER,"s":[{"u":"EXP","r":0}],"ok":b64(E_mk(sharekey)),
  "ha":b64(E_mk(h+h)),"cr":[...],"i":..}``; a target without ``r`` removes that share
  (meganz/sdk src/commands.cpp ``CommandSetShare``; meganz/webclient js/crypto.js
  ``api_setshare1``, ``crypto_handleauth``; odwyersoftware/mega.py ``export``).  Success is an
  object (the web client resends anything else); ``{"ok": ...}`` is a share-key clash: the
  folder is already shared under another key (webclient ``api_setshare1`` retries with it, the
  SDK reports ``API_EKEY``).  Removing the last ``EXP`` share removes the folder's link too
  (meganz/sdk src/megaclient.cpp ``exportnode``: "deletion of outgoing share also deletes the
  link automatically").
* ``cr`` = ``[[share roots], [item handles], [share index, item index, b64 key, ...]]``
  (meganz/sdk src/sharenodekeys.cpp ``ShareNodeKeys::get``).  ``s2`` and ``m`` name the items
  (node handles); ``p`` leaves the item list empty (SDK ``skiphandles``) or puts the upload token
  there (webclient ``api_completeupload2``): either way item ``i`` is the ``i``-th node of ``n``.
* Action packets: ``{"a":"s2","n","o","u":"EXP","r","ts","ok","ha"}`` on a new share, the same
  without ``r`` (plus ``okd:1`` once no sharee is left) on its removal (the fields
  meganz/sdk src/megaclient.cpp ``sc_shares`` reads; which of ``s``/``s2`` the service sends for a
  removal is a guess: the SDK treats both alike).
* Folder-link sessions: ``n=`` on ``/cs`` and ``sc`` (meganz/sdk src/megaclient.cpp
  ``getAuthURI``); the node keys are ``ROOT:b64(E_sharekey(nodekey))`` and the client decrypts
  them with the link's key (meganz/sdk src/node.cpp ``applykey``: in a folder link ``me`` is the
  root handle).  A public handle that names no exported folder answers ``-9`` (ENOENT, what
  megadl users report for removed folder links, e.g. hare1039/anime-updater ``trace-list.sh``);
  every command but ``f`` and ``g`` answers ``-11``.  Their ``sc`` feed carries the owner's
  ``t``, ``u`` and ``d`` packets for nodes inside the folder (``t`` with the link's keys), so a
  viewer follows the owner's changes; which packets the real feed of a folder link holds is a
  guess.

Guess (DESIGN.md): a ``p``/``m`` into a shared folder, or an ``s2`` that creates a share, whose
``cr`` lacks a key that a node needs for an enclosing share is refused with ``-14`` (EKEY),
where the real service accepts it and leaves the node unreadable to the sharees.
"""
from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from ... import crypto
from ...errors import ApiCode
from ..db import FILE, FOLDER, encode_sn, now
from .base import Ctx, Fail, arg_b64, arg_str, not_root, origin, own_node, wire_node
from .inshares import added, revoked, sharee

log = logging.getLogger(__name__)

EXPORTED = "EXP"          # the public pseudo-user of folder links (meganz/sdk EXPORTEDLINK)
FEED = "EXP:"             # + root handle: a folder link's packet log (never an account's uh)
ACCESS_LEVELS = (0, 1, 2)  # read-only, read/write, full (meganz/sdk accesslevel_t)


@dataclass
class Cr:
    """A parsed ``cr``: keys by (share root, item index), and the item handles if named."""

    keys: dict[tuple[str, int], str] = field(default_factory=dict)
    items: list[str] = field(default_factory=list)


def parse_cr(cmd: dict) -> Cr:
    """The command's ``cr`` (an empty ``Cr`` without one); malformed input is ``-2``."""
    cr = cmd.get("cr")
    if cr is None:
        return Cr()
    if not isinstance(cr, list) or len(cr) != 3 or not all(isinstance(x, list) for x in cr):
        raise Fail(ApiCode.EARGS, "'cr' must be [share handles, item handles, keys]")
    roots, items, flat = cr
    if not all(isinstance(h, str) for h in roots + items):
        raise Fail(ApiCode.EARGS, "'cr' handles must be strings")
    if len(flat) % 3:
        raise Fail(ApiCode.EARGS, "'cr' keys must come in (share, item, key) triples")
    out = Cr(items=list(items))
    for i in range(0, len(flat), 3):
        si, ii, key = flat[i:i + 3]
        if not isinstance(si, int) or isinstance(si, bool) or not 0 <= si < len(roots):
            raise Fail(ApiCode.EARGS, "'cr' names a share index out of range")
        if not isinstance(ii, int) or isinstance(ii, bool) or ii < 0 or ii > 1 << 30:
            raise Fail(ApiCode.EARGS, "'cr' names a bad item index")
        arg_b64({"k": key}, "k", lengths=(16, 32))
        out.keys[(roots[si], ii)] = key
    return out


def take_keys(cr: Cr, index: int, handle: str, ntype: int, needed: list[str],
              have: set[str]) -> list[tuple[str, str, str]]:
    """The (node, share root, key) rows ``cr`` gives item ``index`` (node ``handle`` of type
    ``ntype``); ``-14`` if a share root in ``needed`` (the shares the node is inside) has no key
    for it, neither in ``cr`` nor already stored (``have``).  Keys for other shares are
    ignored, as the SDK sends all it knows (``includeParentChain``)."""
    rows = []
    length = 32 if ntype == FILE else 16
    for root in needed:
        key = cr.keys.get((root, index))
        if key is None:
            if root in have:
                continue
            raise Fail(ApiCode.EKEY, "'cr' has no key for node %s under the share key of "
                       "shared folder %s: the sharees could not read it" % (handle, root))
        if len(crypto.b64decode(key)) != length:
            raise Fail(ApiCode.EARGS, "'cr' key for node %s has the wrong length" % handle)
        rows.append((handle, root, key))
    return rows


def item_index(cr: Cr, handle: str, fallback: int) -> int:
    """Where ``handle`` sits in ``cr``'s items (``fallback`` when the items are not named)."""
    if not cr.items:
        return fallback
    try:
        return cr.items.index(handle)
    except ValueError:
        return -1


def check_subtree(ctx: Ctx, cr: Cr, rows: list[sqlite3.Row], needed: list[str]) -> None:
    """``m`` and ``s2``: every node of ``rows`` needs a key for each share in ``needed``;
    stores the keys ``cr`` gives."""
    if not needed:
        return
    handles = [r["h"] for r in rows]
    known = set(handles)
    if any(h not in known for h in cr.items):
        raise Fail(ApiCode.EARGS, "'cr' names a node outside the subtree")
    have = ctx.tx.sharekeys_for(handles)
    store: list[tuple[str, str, str]] = []
    for pos, r in enumerate(rows):
        store += take_keys(cr, item_index(cr, r["h"], pos), r["h"], r["t"], needed,
                           {root for root, _ in have.get(r["h"], [])})
    ctx.tx.add_sharekeys(store)


# --------------------------------------------------------------------------------------------
def cmd_s2(ctx: Ctx, cmd: dict) -> Any:
    """Share a folder with ``EXP`` (a folder link's share) or with full accounts (by email or
    user handle, the share key RSA-encrypted to each in its target's ``k``: ``inshares.py``);
    a target without ``r`` stops sharing with it."""
    uh = ctx.user()
    row = own_node(ctx, cmd)
    not_root(row)
    if row["t"] != FOLDER:
        raise Fail(ApiCode.EARGS, "only folders can be shared")
    targets = cmd.get("s")
    if not isinstance(targets, list) or not targets or len(targets) > 100 \
            or not all(isinstance(t, dict) for t in targets):
        raise Fail(ApiCode.EARGS, "'s' must be a non-empty array of {u, r} objects")
    users: list[sqlite3.Row | None] = []
    for target in targets:
        r = target.get("r")
        if r is not None and (r not in ACCESS_LEVELS or isinstance(r, bool)):
            raise Fail(ApiCode.EARGS, "'r' must be 0, 1 or 2")
        users.append(None if arg_str(target, "u") == EXPORTED else sharee(ctx, target, uh))
    existing = ctx.tx.shares_of(row["h"])
    ok = ha = ""
    if any(t.get("r") is not None for t in targets):
        ok = arg_b64(cmd, "ok", lengths=(16,))
        ha = arg_b64(cmd, "ha", lengths=(16,))
        if existing and existing[0]["ok"] != ok:
            log.info("s2: %s is shared under another key; answering its ok", row["h"])
            return {"ok": existing[0]["ok"]}
        if not existing:
            check_subtree(ctx, parse_cr(cmd), ctx.tx.subtree(row["h"]), [row["h"]])
    for target, user in zip(targets, users):
        name = EXPORTED if user is None else user["uh"]
        packet: dict[str, Any] = {"a": "s2", "n": row["h"], "o": uh, "u": name}
        if target.get("r") is not None:
            new = not any(s["u"] == name for s in existing)
            ctx.tx.set_share(h=row["h"], u=name, uh=uh, ok=ok, ha=ha, r=target["r"])
            if user is not None:
                added(ctx, cmd, row["h"], uh, user, target, new)
            packet.update({"r": target["r"], "ts": now(), "ok": ok, "ha": ha})
        else:
            if not ctx.tx.drop_share(row["h"], name):
                raise Fail(ApiCode.ENOENT, "the folder is not shared with %s" % name)
            if user is None:
                _drop_link(ctx, cmd, row["h"], uh)
                # wakes the link's waiting polls: their next one answers -9 at once (a guess)
                ctx.tx.emit(link_feed(row["h"]), {"a": "s2", "n": row["h"], "u": EXPORTED})
            else:
                revoked(ctx, row["h"], uh, user)
            if not ctx.tx.shares_of(row["h"]):
                packet["okd"] = 1
        ctx.tx.emit(uh, origin(cmd, packet))
    return {"r": [0] * len(targets),
            "u": [{"u": u["uh"], "m": u["email"]} for u in users if u is not None]}


def _drop_link(ctx: Ctx, cmd: dict, h: str, uh: str) -> None:
    public = ctx.tx.public_of(h)
    if public is not None:
        ctx.tx.delete_public(h)
        ctx.tx.emit(uh, origin(cmd, {"a": "ph", "h": h, "ph": public["ph"], "d": 1,
                                     "ts": now()}))


def owner_shares(ctx: Ctx, uh: str) -> tuple[list[dict], list[dict]]:
    """``ok`` (share keys under the master key, one per shared folder) and ``s`` (sharees)
    of an account's ``f`` (protocol reference §6)."""
    ok: dict[str, dict] = {}
    sharees = []
    for r in ctx.tx.account_shares(uh):
        ok.setdefault(r["h"], {"h": r["h"], "k": r["ok"], "ha": r["ha"]})
        sharees.append({"h": r["h"], "u": r["u"], "r": r["r"], "ts": r["ts"]})
    return list(ok.values()), sharees


# --- the change feed of sharees: folder links and accounts -----------------------------------
def link_feed(root: str) -> str:
    """The packet log of an exported folder's link sessions (beside the accounts' logs)."""
    return FEED + root


def shared_roots(ctx: Ctx, h: str) -> list[str]:
    """The shared folders (with ``EXP`` or accounts) that node ``h`` is or is inside of (none
    at once for an account that shares nothing)."""
    if not ctx.tx.account_shares(ctx.user()):
        return []
    return ctx.tx.share_roots_above(h)


def sharee_feeds(ctx: Ctx, roots: list[str] | set[str]) -> list[tuple[str, str]]:
    """(share root, packet log) of every sharee of ``roots``: a folder link's feed for
    ``EXP``, the account's own log for a full account."""
    return [(root, link_feed(root) if s["u"] == EXPORTED else s["u"])
            for root in roots for s in ctx.tx.shares_of(root)]


def emit_to_feeds(ctx: Ctx, feeds: list[tuple[str, str]], packet: dict) -> None:
    """Copy an owner's ``t``/``u``/``d`` packet to sharees (``sharee_feeds``): without the
    owner's request id, and a ``t`` packet with only the nodes that have a key under that
    share's key, each ``k`` reduced to that ``ROOT:KEY`` entry (what the sharee's ``f``
    shows)."""
    for root, feed in feeds:
        copy = {k: v for k, v in packet.items() if k != "i"}
        if packet.get("a") == "t":
            nodes = []
            for node in packet["t"]["f"]:
                entries = dict(part.split(":", 1) for part in node["k"].split("/")
                               if ":" in part)
                if root in entries:
                    nodes.append(dict(node, k="%s:%s" % (root, entries[root])))
            if not nodes:
                continue
            copy["t"] = {"f": nodes}
        ctx.tx.emit(feed, copy)


def emit_to_sharees(ctx: Ctx, roots: list[str] | set[str], packet: dict) -> None:
    """``emit_to_feeds`` to every sharee of ``roots``."""
    emit_to_feeds(ctx, sharee_feeds(ctx, roots), packet)


# --- folder-link sessions (n=) -----------------------------------------------------------------
def _exported_root(ctx: Ctx) -> sqlite3.Row:
    assert ctx.folder is not None
    root = ctx.tx.exported_folder(ctx.folder)
    if root is None:
        raise Fail(ApiCode.ENOENT, "no folder link with this public handle (never made, "
                                   "or revoked)")
    return root


def folder_f(ctx: Ctx, cmd: dict) -> Any:
    """``f`` in a folder-link session: the exported folder and everything below it, each node
    key ``ROOT:KEY`` under the share key (a node without one has ``k`` "")."""
    root = _exported_root(ctx)
    rows = ctx.tx.subtree(root["h"])
    keys = ctx.tx.sharekeys_for([r["h"] for r in rows])
    nodes = []
    for r in rows:
        mine = dict(keys.get(r["h"], [])).get(root["h"])
        node = wire_node(r)
        node["k"] = "%s:%s" % (root["h"], mine) if mine else ""
        nodes.append(node)
    return {"f": nodes, "ok": [], "s": [], "u": [], "ph": [],
            "sn": encode_sn(ctx.tx.current_seq())}


def folder_node(ctx: Ctx, cmd: dict) -> sqlite3.Row:
    """The node ``n`` of a ``g`` in a folder-link session: inside the exported folder, else
    ``-9`` (the session cannot know other nodes)."""
    root = _exported_root(ctx)
    h = arg_str(cmd, "n")
    row = ctx.tx.node(h, root["uh"])
    current, seen = row, set()
    while current is not None and current["h"] != root["h"] and current["h"] not in seen:
        seen.add(current["h"])
        current = ctx.tx.node(current["p"])
    if row is None or current is None or current["h"] != root["h"]:
        raise Fail(ApiCode.ENOENT, "no such node in this folder link")
    return row
