"""Writes into shared folders (issue 25 item 2, "a shared folder written by the mount is
readable by the other account"): account A's mount writes into folders A shares with account B
(shared before the mount started, so the key comes from ``f``'s ``ok``, and shared by another
client of A while mounted, so it comes from the ``s2`` packet): a file copied in, a folder made
with a file inside, a file moved in from outside the share, a file written and uploaded later
by the write-back queue.  B's own client lists them with its share keys (RSA ``sk``) and
downloads each one, MAC-checked: every ``p``/``m`` of A's mount carried the ``cr`` keys under
the share key (the local server refuses them with -14 otherwise).  And the other way: B's
client writes a file into a read/write share (``inshares.put_file``: its key under the share
key) and A's mount reads it, also after a remount; into a read-only share the server
answers -11."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers.accounts import full_account
from helpers.client import fast_retry
from helpers.mount import MountProcess, wait_for
from megafs import crypto
from megafs.api import commands, inshares
from megafs.api.client import MegaClient
from megafs.api.session import Session
from megafs.api.transport import Transport
from megafs.crypto import FileKey
from megafs.errors import ApiCode, MegaError

pytestmark = pytest.mark.fuse


def seen_by(srv, session: Session, root: str) -> dict[str, bytes | None]:
    """What account ``session`` sees inside its incoming share ``root``: path -> file bytes
    (downloaded, MAC-checked), None for a folder; a node it cannot decrypt shows as
    ``?HANDLE``."""
    with MegaClient(Transport(srv.url, retry=fast_retry()), session) as client:
        fetched, shares = inshares.listing_with_shares(client)
        assert root in shares
        nodes = {n["h"]: n for n in fetched.nodes}
        out: dict[str, bytes | None] = {}
        for h, raw in nodes.items():
            parts, up = [], raw
            while up["h"] != root:
                key = inshares.share_node_key(up, shares)
                name = "?" + up["h"] if key is None else \
                    crypto.decrypt_attr(crypto.b64decode(up["a"]), key)["n"]
                parts.append(name)
                up = nodes.get(up.get("p", ""), {"h": root})
            if h == root or not parts or not _inside(nodes, raw, root):
                continue
            path = "/".join(reversed(parts))
            key = inshares.share_node_key(raw, shares)
            if raw["t"] == 1 or key is None:
                out[path] = None
                continue
            info = client.open_download(handle=h)
            data = client.read_range(info.url, FileKey.unpack(key), 0, info.size)
            assert len(data) == info.size
            out[path] = data
        return out


def _inside(nodes: dict, raw: dict, root: str) -> bool:
    for _ in range(100):
        parent = raw.get("p")
        if parent == root:
            return True
        if parent not in nodes:
            return False
        raw = nodes[parent]
    return False


def write_into(mnt: Path, folder: Path, outside: bytes, tag: str) -> dict[str, bytes | None]:
    """Copy, mkdir + file, move in from outside, write: what the sharee should then see."""
    src = mnt.parent / ("outside-%s.bin" % tag)
    src.write_bytes(outside)
    shutil.copy(src, folder / "copied.bin")
    (folder / "sub").mkdir()
    (folder / "sub" / "inner.txt").write_text("inside a new folder %s\n" % tag)
    (mnt / ("loose-%s.txt" % tag)).write_text("moved in %s\n" % tag)
    os.rename(mnt / ("loose-%s.txt" % tag), folder / "loose.txt")
    with open(folder / "written.txt", "w") as fh:
        fh.write("written in the mount %s\n" % tag)
    return {"copied.bin": outside, "sub": None,
            "sub/inner.txt": ("inside a new folder %s\n" % tag).encode(),
            "loose.txt": ("moved in %s\n" % tag).encode(),
            "written.txt": ("written in the mount %s\n" % tag).encode()}


def test_a_folder_shared_with_another_account_written_by_the_mount(tmp_path, server):
    state, mnt = tmp_path / "state", tmp_path / "mnt"
    ann = full_account(server, "ann", str(state))
    bob = full_account(server, "bob")
    with MegaClient(Transport(server.url, retry=fast_retry()), ann) as a:
        root = a.fetch().roots()[2]
        before = a.mkdir(root, "before")["h"]
        inshares.share_folder(a, before, bob.email, 0)
        with MountProcess(mnt, server.url, state, extra=["--account", ann.email]) as m:
            (mnt / "during").mkdir()
            (mnt / "during" / "old.txt").write_text("there before the share\n")
            during = os.getxattr(mnt / "during", "user.mega.handle").decode()
            wait_for(lambda: os.getxattr(mnt / "during" / "old.txt", "user.mega.state")
                     == b"uploaded", timeout=30, what="the upload")
            # another client of A shares it while A is mounted: the key comes by `s2`
            inshares.share_folder(a, during, bob.email, 1)
            expected = write_into(mnt, mnt / "before", os.urandom(150_000), "b")
            wait_for(lambda: seen_by(server, bob, before) == expected, timeout=30,
                     what="B reading what A's mount wrote into the share made before")
            expected = write_into(mnt, mnt / "during", os.urandom(90_000), "d")
            expected["old.txt"] = b"there before the share\n"
            wait_for(lambda: seen_by(server, bob, during) == expected, timeout=30,
                     what="B reading what A's mount wrote into the share made while mounted")
            assert m.log_problems() == []


def test_a_sharee_writes_into_a_read_write_share_and_the_owner_reads_it(tmp_path, server):
    state, mnt = tmp_path / "state", tmp_path / "mnt"
    ann = full_account(server, "ann", str(state))
    bob = full_account(server, "bob")
    body = os.urandom(120_000)
    src = tmp_path / "from-bob.bin"
    src.write_bytes(body)
    with MegaClient(Transport(server.url, retry=fast_retry()), ann) as a, \
            MegaClient(Transport(server.url, retry=fast_retry()), bob) as b:
        root = a.fetch().roots()[2]
        rw, ro = a.mkdir(root, "together")["h"], a.mkdir(root, "look only")["h"]
        inshares.share_folder(a, rw, bob.email, 1)
        inshares.share_folder(a, ro, bob.email, 0)
        with MountProcess(mnt, server.url, state, extra=["--account", ann.email]) as m:
            _, shares = inshares.listing_with_shares(b)
            node = inshares.put_file(b, shares[rw], rw, str(src), "from-bob.bin")
            assert node["k"].startswith(rw + ":") and "/" not in node["k"]
            # A's mount: the t packet, the node's key only under the share key
            wait_for(lambda: (mnt / "together" / "from-bob.bin").exists(), timeout=15,
                     what="B's file in A's mount")
            assert (mnt / "together" / "from-bob.bin").read_bytes() == body
            # A's mount writes beside it; B reads both
            (mnt / "together" / "reply.txt").write_text("thanks\n")
            wait_for(lambda: seen_by(server, bob, rw) == {"from-bob.bin": body,
                                                          "reply.txt": b"thanks\n"},
                     timeout=30, what="B reading its file and A's reply")
            # a read-only share refuses the p itself (-11), even with a well-formed key
            with pytest.raises(MegaError) as info:
                inshares.put_file(b, shares[ro], ro, str(src), "no.bin")
            assert info.value.code == ApiCode.EACCESS
            uploaded = b.upload(str(src))
            item = commands.file_node(uploaded, {"n": "no.bin"}, shares[ro].key)
            with pytest.raises(MegaError) as info:
                b.transport.call(commands.put_nodes(ro, [item], b.request_id))
            assert info.value.code == ApiCode.EACCESS
            assert os.listdir(mnt / "look only") == []
            # a remount (from the node-tree cache) still reads B's file
            m.stop()
            m.start()
            assert (mnt / "together" / "from-bob.bin").read_bytes() == body
            assert m.log_problems() == []
