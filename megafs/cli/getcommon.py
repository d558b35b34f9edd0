"""What ``megafs get`` of a file link and of a folder link (``cli/getfolder.py``) share: the
check of a remote name that becomes a local one in the user's folder, the transfer quota line,
and the signal handling that leaves no unverified bytes behind (issue 20)."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

from ..api.partfile import remove_partial_files
from ..api.xferquota import wait_text
from ..config import has_unsafe, printable
from ..errors import MegafsError, Stopped
from .progress import Transfer


def check_remote_name(name: str, force: bool) -> None:
    """Refuse a remote name as a local file name when it is not text, or (without ``force``)
    when it would hide itself (a dotfile such as ``.bashrc`` in the current folder) or holds
    characters that drive a terminal (escape sequences, newlines, RTLO): MegafsError, one
    line, the name shown escaped (issue 20, item 8)."""
    shown = printable(name)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise MegafsError("the file's name '%s' is not valid text (a broken or hostile server); "
                          "give the output file with -o" % shown) from None
    if force:
        return
    if name.startswith("."):
        raise MegafsError("the file's name '%s' starts with '.' (a hidden file, maybe a "
                          "configuration file); give another name with -o, or add --force to "
                          "use it" % shown)
    if has_unsafe(name):
        raise MegafsError("the file's name '%s' holds control characters; give another name "
                          "with -o, or add --force to use it" % shown)


def quota_line(left: float) -> None:
    Transfer.note("megafs get: transfer quota used up; continuing in %s" % wait_text(left))


@contextlib.contextmanager
def signals_stop() -> Iterator[None]:
    """While a download runs: SIGTERM and SIGHUP raise ``Stopped`` and SIGINT
    ``KeyboardInterrupt``, after deleting the download's temporary file at once (its bytes
    are not MAC-checked yet, and a worker may be blocked in a read for a while).  The default
    SIGTERM/SIGHUP action would end the process with that file left behind (issue 20)."""
    def handler(signum: int, frame: Any) -> None:
        remove_partial_files()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Stopped(signum, signal.Signals(signum).name)

    wanted = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    if threading.current_thread() is not threading.main_thread():
        yield                       # only the main thread may set handlers
        return
    old = {sig: signal.signal(sig, handler) for sig in wanted}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
