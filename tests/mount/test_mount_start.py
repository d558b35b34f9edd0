"""What a mount sends before its first listing (issue 23, goal 3: mount until the first ``ls``
no slower than rclone's): a full account's mount from its node-tree cache asks the server one
``sc`` (the catch-up) and nothing else: no GET from the API check over https, no ``ug`` for
the account's private key, which is fetched once a share key encrypted to it arrives.
Counted with the server's request and command counters (megafs/server/stats.py)."""
from __future__ import annotations

import os

import pytest

from helpers.accounts import full_account, put
from helpers.client import fast_retry
from helpers.mount import MountProcess, wait_for
from megafs.api import inshares
from megafs.api.client import MegaClient
from megafs.api.transport import Transport

pytestmark = pytest.mark.fuse

QUIET = {"sc", "wait", "control"}     # the change feed, and the test's own stats requests


def counted(before: dict, after: dict, key: str) -> dict:
    return {k: n - before[key].get(k, 0) for k, n in after[key].items()
            if n != before[key].get(k, 0)}


def test_a_cached_mount_sends_one_sc_before_its_listing_and_the_key_only_when_needed(
        server, tmp_path):
    assert server.url.startswith("https://")
    state = tmp_path / "state"
    ann = full_account(server, "ann")
    bob = full_account(server, "bob", str(state))
    mnt = tmp_path / "mnt"
    extra = ["--account", bob.email]
    with MountProcess(mnt, server.url, state, extra=extra):
        (mnt / "mine.txt").write_text("bob's")
        wait_for(lambda: (mnt / "mine.txt.link").read_text().startswith("https://"),
                 timeout=30, what="bob's upload")
    before = server.stats()
    with MountProcess(mnt, server.url, state, extra=extra) as mount:
        assert os.listdir(mnt) == ["mine.txt"]
        after = server.stats()
        requests = counted(before, after, "requests")
        assert requests.get("sc", 0) >= 1
        assert set(requests) <= QUIET, requests          # no /cs, no GET of the API check
        assert counted(before, after, "commands") == {}  # no ug, no f
        assert "node tree from the cache" in mount.log()

        # a share from ann: its key comes RSA-encrypted to bob in an s2 packet, so bob's
        # mount now fetches its private key (one ug) and shows the folder
        with MegaClient(Transport(server.url, retry=fast_retry()), ann) as a:
            folder = a.mkdir(a.fetch().roots()[2], "holiday")["h"]
            put(a, folder, tmp_path, "beach.jpg", b"sand\n")
            inshares.share_folder(a, folder, bob.email, 0)
        shared = mnt / "Shared with me" / ("%s - holiday" % ann.email)
        wait_for(lambda: (shared / "beach.jpg").exists(), timeout=15, what="ann's share")
        assert (shared / "beach.jpg").read_bytes() == b"sand\n"
        assert counted(before, server.stats(), "commands").get("ug") == 1
        assert not mount.log_problems()
