"""Display names: how a remote MEGA name becomes a POSIX name in one folder.

* **Invalid POSIX names are escaped.**  A remote name that is empty, ``.``, ``..``, contains
  ``/`` or NUL, or holds a lone UTF-16 surrogate is shown escaped: ``%`` -> ``%25``, ``/`` ->
  ``%2F``, NUL -> ``%00``, a surrogate -> ``%u`` and four hex digits, ``.`` -> ``%2E``, ``..`` ->
  ``%2E%2E``, the empty name -> ``%empty``.  Names that are already valid are shown unchanged (so
  a valid name containing ``%`` stays as it is).  A name longer than 255 bytes in UTF-8 is cut at
  a character boundary and gets ``~HANDLE`` appended.
* **Undecryptable nodes** are shown as ``undecryptable-HANDLE``.
* **Duplicate names.**  MEGA allows several children of one folder with the same name.  The
  newest (highest creation time ``ts``, then highest handle) keeps the plain name; every other
  one is shown as ``STEM (HANDLE).EXT`` (``EXT`` being the last dot suffix, if any), which is
  stable for as long as those nodes exist.

Pure functions; no I/O.
"""
from __future__ import annotations

from typing import Iterable

from .nodes import Node

NAME_MAX = 255


def _escape(name: str) -> str:
    if name == "":
        return "%empty"
    if name == ".":
        return "%2E"
    if name == "..":
        return "%2E%2E"
    bad = "/" in name or "\0" in name or any(0xD800 <= ord(c) <= 0xDFFF for c in name)
    if not bad:
        return name
    out = []
    for ch in name:
        code = ord(ch)
        if ch == "%":
            out.append("%25")
        elif ch == "/":
            out.append("%2F")
        elif ch == "\0":
            out.append("%00")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("%%u%04X" % code)
        else:
            out.append(ch)
    return "".join(out)


def _fit(name: str, handle: str) -> str:
    """Cut names longer than NAME_MAX bytes, keeping them unique with the handle."""
    if len(name.encode("utf-8")) <= NAME_MAX:
        return name
    suffix = "~" + handle
    budget = NAME_MAX - len(suffix)
    encoded = name.encode("utf-8")[:budget]
    return encoded.decode("utf-8", "ignore") + suffix


def base_display_name(node: Node) -> str:
    if node.name is None:
        return "undecryptable-" + node.handle
    return _fit(_escape(node.name), node.handle)


def duplicate_name(name: str, handle: str) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        candidate = "%s (%s)" % (name, handle)
    else:
        candidate = "%s (%s).%s" % (stem, handle, ext)
    return _fit(candidate, handle)


def display_names(children: Iterable[Node]) -> tuple[dict[str, Node], set[str]]:
    """Display name -> node for the children of one folder, and the base names that several
    of them share (see the module docstring for the duplicate-name policy)."""
    groups: dict[str, list[Node]] = {}
    for node in children:
        groups.setdefault(base_display_name(node), []).append(node)
    result: dict[str, Node] = {}
    taken = set(groups)
    dups = set()
    for name, members in groups.items():
        if len(members) == 1:
            result[name] = members[0]
            continue
        dups.add(name)
        members.sort(key=lambda n: (n.ts, n.handle), reverse=True)
        result[name] = members[0]
        for other in members[1:]:
            alias = duplicate_name(name, other.handle)
            while alias in taken or alias in result:
                alias = duplicate_name(alias, other.handle)
            result[alias] = other
            taken.add(alias)
    return result, dups
