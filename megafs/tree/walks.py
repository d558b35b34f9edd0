"""Cycle-safe walks of the node tree (issue 20, item 3: a hostile server sent a folder that
is its own ancestor, and the walks looped forever under ``Tree.lock``).

Functions over the tree's indexes (handle -> node, parent -> child handles); the caller holds
``Tree.lock``.  Every walk remembers the handles it passed, so it ends whatever the indexes
hold.  A node left out for a cycle is logged once at WARNING.  No I/O.
"""
from __future__ import annotations

import logging
from typing import Callable, Mapping

from .nodes import INBOX, RUBBISH, Node

log = logging.getLogger(__name__)

CYCLES_REPORTED = 10_000        # handles whose cycle was logged (each once), at most


def makes_cycle(nodes: Mapping[str, Node], kids: Mapping[str, set[str]], handle: str,
                parent: str) -> bool:
    """Whether putting ``handle`` under ``parent`` makes a folder its own ancestor.

    Only a node that has children can close a cycle (or one that is its own parent), so the
    usual case (a listing in parent-first order, a new file) costs one lookup."""
    if parent == handle:
        return True
    if not kids.get(handle):
        return False
    return is_inside(nodes, parent, handle)


def is_inside(nodes: Mapping[str, Node], handle: str, folder: str) -> bool:
    """Whether ``handle`` is ``folder`` or below it: a walk up through the parents."""
    seen: set[str] = set()
    current = handle
    while current and current not in seen:
        if current == folder:
            return True
        seen.add(current)
        node = nodes.get(current)
        if node is None:
            return False
        current = node.parent
    return False


def subtree(kids: Mapping[str, set[str]], handle: str) -> list[str]:
    """``handle`` and every handle below it, each once, depth first."""
    out, stack, seen = [], [handle], {handle}
    while stack:
        h = stack.pop()
        out.append(h)
        for kid in kids.get(h, ()):
            if kid not in seen:
                seen.add(kid)
                stack.append(kid)
    return out


def refuse_cycle(reported: set[str], nodes: Mapping[str, Node], kids: Mapping[str, set[str]],
                 handle: str, parent: str) -> bool:
    """``makes_cycle``, with one WARNING per offending node (``reported`` remembers them):
    a hostile or broken server, since MEGA answers -10 ECIRCULAR to such a move."""
    if not makes_cycle(nodes, kids, handle, parent):
        return False
    if handle not in reported and len(reported) < CYCLES_REPORTED:
        reported.add(handle)
        log.warning("ignoring node %s from the server: under %s it would be inside itself "
                    "(a cycle in the node tree)", handle, parent)
    return True


def path_names(nodes: Mapping[str, Node], handle: str, root: str,
               name_of: Callable[[str], str | None]) -> list[str] | None:
    """The display names from below ``root`` down to ``handle``, or None when ``handle`` is
    not under ``root`` (in the Rubbish Bin or Inbox, a missing parent, a cycle)."""
    parts = []
    node = nodes.get(handle)
    seen: set[str] = set()
    while node is not None and node.handle != root:
        if node.handle in seen or node.type in (INBOX, RUBBISH):
            return None
        seen.add(node.handle)
        name = name_of(node.handle)
        if name is None:
            return None
        parts.append(name)
        node = nodes.get(node.parent)
    return None if node is None else parts[::-1]
