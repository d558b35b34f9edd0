"""Incoming shares in an account's node tree, from a hostile server's point of view
(``tree/inshares.py``, ``tree/packets.py``): a share shows under ``Shared with me`` as
``OWNER - FOLDER`` with its nodes decrypted through the share key; a share root of an unknown
share, an ``s2`` packet with a damaged key, for another user or with a bad level change nothing
(one line where malformed); a revocation removes the share and the folder with the last one."""
from __future__ import annotations

import logging

import pytest

from megafs import crypto
from megafs.api import account_crypto as ac
from megafs.api.inshares import encrypt_share_key
from megafs.tree import packets
from megafs.tree.inshares import SHARED, SHARED_NAME, Incoming
from megafs.tree.tree import Tree

ME, OWNER = "mmmmmmmmmmm", "ooooooooooo"


@pytest.fixture(scope="module")
def rsa():
    key, e = ac.generate_rsa_key(1024)
    return key, crypto.b64encode(ac.encode_public_key(key.n, e))


def node(handle: str, parent: str, name: str, key: bytes, wrap: str, wrapping: bytes,
         t: int = 1, **extra) -> dict:
    raw = {"h": handle, "p": parent, "t": t, "u": OWNER if wrap != ME else ME,
           "a": crypto.b64encode(crypto.encrypt_attr({"n": name}, key)),
           "k": "%s:%s" % (wrap, crypto.b64encode(crypto.wrap_key(key, wrapping))), **extra}
    if t == 0:
        raw["s"] = 0
    return raw


def listing(mk: bytes, share_key: bytes, sk: str) -> list[dict]:
    own = [{"h": "ROOTROOT", "p": "", "t": 2, "u": ME, "a": "", "k": ""},
           node("MINEMINE", "ROOTROOT", "mine", crypto.random_key(16), ME, mk)]
    shared = [node("SHAREROO", "elsewher", "holiday", crypto.random_key(16), "SHAREROO",
                   share_key, su=OWNER, sk=sk, r=0, sts=1),
              node("FILEFILE", "SHAREROO", "beach.jpg", crypto.new_file_key().pack(),
                   "SHAREROO", share_key, t=0)]
    return own + shared


def tree_of(rsa, mk: bytes) -> Tree:
    tree = Tree(mk, ME)
    tree.incoming = Incoming(rsa[0], ME, mk)
    return tree


def test_a_share_shows_under_its_owners_name_and_goes_when_revoked(rsa):
    mk, share_key = crypto.random_key(16), crypto.random_key(16)
    tree = tree_of(rsa, mk)
    tree.load(listing(mk, share_key, encrypt_share_key(share_key, rsa[1])),
              users=[{"u": OWNER, "c": 1, "m": "ann@example.com"}])
    assert set(tree.children("ROOTROOT")) == {"mine", SHARED_NAME}
    assert set(tree.children(SHARED)) == {"ann@example.com - holiday"}
    assert tree.path_of("FILEFILE") == "/%s/ann@example.com - holiday/beach.jpg" % SHARED_NAME
    assert tree.get("FILEFILE").key is not None
    # a revocation for someone else, or of an unknown share, changes nothing
    packets.apply(tree, {"a": "s2", "n": "SHAREROO", "o": OWNER, "u": "xxxxxxxxxxx"})
    packets.apply(tree, {"a": "s2", "n": "UNKNOWNN", "o": OWNER, "u": ME})
    assert tree.get("FILEFILE") is not None
    changed = packets.apply(tree, {"a": "s2", "n": "SHAREROO", "o": OWNER, "u": ME})
    assert SHARED in changed or "ROOTROOT" in changed
    assert tree.get("SHAREROO") is None and tree.get("FILEFILE") is None
    assert set(tree.children("ROOTROOT")) == {"mine"}


def test_hostile_share_packets_change_nothing(rsa, caplog):
    mk, share_key = crypto.random_key(16), crypto.random_key(16)
    tree = tree_of(rsa, mk)
    tree.load(listing(mk, share_key, "AAAA")[:2])           # no share at first
    good = encrypt_share_key(share_key, rsa[1])
    caplog.set_level(logging.WARNING)
    for bad in ({"k": "A" * 2000, "r": 0}, {"k": good, "r": 9}, {"k": good, "r": True},
                {"r": 0}, {"k": crypto.b64encode(ac.mpi_encode(rsa[0].n + 5)), "r": 0}):
        packets.apply(tree, dict({"a": "s2", "n": "SHAREROO", "o": OWNER, "u": ME}, **bad))
    assert tree.incoming.shares == {}
    assert len([r for r in caplog.records if "left out" in r.getMessage()]) == 5
    # the share root of a share never announced is left out, with its nodes unreachable
    raws = listing(mk, share_key, good)[2:]
    packets.apply(tree, {"a": "t", "t": {"f": raws}})
    assert tree.get("SHAREROO") is None and SHARED_NAME not in tree.children("ROOTROOT")
    # announced (owner's email from a c packet), then delivered: shown
    packets.apply(tree, {"a": "c", "u": [{"u": OWNER, "c": 1, "m": "ann@example.com"}]})
    packets.apply(tree, {"a": "s2", "n": "SHAREROO", "o": OWNER, "u": ME, "r": 0, "k": good})
    packets.apply(tree, {"a": "t", "t": {"f": raws}})
    assert tree.path_of("FILEFILE") == "/%s/ann@example.com - holiday/beach.jpg" % SHARED_NAME
