"""Folder links (issue 25) end to end against the real local server over HTTP, real crypto:
export a folder (``api/folderlink.py``: ``s2`` to EXP with ``ok``/``ha``/``cr``, then ``l``),
read it back through the link with a fresh client without an account
(``api/publicfolder.py``: the ``n=`` session, ``f`` and ``g``), files added later with their
``cr`` keys (``api/sharekeys.py``), a ``p``/``m`` without them refused, revocation, and hostile
``n=`` listings from a fake server."""
from __future__ import annotations

import os

import pytest

from helpers.client import fast_retry, put
from helpers.hostile import HostileApi
from megafs import crypto
from megafs.api import commands, sharekeys
from megafs.api.client import PutItem
from megafs.api.folderlink import export_folder, owner_listing, parse_folder_link, revoke_folder
from megafs.api.publicfolder import PublicFolder
from megafs.errors import ApiCode, IntegrityError, MegaError, ProtocolError


def write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / ("src-" + name)
    path.write_bytes(data)
    return str(path)


@pytest.fixture
def album(client, tmp_path):
    """A folder with two files and a subfolder holding a third: (folder handle, contents)."""
    root = client.fetch().roots()[2]
    folder = client.mkdir(root, "album")["h"]
    sub = client.mkdir(folder, "extras")["h"]
    contents = {"a.txt": os.urandom(1000), "b.bin": os.urandom(300_000),
                "extras/c.txt": b"inside a subfolder\n"}
    put(client, folder, tmp_path, "a.txt", contents["a.txt"])
    put(client, folder, tmp_path, "b.bin", contents["b.bin"])
    put(client, sub, tmp_path, "c.txt", contents["extras/c.txt"])
    return folder, sub, contents


def read_all(srv, url: str, tmp_path) -> dict[str, bytes]:
    """Every file of the link, downloaded (MAC-checked) by a client without an account."""
    out = {}
    with PublicFolder(url, api=srv.url, retry=fast_retry()) as public:
        listing = public.listing()
        assert listing.entries[listing.root].name == "album"
        for path, entry in listing.walk():
            if entry.type == 0:
                dest = tmp_path / "got" / path.replace("/", "_")
                dest.parent.mkdir(exist_ok=True)
                public.download(entry, str(dest))
                out[path] = dest.read_bytes()
    return out


def test_export_and_read_back_through_the_link(srv, client, album, tmp_path):
    folder, _sub, contents = album
    url = export_folder(client, folder)
    link = parse_folder_link(url)
    assert url.startswith("https://mega.nz/folder/") and len(link.key) == 16
    assert export_folder(client, folder) == url          # same share key, same handle
    assert read_all(srv, url, tmp_path) == contents


def test_files_added_later_with_cr_keys_show_through_the_link(srv, client, album, tmp_path):
    folder, sub, contents = album
    url = export_folder(client, folder)
    put(client, sub, tmp_path, "late.txt", b"added after the export\n", cr_for=folder)
    # a file moved in from outside, with the keys of the whole moved subtree
    root = client.fetch().roots()[2]
    outside = put(client, root, tmp_path, "moved.txt", b"moved in\n")
    listing = owner_listing(client)
    parents = {n["h"]: n.get("p", "") for n in listing.fetched.nodes}
    cr = sharekeys.cr_for_move(parents, listing.share_keys, folder,
                               [(outside["h"], client.node_key(outside))])
    command = commands.move(outside["h"], folder, client.request_id)
    command["cr"] = cr
    client.transport.call(command)
    expected = dict(contents, **{"extras/late.txt": b"added after the export\n",
                                 "moved.txt": b"moved in\n"})
    assert read_all(srv, url, tmp_path) == expected


def test_the_link_session_polls_the_owners_changes(srv, client, album, tmp_path):
    folder, sub, _contents = album
    url = export_folder(client, folder)
    with PublicFolder(url, api=srv.url, retry=fast_retry()) as public:
        sn = public.listing().sn
        assert public.poll(sn, 0.5) == ([], sn)          # nothing yet: the wait ends in time
        node = put(client, sub, tmp_path, "later.txt", b"later\n", cr_for=folder)
        packets, sn = public.poll(sn, 10)
        assert [(p["a"], [n["h"] for n in p["t"]["f"]]) for p in packets] == \
            [("t", [node["h"]])]
        revoke_folder(client, folder)
        with pytest.raises(MegaError) as gone:
            public.poll(sn, 10)
        assert gone.value.code == ApiCode.ENOENT


def test_a_put_or_move_without_cr_keys_is_refused(srv, client, album, tmp_path):
    folder, sub, _contents = album
    export_folder(client, folder)
    uploaded = client.upload(write(tmp_path, "nokeys.txt", b"x"))
    result = client.put_files([PutItem(sub, uploaded, {"n": "nokeys.txt"})])[0]
    assert isinstance(result, MegaError) and result.code == ApiCode.EKEY
    root = client.fetch().roots()[2]
    outside = put(client, root, tmp_path, "outside.txt", b"y")
    with pytest.raises(MegaError) as refused:
        client.move(outside["h"], folder)
    assert refused.value.code == ApiCode.EKEY


def test_revoke_makes_the_link_answer_enoent(srv, client, album, tmp_path):
    folder, _sub, _contents = album
    url = export_folder(client, folder)
    with PublicFolder(url, api=srv.url, retry=fast_retry()) as public:
        entry = next(e for _, e in public.listing().walk() if e.type == 0)
        revoke_folder(client, folder)
        with pytest.raises(MegaError) as gone:
            public.listing()
        assert gone.value.code == ApiCode.ENOENT
        with pytest.raises(MegaError) as no_file:
            public.download(entry, str(tmp_path / "never"))
        assert no_file.value.code == ApiCode.ENOENT
    assert not (tmp_path / "never").exists()
    revoke_folder(client, folder)          # again: nothing left to remove is fine
    fresh = export_folder(client, folder)   # a new export gets a new share key
    assert fresh != url and read_all(srv, fresh, tmp_path)


def test_a_wrong_link_key_is_one_integrity_error(srv, client, album):
    folder, _sub, _contents = album
    link = parse_folder_link(export_folder(client, folder))
    wrong = link.url().rsplit("#", 1)[0] + "#" + crypto.b64encode(os.urandom(16))
    with PublicFolder(wrong, api=srv.url, retry=fast_retry()) as public:
        with pytest.raises(IntegrityError, match="does not decrypt the folder"):
            public.listing()


# --- hostile n= listings ------------------------------------------------------------------------
class HostileFolder(HostileApi):
    """A fake API whose ``f`` answers a crafted folder-link listing."""

    def __init__(self, nodes: list) -> None:
        super().__init__()
        self.nodes = nodes

    def answer(self, command):
        if isinstance(command, dict) and command.get("a") == "f":
            return {"f": self.nodes, "ok": [], "s": [], "sn": "AAAAAAAAAAA"}
        return super().answer(command)


SHARE_KEY = bytes(range(16))


def folder(h: str, p: str, name: str = "d", root: str = "R0000000") -> dict:
    key = os.urandom(16)
    return {"h": h, "p": p, "t": 1, "u": "UUUUUUUUUUU", "ts": 1,
            "a": crypto.b64encode(crypto.encrypt_attr({"n": name}, key)),
            "k": "%s:%s" % (root, crypto.b64encode(crypto.wrap_key(key, SHARE_KEY)))}


def hostile_listing(nodes: list, **kw):
    with HostileFolder(nodes) as api:
        url = "https://mega.nz/folder/AbCdEf01#" + crypto.b64encode(SHARE_KEY)
        with PublicFolder(url, api=api.url, retry=fast_retry(2), **kw) as public:
            return public.listing()


def test_a_well_formed_fake_listing_is_read():
    listing = hostile_listing([folder("R0000000", "OWNERxxx"), folder("S0000000", "R0000000",
                                                                      "sub")])
    assert [path for path, _ in listing.walk()] == ["sub"]


@pytest.mark.parametrize("nodes, message", [
    ([folder("R0000000", "OWNERxxx"), folder("A0000000", "B0000000"),
      folder("B0000000", "A0000000")], "form a cycle"),
    ([folder("R0000000", "OWNERxxx"), folder("A0000000", "A0000000")], "form a cycle"),
    ([folder("R0000000", "OWNERxxx")] + [folder("N%07d" % i, "R0000000") for i in range(6)],
     "more than 5"),
    ([folder("R0000000", "OWNERxxx"),
      dict(folder("A0000000", "R0000000"), k="R0000000:" + crypto.b64encode(bytes(24)))],
     "24-byte key"),
    ([folder("R0000000", "OWNERxxx"),
      dict(folder("F0000000", "R0000000"), t=0, s=2 ** 62)], "size MEGA cannot store"),
    ([folder("R0000000", "OWNERxxx"), folder("R0000000", "OWNERxxx")], "repeated"),
    ([folder("R0000000", "OWNERxxx"), folder("X0000000", "OTHERxxx")], "top nodes"),
])
def test_a_hostile_listing_is_one_protocol_error(nodes, message):
    with pytest.raises(ProtocolError, match=message):
        hostile_listing(nodes, max_nodes=5)


def test_a_deep_listing_is_refused():
    chain = [folder("R0000000", "OWNERxxx")]
    for i in range(1100):
        chain.append(folder("D%07d" % i, chain[-1]["h"]))
    with pytest.raises(ProtocolError, match="nested deeper"):
        hostile_listing(chain)
