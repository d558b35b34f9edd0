"""Reading a folder file by file through a mount (``cat DIR/*``, ``cp -r``, ``tar``) fetches the
next small files ahead (``vfs.readcache``, *files ahead*): their ``g`` share a few requests
instead of one per file, and every byte read is the byte uploaded.  A single ``cat`` of one
file fetches that file alone.  Counted with the server's stats (``requests_with``: ``/cs``
requests holding a ``g``; ``download``: transfer requests)."""
from __future__ import annotations

import os
import subprocess

import pytest

from megafs.api.client import MegaClient, PutItem
from megafs.vfs.ahead import FILES_AHEAD
from helpers.mount import MountProcess

pytestmark = [pytest.mark.fuse,
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]

COUNT = 60


def upload_folder(server, state, tmp_path) -> dict[str, bytes]:
    """COUNT x 4 KiB files in the folder "read", uploaded by a client of the mount's account
    (the mount has no local copy of them)."""
    expected = {}
    with MegaClient.open(api=server.url, state_dir=str(state)) as client:
        root = client.fetch().roots()[2]
        folder = client.mkdir(root, "read")["h"]
        items = []
        for i in range(COUNT):
            name = "r%03d.bin" % i
            expected[name] = os.urandom(4096)
            src = tmp_path / name
            src.write_bytes(expected[name])
            items.append(PutItem(folder, client.upload(str(src)), {"n": name}))
        assert all(isinstance(r, dict) for r in client.put_files(items))
    return expected


def g_requests(server) -> tuple[int, int]:
    stats = server.stats()
    return stats["requests_with"].get("g", 0), stats["requests"].get("download", 0)


def test_a_folder_read_file_by_file_fetches_ahead_in_few_requests(server, tmp_path):
    state = tmp_path / "state"
    expected = upload_folder(server, state, tmp_path)
    m = MountProcess(tmp_path / "mnt", server.url, state).start()
    try:
        folder = m.mnt / "read"
        g0, dl0 = g_requests(server)
        # one file alone: its own g and its own GET, nothing ahead
        assert (folder / "r030.bin").read_bytes() == expected["r030.bin"]
        g1, dl1 = g_requests(server)
        assert (g1 - g0, dl1 - dl0) == (1, 1)
        # the whole folder in listing order, the way `cat DIR/*` reads it
        out = subprocess.run(["sh", "-c", 'cat "$1"/*.bin', "sh", str(folder)],
                             capture_output=True, check=True, timeout=120).stdout
        assert out == b"".join(expected[name] for name in sorted(expected))
        g2, dl2 = g_requests(server)
        # 59 files not read yet: without files ahead one g request each
        assert g2 - g1 <= 2 + COUNT // (FILES_AHEAD // 2) + 1, g2 - g1
        assert dl2 - dl1 == COUNT - 1     # each file's bytes fetched once (r030 was cached)
    finally:
        m.stop()
