"""Concurrency through a real mount under seeded faults (issue 6, item 7), all at once:
several processes writing different files and reading them back while uploads are in flight,
one file opened by two processes, and renames of files and of their folder while they upload.
The end state is checked in a fresh listing and through every file's link.

(tests/test_fs_mount.py has the same cases one at a time without faults.)
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from megafs.api.client import MegaClient
from megafs.tree.tree import Tree
from helpers.mount import MountProcess, run_with_timeout, wait_for

pytestmark = [pytest.mark.fuse,
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]

FAULTS = [
    {"where": "upload", "delay": 0.3},                         # keep uploads in flight
    {"where": "upload", "http": 503, "rate": 0.05, "seed": 71},
    {"where": "cs", "error": -3, "rate": 0.05, "seed": 72},
]

WRITER = """
import os, sys
d, k = sys.argv[1], int(sys.argv[2])
os.makedirs(os.path.join(d, 'w%d' % k), exist_ok=True)
for i in range(5):
    data = (b'%d-%d|' % (k, i)) * (20000 * (i + 1))
    p = os.path.join(d, 'w%d' % k, 'f%d.bin' % i)
    with open(p, 'wb') as fh:
        fh.write(data)
    with open(p, 'rb') as fh:          # read back at once, while it uploads
        assert fh.read() == data, p
"""


def content(k: int, i: int) -> bytes:
    return (b"%d-%d|" % (k, i)) * (20000 * (i + 1))


def test_processes_shared_file_and_renames_during_uploads(server, tmp_path):
    state = tmp_path / "state"
    m = MountProcess(tmp_path / "mnt", server.url, state).start()
    mnt = m.mnt
    try:
        server.faults(FAULTS)
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(mnt), str(k)])
                 for k in range(4)]
        # meanwhile: one file opened by two processes
        shared = mnt / "shared.txt"
        a = os.open(shared, os.O_RDWR | os.O_CREAT, 0o644)
        reader = subprocess.Popen([sys.executable, "-c",
                                   "import os,sys; fd=os.open(sys.argv[1], os.O_RDWR);"
                                   "os.pwrite(fd, b'B'*100, 100); os.close(fd)", str(shared)])
        os.pwrite(a, b"A" * 100, 0)
        assert reader.wait(60) == 0
        assert os.pread(a, 200, 0) == b"A" * 100 + b"B" * 100
        os.close(a)
        for p in procs:
            assert p.wait(120) == 0
        # renames while uploads are in flight: a file, and a whole folder
        wait_for(lambda: any(os.getxattr(mnt / "w0" / ("f%d.bin" % i), "user.mega.state")
                             in (b"pending", b"uploading") for i in range(5)),
                 timeout=10, what="uploads in flight")
        os.rename(mnt / "w0" / "f4.bin", mnt / "w1" / "moved.bin")
        os.rename(mnt / "w2", mnt / "w2-renamed")
        server.clear_faults()
        expected = {"/shared.txt": b"A" * 100 + b"B" * 100}
        for k in range(4):
            folder = "w2-renamed" if k == 2 else "w%d" % k
            for i in range(5):
                path = "/%s/f%d.bin" % (folder, i)
                if (k, i) == (0, 4):
                    path = "/w1/moved.bin"
                expected[path] = content(k, i)
        for path, data in expected.items():
            link = run_with_timeout(lambda: (mnt / (path[1:] + ".link")).read_text(), 120)
            assert link.startswith("https://mega.nz/file/")
            assert (mnt / path[1:]).read_bytes() == data
        with MegaClient.open(api=server.url, state_dir=str(state)) as c:
            result = c.fetch()
            t = Tree(c.session.master_key, c.session.user_handle)
            t.load(result.nodes, result.public)
        files = {t.path_of(h): t.get(h) for h in t.subtree(t.root) if t.get(h).type == 0}
        assert sorted(files) == sorted(expected)       # each once, at its final path
        with MegaClient.public(api=server.url) as pub:
            for path, data in expected.items():
                link = (mnt / (path[1:] + ".link")).read_text().strip()
                pub.download(link, str(tmp_path / "dl"))
                assert hashlib.sha256((tmp_path / "dl").read_bytes()).digest() == \
                    hashlib.sha256(data).digest(), path
        assert "Traceback" not in m.log()
    finally:
        server.clear_faults()
        m.stop()
