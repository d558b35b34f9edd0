"""Incoming shares in a full account's mount (issue 25 item 2): a folder account A shares with
account B shows in B's mount under ``/Shared with me/A's email - FOLDER/`` (``tree/inshares.py``),
reads like any folder (MAC-checked ranged reads with the keys under the share key), refuses
writes with EROFS and one log line (``vfs/sharedguard.py``), shows A's new file within seconds
through B's own change feed and after a remount, and is gone once A revokes the share."""
from __future__ import annotations

import errno
import os

import pytest

from helpers.accounts import full_account, put
from helpers.client import fast_retry
from helpers.mount import MountProcess, wait_for
from megafs.api import inshares
from megafs.api.client import MegaClient
from megafs.api.transport import Transport

pytestmark = pytest.mark.fuse

SHARED = "Shared with me"


def test_a_share_from_another_account_in_the_mount(server, tmp_path):
    state = tmp_path / "state"
    ann = full_account(server, "ann")
    bob = full_account(server, "bob", str(state))
    with MegaClient(Transport(server.url, retry=fast_retry()), ann) as a:
        root = a.fetch().roots()[2]
        folder = a.mkdir(root, "holiday")["h"]
        body = os.urandom(300_000)
        put(a, folder, tmp_path, "beach.jpg", body)
        inshares.share_folder(a, folder, bob.email, 0)
        mnt = tmp_path / "mnt"
        with MountProcess(mnt, server.url, state, extra=["--account", bob.email]) as mount:
            shared = mnt / SHARED / ("%s - holiday" % ann.email)
            assert sorted(os.listdir(mnt)) == [SHARED]
            assert os.listdir(mnt / SHARED) == [shared.name]
            assert (shared / "beach.jpg").read_bytes() == body
            for attempt in (lambda: (shared / "new.txt").write_text("no"),
                            lambda: (shared / "beach.jpg").unlink(),
                            lambda: (shared / "sub").mkdir(),
                            lambda: open(shared / "beach.jpg", "r+b")):
                with pytest.raises(OSError) as info:
                    attempt()
                assert info.value.errno == errno.EROFS
            assert "folders shared with this account are read-only" in mount.log()
            # bob's own files are unaffected
            (mnt / "mine.txt").write_text("bob's")
            assert (mnt / "mine.txt").read_text() == "bob's"

            put(a, folder, tmp_path, "late.txt", b"added after sharing\n", shared=True)
            wait_for(lambda: (shared / "late.txt").exists(), timeout=15, what="A's new file")
            assert (shared / "late.txt").read_bytes() == b"added after sharing\n"
            # a remount (the node-tree cache holds no share keys: listed again) shows it too
            mount.stop()
            mount.start()
            assert (shared / "late.txt").read_bytes() == b"added after sharing\n"

            inshares.unshare_folder(a, folder, bob.user_handle)
            wait_for(lambda: not (mnt / SHARED).exists(), timeout=15, what="the revocation")
            assert sorted(os.listdir(mnt)) == ["mine.txt"]
            assert not mount.log_problems(allowed=("refused",))
