"""Files libfuse hid: a file removed or replaced by ``rename`` while open is renamed by libfuse
to ``.fuse_hidden`` + 16 hex digits (node id and a counter) and removed at its last close; the
kernel keeps asking for its attributes (fstat) by that path, and a reader whose path walk found
the file just before it was replaced opens it by that path, maybe after it is gone.

``HiddenNames`` keeps the open hidden files (not listed anywhere) and, for the last
``HIDDEN_ORIGINS`` hidden names, the place each was hidden from and when, so that such a late
open gets the name's new content (``Namespace.hidden_origin``; issue 22).  Its ``shown``
condition shares the namespace lock and is notified whenever a name is shown: libfuse's rename
over an open file is two calls (the old file to its hidden name, then the new file to the name)
and a reader in between waits for the second (``wait_shown``).  Mutated under the namespace
lock; reads are lock-free (copy-on-write of ``_origins``).
"""
from __future__ import annotations

import re
import threading
import time
from typing import Callable

from ..writeback.staged import StagedFile

HIDDEN_NAME = re.compile(r"\.fuse_hidden[0-9a-f]{16}")
HIDDEN_ORIGINS = 1024     # hidden names remembered after their file is gone
# seconds a hidden name's origin may stay empty while libfuse's rename is still to show the new
# file there: it does so at once on the same thread, so this bound is only paid when the file
# was unlinked instead (an open racing an unlink and the last close)
HIDE_GAP = 2.0


class HiddenNames:
    """Open hidden files by (folder handle, hidden name), and where each name came from."""

    def __init__(self, lock: threading.RLock) -> None:
        self._files: dict[tuple[str, str], StagedFile] = {}
        # (folder, hidden name) -> (folder, name, time.monotonic() of the hide)
        self._origins: dict[tuple[str, str], tuple[str, str, float]] = {}
        self.shown = threading.Condition(lock)

    def file(self, folder: str, name: str) -> StagedFile | None:
        """The open file hidden as ``name`` in ``folder`` (lock-free)."""
        if self._files and HIDDEN_NAME.fullmatch(name):
            return self._files.get((folder, name))
        return None

    def add(self, sf: StagedFile, folder: str, name: str) -> None:
        """``sf`` (still at its place in ``sf.rec``) is now hidden as ``name`` in ``folder``
        (under the namespace lock, before ``sf`` leaves its place)."""
        self._files[(folder, name)] = sf
        origins = dict(self._origins)
        origins[(folder, name)] = (sf.rec.parent, sf.rec.name, time.monotonic())
        while len(origins) > HIDDEN_ORIGINS:
            del origins[next(iter(origins))]
        self._origins = origins

    def forget(self, folder: str, name: str) -> bool:
        """libfuse removed a hidden name at the last close; False if it was not one."""
        return self._files.pop((folder, name), None) is not None

    def origin(self, folder: str, name: str) -> tuple[str, str, float] | None:
        """(folder, name, hide time) a hidden name came from, or None (lock-free)."""
        return self._origins.get((folder, name))

    def wait_shown(self, shows: Callable[[], bool], since: float) -> None:
        """Wait until ``shows()`` or ``HIDE_GAP`` s after ``since`` (``time.monotonic``)."""
        deadline = since + HIDE_GAP
        with self.shown:
            while not shows():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.shown.wait(left)
