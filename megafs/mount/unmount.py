"""Unmounting a FUSE mount point with the tools the system has (``fusermount3``,
``fusermount``, ``umount``), for ``megafs umount`` and for clearing a mount that a failed or
interrupted ``megafs mount`` left."""
from __future__ import annotations

import errno
import shutil
import subprocess

from ..errors import FsError
from .registry import is_mounted


def unmount(mnt: str, *, lazy: bool = False, check: bool = True) -> None:
    """Unmount ``mnt``; ``lazy`` detaches it even when busy.  FsError(EBUSY) with the tools'
    own reasons if it stays mounted (unless ``check`` is False)."""
    errors = []
    flag = ["-z"] if lazy else []
    for cmd in (["fusermount3", "-u", *flag, mnt], ["fusermount", "-u", *flag, mnt],
                ["umount", *(["-l"] if lazy else []), mnt]):
        if shutil.which(cmd[0]) is None:
            continue
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            errors.append("%s timed out" % cmd[0])
            continue
        if proc.returncode == 0 or not is_mounted(mnt):
            return
        errors.append(proc.stderr.strip())
    if check and is_mounted(mnt):
        reason = "; ".join(e for e in errors if e) or "no unmount tool worked"
        hint = " (a program still uses it: `fuser -vm %s` shows which)" % mnt \
            if "busy" in reason.lower() else ""
        raise FsError(errno.EBUSY, "could not unmount %s: %s%s" % (mnt, reason, hint))
