"""Every change this mount makes on MEGA, written once: send the request, then apply its
result to the node tree.

One function per operation (mkdir, move, set attributes, delete, put, export, unexport).  The
filesystem core, the ``.link`` layer, the write-back committer and the change feed all change
MEGA through these, so "what the tree holds after our own request" has one definition: the
change feed skips our own packets (``changes.RemoteWatcher``), so the tree must be updated
here, when the request returns.  Errors of the request propagate unchanged (``MegaError``
with MEGA's code, or a transport error) and leave the tree as it was; no lock is taken beyond
``tree.lock`` inside the tree's own methods.  Requests are those of ``api/interface.py``
(``MegaApi``).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from ..api.commands import PutItem
from ..api.interface import MegaApi
from ..errors import ApiCode, MegaError
from .nodes import Node
from .tree import Tree

log = logging.getLogger(__name__)


def mkdir(client: MegaApi, tree: Tree, parent: str, name: str, attrs: dict[str, Any]
          ) -> Node | None:
    """A new folder ``name`` in ``parent`` with ``attrs`` (``n`` included); the new node."""
    raw = client.mkdir(parent, name, attrs)
    return tree.add_raw(raw)


def move(client: MegaApi, tree: Tree, handle: str, parent: str) -> None:
    """Move node ``handle`` into folder ``parent`` (``m``)."""
    client.move(handle, parent)
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
    results: list[Any] = list(client.put_files([PutItem(p, u, a) for p, u, a in items]))
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
