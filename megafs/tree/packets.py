"""Action packets from the change feed (``sc``), applied to the node tree.

Packet types (protocol reference §11.2): ``t`` new nodes (also the second half of a move),
``s2``/``c`` incoming shares and their owners (``tree/inshares.py``),
``d`` removal of a subtree, ``u`` attribute update (``at`` re-encrypted with the node key),
``ph`` public handle created or removed, ``s``/``s2`` an outgoing share made (its ``ok`` share
key, kept when ``ha`` authenticates it) or ended (``okd``: the key is gone); others are
ignored.  Malformed packets are logged at
WARNING and skipped, never raised.  Runs under ``tree.lock``.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .. import crypto
from ..api import sharekeys
from ..api.commands import is_handle

from .tree import shared_folder

if TYPE_CHECKING:
    from .tree import Tree

log = logging.getLogger(__name__)


def apply(tree: "Tree", packet: Any) -> set[str]:
    """Apply one action packet; return the folder handles whose listing changed."""
    if not isinstance(packet, dict):
        log.warning("ignoring a malformed action packet (%s)", type(packet).__name__)
        return set()
    kind = packet.get("a")
    with tree.lock:
        if kind == "t":
            body = packet.get("t")
            raws = body.get("f") if isinstance(body, dict) else None
            if not isinstance(raws, list):
                log.warning("ignoring a 't' packet without nodes")
                return set()
            affected = set()
            for raw in raws:
                node = tree._add(raw)
                if node is not None:
                    affected.add(node.parent)
            return affected
        if kind == "d":
            handle = packet.get("n")
            return tree.remove(handle) if isinstance(handle, str) else set()
        if kind == "u":
            return _apply_update(tree, packet)
        if kind == "c" and tree.incoming is not None:
            tree.incoming.contacts(packet.get("u"))
            return set()
        if kind == "ph":
            handle = packet.get("h")
            node = tree._nodes.get(handle) if isinstance(handle, str) else None
            if node is not None:
                if packet.get("d"):
                    node.public = None
                elif is_handle(packet.get("ph")):
                    node.public = packet["ph"]
                else:
                    log.warning("ignoring a 'ph' packet for node %s whose public handle is not "
                                "8 base64url characters", handle)
            return set()
        if kind in ("s", "s2"):
            if tree.incoming is not None and packet.get("u") == tree.user_handle:
                return _apply_incoming(tree, packet)
            _apply_share(tree, packet)
        return set()


def paths_touched(tree: "Tree", packet: dict) -> set[str]:
    """Mount paths a packet touches (the nodes it names and their folders), as the tree
    shows them now (call before and after applying it): the kernel's cached entries for them
    are invalidated.  For the account's change feed and a folder link's alike."""
    handles: list[str] = []
    kind = packet.get("a")
    if kind in ("d", "u", "s2") and isinstance(packet.get("n"), str):
        handles.append(packet["n"])
    elif kind == "t" and isinstance(packet.get("t"), dict):
        raws = packet["t"].get("f")
        if isinstance(raws, list):
            handles += [r["h"] for r in raws if isinstance(r, dict)
                        and isinstance(r.get("h"), str)]
    out = set()
    for handle in handles:
        node = tree.get(handle)
        if node is None:
            continue
        for h in (handle, node.parent):
            path = tree.path_of(h)
            if path is not None:
                out.add(path)
    return out


def _apply_share(tree: "Tree", packet: dict) -> None:
    """An outgoing share made or ended (meganz/sdk src/megaclient.cpp ``sc_shares``): a new
    share key is kept only if ``ha`` authenticates it for the folder; shares of other users
    (incoming: ``o`` is not this account) are not modelled."""
    handle, owner, user = packet.get("n"), packet.get("o"), packet.get("u")
    if not is_handle(handle) or (owner is not None and owner != tree.user_handle):
        return
    if isinstance(user, str) and 0 < len(user) <= 64:
        tree.shares.shared(str(handle), user, packet.get("r") is not None)
    if "ok" in packet and "ha" in packet:
        keys = sharekeys.share_keys_from([{"h": handle, "k": packet["ok"], "ha": packet["ha"]}],
                                         tree.master_key)
        if handle in keys:
            tree.shares.set(handle, keys[handle])
        else:
            log.warning("ignoring the share key of folder %s: its 'ha' does not match", handle)
    elif packet.get("okd"):
        tree.shares.set(str(handle), None)


def _apply_update(tree: "Tree", packet: dict) -> set[str]:
    handle = packet.get("n")
    node = tree._nodes.get(handle) if isinstance(handle, str) else None
    at = packet.get("at")
    if node is None or not isinstance(at, str) or node.key is None:
        return set()
    try:
        attrs = crypto.decrypt_attr(crypto.b64decode(at), node.key)
    except (ValueError, crypto.AttributeError_) as exc:
        log.warning("attribute update for node %s cannot be decrypted (%s)", handle, exc)
        node.ok, node.name = False, None
        tree._forget_names(node.parent)
        return {node.parent}
    node.ok = True
    tree.set_attrs(node.handle, attrs)
    return {node.parent}


def _apply_incoming(tree: "Tree", packet: dict) -> set[str]:
    """An incoming share added (its nodes follow in a ``t`` packet) or revoked (its nodes go)
    (tree/inshares.py)."""
    incoming = tree.incoming
    assert incoming is not None
    change = incoming.packet(packet)
    if change is None:
        return set()
    root, present = change
    affected = set() if present else tree.remove(root)
    return affected | shared_folder(tree)
