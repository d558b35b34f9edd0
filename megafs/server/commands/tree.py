"""Node tree commands: ``f`` (the whole tree, or a big account's snapshot), ``p`` (new files
and folders), ``a`` (attributes), ``m`` (move) and ``d`` (delete).  Each emits the action
packets other sessions see.  ``p`` and ``m`` into a shared folder must carry the ``cr`` keys
its sharees need (``shares.py``), and ``f`` lists the account's share keys (``ok``, ``s``).

``p`` into a folder that was deleted meanwhile puts the new nodes in the Rubbish Bin, as the
real service does (protocol reference §7.6, from meganz/sdk src/commands.cpp; issue 11); the
policy ``deleted_target: "enoent"`` restores the older answer ``-9``.  A target handle that
never was a folder of this account is ``-9`` either way.
"""
from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

from ...errors import ApiCode
from ..db import CONTAINER_TYPES, FILE, FOLDER, encode_sn
from .base import (MAX_ATTR_CHARS, Ctx, Fail, arg_b64, arg_int, arg_str, completion_bytes,
                   not_root, opt_str, origin, wire_node)
from .inshares import (changeable, contacts, incoming_listing, same_tree, share_of,
                       sharee_view, writable)
from .shares import (FEED, check_subtree, emit_to_feeds, emit_to_sharees, owner_shares,
                     parse_cr, sharee_feeds, shared_roots, take_keys)

log = logging.getLogger(__name__)


def cmd_f(ctx: Ctx, cmd: dict) -> Any:
    """The account's tree.  An account of more than ``snapshot_over`` nodes (policy; 0 = off)
    gets the snapshot kept from an earlier ``f`` and that snapshot's ``sn``, so the client must
    apply the action packets since with ``sc``, as the real service answers big accounts
    (rclone/rclone#2366, quoting MEGA).  A snapshot is kept while every packet since it is
    still in the account's log (else a client could not catch up: a new one is taken)."""
    uh = ctx.user()
    over = ctx.policy.snapshot_over
    big = over > 0 and ctx.tx.count_nodes(uh) > over
    kept = ctx.tx.snapshot(uh) if big else None
    if kept is not None and kept[0] >= ctx.tx.packet_floor(uh):
        seq, body = kept
        log.debug("f: the snapshot of %s as of sn %s", uh, encode_sn(seq))
    else:
        seq = ctx.tx.current_seq()
        rows = ctx.tx.account_nodes(uh)
        shared = ctx.tx.sharekeys_for([r["h"] for r in rows]) if ctx.tx.account_shares(uh) \
            else {}
        body = {"f": [wire_node(r, shared.get(r["h"])) for r in rows],
                "ph": [{"h": r["h"], "ph": r["ph"], "ts": r["ts"]}
                       for r in ctx.tx.public_handles(uh)]}
        if over > 0:
            ctx.tx.keep_snapshot(uh, seq, body if big else None)
    ok, sharees = owner_shares(ctx, uh)
    return {"f": body["f"] + incoming_listing(ctx, uh), "ok": ok, "s": sharees,
            "u": contacts(ctx, uh), "ph": body["ph"], "sn": encode_sn(seq)}


@dataclass
class _NewNode:
    t: int
    a: str
    k: str
    parent_ref: str | None
    placeholder: str | None
    size: int | None = None
    blob: str | None = None
    token: bytes | None = None


def _container(ctx: Ctx, h: str | None, what: str) -> sqlite3.Row:
    """The folder ``h`` names, or the Rubbish Bin if it was deleted (policy permitting); a
    folder inside a share with this account at level 1 or 2 too (``inshares.writable``)."""
    uh = ctx.user()
    row = ctx.tx.node(h, uh) or writable(ctx, h, uh)
    if row is None:
        if ctx.policy.deleted_target == "rubbish" and ctx.tx.was_deleted(h, uh):
            log.info("p: %s %s was deleted; the new node goes to the Rubbish Bin", what, h)
            return ctx.tx.rubbish_bin(uh)
        raise Fail(ApiCode.ENOENT, "unknown %s" % what)
    if row["t"] not in CONTAINER_TYPES:
        raise Fail(ApiCode.EARGS, "%s is not a folder" % what)
    return row


def _plan(ctx: Ctx, item: Any, tokens: set[bytes]) -> _NewNode:
    uh = ctx.user()
    if not isinstance(item, dict):
        raise Fail(ApiCode.EARGS, "each item of 'n' must be an object")
    t = arg_int(item, "t")
    if t not in (FILE, FOLDER):
        raise Fail(ApiCode.EARGS, "item type must be 0 (file) or 1 (folder)")
    a = arg_b64(item, "a", block=16, max_chars=MAX_ATTR_CHARS)
    k = arg_b64(item, "k", lengths=(32,) if t == FILE else (16,))
    plan = _NewNode(t=t, a=a, k=k, parent_ref=opt_str(item, "p"), placeholder=None)
    if t == FOLDER:
        plan.placeholder = opt_str(item, "h")
    elif "h" not in item and "ph" in item:
        source = ctx.tx.public_node(arg_str(item, "ph"))
        if source is None or source["t"] != FILE:
            raise Fail(ApiCode.ENOENT, "unknown public handle")
        plan.size, plan.blob = source["s"], source["blob"]
    else:
        token = completion_bytes(arg_str(item, "h"))
        done = ctx.tx.completion(token) if token else None
        if token is None or done is None or done["uh"] != uh:
            raise Fail(ApiCode.EARGS, "unknown completion token")
        if done["node"] is not None or token in tokens:
            raise Fail(ApiCode.EARGS, "completion token already used")
        tokens.add(token)
        plan.size, plan.blob, plan.token = done["size"], done["blob"], token
    return plan


def cmd_p(ctx: Ctx, cmd: dict) -> Any:
    """Create nodes: files from completion tokens (or public handles), folders with
    placeholder handles that later items of the same ``n`` may name as their ``p``."""
    writer = ctx.user()
    target_h = arg_str(cmd, "t")
    items = cmd.get("n")
    if not isinstance(items, list) or not items:
        raise Fail(ApiCode.EARGS, "'n' must be a non-empty array")
    target = _container(ctx, target_h, "target")
    # a sharee writing into a read/write share: the nodes are the owner's (its quota, its
    # tree), their keys only under the share key (``inshares.writable``)
    uh = target["uh"]
    inshare = share_of(ctx, target["h"], writer) if uh != writer else None
    tokens: set[bytes] = set()
    plans = [_plan(ctx, item, tokens) for item in items]
    total = sum(plan.size or 0 for plan in plans)
    if ctx.tx.used_bytes(uh) + total > ctx.tx.quota(uh):
        raise Fail(ApiCode.EOVERQUOTA, "new files of %d bytes would exceed the quota" % total)
    placeholders: dict[str, str] = {}
    created = []
    cr = parse_cr(cmd)
    # the shared folders a parent is inside, per parent (an account without shares: none)
    sharing = bool(ctx.tx.account_shares(uh))
    enclosing: dict[str, list[str]] = {}
    for index, plan in enumerate(plans):
        parent = target["h"]
        if plan.parent_ref is not None and plan.parent_ref not in (target_h, target["h"]):
            if plan.parent_ref in placeholders:
                parent = placeholders[plan.parent_ref]
            else:
                parent = _container(ctx, plan.parent_ref, "parent in 'n'")["h"]
        if inshare is not None and ctx.tx.node(parent, uh) is None:
            raise Fail(ApiCode.EACCESS, "parent in 'n' is outside the share")
        row = ctx.tx.insert_node(uh=uh, p=parent, t=plan.t, a=plan.a,
                                 k="" if inshare else plan.k, s=plan.size, blob=plan.blob)
        if plan.placeholder:
            placeholders[plan.placeholder] = row["h"]
        if plan.token is not None:
            ctx.tx.use_completion(plan.token, row["h"])
        if sharing and parent not in enclosing:
            enclosing[parent] = ctx.tx.share_roots_above(parent)
        given = {inshare} if inshare else set()
        keys = take_keys(cr, index, row["h"], plan.t, enclosing.get(parent, []), given)
        if inshare and not any(root == inshare for _, root, _k in keys):
            keys.append((row["h"], inshare, plan.k))    # its k is under the share key
        ctx.tx.add_sharekeys(keys)
        created.append(wire_node(row, [(root, key) for _, root, key in keys]))
    packet = origin(cmd, {"a": "t", "t": {"f": created}, "ou": writer})
    answer = created
    if inshare is None:
        ctx.tx.emit(uh, packet)
    else:      # the writer sees its share's key entries, the owner gets the packet too
        answer = sharee_view(created, inshare)
        ctx.tx.emit(writer, dict(packet, t={"f": answer}))
        ctx.tx.emit(uh, {k: v for k, v in packet.items() if k != "i"})
    if sharing:
        feeds = sharee_feeds(ctx, {r for roots in enclosing.values() for r in roots})
        emit_to_feeds(ctx, [(r, f) for r, f in feeds if f != writer], packet)
    return {"f": answer}


def cmd_a(ctx: Ctx, cmd: dict) -> Any:
    """Replace a node's attributes with ``at`` (legacy clients send ``attr``; their ``key`` is
    ignored: keys never change)."""
    uh = ctx.user()
    row = changeable(ctx, arg_str(cmd, "n"), uh, root_ok=True)
    not_root(row)
    key = "at" if "at" in cmd or "attr" not in cmd else "attr"
    at = arg_b64(cmd, key, block=16, max_chars=MAX_ATTR_CHARS)
    ctx.tx.set_attrs(row["h"], at)
    packet = origin(cmd, {"a": "u", "n": row["h"], "u": uh, "at": at, "ts": row["ts"]})
    ctx.tx.emit(uh, packet)
    if row["uh"] != uh:           # a sharee's change: the owner's sessions learn it too
        ctx.tx.emit(row["uh"], {k: v for k, v in packet.items() if k != "i"})
        feeds = sharee_feeds(ctx, ctx.tx.share_roots_above(row["h"]))
        emit_to_feeds(ctx, [(r, f) for r, f in feeds if f != uh], packet)
    else:
        emit_to_sharees(ctx, shared_roots(ctx, row["h"]), packet)
    return 0


def cmd_m(ctx: Ctx, cmd: dict) -> Any:
    """Move a node (with its subtree) into a folder.  A sharee at full access moves nodes
    inside the owner's shares (``inshares.changeable``, ``same_tree``); the owner's sessions,
    the writer and the other sharees get the packets."""
    uh = ctx.user()
    row = changeable(ctx, arg_str(cmd, "n"), uh)
    not_root(row)
    owner = row["uh"]
    target = ctx.tx.node(arg_str(cmd, "t"), uh) or writable(ctx, arg_str(cmd, "t"), uh)
    if target is None:
        raise Fail(ApiCode.ENOENT, "unknown target")
    if target["t"] not in CONTAINER_TYPES:
        raise Fail(ApiCode.EARGS, "target is not a folder")
    same_tree(ctx, row, target, uh)
    subtree = ctx.tx.subtree(row["h"])
    if target["h"] in {r["h"] for r in subtree}:
        raise Fail(ApiCode.ECIRCULAR, "cannot move a folder into itself")
    sharing = bool(ctx.tx.account_shares(owner))
    links_before = ctx.tx.share_roots_above(row["h"]) if sharing else []
    if sharing:
        check_subtree(ctx, parse_cr(cmd), subtree, ctx.tx.share_roots_above(target["h"]))
    ctx.tx.move_node(row["h"], target["h"])
    moved_rows = ctx.tx.subtree(row["h"])
    shared = ctx.tx.sharekeys_for([r["h"] for r in moved_rows]) if sharing else {}
    moved = [wire_node(r, shared.get(r["h"])) for r in moved_rows]
    removal = origin(cmd, {"a": "d", "n": row["h"], "m": 1, "ou": uh})
    addition = origin(cmd, {"a": "t", "t": {"f": moved}, "ou": uh})
    if owner == uh:
        ctx.tx.emit(uh, removal)
        ctx.tx.emit(uh, addition)
    else:        # a sharee's move: it sees its share's keys, the owner gets the packets too
        inshare = share_of(ctx, target["h"], uh)
        assert inshare is not None
        ctx.tx.emit(uh, removal)
        ctx.tx.emit(uh, dict(addition, t={"f": sharee_view(moved, inshare)}))
        for packet in (removal, addition):
            ctx.tx.emit(owner, {k: v for k, v in packet.items() if k != "i"})
    if sharing:
        emit_to_feeds(ctx, [(r, f) for r, f in sharee_feeds(ctx, links_before) if f != uh],
                      removal)
        emit_to_feeds(ctx, [(r, f) for r, f in sharee_feeds(
            ctx, ctx.tx.share_roots_above(target["h"])) if f != uh], addition)
    return 0


def cmd_d(ctx: Ctx, cmd: dict) -> Any:
    """Delete a node and its whole subtree (frees quota; blobs go once unreferenced).  A
    sharee at full access deletes nodes inside a share (``inshares.changeable``); the owner's
    sessions and the other sharees learn it."""
    uh = ctx.user()
    row = changeable(ctx, arg_str(cmd, "n"), uh)
    not_root(row)
    owner = row["uh"]
    feeds = sharee_feeds(ctx, ctx.tx.share_roots_above(row["h"])) \
        if ctx.tx.account_shares(owner) else []
    ctx.tx.delete_nodes(ctx.tx.subtree(row["h"]))
    packet = origin(cmd, {"a": "d", "n": row["h"], "ou": uh})
    ctx.tx.emit(uh, packet)
    if owner != uh:
        ctx.tx.emit(owner, {k: v for k, v in packet.items() if k != "i"})
    # a deleted share root: its accounts learn it from the d; its link from -9 (no packet)
    emit_to_feeds(ctx, [(r, f) for r, f in feeds
                        if f != uh and (r != row["h"] or not f.startswith(FEED))], packet)
    return 0
