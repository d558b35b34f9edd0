"""The file a whole-file download is written to until its MAC is checked (issue 20, item 7).

Its bytes are decrypted but not yet verified, so nothing may keep them under a name once the
download ends without success.  Where the filesystem allows, the file has no name at all
(Linux ``O_TMPFILE``): no exit path, SIGKILL and power loss included, leaves it behind, and it
gets a name (``linkat`` through ``/proc/self/fd``) only after its MAC matched, to be renamed
over the destination at once.  Elsewhere it is a named ``.NAME.RANDOM.megafs-part`` beside the
destination, removed on every exit path the process sees: errors, and the signals ``megafs
get`` turns into exceptions after calling ``remove_partial_files``.  Linux only for the
unnamed form; no logging.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import tempfile

SUFFIX = ".megafs-part"

# Named part files of downloads in progress: a signal handler of ``megafs get`` deletes them
# at once.  No lock: a handler waiting on a lock its own thread holds would never return.
_PARTS: set[str] = set()


def remove_partial_files() -> None:
    """Delete the named part file of every download in progress (for signal handlers)."""
    try:
        parts = tuple(_PARTS)
    except RuntimeError:          # changed by another thread meanwhile: once more
        parts = tuple(_PARTS)
    for path in parts:
        with contextlib.suppress(OSError):
            os.unlink(path)


class PartFile:
    """``fd`` (write-only, 0600) of a new part file beside ``dest``; ``path`` is None while
    it has no name.  ``publish()`` (after the MAC check, ``fd`` still open) names it if
    needed; ``replace()`` renames it over ``dest``; ``discard()`` removes a named one.
    OSError from the filesystem."""

    def __init__(self, dest: str) -> None:
        self.dest = dest
        self.directory = os.path.dirname(dest)
        self.path: str | None = None
        flag = getattr(os, "O_TMPFILE", 0)
        if flag and os.path.isdir("/proc/self/fd"):
            try:
                self.fd = os.open(self.directory, flag | os.O_WRONLY, 0o600)
                return
            except OSError:
                pass            # EOPNOTSUPP/EISDIR: a filesystem without unnamed files
        self.fd, self.path = tempfile.mkstemp(prefix=self._prefix(), suffix=SUFFIX,
                                              dir=self.directory)
        _PARTS.add(self.path)

    def _prefix(self) -> str:
        return "." + os.path.basename(self.dest)[:100] + "."

    @property
    def reopen_path(self) -> str:
        """A path that opens the same file again (for a second, O_DIRECT descriptor)."""
        return self.path or "/proc/self/fd/%d" % self.fd

    def publish(self) -> None:
        """Give an unnamed file a (random, hidden) name beside ``dest``: only verified bytes
        ever have a name."""
        if self.path is not None:
            return
        # linkat(AT_SYMLINK_FOLLOW) of the /proc magic link (os.link calls plain link(2),
        # which links the symlink itself, unless a directory fd is given)
        procfd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(16):
                name = os.path.join(self.directory,
                                    self._prefix() + secrets.token_hex(4) + SUFFIX)
                try:
                    os.link(str(self.fd), name, src_dir_fd=procfd, follow_symlinks=True)
                except FileExistsError:
                    continue
                self.path = name
                _PARTS.add(name)
                return
        finally:
            os.close(procfd)
        raise FileExistsError("no free name for the verified download beside %s" % self.dest)

    def replace(self) -> None:
        if self.path is None:
            raise ValueError("publish() first")
        os.replace(self.path, self.dest)
        _PARTS.discard(self.path)

    def discard(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            _PARTS.discard(self.path)
