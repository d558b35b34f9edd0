"""Listings through the kernel (issue 23): a folder bigger than one readdir buffer is listed
whole and once, with its attributes, and ``ls -l`` needs no lookup per entry (readdirplus
entries carry their node ids: megafs/fuse/adapter.py ``readdir_fuse_3``)."""
from __future__ import annotations

import os
import subprocess

import pytest

from megafs.api.client import MegaClient
from helpers.client import folders_in_one_request
from helpers.mount import MountProcess

pytestmark = [pytest.mark.fuse,
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]

COUNT = 600          # about three readdirplus buffers of 4 KiB... 32 KiB each at ~170 bytes


def test_big_folder_listed_once_with_attributes_and_no_lookups(server, tmp_path):
    state = tmp_path / "state"
    with MegaClient.open(api=server.url, state_dir=str(state)) as client:
        root = client.fetch().roots()[2]
        folders_in_one_request(client, root, "big", COUNT)
    m = MountProcess(tmp_path / "mnt", server.url, state, extra=["--debug"])
    m.start()
    try:
        before = m.log().count("opcode: LOOKUP")
        out = subprocess.run(["ls", "-l", str(m.mnt / "big")], capture_output=True, text=True,
                             timeout=60, check=True).stdout.splitlines()
        lookups = m.log().count("opcode: LOOKUP") - before
        names = [line.split()[-1] for line in out[1:]]
        assert names == ["d%04d" % i for i in range(COUNT)]
        assert all(line.startswith("d") for line in out[1:])     # folders, from the attrs
        # one lookup of "big" itself at most, none per entry
        assert lookups <= 2, lookups
        # a second pass and a reader that seeks back see the same listing
        assert sorted(os.listdir(m.mnt / "big")) == names
        fd = os.open(m.mnt / "big", os.O_RDONLY | os.O_DIRECTORY)
        try:
            with os.scandir(fd) as it:
                assert sorted(e.name for e in it) == names
        finally:
            os.close(fd)
    finally:
        m.stop()
