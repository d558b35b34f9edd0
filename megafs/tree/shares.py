"""The share keys of the account's outgoing shares (issue 25): folder handle -> 16-byte key.

A folder shared with others, or exported as a folder link, has a share key; every ``p`` and
``m`` into it must carry the new or moved nodes' keys under it (``cr``, ``api.sharekeys``), or
the link and the sharees cannot read them.  The keys come from ``f`` (``ok``, each checked with
its ``ha``: ``Tree.load``), from ``s``/``s2`` action packets (``packets.py``), from the mount's
own exports (``remote.export_folder``) and from the node-tree cache (``cache.py``).  Incoming
shares of a full account (keys under RSA) are not kept.  Thread-safe; never logs a key.
"""
from __future__ import annotations

import threading
from typing import Iterable, Mapping


class ShareKeys:
    """Share root handle -> share key.  ``snapshot()`` hands out a map that is replaced on
    every change, never mutated, so callers read it without a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}

    def snapshot(self) -> Mapping[str, bytes]:
        """The keys now (read, never change)."""
        return self._keys

    def get(self, handle: str) -> bytes | None:
        return self._keys.get(handle)

    def replace(self, keys: Mapping[str, bytes]) -> None:
        """Every key at once (a fresh ``f``, the tree cache)."""
        with self._lock:
            self._keys = {h: k for h, k in keys.items() if len(k) == 16}

    def set(self, handle: str, key: bytes | None) -> None:
        """Folder ``handle``'s share key (None: the folder is not shared any more)."""
        if key is not None and len(key) != 16:
            raise ValueError("a share key has 16 bytes")
        with self._lock:
            fresh = dict(self._keys)
            if key is None:
                fresh.pop(handle, None)
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

    def __len__(self) -> int:
        return len(self._keys)
