"""Every change this mount makes on MEGA, written once: send the request, then apply its
result to the node tree.

One function per operation (mkdir, move, set attributes, delete, put, export, unexport, and
a folder's link: export_folder, unexport_folder).  The
filesystem core, the ``.link`` layer, the write-back committer and the change feed all change
MEGA through these, so "what the tree holds after our own request" has one definition: the
change feed skips our own packets (``changes.RemoteWatcher``), so the tree must be updated
here, when the request returns.  Errors of the request propagate unchanged (``MegaError``
with MEGA's code, or a transport error) and leave the tree as it was; no lock is taken beyond
``tree.lock`` inside the tree's own methods.  Requests are those of ``api/interface.py``
(``MegaApi``).

Every ``p`` (put, mkdir) and ``m`` (move) into a folder that is shared or exported as a folder
link carries the ``cr`` keys its sharees read the nodes with, in the same request (issue 25;
meganz/sdk src/sharenodekeys.cpp), from the tree's share keys (``tree.shares``): so a file
copied, moved or uploaded into an exported folder shows through the link at once, and the
local server, which refuses such a request without them (``-14``), accepts it.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterator, Mapping

from .. import crypto
from ..api import sharekeys
from ..api.commands import PutItem
from ..api.interface import MegaApi
from ..errors import ApiCode, MegaError, ProtocolError
from .nodes import Node
from .tree import Tree

log = logging.getLogger(__name__)


class _Parents(Mapping[str, str]):
    """The tree as a handle -> parent handle map (what ``api.sharekeys`` walks up)."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree

    def __getitem__(self, handle: str) -> str:
        node = self.tree.get(handle)
        if node is None:
            raise KeyError(handle)
        return node.parent

    def __iter__(self) -> Iterator[str]:
        return iter(n.handle for n in self.tree.nodes())

    def __len__(self) -> int:
        return len(self.tree)


def share_keys(tree: Tree) -> Mapping[str, bytes]:
    """The share keys a ``p``/``m`` gives its nodes' keys under: the account's own shared and
    exported folders', and those of folders shared with it (a sharee's new node in a
    read/write share is keyed under the share key: meganz/sdk src/commands.cpp
    ``CommandPutNodes`` adds ``cr`` for every share above the target, ``ShareNodeKeys::add``
    with ``includeParentChain``, inshare roots included)."""
    incoming = tree.incoming
    return tree.shares.with_incoming(incoming.keys if incoming is not None else None) or {}


def cr_for_put(tree: Tree, parent: str, node_keys: list[bytes]) -> sharekeys.Cr | None:
    """The ``cr`` of a ``p`` into ``parent`` creating nodes with ``node_keys`` (in order), or
    None outside every shared folder (at once when the account shares nothing)."""
    keys = share_keys(tree)
    if not keys:
        return None
    with tree.lock:
        return sharekeys.cr_for_put(_Parents(tree), keys, parent, node_keys)


def cr_for_move(tree: Tree, handle: str, parent: str) -> sharekeys.Cr | None:
    """The ``cr`` of an ``m`` of ``handle`` (with everything below it) into ``parent``, or
    None.  A node whose key this account cannot read has none to give: the server then
    refuses the move (``-14``) rather than hide it from the sharees."""
    keys = share_keys(tree)
    if not keys:
        return None
    with tree.lock:
        parents = _Parents(tree)
        if not sharekeys.enclosing_shares(parents, keys, parent):
            return None
        subtree = [(h, node.key) for h in tree.subtree(handle)
                   if (node := tree.get(h)) is not None and node.key is not None]
        return sharekeys.cr_for_move(parents, keys, parent, subtree)


KEY_WAITS = (0.2, 0.4, 0.8, 1.6)     # seconds between sends of a p/m refused for its keys


def _keyed(call: Callable[[], Any], what: str) -> Any:
    """``call()`` (a ``p`` or ``m`` whose ``cr`` it computes afresh each time), sent again
    after a short wait while the server refuses it for missing share keys (-14): a folder
    another client of this account just shared (with a user or as a link) gets its share key
    from the ``s2`` packet of the change feed, which may arrive just after the request left.
    The last refusal propagates."""
    for wait in KEY_WAITS:
        try:
            return call()
        except MegaError as exc:
            if exc.code != ApiCode.EKEY:
                raise
            log.info("%s refused for missing share keys; waiting %.1f s for the share's "
                     "key from the change feed", what, wait)
            time.sleep(wait)
    return call()


def mkdir(client: MegaApi, tree: Tree, parent: str, name: str, attrs: dict[str, Any]
          ) -> Node | None:
    """A new folder ``name`` in ``parent`` with ``attrs`` (``n`` included); the new node."""
    raw = _keyed(lambda: client.mkdir(parent, name, attrs,
                                      cr_for=lambda target, keys: cr_for_put(tree, target, keys)),
                 "mkdir")
    return tree.add_raw(raw)


def move(client: MegaApi, tree: Tree, handle: str, parent: str) -> None:
    """Move node ``handle`` into folder ``parent`` (``m``, with ``cr`` into a shared one)."""
    _keyed(lambda: client.move(handle, parent, cr_for_move(tree, handle, parent)), "move")
    tree.move(handle, parent)


def set_attrs(client: MegaApi, tree: Tree, handle: str, key: bytes, attrs: dict[str, Any]
              ) -> None:
    """Replace every attribute of node ``handle`` (``a``; ``attrs`` includes ``n``),
    encrypted with its node ``key``."""
    client.set_attrs(handle, key, attrs)
    tree.set_attrs(handle, attrs)


def delete(client: MegaApi, tree: Tree, handle: str) -> None:
    """Delete node ``handle`` and its subtree (``d``); one already gone (-9, e.g. removed by
    another client) is fine."""
    try:
        client.delete(handle)
    except MegaError as exc:
        if exc.code != ApiCode.ENOENT:
            raise
    tree.remove(handle)


def put(client: MegaApi, tree: Tree, items: list[tuple[str, Any, dict[str, Any]]],
        claim: Callable[[int, str], None] | None = None
        ) -> list[tuple[dict[str, Any] | BaseException, Node | None]]:
    """Create file nodes for finished uploads (one batch of ``p``): ``items`` are (parent
    handle, ``Uploaded``, attributes).  Per item: (the new raw node, or the exception that
    refused it; the node added to the tree, or None).  ``claim(index, handle)`` is called
    for each new node before the tree has it (so a staged file can hide it first).  An
    exception of the whole batch propagates: it may or may not have been applied."""
    results: list[Any] = list(client.put_files(
        [PutItem(p, u, a) for p, u, a in items],
        cr_for=lambda target, keys: cr_for_put(tree, target, keys)))
    out: list[tuple[dict[str, Any] | BaseException, Node | None]] = []
    for i, res in enumerate(results):
        if isinstance(res, BaseException):
            out.append((res, None))
            continue
        if claim is not None:
            claim(i, res.get("h"))
        out.append((res, tree.add_raw(res)))
    return out


def export(client: MegaApi, tree: Tree, handles: list[str],
           keep: Callable[[str], bool] | None = None) -> list[str | BaseException | None]:
    """Public handles for nodes (one batch of ``l``), recorded in the tree.  Per handle: the
    public handle, the exception that refused it (a failure of the whole batch is every
    item's), or None when ``keep(handle)`` says the link is not wanted any more (revoked
    while the ``l`` was in flight): that link is removed again at once."""
    try:
        results: list[Any] = list(client.export(handles))
    except Exception as exc:
        results = [exc] * len(handles)
    out: list[str | BaseException | None] = []
    for handle, ph in zip(handles, results):
        if isinstance(ph, BaseException):
            out.append(ph)
        elif keep is not None and not keep(handle):
            try:
                client.unexport(handle)
            except Exception as exc:       # the node keeps a link; say so, try no more
                log.warning("could not revoke the link of node %s, exported while being "
                            "revoked: %s", handle, exc)
            out.append(None)
        else:
            tree.set_public(handle, ph)
            out.append(ph)
    return out


def unexport(client: MegaApi, tree: Tree, handle: str) -> None:
    """Remove node ``handle``'s public link (``l`` with ``d:1``)."""
    client.unexport(handle)
    tree.set_public(handle, None)


def export_folder(client: MegaApi, tree: Tree, handle: str) -> tuple[str, bytes]:
    """Export folder ``handle`` as a folder link: (public handle, 16-byte share key).

    As ``api.folderlink.export_folder`` does it (meganz/sdk ``MegaClient::exportnode``), from
    the tree instead of a second ``f``: a share key from ``secrets`` (or the one the folder
    has), ``s2`` to ``EXP`` with ``ok``/``ha`` and the ``cr`` keys of every node inside, then
    ``l``.  The share key is in ``tree.shares`` before the ``s2`` is sent, so a ``p`` or ``m``
    into the folder made meanwhile carries its keys too; if a ``p`` without them lands first,
    the server refuses the ``s2`` (``-14``) and it is sent once more with the new node.  The
    same link on repeated calls.  MegaError as the server refused; the folder then keeps the
    share key only if it had one."""
    node = tree.get(handle)
    if node is None or not node.is_dir:
        raise MegaError(ApiCode.ENOENT, "folder %s is not in the tree" % handle)
    if node.key is None:
        raise MegaError(ApiCode.EKEY, "folder %s cannot be decrypted: no folder link for it"
                        % handle)
    had = tree.shares.get(handle)
    if had is not None and node.public:
        return node.public, had
    key = had or crypto.random_key(16)
    tree.shares.set(handle, key)
    try:
        for attempt in (1, 2, 3):
            with tree.lock:
                inside = [(h, n.key) for h in tree.subtree(handle)
                          if (n := tree.get(h)) is not None and n.key is not None]
            cr = sharekeys.make_cr([handle], {handle: key}, [k for _, k in inside],
                                   [h for h, _ in inside])
            try:
                other = client.share_folder(handle, key, cr)
            except MegaError as exc:
                if exc.code == ApiCode.EKEY and attempt < 3:
                    continue                 # a node arrived meanwhile: the tree has it now
                raise
            if other is None:
                break
            key = other                      # shared already (another client): its key
            tree.shares.set(handle, key)
        else:
            raise MegaError(ApiCode.EKEY, "s2: the folder's share key kept changing")
        public = client.export([handle])[0]
        if isinstance(public, BaseException):
            raise public
    except BaseException:
        tree.shares.set(handle, had)
        raise
    if not isinstance(public, str):
        raise ProtocolError("l: no public handle")
    tree.set_public(handle, public)
    tree.shares.shared(handle, sharekeys.EXPORTED, True)
    return public, key


def unexport_folder(client: MegaApi, tree: Tree, handle: str) -> None:
    """Revoke folder ``handle``'s link: ``l`` ``d:1``, then its ``EXP`` share (``s2``);
    either already gone is fine.  The tree forgets its public handle, and its share key unless
    users share the folder still (then the key stays theirs: later ``p``/``m`` keep adding
    it; a new link gets a new key only once no one shares it)."""
    client.unshare_folder(handle)
    tree.set_public(handle, None)
    tree.shares.shared(handle, sharekeys.EXPORTED, False)
    if not tree.shares.others(handle):
        tree.shares.set(handle, None)
