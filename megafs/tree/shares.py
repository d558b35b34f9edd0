"""The share keys of the account's outgoing shares (issue 25): folder handle -> 16-byte key.

A folder shared with others, or exported as a folder link, has a share key; every ``p`` and
``m`` into it must carry the new or moved nodes' keys under it (``cr``, ``api.sharekeys``), or
the link and the sharees cannot read them.  The keys come from ``f`` (``ok``, each checked with
its ``ha``: ``Tree.load``), from ``s``/``s2`` action packets (``packets.py``), from the mount's
own exports (``remote.export_folder``) and from the node-tree cache (``cache.py``); nodes a
sharee wrote into a shared folder are decrypted with them (``with_incoming``).  Beside
each key, who the folder is shared with (``f``'s ``s`` list, the packets: user handles, ``EXP``
for its folder link), so revoking the link forgets the key only when no user shares the folder
any more.  Incoming shares of a full account (keys under RSA) are not kept.  Thread-safe; never
logs a key.
"""
from __future__ import annotations

import threading
from typing import Any, Iterable, Mapping

from ..api.commands import is_handle
from ..api.sharekeys import EXPORTED


def sharees_from(entries: Any) -> dict[str, set[str]]:
    """Folder handle -> who it is shared with, from ``f``'s ``s`` list ``[{h, u, r}]``
    (malformed entries left out)."""
    out: dict[str, set[str]] = {}
    for entry in entries[:1_000_000] if isinstance(entries, list) else []:
        if isinstance(entry, dict) and is_handle(entry.get("h")) \
                and isinstance(entry.get("u"), str) and 0 < len(entry["u"]) <= 64:
            out.setdefault(entry["h"], set()).add(entry["u"])
    return out


class ShareKeys:
    """Share root handle -> share key.  ``snapshot()`` hands out a map that is replaced on
    every change, never mutated, so callers read it without a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}
        self._users: dict[str, frozenset[str]] = {}     # folder -> its sharees (and EXP)
        self._merged: tuple[Any, Any, Mapping[str, bytes]] = (None, None, {})

    def snapshot(self) -> Mapping[str, bytes]:
        """The keys now (read, never change)."""
        return self._keys

    def with_incoming(self, incoming: Mapping[str, bytes] | None
                      ) -> Mapping[str, bytes] | None:
        """The share keys a node without our own key entry is decrypted with: ``incoming``
        (incoming shares' keys) and ours (a node a sharee wrote into our shared folder has
        only a ``ROOT:KEY`` entry under its share key).  Both maps are replaced on change,
        never mutated, so the union is made once per change."""
        ours = self._keys
        if not ours or not incoming:
            return incoming or ours or None
        seen = self._merged
        if seen[0] is not incoming or seen[1] is not ours:
            self._merged = seen = (incoming, ours, {**ours, **incoming})
        return seen[2]

    def get(self, handle: str) -> bytes | None:
        return self._keys.get(handle)

    def replace(self, keys: Mapping[str, bytes],
                sharees: Mapping[str, Iterable[str]] | None = None) -> None:
        """Every key (and sharee) at once (a fresh ``f``, the tree cache)."""
        with self._lock:
            self._keys = {h: k for h, k in keys.items() if len(k) == 16}
            self._users = {h: frozenset(u) for h, u in (sharees or {}).items()}

    def sharees(self) -> dict[str, list[str]]:
        """Folder -> who it is shared with (for the tree cache)."""
        return {h: sorted(u) for h, u in self._users.items()}

    def shared(self, handle: str, user: str, on: bool) -> None:
        """Folder ``handle`` is (``on``) or is no longer shared with ``user``."""
        with self._lock:
            users = set(self._users.get(handle, ()))
            (users.add if on else users.discard)(user)
            self._users = dict(self._users, **{handle: frozenset(users)})

    def others(self, handle: str) -> bool:
        """Whether folder ``handle`` is shared with a user (beyond its folder link)."""
        return bool(self._users.get(handle, frozenset()) - {EXPORTED})

    def set(self, handle: str, key: bytes | None) -> None:
        """Folder ``handle``'s share key (None: the folder is not shared any more)."""
        if key is not None and len(key) != 16:
            raise ValueError("a share key has 16 bytes")
        with self._lock:
            fresh = dict(self._keys)
            if key is None:
                fresh.pop(handle, None)
                self._users = {h: u for h, u in self._users.items() if h != handle}
            else:
                fresh[handle] = key
            self._keys = fresh

    def forget(self, handles: Iterable[str]) -> None:
        """Drop the keys of any of ``handles`` (nodes removed from the tree)."""
        keys = self._keys
        if not keys:
            return
        gone = [h for h in handles if h in keys]
        if gone:
            with self._lock:
                self._keys = {h: k for h, k in self._keys.items() if h not in gone}
                self._users = {h: u for h, u in self._users.items() if h not in gone}

    def __len__(self) -> int:
        return len(self._keys)
