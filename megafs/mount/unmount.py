"""Unmounting a FUSE mount point with the tools the system has (``fusermount3``,
``fusermount``, ``umount``), for ``megafs umount`` and for clearing a mount that a failed or
interrupted ``megafs mount`` left; and telling a megafs mount from any other
(``refuse_foreign_mount``)."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading

from ..errors import FsError
from .registry import is_mounted, mount_type


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


def refuse_foreign_mount(mnt: str, info: dict | None) -> None:
    """``megafs umount`` unmounts megafs mounts only (issue 24: it had removed a tmpfs with its
    files).  A megafs mount answers ``user.megafs.mountdir`` on its root; a dead one (its
    process killed: ENOTCONN) is recognised by its type ``fuse.megafs`` or by this state
    dir's registry entry for a FUSE mount there.  Anything else is FsError(EINVAL)."""
    kind = mount_type(mnt) or "unknown"
    if kind == "fuse" or kind.startswith("fuse."):
        box: list[int] = []

        def ask() -> None:
            try:
                os.getxattr(mnt, "user.megafs.mountdir")
                box.append(0)
            except OSError as exc:
                box.append(exc.errno or errno.EIO)
        probe = threading.Thread(target=ask, daemon=True)
        probe.start()
        probe.join(5.0)
        answer = box[0] if box else None
        if answer == 0:
            return
        if kind == "fuse.megafs" and answer in (None, errno.ENOTCONN, errno.ECONNABORTED):
            return        # a busy or dead megafs mount: unmounting it is what was asked
        if info is not None and answer in (errno.ENOTCONN, errno.ECONNABORTED):
            return        # dead, mounted by this state dir with another -o subtype
    raise FsError(errno.EINVAL, "%s is a %s mount, not a megafs mount; megafs umount leaves "
                  "it alone (use umount(8) for it)" % (mnt, kind))
