"""The CPython thread-state workaround of the FUSE adapter (``megafs/fuse/threadstate.py``) is
an optimisation only: the mount works the same with it on (the default) and off
(``MEGAFS_PIN_THREADS=0``).  Each run drives many requests from several processes at once
(listings of many files, appends, a git commit loop) and checks the result after a remount."""
from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers.mount import MountProcess

pytestmark = [pytest.mark.fuse,
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]


@pytest.mark.parametrize("pin", ["1", "0"])
def test_mount_works_with_and_without_the_workaround(server, tmp_path, pin):
    mnt, state = tmp_path / "mnt", tmp_path / "state"
    m = MountProcess(mnt, server.url, state, env={"MEGAFS_PIN_THREADS": pin})
    m.start()
    try:
        assert ("thread states of libfuse threads: %s" % ("kept" if pin == "1" else "not kept")
                in m.log())
        for i in range(200):
            (mnt / ("f%03d" % i)).write_bytes(b"%d" % i)

        def lister(_: int) -> int:
            out = subprocess.run(["ls", "-l", str(mnt)], capture_output=True, text=True,
                                 check=True).stdout
            return len(out.splitlines())

        def appender(k: int) -> None:
            for j in range(30):
                with open(mnt / ("log%d" % k), "a") as fh:
                    fh.write("%d\n" % j)
        with ThreadPoolExecutor(6) as pool:
            counts = list(pool.map(lister, range(8)))
            list(pool.map(appender, range(4)))
        assert counts == [201] * 8                      # "total" line + 200 files
        m.stop()
        m = MountProcess(mnt, server.url, state, env={"MEGAFS_PIN_THREADS": pin},
                         log_path=tmp_path / "again.log")
        m.start()
        assert sorted(os.listdir(mnt)) == sorted(["f%03d" % i for i in range(200)]
                                                 + ["log%d" % k for k in range(4)])
        for k in range(4):
            assert (mnt / ("log%d" % k)).read_text() == "".join("%d\n" % j for j in range(30))
    finally:
        m.stop()
