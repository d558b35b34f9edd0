"""Interoperability of folder links (issue 25): a folder exported by megafs' client module
(``api/folderlink.py``) is listed and downloaded by an independent client from PyPI
(async-mega-py 2.5.0, ``driver.py --folder``) with its own key handling and meta-MAC check,
files added after the export (with their ``cr`` keys) included; and a folder link made in the
mount (``cat album.link``) the same way."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers.client import fast_retry
from helpers.mount import MountProcess, wait_for
from helpers.rawapi import plaintext
from helpers.server import ServerProcess
from megafs.api import commands, sharekeys
from megafs.api.client import MegaClient, PutItem
from megafs.api.folderlink import export_folder, owner_listing
from test_thirdparty import DRIVER, thirdparty_python


def test_async_mega_py_downloads_a_folder_link_made_by_megafs(tmp_path):
    files = {"cover.jpg": plaintext(200_000, seed=7), "notes.txt": b"track list\n",
             "disc 2/track.bin": plaintext(1_300_001, seed=8)}
    with ServerProcess(tmp_path / "server-data") as srv, \
            MegaClient.open(srv.url, state_dir=str(tmp_path / "state"),
                            retry=fast_retry()) as client:
        root = client.fetch().roots()[2]
        album = client.mkdir(root, "album")["h"]
        disc = client.mkdir(album, "disc 2")["h"]
        for name in ("cover.jpg", "disc 2/track.bin"):
            src = tmp_path / name.replace("/", "_")
            src.write_bytes(files[name])
            up = client.upload(str(src))
            parent = disc if "/" in name else album
            assert isinstance(client.put_files([PutItem(parent, up, {"n": name.split("/")[-1]})])
                              [0], dict)
        link = export_folder(client, album)
        # a file added after the export, with its cr keys
        src = tmp_path / "notes.txt"
        src.write_bytes(files["notes.txt"])
        up = client.upload(str(src))
        listing = owner_listing(client)
        command = commands.put_nodes(album, [commands.file_node(
            up, {"n": "notes.txt"}, client.session.master_key)], client.request_id)
        command["cr"] = sharekeys.cr_for_put({n["h"]: n.get("p", "") for n in
                                              listing.fetched.nodes}, listing.share_keys,
                                             album, [up.key.pack()])
        client.transport.call(command)
        out = tmp_path / "out"
        out.mkdir()
        proc = subprocess.run([thirdparty_python(), str(DRIVER), "--folder", srv.url, str(out),
                               link], capture_output=True, text=True, timeout=240, cwd=tmp_path)
        assert proc.returncode == 0, "driver failed:\n" + proc.stderr[-4000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    got = {str(Path(p)): (out / p).read_bytes() for p in result["downloaded"]}
    assert got == {"album/" + name: data for name, data in files.items()}


@pytest.mark.fuse
def test_async_mega_py_downloads_a_folder_link_made_in_the_mount(tmp_path):
    """``cat album.link`` in a mount; a file copied in after that (its ``p`` carries the
    ``cr`` keys the mount computes) is read by the third-party client too."""
    files = {"cover.jpg": plaintext(200_000, seed=9), "disc 2/track.bin": b"a track\n",
             "later.txt": b"added after the export\n"}
    mnt = tmp_path / "mnt"
    with ServerProcess(tmp_path / "server-data") as srv, \
            MountProcess(mnt, srv.url, tmp_path / "state") as m:
        (mnt / "album" / "disc 2").mkdir(parents=True)
        (mnt / "album" / "cover.jpg").write_bytes(files["cover.jpg"])
        (mnt / "album" / "disc 2" / "track.bin").write_bytes(files["disc 2/track.bin"])
        link = (mnt / "album.link").read_text().strip()
        (mnt / "album" / "later.txt").write_bytes(files["later.txt"])
        wait_for(lambda: all(os.getxattr(mnt / "album" / name, "user.mega.state") == b"uploaded"
                             for name in files), timeout=30, what="the uploads")
        out = tmp_path / "out"
        out.mkdir()
        proc = subprocess.run([thirdparty_python(), str(DRIVER), "--folder", srv.url, str(out),
                               link], capture_output=True, text=True, timeout=240, cwd=tmp_path)
        assert proc.returncode == 0, "driver failed:\n" + proc.stderr[-4000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert m.log_problems() == []
    got = {str(Path(p)): (out / p).read_bytes() for p in result["downloaded"]}
    assert got == {"album/" + name: data for name, data in files.items()}
