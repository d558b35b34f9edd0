"""Shares between two full accounts (issue 25) against the real local server over HTTP, real
crypto: account A shares a folder with B (``uk``, ``s2`` with the share key RSA-encrypted to
B: ``api/inshares.py``); B's ``f`` lists it with its keys, B downloads a file of it (MAC
checked), B's ``sc`` brings A's later file and the revocation, and hostile ``sk`` values are
left out with one line."""
from __future__ import annotations

import os

import pytest

from helpers.accounts import full_account, put
from helpers.client import fast_retry
from megafs import crypto
from megafs.api import account_crypto, commands, inshares, sharekeys
from megafs.api.client import MegaClient
from megafs.api.folderlink import owner_listing
from megafs.api.session import Session
from megafs.api.transport import Transport
from megafs.crypto import FileKey
from megafs.errors import ApiCode, MegaError
from megafs.tree.nodes import decrypt_node


def open_client(srv, session: Session) -> MegaClient:
    return MegaClient(Transport(srv.url, retry=fast_retry()), session)


@pytest.fixture(scope="module")
def pair(module_server):
    """Two full accounts (A shares, B receives): (session A, session B)."""
    return full_account(module_server, "ann"), full_account(module_server, "bob")


def read_file(client: MegaClient, raw: dict, key: bytes) -> bytes:
    info = client.open_download(handle=raw["h"])
    data = client.read_range(info.url, FileKey.unpack(key), 0, info.size)
    assert len(data) == info.size
    return data


def test_a_folder_shared_with_another_account(srv, pair, tmp_path):
    a_session, b_session = pair
    with open_client(srv, a_session) as a, open_client(srv, b_session) as b:
        root = a.fetch().roots()[2]
        folder = a.mkdir(root, "holiday")["h"]
        sub = a.mkdir(folder, "day one")["h"]
        body = os.urandom(200_000)
        put(a, sub, tmp_path, "beach.jpg", body)
        before = b.fetch().sn
        assert inshares.share_folder(a, folder, b_session.email, 0) == b_session.user_handle

        fetched, shares = inshares.listing_with_shares(b)
        share = shares[folder]
        assert (share.owner, share.email, share.level) == (a_session.user_handle,
                                                           a_session.email, 0)
        assert "key" not in repr(share) and crypto.b64encode(share.key) not in repr(share)
        mine = {n["h"]: n for n in fetched.nodes if n.get("u") == a_session.user_handle}
        assert set(mine) >= {folder, sub}
        names = {}
        for h, raw in mine.items():
            key = inshares.share_node_key(raw, shares)
            assert key is not None, raw
            attrs = crypto.decrypt_attr(crypto.b64decode(raw["a"]), key)
            names[attrs["n"]] = (raw, key)
        assert set(names) == {"holiday", "day one", "beach.jpg"}
        raw, key = names["beach.jpg"]
        assert read_file(b, raw, key) == body

        # B's feed: the owner as a contact (c), the share (s2 with k) and its nodes (t)
        packets, sn = b.poll(before, 5)
        assert [p["a"] for p in packets] == ["c", "s2", "t"], packets
        assert packets[0]["u"] == [{"u": a_session.user_handle, "c": 1, "m": a_session.email}]
        assert packets[1]["r"] == 0 and packets[1]["o"] == a_session.user_handle
        assert len(packets[1]["k"]) > 43 and "su" in packets[2]["t"]["f"][0]

        # A adds a file with its cr keys: B's feed brings it, decryptable
        later = put(a, folder, tmp_path, "late.txt", b"written after sharing\n", shared=True)
        packets, sn = b.poll(sn, 5)
        added = [n for p in packets if p["a"] == "t" for n in p["t"]["f"]]
        assert [n["h"] for n in added] == [later["h"]]
        assert added[0]["k"].startswith(folder + ":") and "/" not in added[0]["k"]
        key = inshares.share_node_key(added[0], shares)
        assert key is not None
        assert read_file(b, added[0], key) == b"written after sharing\n"

        # A revokes: an s2 without r, B's listing and downloads lose it
        inshares.unshare_folder(a, folder, b_session.user_handle)
        packets, sn = b.poll(sn, 5)
        assert [(p["a"], "r" in p, p["n"]) for p in packets] == [("s2", False, folder)]
        fetched, shares = inshares.listing_with_shares(b)
        assert shares == {} and not [n for n in fetched.nodes
                                     if n.get("u") == a_session.user_handle]
        with pytest.raises(Exception, match="-9|ENOENT|not found"):
            b.open_download(handle=raw["h"])


def test_hostile_share_keys_are_left_out(pair, caplog):
    _a, b_session = pair
    key, _e = account_crypto.generate_rsa_key(1024)
    good_key = os.urandom(16)
    pubk = crypto.b64encode(account_crypto.encode_public_key(key.n, 257))
    good = inshares.encrypt_share_key(good_key, pubk)
    assert inshares.decrypt_share_key(key, good) == good_key
    base = {"t": 1, "su": "AAAAAAAAAAA", "r": 0, "a": "", "k": "", "p": "xxxxxxxx"}
    nodes = [dict(base, h="GOODGOOD", sk=good),
             dict(base, h="HUGE0000", sk="A" * 5000),
             dict(base, h="RANGE000", sk=crypto.b64encode(account_crypto.mpi_encode(key.n + 1))),
             dict(base, h="LEVEL000", sk=good, r=7),
             dict(base, h="FILE0000", sk=good, t=0),
             dict(base, h="SELF0000", sk=good, su=b_session.user_handle),
             dict(base, h="NOKEY000")]
    shares = inshares.incoming_shares(nodes, [{"u": "AAAAAAAAAAA", "c": 1, "m": "a@b.c"}],
                                      b_session.user_handle, b_session.master_key, key)
    assert list(shares) == ["GOODGOOD"] and shares["GOODGOOD"].email == "a@b.c"
    left_out = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(left_out) == 6
    assert not any(crypto.b64encode(good_key) in m for m in left_out)


def test_the_server_checks_sharees_and_their_keys(srv, pair):
    a_session, b_session = pair
    with open_client(srv, a_session) as a:
        with pytest.raises(MegaError) as info:
            inshares.public_key(a, "nobody@example.com")
        assert info.value.code == ApiCode.ENOENT
        assert inshares.public_key(a, b_session.email.upper())[0] == b_session.user_handle
        folder = a.mkdir(a.fetch().roots()[2], "checked")["h"]
        key = os.urandom(16)
        base = {"a": "s2", "n": folder, "i": a.request_id,
                "ok": crypto.b64encode(sharekeys.owner_key(key, a_session.master_key)),
                "ha": crypto.b64encode(sharekeys.handle_auth(folder, a_session.master_key)),
                "cr": [[folder], [folder], [0, 0, crypto.b64encode(os.urandom(16))]]}
        _, pubk = inshares.public_key(a, b_session.email)
        good = inshares.encrypt_share_key(key, pubk)
        huge = crypto.b64encode(account_crypto.mpi_encode(1 << 4000))
        for target, code in (({"u": b_session.user_handle, "r": 0, "k": "AAAA"}, -2),
                             ({"u": b_session.user_handle, "r": 0, "k": huge}, -2),
                             ({"u": b_session.user_handle, "r": 0}, -2),
                             ({"u": a_session.user_handle, "r": 0, "k": good}, -2),
                             ({"u": "nobody@example.com", "r": 0, "k": good}, -9)):
            with pytest.raises(MegaError) as info:
                a.transport.call(dict(base, s=[target]))
            assert info.value.code == code, target


def test_a_sharee_makes_a_folder_in_a_read_write_share(srv, pair):
    """A sharee's ``p`` into a share at level 2 (a folder keyed under the share key): the
    owner's listing has it as its own node with only the ``ROOT:KEY`` entry, which decrypts
    under the owner's share key; a ``p`` into the owner's folder outside the share is -9; the
    sharee's ``a`` reaches the owner's feed; in a read-only share ``p`` and ``a`` are -11."""
    a_session, b_session = pair
    with open_client(srv, a_session) as a, open_client(srv, b_session) as b:
        root = a.fetch().roots()[2]
        folder = a.mkdir(root, "workshop")["h"]
        private = a.mkdir(root, "private")["h"]
        inshares.share_folder(a, folder, b_session.email, 2)
        _, shares = inshares.listing_with_shares(b)
        item = commands.folder_node({"n": "made by bob"}, shares[folder].key)
        made = b.transport.call(commands.put_nodes(folder, [item], b.request_id))["f"][0]
        assert made["k"].startswith(folder + ":") and "/" not in made["k"]
        listing = owner_listing(a)
        raw = [n for n in listing.fetched.nodes if n["h"] == made["h"]][0]
        assert raw["u"] == a_session.user_handle and raw["p"] == folder
        assert raw["k"] == made["k"]           # no entry under the owner's master key
        node = decrypt_node(raw, a_session.master_key, a_session.user_handle,
                            listing.share_keys)
        assert node.ok and node.name == "made by bob"
        with pytest.raises(MegaError) as info:
            b.transport.call(commands.put_nodes(private, [item], b.request_id))
        assert info.value.code == ApiCode.ENOENT
        # B renames it (``a`` on a node of a read/write share); A's feed brings the change
        sn = a.fetch().sn
        b.set_attrs(made["h"], node.key, {"n": "renamed by bob"})
        packets, _ = a.poll(sn, 5)
        update = [p for p in packets if p["a"] == "u" and p["n"] == made["h"]]
        assert update and "i" not in update[0]
        assert crypto.decrypt_attr(crypto.b64decode(update[0]["at"]), node.key)["n"] == \
            "renamed by bob"
        # in a read-only share, p and a answer -11; B's own nodes are unaffected
        inshares.share_folder(a, private, b_session.email, 0)
        with pytest.raises(MegaError) as info:
            b.transport.call(commands.put_nodes(private, [item], b.request_id))
        assert info.value.code == ApiCode.EACCESS
        with pytest.raises(MegaError) as info:
            b.set_attrs(private, node.key, {"n": "mine now"})
        assert info.value.code == ApiCode.EACCESS


def test_what_each_access_level_lets_a_sharee_do(srv, pair):
    """Read/write (1) adds only; full access (2) also renames, moves inside the owner's
    shares and deletes (meganz/sdk include/mega/types.h ``accesslevel_t``, src/megaclient.cpp
    ``checkaccess``/``checkmove``): at level 1 ``a``, ``m`` and ``d`` are -11; at level 2 they
    are applied and the owner's feed gets them (the share root's attributes too); a move
    between the sharee's own drive and the share, either way, and a move or delete of the
    share root itself are -11 at any level."""
    a_session, b_session = pair
    with open_client(srv, a_session) as a, open_client(srv, b_session) as b:
        root = a.fetch().roots()[2]
        rw, full = a.mkdir(root, "rw")["h"], a.mkdir(root, "full")["h"]
        inshares.share_folder(a, rw, b_session.email, 1)
        inshares.share_folder(a, full, b_session.email, 2)
        _, shares = inshares.listing_with_shares(b)
        mine = b.mkdir(b.fetch().roots()[2], "bob's own")["h"]

        def folder(parent: str, name: str) -> tuple[str, bytes]:
            item = commands.folder_node({"n": name}, shares[rw if parent == rw else full].key)
            made = b.transport.call(commands.put_nodes(parent, [item], b.request_id))["f"][0]
            return made["h"], inshares.share_node_key(made, shares)

        added, key = folder(rw, "added")
        for call in (lambda: b.set_attrs(added, key, {"n": "renamed"}),
                     lambda: b.move(added, rw), lambda: b.delete(added)):
            with pytest.raises(MegaError) as info:
                call()
            assert info.value.code == ApiCode.EACCESS
        one, key = folder(full, "one")
        two, _ = folder(full, "two")
        sn = a.fetch().sn
        b.set_attrs(one, key, {"n": "uno"})
        b.move(one, two)
        for call in (lambda: b.move(two, mine), lambda: b.move(mine, full),
                     lambda: b.delete(full), lambda: b.move(full, mine)):
            with pytest.raises(MegaError) as info:
                call()
            assert info.value.code == ApiCode.EACCESS
        b.delete(two)
        raw_full = [n for n in inshares.listing_with_shares(b)[0].nodes if n["h"] == full][0]
        b.set_attrs(full, inshares.share_node_key(raw_full, shares), {"n": "full, renamed"})
        packets, _ = a.poll(sn, 5)
        assert [(p["a"], p.get("n")) for p in packets] == [
            ("u", one), ("d", one), ("t", None), ("d", two), ("u", full)], packets
        assert all("i" not in p for p in packets)
        assert {n["h"] for n in inshares.listing_with_shares(b)[0].nodes} \
            & {one, two} == set()
